"""Reinforcement learning inside a diffusion world model, end to end (DIAMOND, Alonso et al. 2024, section 3).

    record random episodes in the real game -> train the denoiser (wmkit.diffusion.train) -> train the
    reward/end model -> train the actor-critic in imagination -> play the policy in the REAL game against a
    uniformly random policy (mean return +- standard error over held-out seeds)

DIAMOND alternates these phases for 1,000 epochs of 100 real steps (Atari 100k). At the cpu budget wmkit runs
them once, on one batch of random-policy data (``collect_rounds`` > 1 repeats collect -> train with the current
policy, DIAMOND's loop). Environments are the ones of :func:`wmkit.dreamer.make_env` with discrete actions and
pixels; the default is ``reach`` (an 8x8 grid, move the red block onto the green one, reward ``1 - d/14`` every
step) because its dense reward lets a CPU run show learning in minutes. Crafter's reward (+1 per new
achievement, +-0.1 health) is too sparse for that: a random-policy buffer holds a handful of rewarded
transitions, and an imagined horizon of 15 steps rarely reaches one.

Diagnostics: :func:`imagined_returns` with :func:`reach_toward_target` checks that the imagination ranks a scripted
policy above the random one (as the real game does) before any actor-critic is blamed or trusted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wmkit.checkpoint import load_meta, load_state, save_state
from wmkit.config import from_dict, to_dict
from wmkit.diffusion.agent import ActorCritic, ImaginedEnv, RewEndModel, imagination_loss
from wmkit.dreamer import ReturnNormalizer
from wmkit.training import Logger, check_finite
from wmkit.utils import runs_dir, seed_everything

REACH_BINS = tuple(k / 14 for k in range(15))  # reach's rewards 1 - d/14, d = 0..14


@dataclass
class AgentConfig:
    """DIAMOND's agent: denoiser + reward/end model + actor-critic trained in imagination, scored in the real game."""

    env: str = "reach"
    """A wmkit.dreamer.make_env name with pixels and discrete actions (reach, crafter, atari100k:<game>)."""
    episodes: int = 200
    """Random-policy episodes recorded in the real game (20% held out by episode)."""
    max_steps: int = 1000
    """Longest recorded episode (agent steps)."""
    size: int = 16
    """Frame side used by all three models (DIAMOND Atari: 64)."""
    context: int = 4
    """K frames of conditioning (DIAMOND: 4); also the burn-in length."""
    recipe: str = "edm"
    """Denoiser recipe (edm = DIAMOND)."""
    wm_channels: tuple[int, ...] = (16, 16, 16)
    """Denoiser U-Net widths (DIAMOND: 64, 64, 64, 64)."""
    wm_depths: tuple[int, ...] = (1, 1, 1)
    """Denoiser blocks per level (DIAMOND: 2, 2, 2, 2)."""
    wm_cond_channels: int = 32
    """Denoiser conditioning width (DIAMOND: 256)."""
    wm_steps: int = 2000
    """Denoiser updates (measured on reach at 16x16: after 600 the model does not draw the moving agent yet; after
    2,000 it moves it by exactly one cell in the commanded direction)."""
    wm_lr: float = 3e-4
    """Denoiser learning rate (DIAMOND: 1e-4)."""
    rew_end_channels: tuple[int, ...] = (16, 16, 16)
    """Reward/end encoder widths (DIAMOND: 32, 32, 32, 32)."""
    rew_end_depths: tuple[int, ...] = (1, 1, 1)
    """Reward/end blocks per level (DIAMOND: 2, 2, 2, 2)."""
    rew_end_cond: int = 32
    """Reward/end action-embedding width (DIAMOND: 128)."""
    rew_end_lstm: int = 128
    """Reward/end LSTM width (DIAMOND: 512)."""
    rew_end_steps: int = 800
    """Reward/end updates (batches of sequences of K + horizon transitions, DIAMOND's seq_length)."""
    rew_end_lr: float = 1e-3
    """Reward/end learning rate (DIAMOND: 1e-4; measured here, 800 updates on 160 reach episodes: 1e-3 gives 94%
    held-out reward accuracy, 3e-3 diverges to 14%)."""
    rew_end_batch: int = 0
    """Reward/end sequences per update (0 = batch_size, DIAMOND: 32)."""
    rew_end_schedule: str = "constant"
    """Reward/end learning rate after the warm-up: constant (DIAMOND) or linear (decays to 0 at the last update)."""
    rew_end_balance: float = 0.0
    """Class balance of the reward/end batches: a window of the training split is drawn with probability
    proportional to max over its transitions of freq(class)^-rew_end_balance, over the reward classes and the two
    end classes (0 = uniform windows, DIAMOND; 1 = the inverse frequency of its rarest class). Measured on reach,
    400 updates, uniform windows: 67% held-out accuracy and 0% on the rarest classes -- reaching the target
    (r = 1) among them."""
    reward_sign: bool = False
    """Classify sign(r) in {-1, 0, 1} as DIAMOND does on Atari (needs reward_bins = (-1, 0, 1))."""
    reward_bins: tuple[float, ...] = REACH_BINS
    """Reward classes; targets are two-hot on this grid (DIAMOND: (-1, 0, 1) with reward_sign)."""
    ac_channels: tuple[int, ...] = (32, 32, 64, 64)
    """Actor-critic encoder widths, one 2x2 max-pool each (DIAMOND: 32, 32, 64, 64)."""
    ac_down: tuple[int, ...] = ()
    """Per encoder level, 1 = a 2x2 max-pool after it; () = after every level (DIAMOND: 1, 1, 1, 1 at 64x64, leaving
    a 4x4 map). At 16x16
    the cpu profile pools twice, (1, 1, 0, 0), to keep that 4x4 map: pooled 4 times a 16x16 frame is 1x1, and the
    policy can no longer see where the target is relative to the agent."""
    ac_lstm: int = 512
    """Actor-critic LSTM width (DIAMOND: 512)."""
    ac_steps: int = 120
    """Actor-critic updates in imagination."""
    ac_lr: float = 3e-4
    """Actor-critic learning rate (DIAMOND: 1e-4, with 5,000 updates in its first epoch)."""
    imagined: int = 16
    """Imagined trajectories per update (DIAMOND: batch 32)."""
    horizon: int = 15
    """Imagination horizon (DIAMOND: 15)."""
    denoise_steps: int = 3
    """Euler steps per imagined frame (DIAMOND: 3)."""
    gamma: float = 0.985
    """Discount (DIAMOND: 0.985)."""
    lam: float = 0.95
    """lambda of the lambda-returns (DIAMOND: 0.95)."""
    entropy_weight: float = 1e-3
    """Entropy bonus (DIAMOND: 0.001)."""
    value_weight: float = 1.0
    """Value-loss weight (DIAMOND: 1)."""
    critic_init: str = "zero"
    """Value head's initial output: zero = DIAMOND (zero weights and bias); data = its bias set to the mean reward
    of the recorded episodes over (1 - gamma), the discounted value of the policy that recorded them. On
    reach returns are about 0.6 / 0.015 = 40; from zero, Adam moves the value output a fraction of a unit per update,
    so for the first ~100 updates R - V mostly measures the critic's lag, not the action (see the book page)."""
    adv_norm: str = "none"
    """Advantage: none = R - V (DIAMOND); batch = standardised over the imagined batch; return = divided by
    DreamerV3's max(1, P95 - P5 of the returns), percentiles tracked with EMA rate ``retnorm_rate`` (see
    imagination_loss)."""
    retnorm_rate: float = 0.01
    """EMA rate of the return percentiles when adv_norm = return (DreamerV3: 0.01)."""
    batch_size: int = 32
    """Denoiser and reward/end batch (DIAMOND: 32)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up of the reward/end and actor-critic optimisers (DIAMOND: 100; the cpu profile
    uses 10 of its 200-300 updates)."""
    eval_episodes: int = 50
    """Real-game episodes for the policy and for the random baseline (same seeds)."""
    seed: int = 0
    """Seed of recording, initialisation, batches and noise."""
    ac_seed: int = -1
    """Seed of the actor-critic's initialisation, imagined batches and sampling (-1 = ``seed``): several
    actor-critics on one world model, with the same data split."""
    run_dir: str = ""
    """Output folder ('' = runs/diffusion/agent-<env>)."""


