"""Neural-network pieces shared by stages 3 and 4: attention, transformer blocks, patches, positions.

One copy of each, imported by the Genie tokenizer / latent-action model / dynamics (:mod:`wmkit.genie`), the
diffusion world models (:mod:`wmkit.diffusion`) and the V-JEPA encoders and predictors (:mod:`wmkit.jepa`).

* :class:`Attention` -- multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1):
  ``softmax(Q K^T / sqrt(d_head) + mask) V``. The fast path is ``F.scaled_dot_product_attention``; the plain
  math it computes is :func:`attention_reference`, right beside it, and a test checks they agree.
* :class:`TransformerBlock` -- the pre-norm block of GPT-2 / ViT: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``.
* :class:`STBlock` -- Genie's spatio-temporal block (Bruce et al. 2024, section 2.1 and figure 4): attention
  over the N tokens *within* each frame, then **causal** attention over the T frames *at each spatial
  position*, then one feed-forward layer (Genie keeps a single FFW after both attention layers). Its cost is
  O(T N^2 + N T^2) per layer instead of O((T N)^2) for full attention over all T*N tokens, which is what lets
  a video model grow its context.
* :func:`patchify` / :func:`unpatchify` -- frames <-> non-overlapping p x p patches (ViT, Dosovitskiy et al.
  2021, section 3.1); :func:`patchify_tubelets` -- t x p x p "tubelets" (ViViT / V-JEPA).
* :func:`sincos_1d` / :func:`sincos_2d` -- fixed sine-cosine position tables (Vaswani et al. 2017, section 3.5;
  the 2-D version of MAE, He et al. 2022: half the channels encode the row, half the column).
* :func:`block_causal_mask` -- the mask for full attention over T*N tokens that is causal in time only.

Every layer with weights is an ``nn.Linear`` (or a norm), so :func:`wmkit.precision.prepare_model` can swap
the linear layers for FP8 ones without touching this file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["RMSNorm", "MLP", "Attention", "attention_reference", "TransformerBlock", "STBlock",
           "patchify", "unpatchify", "patchify_tubelets", "sincos_1d", "sincos_2d", "block_causal_mask",
           "precise_batchnorm"]


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): ``x / sqrt(mean(x^2) + eps) * g``."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MLP(nn.Module):
    """The transformer's feed-forward layer: ``Linear(D, hD) -> GELU -> Linear(hD, D)``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


def _check_mask(mask: torch.Tensor | None, L: int) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor (True = may attend), got {mask.dtype}")
    if mask.shape[-2:] != (L, L):
        raise ValueError(f"mask: expected shape (..., {L}, {L}) for a sequence of {L} tokens, got "
                         f"{tuple(mask.shape)}")


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """The plain math of scaled dot-product attention; ``q, k, v``: (B, H, L, d) -> (B, H, L, d).

    ``mask`` is bool (L, L) or broadcastable to (B, H, L, L), True where query i may attend to key j;
    ``causal`` additionally forbids j > i.
    """
    L, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, H, L, L)
    allowed = torch.ones(L, L, dtype=torch.bool, device=q.device)
    if causal:
        allowed = torch.tril(allowed)
    if mask is not None:
        allowed = allowed & mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, H, L, d)


class Attention(nn.Module):
    """Multi-head self-attention over a sequence: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        #: use :func:`attention_reference` instead of the fused kernel (for teaching and tests)
        self.reference = False

    def forward(self, x: torch.Tensor, causal: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        _check_mask(mask, L)
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)  # (B, H, L, d)
        if self.reference:
            out = attention_reference(q, k, v, causal=causal, mask=mask)
        else:
            if causal and mask is not None:  # SDPA takes one or the other: fold causality into the mask
                mask = mask & torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device))
                causal = False
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, H, L, d)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))  # (B, L, D)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``; (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, causal: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal=causal, mask=mask)  # (B, L, D)
        return x + self.mlp(self.norm2(x))  # (B, L, D)


class STBlock(nn.Module):
    """Genie's spatio-temporal block on (B, T, N, D): spatial attention, temporal attention, one MLP.

    ``causal_time=True`` (the dynamics model and the latent-action model's decoder) lets frame t attend only
    to frames <= t, so nothing at frame t depends on a later frame; spatial attention never crosses frames.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, causal_time: bool = True,
                 qkv_bias: bool = False):
        super().__init__()
        self.causal_time = causal_time
        self.norm_s = nn.LayerNorm(dim)
        self.spatial = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm_t = nn.LayerNorm(dim)
        self.temporal = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"STBlock: expected (B, T, N, D), got shape {tuple(x.shape)}")
        B = x.shape[0]
        s = rearrange(self.norm_s(x), "b t n d -> (b t) n d")  # every frame is its own sequence of N tokens
        x = x + rearrange(self.spatial(s), "(b t) n d -> b t n d", b=B)  # (B, T, N, D)
        t = rearrange(self.norm_t(x), "b t n d -> (b n) t d")  # every position is a sequence of T frames
        x = x + rearrange(self.temporal(t, causal=self.causal_time), "(b n) t d -> b t n d", b=B)  # (B, T, N, D)
        return x + self.mlp(self.norm_m(x))  # (B, T, N, D)


