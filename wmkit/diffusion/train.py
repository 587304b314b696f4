"""Train a diffusion world model on recorded clips: one config, three recipes (edm | vpred | shortcut).

The loop follows DIAMOND's denoiser training (``config/trainer.yaml``: AdamW lr 1e-4, weight decay 1e-2, eps 1e-8,
linear warm-up over 100 steps, gradient norm clipped at 1.0, batch 32) on windows of K context frames + 1 target
frame cut from wmkit.data clips (Crafter stand-in by default). Logs TensorBoard scalars + metrics.jsonl, writes a
safetensors checkpoint (``model``) that :func:`load_model` rebuilds from its stored config.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from wmkit.checkpoint import load_meta, load_state, save_state
from wmkit.config import from_dict, to_dict
from wmkit.diffusion.common import ContextNoise, Recipe
from wmkit.diffusion.edm import EDM
from wmkit.diffusion.gamengen import VPrediction
from wmkit.diffusion.shortcut import Shortcut
from wmkit.diffusion.unet import Denoiser
from wmkit.precision import autocast, prepare_model
from wmkit.training import Logger, check_finite
from wmkit.utils import count_parameters, pick_device, runs_dir, seed_everything

RECIPES = ("edm", "vpred", "shortcut")


@dataclass
class DiffusionConfig:
    """Train a next-frame diffusion world model (DIAMOND / GameNGen / Dreamer 4 recipes) on recorded clips."""

    recipe: Literal["edm", "vpred", "shortcut"] = "edm"
    """edm: DIAMOND (EDM preconditioning, Euler); vpred: GameNGen (v-prediction, DDIM); shortcut: Dreamer 4."""
    env: Literal["crafter", "driving", "reach"] = "crafter"
    """Data: the Crafter stand-in (17 discrete actions), the CarRacing driving stand-in (continuous actions) or
    random-policy episodes of wmkit.dreamer's reach task (5 actions; the world of wmkit.diffusion.rl's agent)."""
    episodes: int = 8
    """Recorded episodes (20% of them, at least one, are held out by episode)."""
    episode_steps: int = 200
    """Frames per recorded episode."""
    size: int = 32
    """Frame side in pixels (DIAMOND Atari: 64)."""
    context: int = 4
    """K, conditioning frames and actions (DIAMOND: 4)."""
    channels: tuple[int, ...] = (64, 64, 64, 64)
    """U-Net widths per level (DIAMOND Atari: 64, 64, 64, 64)."""
    depths: tuple[int, ...] = (2, 2, 2, 2)
    """Residual blocks per level (DIAMOND Atari: 2, 2, 2, 2)."""
    cond_channels: int = 256
    """Width of the conditioning vector (DIAMOND: 256)."""
    batch_size: int = 32
    """Windows per update (DIAMOND: 32)."""
    train_steps: int = 1000
    """Optimizer updates."""
    lr: float = 1e-4
    """AdamW learning rate (DIAMOND: 1e-4)."""
    weight_decay: float = 1e-2
    """AdamW weight decay (DIAMOND: 1e-2)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up (DIAMOND: 100)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping (DIAMOND: 1.0)."""
    sigma_offset_noise: float = 0.3
    """edm: DIAMOND's offset noise (0 = plain EDM)."""
    order: int = 1
    """edm: 1 Euler (DIAMOND), 2 Heun."""
    ctx_noise_max: float = 0.0
    """GameNGen context-noise augmentation: maximum level a_max (0 = off; GameNGen: 0.7)."""
    ctx_noise_buckets: int = 10
    """Discrete context-noise levels with learned embeddings (GameNGen: 10)."""
    ctx_noise_infer: float = 0.1
    """Fixed context-noise level at inference when context noise is on."""
    cfg_drop: float = 0.0
    """Classifier-free guidance training: fraction of windows whose frame context is zeroed (0 = off)."""
    guidance: float = 1.0
    """Classifier-free guidance weight on the frame context at sampling (1 = off; GameNGen: 1.5, needs cfg_drop)."""
    k_max: int = 64
    """shortcut: finest step 1/k_max (nicklashansen/dreamer4: 64)."""
    self_fraction: float = 0.25
    """shortcut: fraction of the batch trained on the self-consistency target (dreamer4: 0.25)."""
    bootstrap_start: int = 0
    """shortcut: first step with self-consistency rows (dreamer4 configs: 0 to 10000)."""
    precision: Literal["fp32", "bf16", "fp8"] = "fp32"
    """Matmul precision (wmkit.precision): fp32, bf16 autocast or FP8 linear layers."""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda."""
    seed: int = 0
    """Seed of initialisation, batches and noise."""
    data_seed: int = 0
    """Seed of the recorded episodes."""
    log_every: int = 25
    """Log every this many updates."""
    run_dir: str = ""
    """Output folder ('' = runs/diffusion/<recipe>)."""


PROFILE_KEYS = ("episodes", "episode_steps", "size", "context", "channels", "depths", "cond_channels", "batch_size",
                "train_steps", "lr", "k_max")


def config_from_profile(profile=None, **overrides) -> DiffusionConfig:
    """A DiffusionConfig with the sizes of a wmkit profile (default: the active one), then ``overrides``."""
    from wmkit.profiles import profile as get_profile

    P = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    d = P.diffusion
    return DiffusionConfig(**{k: getattr(d, k) for k in PROFILE_KEYS}, **overrides)


def build_recipe(cfg: DiffusionConfig, num_actions: int | None, action_dim: int | None = None) -> Recipe:
    """The denoiser body plus the chosen recipe's wrapper (same body for all three)."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {cfg.recipe!r}")
    ctx = ContextNoise(cfg.ctx_noise_max, cfg.ctx_noise_buckets, cfg.ctx_noise_infer)
    step_levels = int(round(torch.tensor(float(cfg.k_max)).log2().item())) + 1 if cfg.recipe == "shortcut" else 0
    net = Denoiser(num_actions, cfg.context, 3, tuple(cfg.channels), tuple(cfg.depths), None, cfg.cond_channels,
                   action_dim, ctx_noise_buckets=cfg.ctx_noise_buckets if ctx.on else 0, step_levels=step_levels,
                   cfg_drop=cfg.cfg_drop)
    net.guidance = float(cfg.guidance)
    if cfg.recipe == "edm":
        return EDM(net, ctx, sigma_offset_noise=cfg.sigma_offset_noise, order=cfg.order)
    if cfg.recipe == "vpred":
        return VPrediction(net, ctx)
    return Shortcut(net, ctx, k_max=cfg.k_max, self_fraction=cfg.self_fraction, bootstrap_start=cfg.bootstrap_start)


