"""Genie's video tokenizer (ST-ViViT) and the two quantizers it can use.

Bruce et al. 2024 (arXiv:2402.15391), section 2.1 "Video Tokenizer": frames x_{1:T} (T x H x W x C) are cut into
patches, encoded by an ST-transformer into latents, quantized to discrete tokens z_{1:T} (T x N, N = H W / p^2)
and decoded back by a second ST-transformer; trained with the VQ-VAE objective (van den Oord et al. 2017, eq. 3):

    L = ||x - x_hat||^2  +  ||sg[z_e] - e||^2  +  beta ||z_e - sg[e]||^2,        beta = 0.25        (VQ)

The encoder's temporal attention is causal, so z_t depends on x_{1:t} only. Two quantizers:

* :class:`FSQ` -- finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
  Simple", arXiv:2309.15505, section 3, following google-research/fsq): each of d channels is bounded by
  ``tanh`` to L_i levels and rounded with a straight-through gradient; the code index is the mixed-radix number of
  the d digits, so the codebook is implicit (prod L_i codes), has no loss term and cannot collapse. Levels from the
  paper's table: 2^10 ~ [8, 5, 5, 5]. wmkit's default.
* :class:`VectorQuantizer` -- Genie's choice: nearest code by cosine similarity (l2-normalised codes, as in
  ViT-VQGAN and the Jafar re-implementation), straight-through gradient, codebook + commitment loss; with per-code
  usage tracking and **dead-code restarts**: a code unused for ``restart_after`` consecutive steps is replaced by a
  random encoder output of the current batch (Dhariwal et al. 2020; Jafar copies a live code instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wmkit.genie.st_transformer import STTransformer
from wmkit.nn import patchify, unpatchify

__all__ = ["FSQ", "VectorQuantizer", "usage_stats", "TokenizerConfig", "VideoTokenizer", "psnr"]


def usage_stats(indices: torch.Tensor, num_codes: int) -> dict[str, float | torch.Tensor]:
    """Code usage of a batch of indices: counts (K,), live codes, perplexity exp(H(p)) (K for uniform use, 1 for
    collapse onto one code)."""
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
        raise ValueError(f"indices: expected ids in [0, {num_codes}), got range [{int(indices.min())}, "
                         f"{int(indices.max())}]")
    counts = torch.bincount(indices.reshape(-1).long(), minlength=num_codes).double()  # (K,)
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"counts": counts, "live": int((counts > 0).sum()), "perplexity": float(entropy.exp())}


def psnr(x: torch.Tensor, y: torch.Tensor, dims: tuple[int, ...] = (-3, -2, -1)) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1]: ``10 log10(1 / MSE)`` per image (over ``dims``)."""
    mse = ((x.float() - y.float()) ** 2).mean(dim=dims)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


