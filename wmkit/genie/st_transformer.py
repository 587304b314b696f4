"""Genie's spatio-temporal (ST) transformer, and what it saves over full attention.

Bruce et al. 2024, "Genie: Generative Interactive Environments" (arXiv:2402.15391), section 2.1 and figure 4:
every component of Genie (video tokenizer, latent action model, dynamics model) is a stack of ST blocks. A block
attends over the N tokens *within* each frame (spatial), then over the T frames *at each spatial position*
(temporal, causal: frame t sees frames <= t), then applies one feed-forward layer. Self-attention costs
``O(T N^2 + N T^2)`` per layer instead of ``O((T N)^2)`` for full attention over the T*N tokens of a clip, so
the compute of a layer grows linearly with the number of frames T while N dominates (N >> T).

The block itself is :class:`wmkit.nn.STBlock` (shared with the other stages). This module wraps it into a model
with input/output projections and fixed sine-cosine positions (2-D over the patch grid, 1-D over time, added);
:class:`FullTransformer` is the same model with full block-causal attention over all T*N tokens, used only to
*measure* the difference (:func:`attention_cost`: FLOPs by ``torch.utils.flop_counter`` and the bytes autograd
saves for the backward pass, counted on the ``meta`` device so that clips far beyond this machine's memory can
be measured without allocating them).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from wmkit.nn import Attention, STBlock, TransformerBlock, block_causal_mask, sincos_1d, sincos_2d

__all__ = ["STTransformer", "FullTransformer", "attention_cost"]


class STTransformer(nn.Module):
    """A stack of ST blocks on (B, T, N, D) with optional in/out projections.

    Args:
        dim: model width D.
        depth: number of ST blocks.
        heads: attention heads (dim must be divisible by heads).
        grid: (h, w) of the token grid, N = h*w; sets the 2-D position table (None: no spatial positions).
        max_frames: length of the temporal position table; a clip longer than this raises.
        in_dim / out_dim: if given, a Linear maps in_dim -> D at the input / D -> out_dim at the output.
        causal_time: temporal attention causal (frame t sees frames <= t). Genie's dynamics and LAM use True.
    """

    def __init__(self, dim: int, depth: int, heads: int, grid: tuple[int, int] | None = None,
                 max_frames: int = 64, in_dim: int | None = None, out_dim: int | None = None,
                 mlp_ratio: float = 4.0, causal_time: bool = True):
        super().__init__()
        self.dim, self.max_frames, self.grid = dim, max_frames, grid
        self.inp = nn.Linear(in_dim, dim) if in_dim is not None else nn.Identity()
        self.blocks = nn.ModuleList([STBlock(dim, heads, mlp_ratio, causal_time=causal_time) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim) if out_dim is not None else nn.Identity()
        self.register_buffer("pos_t", sincos_1d(max_frames, dim), persistent=False)  # (T_max, D)
        if grid is not None:
            self.register_buffer("pos_s", sincos_2d(grid[0], grid[1], dim), persistent=False)  # (N, D)
        else:
            self.pos_s = None

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, N, D) + temporal table (T, 1, D) + spatial table (1, N, D)."""
        B, T, N, D = x.shape
        if T > self.max_frames:
            raise ValueError(f"clip of T={T} frames is longer than max_frames={self.max_frames} the model was built "
                             f"for (the temporal position table)")
        x = x + self.pos_t[:T, None, :].to(x.dtype)  # (B, T, N, D)
        if self.pos_s is not None:
            if N != self.pos_s.shape[0]:
                raise ValueError(f"expected N={self.pos_s.shape[0]} tokens per frame (grid {self.grid}), got {N}")
            x = x + self.pos_s[None, :, :].to(x.dtype)  # (B, T, N, D)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"STTransformer: expected (B, T, N, D), got shape {tuple(x.shape)}")
        x = self.add_positions(self.inp(x))  # (B, T, N, D)
        for blk in self.blocks:
            x = blk(x)  # (B, T, N, D)
        return self.out(self.norm(x))  # (B, T, N, out_dim)


class FullTransformer(STTransformer):
    """The comparison model: the same widths, but every layer attends over all T*N tokens of the clip at once,
    with the block-causal mask (token of frame t sees every token of frames <= t). Same parameter count per
    block as an ST block minus the second attention; used by :func:`attention_cost` and the notebook only."""

    def __init__(self, dim: int, depth: int, heads: int, grid: tuple[int, int] | None = None,
                 max_frames: int = 64, in_dim: int | None = None, out_dim: int | None = None,
                 mlp_ratio: float = 4.0):
        super().__init__(dim, 0, heads, grid, max_frames, in_dim, out_dim, mlp_ratio)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, N, _ = x.shape
        x = rearrange(self.add_positions(self.inp(x)), "b t n d -> b (t n) d")  # (B, T*N, D)
        mask = block_causal_mask(T, N, device=x.device)  # (T*N, T*N)
        for blk in self.blocks:
            x = blk(x, mask=mask)  # (B, T*N, D)
        return rearrange(self.out(self.norm(x)), "b (t n) d -> b t n d", t=T)  # (B, T, N, out_dim)


def _use_reference_attention(model: nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, Attention):
            m.reference = on


def attention_cost(kind: str, T: int, N: int, dim: int = 128, depth: int = 2, heads: int = 4, batch: int = 1,
                   device: str | torch.device = "meta", backward: bool = True) -> dict[str, float]:
    """Measure one training step of an ST or full-attention model on a (batch, T, N, dim) clip.

    Returns ``{"flops": ..., "saved_bytes": ...}``: FLOPs of forward (+ backward) counted by
    ``torch.utils.flop_counter.FlopCounterMode`` and the bytes of every tensor autograd saves for the backward
    pass (``torch.autograd.graph.saved_tensors_hooks``) -- the activation memory a training step holds at its
    peak. Attention runs the plain math (:func:`wmkit.nn.attention_reference`, the (L, L) score matrix is
    materialised), which is what the FLOP counter and the byte count see; fused kernels avoid storing the
    score matrix but not its FLOPs. On ``device="meta"`` nothing is allocated, so T can go far beyond memory.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if kind not in ("st", "full"):
        raise ValueError(f"kind: expected 'st' or 'full', got {kind!r}")
    cls = STTransformer if kind == "st" else FullTransformer
    with torch.device(device):
        model = cls(dim, depth, heads, grid=None, max_frames=max(T, 1))
        x = torch.randn(batch, T, N, dim, requires_grad=backward)
    _use_reference_attention(model, True)
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = model(x)  # (B, T, N, D)
        if backward:
            y.sum().backward()
    return {"flops": float(counter.get_total_flops()), "saved_bytes": float(saved[0])}