DIAMOND_SIZES = dict(wm_channels=(64, 64, 64, 64), wm_depths=(2, 2, 2, 2), wm_cond_channels=256, wm_lr=1e-4,
                     rew_end_channels=(32, 32, 32, 32), rew_end_depths=(2, 2, 2, 2), rew_end_cond=128,
                     rew_end_lstm=512, rew_end_lr=1e-4, ac_channels=(32, 32, 64, 64), ac_lstm=512, ac_lr=1e-4)


def agent_config_from_profile(profile=None, **overrides) -> AgentConfig:
    """An AgentConfig with the sizes of a wmkit profile (``P.diffusion.agent_*``; the gpu profile takes DIAMOND's
    network sizes and learning rates), then ``overrides``."""
    from wmkit.profiles import profile as get_profile

    P = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    d = P.diffusion
    kw = dict(episodes=d.agent_episodes, size=d.agent_size, wm_steps=d.agent_wm_steps,
              rew_end_steps=d.agent_rew_end_steps, ac_steps=d.agent_ac_steps, imagined=d.agent_imagined,
              eval_episodes=d.agent_eval_episodes, warmup_steps=d.agent_warmup, adv_norm=d.agent_adv_norm,
              ac_down=d.agent_ac_down, critic_init=d.agent_critic_init,
              **(DIAMOND_SIZES if d.agent_diamond_sizes else {}))
    kw.update(overrides)
    return AgentConfig(**kw)


