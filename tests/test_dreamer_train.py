"""wmkit.dreamer replay + training loop: FIFO bound, uniform (B, T) sampling, train ratio, exact
save/load; a short real run lowers the world-model loss; same seed = same numbers; resume = no stop."""

import json

import numpy as np
import pytest
import torch

from wmkit.dreamer.cli import main as cli_main
from wmkit.dreamer.envs import make_env
from wmkit.dreamer.replay import Replay, TrainRatio

SPACE = {"image": ((4, 4, 3), np.uint8)}


def _obs(i, first=False, terminal=False):
    return {"image": np.full((4, 4, 3), i % 256, np.uint8), "reward": np.float32(i),
            "is_first": first, "is_last": terminal, "is_terminal": terminal}


def _filled(capacity=10, steps=25, seed=0):
    rep = Replay(SPACE, act_dim=3, capacity=capacity, seed=seed)
    for i in range(steps):
        rep.add(_obs(i, first=i % 7 == 0), np.eye(3, dtype=np.float32)[i % 3])
    return rep


def test_replay_is_bounded_fifo_and_samples_consecutive_steps():
    rep = _filled(capacity=10, steps=25)
    assert len(rep) == 10 and rep.total == 25
    b = rep.sample(6, 4)
    assert b["image"].shape == (6, 4, 4, 4, 3) and b["image"].dtype == torch.uint8
    assert b["action"].shape == (6, 4, 3) and b["reward"].shape == (6, 4)
    assert b["is_first"].dtype == torch.bool and b["is_terminal"].dtype == torch.bool
    r = b["reward"].numpy()
    assert r.min() >= 15 and r.max() <= 24  # only the 10 newest steps survive
    assert (np.diff(r, axis=1) == 1).all()  # consecutive steps, in order
    assert b["is_first"][:, 0].all() and (b["action"][:, 0] == 0).all()  # fresh state at a window start


def test_replay_stores_zero_action_on_first_step_and_uniform_starts():
    rep = _filled(capacity=100, steps=14)
    assert (rep.data["action"][[0, 7]] == 0).all() and rep.data["action"][1, 1] == 1.0
    starts = rep.sample(20_000, 5)["reward"][:, 0].numpy()
    counts = np.bincount(starts.astype(int), minlength=10)  # 10 valid windows over 14 steps
    assert counts[10:].sum() == 0 and np.abs(counts / 20_000 - 0.1).max() < 0.015


def test_replay_save_load_continues_identically(tmp_path):
    a = _filled(capacity=10, steps=25, seed=3)
    a.save(tmp_path / "replay")
    b = Replay(SPACE, act_dim=3, capacity=10, seed=99)
    b.load(tmp_path / "replay")
    for k in ("image", "action", "reward", "is_first"):
        assert torch.equal(a.sample(5, 4)[k], b.sample(5, 4)[k])
    for r in (a, b):
        r.add(_obs(25), np.eye(3, dtype=np.float32)[0])
    assert torch.equal(a.sample(8, 3)["reward"], b.sample(8, 3)["reward"])
    small = Replay(SPACE, 3, capacity=4)  # a smaller buffer keeps the newest steps
    small.load(tmp_path / "replay")
    assert sorted(small.data["reward"].tolist()) == [21.0, 22.0, 23.0, 24.0] and small.total == 25
    with pytest.raises(ValueError, match="does not match"):
        Replay({"image": ((8, 8, 3), np.uint8)}, 3, capacity=10).load(tmp_path / "replay")


def test_replay_episode_tail_and_bad_inputs():
    rep = _filled(capacity=50, steps=25)  # last is_first at step 21
    tail = rep.episode_tail()
    assert tail.shape == (3, 3) and (tail.argmax(1) == np.array([22, 23, 24]) % 3).all()
    with pytest.raises(ValueError, match=r"'image' must be \(4, 4, 3\) uint8, got \(4, 4, 3\) float32"):
        rep.add({**_obs(0), "image": np.zeros((4, 4, 3), np.float32)}, None)
    with pytest.raises(ValueError, match="missing 'image'"):
        rep.add({"reward": 0.0, "is_first": True, "is_terminal": False}, None)
    with pytest.raises(ValueError, match="action must have shape"):
        rep.add(_obs(1), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="fewer than batch_length"):
        Replay(SPACE, 3, 10).sample(1, 4)


def test_train_ratio_means_replayed_steps_per_env_step():
    # official meaning: train_ratio 512 with B*T = 16*64 -> 0.5 updates per env step
    ratio = TrainRatio(512 / (16 * 64))
    assert sum(ratio(s) for s in range(1, 1001)) == 1 + 499
    quarter = TrainRatio(0.25)
    assert sum(quarter(s) for s in range(1, 101)) == 1 + 24  # first call trains once, then 1 per 4
    three = TrainRatio(3.0)
    assert [three(s) for s in range(1, 5)] == [1, 3, 3, 3]


