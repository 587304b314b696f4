"""Driving prediction: condition on past keyframes + ego motion, roll out 3 seconds (6 keyframes at 2 Hz).

The protocol of the driving world models that predict camera futures from nuScenes (keyframes at 2 Hz, a few past
frames, the ego motion as the action, 3 s = 6 keyframes ahead, scored against the recorded future): the same
denoiser as the game models, its actions replaced by continuous ego motion (a linear embedding instead of a table,
:class:`~wmkit.diffusion.unet.Denoiser`'s ``action_dim``), trained on the keyframe clips of the train episodes and
rolled out autoregressively on every window of K + 6 keyframes of the held-out episodes with their *recorded* ego
motion. Scores, per keyframe ahead (0.5 s ... 3 s):

* PSNR of the mean squared error over all windows, against the real keyframe;
* the same for "copy the last context keyframe" (the baseline a model must beat to have learned motion);
* PSNR over the *changing pixels* only -- those where the real keyframe differs from the last context keyframe by
  more than ``change_threshold`` (mean over channels, frames in [-1, 1]) -- where copying the past is wrong by
  construction, so it shows what the model gets right about motion even when whole-frame PSNR does not.

Data: the CarRacing stand-in (``wmkit.data.driving_clips(keyframe_hz=2.0)``: 50 Hz drives subsampled every 25th
frame, ego motion = mean speed, steering and yaw rate between keyframes) or nuScenes-format scenes
(``wmkit.data.load_nuscenes``: CAM_FRONT keyframes with speed and yaw rate from consecutive ego poses).
"""

from __future__ import annotations

import numpy as np
import torch

from wmkit.diffusion.common import Recipe
from wmkit.diffusion.evaluate import changed_mask, masked_psnr, mse, psnr_of_mse, rollout


def keyframe_windows(clips, context: int, horizon: int, size: int | None) -> dict[str, torch.Tensor]:
    """Every window of K + horizon keyframes of ``clips``: frames (N, K+h, 3, S, S) in [-1, 1], actions (N, K+h, A)."""
    from wmkit.data import ClipDataset

    ds = ClipDataset(clips, context=context, future=horizon, size=size, split="all")
    items = [ds[i] for i in range(len(ds))]
    return {"frames": torch.stack([it["frames"] for it in items]) * 2 - 1,
            "actions": torch.stack([it["actions"] for it in items]).float()}


def window_gain(pred: torch.Tensor, base: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window PSNR gain of ``pred`` over ``base``, both scored against ``real`` (N, h, C, H, W) frames in [-1, 1]:
    gain_n,k = 10 log10(MSE(base, real) / MSE(pred, real)) dB for window n at keyframe k. Returns its mean and
    standard error over the N windows, each (h,). Windows of one drive overlap, so they are not independent: the
    s.e. is a lower bound on the spread a new set of drives would show."""
    if not (pred.shape == base.shape == real.shape) or pred.dim() != 5:
        raise ValueError(f"window_gain: expected three (N, h, C, H, W) tensors of one shape, got "
                         f"{tuple(pred.shape)}, {tuple(base.shape)}, {tuple(real.shape)}")
    if pred.shape[0] < 2:
        raise ValueError("window_gain: needs at least 2 windows for a standard error")
    tiny = 1e-12  # an exact frame would give an infinite gain
    gain = 10 * torch.log10((mse(base, real) + tiny) / (mse(pred, real) + tiny))  # (N, h)
    return gain.mean(0), gain.std(0) / gain.shape[0] ** 0.5


# [eq:driving_eval]
@torch.no_grad()
def rollout_keyframes(model: Recipe, windows: dict[str, torch.Tensor], horizon: int = 6, steps: int = 3,
                      seed: int = 0, change_threshold: float = 0.1, batch: int = 64, hz: float = 2.0) -> dict:
    """Roll out ``horizon`` keyframes from the first K real ones with the recorded ego motion; PSNR per keyframe."""
    K = model.net.context
    frames, actions = windows["frames"], windows["actions"]
    if frames.shape[1] != K + horizon:
        raise ValueError(f"windows: expected {K} + {horizon} keyframes, got {frames.shape[1]}")
    gen = torch.cat([rollout(model, frames[i:i + batch, :K], actions[i:i + batch, :K + horizon - 1], steps,
                             seed + i) for i in range(0, frames.shape[0], batch)])  # (N, h, 3, S, S)
    real = frames[:, K:]  # (N, h, 3, S, S)
    last = frames[:, K - 1:K].expand_as(real)  # copy the last context keyframe
    mask = changed_mask(last, real, change_threshold)  # (N, h, 1, S, S)
    dims = (0, 2, 3, 4)  # pool windows and pixels, keep the keyframe axis
    return {"seconds_ahead": [(k + 1) / hz for k in range(horizon)],
            "psnr": psnr_of_mse(mse(gen, real).mean(0)).tolist(),
            "copy_last_psnr": psnr_of_mse(mse(last, real).mean(0)).tolist(),
            "changed_psnr": masked_psnr(gen, real, mask, dims).tolist(),
            "copy_last_changed_psnr": masked_psnr(last, real, mask, dims).tolist(),
            "changed_fraction": mask.mean(dims).tolist(),
            **dict(zip(("gain_over_copy", "gain_over_copy_sem"), (v.tolist() for v in window_gain(gen, last, real)))),
            "windows": int(frames.shape[0]), "generated": gen}
# [/eq:driving_eval]


def driving_experiment(clips, cfg, horizon: int = 6, steps: int = 3, seed: int = 0, max_windows: int | None = None,
                       progress: bool = False) -> dict:
    """Train ``cfg`` (a DiffusionConfig) on the train episodes of 2 Hz keyframe ``clips``, roll out ``horizon``
    keyframes on every window of the held-out episodes. Returns the training result and :func:`rollout_keyframes`."""
    from wmkit.data import split_episodes
    from wmkit.diffusion.train import train

    clips = list(clips)
    if not clips or clips[0].action_space.kind != "continuous":
        raise ValueError("driving_experiment: needs keyframe clips with continuous ego-motion actions")
    fps = {c.fps for c in clips}
    if fps != {2.0}:
        raise ValueError(f"driving_experiment: expected 2 Hz keyframe clips, got fps {sorted(fps)} "
                         "(wmkit.data.driving_clips(keyframe_hz=2.0) or load_nuscenes)")
    result = train(cfg, clips=clips, progress=progress)
    _, held = split_episodes([c.episode for c in clips], 0.2, cfg.data_seed)  # the split train() used
    held_clips = [c for c in clips if c.episode in set(held)]
    windows = keyframe_windows(held_clips, cfg.context, horizon, cfg.size)
    if max_windows is not None:
        idx = np.linspace(0, windows["frames"].shape[0] - 1, min(max_windows, windows["frames"].shape[0]))
        windows = {k: v[np.round(idx).astype(int)] for k, v in windows.items()}
    return {"train": result, "eval": rollout_keyframes(result["model"], windows, horizon, steps, seed),
            "heldout_episodes": held, "windows": windows}
