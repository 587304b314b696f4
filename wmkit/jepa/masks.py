"""Multiblock 3-D "tube" masks of V-JEPA (Bardes et al. 2024, section 3.2 and appendix B; official code
``facebookresearch/jepa``: ``src/masks/multiblock3d.py`` and ``configs/pretrain/vitl16.yaml``).

A clip of T frames is cut into a grid of (T/tubelet) x (H/p) x (W/p) tubelet tokens. A *mask generator* removes
``num_blocks`` rectangular blocks from that grid; each block covers a fraction ``spatial_scale`` of the spatial
grid, has an aspect ratio drawn from ``aspect_ratio`` and (with ``temporal_scale = 1``) spans **all** time
steps, so it is a tube: the model cannot copy a masked patch from the neighbouring frame. The union of the
blocks is the prediction target; everything else is the context the encoder sees.

The official pretraining config uses two generators per clip:

* "short-range": 8 blocks at spatial scale 0.15 (they overlap, so ~70 % of the grid is masked),
* "long-range":  2 blocks at spatial scale 0.7,

both with aspect ratio in [0.75, 1.5] and temporal scale 1.0. Facts of the official sampler kept here:

1. the block *size* (t, h, w) is drawn once per batch and generator from a generator seeded by a step counter;
   the block *positions* are drawn independently for every sample;
2. h = round(sqrt(k * ar)), w = round(sqrt(k / ar)) with k = int(H * W * scale), each capped at the grid size;
3. a sample whose blocks cover the whole grid is redrawn (the context must not be empty);
4. the index lists of a batch are truncated to the shortest one so they stack into one tensor (some masked
   tokens of a sample with more masked tokens are then not predicted, and some context tokens are dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["MaskSpec", "VJEPA_MASKS", "sample_block_size", "sample_block", "MultiBlock3D", "mask_fraction"]


@dataclass(frozen=True)
class MaskSpec:
    """One mask generator of the official config (``mask:`` list in configs/pretrain/*.yaml)."""

    num_blocks: int
    spatial_scale: tuple[float, float]
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    max_temporal_keep: float = 1.0

    def __post_init__(self):
        if self.num_blocks < 1:
            raise ValueError(f"MaskSpec.num_blocks: expected >= 1, got {self.num_blocks}")
        for name in ("spatial_scale", "aspect_ratio", "temporal_scale"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi) or (name != "aspect_ratio" and hi > 1):
                raise ValueError(f"MaskSpec.{name}: expected 0 < lo <= hi (<= 1 for scales), got {(lo, hi)}")
        if not 0 < self.max_temporal_keep <= 1:
            raise ValueError(f"MaskSpec.max_temporal_keep: expected in (0, 1], got {self.max_temporal_keep}")


#: V-JEPA's pretraining masks (configs/pretrain/vitl16.yaml, vith16.yaml): 8 x 0.15 plus 2 x 0.7, full tubes.
VJEPA_MASKS = (MaskSpec(8, (0.15, 0.15)), MaskSpec(2, (0.7, 0.7)))


def sample_block_size(grid: tuple[int, int, int], spec: MaskSpec, g: torch.Generator) -> tuple[int, int, int]:
    """Draw (t, h, w) of a block on a (T', H', W') token grid: three uniform draws, as the official sampler."""
    T, H, W = grid
    lo, hi = spec.temporal_scale
    t = max(1, int(T * (lo + torch.rand(1, generator=g).item() * (hi - lo))))
    lo, hi = spec.spatial_scale
    keep = int(H * W * (lo + torch.rand(1, generator=g).item() * (hi - lo)))  # tokens per block
    lo, hi = spec.aspect_ratio
    ar = lo + torch.rand(1, generator=g).item() * (hi - lo)
    h = min(int(round(math.sqrt(keep * ar))), H)
    w = min(int(round(math.sqrt(keep / ar))), W)
    return t, h, w


def sample_block(grid: tuple[int, int, int], size: tuple[int, int, int], g: torch.Generator,
                 max_context_t: int | None = None) -> torch.Tensor:
    """One block at a uniform position: int32 (T', H', W'), 1 = context (kept), 0 = masked."""
    T, H, W = grid
    t, h, w = size
    top = int(torch.randint(0, H - h + 1, (1,), generator=g))
    left = int(torch.randint(0, W - w + 1, (1,), generator=g))
    start = int(torch.randint(0, T - t + 1, (1,), generator=g))
    keep = torch.ones(grid, dtype=torch.int32)  # (T', H', W')
    keep[start:start + t, top:top + h, left:left + w] = 0
    if max_context_t is not None and max_context_t < T:  # context only from the first frames
        keep[max_context_t:] = 0
    return keep


def mask_fraction(keep: torch.Tensor) -> float:
    """Fraction of tokens masked in a keep-map (1 = context)."""
    return float((keep == 0).float().mean())


class MultiBlock3D:
    """Samples (context, target) index tensors for a batch from one :class:`MaskSpec`.

    ``grid`` is the token grid (T / tubelet, H / patch, W / patch). Call ``gen(batch_size)`` ->
    ``(enc_idx (B, N_ctx), pred_idx (B, N_pred))``, both int64 indices into the flattened T'*H'*W' tokens
    (time-major, row-major, the order of :func:`wmkit.nn.patchify_tubelets`).
    """

    def __init__(self, grid: tuple[int, int, int], spec: MaskSpec, seed: int = 0):
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"MultiBlock3D.grid: expected (T', H', W') of positive ints, got {grid}")
        self.grid = tuple(int(v) for v in grid)
        self.spec = spec
        self.seed = seed
        self.step = -1  # the official collator's iteration counter seeds the block size of each batch
        self.max_context_t = max(1, int(self.grid[0] * spec.max_temporal_keep))
        self._pos = torch.Generator().manual_seed(seed + 1_000_003)  # positions: one stream for all samples

    def state_dict(self) -> dict:
        return {"step": self.step, "pos_rng": self._pos.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self._pos.set_state(state["pos_rng"])

    def sample_keep(self, size: tuple[int, int, int]) -> torch.Tensor:
        """Keep-map of one sample: the product of ``num_blocks`` blocks, redrawn while the context is empty."""
        for _ in range(1000):
            keep = torch.ones(self.grid, dtype=torch.int32)  # (T', H', W')
            for _ in range(self.spec.num_blocks):
                keep *= sample_block(self.grid, size, self._pos, self.max_context_t)
            if keep.any():
                return keep
        raise RuntimeError(f"MultiBlock3D: 1000 draws left no context on grid {self.grid} with {self.spec}")

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.step += 1
        g = torch.Generator().manual_seed(self.seed + self.step)
        size = sample_block_size(self.grid, self.spec, g)
        enc, pred = [], []
        for _ in range(batch_size):
            keep = self.sample_keep(size).flatten()  # (T'H'W',)
            enc.append(torch.nonzero(keep).squeeze(1))
            pred.append(torch.nonzero(keep == 0).squeeze(1))
        n_enc = min(len(e) for e in enc)
        n_pred = min(len(p) for p in pred)
        if n_pred == 0:
            raise RuntimeError(f"MultiBlock3D: a sample has no masked token on grid {self.grid} ({self.spec}); "
                               "the grid is too small for this spatial scale")
        return (torch.stack([e[:n_enc] for e in enc]), torch.stack([p[:n_pred] for p in pred]))
