"""Stage 4 session 2: swm's weak expert and default door, the offset-goal protocol, action blocks, energy modes,
SIGReg's sample axis and the projector's BatchNorm, the standardised attentive probe, diffusion features."""

import math

import numpy as np
import pytest
import torch
from conftest import load_tool

from wmkit.jepa.ac import ACConfig, ACWorldModel, SIGReg
from wmkit.jepa.plan import evaluate_planning, offset_goal
from wmkit.jepa.probes import attentive_probe
from wmkit.jepa.train import block_windows
from wmkit.jepa.tworooms import DEFAULT_DOOR, WALL_X, TwoRooms, WeakExpert, collect

TINY = dict(size=16, patch=8, dim=16, depth=1, heads=2, pred_dim=16, pred_depth=1, pred_heads=2, max_frames=8,
            sigreg_proj=32)


def test_default_door_is_swm_init_value_and_vary_door_randomises():
    env = TwoRooms(render_size=8)
    assert DEFAULT_DOOR == (9 + 247, 9 + 247 + 75)  # swm legacy: position size // 2 = 247, size 75, border 9
    doors = {env.reset(seed=s)[1]["door"] for s in range(5)}
    assert doors == {DEFAULT_DOOR}
    env = TwoRooms(render_size=8, vary_door=True)
    assert len({env.reset(seed=s)[1]["door"] for s in range(5)}) == 5


def test_weak_expert_heads_for_the_door_then_the_target():
    env = TwoRooms(render_size=8)
    env.reset(agent=np.array([100.0, 100.0]), goal=np.array([400.0, 100.0]))
    expert = WeakExpert(env, noise=0.0, repeat=0.0)
    door = np.array([WALL_X, (DEFAULT_DOOR[0] + DEFAULT_DOOR[1]) / 2])
    a = expert(env.goal)
    assert np.allclose(a, (door - env.agent) / np.linalg.norm(door - env.agent))  # unit vector to the door centre
    env.reset(agent=np.array([300.0, 100.0]), goal=np.array([400.0, 150.0]))  # same room: straight to the target
    assert np.allclose(expert(env.goal), np.array([100.0, 50.0]) / math.hypot(100, 50))
    env.reset(agent=np.array([100.0, 100.0]), goal=np.array([400.0, 100.0]))
    for _ in range(80):  # noise-free, it passes the door and reaches the target in the other room
        if env.step(expert(env.goal))[2]:
            break
    assert env.info()["overlap"] >= 0.5
    with pytest.raises(ValueError, match="noise"):
        WeakExpert(env, noise=-1.0)


def test_expert_noise_is_gaussian_then_clipped():
    env = TwoRooms(render_size=8)
    env.reset(agent=np.array([300.0, 100.0]), goal=np.array([400.0, 100.0]))  # direction (1, 0)
    expert = WeakExpert(env, noise=2.0, repeat=0.0, rng=np.random.default_rng(0))
    acts = np.stack([expert(env.goal) for _ in range(4000)])
    assert acts.min() >= -1 and acts.max() <= 1
    # E[clip(1 + 2 e, -1, 1)] for e ~ N(0, 1): P(x > 1) - P(x < -1) + E[x; |x| <= 1] = 0.3829 by hand (Phi, phi)
    assert acts[:, 0].mean() == pytest.approx(0.3829, abs=0.03)
    assert acts[:, 1].mean() == pytest.approx(0.0, abs=0.03)


def test_offset_goal_leaves_the_env_as_it_was_and_matches_the_expert():
    env = TwoRooms(render_size=8, max_energy=200)
    env.reset(seed=3)
    agent, energy = env.agent.copy(), env.energy
    goal = offset_goal(env, 25, np.random.default_rng(7))
    assert np.array_equal(env.agent, agent) and env.energy == energy
    expert = WeakExpert(env, rng=np.random.default_rng(7))
    for _ in range(25):
        env.step(expert(env.goal))
    assert np.array_equal(env.agent, goal)
    with pytest.raises(ValueError, match="offset"):
        offset_goal(env, 0, np.random.default_rng(0))


