"""V-JEPA: predict the *features* of masked space-time regions, not their pixels.

Bardes et al. 2024, "Revisiting Feature Prediction for Learning Visual Representations from Video" (V-JEPA),
section 3 (eq. 1-2) and appendix B; official code ``facebookresearch/jepa`` (``app/vjepa/train.py``,
``src/models/vision_transformer.py``, ``src/models/predictor.py``, ``configs/pretrain/vitl16.yaml``).

    minimise  || P_phi( E_theta(x_ctx), Delta_y ) - sg( LN( Ebar_theta(x) ) )_y ||_1          (eq. 1, L1)
    Ebar_theta <- m Ebar_theta + (1 - m) E_theta,   m: 0.998 -> 1.0 linearly                   (EMA target)

* E_theta: a ViT over tubelets of ``tubelet`` frames x ``patch`` x ``patch`` pixels (V-JEPA: 2 x 16 x 16), fixed
  sine-cosine positions; it sees only the context tokens (the complement of the masks in masks.py).
* Ebar_theta: the target encoder, an exponential moving average of E_theta; it sees the whole clip, its outputs
  are layer-normalised over the feature dimension, and no gradient flows through it (``torch.no_grad``).
* P_phi: a narrower ViT (V-JEPA: 12 blocks of width 384) that takes the context features (linearly mapped to its
  width) plus one learnable, zero-initialised mask token per mask generator at every target position (with that
  position's sine-cosine embedding), and maps its outputs back to the encoder width.
* The loss is the mean over target tokens and features of |z - h|^p / p with p = ``loss_exp`` = 1 (L1), averaged
  over the mask generators; only masked (target) positions enter it.

Collapse monitoring (:func:`collapse_stats`): the feature standard deviation over a batch and the effective rank
(RankMe, Garrido et al. 2023: exp of the entropy of the normalised singular values) of pooled features.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from wmkit.nn import TransformerBlock, patchify_tubelets, sincos_1d, sincos_2d

__all__ = ["VJEPAConfig", "sincos_3d", "apply_masks", "VideoViT", "Predictor", "VJEPA", "momentum_at", "lr_at",
           "ema_update", "collapse_stats", "effective_rank"]


@dataclass
class VJEPAConfig:
    """Sizes of a V-JEPA model (official ViT-L/16: 16 frames at 224, patch 16, tubelet 2, width 1024, 24 blocks;
    predictor 12 blocks of width 384)."""

    frames: int = 16
    """frames per clip (official: 16)"""
    size: int = 224
    """frame height = width in pixels (official: 224)"""
    channels: int = 3
    """colour channels"""
    patch: int = 16
    """spatial patch size in pixels (official: 16)"""
    tubelet: int = 2
    """frames per tubelet token (official: 2)"""
    dim: int = 1024
    """encoder width (ViT-L: 1024)"""
    depth: int = 24
    """encoder blocks (ViT-L: 24)"""
    heads: int = 16
    """encoder attention heads"""
    pred_dim: int = 384
    """predictor width (official: 384)"""
    pred_depth: int = 12
    """predictor blocks (official: 12)"""
    pred_heads: int = 12
    """predictor attention heads"""
    n_mask_tokens: int = 2
    """learnable mask tokens, one per mask generator (official: 2, zero-initialised)"""
    loss_exp: float = 1.0
    """p of the loss |z - h|^p / p (official: 1.0, i.e. L1)"""

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T / tubelet, H / patch, W / patch)."""
        return (self.frames // self.tubelet, self.size // self.patch, self.size // self.patch)

    def __post_init__(self):
        if self.frames % self.tubelet:
            raise ValueError(f"VJEPAConfig.frames={self.frames} is not divisible by tubelet={self.tubelet}")
        if self.size % self.patch:
            raise ValueError(f"VJEPAConfig.size={self.size} is not divisible by patch={self.patch}")


def sincos_3d(t: int, h: int, w: int, dim: int) -> torch.Tensor:
    """(t*h*w, dim) fixed table: a quarter of the channels (even) encodes time, the rest (row, column) space.

    The official ``get_3d_sincos_pos_embed(uniform_power=True)`` gives time, rows and columns a third each; a
    quarter lets us reuse :func:`wmkit.nn.sincos_2d` unchanged (see the differences table in the book).
    """
    dt = 2 * (dim // 8)
    ds = dim - dt
    if ds % 4:
        raise ValueError(f"sincos_3d: dim={dim} must be divisible by 8")
    time = sincos_1d(t, dt)  # (t, dt)
    space = sincos_2d(h, w, ds)  # (h*w, ds)
    return torch.cat([time[:, None, :].expand(t, h * w, dt), space[None].expand(t, h * w, ds)], -1).reshape(-1, dim)


def apply_masks(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Keep the tokens ``idx`` (B, K) of ``x`` (B, N, D) -> (B, K, D)."""
    if idx.ndim != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"apply_masks: idx must be (B={x.shape[0]}, K), got {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= x.shape[1]):
        raise ValueError(f"apply_masks: indices must lie in [0, {x.shape[1]}), got [{int(idx.min())}, "
                         f"{int(idx.max())}]")
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))  # (B, K, D)


class VideoViT(nn.Module):
    """Tubelet ViT: (B, T, C, H, W) -> (B, N, D) with N = T/t * H/p * W/p, or only the tokens ``keep`` (B, K)."""

    def __init__(self, cfg: VJEPAConfig):
        super().__init__()
        self.cfg = cfg
        # A Conv3d with kernel = stride = (t, p, p) in the official code; the same map as a Linear on tubelets.
        self.patch_embed = nn.Linear(cfg.channels * cfg.tubelet * cfg.patch ** 2, cfg.dim)
        self.register_buffer("pos", sincos_3d(*cfg.grid, cfg.dim), persistent=False)  # (N, D)
        self.blocks = nn.ModuleList(TransformerBlock(cfg.dim, cfg.heads, qkv_bias=True) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        c = self.cfg
        if video.ndim != 5 or tuple(video.shape[2:]) != (c.channels, c.size, c.size) or video.shape[1] > c.frames:
            raise ValueError(f"VideoViT: expected video (B, T <= {c.frames}, {c.channels}, {c.size}, {c.size}), "
                             f"got {tuple(video.shape)}")
        tokens = patchify_tubelets(video, c.patch, c.tubelet)  # (B, N, C*t*p*p), N = T/t * H/p * W/p
        x = self.patch_embed(tokens) + self.pos[:tokens.shape[1]]  # (B, N, D)
        if keep is not None:
            x = apply_masks(x, keep)  # (B, K, D): the encoder only sees the context
        for blk in self.blocks:
            x = blk(x)  # (B, K, D)
        return self.norm(x)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Each frame on its own, repeated ``tubelet`` times (as V-JEPA 2-AC does): (B, T, C, H, W) -> (B, T, N, D)."""
        B, T = frames.shape[:2]
        clips = repeat(frames, "b t c h w -> (b t) k c h w", k=self.cfg.tubelet)  # (B*T, t, C, H, W)
        return rearrange(self(clips), "(b t) n d -> b t n d", b=B)  # (B, T, N, D)


class Predictor(nn.Module):
    """Narrow ViT that predicts target-position features from context features (official ``VisionTransformer
    Predictor`` with ``use_mask_tokens=True, zero_init_mask_tokens=True``)."""

    def __init__(self, cfg: VJEPAConfig):
        super().__init__()
        self.embed = nn.Linear(cfg.dim, cfg.pred_dim)
        self.mask_tokens = nn.Parameter(torch.zeros(cfg.n_mask_tokens, 1, 1, cfg.pred_dim))
        self.register_buffer("pos", sincos_3d(*cfg.grid, cfg.pred_dim), persistent=False)  # (N, Dp)
        self.blocks = nn.ModuleList(TransformerBlock(cfg.pred_dim, cfg.pred_heads, qkv_bias=True)
                                    for _ in range(cfg.pred_depth))
        self.norm = nn.LayerNorm(cfg.pred_dim)
        self.proj = nn.Linear(cfg.pred_dim, cfg.dim)

    def forward(self, ctx: torch.Tensor, keep: torch.Tensor, pred: torch.Tensor, mask_index: int = 0) -> torch.Tensor:
        B, K, _ = ctx.shape
        if mask_index >= self.mask_tokens.shape[0]:
            raise ValueError(f"Predictor: mask_index={mask_index} but only {self.mask_tokens.shape[0]} mask tokens")
        pos = self.pos[None].expand(B, -1, -1)  # (B, N, Dp)
        x = self.embed(ctx) + apply_masks(pos, keep)  # (B, K, Dp)
        m = self.mask_tokens[mask_index].expand(B, pred.shape[1], -1) + apply_masks(pos, pred)  # (B, M, Dp)
        x = torch.cat([x, m], dim=1)  # (B, K + M, Dp)
        for blk in self.blocks:
            x = blk(x)
        return self.proj(self.norm(x[:, K:]))  # (B, M, D): predictions at the target positions only


class VJEPA(nn.Module):
    """Context encoder + EMA target encoder + predictor, with the loss of eq. 1."""

    def __init__(self, cfg: VJEPAConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VideoViT(cfg)
        self.predictor = Predictor(cfg)
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)  # updated only by ema_update

    def targets(self, video: torch.Tensor) -> torch.Tensor:
        """sg(LN(Ebar(x))): (B, N, D), layer-normalised over features, no graph."""
        with torch.no_grad():
            h = self.target_encoder(video)  # (B, N, D)
            return F.layer_norm(h, (h.shape[-1],))

    def loss(self, video: torch.Tensor, masks: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``masks``: one (context idx (B, K), target idx (B, M)) pair per mask generator. Returns ``loss`` and
        the predicted / target tokens of the first pair (for collapse monitoring)."""
        if not masks:
            raise ValueError("VJEPA.loss: masks is empty; pass one (context, target) pair per mask generator")
        h = self.targets(video)  # (B, N, D)
        p = self.cfg.loss_exp
        total, out = 0.0, {}
        for i, (keep, pred) in enumerate(masks):
            z = self.encoder(video, keep)  # (B, K, D)
            zp = self.predictor(z, keep, pred, mask_index=i)  # (B, M, D)
            # [eq:loss]
            hy = apply_masks(h, pred)  # (B, M, D): targets at the masked positions only
            total = total + (zp - hy).abs().pow(p).mean() / p
            # [/eq:loss]
            if i == 0:
                out.update(context=z, prediction=zp, target=hy)
        out["loss"] = total / len(masks)
        return out

    def forward(self, video: torch.Tensor, masks: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return self.loss(video, masks)  # so that DDP / FSDP2 wrappers see the training computation

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        ema_update(self.target_encoder, self.encoder, momentum)


# [eq:ema]
@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- m * target + (1 - m) * online, parameter by parameter (official: torch._foreach_mul_/add_)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update: momentum must lie in [0, 1], got {momentum}")
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.mul_(momentum).add_(po.detach(), alpha=1.0 - momentum)


def momentum_at(step: int, total_steps: int, ema: tuple[float, float] = (0.998, 1.0), ipe_scale: float = 1.25) -> float:
    """Official schedule: m_i = m0 + i (m1 - m0) / (total * ipe_scale); with ipe_scale 1.25 m never reaches m1."""
    if total_steps < 1:
        raise ValueError(f"momentum_at: total_steps must be >= 1, got {total_steps}")
    m0, m1 = ema
    return m0 + step * (m1 - m0) / (total_steps * ipe_scale)
# [/eq:ema]


def lr_at(step: int, total_steps: int, warmup: int, lr: float, start_lr: float, final_lr: float,
          ipe_scale: float = 1.25) -> float:
    """Official WarmupCosineSchedule: linear start_lr -> lr over ``warmup`` steps, then cosine to final_lr over
    total * ipe_scale - warmup steps (official ViT-L: 2e-4 -> 6.25e-4 -> 1e-6, 40 of 300 epochs warm-up)."""
    if step < warmup:
        return start_lr + (step + 1) / warmup * (lr - start_lr)
    t_max = total_steps * ipe_scale - warmup
    progress = (step - warmup) / max(1.0, t_max)
    return max(final_lr, final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def effective_rank(z: torch.Tensor, eps: float = 1e-12) -> float:
    """RankMe (Garrido et al. 2023): exp(H(p)), p = singular values / their sum, of a (B, D) feature matrix.

    D for isotropic features (at most min(B, D)); 1 when every sample lies on one direction (collapse)."""
    if z.ndim != 2:
        raise ValueError(f"effective_rank: expected (B, D), got {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.detach().float())  # (min(B, D),)
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_stats(tokens: torch.Tensor, max_rows: int = 2048) -> dict[str, float]:
    """Monitor features (..., D): the mean over features of the std over all tokens, and the effective rank.

    Every token of every sample is one row (at most ``max_rows``, evenly strided); a collapsed encoder that maps
    everything to one vector gives std -> 0 and effective rank -> 1 (or 0 when the rows are exactly equal)."""
    z = tokens.detach().float().reshape(-1, tokens.shape[-1])  # (rows, D)
    if z.shape[0] > max_rows:
        z = z[:: z.shape[0] // max_rows][:max_rows]
    return {"feature_std": float(z.std(0).mean()), "effective_rank": effective_rank(z - z.mean(0))}


def flatten_video(video: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B*T, C, H, W) (for image-wise baselines)."""
    return rearrange(video, "b t c h w -> (b t) c h w")