# -- the loop with the real agent ------------------------------------------------------------------
SMALL = dict(env="reach", steps=300, prefill=100, batch_size=4, batch_length=16, train_ratio=64,
             eval_every=150, eval_episodes=1, log_every=50, save_every=150, progress=False)


def _rows(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "train/fps"} for r in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from wmkit.dreamer.train import TrainConfig, train

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("full")
    trainer = train(TrainConfig(run_dir=str(run_dir), **SMALL))
    return trainer, run_dir


@pytest.mark.slow
def test_short_run_lowers_world_model_loss(full_run):
    trainer, run_dir = full_run
    assert trainer.summary["updates"] == 201  # 200 steps after prefill at 64/(4*16) = 1 per step, +1
    rows = [r for r in _rows(run_dir) if any("loss" in k for k in r)]
    key = next(k for k in rows[0] if "loss" in k and ("model" in k or "wm" in k))
    first, last = rows[0][key], rows[-1][key]
    assert last < 0.8 * first, (key, first, last)
    videos = sorted((run_dir / "videos").glob("*.gif"))
    assert len(videos) == 2 and (run_dir / "ckpt" / "latest.safetensors").exists()
    rep = np.load(run_dir / "videos" / "latest.npz")
    assert rep["real"].shape == rep["imagined"].shape == (1, 16, 64, 64, 3)


@pytest.mark.slow
def test_resume_gives_identical_numbers_and_same_seed_is_deterministic(full_run, tmp_path):
    from wmkit.dreamer.train import TrainConfig, Trainer

    _, full_dir = full_run
    cfg = TrainConfig(run_dir=str(tmp_path), **SMALL)
    first = Trainer(cfg)
    first.run(until=225)  # "killed" at 225: the last checkpoint is at 150
    first.close()
    resumed = Trainer(TrainConfig(run_dir=str(tmp_path), resume=True, **SMALL))
    assert resumed.step == 150
    # the in-memory history is the run's up to the checkpoint (plots of a resumed run are whole)
    assert resumed.logger.history and [r["step"] for r in resumed.logger.history] == \
        [r["step"] for r in _rows(full_dir) if r["step"] <= 150]
    resumed.run()
    resumed.close()
    assert _rows(tmp_path) == _rows(full_dir)  # every loss, return and eval identical to the end
    assert [{k: v for k, v in r.items() if k != "train/fps"} for r in resumed.logger.history] == _rows(full_dir)
    other = TrainConfig(run_dir=str(tmp_path / "seed1"), **{**SMALL, "steps": 120, "seed": 1})
    t = Trainer(other)
    t.run()
    t.close()
    assert _rows(tmp_path / "seed1")[0] != _rows(full_dir)[0]  # a different seed differs


@pytest.mark.slow
def test_evaluate_policy_overrides_the_configs_protocol_for_one_call(full_run, monkeypatch):
    trainer, _ = full_run
    modes, real = [], trainer.agent.policy

    def spy(obs, state, mode="train"):
        modes.append(mode)
        return real(obs, state, mode=mode)

    monkeypatch.setattr(trainer.agent, "policy", spy)
    n_evals = len(trainer.evals)
    out = trainer.evaluate(episodes=1, video=False, log=False, policy="greedy")
    assert set(modes) == {"greedy"} and len(out["returns"]) == 1
    modes.clear()
    trainer.evaluate(episodes=1, video=False, log=False)          # the config's protocol: sampled
    assert set(modes) == {"eval"} and trainer.cfg.eval_policy == "sample" and len(trainer.evals) == n_evals
    with pytest.raises(ValueError, match="policy must be 'sample' or 'greedy'"):
        trainer.evaluate(episodes=1, video=False, log=False, policy="argmax")


@pytest.mark.slow
def test_cli_train_and_evaluate(tmp_path, capsys):
    run = str(tmp_path / "cli")
    cli_main(["train", "--env", "reach", "--steps", "40", "--prefill", "30", "--batch-size", "2",
              "--batch-length", "8", "--train-ratio", "16", "--eval-episodes", "1", "--run-dir", run,
              "--progress", "false", "--save-every", "20"])
    out = cli_main(["evaluate", "--run-dir", run, "--episodes", "1"])
    assert out["step"] == 40 and np.isfinite(out["return_mean"]) and out["random_return_mean"] > 0
    with pytest.raises(SystemExit):
        cli_main(["train", "--no-such-flag", "1"])