# ------------------------------------------------------------------------------------------------ data
def record_episodes(env_name: str, episodes: int, seed: int = 0, max_steps: int = 1000, policy=None) -> list:
    """Episodes of the real game as wmkit.data Clips (frames at the env's 64x64). ``policy(obs_uint8, t)`` -> action,
    default uniformly random. reward[t] and done[t] follow action t; the final frame carries a dummy action 0."""
    from wmkit.data import ActionSpace, Clip
    from wmkit.dreamer import make_env

    env = make_env(env_name, seed=seed)
    if not env.act_space["discrete"] or "image" not in env.obs_space:
        raise ValueError(f"env {env_name!r}: the diffusion agent needs pixels and discrete actions")
    n = int(env.act_space["n"])
    rng = np.random.default_rng(seed)
    clips = []
    for e in range(episodes):
        obs = env.reset()
        frames, acts, rews, dones = [obs["image"]], [], [], []
        for t in range(max_steps):
            a = int(rng.integers(n)) if policy is None else int(policy(obs["image"], t))
            obs = env.step(a)
            frames.append(obs["image"]), acts.append(a), rews.append(float(obs["reward"]))
            dones.append(bool(obs["is_terminal"]))
            if obs["is_last"]:
                break
        acts.append(0), rews.append(0.0), dones.append(False)
        clips.append(Clip(np.stack(frames), np.asarray(acts, np.int64), ActionSpace("discrete", n=n),
                          np.asarray(rews, np.float32), np.asarray(dones, bool),
                          dict(source=f"{env_name}:seed{seed}:ep{e}", episode=f"{env_name}-{seed}-{e}", fps=15.0)))
    env.close()
    return clips


def _windows(clips, length: int, size: int, split: str, seed: int, max_windows: int | None = None):
    """Windows of ``length`` frames of one split, stacked: frames (N, L, 3, S, S) in [-1, 1], actions, reward, done
    (N, L). ``max_windows`` keeps that many, evenly spread (a held-out evaluation need not read them all)."""
    from wmkit.data import ClipDataset

    ds = ClipDataset(clips, context=length, future=0, size=size, split=split, seed=seed)
    return _stack(ds, np.arange(len(ds)) if max_windows is None else
                  np.unique(np.linspace(0, len(ds) - 1, min(max_windows, len(ds))).round().astype(int)))


def _stack(ds, index) -> dict[str, torch.Tensor]:
    items = [ds[int(i)] for i in index]
    return {"frames": torch.stack([it["frames"] for it in items]) * 2 - 1,
            **{k: torch.stack([it[k] for it in items]) for k in ("actions", "reward", "done")}}


