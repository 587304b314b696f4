"""Training loops of stage 4: V-JEPA pretraining on clips, and the action-conditioned world model on Two-Rooms.

Both loops write the common run layout (``wmkit.training.Logger``: TensorBoard + metrics.jsonl, config.json) and a
safetensors checkpoint (``wmkit.checkpoint``), log the collapse monitors (feature std, effective rank) every
``log_every`` steps, stop with a clear error on a NaN/Inf loss, and take ``precision`` through wmkit.precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from wmkit.checkpoint import save_state
from wmkit.config import to_dict
from wmkit.jepa.ac import ACConfig, ACWorldModel
from wmkit.jepa.masks import VJEPA_MASKS, MultiBlock3D
from wmkit.jepa.vjepa import VJEPA, VJEPAConfig, collapse_stats, lr_at, momentum_at
from wmkit.nn import precise_batchnorm
from wmkit.precision import autocast, prepare_model
from wmkit.training import Logger, check_finite

__all__ = ["VJEPATrainConfig", "ACTrainConfig", "sample_windows", "block_windows", "to_video", "train_vjepa",
           "train_ac", "recalibrate_batchnorm",
           "lewm_config", "lr_factor"]


@dataclass
class VJEPATrainConfig:
    """V-JEPA pretraining (official ViT-L/16 optimisation: AdamW, lr 2e-4 -> 6.25e-4 -> 1e-6, warm-up 40 of 300
    epochs, weight decay 0.04 -> 0.4, EMA 0.998 -> 1.0, ipe_scale 1.25, batch 24 per GPU x 128 GPUs)."""

    model: VJEPAConfig = field(default_factory=lambda: VJEPAConfig(frames=8, size=32, patch=8, dim=64, depth=2,
                                                                   heads=4, pred_dim=32, pred_depth=2, pred_heads=4))
    """model sizes (a VJEPAConfig)"""
    steps: int = 300
    """optimiser steps"""
    batch: int = 16
    """clips per step"""
    lr: float = 6.25e-4
    """peak learning rate (official ViT-L: 6.25e-4)"""
    start_lr: float = 2e-4
    """learning rate at step 0 (official: 2e-4)"""
    final_lr: float = 1e-6
    """learning rate at the end of the cosine (official: 1e-6)"""
    warmup: int = 40
    """warm-up steps (official: 40 epochs of 300)"""
    weight_decay: float = 0.04
    """AdamW weight decay (official: 0.04, raised to 0.4 by a cosine; kept constant here)"""
    ema: tuple[float, float] = (0.998, 1.0)
    """EMA momentum start and end (official V-JEPA: 0.998 -> 1.0; V-JEPA 2: 0.99925 constant)"""
    precision: str = "fp32"
    """fp32 | bf16 | fp8 (wmkit.precision)"""
    seed: int = 0
    """seed of the weights, batches and masks"""
    log_every: int = 10
    """steps between logged scalars (loss, lr, momentum, feature std, effective rank)"""


@dataclass
class ACTrainConfig:
    """Action-conditioned world model training (V-JEPA 2-AC: AdamW, lr 4.25e-4, clips of 4 s at 4 fps, batch 256)."""

    model: ACConfig = field(default_factory=ACConfig)
    """model sizes and recipe (an ACConfig)"""
    steps: int = 300
    """optimiser steps"""
    batch: int = 16
    """windows per step"""
    length: int = 6
    """predictor frames per training window, each ``model.action_block`` environment steps apart"""
    lr: float = 1e-3
    """peak learning rate, reached after a linear warm-up"""
    warmup: int = 20
    """warm-up steps"""
    lr_schedule: str = "constant"
    """after the warm-up: constant (V-JEPA 2-AC's cpu stand-in) | cosine (LeWM's LinearWarmupCosineAnnealingLR: a
    half cosine from ``lr`` down to 0 at the last step)"""
    weight_decay: float = 0.04
    """AdamW weight decay (V-JEPA 2-AC: 0.04)"""
    precision: str = "fp32"
    """fp32 | bf16 | fp8 (wmkit.precision)"""
    seed: int = 0
    """seed of the weights and batches"""
    log_every: int = 10
    """steps between logged scalars"""
    bn_recalibrate: int = 8
    """batches of ``batch`` windows over which the BatchNorm statistics of the pooled projectors are re-estimated at
    the final weights (an equal-weight average, no gradient) after training; 0 keeps PyTorch's running averages
    (LeWM). Measured at the cpu profile (lr 1e-3, 300 steps): the pre-BatchNorm spread across frames is ~1e-4 (the
    agent is a few pixels of the mean-pooled tokens), the running means lag the moving weights by more than that,
    and in eval mode the predictor's one-step error was 24.5 against 0.078 in train mode; re-estimated: 0.078"""
    encoder_lr_scale: float = 1.0
    """the encoder's learning rate as a multiple of ``lr`` (recipes that train the encoder): below 1 fine-tunes a
    pretrained encoder gently under the new predictor (e.g. 0.1), 0 keeps it fixed while its gradient is still
    computed; 1 = one rate for every parameter (the default)"""