def _check_divisible(H: int, W: int, patch: int) -> None:
    if patch < 1 or H % patch or W % patch:
        raise ValueError(f"patchify: frame size {H}x{W} is not divisible by patch={patch}")


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, N, C*p*p) or (B, C, H, W) -> (B, N, C*p*p), N = (H/p)(W/p), row-major.

    Inside a token the channels vary slowest: token[..., c*p*p + i*p + j] = pixel (c, row i, column j).
    """
    H, W = frames.shape[-2:]
    _check_divisible(H, W, patch)
    if frames.ndim == 5:
        return rearrange(frames, "b t c (h p1) (w p2) -> b t (h w) (c p1 p2)", p1=patch, p2=patch)
    if frames.ndim == 4:
        return rearrange(frames, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=patch, p2=patch)
    raise ValueError(f"patchify: expected (B, T, C, H, W) or (B, C, H, W), got shape {tuple(frames.shape)}")


def unpatchify(tokens: torch.Tensor, patch: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`patchify`; ``h, w`` are the frame's height and width in pixels."""
    _check_divisible(h, w, patch)
    n = (h // patch) * (w // patch)
    if tokens.shape[-2] != n or tokens.shape[-1] % (patch * patch):
        raise ValueError(f"unpatchify: expected (..., {n}, C*{patch}*{patch}) tokens for a {h}x{w} frame, got "
                         f"{tuple(tokens.shape)}")
    hp = h // patch
    if tokens.ndim == 4:
        return rearrange(tokens, "b t (h w) (c p1 p2) -> b t c (h p1) (w p2)", h=hp, p1=patch, p2=patch)
    if tokens.ndim == 3:
        return rearrange(tokens, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=hp, p1=patch, p2=patch)
    raise ValueError(f"unpatchify: expected (B, T, N, D) or (B, N, D), got shape {tuple(tokens.shape)}")


def patchify_tubelets(frames: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T/t * N, C*t*p*p): tubelets of ``tubelet`` frames x p x p pixels, time-major."""
    B, T, C, H, W = frames.shape
    _check_divisible(H, W, patch)
    if tubelet < 1 or T % tubelet:
        raise ValueError(f"patchify_tubelets: {T} frames are not divisible by tubelet={tubelet}")
    return rearrange(frames, "b (t pt) c (h p1) (w p2) -> b (t h w) (c pt p1 p2)", pt=tubelet, p1=patch, p2=patch)


def sincos_1d(n: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(n, dim) table: ``[sin(pos * w_0..w_{dim/2-1}), cos(pos * w_0..)]`` with ``w_i = base^(-2i/dim)``."""
    if dim % 2:
        raise ValueError(f"sincos_1d: dim={dim} must be even")
    pos = torch.arange(n, dtype=torch.float64)[:, None]  # (n, 1)
    w = base ** (-torch.arange(dim // 2, dtype=torch.float64) * 2 / dim)  # (dim/2,)
    return torch.cat([torch.sin(pos * w), torch.cos(pos * w)], dim=1).float()  # (n, dim)


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """(h*w, dim) table, row-major like :func:`patchify`: first half encodes the row, second the column."""
    if dim % 4:
        raise ValueError(f"sincos_2d: dim={dim} must be divisible by 4")
    rows = sincos_1d(h, dim // 2)  # (h, dim/2)
    cols = sincos_1d(w, dim // 2)  # (w, dim/2)
    return torch.cat([rows[:, None, :].expand(h, w, -1), cols[None, :, :].expand(h, w, -1)], dim=-1).reshape(h * w, dim)


def block_causal_mask(T: int, N: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool (T*N, T*N): token i (frame i // N) may attend to token j iff frame(j) <= frame(i)."""
    frame = torch.arange(T * N, device=device) // N  # (T*N,)
    return frame[:, None] >= frame[None, :]


@contextmanager
def precise_batchnorm(norms: list[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Re-estimate BatchNorm statistics at the current weights ("precise BatchNorm", Wu & Johnson 2021): inside the
    block every forward through ``norms`` (put in training mode) adds its batch mean and variance to an equal-weight
    average that replaces their running statistics, which lag behind weights that were still moving during training.
    Their momentum is restored on exit; the caller sets the modes it wants afterwards."""
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the forwards inside the block
        m.train()
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
