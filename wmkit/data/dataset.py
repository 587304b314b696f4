"""Fixed-length training windows over clips, resized, with a deterministic train/held-out split by episode.

Every stage-3/4 model trains on windows of ``context`` frames followed by ``future`` frames (Genie's
dynamics model and DIAMOND's denoiser condition on the past and predict the next frame(s); V-JEPA masks a
spatio-temporal block of a clip). :class:`ClipDataset` cuts every clip into all windows of ``context +
future`` frames (``stride`` apart; windows never cross a clip boundary), resizes the frames once, and
returns float tensors per item.

The split is by *episode*, never by window: overlapping windows of one episode in both splits would
let a model be scored on frames it trained on. :func:`split_episodes` orders episodes by a hash of
``(seed, episode id)`` and holds out the first ``round(fraction * n)`` (at least one when fraction > 0
and there are two or more episodes), so the split does not depend on the order clips were given in.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from wmkit.data.clip import Clip

SPLITS = ("train", "heldout", "all")


def split_episodes(episodes: Sequence[str], heldout_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic (train, heldout) lists of episode ids; see the module docstring."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    unique = sorted(set(map(str, episodes)))
    key = {e: hashlib.blake2b(f"{seed}:{e}".encode(), digest_size=8).hexdigest() for e in unique}
    order = sorted(unique, key=lambda e: (key[e], e))
    n_held = round(heldout_fraction * len(unique))
    if heldout_fraction > 0 and len(unique) >= 2:
        n_held = min(max(n_held, 1), len(unique) - 1)
    held = sorted(order[:n_held])
    return [e for e in unique if e not in set(held)], held


def resize_frames(frames: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8; area-averaging (antialiased bilinear) when shrinking."""
    if size is None:
        return frames
    h, w = (size, size) if isinstance(size, int) else size
    if frames.shape[1:3] == (h, w):
        return frames
    x = torch.from_numpy(np.array(frames, copy=True)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    shrink = h <= frames.shape[1] and w <= frames.shape[2]
    y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=shrink, align_corners=False)  # (T, 3, h, w)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (T, h, w, 3)


def to_float(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)


class ClipDataset(Dataset):
    """All windows of ``context + future`` frames of the clips of one split.

    Item (a dict of tensors)::

        frames   float32 (K+F, 3, size, size) in [0, 1]
        actions  int64 (K+F,) | float32 (K+F, A)     (actions[t] follows frames[t])
        reward   float32 (K+F,)   (zeros where the clip has none; see ``has_reward``)
        done     bool (K+F,)
        episode  str,  start: int (index of the window's first frame in its clip), clip: int

    ``size=None`` keeps the clips' resolution (then all clips must share it). ``frame_skip`` > 1 takes
    every k-th frame inside a window (discrete actions of skipped frames are not merged: use
    ``Clip.subsample`` for continuous ones). All clips must share one action space.
    """

    def __init__(self, clips: Sequence[Clip], context: int, future: int = 1, size: int | tuple[int, int] | None = 64,
                 split: str = "train", heldout_fraction: float = 0.2, seed: int = 0, stride: int = 1,
                 frame_skip: int = 1):
        if context < 0 or future < 0 or context + future < 1:
            raise ValueError(f"need context >= 0, future >= 0 and context + future >= 1, got {context}, {future}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if stride < 1 or frame_skip < 1:
            raise ValueError(f"stride and frame_skip must be >= 1, got {stride}, {frame_skip}")
        clips = list(clips)
        if not clips:
            raise ValueError("ClipDataset needs at least one clip")
        for i, c in enumerate(clips):
            if not isinstance(c, Clip):
                raise TypeError(f"clips[{i}] is a {type(c).__name__}, expected wmkit.data.Clip")
            if c.action_space != clips[0].action_space:
                raise ValueError(f"clips[{i}] ({c.meta.get('source')}) has action space {c.action_space}, "
                                 f"clips[0] has {clips[0].action_space}; one dataset takes one action space")
        self.context, self.future, self.window = context, future, context + future
        self.frame_skip, self.stride, self.split = frame_skip, stride, split
        self.action_space = clips[0].action_space
        self.train_episodes, self.heldout_episodes = split_episodes([c.episode for c in clips], heldout_fraction, seed)
        keep = set(self.train_episodes if split == "train" else self.heldout_episodes if split == "heldout"
                   else self.train_episodes + self.heldout_episodes)
        self.clips = [c for c in clips if c.episode in keep]
        self.frames = [resize_frames(c.frames, size) for c in self.clips]  # uint8, resized once
        shapes = {f.shape[1:] for f in self.frames}
        if len(shapes) > 1:
            raise ValueError(f"clips have different frame sizes {sorted(shapes)}; pass size= to resize them")
        span = (self.window - 1) * frame_skip + 1  # frames one window covers in its clip
        self.index = [(k, s) for k, c in enumerate(self.clips) for s in range(0, len(c) - span + 1, stride)]
        self.skipped_short = [c.meta.get("source", c.episode) for c in self.clips if len(c) < span]
        if self.skipped_short:
            warnings.warn(f"ClipDataset: {len(self.skipped_short)} clip(s) shorter than one window of {span} frames "
                          f"give no window: {self.skipped_short[:5]}", stacklevel=2)
        self.has_reward = all(c.reward is not None for c in self.clips)
        if not self.index:
            raise ValueError(f"no window of {self.window} frames (frame_skip {frame_skip}) fits in the {split!r} "
                             f"split: {len(self.clips)} clips of lengths {[len(c) for c in self.clips][:10]}")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        k, s = self.index[i]
        c = self.clips[k]
        t = np.arange(s, s + self.window * self.frame_skip, self.frame_skip)  # (K+F,)
        # uint8 -> float in NumPy: torch's thread pool makes this 50x slower on a busy 2-core machine
        frames = torch.from_numpy(to_float(self.frames[k][t]))  # (K+F, 3, h, w)
        reward = c.reward[t] if c.reward is not None else np.zeros(len(t), np.float32)
        done = c.done[t] if c.done is not None else np.zeros(len(t), bool)
        return {"frames": frames, "actions": torch.from_numpy(c.actions[t]), "reward": torch.from_numpy(reward),
                "done": torch.from_numpy(done), "episode": c.episode, "start": int(s), "clip": int(k)}

    def episodes(self) -> list[str]:
        return sorted({c.episode for c in self.clips})

    def __repr__(self) -> str:
        return (f"ClipDataset(split={self.split!r}, clips={len(self.clips)}, episodes={len(self.episodes())}, "
                f"windows={len(self)}, window={self.context}+{self.future}, frame={tuple(self.frames[0].shape[1:3])}, "
                f"actions={self.action_space.kind})")