def test_block_windows_by_hand():
    video = torch.arange(2 * 11, dtype=torch.float32).reshape(2, 11, 1, 1, 1)  # frame value = 11 e + t
    acts = torch.arange(2 * 10 * 2, dtype=torch.float32).reshape(2, 10, 2)  # action t of episode e: (20e+2t, +1)
    clip, act = block_windows(video, acts, [(1, 2)], length=3, block=3)
    assert clip.flatten().tolist() == [13.0, 16.0, 19.0]  # frames 2, 5, 8 of episode 1
    assert act.shape == (1, 2, 6)
    assert act[0, 0].tolist() == [24.0, 25.0, 26.0, 27.0, 28.0, 29.0]  # actions 2, 3, 4 lead from frame 2 to 5
    assert act[0, 1].tolist() == [30.0, 31.0, 32.0, 33.0, 34.0, 35.0]  # actions 5, 6, 7 lead from frame 5 to 8


def test_action_block_widens_the_action_input_and_trains():
    from wmkit.jepa.train import ACTrainConfig, train_ac

    d = collect(3, 12, 16, seed=0, policy="expert")
    cfg = ACTrainConfig(model=ACConfig(**TINY, action_block=3), steps=2, batch=2, length=3)
    model, hist = train_ac(cfg, d["frames"], d["actions"], progress=False)
    assert model.predictor.action.in_features == 6 and len(hist) == 2 and math.isfinite(hist[-1]["loss"])


def test_energy_last_and_all_by_hand():
    model = ACWorldModel(ACConfig(**TINY))
    z = torch.zeros(2, 3, 4, 16)
    z[0, 1] = 1.0  # sample 0: |.| = 1 at step 1 only; sample 1: 2 at the last step
    z[1, 2] = 2.0
    model.rollout = lambda z0, a: z
    goal = torch.zeros(1, 4, 16)
    a = torch.zeros(2, 3, 2)
    z0 = torch.zeros(1, 1, 4, 16)
    assert model.energy(z0, goal, a, "last").tolist() == [0.0, 2.0]
    assert torch.allclose(model.energy(z0, goal, a, "all"), torch.tensor([1 / 3, 2 / 3]))
    # DINO-WM's default base 2: weights (1, 2, 4) / 7
    assert torch.allclose(model.energy(z0, goal, a, "all", base=2.0), torch.tensor([2 / 7, 8 / 7]))
    with pytest.raises(ValueError, match="mode"):
        model.energy(z0, goal, a, "first")


