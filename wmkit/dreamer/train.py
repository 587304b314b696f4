"""The DreamerV3 training loop (Hafner et al. 2023, Algorithm 1 / Appendix "Training"; official
``embodied/run/train.py``), with exact resume.

Pseudocode (one environment, as the Atari 100k and Crafter runs of the paper)::

    prefill replay with a random policy
    while env_steps < steps:
        a ~ pi(a | s)               # actor on the posterior state of the real observation stream
        o, r, first, term = env(a)  # one agent step (action repeat inside the env)
        replay.add(o, a, r, first, term)
        repeat train_ratio / (B*T) times (fractional, carried over):
            batch ~ replay          # B sequences of T steps, uniform
            agent.update(batch)     # world model on the batch; actor and critic on imagined rollouts
        every eval_every: eval episodes + decoded imagination video; every save_every: checkpoint

Exact resume: a checkpoint holds the model and optimisers (``agent.state_dict()``), the replay, every
RNG (Python, NumPy, torch, replay, action sampler), the policy's recurrent state and the loop counters.
The environment itself is not serialised: every episode is seeded by its index (``Env.reset``), so the
current episode is rebuilt by replaying its stored actions, then checked against the stored frame. On
CPU a run resumed from step k produces the same numbers as one that never stopped (``tests``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmkit.checkpoint import checkpoint_exists, load_state, save_state
from wmkit.config import from_dict, to_dict
from wmkit.dreamer import ablations
from wmkit.dreamer.envs import CRAFTER_ACHIEVEMENTS, crafter_score, crafter_success_rates, make_env
from wmkit.dreamer.replay import Replay, TrainRatio
from wmkit.profiles import profile
from wmkit.training import Logger, check_finite, read_metrics
from wmkit.utils import pick_device, rng_state, seed_everything, set_rng_state


@dataclass
class TrainConfig:
    """Train DreamerV3 on one environment. Fields left at None come from the active profile
    (``WMKIT_PROFILE``: smoke | cpu | gpu), see wmkit/profiles.py."""

    env: str = "reach"
    """Environment: reach, reach-continuous, cartpole, pendulum, crafter, atari100k:<game>, atari:<game>."""
    steps: int | None = None
    """Environment (agent) steps to train for; Atari 100k = 100000 agent steps = 400k frames."""
    size: str | None = None
    """Model size preset of wmkit.dreamer.DreamerConfig (tiny for CPU ... the paper's sizes)."""
    recipe: str = "2023"
    """'2023' = the paper's recipe, '2025' = the later official changes (see the book)."""
    seed: int = 0
    """Seed of everything: model init, env episodes, replay sampling, action sampling."""
    train_ratio: float | None = None
    """Replayed steps per environment step (official meaning): updates per step = ratio / (B*T)."""
    batch_size: int | None = None
    """B: sequences per update."""
    batch_length: int | None = None
    """T: steps per sequence."""
    prefill: int | None = None
    """Random-policy steps collected before the first update."""
    replay_capacity: int = 1_000_000
    """Replay size in steps (FIFO); capped at --steps."""
    replay_context: int | None = None
    """Current code's ``replay_context: 1``: the replay stores the policy's latents and a replayed chunk
    starts from the stored latent before it (recomputed latents are written back). None = from the recipe
    (2023: 0, every chunk starts from the initial state; 2025: 1)."""
    replay_online: bool | None = None
    """Online replay queue (current code ``replay.online: True``): fresh windows are trained on first,
    then uniform. None = from the recipe (2023: False, the v1 ``replay_online: False``; 2025: True)."""
    eval_every: int | None = None
    """Env steps between evaluations (episodes with the eval policy + imagination video);
    None = 4 evaluations per run, 0 = never."""
    eval_episodes: int | None = None
    """Episodes per evaluation."""
    eval_policy: str = "sample"
    """How evaluation acts: "sample" from the policy (the official agent, v1 and current; every score
    compared with the paper) or "greedy" (argmax / mean; a labelled option, not the paper's protocol)."""
    log_every: int = 500
    """Env steps between TensorBoard scalars (update metrics are averaged over the interval)."""
    save_every: int = 5000
    """Env steps between checkpoints (one is always written at the end)."""
    run_dir: str = "runs/dreamer"
    """Output folder: config.json, metrics.jsonl, tb/, ckpt/, videos/."""
    resume: bool = False
    """Continue from run_dir/ckpt/latest if it exists (identical numbers on CPU)."""
    device: str = "auto"
    """cpu, cuda, mps or auto."""
    reward_scale: float = 1.0
    """Multiply the env's rewards (the one-config-everywhere experiment: 0.001 ... 1000)."""
    dreamer: str = ""
    """Overrides of DreamerConfig fields, 'name=value,name=value'."""
    ablation: str = ""
    """'' (none), 'no_symlog_twohot' (MSE reward/critic on raw values) or 'no_retnorm' (raw advantages),
    see wmkit/dreamer/ablations.py."""
    video: bool = True
    """Write a decoded imagination video (GIF + npz) at every evaluation."""
    progress: bool = True
    """Show a progress bar."""


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the None fields from the active profile and validate."""
    P = profile().dreamer
    fill = dict(steps=P.env_steps, size=P.size, train_ratio=P.train_ratio, batch_size=P.batch_size,
                batch_length=P.batch_length, prefill=P.prefill, eval_episodes=P.eval_episodes)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in fill.items() if getattr(cfg, k) is None})
    if cfg.eval_every is None:
        cfg = dataclasses.replace(cfg, eval_every=max(1, cfg.steps // 4))
    if cfg.replay_context not in (None, 0, 1):
        raise ValueError(f"--replay-context must be 0 or 1 (the official replay_context), got {cfg.replay_context}")
    if cfg.eval_policy not in ("sample", "greedy"):
        raise ValueError(f"--eval-policy must be 'sample' or 'greedy', got {cfg.eval_policy!r}")
    for name in ("steps", "batch_size", "batch_length", "prefill"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.train_ratio < 0:
        raise ValueError(f"--train-ratio must be >= 0, got {cfg.train_ratio}")
    return cfg


def parse_overrides(text: str) -> dict[str, Any]:
    """'a=1,b=false,c=x' -> {'a': 1, 'b': False, 'c': 'x'} (JSON values where they parse)."""
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ValueError(f"--dreamer override {item!r} must look like name=value")
        k, v = (s.strip() for s in item.split("=", 1))
        try:
            out[k] = json.loads(v.lower() if v.lower() in ("true", "false", "null") else v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _batch_obs(obs: dict) -> dict:
    return {k: np.asarray(v)[None] for k, v in obs.items()}  # (1, ...)


class Trainer:
    """Owns env, agent, replay and logger; ``run()`` trains until ``cfg.steps`` (or ``until``)."""

    def __init__(self, cfg: TrainConfig):
        from wmkit.dreamer import Agent, DreamerConfig

        self.cfg = cfg = resolve(cfg)
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_path = self.run_dir / "ckpt" / "latest"
        seed_everything(cfg.seed)
        self.device = pick_device(cfg.device)
        self.env = make_env(cfg.env, cfg.seed, cfg.reward_scale)
        self.eval_env = make_env(cfg.env, cfg.seed + 10_000, cfg.reward_scale)
        ablations.check(cfg.ablation)
        self.dcfg = DreamerConfig(recipe=cfg.recipe, size=cfg.size, **parse_overrides(cfg.dreamer))
        self.agent = ablations.apply(Agent(self.env.obs_space, self.env.act_space, self.dcfg,
                                           device=self.device, seed=cfg.seed), cfg.ablation)
        self.n, self.discrete = self.env.act_space["n"], self.env.act_space["discrete"]
        online = cfg.recipe == "2025" if cfg.replay_online is None else cfg.replay_online
        self.context = int(cfg.recipe == "2025") if cfg.replay_context is None else int(cfg.replay_context)
        latents = {"deter": self.dcfg.deter, "stoch": self.dcfg.stoch * self.dcfg.classes} if self.context else None
        self.replay = Replay(self.env.obs_space, self.n, min(cfg.replay_capacity, cfg.steps + 1), cfg.seed,
                             online=online, online_length=cfg.batch_length, latents=latents)
        self.ratio = TrainRatio(cfg.train_ratio / (cfg.batch_size * cfg.batch_length))
        self.act_rng = np.random.default_rng(cfg.seed + 1)
        self.step = self.updates = 0
        self.obs: dict | None = None
        self.pstate = None
        self.episodes: list[dict] = []  # finished training episodes (return, length, achievements)
        self.evals: list[dict] = []
        self._acc: dict[str, list[float]] = {}
        resumed = cfg.resume and checkpoint_exists(self.ckpt_path)
        self.logger = Logger(self.run_dir, resume=resumed)
        self.logger.save_config({"train": to_dict(cfg), "dreamer": to_dict(self.dcfg)})
        if resumed:
            self.load()

    # -- acting ------------------------------------------------------------------------------------
    def random_action(self) -> np.ndarray:
        if self.discrete:
            return np.eye(self.n, dtype=np.float32)[self.act_rng.integers(self.n)]
        return self.act_rng.uniform(-1, 1, self.n).astype(np.float32)

    def policy_action(self, obs: dict, mode: str = "train") -> np.ndarray:
        if self.pstate is None:
            self.pstate = self.agent.initial_state(1)
        with torch.no_grad():
            action, self.pstate = self.agent.policy(_batch_obs(obs), self.pstate, mode=mode)
        return _np(action)[0].astype(np.float32)

    def env_step(self) -> None:
        """One agent step: reset if needed, act, store, count."""
        if self.obs is None or self.obs["is_last"]:
            self.obs = self.env.reset()
            self.replay.add(self.obs, None)
        prefilling = self.step < self.cfg.prefill
        action = self.random_action() if prefilling else self.policy_action(self.obs)
        if self.context and not prefilling:   # the policy's latent of the step just stored
            self.replay.set_latent(self.replay.total - 1, deter=_np(self.pstate["deter"][0]),
                                   stoch=_np(self.pstate["stoch"][0]))
        self.obs = self.env.step(action)
        self.replay.add(self.obs, action)
        self.step += 1
        if self.obs["is_last"]:
            info = dict(self.env.episode_info)
            self.episodes.append(info)
            row = {"episode/return": info["return"], "episode/length": info["length"]}
            if "achievements" in info:
                rates = crafter_success_rates([e["achievements"] for e in self.episodes])
                row["crafter/score"] = crafter_score([rates[a] for a in CRAFTER_ACHIEVEMENTS])
            self.logger.log(self.step, **row)

    # -- learning ----------------------------------------------------------------------------------
    def train_step(self) -> None:
        if self.step < self.cfg.prefill:
            return
        for _ in range(self.ratio(self.step)):
            batch = self.replay.sample(self.cfg.batch_size, self.cfg.batch_length, self.device,
                                       context=self.context)
            metrics = self.agent.update(batch)
            if self.context:   # official: outs['replay'] -> replay.update (the recomputed latents)
                self.replay.write_latents(_np(batch["index"]), **self.agent.last_latents)
            ordered = dict(sorted(metrics.items(), key=lambda kv: "loss" not in kv[0]))  # losses first
            check_finite(ordered, self.step)
            self.updates += 1
            for k, v in metrics.items():
                self._acc.setdefault(k, []).append(float(v))

    def evaluate(self, episodes: int | None = None, video: bool | None = None, log: bool = True,
                 policy: str | None = None) -> dict:
        """Run eval episodes (sampled actions, or the argmax with ``eval_policy="greedy"``; own recurrent
        state) and optionally write the imagination video. ``policy`` ("sample" | "greedy") overrides the
        config's ``eval_policy`` for this call."""
        episodes = self.cfg.eval_episodes if episodes is None else episodes
        policy = self.cfg.eval_policy if policy is None else policy
        if policy not in ("sample", "greedy"):
            raise ValueError(f"evaluate: policy must be 'sample' or 'greedy', got {policy!r}")
        returns, infos = [], []
        for _ in range(episodes):
            obs, state = self.eval_env.reset(), self.agent.initial_state(1)
            while not obs["is_last"]:
                with torch.no_grad():
                    mode = "eval" if policy == "sample" else "greedy"
                    action, state = self.agent.policy(_batch_obs(obs), state, mode=mode)
                obs = self.eval_env.step(_np(action)[0].astype(np.float32))
            infos.append(dict(self.eval_env.episode_info))
            returns.append(infos[-1]["return"])
        row = {"eval/return": float(np.mean(returns)), "eval/return_std": float(np.std(returns))}
        if infos and "achievements" in infos[0]:
            rates = crafter_success_rates([i["achievements"] for i in infos])
            row["eval/crafter_score"] = crafter_score([rates[a] for a in CRAFTER_ACHIEVEMENTS])
        if (self.cfg.video if video is None else video) and len(self.replay) >= self.cfg.batch_length:
            self.write_video()
        if log:
            self.logger.log(self.step, **row)
            self.evals.append({"step": self.step, "returns": returns, **row})
        return {"step": self.step, "returns": returns, **row}

    def imagine(self, batch_size: int = 1, context: int = 5) -> dict:
        """Real vs imagined (decoded) rollouts on replayed sequences: numpy arrays (B, T, ...)."""
        T = self.cfg.batch_length
        batch = self.replay.sample(batch_size, T, self.device, train=False)
        with torch.no_grad():
            out = self.agent.imagine_report(batch, context=context, horizon=T - context)
        return {k: _np(v) for k, v in out.items()}

    def write_video(self) -> Path:
        from PIL import Image

        rep = self.imagine(1)
        out = self.run_dir / "videos"
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "latest.npz", **rep)
        if "real" not in rep:  # a vector env: draw the states if the env knows how (reach-vector)
            draw = getattr(self.env, "render_vector", None)
            if draw is None:
                return out / "latest.npz"
            rep = {"real": draw(rep["real_vector"][0])[None], "imagined": draw(rep["imagined_vector"][0])[None]}
        real, imag = rep["real"][0], rep["imagined"][0]  # (T, 64, 64, 3) uint8
        err = np.abs(real.astype(np.int16) - imag.astype(np.int16)).astype(np.uint8)
        frames = np.concatenate([real, imag, err], axis=2)  # (T, 64, 192, 3): real | imagined | error
        path = out / f"imagine_{self.step:08d}.gif"
        ims = [Image.fromarray(f).resize((f.shape[1] * 2, f.shape[0] * 2), Image.NEAREST) for f in frames]
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=100, loop=0)
        return path

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"agent": self.agent.state_dict(), "replay": self.replay.state_dict(),
                "ratio": self.ratio.state_dict(), "rng": rng_state(),
                "act_rng": self.act_rng.bit_generator.state,
                "pstate": self.pstate if self.pstate is not None else {},
                "counters": {"step": self.step, "updates": self.updates, "episode": self.env.episode,
                             "eval_episode": self.eval_env.episode, "has_obs": self.obs is not None},
                "episodes": json.dumps(self.episodes), "evals": json.dumps(self.evals),
                "acc": json.dumps(self._acc)}

    def save(self) -> Path:
        return save_state(self.ckpt_path, self.state(), {"step": self.step, "env": self.cfg.env,
                                                        "config": to_dict(self.cfg)})

    def load(self) -> None:
        sd = load_state(self.ckpt_path)
        self.agent.load_state_dict(sd["agent"])
        self.replay.load_state_dict(sd["replay"])
        self.ratio.load_state_dict(sd["ratio"])
        self.act_rng.bit_generator.state = sd["act_rng"]
        c = sd["counters"]
        self.step, self.updates = int(c["step"]), int(c["updates"])
        self.pstate = ({k: v.to(self.device) for k, v in sd["pstate"].items()}
                       if isinstance(sd["pstate"], dict) and sd["pstate"] else None)
        self.episodes, self.evals, self._acc = (json.loads(sd[k]) for k in ("episodes", "evals", "acc"))
        self.eval_env.episode = int(c["eval_episode"])
        if c["has_obs"]:  # rebuild the current episode: same seed, same actions, same frames
            self.env.episode = int(c["episode"]) - 1
            self.obs = self.env.reset()
            for a in self.replay.episode_tail():
                self.obs = self.env.step(a)
            last = (self.replay.total - 1) % self.replay.capacity
            for k in self.env.obs_space:
                if not np.array_equal(self.obs[k], self.replay.data[k][last]):
                    raise RuntimeError(f"resume: rebuilding the current {self.cfg.env!r} episode gave a "
                                       f"different {k!r} than the checkpoint; the env is not deterministic")
        set_rng_state(sd["rng"])
        _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        # the logged history up to the checkpoint, so that plots of a resumed run show the whole run
        self.logger.history = read_metrics(self.run_dir) if (self.run_dir / "metrics.jsonl").exists() else []

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, until: int | None = None) -> dict:
        """Train until env step ``until`` (default cfg.steps). Returns a summary dict."""
        from tqdm.auto import tqdm

        cfg, until = self.cfg, min(self.cfg.steps if until is None else until, self.cfg.steps)
        bar = tqdm(total=until, initial=self.step, disable=not cfg.progress, desc=f"dreamer {cfg.env}",
                   unit="step")
        t0, s0 = time.perf_counter(), self.step
        while self.step < until:
            self.env_step()
            self.train_step()
            if self.step % cfg.log_every == 0 and self._acc:
                fps = (self.step - s0) / max(time.perf_counter() - t0, 1e-9)
                means = {f"train/{k}": float(np.mean(v)) for k, v in self._acc.items()}
                self.logger.log(self.step, **means, **{"train/updates": self.updates, "train/fps": fps})
                self._acc = {}
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                self.evaluate()
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save()
            bar.update(1)
            if self.episodes:
                bar.set_postfix(ret=f"{self.episodes[-1]['return']:.1f}", upd=self.updates, refresh=False)
        bar.close()
        if self.step == cfg.steps and (not cfg.save_every or self.step % cfg.save_every):
            self.save()
        secs = time.perf_counter() - t0
        return {"step": self.step, "updates": self.updates, "seconds": secs,
                "env_steps_per_s": (self.step - s0) / max(secs, 1e-9),
                "returns": [e["return"] for e in self.episodes], "evals": self.evals}

    def close(self) -> None:
        self.logger.close()
        self.env.close()
        self.eval_env.close()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint by the interrupted run (they will be logged again)."""
    if path.exists():
        rows = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))


def train(cfg: TrainConfig | None = None, **overrides: Any) -> Trainer:
    """Build a Trainer from a config (or keyword fields), run it to the end, return it (agent inside)."""
    cfg = dataclasses.replace(cfg or TrainConfig(), **overrides)
    trainer = Trainer(cfg)
    try:
        trainer.summary = trainer.run()
    finally:
        trainer.logger.close()
    return trainer


def load_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run was started with (run_dir/config.json)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a `wmkit dreamer train` run folder?")
    return from_dict(TrainConfig, json.loads(path.read_text())["train"])


def bench_loop(args, emit) -> None:
    """``wmkit bench dreamer``'s whole-loop figure: environment steps per second of the training loop.

    Everything a real run does per step is timed -- act with the policy, store in replay, and the
    replayed updates that the train ratio asks for -- after an untimed random prefill. Uses the paper's
    train ratio (512 replayed steps per env step, i.e. one update every B*T/512 env steps), the bench's
    B and T, and the first ``--sizes`` preset, on a cheap vector task and on the same task from 64x64
    pixels, so that the figure is about the agent, not an expensive simulator.
    """
    import tempfile

    device = pick_device(args.device)
    steps = getattr(args, "loop_steps", 64)
    prefill = max(4 * args.length, 256)
    for env in ("reach-vector", "reach"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(env=env, steps=prefill + steps + 1, size=args.sizes[0], recipe=args.recipe,
                              train_ratio=512, batch_size=args.batch, batch_length=args.length,
                              prefill=prefill, eval_every=0, save_every=0, log_every=10**9, run_dir=tmp,
                              device=str(device), video=False, progress=False)
            trainer = Trainer(cfg)
            try:
                trainer.run(until=prefill)                        # random prefill, not timed
                updates0, t0 = trainer.updates, time.perf_counter()
                trainer.run(until=prefill + steps)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                secs = time.perf_counter() - t0
            finally:
                trainer.close()
            emit("dreamer", "loop_env_steps_per_s", steps / secs, "env steps/s", env=env, size=cfg.size,
                 recipe=cfg.recipe, train_ratio=cfg.train_ratio, B=cfg.batch_size, T=cfg.batch_length,
                 updates=trainer.updates - updates0, steps=steps, device=str(device))