def lewm_config(sizes: dict, action_block: int, steps: int, batch: int = 128, pool: str = "mean",
                sigreg_proj: int = 1024, lr: float = 1e-3, seed: int = 0,
                lr_schedule: str = "cosine") -> ACTrainConfig:
    """LeWM's recipe as published (``lucas-maes/le-wm``: ``config/train/lewm.yaml``, ``model/lewm.yaml``,
    ``data/tworoom.yaml``, ``train.py``) at the encoder ``sizes`` (an ACConfig's size/patch/dim/depth/heads/pred_*):
    one embedding per frame through the projector MLP with BatchNorm (``pool``: "cls" = LeWM's CLS token, "mean"),
    the predictor's ``pred_proj`` MLP, history 3 and one prediction (windows of 4 frames, frameskip
    ``action_block``), next-embedding MSE + 0.09 SIGReg (17 knots, 1024 projections, one test per time step over the
    batch), no EMA, no stop-gradient, no rollout term, no layer norm on the embeddings, batch 128, AdamW weight decay
    1e-3, gradient clipping 1.0, a linear warm-up then a cosine to 0 (``lr_schedule="cosine"``; "constant" keeps
    the peak rate). Not LeWM's: ``lr`` (LeWM 5e-5 over 100 epochs of 1000+ episodes; a run of a few hundred CPU
    steps needs 1e-3) and the BatchNorm statistics re-estimated after training (``bn_recalibrate``)."""
    model = ACConfig(**sizes, regulariser="sigreg", loss="mse", normalize=False, pooled=True, pool=pool,
                     projector_norm=True, pred_projector=True, history=3, rollout_steps=0, sigreg_weight=0.09,
                     sigreg_proj=sigreg_proj, sigreg_samples="time", action_block=action_block)
    return ACTrainConfig(model=model, steps=steps, batch=batch, length=4, lr=lr, weight_decay=1e-3, seed=seed,
                         log_every=max(1, steps // 30), lr_schedule=lr_schedule)


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """The learning rate at optimiser step ``step`` (0-based) of ``steps`` as a fraction of the peak: linear warm-up
    over ``warmup`` steps ((step + 1) / warmup), then 1 (``constant``) or a half cosine from 1 at the end of the
    warm-up to 0 at the last step (``cosine``, LeWM)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")
    if step < warmup or schedule == "constant":
        return min(1.0, (step + 1) / max(1, warmup))
    progress = (step - warmup) / max(1, steps - 1 - warmup)  # 0 after the warm-up, 1 at the last step
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    if frames.dtype != np.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"to_video: expected uint8 frames (..., H, W, 3), got {frames.dtype} {frames.shape}")
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(frames, -1, -3))).float() / 255.0


def sample_windows(n_windows: int, episodes: int, steps: int, length: int, g: torch.Generator) -> list[tuple[int, int]]:
    """(episode, start) pairs of windows of ``length`` frames from episodes of ``steps + 1`` frames."""
    if length > steps + 1:
        raise ValueError(f"sample_windows: length={length} is longer than an episode ({steps + 1} frames)")
    e = torch.randint(0, episodes, (n_windows,), generator=g)
    s = torch.randint(0, steps + 2 - length, (n_windows,), generator=g)
    return list(zip(e.tolist(), s.tolist(), strict=True))


def block_windows(video: torch.Tensor, acts: torch.Tensor, wins: list[tuple[int, int]], length: int,
                  block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of ``length`` predictor frames starting at (episode, start) pairs: every ``block``-th frame of video
    (E, T+1, C, H, W) and, between two of them, the ``block`` actions of acts (E, T, A) concatenated in time order."""
    span = (length - 1) * block + 1  # environment frames under one window
    clip = torch.stack([video[e, s:s + span:block] for e, s in wins])  # (B, L, C, H, W)
    act = torch.stack([acts[e, s:s + span - 1] for e, s in wins])  # (B, (L-1)*block, A)
    return clip, rearrange(act, "b (l k) a -> b l (k a)", k=block)  # (B, L-1, block*A)


def _save(run_dir, step, model, opt, cfg):
    if run_dir is not None:
        save_state(Path(run_dir) / "ckpt" / "latest", {"model": model.state_dict(), "opt": opt.state_dict()},
                   {"step": step, "config": to_dict(cfg)})


def train_vjepa(cfg: VJEPATrainConfig, frames: np.ndarray, run_dir: str | Path | None = None,
                progress: bool = True) -> tuple[VJEPA, list[dict]]:
    """Pretrain V-JEPA on windows of ``frames`` (E, T, H, W, 3) uint8 with the official two mask generators."""
    m = cfg.model
    if frames.ndim != 5 or frames.shape[2] != m.size or frames.shape[1] < m.frames:
        raise ValueError(f"train_vjepa: frames must be (E, T >= {m.frames}, {m.size}, {m.size}, 3), got {frames.shape}")
    torch.manual_seed(cfg.seed)
    model = prepare_model(VJEPA(m), cfg.precision)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.start_lr,
                            weight_decay=cfg.weight_decay)
    gens = [MultiBlock3D(m.grid, spec, seed=cfg.seed + i) for i, spec in enumerate(VJEPA_MASKS)]
    g = torch.Generator().manual_seed(cfg.seed)
    video = to_video(frames)  # (E, T, 3, H, W)
    log = Logger(run_dir, tensorboard=True) if run_dir is not None else None
    if log:
        log.save_config(to_dict(cfg))
    history = []
    for step in tqdm(range(cfg.steps), desc="V-JEPA", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.warmup, cfg.lr, cfg.start_lr, cfg.final_lr)
        wins = sample_windows(cfg.batch, video.shape[0], video.shape[1] - 1, m.frames, g)
        clip = torch.stack([video[e, s:s + m.frames] for e, s in wins])  # (B, T, 3, H, W)
        with autocast(cfg.precision, "cpu"):
            out = model.loss(clip, [gen(cfg.batch) for gen in gens])
        check_finite({"loss": out["loss"]}, step)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        mom = momentum_at(step, cfg.steps, cfg.ema)
        model.ema_update(mom)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": float(out["loss"].detach()), "lr": opt.param_groups[0]["lr"], "momentum": mom,
                   **{f"target_{k}": v for k, v in collapse_stats(out["target"]).items()},
                   **{f"context_{k}": v for k, v in collapse_stats(out["context"]).items()}}
            history.append(row)
            if log:
                log.log(step, **{k: v for k, v in row.items() if k != "step"})
    _save(run_dir, cfg.steps, model, opt, cfg)
    if log:
        log.close()
    return model, history