def test_sigreg_samples_all_pools_time_and_batch():
    torch.manual_seed(0)
    m = ACWorldModel(ACConfig(**TINY, regulariser="sigreg", loss="mse", normalize=False, sigreg_samples="all"))
    frames, actions = torch.rand(3, 4, 3, 16, 16), torch.randn(3, 3, 2)
    z = m.encode(frames)  # (3, 4, 4, 16)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    m.sigreg.forward = (lambda f: lambda x, generator=None: f(x, generator=g1))(m.sigreg.forward)
    out = m.loss(frames, actions)
    expected = SIGReg(num_proj=32)(z.reshape(-1, 16), generator=g2)  # one test over all 3 * 4 * 4 embeddings
    assert float(out["sigreg"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_sigreg_gradient_vanishes_on_a_tiny_cloud():
    """Why the pooled LeWM variant collapsed without the projector's BatchNorm: near a point, SIGReg's gradient is
    second order in the spread, so it cannot push a tiny cloud apart."""
    sig = SIGReg(num_proj=64)
    grads = {}
    for std in (1e-3, 1.0):
        x = (std * torch.randn(64, 16, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
        sig(x, generator=torch.Generator().manual_seed(1)).backward()
        grads[std] = float(x.grad.norm())
    assert grads[1e-3] < 0.05 * grads[1.0]


def test_pooled_projector_batchnorm_spreads_the_initial_embeddings():
    torch.manual_seed(0)
    frames = torch.rand(8, 2, 3, 16, 16)
    spread = {}
    for norm in (False, True):
        m = ACWorldModel(ACConfig(**TINY, pooled=True, regulariser="sigreg", loss="mse", normalize=False,
                                  projector_norm=norm))
        spread[norm] = float(m.encode(frames).std(0).mean().detach())  # across the batch, per channel
    assert spread[True] > 5 * spread[False]


def test_attentive_probe_needs_standardised_tokens_when_the_signal_is_small():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(400, 1, generator=g)
    tok = torch.randn(1, 4, 8, generator=g).expand(400, -1, -1).clone()  # a large constant shared by all samples
    tok[:, 1, :] += 0.02 * y * torch.linspace(-1, 1, 8)  # the target, 2 % of the scale, in one token
    raw = attentive_probe(tok[:300], y[:300], tok[300:], y[300:], steps=150, standardize=False)
    std = attentive_probe(tok[:300], y[:300], tok[300:], y[300:], steps=150)
    assert std["r2"] > 0.7 and raw["r2"] < 0.1  # measured: 0.79 and -0.08


def test_evaluate_planning_reports_standard_errors():
    torch.manual_seed(0)
    model = ACWorldModel(ACConfig(**TINY, action_block=2))
    r = evaluate_planning(model, 3, 4, 2, 8, 2, 1, 16, goal="offset", goal_offset=3, progress=False)
    p = r["plan_success"]
    assert r["plan_success_se"] == pytest.approx(math.sqrt(p * (1 - p) / 3))
    diff = [float(e["plan_success"]) - float(e["random_success"]) for e in r["episodes"]]
    assert r["difference"] == pytest.approx(np.mean(diff))
    # final distances: s.e. over episodes and the paired difference planner - random, by hand from the rows
    d_plan = [e["plan_final_distance"] for e in r["episodes"]]
    gap = [e["plan_final_distance"] - e["random_final_distance"] for e in r["episodes"]]
    assert r["plan_final_distance_se"] == pytest.approx(np.std(d_plan, ddof=1) / math.sqrt(3))
    assert r["distance_difference"] == pytest.approx(np.mean(gap))
    assert r["distance_difference_se"] == pytest.approx(np.std(gap, ddof=1) / math.sqrt(3))
    with pytest.raises(ValueError, match="goal"):
        evaluate_planning(model, 1, 4, 2, 8, 2, 1, 16, goal="anywhere", progress=False)


def _planners_tool():
    return load_tool("jepa_planners")


def test_planners_tool_parses_variants_and_refuses_bad_ones():
    from types import SimpleNamespace

    tool = _planners_tool()
    J = SimpleNamespace(cem_samples=64, cem_elites=8, cem_iters=6)
    assert tool.parse_variant("10:5:all", J) == dict(horizon=10, receding=5, energy="all", samples=64, elites=8,
                                                     iterations=6)
    assert tool.parse_variant("5:1:last:400:10:10", J)["samples"] == 400
    for bad in ("5:1", "5:1:mean", "5:6:all", "5:x:all", "5:1:all:64"):
        with pytest.raises(ValueError, match="variant"):
            tool.parse_variant(bad, J)


def test_diffusion_features_shape_and_hook_removed():
    from wmkit.jepa.compare import diffusion_features, train_diffusion_wm

    d = collect(2, 8, 16, seed=0)
    m, hist, flops, _ = train_diffusion_wm(d["frames"], d["actions"], 1, 2, context=2, channels=(16, 16),
                                           depths=(1, 1), cond_channels=32, progress=False)
    assert flops > 0 and len(hist) == 1
    f = diffusion_features(m, torch.rand(5, 3, 16, 16))
    assert f.shape == (5, 8 * 8, 16)  # one token per mid-level pixel (16 / 2), 16 channels
    assert not m.net.unet.mid[-1]._forward_hooks


@pytest.mark.slow
def test_finetune_recipe_pretrained_encoder_frozen_under_an_ac_predictor(tmp_path, monkeypatch, capsys):
    """`torchrun -m wmkit.jepa.pretrain` (here one process) -> `wmkit jepa train-ac --regulariser frozen --encoder`:
    the AC model's encoder is the pretrained target encoder, unchanged by the downstream training."""
    from wmkit.checkpoint import load_state
    from wmkit.jepa.cli import main as jepa_main
    from wmkit.jepa.pretrain import main as pretrain_main

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    pretrain_main(["--steps", "2", "--size", "smoke", "--run-dir", str(tmp_path / "pre")])
    ckpt = tmp_path / "pre" / "ckpt" / "latest"
    jepa_main(["train-ac", "--regulariser", "frozen", "--encoder", str(ckpt), "--steps", "2", "--residual", "true",
               "--run-dir", str(tmp_path / "ac")])
    pre, ac = load_state(ckpt)["model"], load_state(tmp_path / "ac" / "ckpt" / "latest")["model"]
    enc = {k[len("encoder."):]: v for k, v in ac.items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(v, pre["target_encoder." + k]) for k, v in enc.items())
    with pytest.raises(SystemExit, match="needs --encoder"):
        jepa_main(["train-ac", "--regulariser", "frozen", "--steps", "1", "--run-dir", str(tmp_path / "x")])


def test_repeat_searches_one_action_per_block():
    from wmkit.jepa.plan import plan_episode

    torch.manual_seed(0)
    model = ACWorldModel(ACConfig(**TINY, action_block=3))
    env = TwoRooms(render_size=16, max_energy=100)
    env.reset(seed=0)
    taken, step = [], env.step
    env.step = lambda a: (taken.append(np.array(a)), step(a))[1]
    shapes = []
    energy = model.energy
    model.energy = lambda z0, goal, a, *args: (shapes.append(a.shape), energy(z0, goal, a, *args))[1]
    plan_episode(model, env, 6, 2, 8, 2, 1, torch.Generator().manual_seed(0), receding=1, repeat=True)
    assert shapes[0] == (8, 2, 6)  # the model still sees blocks of 3 actions
    acts = np.stack(taken)  # (6, 2): two executed blocks of 3 identical actions each
    assert len(acts) == 6 and np.allclose(acts[:3], acts[0]) and np.allclose(acts[3:], acts[3])


def test_energy_ranking_shapes_copy_error_and_bad_input():
    from wmkit.jepa.ac import ACConfig, ACWorldModel
    from wmkit.jepa.plan import energy_ranking

    torch.manual_seed(0)
    model = ACWorldModel(ACConfig(size=16, patch=8, dim=16, depth=1, heads=2, pred_dim=16, pred_depth=1, pred_heads=2,
                                  action_block=5, regulariser="frozen", residual=True))
    r = energy_ranking(model, 16, episodes=2, futures=4, goal_offset=10)
    assert r["horizon"] == 2 and r["predicted"].shape == (2,) and r["real"].shape == (2,)
    assert all(-1.0 <= v <= 1.0 for v in np.concatenate([r["predicted"], r["real"]]))
    # an untrained residual predictor copies its input: its error after H blocks is exactly copying z_0's error
    assert r["error_H"] == pytest.approx(r["copy_error"], rel=1e-5)
    with pytest.raises(ValueError, match="episodes"):
        energy_ranking(model, 16, episodes=1)


def test_encoder_lr_scale_fine_tunes_the_encoder_proportionally():
    """ACTrainConfig.encoder_lr_scale: AdamW's first update is lr * (m/(sqrt(v)+eps) + wd * p), linear in lr, so
    after one step from the same weights and batch the encoder moves exactly scale times as far as at scale 1; at 0
    it stays put while the predictor trains; a negative scale is refused."""
    from wmkit.jepa.train import ACTrainConfig, train_ac

    d = collect(3, 12, 16, seed=0, policy="expert")
    cfg = ACConfig(**{k: v for k, v in TINY.items() if k != "sigreg_proj"}, regulariser="ema", action_block=2)
    torch.manual_seed(0)
    start = ACWorldModel(cfg).encoder.state_dict()
    moved = {}
    for scale in (1.0, 0.1, 0.0):
        enc = ACWorldModel(cfg).encoder
        enc.load_state_dict(start)
        enc.requires_grad_(False)  # as an EMA target encoder comes: a recipe that trains the encoder fine-tunes it
        model, _ = train_ac(ACTrainConfig(model=cfg, steps=1, batch=3, length=3, warmup=1, encoder_lr_scale=scale),
                            d["frames"], d["actions"], encoder=enc, progress=False)
        moved[scale] = torch.cat([(model.encoder.state_dict()[k] - v).flatten() for k, v in start.items()])
        # the caller's encoder is not touched: the model fine-tunes a copy
        assert model.encoder is not enc and not any(p.requires_grad for p in enc.parameters())
        assert all(torch.equal(enc.state_dict()[k], v) for k, v in start.items())
    assert moved[1.0].abs().sum() > 0 and moved[0.0].abs().max() == 0
    # float32 rounding of p_new - p_old is ~1e-7 against changes of ~1e-4 (lr 1e-3): 1 % elementwise, tight in norm
    assert torch.allclose(moved[0.1], 0.1 * moved[1.0], rtol=1e-2, atol=2e-7)
    assert float(moved[0.1].norm() / moved[1.0].norm()) == pytest.approx(0.1, rel=1e-3)
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        train_ac(ACTrainConfig(model=cfg, steps=1, batch=3, length=3, encoder_lr_scale=-1.0), d["frames"],
                 d["actions"], progress=False)


def test_plan_cli_passes_planner_settings(monkeypatch, capsys):
    import json

    import wmkit.checkpoint
    import wmkit.jepa.plan
    from wmkit.jepa import cli

    cfg = ACConfig(**TINY, action_block=2)
    state = ACWorldModel(cfg).state_dict()
    from dataclasses import asdict

    monkeypatch.setattr(wmkit.checkpoint, "load_meta", lambda p: {"config": {"model": asdict(cfg)}})
    monkeypatch.setattr(wmkit.checkpoint, "load_state", lambda p: {"model": state})
    seen = {}

    def fake(model, episodes, budget, horizon, samples, elites, iterations, size, **kw):
        seen.update(episodes=episodes, horizon=horizon, samples=samples, elites=elites, iterations=iterations, **kw)
        return {"episodes": [], "plan_success": 0.5}

    monkeypatch.setattr(wmkit.jepa.plan, "evaluate_planning", fake)
    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    cli.main(["plan", "--checkpoint", "x", "--episodes", "3", "--horizon", "7", "--receding", "4", "--elites", "3",
              "--iterations", "2", "--energy", "all", "--energy-base", "2"])
    assert seen["horizon"] == 7 and seen["receding"] == 4 and seen["elites"] == 3 and seen["iterations"] == 2
    assert seen["energy"] == "all" and seen["energy_base"] == 2.0 and seen["episodes"] == 3
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"plan_success": 0.5}


def test_energy_bias_tool_known_answer_and_bad_input():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "jepa_energy_bias.py"
    spec = importlib.util.spec_from_file_location("jepa_energy_bias", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    model = ACWorldModel(ACConfig(**TINY, action_block=2))
    # an energy equal to the mean action norm ranks futures exactly by speed: Spearman +1 in every episode
    model.energy = lambda z0, zg, a, mode: rearrange_norm(a)
    r = tool.energy_bias(model, 16, episodes=2, futures=8, goal_offset=4)
    assert r["speed"] == pytest.approx(1.0) and r["speed_se"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="episodes"):
        tool.energy_bias(model, 16, episodes=1)


def rearrange_norm(a):
    """(F, H, k * 2) blocks -> mean norm of the 2-D actions, (F,)."""
    return a.reshape(a.shape[0], -1, 2).norm(dim=-1).mean(1)


def test_lewm_recipe_cli_trains_the_published_configuration(tmp_path, monkeypatch):
    """`wmkit jepa train-ac --recipe lewm`: LeWM's settings as published end up in the checkpoint's config (pooled
    embedding, pred_proj, history 3 + 1 prediction, MSE + 0.09 SIGReg, no rollout, no layer norm, weight decay 1e-3),
    the BatchNorm statistics are re-estimated, and the checkpoint plans."""
    from wmkit.checkpoint import load_meta, load_state
    from wmkit.jepa.cli import main as jepa_main

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    jepa_main(["train-ac", "--recipe", "lewm", "--pool", "cls", "--steps", "2", "--batch", "6",
               "--run-dir", str(tmp_path / "lewm")])
    ckpt = tmp_path / "lewm" / "ckpt" / "latest"
    cfg = load_meta(ckpt)["config"]
    m = cfg["model"]
    assert (m["regulariser"], m["loss"], m["normalize"], m["pooled"], m["pool"], m["pred_projector"]) == (
        "sigreg", "mse", False, True, "cls", True)
    assert (m["history"], m["rollout_steps"], m["sigreg_weight"], m["sigreg_samples"]) == (3, 0, 0.09, "time")
    assert (cfg["length"], cfg["batch"], cfg["weight_decay"], cfg["bn_recalibrate"]) == (4, 6, 1e-3, 8)
    model = ACWorldModel(ACConfig(**m))
    model.load_state_dict(load_state(ckpt)["model"])
    assert (m["size"], m["patch"], m["depth"]) == (16, 4, 1)  # the smoke profile's lewm_model over its ac_model
    r = evaluate_planning(model, 2, 5, 2, 8, 2, 1, 16, progress=False, goal_offset=5, receding=2)
    assert 0.0 <= r["plan_success"] <= 1.0
    import wmkit.jepa.plan

    seen = {}

    def fake(model, episodes, budget, horizon, samples, elites, iterations, size, **kw):
        seen.update(size=size, **kw)
        return {"episodes": [], "plan_success": 0.0}

    monkeypatch.setattr(wmkit.jepa.plan, "evaluate_planning", fake)
    jepa_main(["plan", "--checkpoint", str(ckpt), "--episodes", "1"])  # a LeWM checkpoint: LeWM's protocol
    assert (seen["receding"], seen["energy"], seen["size"]) == (2, "last", 16)  # smoke lewm_receding, lewm_energy
    jepa_main(["train-ac", "--recipe", "lewm", "--steps", "1", "--batch", "4", "--bn-recalibrate", "0", "--size", "16",
               "--episodes", "3", "--patch", "8", "--depth", "2", "--lr-schedule", "constant",
               "--run-dir", str(tmp_path / "lewm0")])
    cfg0 = load_meta(tmp_path / "lewm0" / "ckpt" / "latest")["config"]
    assert cfg0["bn_recalibrate"] == 0 and (cfg0["model"]["size"], cfg0["model"]["patch"]) == (16, 8)
    assert cfg0["model"]["depth"] == 2 and cfg0["lr_schedule"] == "constant" and cfg["lr_schedule"] == "cosine"


def test_lr_schedule_known_answers_and_the_trainer_follows_it():
    """Linear warm-up to the peak, then constant or LeWM's half cosine to 0 at the last step; train_ac sets exactly
    these rates (read back from the optimiser through a hook on ``step``), and a bad schedule is refused."""
    from wmkit.jepa.train import ACTrainConfig, lewm_config, lr_factor, train_ac

    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 5, 9)] == [0.5, 1.0, 1.0, 1.0]
    cos = [lr_factor(s, 10, 2, "cosine") for s in range(10)]  # after warm-up: progress (s - 2) / 7
    assert cos[:3] == [0.5, 1.0, 1.0] and cos[9] == pytest.approx(0.0, abs=1e-12)
    assert cos[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert all(a >= b for a, b in zip(cos[2:], cos[3:], strict=False))
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(0, 10, 2, "linear")
    assert lewm_config({"size": 16, "patch": 4}, 5, 10).lr_schedule == "cosine"  # LeWM's published schedule
    d = collect(2, 20, 16, seed=0, policy="expert")
    cfg = lewm_config(dict(size=16, patch=8, dim=16, depth=1, heads=2, pred_dim=16, pred_depth=1, pred_heads=2), 5,
                      6, batch=4, sigreg_proj=16, lr=1e-2)
    cfg.warmup, cfg.bn_recalibrate = 2, 0
    seen = []
    orig = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        train_ac(cfg, d["frames"], d["actions"], progress=False)
    finally:
        torch.optim.AdamW.step = orig
    assert seen == pytest.approx([1e-2 * lr_factor(s, 6, 2, "cosine") for s in range(6)])
    assert isinstance(ACTrainConfig().lr_schedule, str) and ACTrainConfig().lr_schedule == "constant"


def test_walltime_04_counts_the_planners_the_notebook_trains():
    """`wmkit walltime 04` counts LeWM's training when the profile plans with it (cpu, smoke, and now gpu), and the
    frozen-encoder predictor only where the notebook trains it; the gpu profile's planners include lewm."""
    from wmkit.profiles import profile
    from wmkit.walltime import measure, plan

    for name in ("smoke", "cpu", "gpu"):
        P = profile(name)
        phases = plan("04", P)[0]
        lewm = [p for p in phases if p.name.startswith("LeWM")]
        assert len(lewm) == 1 and lewm[0].steps == P.jepa.lewm_steps
        assert any("frozen" in p.name for p in phases) == ("frozen" in P.jepa.planners)
    assert "lewm" in profile("gpu").jepa.planners and profile("gpu").jepa.lewm_steps == 20_000
    assert "frozen" not in profile("cpu").jepa.planners and len(plan("04", profile("cpu"))[0]) == 3
    row = measure([p for p in plan("04", profile("smoke"))[0] if p.name.startswith("LeWM")], "cpu", repeat=1,
                  warmup=0)[0]
    assert row["error"] is None and row["seconds"] == pytest.approx(row["seconds_per_step"] * 3)