def lr_factor(step: int, warmup: int, total: int = 0) -> float:
    """Learning-rate multiplier of update ``step`` (0-based): DIAMOND's linear warm-up over ``warmup`` updates, then
    constant (``total`` = 0) or, with ``total`` > 0, decaying linearly to 0 at update ``total``."""
    up = min(1.0, (step + 1) / max(1, warmup))
    return up if total <= 0 else up * max(0.0, 1 - max(0, step + 1 - warmup) / max(1, total - warmup))


def _optimizer(module, lr: float, weight_decay: float, warmup: int, total: int = 0):
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, eps=1e-8)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))


# ------------------------------------------------------------------------------------------------ phases
def denoiser_config(cfg: AgentConfig, run_dir: str | Path):
    """The DiffusionConfig of the agent's world model (same frames, context and seed as the agent)."""
    from wmkit.diffusion.train import DiffusionConfig

    return DiffusionConfig(recipe=cfg.recipe, env="reach" if cfg.env == "reach" else "crafter", size=cfg.size,
                           context=cfg.context, channels=cfg.wm_channels, depths=cfg.wm_depths,
                           cond_channels=cfg.wm_cond_channels, batch_size=cfg.batch_size, train_steps=cfg.wm_steps,
                           lr=cfg.wm_lr, seed=cfg.seed, data_seed=cfg.seed, run_dir=str(run_dir))


def train_rew_end(cfg: AgentConfig, clips, num_actions: int, log: Logger | None = None, progress: bool = True):
    """Train the reward/end model on sequences of K + horizon transitions; held-out accuracy of the argmax class
    (on up to 512 held-out sequences)."""
    from wmkit.data import ClipDataset

    L = cfg.context + cfg.horizon + 1
    tr = ClipDataset(clips, context=L, future=0, size=cfg.size, split="train", seed=cfg.seed)  # batches read lazily
    ho = _windows(clips, L, cfg.size, "heldout", cfg.seed, max_windows=512)
    torch.manual_seed(cfg.seed)
    model = RewEndModel(num_actions, cfg.size, cfg.reward_bins, cfg.rew_end_channels, cfg.rew_end_depths,
                        cfg.rew_end_cond, cfg.rew_end_lstm)
    decay = {"constant": 0, "linear": cfg.rew_end_steps}.get(cfg.rew_end_schedule)
    if decay is None:
        raise ValueError(f"rew_end_schedule must be 'constant' (DIAMOND) or 'linear', got {cfg.rew_end_schedule!r}")
    opt, sched = _optimizer(model, cfg.rew_end_lr, 1e-2, cfg.warmup_steps, decay)
    g = torch.Generator().manual_seed(cfg.seed)
    p = window_weights(tr, model.bins, cfg.reward_sign, cfg.rew_end_balance) if cfg.rew_end_balance else None
    bs = cfg.rew_end_batch or cfg.batch_size
    for step in tqdm(range(1, cfg.rew_end_steps + 1), desc="reward/end model", disable=not progress):
        i = (torch.randint(0, len(tr), (bs,), generator=g) if p is None else
             torch.multinomial(p, bs, replacement=True, generator=g))
        b = _stack(tr, i)
        f, a = b["frames"], b["actions"]
        loss, mets = model.loss(f[:, :-1], a[:, :-1], f[:, 1:], b["reward"][:, :-1], b["done"][:, :-1],
                                cfg.reward_sign)
        _update(model, opt, sched, loss, "rew_end_loss", step)
        if log is not None and (step % 25 == 0 or step == cfg.rew_end_steps):
            log.log(step, **{f"rew_end/{k}": v for k, v in mets.items()})
    model.eval()
    return model, rew_end_accuracy(model, ho, cfg.reward_sign)