@torch.no_grad()
def recalibrate_batchnorm(model: ACWorldModel, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Re-estimate every BatchNorm's running mean and variance as the equal-weight average over ``batches`` of
    (clips (B, T, C, H, W), actions (B, T-1, A)) at the current weights, through the same forward as the loss;
    returns how many BatchNorm layers were reset (0: nothing to do). The model is left in eval mode. ("Precise
    BatchNorm", Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm".)"""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    if not batches:
        raise ValueError("recalibrate_batchnorm: need at least one batch")
    model.train()
    with precise_batchnorm(norms):  # equal-weight average of the batches' statistics
        for clip, act in batches:
            z = model.encode(clip)  # (B, T, N, D)
            model.predict(z[:, :-1], act)
            if model.target_encoder is not None:
                model.encode(clip, target=True)  # the EMA target projector's BatchNorm too
    model.eval()
    return len(norms)


def train_ac(cfg: ACTrainConfig, frames: np.ndarray, actions: np.ndarray, encoder=None,
             run_dir: str | Path | None = None, progress: bool = True) -> tuple[ACWorldModel, list[dict]]:
    """Train the action-conditioned model on episodes ``frames`` (E, T+1, H, W, 3) uint8, ``actions`` (E, T, A).

    ``encoder``: a pretrained :class:`~wmkit.jepa.vjepa.VideoViT` (V-JEPA 2-AC: frozen) or None (a fresh one)."""
    if frames.ndim != 5 or actions.ndim != 3 or frames.shape[:2] != (actions.shape[0], actions.shape[1] + 1):
        raise ValueError(f"train_ac: expected frames (E, T+1, H, W, 3) and actions (E, T, A), got {frames.shape} "
                         f"and {actions.shape}")
    if cfg.encoder_lr_scale < 0:
        raise ValueError(f"ACTrainConfig.encoder_lr_scale must be >= 0, got {cfg.encoder_lr_scale}")
    torch.manual_seed(cfg.seed)
    model = prepare_model(ACWorldModel(cfg.model, encoder=encoder), cfg.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    enc = {id(p) for p in model.encoder.parameters()}
    groups = [{"params": [p for p in params if id(p) in enc], "lr_scale": cfg.encoder_lr_scale},
              {"params": [p for p in params if id(p) not in enc], "lr_scale": 1.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    video, acts = to_video(frames), torch.from_numpy(actions).float()
    blk = cfg.model.action_block
    span = (cfg.length - 1) * blk + 1  # environment frames under one window of ``length`` predictor frames
    log = Logger(run_dir, tensorboard=True) if run_dir is not None else None
    if log:
        log.save_config(to_dict(cfg))
    history = []
    for step in tqdm(range(cfg.steps), desc=f"AC ({cfg.model.regulariser})", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = group["lr_scale"] * cfg.lr * lr_factor(step, cfg.steps, cfg.warmup, cfg.lr_schedule)
        clip, act = block_windows(video, acts, sample_windows(cfg.batch, video.shape[0], acts.shape[1], span, g),
                                  cfg.length, blk)
        with autocast(cfg.precision, "cpu"):
            out = model.loss(clip, act)
        check_finite({"loss": out["loss"]}, step)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # LeWM: gradient_clip_val 1.0
        opt.step()
        model.after_step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, **{k: float(v.detach()) for k, v in out.items()}}
            history.append(row)
            if log:
                log.log(step, **{k: v for k, v in row.items() if k != "step"})
    if cfg.bn_recalibrate:
        recalibrate_batchnorm(model, [block_windows(video, acts, sample_windows(cfg.batch, video.shape[0],
                                                                                acts.shape[1], span, g),
                                                    cfg.length, blk) for _ in range(cfg.bn_recalibrate)])
    _save(run_dir, cfg.steps, model, opt, cfg)
    if log:
        log.close()
    return model, history