class FSQ(nn.Module):
    """Finite scalar quantization: (..., d) floats -> (..., d) values on a grid in [-1, 1] and (...,) indices."""

    def __init__(self, levels: tuple[int, ...] = (8, 5, 5, 5), eps: float = 1e-3):
        super().__init__()
        if not levels or any(int(L) < 2 for L in levels):
            raise ValueError(f"FSQ levels: expected integers >= 2, got {levels}")
        self.levels_list = tuple(int(L) for L in levels)
        self.eps = eps
        self.register_buffer("levels", torch.tensor(self.levels_list, dtype=torch.float32), persistent=False)
        basis = [1]
        for L in self.levels_list[:-1]:
            basis.append(basis[-1] * L)
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.long), persistent=False)
        self.dim, self.num_codes = len(self.levels_list), math.prod(self.levels_list)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """tanh-bound each channel to L_i levels (even L_i get a half-step offset so that 0 stays a level)."""
        half_l = (self.levels - 1) * (1 - self.eps) / 2  # (d,)
        offset = torch.where(self.levels % 2 == 1, 0.0, 0.5)  # (d,)
        shift = torch.tan(offset / half_l)  # (d,)  (google-research/fsq uses tan here)
        return torch.tanh(z + shift) * half_l - offset  # (..., d)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ: expected last dim {self.dim} (one per level {self.levels_list}), got {z.shape[-1]}")
        b = self.bound(z)  # (..., d)
        q = b + (torch.round(b) - b).detach()  # straight-through rounding
        zq = q / (self.levels // 2)  # (..., d) in [-1, 1]
        return zq, self.codes_to_indices(zq)

    def codes_to_indices(self, zq: torch.Tensor) -> torch.Tensor:
        digits = torch.round(zq * (self.levels // 2) + self.levels // 2).long()  # (..., d) in [0, L_i)
        return (digits * self.basis).sum(-1)  # (...,)

    def indices_to_codes(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_codes):
            raise ValueError(f"FSQ: token ids must be in [0, {self.num_codes}), got [{int(idx.min())}, "
                             f"{int(idx.max())}]")
        digits = (idx[..., None] // self.basis) % self.levels.long()  # (..., d)
        return (digits.float() - self.levels // 2) / (self.levels // 2)  # (..., d)


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer with usage tracking and dead-code restarts: (..., d) -> (..., d), (...,) ids, loss."""

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, cosine: bool = True, restart_after: int = 50):
        super().__init__()
        self.num_codes, self.dim, self.beta, self.cosine = num_codes, dim, beta, cosine
        self.restart_after = restart_after
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) / math.sqrt(dim))  # (K, d)
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.cosine else x

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer: expected last dim {self.dim}, got {z.shape[-1]}")
        z = self._norm(z)  # (..., d)
        codes = self._norm(self.codebook)  # (K, d)
        flat = z.reshape(-1, self.dim)  # (M, d)
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.T + codes.pow(2).sum(1)[None])  # (M, K)
        idx = dist.argmin(-1)  # (M,)
        e = codes[idx].reshape(z.shape)  # (..., d)
        # [eq:vq-loss]
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())  # codebook + beta * commitment
        zq = z + (e - z).detach()  # straight-through estimator
        # [/eq:vq-loss]
        idx = idx.reshape(z.shape[:-1])
        if self.training:
            self._track_and_restart(idx, flat.detach())
        return zq, idx, loss

    @torch.no_grad()
    def _track_and_restart(self, idx: torch.Tensor, flat: torch.Tensor) -> None:
        used = torch.bincount(idx.reshape(-1), minlength=self.num_codes) > 0  # (K,)
        self.steps_unused.add_(1).masked_fill_(used, 0)
        if self.restart_after <= 0:
            return
        dead = (self.steps_unused >= self.restart_after).nonzero().flatten()
        if len(dead):
            pick = torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)
            self.codebook.data[dead] = flat[pick] + 1e-3 * torch.randn_like(flat[pick])
            self.steps_unused[dead] = 0
            self.restarts += len(dead)

    def indices_to_codes(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_codes):
            raise ValueError(f"VectorQuantizer: ids must be in [0, {self.num_codes}), got [{int(idx.min())}, "
                             f"{int(idx.max())}]")
        return self._norm(self.codebook)[idx]  # (..., d)


@dataclass
class TokenizerConfig:
    """Sizes of the video tokenizer."""

    frame_size: int = 64
    """Frame height = width in pixels."""
    patch: int = 8
    """Patch size p; N = (frame_size / p)^2 tokens per frame."""
    dim: int = 128
    """Transformer width."""
    enc_depth: int = 2
    """ST blocks in the encoder."""
    dec_depth: int = 2
    """ST blocks in the decoder."""
    heads: int = 4
    """Attention heads."""
    quantizer: str = "fsq"
    """'fsq' (Mentzer et al. 2023; wmkit default) or 'vq' (Genie: VQ-VAE codebook)."""
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    """FSQ levels per channel (prod = vocabulary; [8,5,5,5] = 1000 codes)."""
    vq_codes: int = 1024
    """VQ codebook size (Genie: 1024)."""
    vq_dim: int = 32
    """VQ code dimension (Genie: 32)."""
    vq_restart_after: int = 50
    """Restart a VQ code unused for this many steps (0 = never)."""
    max_frames: int = 16
    """Longest clip (temporal position table)."""
    encoder: str = "st"
    """'st' (Genie: an ST-transformer, each token sees the whole clip) or 'patch': each token is computed from its
    own patch alone by residual MLP blocks (not in Genie). With frames aligned to a game's tiles, equal tiles then get
    equal tokens wherever and whenever they appear, so a one-tile scroll is an exact shift of the token grid --
    measured on the cpu recording with the 'st' encoder: the tokens of frame t shifted by the observed scroll agree
    with those of frame t+1 on only 70-78 % of the positions still in view (80 % for frames without a scroll)."""


class PatchMLP(nn.Module):
    """(..., N, in_dim) -> (..., N, out_dim), every token on its own: Linear, depth x (x + MLP(LN(x))), LN, Linear."""

    def __init__(self, in_dim: int, dim: int, depth: int, out_dim: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(),
                                                   nn.Linear(4 * dim, dim)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)  # (..., N, D)
        for blk in self.blocks:
            x = x + blk(x)
        return self.out(self.norm(x))  # (..., N, out_dim)


class VideoTokenizer(nn.Module):
    """frames (B, T, 3, H, W) in [0, 1] <-> tokens (B, T, N) int64."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        if cfg.frame_size % cfg.patch:
            raise ValueError(f"frame_size={cfg.frame_size} is not divisible by patch={cfg.patch}")
        self.cfg = cfg
        g = cfg.frame_size // cfg.patch
        self.grid, self.num_tokens = (g, g), g * g
        pdim = 3 * cfg.patch * cfg.patch
        if cfg.quantizer == "fsq":
            self.quant = FSQ(cfg.fsq_levels)
            qdim = self.quant.dim
        elif cfg.quantizer == "vq":
            self.quant = VectorQuantizer(cfg.vq_codes, cfg.vq_dim, restart_after=cfg.vq_restart_after)
            qdim = cfg.vq_dim
        else:
            raise ValueError(f"quantizer: expected 'fsq' or 'vq', got {cfg.quantizer!r}")
        self.vocab = self.quant.num_codes
        if cfg.encoder == "st":
            self.encoder = STTransformer(cfg.dim, cfg.enc_depth, cfg.heads, self.grid, cfg.max_frames, pdim, qdim)
        elif cfg.encoder == "patch":  # a token depends on its own patch only (shift-equivariant on tile-aligned frames)
            self.encoder = PatchMLP(pdim, cfg.dim, cfg.enc_depth, qdim)
        else:
            raise ValueError(f"tokenizer encoder: expected 'st' or 'patch', got {cfg.encoder!r}")
        self.decoder = STTransformer(cfg.dim, cfg.dec_depth, cfg.heads, self.grid, cfg.max_frames, qdim, pdim)

    def check_frames(self, frames: torch.Tensor, name: str = "frames") -> None:
        s = self.cfg.frame_size
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[-2:] != (s, s):
            raise ValueError(f"{name}: expected (B, T, 3, {s}, {s}) floats in [0, 1], got {tuple(frames.shape)}")

    def quantize(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.check_frames(frames)
        z = self.encoder(patchify(frames, self.cfg.patch))  # (B, T, N, q)
        if isinstance(self.quant, FSQ):
            zq, idx = self.quant(z)
            return zq, idx, z.new_zeros(())
        return self.quant(z)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> tokens (B, T, N)."""
        return self.quantize(frames)[1]

    def decode_codes(self, zq: torch.Tensor) -> torch.Tensor:
        s = self.cfg.frame_size
        patches = torch.sigmoid(self.decoder(zq))  # (B, T, N, 3 p p)
        return unpatchify(patches, self.cfg.patch, s, s)  # (B, T, 3, H, W)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, N) -> frames (B, T, 3, H, W) in [0, 1]."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.num_tokens:
            raise ValueError(f"tokens: expected (B, T, {self.num_tokens}), got {tuple(tokens.shape)}")
        return self.decode_codes(self.quant.indices_to_codes(tokens))

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        zq, idx, qloss = self.quantize(frames)
        recon = self.decode_codes(zq)  # (B, T, 3, H, W)
        mse = F.mse_loss(recon, frames)
        return {"loss": mse + qloss, "mse": mse, "q_loss": qloss, "recon": recon, "tokens": idx}
