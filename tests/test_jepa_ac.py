"""Action-conditioned JEPA: frame-causality, gradient routing per regulariser, SIGReg's statistic, CEM, Two-Rooms."""

import math

import numpy as np
import pytest
import torch

from wmkit.jepa.ac import ACConfig, ACPredictor, ACWorldModel, SIGReg, cem
from wmkit.jepa.tworooms import BORDER, RADIUS, WALL_HALF, WALL_X, TwoRooms, collect, overlap_fraction

TINY = dict(size=16, patch=8, dim=16, depth=1, heads=2, pred_dim=16, pred_depth=2, pred_heads=2, max_frames=6,
            sigreg_proj=64)


def test_predictor_is_frame_causal_by_perturbation():
    torch.manual_seed(0)
    pred = ACPredictor(ACConfig(**TINY)).eval()
    z, a = torch.randn(2, 5, 4, 16), torch.randn(2, 5, 2)
    base = pred(z, a)
    z2, a2 = z.clone(), a.clone()
    z2[:, 3] += 5.0  # change frame 3 and the action taken after it
    a2[:, 3] += 5.0
    out = pred(z2, a2)
    assert torch.allclose(out[:, :3], base[:, :3], atol=1e-5)  # earlier predictions cannot see frame 3
    assert (out[:, 3:] - base[:, 3:]).abs().max() > 1e-2  # frame 3 and later do
    a3 = a.clone()
    a3[:, 1] += 5.0  # the action at t changes the prediction of frame t+1 (output t) and later
    out = pred(z, a3)
    assert torch.allclose(out[:, :1], base[:, :1], atol=1e-5) and (out[:, 1] - base[:, 1]).abs().max() > 1e-2


@pytest.mark.parametrize("reg", ["frozen", "ema", "sigreg", "none"])
def test_gradient_routing_per_regulariser(reg):
    torch.manual_seed(0)
    m = ACWorldModel(ACConfig(**TINY, regulariser=reg, loss="mse" if reg == "sigreg" else "l1"))
    frames, actions = torch.rand(3, 4, 3, 16, 16), torch.randn(3, 3, 2)
    out = m.loss(frames, actions)
    out["loss"].backward()
    enc_grads = [p.grad for p in m.encoder.parameters()]
    assert all(p.grad is not None for p in m.predictor.parameters())
    if reg == "frozen":
        assert all(g is None for g in enc_grads)  # V-JEPA 2-AC: the encoder is frozen
    else:
        assert all(g is not None for g in enc_grads)
    if reg == "ema":
        assert all(p.grad is None for p in m.target_encoder.parameters())  # stop-gradient on the target branch
        before = [p.clone() for p in m.target_encoder.parameters()]
        with torch.no_grad():
            for p in m.encoder.parameters():
                p.add_(1.0)
        m.after_step()  # target <- 0.99925 target + 0.00075 online
        for b, p, q in zip(before, m.target_encoder.parameters(), m.encoder.parameters(), strict=True):
            assert torch.allclose(p, 0.99925 * b + 0.00075 * q, atol=1e-6)
    assert ("sigreg" in out) == (reg == "sigreg")


def test_targets_of_ema_and_frozen_are_detached_but_not_of_none():
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 3, 16, 16)
    for reg, detached in (("ema", True), ("frozen", True), ("none", False)):
        m = ACWorldModel(ACConfig(**TINY, regulariser=reg))
        h = m.encode(frames, target=True)
        assert h.requires_grad != detached, reg


def test_sigreg_statistic_gaussian_vs_collapsed():
    torch.manual_seed(0)
    sig = SIGReg(num_proj=256)
    g = torch.Generator().manual_seed(0)
    # hand-computed mean under H0: E[N |phi_N(t) - phi(t)|^2] = 1 - exp(-t^2), integrated with the same weights
    expected = float((sig.weights * (1 - torch.exp(-sig.t.square()))).sum())
    vals = [float(sig(torch.randn(512, 32, generator=g), generator=g)) for _ in range(10)]
    assert np.mean(vals) == pytest.approx(expected, rel=0.15)
    collapsed = torch.ones(512, 32) * 0.3  # every sample the same vector
    assert float(sig(collapsed, generator=g)) > 50 * expected
    shrunk = 0.05 * torch.randn(512, 32, generator=g)  # the "partial collapse" of a tiny cloud
    assert float(sig(shrunk, generator=g)) > 20 * expected
    with pytest.raises(ValueError, match="SIGReg"):
        sig(torch.randn(1, 8))