def window_weights(ds, bins: torch.Tensor, reward_sign: bool, balance: float) -> torch.Tensor:
    """Sampling probabilities of the windows of a ClipDataset (``ds.index`` = (clip, start), transitions start ..
    start + L - 2): each window weighs max over its transitions of freq(class)^-balance, for the reward class (the
    nearest bin) and the end class, frequencies counted over all windows' transitions. -> (len(ds),), sums to 1."""
    if balance < 0:
        raise ValueError(f"rew_end_balance must be >= 0, got {balance}")
    L = ds.context + ds.future
    rc, ec = [], []
    for k, s in ds.index:
        c = ds.clips[k]
        r = torch.from_numpy(c.reward[s:s + L - 1].astype(np.float32))
        r = r.sign() if reward_sign else r
        rc.append((r[:, None] - bins).abs().argmin(-1))  # (L-1,)
        ec.append(torch.zeros(L - 1, dtype=torch.int64) if c.done is None else
                  torch.from_numpy(c.done[s:s + L - 1].astype(np.int64)))
    rc, ec = torch.stack(rc), torch.stack(ec)  # (N, L-1)
    fr = torch.bincount(rc.flatten(), minlength=len(bins)).float() / rc.numel()  # (n_bins,)
    fe = torch.bincount(ec.flatten(), minlength=2).float() / ec.numel()  # (2,)
    w = torch.maximum(fr[rc].pow(-balance).amax(1), fe[ec].pow(-balance).amax(1))  # (N,)
    return w / w.sum()


def _update(module: torch.nn.Module, opt, sched, loss: torch.Tensor, name: str, step: int) -> None:
    """One optimiser step as DIAMOND's trainers take it: refuse a non-finite loss, clip the gradient norm at
    100 (DIAMOND's max_grad_norm for the reward/end model and the actor-critic), step the warm-up schedule."""
    check_finite({name: loss}, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 100.0)
    opt.step()
    sched.step()


@torch.no_grad()
def rew_end_accuracy(model: RewEndModel, windows: dict, reward_sign: bool) -> dict:
    """Held-out: fraction of transitions whose most likely reward class is the target's nearest class, the same
    for 'end', and the mean absolute error of the expected reward."""
    f, a = windows["frames"], windows["actions"]
    lr, le, _ = model(f[:, :-1], a[:, :-1], f[:, 1:])
    r = windows["reward"][:, :-1]
    r = r.sign() if reward_sign else r
    target = (r[..., None] - model.bins).abs().argmin(-1)
    expected = (lr.softmax(-1) * model.bins).sum(-1)
    hit = lr.argmax(-1) == target
    per_class = [float(hit[target == c].float().mean()) if (target == c).any() else None
                 for c in range(len(model.bins))]  # None: no held-out transition of that class
    return {"reward_accuracy": float(hit.float().mean()), "reward_class_accuracy": per_class,
            "reward_class_count": torch.bincount(target.flatten(), minlength=len(model.bins)).tolist(),
            "reward_balanced_accuracy": float(np.mean([a for a in per_class if a is not None])),
            "end_accuracy": float((le.argmax(-1) == windows["done"][:, :-1].long()).float().mean()),
            "reward_mae": float((expected - r).abs().mean()), "transitions": int(r.numel())}


def train_actor_critic(cfg: AgentConfig, model, rew_end: RewEndModel, clips, num_actions: int,
                       log: Logger | None = None, progress: bool = True, on_update=None):
    """DIAMOND's RL in imagination: each update starts ``imagined`` trajectories from real K-frame segments.
    ``on_update(step, ac)`` is called after each update (e.g. to score the policy in the real game every 50
    updates); a dict it returns is merged into that update's row of the history."""
    starts = _windows(clips, cfg.context, cfg.size, "train", cfg.seed)
    ac_seed = cfg.seed if cfg.ac_seed < 0 else cfg.ac_seed
    torch.manual_seed(ac_seed)
    ac = ActorCritic(num_actions, cfg.size, cfg.ac_channels, cfg.ac_lstm, down=cfg.ac_down or None)
    if cfg.critic_init == "data":  # the random policy's discounted value, read from the recorded rewards
        mean_r = float(np.mean(np.concatenate([c.reward[:-1] for c in clips if c.reward is not None])))
        torch.nn.init.constant_(ac.critic.bias, mean_r / (1 - cfg.gamma))
    elif cfg.critic_init != "zero":
        raise ValueError(f"critic_init must be 'zero' (DIAMOND) or 'data', got {cfg.critic_init!r}")
    opt, sched = _optimizer(ac, cfg.ac_lr, 0.0, cfg.warmup_steps)  # DIAMOND: weight decay 0 for the actor-critic
    g = torch.Generator().manual_seed(ac_seed + 1)
    env = ImaginedEnv(model, rew_end, cfg.denoise_steps, generator=g)
    retnorm = ReturnNormalizer(cfg.retnorm_rate) if cfg.adv_norm == "return" else None
    N, rows, traj = starts["frames"].shape[0], [], None
    for step in tqdm(range(1, cfg.ac_steps + 1), desc="actor-critic in imagination", disable=not progress):
        i = torch.randint(0, N, (cfg.imagined,), generator=g)
        loss, mets, traj = imagination_loss(ac, env, starts["frames"][i], starts["actions"][i], cfg.horizon,
                                            cfg.gamma, cfg.lam, cfg.entropy_weight, cfg.value_weight, g,
                                            cfg.adv_norm, retnorm)
        _update(ac, opt, sched, loss, "actor_critic_loss", step)
        rows.append({"step": step, **mets})
        if on_update is not None:
            ac.eval()
            rows[-1].update(on_update(step, ac) or {})
            ac.train()
        if log is not None and (step % 10 == 0 or step == cfg.ac_steps):
            log.log(step, **{f"ac/{k}": v for k, v in mets.items()})
    ac.eval()
    return ac, rows, traj


