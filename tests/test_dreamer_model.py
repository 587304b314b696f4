"""DreamerV3 model tests: gradients go where the paper says, known parameter counts, determinism,
resume through wmkit.checkpoint, and clear errors for bad inputs. Tiny sizes: a few seconds each."""

import numpy as np
import pytest
import torch

from wmkit.checkpoint import load_state, save_state
from wmkit.dreamer import Agent, DreamerConfig, symlog, twohot
from wmkit.dreamer.agent import WorldModel, size_table

IMG = {"image": ((64, 64, 3), np.uint8)}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

VEC = {"vector": ((6,), np.float32)}


def make_batch(B=3, T=8, n=4, image=True, vector=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = {"action": torch.nn.functional.one_hot(torch.randint(0, n, (B, T), generator=g), n).float(),
         "reward": torch.randn(B, T, generator=g), "is_first": torch.zeros(B, T, dtype=torch.bool),
         "is_terminal": torch.zeros(B, T, dtype=torch.bool)}
    b["is_first"][:, 0] = True
    b["action"][:, 0] = 0
    b["is_terminal"][0, -1] = True
    if image:   # smooth blobs so there is something to learn
        x = torch.linspace(-1, 1, 64)
        c = torch.rand(B, T, 2, generator=g) - 0.5
        d = (x[None, None, :, None] - c[..., 0, None, None]) ** 2 \
            + (x[None, None, None, :] - c[..., 1, None, None]) ** 2
        b["image"] = (255 * torch.exp(-8 * d)).to(torch.uint8)[..., None].expand(B, T, 64, 64, 3).contiguous()
    if vector:
        b["vector"] = torch.randn(B, T, 6, generator=g) * 100
    return b


def tiny_agent(obs=IMG, discrete=True, recipe="2023", seed=0, **kw):
    cfg = DreamerConfig(recipe=recipe, size="tiny", **kw)
    return Agent(obs, {"n": 4, "discrete": discrete}, cfg, device="cpu", seed=seed)


def test_unimix_floor_and_straight_through():
    agent = tiny_agent()
    rssm = agent.wm.rssm
    raw = torch.randn(5, rssm.stoch * rssm.classes) * 50          # extreme logits
    probs = rssm._logits(raw).exp()
    assert probs.min() >= 0.01 / rssm.classes * (1 - 1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones(5, rssm.stoch))
    logp, _ = agent.actor(torch.randn(7, agent.wm.feat_dim) * 100)
    assert logp.exp().min() >= 0.01 / 4 * (1 - 1e-5)
    # the straight-through sample is one-hot in value but passes gradients to the logits
    logits = torch.randn(2, rssm.stoch * rssm.classes, requires_grad=True)
    sample = rssm.sample(rssm._logits(logits), rssm.noise((2,), None, "cpu"))
    assert torch.allclose(sample.detach().reshape(2, rssm.stoch, -1).sum(-1), torch.ones(2, rssm.stoch))
    (sample * torch.randn_like(sample)).sum().backward()
    assert logits.grad.abs().sum() > 0


def _grads(loss, params):
    gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return sum(0.0 if g is None else float(g.abs().sum()) for g in gs)


def test_kl_balancing_gradients_go_where_they_should():
    agent = tiny_agent()
    wm, rssm = agent.wm, agent.wm.rssm
    b = make_batch(B=2, T=1)    # one step from the zero state: h_1 does not depend on the encoder
    embed = wm.encoder({"image": b["image"]})
    out = rssm.observe(embed, b["action"], b["is_first"], rssm.initial(2, "cpu"), None)
    # free = 0 so that the max(1, KL) floor does not hide the gradients
    dyn, rep, _ = rssm.kl_losses(out["post"], out["prior"], free=0.0)
    enc_post = list(wm.encoder.parameters()) + list(rssm.post_embed.parameters()) + \
        list(rssm.post_out.parameters())
    prior = list(rssm.prior.parameters())
    assert _grads(dyn.sum(), enc_post) == 0.0       # dynamics term: does not move encoder/posterior
    assert _grads(dyn.sum(), prior) > 0.0           # ... it trains the prior
    assert _grads(rep.sum(), prior) == 0.0          # representation term: does not move the prior
    assert _grads(rep.sum(), enc_post) > 0.0        # ... it trains encoder and posterior
    # free bits: below 1 nat the clipped KL is constant, so no gradient at all
    dyn1, rep1, kl = rssm.kl_losses(out["post"], out["prior"], free=1e6)
    assert _grads(dyn1.sum() + rep1.sum(), enc_post + prior) == 0.0
    assert torch.all(dyn1 == 1e6)


def test_known_parameter_counts():
    agent = tiny_agent()
    # CNN depth 8: convs 3*8*16 + 8*16*16 + 16*32*16 + 32*64*16 = 43392, LayerNorms 2*(8+16+32+64) = 240
    assert agent.param_counts()["encoder"] == 43_632
    # two-hot reward head: Linear(136->64, no bias) + LN(64) + Linear(64->255): 8704 + 128 + 16575
    F = 128 + 8 * 8
    assert agent.wm.feat_dim == F
    assert agent.param_counts()["reward"] == F * 64 + 128 + 64 * 255 + 255
    counts = agent.param_counts()
    assert counts["total"] == counts["world_model"] + counts["actor"] + counts["critic"]
    # 2023: + the learned initial state w (deter = 128). The count equals sheeprl 0.8.4's part by part
    # (tools/bench_sheeprl.py --params) because the 2023 default hidden_bias=False is both v1's rule (no bias
    # before a norm) and sheeprl's ("bias": not layer_norm); hidden_bias=True would add 1,008 here
    table = size_table()
    assert table["tiny"] == 539_059 + 128 and 3_000_000 < table["size3m"] < 4_000_000
    assert 6e6 < table["xs"] < 12e6 and 150e6 < table["xl"] < 260e6     # the paper: 8M .. 200M


def test_zero_initialised_heads_predict_zero():
    agent = tiny_agent()
    feat = torch.randn(3, agent.wm.feat_dim)
    assert torch.all(agent.wm.reward.pred(agent.wm.reward(feat)) == 0)
    assert torch.all(agent.critic.pred(agent.critic(feat)) == 0)


@pytest.mark.parametrize("recipe", ["2023", "2025"])
def test_updates_lower_world_model_loss(recipe):
    agent = tiny_agent(recipe=recipe, warmup=0, model_lr=1e-3)   # a larger lr so 6 steps show it
    batch = make_batch(B=4, T=10)
    losses = [agent.update(batch)["wm_loss"] for _ in range(6)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_determinism_and_resume_are_bit_identical(tmp_path):
    batch = make_batch(B=2, T=6, vector=True)
    obs = {**IMG, **VEC}
    a, b = tiny_agent(obs, seed=3), tiny_agent(obs, seed=3)
    assert a.update(batch) == b.update(batch)
    save_state(tmp_path / "ckpt", a.state_dict())
    m_a = a.update(batch)
    c = tiny_agent(obs, seed=99)               # different init, then restored
    c.load_state_dict(load_state(tmp_path / "ckpt"))
    assert c.update(batch) == m_a
    for p, q in zip(a.wm.parameters(), c.wm.parameters()):
        assert torch.equal(p, q)


def test_continuous_2025_policy_and_report():
    agent = tiny_agent({**IMG, **VEC}, discrete=False, recipe="2025")
    batch = make_batch(B=2, T=6, vector=True)
    batch["action"] = torch.rand(2, 6, 4) * 2 - 1
    m = agent.update(batch)
    assert "repval_loss" in m and np.isfinite(m["actor_loss"])
    state = agent.initial_state(2)
    obs = {"image": np.zeros((2, 64, 64, 3), np.uint8), "vector": np.ones((2, 6), np.float32),
           "is_first": np.array([True, True])}
    act, state = agent.policy(obs, state)
    assert act.shape == (2, 4) and act.dtype == np.float32 and np.all(np.abs(act) <= 1)
    rep = agent.imagine_report(batch, context=2)
    assert rep["imagined"].shape == (2, 6, 64, 64, 3) and rep["imagined"].dtype == np.uint8
    assert rep["reward"].shape == rep["cont"].shape == rep["value"].shape == (2, 6)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="'image'"):
        Agent({"image": ((32, 32, 3), np.uint8)}, {"n": 3, "discrete": True}, DreamerConfig())
    with pytest.raises(ValueError, match="'rgb'"):
        Agent({"rgb": ((64, 64, 3), np.uint8)}, {"n": 3, "discrete": True}, DreamerConfig())
    with pytest.raises(ValueError, match="'vector'"):
        Agent({"vector": ((4,), np.float64)}, {"n": 3, "discrete": True}, DreamerConfig())
    with pytest.raises(ValueError, match="act_space"):
        Agent(IMG, {"n": 0, "discrete": True}, DreamerConfig())
    with pytest.raises(ValueError, match="size"):
        DreamerConfig(size="huge")
    agent = tiny_agent()
    state = agent.initial_state(1)
    with pytest.raises(ValueError, match=r"obs\['image'\].*dtype"):
        agent.policy({"image": np.zeros((1, 64, 64, 3), np.float32), "is_first": np.ones(1, bool)}, state)
    with pytest.raises(ValueError, match=r"obs\['image'\].*shape"):
        agent.policy({"image": np.zeros((1, 64, 64), np.uint8), "is_first": np.ones(1, bool)}, state)
    batch = make_batch(B=2, T=4)
    del batch["reward"]
    with pytest.raises(ValueError, match="reward"):
        agent.update(batch)


def test_world_model_builds_on_meta_device_for_paper_sizes():
    with torch.device("meta"):
        wm = WorldModel(IMG, 17, DreamerConfig(recipe="2025", size="size50m"))
    assert wm.feat_dim == 4096 + 32 * 32


@pytest.mark.parametrize("space", ["symlog", "symexp"])
def test_twohot_head_round_trip_in_both_bin_spaces(space):
    from wmkit.dreamer.networks import TwoHotHead
    head = TwoHotHead(4, 8, 1, "layer", 255, space)
    y = torch.tensor([-2500.0, -1.0, 0.0, 0.37, 42.0, 9000.0])
    target = twohot(symlog(y) if space == "symlog" else y, head.bins)
    logits = torch.log(target + 1e-30)             # a head that outputs exactly the two-hot target
    assert torch.allclose(head.pred(logits), y, rtol=1e-3, atol=1e-4)
    # cross-entropy is minimal (= entropy of the target) at the target itself
    assert torch.all(head.loss(logits, y) <= head.loss(torch.zeros_like(logits), y))
    # the gathered loss equals the dense two-hot cross-entropy
    other = torch.randn(6, 255)
    dense = -(target * other.log_softmax(-1)).sum(-1)
    assert torch.allclose(head.loss(other, y), dense, atol=1e-5)


def test_vector_only_agent_and_eval_mode_is_deterministic():
    agent = tiny_agent(VEC)
    batch = make_batch(B=2, T=5, image=False, vector=True)
    m = agent.update(batch)
    assert np.isfinite(m["wm_loss"]) and "imagined_vector" in agent.imagine_report(batch, context=2)
    obs = {"vector": np.ones((3, 6), np.float32), "is_first": np.ones(3, bool)}
    a1, s1 = agent.policy(obs, agent.initial_state(3), mode="eval")
    assert a1.shape == (3, 4) and np.all(a1.sum(-1) == 1)          # one-hot actions
    obs2 = {**obs, "is_first": np.zeros(3, bool)}
    a2, _ = agent.policy(obs2, s1, mode="eval")
    assert a2.shape == (3, 4)
    g1, _ = agent.policy(obs, agent.initial_state(3), mode="greedy")   # the labelled argmax option
    assert np.all(g1.sum(-1) == 1)
    with pytest.raises(ValueError, match="mode"):
        agent.policy(obs, s1, mode="best")


def test_nan_stops_with_a_message_naming_the_loss():
    from wmkit.training import NonFiniteLossError
    agent = tiny_agent()
    batch = make_batch(B=2, T=4)
    batch["reward"][0, 2] = float("nan")
    with pytest.raises(NonFiniteLossError, match="reward_loss"):
        agent.update(batch)


@pytest.mark.parametrize("recipe,discrete", [("2025", True), ("2025", False), ("2023", False)])
def test_resume_is_bit_identical_for_laprop_and_continuous(tmp_path, recipe, discrete):
    batch = make_batch(B=2, T=5)
    if not discrete:
        batch["action"] = torch.rand(2, 5, 4) * 2 - 1
    a = tiny_agent(discrete=discrete, recipe=recipe, seed=1)
    a.update(batch)
    save_state(tmp_path / "ckpt", a.state_dict())
    expected = [a.update(batch) for _ in range(2)]
    b = tiny_agent(discrete=discrete, recipe=recipe, seed=5)
    b.load_state_dict(load_state(tmp_path / "ckpt"))
    assert [b.update(batch) for _ in range(2)] == expected


def test_replay_returns_hand_computed():
    from wmkit.dreamer.agent import replay_returns
    rew = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    term = torch.zeros(1, 4, dtype=torch.bool)
    first = torch.tensor([[True, False, True, False]])          # a new episode starts at t = 2
    boot = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    # R[2] = 3 + .5 (.5 * 40 + .5 * 40) = 23; R[1] = boot[1] = 20 (cut, weight 0); R[0] = 1 + .5 (10 + 10) = 11
    ret, valid = replay_returns(rew, term, first, boot, 0.5, 0.5)
    assert torch.allclose(ret, torch.tensor([[11.0, 20.0, 23.0]]))
    assert torch.equal(valid, torch.tensor([[1.0, 0.0, 1.0]]))
    term[0, 3] = True                                          # arriving at t = 3 ends the episode
    assert float(replay_returns(rew, term, first, boot, 0.5, 0.5)[0][0, 2]) == 3.0


def test_bench_sheeprl_cv2_placeholder_raises_on_use(monkeypatch):
    """tools/bench_sheeprl.py on a machine without OpenCV (the lent GPU's image): sheeprl's env module imports cv2,
    which one update never calls; the placeholder lets the import pass, and any use fails with a message saying why.
    With OpenCV installed nothing is replaced."""
    import importlib.util
    import sys

    import pytest
    from conftest import load_tool

    tool = load_tool("bench_sheeprl")
    real = importlib.util.find_spec
    if real("cv2") is not None:
        assert tool.cv2_placeholder() is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real(name, *a))
    before = sys.modules.pop("cv2", None)
    try:
        assert tool.cv2_placeholder() is True
        import cv2

        assert not hasattr(cv2, "resize")  # AttributeError, so hasattr and inspect keep working
        with pytest.raises(AttributeError, match="OpenCV is not installed"):
            cv2.resize(None, (64, 64))
    finally:  # the rest of the session imports the real OpenCV again
        sys.modules.pop("cv2", None)
        if before is not None:
            sys.modules["cv2"] = before