def test_cem_solves_a_known_quadratic():
    target = torch.tensor([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]])  # (H=3, A=2) inside [-1, 1]

    def energy(a):
        return (a - target).square().flatten(1).sum(1)  # (S,)

    out = cem(energy, horizon=3, action_dim=2, samples=400, elites=10, iterations=10,
              generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out["plan"], target, atol=0.05)
    e = out["best_energy"]
    assert e[-1] < e[0] and e[-1] < 1e-2
    with pytest.raises(ValueError, match="elites"):
        cem(energy, 3, 2, samples=5, elites=10)


def test_rollout_and_energy_shapes_and_bad_inputs():
    torch.manual_seed(0)
    m = ACWorldModel(ACConfig(**TINY))
    z0 = m.encode(torch.rand(1, 1, 3, 16, 16))
    ro = m.rollout(z0.expand(4, -1, -1, -1), torch.randn(4, 3, 2))
    assert ro.shape == (4, 3, 4, 16)
    e = m.energy(z0, z0[:, 0], torch.zeros(5, 3, 2))
    assert e.shape == (5,)
    with pytest.raises(ValueError, match="actions must be"):
        m.loss(torch.rand(2, 4, 3, 16, 16), torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="ACPredictor"):
        m.predictor(torch.randn(1, 7, 4, 16), torch.randn(1, 7, 2))  # longer than max_frames


def test_tworooms_geometry_follows_the_spec():
    assert float(overlap_fraction(0.0)) == pytest.approx(1.0)
    assert float(overlap_fraction(2 * RADIUS)) == pytest.approx(0.0)
    # hand-computed lens of two unit-radius discs at distance 1: 2 acos(1/2) - sqrt(3)/2 = 1.2284; / pi = 0.3910
    assert float(overlap_fraction(RADIUS, r=RADIUS)) == pytest.approx((2 * math.acos(0.5) - math.sqrt(3) / 2) / math.pi)
    env = TwoRooms(render_size=32)
    env.reset(agent=np.array([100.0, 100.0]), goal=np.array([400.0, 300.0]), door=(300.0, 380.0))
    obs, r, term, trunc, info = env.step([10.0, 0.0])  # norm clipped to 2.45, times speed 10 = 24.5 px
    assert info["pos_agent"] == pytest.approx([124.5, 100.0])
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and r == -0.01 and not term
    for _ in range(20):  # walk right into the wall away from the door: stopped at its face
        env.step([1.0, 0.0])
    assert env.agent[0] <= WALL_X - WALL_HALF - RADIUS + 1e-6 and env.agent[0] > WALL_X - WALL_HALF - RADIUS - 1.5
    env.reset(agent=np.array([200.0, 340.0]), goal=np.array([300.0, 340.0]), door=(300.0, 380.0))
    for _ in range(10):  # through the door
        _, r, term, _, info = env.step([1.0, 0.0])
        if term:
            break
    assert term and r == 1.0 and info["overlap"] >= 0.5
    with pytest.raises(ValueError, match="action"):
        env.step([np.nan, 0.0])
    with pytest.raises(ValueError, match="narrower"):
        env.reset(door=(100.0, 120.0))
    with pytest.raises(ValueError, match="collides"):
        env.reset(agent=np.array([WALL_X, 50.0]), door=(300.0, 380.0))
    assert BORDER == 9


def test_collect_is_deterministic_and_goals_are_in_the_other_room():
    a, b = collect(2, 5, 16, seed=3), collect(2, 5, 16, seed=3)
    assert a["frames"].shape == (2, 6, 16, 16, 3) and a["actions"].shape == (2, 5, 2)
    assert np.array_equal(a["frames"], b["frames"])
    env = TwoRooms(seed=1)
    for s in range(20):
        env.reset(seed=s)
        assert env.room(env.agent) != env.room(env.goal)