# ------------------------------------------------------------------------------------------------ diagnostics
def reach_toward_target(frames: torch.Tensor) -> torch.Tensor:
    """reach's scripted policy, read from pixels (so it also plays imagined frames): frames (N, 3, S, S) in [-1, 1]
    -> actions (N,) moving the red block toward the green one along the larger gap (up 1, down 2, left 3, right 4);
    0 (stay) when the blocks overlap or no red block is drawn."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (N, 3, S, S) in [-1, 1], got {tuple(frames.shape)}")
    S = frames.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")

    def centre(mask):  # (N, S, S) bool -> row, col of its centre of mass, and whether it is drawn
        w = mask.float().sum((1, 2))
        return (mask * ys).sum((1, 2)) / w.clamp(min=1), (mask * xs).sum((1, 2)) / w.clamp(min=1), w > 0

    ay, ax, seen = centre((frames[:, 0] > 0) & (frames[:, 1] < 0))  # red only: the agent (off the target)
    ty, tx, _ = centre(frames[:, 1] > 0)  # green: the target (yellow where the agent covers it)
    dy, dx = ty - ay, tx - ax  # (N,)
    vertical = dy.abs() >= dx.abs()
    a = torch.where(vertical, torch.where(dy < 0, 1, 2), torch.where(dx < 0, 3, 4))
    return torch.where(seen & ((dy.abs() > 0.5) | (dx.abs() > 0.5)), a, 0)


@torch.no_grad()
def imagined_returns(env: ImaginedEnv, obs: torch.Tensor, act: torch.Tensor, horizon: int = 15, policy=None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Does the imagination rank policies? Sum of the sampled imagined rewards over ``horizon`` steps from each real
    start (obs (N, K, C, H, W), act (N, K)); ``policy(frame (N, C, H, W)) -> (N,)``, None = uniformly random. -> (N,)"""
    x = env.reset(obs, act)
    total = torch.zeros(obs.shape[0])
    n = env.rew_end.num_actions
    for _ in range(horizon):
        a = torch.randint(0, n, (obs.shape[0],), generator=generator) if policy is None else policy(x)
        x, r, _ = env.step(a)
        total += r
    return total


@torch.no_grad()
def evaluate(env_name: str, size: int, episodes: int, ac: ActorCritic | None = None, seed: int = 10_000,
             max_steps: int = 10_000, policy=None) -> dict:
    """Returns of ``episodes`` real-game episodes (seeds ``seed + i``) with the actor-critic (actions sampled from
    its policy, DIAMOND's test epsilon 0), ``policy(frames (E, 3, S, S) in [-1, 1]) -> (E,)`` (e.g.
    :func:`reach_toward_target`) or, with neither, a uniformly random policy. Episodes run in lockstep, one batched
    call per step."""
    from wmkit.data import resize_frames
    from wmkit.dreamer import make_env

    envs = [make_env(env_name, seed=seed + i) for i in range(episodes)]
    n = int(envs[0].act_space["n"])
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    obs = [e.reset() for e in envs]
    returns, alive = np.zeros(episodes), np.ones(episodes, bool)
    hc = ac.initial_state(episodes) if ac is not None else None
    for _ in range(max_steps):
        if ac is not None or policy is not None:
            imgs = resize_frames(np.stack([o["image"] for o in obs]), size)  # (E, S, S, 3)
            x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1  # (E, 3, S, S)
            if policy is not None:
                acts = policy(x).tolist()
            else:
                logits, _, hc = ac(x, hc)
                acts = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(-1).tolist()
        else:
            acts = rng.integers(n, size=episodes).tolist()
        for i, e in enumerate(envs):
            if alive[i]:
                obs[i] = e.step(int(acts[i]))
                returns[i] += float(obs[i]["reward"])
                alive[i] = not obs[i]["is_last"]
        if not alive.any():
            break
    for e in envs:
        e.close()
    return {"returns": returns.tolist(), "mean": float(returns.mean()),
            "sem": float(returns.std(ddof=1) / math.sqrt(episodes)) if episodes > 1 else float("nan"),
            "episodes": episodes}