def test_trainer_rejects_bad_config(tmp_path):
    from wmkit.dreamer.train import TrainConfig, resolve

    with pytest.raises(ValueError, match="--batch-length must be >= 1"):
        resolve(TrainConfig(batch_length=0))
    with pytest.raises(ValueError, match="unknown environment"):
        make_env("reach-v9")


def test_ablations_swap_the_heads_and_the_normaliser():
    from wmkit.dreamer import Agent, DreamerConfig
    from wmkit.dreamer.ablations import MSEHead, apply

    env = make_env("reach-vector")
    rep = Replay(env.obs_space, 5, 200, seed=0)
    obs = env.reset()
    rep.add(obs, None)
    for i in range(60):
        a = np.eye(5, dtype=np.float32)[i % 5]
        if obs["is_last"]:
            obs = env.reset()
            rep.add(obs, None)
        obs = env.step(a)
        obs["reward"] = np.float32(obs["reward"] * 1000)  # rewards of ~1000 per step
        rep.add(obs, a)
    batch = rep.sample(4, 16)
    losses = {}
    for name in ("", "no_symlog_twohot", "no_retnorm"):
        agent = apply(Agent(env.obs_space, env.act_space, DreamerConfig(size="tiny"), seed=0), name)
        losses[name] = agent.update(batch)
    assert not isinstance(agent.wm.reward, MSEHead)  # the last one built is no_retnorm
    ablated = apply(Agent(env.obs_space, env.act_space, DreamerConfig(size="tiny")), "no_symlog_twohot")
    assert isinstance(ablated.critic, MSEHead)
    # no symlog anywhere: raw vector inputs and a raw-space vector decoder loss
    assert not ablated.wm.encoder.mlp.symlog_inputs and not ablated.wm.decoder.symlog_vector
    pred = {"vector": torch.full((1, 4), 2.0)}
    target = {"vector": torch.full((1, 4), 5.0)}
    assert ablated.wm.decoder.loss(pred, target).item() == pytest.approx(4 * 3.0 ** 2)
    assert ablated.wm.decoder.vector_mean(pred)[0, 0].item() == 2.0
    # raw squared error on rewards of ~1000 vs two-hot cross-entropy (~ln 255 at init)
    assert losses["no_symlog_twohot"]["reward_loss"] > 1e4 > 100 > losses[""]["reward_loss"]
    assert losses["no_retnorm"]["return_scale"] == 1.0
    with pytest.raises(ValueError, match="unknown ablation"):
        apply(agent, "no_kl")


def test_nan_loss_stops_training_naming_the_loss(tmp_path, monkeypatch):
    from wmkit.dreamer.train import TrainConfig, Trainer
    from wmkit.training import NonFiniteLossError

    t = Trainer(TrainConfig(run_dir=str(tmp_path), **{**SMALL, "steps": 40, "prefill": 20}))
    monkeypatch.setattr(t.agent, "update", lambda batch: {"wm_loss": 1.0, "reward_loss": float("nan")})
    with pytest.raises(NonFiniteLossError, match="'reward_loss' at step 20"):
        t.run()
    t.close()


def test_bench_loop_reports_env_steps_per_second():
    """The whole-loop figure of `wmkit bench dreamer`: timed steps include the replayed updates."""
    import types

    from wmkit.dreamer.train import bench_loop

    rows = []
    args = types.SimpleNamespace(device="cpu", sizes=["tiny"], recipe="2023", batch=4, length=8, loop_steps=4)
    bench_loop(args, lambda *a, **kw: rows.append((a, kw)))
    assert [kw["env"] for _, kw in rows] == ["reach-vector", "reach"]
    for (bench, metric, value, unit), kw in rows:
        assert (bench, metric, unit) == ("dreamer", "loop_env_steps_per_s", "env steps/s") and value > 0
        # train ratio 512 with B*T = 32 replayed steps per update: 16 updates per env step
        assert kw["updates"] == 4 * 512 // 32 and kw["steps"] == 4