def load_clips(cfg: DiffusionConfig, progress: bool = False):
    """The recorded episodes of ``cfg.env`` (cached on disk by wmkit.data)."""
    from wmkit.data import crafter_clips, driving_clips

    if cfg.env == "crafter":
        return crafter_clips(episodes=cfg.episodes, steps=cfg.episode_steps, seed=cfg.data_seed, progress=progress)
    if cfg.env == "driving":
        return driving_clips(episodes=cfg.episodes, steps=cfg.episode_steps, seed=cfg.data_seed, progress=progress)
    if cfg.env == "reach":
        from wmkit.diffusion.rl import record_episodes

        return record_episodes("reach", cfg.episodes, cfg.data_seed, cfg.episode_steps)
    raise ValueError(f"env must be 'crafter', 'driving' or 'reach', got {cfg.env!r}")


def window_tensors(ds) -> dict[str, torch.Tensor]:
    """Stack every window of a ClipDataset: frames (N, K+1, 3, H, W) in [-1, 1], actions (N, K+1[, A])."""
    items = [ds[i] for i in range(len(ds))]
    return {"frames": torch.stack([it["frames"] for it in items]) * 2 - 1,
            "actions": torch.stack([it["actions"] for it in items])}


def split_batch(frames: torch.Tensor, actions: torch.Tensor, K: int):
    """Window (B, K+1, ...) -> context (B, K, C, H, W), actions (B, K) of the context frames, target (B, C, H, W)."""
    return frames[:, :K], actions[:, :K], frames[:, K]


