"""Measure a diffusion world model on held-out episodes: next-frame quality against sampling steps, drift.

* :func:`psnr` -- peak signal-to-noise ratio of frames in [-1, 1] (peak-to-peak 2), per frame, in dB.
* :func:`next_frame_quality` -- for every held-out window: real context -> one sampled frame, PSNR against the
  real next frame, for each number of sampling steps; also the "copy the last context frame" baseline, which a
  model must beat to have learned anything about motion (consecutive game frames are very alike).
* :func:`rollout` -- autoregressive generation: the model's own frames become its context (what play does).
* :func:`changed_mask`, :func:`masked_psnr` -- the pixels that change between the last context frame and the real
  next frame, and PSNR over them only: most of a game frame is static, so whole-frame PSNR rewards copying.
* :func:`drift` -- PSNR of an autoregressive rollout against the real episode, step by step (GameNGen section
  5.2.2's ablation: without context noise the quality collapses after a few steps).
"""

from __future__ import annotations

import numpy as np
import torch

from wmkit.diffusion.common import Recipe


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame of (..., C, H, W) frames -> (...,)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).pow(2).flatten(-3).mean(-1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of (..., C, H, W) frames in [-1, 1]; one value per frame. Identical frames give +inf."""
    return 10 * torch.log10(4.0 / mse(a, b))


def psnr_of_mse(m: torch.Tensor) -> torch.Tensor:
    """PSNR of a mean squared error (frames in [-1, 1]). Averages are taken over MSE, then converted: a mean of
    per-frame PSNR is +inf as soon as one predicted frame is exact (the copy baseline on a still scene)."""
    return 10 * torch.log10(4.0 / m)


def changed_mask(last: torch.Tensor, real: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """(..., C, H, W) frames in [-1, 1] -> (..., 1, H, W) float mask of pixels whose mean |real - last| over the
    channels exceeds ``threshold``."""
    if last.shape != real.shape:
        raise ValueError(f"shapes differ, {tuple(last.shape)} vs {tuple(real.shape)}")
    return ((real - last).abs().mean(-3, keepdim=True) > threshold).float()


def masked_psnr(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """PSNR of the squared error summed over ``mask`` (broadcast over channels) and the given dims: one MSE over all
    masked pixels, then dB. +inf-free: returns nan where no pixel is masked."""
    se = (pred.float() - real.float()).pow(2) * mask  # (..., C, H, W)
    count = mask.expand_as(se).sum(dims)
    m = se.sum(dims) / count.clamp(min=1)
    return torch.where(count > 0, psnr_of_mse(m), torch.full_like(m, float("nan")))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) in [-1, 1] -> (..., H, W, C) uint8."""
    y = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.movedim(-3, -1).cpu().numpy()


@torch.no_grad()
def next_frame_quality(model: Recipe, windows: dict[str, torch.Tensor], steps_list=(1, 3, 10), seed: int = 0,
                       batch: int = 64, max_windows: int | None = None, change_threshold: float = 0.1) -> dict:
    """PSNR (dB) of the mean squared error of one sampled next frame over held-out windows, per step count; plus
    the copy-the-last-context-frame baseline measured the same way; and both over the *changing pixels* only
    (``changed_psnr``: where the real next frame differs from the last context frame by more than
    ``change_threshold``), where copying is wrong by construction."""
    K = model.net.context
    frames, actions = windows["frames"], windows["actions"]
    if max_windows is not None:
        frames, actions = frames[:max_windows], actions[:max_windows]
    last, real = frames[:, K - 1], frames[:, K]
    mask = changed_mask(last, real, change_threshold)  # (N, 1, H, W): where copying the last frame is wrong
    dims = (0, 1, 2, 3)
    out = {"steps": list(steps_list), "psnr": [], "changed_psnr": [],
           "copy_last_psnr": float(psnr_of_mse(mse(last, real).mean())),
           "copy_last_changed_psnr": float(masked_psnr(last, real, mask, dims)),
           "changed_fraction": float(mask.mean()), "windows": int(frames.shape[0])}
    for steps in steps_list:
        g = torch.Generator(device=frames.device).manual_seed(seed)
        xs = []
        for i in range(0, frames.shape[0], batch):
            f, a = frames[i:i + batch], actions[i:i + batch]
            xs.append(model.sample(f[:, :K], a[:, :K], steps, generator=g))
        x = torch.cat(xs)  # (N, C, H, W)
        out["psnr"].append(float(psnr_of_mse(mse(x, real).mean())))
        out["changed_psnr"].append(float(masked_psnr(x, real, mask, dims)))
    return out


@torch.no_grad()
def rollout(model: Recipe, context: torch.Tensor, actions: torch.Tensor, steps: int, seed: int = 0,
            ctx_level: float | None = None) -> torch.Tensor:
    """Autoregressive rollout. context (B, K, C, H, W) real frames; actions (B, K + T - 1[, A]) with
    actions[:, t] taken after frame t. Returns the T generated frames (B, T, C, H, W)."""
    K = model.net.context
    T = actions.shape[1] - K + 1
    if context.shape[1] != K or T < 1:
        raise ValueError(f"rollout: need {K} context frames and at least {K} actions, got context "
                         f"{tuple(context.shape)} and actions {tuple(actions.shape)}")
    g = torch.Generator(device=context.device).manual_seed(seed)
    frames = list(context.unbind(1))
    out = []
    for t in range(T):
        x = model.sample(torch.stack(frames[-K:], 1), actions[:, t:t + K], steps, generator=g, ctx_level=ctx_level)
        frames.append(x)
        out.append(x)
    return torch.stack(out, 1)


@torch.no_grad()
def drift(model: Recipe, frames: torch.Tensor, actions: torch.Tensor, steps: int = 3, seed: int = 0,
          ctx_level: float | None = None) -> dict:
    """Roll out from the first K real frames of (B, L, C, H, W) episodes with their real actions; PSNR per step.

    Returns {"psnr": (L-K,) PSNR of the MSE averaged over B, "copy_last": the same for repeating the last real
    context frame, "mse": (B, L-K) the MSE of each episode and step (for per-episode errors and paired
    comparisons), "generated": (B, L-K, C, H, W)}."""
    K = model.net.context
    if frames.shape[1] <= K:
        raise ValueError(f"drift: episodes of {frames.shape[1]} frames leave nothing to predict after {K} context")
    gen = rollout(model, frames[:, :K], actions[:, : frames.shape[1] - 1], steps, seed, ctx_level)
    real = frames[:, K:]
    still = frames[:, K - 1:K].expand_as(real)
    err = mse(gen, real)                                                      # (B, L-K)
    return {"psnr": psnr_of_mse(err.mean(0)).cpu().numpy(),
            "copy_last": psnr_of_mse(mse(still, real).mean(0)).cpu().numpy(),
            "mse": err.cpu().numpy(), "generated": gen}