def test_pooled_option_gives_one_embedding_per_frame_and_stays_causal():
    torch.manual_seed(0)
    for reg in ("ema", "sigreg"):
        m = ACWorldModel(ACConfig(**TINY, regulariser=reg, pooled=True))
        z = m.encode(torch.rand(2, 3, 3, 16, 16))
        assert z.shape == (2, 3, 1, 16)
        out = m.loss(torch.rand(2, 4, 3, 16, 16), torch.randn(2, 3, 2))
        out["loss"].backward()
        assert all(p.grad is not None for p in m.projector.parameters())
        if reg == "ema":
            assert all(p.grad is None for p in m.target_projector.parameters())
    pred = m.predictor.eval()
    zz, a = torch.randn(1, 4, 1, 16), torch.randn(1, 4, 2)
    base = pred(zz, a)
    zz2 = zz.clone()
    zz2[:, 2] += 3.0
    assert torch.allclose(pred(zz2, a)[:, :2], base[:, :2], atol=1e-5)


def test_residual_predictor_starts_as_the_copy_and_learns_from_actions():
    """residual=True: at init P(z, a) = z exactly (zero-initialised output layer), and the action still gets a
    gradient through the output layer's zero weights on the first backward (so the model can leave the copy)."""
    torch.manual_seed(0)
    cfg = ACConfig(size=16, patch=8, dim=16, depth=1, heads=2, pred_dim=16, pred_depth=1, pred_heads=2,
                   action_block=5, residual=True)
    pred = ACPredictor(cfg)
    z, a = torch.randn(2, 3, 4, 16), torch.randn(2, 3, 10)
    assert torch.equal(pred(z, a), z)
    loss = (pred(z, a) - z - 1.0).abs().mean()
    loss.backward()
    assert pred.proj.weight.grad.abs().sum() > 0
    assert pred.action.weight.grad.abs().sum() == 0  # behind the zero output weights: second order at init
    with pytest.raises(ValueError):
        ACPredictor(cfg)(z, a[:, :2])



LEWM = dict(TINY, regulariser="sigreg", loss="mse", normalize=False, pooled=True, pred_projector=True, history=3,
            rollout_steps=0)