# ------------------------------------------------------------------------------------------------ all of it
def run(cfg: AgentConfig, progress: bool = True) -> dict:
    """Record -> denoiser -> reward/end -> actor-critic in imagination -> real-game evaluation. Saves
    ``<run_dir>/diffusion/model`` (wmkit.diffusion.load_model) and ``<run_dir>/agent`` (:func:`load_agent`)."""
    from wmkit.diffusion.train import train

    seed_everything(cfg.seed)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(runs_dir("diffusion", f"agent-{cfg.env.replace(':', '-')}"))
    t = {"start": time.perf_counter()}
    clips = record_episodes(cfg.env, cfg.episodes, cfg.seed, cfg.max_steps)
    n = clips[0].action_space.n
    t["record"] = time.perf_counter()
    wm = train(denoiser_config(cfg, run_dir / "diffusion"), clips=clips, progress=progress)
    model = wm["model"]
    t["denoiser"] = time.perf_counter()
    with Logger(run_dir / "logs") as log:
        log.save_config(to_dict(cfg))
        rew_end, acc = train_rew_end(cfg, clips, n, log, progress)
        t["rew_end"] = time.perf_counter()
        ac, rows, traj = train_actor_critic(cfg, model, rew_end, clips, n, log, progress)
        t["actor_critic"] = time.perf_counter()
    agent_eval = evaluate(cfg.env, cfg.size, cfg.eval_episodes, ac, seed=10_000 + cfg.seed)
    random_eval = evaluate(cfg.env, cfg.size, cfg.eval_episodes, None, seed=10_000 + cfg.seed)
    t["evaluate"] = time.perf_counter()
    secs = {k: round(t[k] - t[p], 1) for p, k in zip(list(t)[:-1], list(t)[1:])}
    save_state(run_dir / "agent", {"rew_end": rew_end.state_dict(), "actor_critic": ac.state_dict()},
               metadata={"config": to_dict(cfg), "num_actions": n, "rew_end_accuracy": acc,
                         "agent": agent_eval, "random": random_eval, "seconds": secs})
    return {"config": cfg, "model": model, "rew_end": rew_end, "actor_critic": ac, "rew_end_accuracy": acc,
            "ac_history": rows, "imagined": traj, "agent": agent_eval, "random": random_eval, "seconds": secs,
            "denoiser_history": wm["history"], "run_dir": run_dir, "clips": clips}


def load_agent(run_dir: str | Path):
    """Rebuild (diffusion model, reward/end model, actor-critic, config) from a :func:`run` folder."""
    from wmkit.diffusion.train import load_model

    run_dir = Path(run_dir)
    meta = load_meta(run_dir / "agent")
    cfg = from_dict(AgentConfig, meta["config"])
    n = meta["num_actions"]
    rew_end = RewEndModel(n, cfg.size, cfg.reward_bins, cfg.rew_end_channels, cfg.rew_end_depths, cfg.rew_end_cond,
                          cfg.rew_end_lstm)
    ac = ActorCritic(n, cfg.size, cfg.ac_channels, cfg.ac_lstm, down=cfg.ac_down or None)
    state = load_state(run_dir / "agent")
    rew_end.load_state_dict(state["rew_end"])
    ac.load_state_dict(state["actor_critic"])
    return load_model(run_dir / "diffusion"), rew_end.eval(), ac.eval(), cfg
