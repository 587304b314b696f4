"""wmkit.diffusion.agent / rl: DIAMOND's reward/end model and actor-critic in imagination.

Known answers: LSTM initialisation, two-hot reward targets, causality of the reward/end LSTM, the uniform untrained
policy, lambda-returns of an imagined rollout computed by hand with a reward/end model forced to one class, gradient
routing (only the actor-critic learns in imagination), the real-game random baseline of reach, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_tool

from wmkit.diffusion import EDM, Denoiser
from wmkit.diffusion.agent import ActorCritic, ImaginedEnv, RewEndModel, imagination_loss, init_lstm
from wmkit.diffusion.rl import REACH_BINS, AgentConfig, evaluate, load_agent, record_episodes, run

pytestmark = pytest.mark.usefixtures("one_thread")
S, K, A = 16, 2, 5


def tiny_world(seed=0):
    torch.manual_seed(seed)
    model = EDM(Denoiser(A, K, 3, (8, 8), (1, 1), None, 16)).eval()
    rew_end = RewEndModel(A, S, REACH_BINS, (8, 8), (1, 1), 16, 16).eval()
    return model, rew_end


def force_classes(rew_end: RewEndModel, reward_class: int, end_class: int) -> None:
    """Make the head output constant logits: a huge logit for one reward class and one end class."""
    with torch.no_grad():
        first, _, last = rew_end.head
        first.weight.zero_()
        first.bias.fill_(1.0)  # silu(1) > 0 for every unit, whatever the input
        last.weight.zero_()
        last.weight[reward_class] = 100.0
        last.weight[len(rew_end.bins) + end_class] = 100.0


def test_init_lstm_forget_gate():
    lstm = torch.nn.LSTMCell(6, 4)
    init_lstm(lstm)
    assert torch.equal(lstm.bias_ih[4:8], torch.ones(4))  # forget gate
    assert lstm.bias_ih[:4].abs().sum() == 0 and lstm.bias_ih[8:].abs().sum() == 0 and lstm.bias_hh.abs().sum() == 0
    w = lstm.weight_hh.reshape(-1, 4)  # orthogonal rows of a (16, 4) matrix: W^T W = I
    assert torch.allclose(lstm.weight_hh.T @ lstm.weight_hh, torch.eye(4), atol=1e-5)
    assert w.shape == (16, 4)


def test_reward_targets_sign_and_grid():
    m = RewEndModel(A, S, (-1.0, 0.0, 1.0), (8, 8), (1, 1), 16, 16)
    t = m.reward_target(torch.tensor([-3.0, 0.0, 0.5]), clip_sign=True)
    assert torch.equal(t, torch.eye(3))  # DIAMOND: sign(r) + 1 is the class
    g = RewEndModel(A, S, REACH_BINS, (8, 8), (1, 1), 16, 16)
    t = g.reward_target(torch.tensor([3 / 14, 0.5 / 14]), clip_sign=False)
    assert float(t[0, 3]) == pytest.approx(1.0) and float(t[0].sum()) == pytest.approx(1.0)
    assert float(t[1, 0]) == pytest.approx(0.5) and float(t[1, 1]) == pytest.approx(0.5)  # two-hot between bins
    with pytest.raises(ValueError, match="outside the reward bins"):
        g.reward_target(torch.tensor([2.0]), clip_sign=False)
    with pytest.raises(ValueError, match="increasing"):
        RewEndModel(A, S, (1.0, 0.0))
    with pytest.raises(ValueError, match="divisible"):
        RewEndModel(A, 15, REACH_BINS, (8, 8), (1, 1), 16, 16)


def test_rew_end_is_causal_in_time():
    _, m = tiny_world()
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(2, 5, 3, S, S, generator=g) * 2 - 1
    act = torch.randint(0, A, (2, 5), generator=g)
    nxt = torch.rand(2, 5, 3, S, S, generator=g) * 2 - 1
    r1, e1, _ = m(obs, act, nxt)
    obs2, nxt2, act2 = obs.clone(), nxt.clone(), act.clone()
    obs2[:, 3:] += 0.5
    nxt2[:, 3:] -= 0.5
    act2[:, 3:] = (act2[:, 3:] + 1) % A
    r2, e2, _ = m(obs2, act2, nxt2)
    assert torch.allclose(r1[:, :3], r2[:, :3]) and torch.allclose(e1[:, :3], e2[:, :3])  # the past is untouched
    assert not torch.allclose(r1[:, 3:], r2[:, 3:])  # the perturbed steps do change
    # step by step with the carried LSTM state == the whole sequence at once (what ImaginedEnv relies on)
    _, _, hc = m(obs[:, :3], act[:, :3], nxt[:, :3])
    r_step, _, _ = m(obs[:, 3:4], act[:, 3:4], nxt[:, 3:4], hc)
    assert torch.allclose(r_step[:, 0], r1[:, 3], atol=1e-5)


def test_untrained_actor_critic_is_uniform_and_checks_size():
    ac = ActorCritic(A, S, (8, 8, 8, 8), 32)
    logits, v, (h, c) = ac(torch.rand(3, 3, S, S), ac.initial_state(3))
    assert torch.equal(logits, torch.zeros(3, A)) and torch.equal(v, torch.zeros(3))  # zero-init heads (DIAMOND)
    assert h.shape == c.shape == (3, 32)
    with pytest.raises(ValueError, match="divisible"):
        ActorCritic(A, 20, (8, 8, 8, 8), 32)


def test_actor_critic_down_keeps_a_4x4_map():
    # DIAMOND's `down` flags: 64x64 pooled 4 times -> 4x4; 16x16 pooled twice -> the same 4x4 map (8 ch * 16 cells)
    assert ActorCritic(A, S, (8, 8, 8, 8), 32, down=(1, 1, 0, 0)).lstm.input_size == 8 * 4 * 4
    assert ActorCritic(A, S, (8, 8, 8, 8), 32).lstm.input_size == 8 * 1 * 1  # default: pool at every level
    assert ActorCritic(A, 20, (8, 8), 32, down=(0, 0)).lstm.input_size == 8 * 20 * 20  # no pooling: any size
    with pytest.raises(ValueError, match="one per level"):
        ActorCritic(A, S, (8, 8, 8, 8), 32, down=(1, 1))
    with pytest.raises(ValueError, match="0/1"):
        ActorCritic(A, S, (8, 8), 32, down=(2, 0))


@pytest.mark.parametrize("end_class", [0, 1])
def test_imagined_lambda_returns_by_hand(end_class):
    model, rew_end = tiny_world()
    force_classes(rew_end, reward_class=7, end_class=end_class)  # reward 7/14 = 0.5 at every step
    ac = ActorCritic(A, S, (8, 8, 8, 8), 32)  # value head zero: V = 0 everywhere
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(4, K, 3, S, S, generator=g) * 2 - 1
    act = torch.randint(0, A, (4, K), generator=g)
    H, gamma, lam = 5, 0.9, 0.8
    loss, mets, traj = imagination_loss(ac, ImaginedEnv(model, rew_end, 1, g), obs, act, H, gamma, lam, 0.0, 1.0, g)
    c = 0.5
    if end_class == 0:  # R_t = c + gamma lam R_{t+1}, R_H = V = 0  ->  R_0 = c sum_i (gamma lam)^i
        R = [0.0]
        for _ in range(H):
            R.insert(0, c + gamma * lam * R[0])
        R = R[:-1]
        w = [1.0] * H
    else:  # the episode ends after the first step: R_0 = c, later steps masked out
        R, w = [c] * H, [1.0] + [0.0] * (H - 1)
    assert mets["imag_return"] == pytest.approx(R[0], rel=1e-5)
    assert mets["imag_reward"] == pytest.approx(c)
    assert mets["loss_value"] == pytest.approx(sum(wi * r * r for wi, r in zip(w, R)) / H, rel=1e-5)
    assert traj["frames"].shape == (4, H + 1, 3, S, S) and traj["actions"].shape == (4, H)
    assert bool(traj["ends"].all()) == bool(end_class)
    # gradient routing: only the actor-critic learns in imagination
    loss.backward()
    assert all(p.grad is None for p in list(model.parameters()) + list(rew_end.parameters()))
    assert ac.critic.weight.grad is not None and ac.critic.weight.grad.abs().sum() > 0
    assert ac.encoder[0].weight.grad is not None


def test_advantage_normalisation_switch_by_hand():
    model, rew_end = tiny_world()
    force_classes(rew_end, reward_class=7, end_class=0)
    ac = ActorCritic(A, S, (8, 8, 8, 8), 32)  # uniform policy: log pi(a) = -ln 5 for every sampled action
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(4, K, 3, S, S, generator=g) * 2 - 1
    act = torch.randint(0, A, (4, K), generator=g)
    H, gamma, lam = 4, 0.9, 0.8
    R0 = [0.0]
    for _ in range(H):
        R0.insert(0, 0.5 + gamma * lam * R0[0])
    env = ImaginedEnv(model, rew_end, 1, g)
    _, none, _ = imagination_loss(ac, env, obs, act, H, gamma, lam, 0.0, 1.0, g, adv_norm="none")
    assert none["loss_actor"] == pytest.approx(np.log(A) * np.mean(R0[:-1]), rel=1e-5)  # DIAMOND: -logp (R - 0)
    _, batch, _ = imagination_loss(ac, env, obs, act, H, gamma, lam, 0.0, 1.0, g, adv_norm="batch")
    assert abs(batch["loss_actor"]) < 1e-5  # standardised advantages average to zero under a uniform policy
    with pytest.raises(ValueError, match="adv_norm"):
        imagination_loss(ac, env, obs, act, H, gamma, lam, 0.0, 1.0, g, adv_norm="ppo")


def test_return_normaliser_switch_by_hand():
    # DreamerV3's scale: max(1, P95 - P5) of the returns, tracked by an EMA (rate 1 here: this batch's percentiles)
    from wmkit.dreamer import ReturnNormalizer

    model, rew_end = tiny_world()
    force_classes(rew_end, reward_class=14, end_class=0)  # reward 1 at every step
    ac = ActorCritic(A, S, (8, 8, 8, 8), 32)  # uniform policy, V = 0
    g = torch.Generator().manual_seed(0)
    N, H, gamma, lam = 4, 4, 0.9, 0.8
    obs, act = torch.rand(N, K, 3, S, S, generator=g) * 2 - 1, torch.randint(0, A, (N, K), generator=g)
    R = [0.0]
    for _ in range(H):
        R.insert(0, 1.0 + gamma * lam * R[0])
    R = R[:-1]  # 2.6116, 2.2384, 1.72, 1.0: the same at every start
    env = ImaginedEnv(model, rew_end, 1, g)
    scale = np.percentile(np.repeat(R, N), 95) - np.percentile(np.repeat(R, N), 5)  # 1.6116 * 0.9 + ... > 1
    assert scale > 1
    _, m, _ = imagination_loss(ac, env, obs, act, H, gamma, lam, 0.0, 1.0, g, "return", ReturnNormalizer(rate=1.0))
    assert m["adv_scale"] == pytest.approx(scale, rel=1e-5)
    assert m["loss_actor"] == pytest.approx(np.log(A) * np.mean(R) / scale, rel=1e-5)  # -logp (R - 0) / scale
    rn = ReturnNormalizer(rate=0.5)  # EMA from zero: half of this batch's range, below the limit 1 -> scale 1
    _, m, _ = imagination_loss(ac, env, obs, act, H, gamma, lam, 0.0, 1.0, g, "return", rn)
    assert m["adv_scale"] == 1.0 and float(rn.hi - rn.lo) == pytest.approx(scale / 2, rel=1e-5)
    _, m, _ = imagination_loss(ac, env, obs, act, H, gamma, lam, 0.0, 1.0, g, "return", rn)  # (1 - 0.25) * scale
    assert m["adv_scale"] == pytest.approx(max(1.0, 0.75 * scale), rel=1e-5)
    with pytest.raises(ValueError, match="retnorm"):
        imagination_loss(ac, env, obs, act, H, gamma, lam, 0.0, 1.0, g, adv_norm="return")


def test_window_weights_by_hand():
    from wmkit.data import ActionSpace, Clip, ClipDataset
    from wmkit.diffusion.rl import window_weights

    r = np.array([0, 0, 0, 1, 0], np.float32)  # 4 transitions (+ the dummy last step)
    clip = Clip(np.zeros((5, 8, 8, 3), np.uint8), np.zeros(5, np.int64), ActionSpace("discrete", n=A), r,
                np.zeros(5, bool), dict(source="hand", episode="e0"))
    ds = ClipDataset([clip], context=3, future=0, size=8, split="all")  # windows of 2 transitions, starts 0, 1, 2
    bins = torch.tensor([0.0, 0.5, 1.0])
    # classes per window [0, 0], [0, 0], [0, 2]: freq(0) = 5/6, freq(2) = 1/6 -> weights 6/5, 6/5, 6
    assert torch.allclose(window_weights(ds, bins, False, 1.0), torch.tensor([1.2, 1.2, 6.0]) / 8.4)
    assert torch.allclose(window_weights(ds, bins, False, 0.0), torch.full((3,), 1 / 3))
    clip.done[1] = True  # an end at transition 1: freq(end) = 2/6 (windows 0 and 1 both hold it) -> weight 3
    assert torch.allclose(window_weights(ds, bins, False, 1.0), torch.tensor([3.0, 3.0, 6.0]) / 12)
    with pytest.raises(ValueError, match="rew_end_balance"):
        window_weights(ds, bins, False, -1.0)


def test_lr_factor_warmup_then_constant_or_linear():
    from wmkit.diffusion.rl import lr_factor, train_rew_end

    assert [lr_factor(s, 10) for s in (0, 4, 9, 500)] == pytest.approx([0.1, 0.5, 1.0, 1.0])  # DIAMOND
    assert [lr_factor(s, 10, 100) for s in (0, 9, 54, 99)] == pytest.approx([0.1, 1.0, 0.5, 0.0])  # linear to 0
    cfg = AgentConfig(context=K, size=S, rew_end_schedule="cosine", horizon=2)
    with pytest.raises(ValueError, match="rew_end_schedule"):
        train_rew_end(cfg, record_episodes("reach", 5, seed=0, max_steps=12), A, progress=False)


def test_on_update_and_ac_seed():
    from wmkit.diffusion.rl import train_actor_critic

    model, rew_end = tiny_world()
    clips = record_episodes("reach", 3, seed=0, max_steps=12)
    cfg = AgentConfig(context=K, size=S, ac_channels=(8, 8, 8, 8), ac_down=(1, 1, 0, 0), ac_lstm=16, ac_steps=2,
                      imagined=2, horizon=2, adv_norm="return")
    calls = []
    _, rows, _ = train_actor_critic(cfg, model, rew_end, clips, A, progress=False,
                                    on_update=lambda step, ac: calls.append((step, ac.training)) or {"probe": step})
    assert calls == [(1, False), (2, False)] and [r["probe"] for r in rows] == [1, 2]
    assert all(r["adv_scale"] == 1.0 for r in rows)  # the EMA range starts at zero: below DreamerV3's limit
    same = train_actor_critic(cfg, model, rew_end, clips, A, progress=False)[1]
    cfg.ac_seed = 7
    other = train_actor_critic(cfg, model, rew_end, clips, A, progress=False)[1]
    assert [r["loss_value"] for r in same] == [r["loss_value"] for r in rows]
    assert [r["loss_value"] for r in other] != [r["loss_value"] for r in rows]


def test_imagined_env_checks_shapes():
    model, rew_end = tiny_world()
    env = ImaginedEnv(model, rew_end)
    with pytest.raises(ValueError, match="reset"):
        env.reset(torch.zeros(2, K + 1, 3, S, S), torch.zeros(2, K + 1, dtype=torch.long))


def test_record_and_random_baseline_of_reach():
    clips = record_episodes("reach", 3, seed=0)
    assert [len(c) for c in clips] == [51, 51, 51]  # 50 steps + the first frame
    r = np.concatenate([c.reward[:-1] for c in clips])
    assert np.allclose(r * 14, np.round(r * 14)) and r.min() >= 0 and r.max() <= 1  # 1 - d/14 on the grid
    with pytest.raises(ValueError, match="discrete"):
        record_episodes("reach-continuous", 1)
    rand = evaluate("reach", S, 20, None, seed=0)
    assert 25 < rand["mean"] < 36  # the env's documented random score (~30)
    assert rand == evaluate("reach", S, 20, None, seed=0)  # deterministic
    # an untrained actor-critic is a uniform policy too: its score is a random policy's, within noise
    ac = evaluate("reach", S, 20, ActorCritic(A, S, (8, 8, 8, 8), 32), seed=0)
    assert abs(ac["mean"] - rand["mean"]) < 4 * max(ac["sem"], rand["sem"])


@pytest.mark.slow
def test_run_end_to_end_and_reload(tmp_path):
    cfg = AgentConfig(episodes=5, wm_channels=(8, 8), wm_depths=(1, 1), wm_cond_channels=16, wm_steps=3,
                      rew_end_channels=(8, 8), rew_end_depths=(1, 1), rew_end_cond=16, rew_end_lstm=16,
                      rew_end_steps=3, ac_channels=(8, 8), ac_lstm=16, ac_steps=2, imagined=4, horizon=3,
                      batch_size=4, eval_episodes=3, run_dir=str(tmp_path))
    r = run(cfg, progress=False)
    assert set(r["seconds"]) == {"record", "denoiser", "rew_end", "actor_critic", "evaluate"}
    assert len(r["ac_history"]) == 2 and len(r["agent"]["returns"]) == 3
    model, rew_end, ac, cfg2 = load_agent(tmp_path)
    assert cfg2 == cfg
    for a, b in zip(ac.state_dict().values(), r["actor_critic"].state_dict().values()):
        assert torch.equal(a, b)
    # tools/diffusion_seeds.py on this folder: actor-critic seed cfg.seed retrains run()'s own agent exactly
    out = seeds_tool().main(["--run-dir", str(tmp_path), "--seeds", str(cfg.seed), "7"])
    assert [row["ac_seed"] for row in out["seeds"]] == [cfg.seed, 7]
    assert out["seeds"][0]["mean"] == pytest.approx(r["agent"]["mean"], abs=1e-9)
    assert out["random"]["mean"] == pytest.approx(r["random"]["mean"], abs=1e-9)


def seeds_tool():
    return load_tool("diffusion_seeds")


def test_seeds_tool_gap_by_hand_and_bad_seeds():
    tool = seeds_tool()
    gap, z = tool.paired_gap({"mean": 38.0, "sem": 0.3}, {"mean": 31.0, "sem": 0.4})
    assert gap == pytest.approx(7.0) and z == pytest.approx(7.0 / 0.5)  # sqrt(0.09 + 0.16) = 0.5
    with pytest.raises(SystemExit, match="seeds"):
        tool.main(["--run-dir", "unused", "--seeds", "-1"])


@pytest.mark.slow
def test_cli_agent(tmp_path, monkeypatch, capsys):
    import json

    from wmkit.diffusion.cli import main

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    main(["agent", "--episodes", "5", "--wm-steps", "2", "--rew-end-steps", "2", "--ac-steps", "2", "--imagined", "2",
          "--horizon", "2", "--eval-episodes", "2", "--run-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["agent"]["episodes"] == 2 and out["random"]["episodes"] == 2
    assert out["run_dir"] == str(tmp_path) and (tmp_path / "agent.safetensors").exists()


def test_critic_init_data_starts_at_the_recorded_discounted_value():
    # critic_init="data": untrained V(s) = mean recorded reward / (1 - gamma) for every frame (zero weights, set bias)
    from wmkit.diffusion.rl import train_actor_critic

    model, rew_end = tiny_world()
    clips = record_episodes("reach", 3, seed=0, max_steps=12)
    mean_r = np.mean(np.concatenate([c.reward[:-1] for c in clips]))
    cfg = AgentConfig(context=K, size=S, ac_channels=(8, 8, 8, 8), ac_down=(1, 1, 0, 0), ac_lstm=32, ac_steps=0,
                      imagined=2, critic_init="data", gamma=0.9)
    ac, rows, _ = train_actor_critic(cfg, model, rew_end, clips, A, progress=False)
    _, v, _ = ac(torch.rand(4, 3, S, S) * 2 - 1, ac.initial_state(4))
    assert rows == [] and torch.allclose(v, torch.full((4,), float(mean_r) / 0.1), atol=1e-4)
    cfg.critic_init = "mean"
    with pytest.raises(ValueError, match="critic_init"):
        train_actor_critic(cfg, model, rew_end, clips, A, progress=False)


def test_reach_toward_target_reads_the_pixels():
    from wmkit.diffusion.rl import reach_toward_target

    def frame(agent, target):  # cells of reach's 8x8 grid drawn at 16x16 (2x2 pixels a cell), as the env draws it
        x = -torch.ones(3, S, S)
        x[1, 2 * target[0]:2 * target[0] + 2, 2 * target[1]:2 * target[1] + 2] = 1
        x[0, 2 * agent[0]:2 * agent[0] + 2, 2 * agent[1]:2 * agent[1] + 2] = 1
        return x

    frames = torch.stack([frame((2, 2), (2, 5)), frame((2, 2), (0, 3)), frame((6, 2), (7, 0)), frame((4, 4), (4, 4)),
                          frame((3, 6), (5, 6))])
    assert reach_toward_target(frames).tolist() == [4, 1, 3, 0, 2]  # right, up, left (larger gap), stay, down
    with pytest.raises(ValueError, match="frames"):
        reach_toward_target(frames[:, :2])


def test_imagined_returns_with_a_forced_reward():
    from wmkit.diffusion.rl import imagined_returns

    model, rew_end = tiny_world()
    force_classes(rew_end, reward_class=7, end_class=0)  # reward 0.5 at every imagined step
    g = torch.Generator().manual_seed(0)
    obs, act = torch.rand(3, K, 3, S, S, generator=g) * 2 - 1, torch.zeros(3, K, dtype=torch.long)
    env = ImaginedEnv(model, rew_end, 1, generator=g)
    assert torch.allclose(imagined_returns(env, obs, act, 4, None, g), torch.full((3,), 2.0))
    assert torch.allclose(imagined_returns(env, obs, act, 3, lambda x: torch.zeros(len(x), dtype=torch.long)),
                          torch.full((3,), 1.5))