def test_online_replay_trains_fresh_windows_first_then_uniform(tmp_path):
    rep = Replay(SPACE, act_dim=3, capacity=100, seed=0, online=True, online_length=4)
    for i in range(10):
        rep.add(_obs(i, first=i == 0), np.eye(3, dtype=np.float32)[i % 3])
    assert list(rep.queue) == [0, 4]                      # two complete fresh windows of 4 steps
    b = rep.sample(3, 4)["reward"].numpy()
    assert b[0].tolist() == [0, 1, 2, 3] and b[1].tolist() == [4, 5, 6, 7]   # queued first, each once
    assert not rep.queue
    uniform = Replay(SPACE, act_dim=3, capacity=100, seed=0)
    for i in range(10):
        uniform.add(_obs(i, first=i == 0), np.eye(3, dtype=np.float32)[i % 3])
    assert b[2].tolist() == uniform.sample(3, 4)["reward"].numpy()[2].tolist()  # the rest: same RNG stream
    for i in range(10, 12):
        rep.add(_obs(i), np.eye(3, dtype=np.float32)[0])
    assert list(rep.queue) == [8]
    assert rep.sample(2, 4, train=False)["reward"].numpy().shape == (2, 4) and list(rep.queue) == [8]
    rep.save(tmp_path / "r")                               # the queue survives a checkpoint
    back = Replay(SPACE, act_dim=3, capacity=100, seed=5, online=True, online_length=4)
    back.load(tmp_path / "r")
    assert list(back.queue) == [8] and back.sample(1, 4)["reward"].numpy()[0].tolist() == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="online_length"):
        Replay(SPACE, act_dim=3, capacity=10, online=True)


def test_replay_context_stores_latents_and_starts_chunks_from_them():
    rep = Replay(SPACE, act_dim=3, capacity=100, seed=0, latents={"deter": 2, "stoch": 3})
    for i in range(12):
        rep.add(_obs(i, first=i == 0), np.eye(3, dtype=np.float32)[i % 3])
        rep.set_latent(rep.total - 1, deter=np.full(2, i), stoch=np.full(3, -i))
    b = rep.sample(5, 4, context=1)
    r = b["reward"].numpy()
    assert (b["context_deter"].numpy()[:, 0] == r[:, 0] - 1).all()      # the latent of the step before
    assert (b["context_stoch"].numpy()[:, 0] == 1 - r[:, 0]).all()
    assert not b["is_first"][:, 0].any() and (b["action"][:, 0].sum(-1) == 1).all()   # nothing forced
    rep.write_latents(b["index"].numpy(), deter=np.zeros((5, 4, 2)), stoch=np.zeros((5, 4, 3)))
    assert rep.data["latent_deter"][b["index"].numpy()].sum() == 0
    rep.add(_obs(12), np.eye(3, dtype=np.float32)[0])                    # a new step has no latent yet
    assert rep.data["latent_deter"][12].sum() == 0
    with pytest.raises(ValueError, match="latents"):
        _filled().sample(2, 3, context=1)


def test_agent_starts_from_the_replay_context(one_thread):
    from wmkit.dreamer import Agent, DreamerConfig
    agent = Agent({"vector": ((4,), np.float32)}, {"n": 3, "discrete": True},
                  DreamerConfig(recipe="2025", size="tiny"), seed=0)
    g = torch.Generator().manual_seed(0)
    B, T, D, SK = 2, 5, agent.cfg.deter, agent.cfg.stoch * agent.cfg.classes
    batch = {"vector": torch.randn(B, T, 4, generator=g), "reward": torch.zeros(B, T),
             "action": torch.eye(3)[torch.randint(0, 3, (B, T), generator=g)],
             "is_first": torch.zeros(B, T, dtype=torch.bool), "is_terminal": torch.zeros(B, T, dtype=torch.bool)}
    firsts = []
    for scale in (0.0, 1.0):
        a = Agent({"vector": ((4,), np.float32)}, {"n": 3, "discrete": True},
                  DreamerConfig(recipe="2025", size="tiny"), seed=0)
        a.update({**batch, "context_deter": torch.full((B, D), scale), "context_stoch": torch.zeros(B, SK)})
        firsts.append(a.last_latents["deter"])                             # (B, T, D) recomputed latents
    assert firsts[0].shape == (B, T, D) and not np.allclose(firsts[0][:, 0], firsts[1][:, 0])
    agent.update(batch)
    assert agent.last_latents is None                                      # no context, nothing to store
    with pytest.raises(ValueError, match="context_deter"):
        agent.update({**batch, "context_deter": torch.zeros(B, 3), "context_stoch": torch.zeros(B, SK)})


@pytest.mark.slow
def test_trainer_2025_uses_replay_context_and_online_queue(tmp_path, one_thread):
    from wmkit.dreamer.train import TrainConfig, Trainer
    t = Trainer(TrainConfig(env="reach-vector", recipe="2025", size="tiny", steps=40, prefill=20, batch_size=2,
                            batch_length=8, train_ratio=16, eval_every=0, eval_episodes=1, video=False,
                            progress=False, run_dir=str(tmp_path / "r"), seed=0))
    assert t.context == 1 and t.replay.online
    t.run()
    lat = t.replay.data["latent_deter"][:len(t.replay)]
    assert t.updates > 0 and np.abs(lat[25:-1]).sum(-1).min() > 0     # stored latents (the newest: none yet)