def test_sigreg_by_hand_on_two_points():
    """D = 1: every unit direction is +-1, so two samples at +-a give phi_N(t) = cos(t a) exactly and
    T = N sum_k w_k (cos(t_k a) - exp(-t_k^2 / 2))^2 with the 17-knot trapezoid weights on [0, 3] (doubled)."""
    a = 0.7
    t = np.linspace(0, 3, 17)
    w = np.full(17, 2 * 3 / 16)
    w[[0, -1]] = 3 / 16
    expected = 2 * np.sum(w * np.exp(-t**2 / 2) * (np.cos(t * a) - np.exp(-t**2 / 2)) ** 2)
    got = SIGReg(num_proj=8)(torch.tensor([[a], [-a]]))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_lewm_loss_is_next_embedding_mse_plus_sigreg_per_time_step():
    """LeWM ``train.py``: loss = mean (P(z_<3, a_<3) - z_1..3)^2 + 0.09 SIGReg(z transposed to (T, B, D)), gradient
    through both branches (no stop-gradient), no rollout term; the pred_proj MLP sits after the predictor."""
    torch.manual_seed(0)
    m = ACWorldModel(ACConfig(**LEWM))
    frames, actions = torch.rand(6, 4, 3, 16, 16), torch.randn(6, 3, 2)
    torch.manual_seed(1)
    out = m.loss(frames, actions)
    z = m.encode(frames)  # (6, 4, 1, 16): BatchNorm in train mode, the same batch -> the same embeddings
    pred = m.predict(z[:, :-1], actions)
    torch.manual_seed(1)  # the same random projections as inside the loss
    sig = m.sigreg(z[:, :, 0].transpose(0, 1))  # (T, B, D): one test per time step over the batch
    assert float(out["rollout_loss"]) == 0.0
    assert float(out["tf_loss"].detach()) == pytest.approx(float((pred - z[:, 1:]).square().mean().detach()), rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(float((out["tf_loss"] + 0.09 * sig).detach()), rel=1e-5)
    out["loss"].backward()
    for part in (m.encoder, m.projector, m.predictor, m.pred_projector):
        assert all(p.grad is not None for p in part.parameters())
    with pytest.raises(ValueError, match="pred_projector needs pooled"):
        ACWorldModel(ACConfig(**dict(LEWM, pooled=False)))
    with pytest.raises(ValueError, match="history"):
        ACWorldModel(ACConfig(**dict(LEWM, history=-1)))


def test_history_window_hides_older_frames_from_the_rollout():
    """history = 2: the first predicted step sees only the last 2 of 3 context frames (LeWM ``rollout``: emb[:, -HS:]);
    with history = 0 (V-JEPA 2-AC) it sees all 3."""
    torch.manual_seed(0)
    for hist, moves in ((2, False), (0, True)):
        m = ACWorldModel(ACConfig(**dict(LEWM, history=hist))).eval()
        z0, a = torch.randn(1, 3, 1, 16), torch.randn(1, 4, 2)
        base = m.rollout(z0, a)
        z1 = z0.clone()
        z1[:, 0] += 3.0
        assert ((m.rollout(z1, a) - base).abs().max() > 1e-3) == moves
        z2 = z0.clone()
        z2[:, 2] += 3.0  # the newest frame always matters
        assert (m.rollout(z2, a) - base).abs().max() > 1e-3


def test_energy_last_reads_only_the_last_pooled_embedding():
    """Perturbation: with energy="last" a change of any earlier predicted embedding leaves the energy unchanged, a
    change of the last one moves it by exactly the MSE (LeWM ``criterion``, up to the sum over D)."""
    m = ACWorldModel(ACConfig(**LEWM))
    z = torch.randn(3, 5, 1, 16, generator=torch.Generator().manual_seed(0))
    goal = torch.zeros(1, 1, 16)
    m.rollout = lambda z0, a: z
    args = (torch.zeros(1, 1, 1, 16), goal, torch.zeros(3, 5, 2))
    base = m.energy(*args, "last")
    assert torch.allclose(base, z[:, -1, 0].square().mean(-1))
    z[:, :4] += 10.0
    assert torch.equal(m.energy(*args, "last"), base)
    z[:, 4] += 1.0
    assert not torch.allclose(m.energy(*args, "last"), base)


def test_batchnorm_recalibration_matches_the_batch_statistics_at_the_final_weights():
    """After recalibrate_batchnorm over one batch, eval mode on that batch gives what train mode (batch statistics)
    gives, up to the unbiased variance BatchNorm stores: the lagging running averages are replaced."""
    from wmkit.jepa.train import recalibrate_batchnorm

    torch.manual_seed(0)
    m = ACWorldModel(ACConfig(**LEWM))
    for bn in (m.projector.norm, m.pred_projector.norm):
        bn.running_mean.fill_(5.0)  # stale statistics, as after training with moving weights
    clip, act = torch.rand(64, 4, 3, 16, 16), torch.randn(64, 3, 2)
    with torch.no_grad():
        m.train()
        z_train = m.encode(clip)
        m.eval()
        z_stale = m.encode(clip)
        assert recalibrate_batchnorm(m, [(clip, act)]) == 2
        assert not m.training
        z_eval = m.encode(clip)
    assert (z_stale - z_train).abs().max() > 1.0
    assert torch.allclose(z_eval, z_train, atol=0.05)
    assert m.projector.norm.momentum == 0.1  # restored
    assert recalibrate_batchnorm(ACWorldModel(ACConfig(**TINY)), []) == 0  # no BatchNorm: nothing to do


def test_cls_pool_attends_to_every_token_and_is_checked():
    """pool="cls" (LeWM's CLS token): one embedding per frame that changes when any single patch changes, with a
    gradient into the learnable token; refused with an EMA target or without pooled."""
    torch.manual_seed(0)
    m = ACWorldModel(ACConfig(**dict(LEWM, pool="cls"))).eval()
    frames = torch.rand(1, 2, 3, 16, 16)
    base = m.encode(frames)
    assert base.shape == (1, 2, 1, 16)
    for y, x in ((0, 0), (8, 8)):  # the first and the last of the 4 patches
        f2 = frames.clone()
        f2[:, 0, :, y:y + 8, x:x + 8] = 1.0 - f2[:, 0, :, y:y + 8, x:x + 8]
        out = m.encode(f2)
        assert (out[:, 0] - base[:, 0]).abs().max() > 1e-3 and torch.equal(out[:, 1], base[:, 1])
    m.train()
    m.loss(torch.rand(4, 4, 3, 16, 16), torch.randn(4, 3, 2))["loss"].backward()
    assert m.cls_token.grad is not None and m.cls_token.grad.abs().sum() > 0
    for bad in (dict(LEWM, pool="cls", regulariser="ema"), dict(TINY, pool="cls"), dict(LEWM, pool="max")):
        with pytest.raises(ValueError, match="pool"):
            ACWorldModel(ACConfig(**bad))