def train(cfg: DiffusionConfig, clips=None, progress: bool = True) -> dict:
    """Train; returns {"model": recipe, "history": rows, "run_dir": Path, "frames_per_s": float, ...}."""
    from wmkit.data import ClipDataset

    if cfg.train_steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"train_steps and batch_size must be >= 1, got {cfg.train_steps}, {cfg.batch_size}")
    device = pick_device(None if cfg.device == "auto" else cfg.device)
    clips = load_clips(cfg) if clips is None else clips
    train_ds = ClipDataset(clips, context=cfg.context, future=1, size=cfg.size, split="train", seed=cfg.data_seed)
    data = {k: v.to(device) for k, v in window_tensors(train_ds).items()}
    space = train_ds.action_space
    seed_everything(cfg.seed)
    model = build_recipe(cfg, space.n if space.kind == "discrete" else None,
                         space.dim if space.kind == "continuous" else None).to(device)
    model.net = prepare_model(model.net, cfg.precision)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(runs_dir("diffusion", cfg.recipe))
    N = data["frames"].shape[0]
    batch_gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    with Logger(run_dir) as log:
        log.save_config(to_dict(cfg))
        model.train()
        for step in tqdm(range(1, cfg.train_steps + 1), desc=f"diffusion {cfg.recipe}", disable=not progress):
            idx = torch.randint(0, N, (cfg.batch_size,), generator=batch_gen)
            ctx, act, tgt = split_batch(data["frames"][idx.to(device)], data["actions"][idx.to(device)], cfg.context)
            with autocast(cfg.precision, device):
                loss, logs = model.loss(ctx, act, tgt)
            check_finite({"loss": loss}, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            if step % cfg.log_every == 0 or step == cfg.train_steps:
                log.log(step, **logs, grad_norm=float(gnorm), lr=sched.get_last_lr()[0])
        history = log.history
    secs = time.perf_counter() - t0
    model.eval()
    meta = {"config": to_dict(cfg), "num_actions": model.net.num_actions, "action_dim": model.net.action_dim,
            "parameters": count_parameters(model.net), "train_seconds": secs}
    save_state(run_dir / "model", {"model": model.state_dict()}, metadata=meta)
    return {"model": model, "history": history, "run_dir": run_dir, "seconds": secs,
            "frames_per_s": cfg.train_steps * cfg.batch_size / secs, "train_windows": N}


def load_model(run_dir: str | Path, device: str = "cpu", precision: str | None = None) -> Recipe:
    """Rebuild a trained recipe from ``<run_dir>/model`` (its config is stored beside the weights).

    ``precision`` None rebuilds the model in the precision it was trained in: an fp8 model is prepared again with
    :func:`wmkit.precision.prepare_model` on ``device`` (FP8 layers of the backend available there: TE or torchao
    on a GPU, the emulation on CPU) before its weights are loaded; "fp32" or "bf16" loads the same weights into
    plain ``nn.Linear`` layers. Transformer Engine's per-layer ``_extra_state`` (its FP8 scaling state) is kept
    when the rebuilt layers have it and dropped, with a warning, when they do not (a TE checkpoint read on CPU).
    """
    import warnings

    path = Path(run_dir) / "model"
    meta = load_meta(path)
    cfg = from_dict(DiffusionConfig, meta["config"])
    model = build_recipe(cfg, meta["num_actions"], meta["action_dim"]).to(device)
    model.net = prepare_model(model.net, cfg.precision if precision is None else precision)
    state = load_state(path, map_location=device)["model"]
    own = model.state_dict()
    extra = [k for k in state if k.endswith("_extra_state") and k not in own]
    if extra:
        warnings.warn(f"load_model: {len(extra)} FP8 scaling states (e.g. {extra[0]}) have no layer to go to in "
                      "this precision/backend; they are dropped (the weights load)", stacklevel=2)
        state = {k: v for k, v in state.items() if k not in set(extra)}
    model.load_state_dict(state)
    return model.eval()
