"""The denoiser body shared by the three recipes: DIAMOND's conditional U-Net over one frame.

Alonso et al. 2024, "Diffusion for World Modeling: Visual Details Matter in Atari" (DIAMOND), section 3 and
appendix C; official code eloialonso/diamond, ``src/models/blocks.py`` and ``src/models/diffusion/inner_model.py``.

The network ``F(x_in, c_noise, context, actions)`` (the raw network of Karras et al. 2022, eq. 7; what the output
*means* -- EDM's scaled residual, GameNGen's velocity v, Dreamer 4's clean frame x1 -- is up to the recipe):

* **frame conditioning by channel concatenation**: the last K context frames (K=4 in DIAMOND) are stacked on the
  channel axis next to the noisy frame, ``conv_in(cat(context, x_in))``;
* **everything else through adaptive group norm**: one vector ``cond`` (``cond_channels``, 256 in DIAMOND) is the
  sum of Fourier features of ``c_noise``, the K action embeddings (each ``cond_channels // K`` wide, flattened), and
  -- the two switches this module adds for the other recipes -- a learned embedding of the context-noise bucket
  (GameNGen section 3.2.1) and of the shortcut step size ``log2(1/d)`` (Dreamer 4 section 3.2); ``cond_proj``
  (Linear-SiLU-Linear) maps the sum, and every residual block scales and shifts its group-normed activations with
  ``x * (1 + scale) + shift`` (``AdaGroupNorm``);
* a U-Net of residual blocks (``depths[i]`` per level, ``channels[i]`` wide, stride-2 conv down, nearest + conv
  up, skip connections concatenated per block), two mid blocks with self-attention, group norm with groups of 32
  channels, ``conv2`` of every block and ``conv_out`` initialised at zero (so the untrained network outputs 0).

Continuous actions (the driving stand-in's steer/gas/brake) replace the embedding table by a linear map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

GN_GROUP_SIZE = 32  # DIAMOND blocks.py: groups of 32 channels (at least one group)
GN_EPS = 1e-5
ATTN_HEAD_DIM = 8


def _groups(c: int) -> int:
    return max(1, c // GN_GROUP_SIZE)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar: ``[cos(2 pi c w), sin(2 pi c w)]``, w ~ N(0, 1) fixed (a buffer)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierFeatures: dim must be even, got {dim}")
        self.register_buffer("weight", torch.randn(1, dim // 2))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * c[:, None] @ self.weight  # (B, dim/2)
        return torch.cat([f.cos(), f.sin()], dim=-1)  # (B, dim)


class AdaGroupNorm(nn.Module):
    """Group norm without affine parameters, then ``x * (1 + scale) + shift`` with (scale, shift) = Linear(cond)."""

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.groups = _groups(channels)
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.groups, eps=GN_EPS)  # (B, C, H, W)
        scale, shift = rearrange(self.linear(cond), "b (two c) -> two b c 1 1", two=2)
        return x * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map (heads of 8 channels), residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.heads = max(1, channels // ATTN_HEAD_DIM)
        self.norm = nn.GroupNorm(_groups(channels), channels, eps=GN_EPS)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.norm(x)  # DIAMOND adds the attention output to the *normalised* input
        q, k, v = rearrange(self.qkv(x), "b (three n d) h w -> three b n (h w) d", three=3, n=self.heads)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H*W, d)
        return x + self.out(rearrange(y, "b n (h w) d -> b (n d) h w", h=h, w=w))


class ResBlock(nn.Module):
    """``x + conv2(silu(norm2(conv1(silu(norm1(x, c))), c)))`` (1x1 projection of x when widths differ), attention."""

    def __init__(self, c_in: int, c_out: int, cond_channels: int, attn: bool):
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.norm1 = AdaGroupNorm(c_in, cond_channels)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = AdaGroupNorm(c_out, cond_channels)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        self.attn = SelfAttention2d(c_out) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        r = self.proj(x)
        x = self.conv1(F.silu(self.norm1(x, cond)))
        x = self.conv2(F.silu(self.norm2(x, cond)))
        return self.attn(x + r)


class UNet(nn.Module):
    """DIAMOND's U-Net: per level ``depths[i]`` blocks down, a mid pair with attention, ``depths[i] + 1`` blocks up."""

    def __init__(self, cond_channels: int, depths: tuple[int, ...], channels: tuple[int, ...],
                 attn_depths: tuple[bool, ...]):
        super().__init__()
        if not len(depths) == len(channels) == len(attn_depths):
            raise ValueError(f"depths {depths}, channels {channels}, attn_depths {attn_depths}: need equal lengths")
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        for i, n in enumerate(depths):
            c1, c2 = channels[max(0, i - 1)], channels[i]
            self.down.append(nn.ModuleList(
                [ResBlock(c1 if j == 0 else c2, c2, cond_channels, attn_depths[i]) for j in range(n)]))
            # up path, one block more than down: it also eats the skip of the level's (downsampled) input
            self.up.insert(0, nn.ModuleList(
                [ResBlock(2 * c2, c2, cond_channels, attn_depths[i]) for _ in range(n)]
                + [ResBlock(c1 + c2, c1, cond_channels, attn_depths[i])]))
        self.mid = nn.ModuleList([ResBlock(channels[-1], channels[-1], cond_channels, True) for _ in range(2)])
        self.downsample = nn.ModuleList([nn.Identity()] + [nn.Conv2d(c, c, 3, stride=2, padding=1)
                                                           for c in channels[:-1]])
        for m in self.downsample[1:]:
            nn.init.orthogonal_(m.weight)
        self.upsample = nn.ModuleList([nn.Identity()]
                                      + [nn.Conv2d(c, c, 3, padding=1) for c in reversed(channels[:-1])])
        self.levels = len(channels) - 1

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.levels
        x = F.pad(x, (0, -w % m, 0, -h % m))  # (B, C, H', W'), H' and W' multiples of 2^levels
        skips = []
        for blocks, down in zip(self.down, self.downsample):
            x = down(x)
            level = [x]
            for block in blocks:
                x = block(x, cond)
                level.append(x)
            skips.append(level)
        for block in self.mid:
            x = block(x, cond)
        for i, (blocks, up) in enumerate(zip(self.up, self.upsample)):
            if i > 0:
                x = up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            level = skips[-1 - i]
            for block, skip in zip(blocks, reversed(level)):
                x = block(torch.cat([x, skip], dim=1), cond)  # (B, C + C_skip, h, w) -> (B, C', h, w)
        return x[..., :h, :w]


class Denoiser(nn.Module):
    """The raw network ``F``: noisy frame + K context frames + K actions (+ switches) -> one frame-shaped output.

    Args:
        num_actions: size of a discrete action space (embedding table), or ``None`` with ``action_dim`` for
            continuous actions.
        context: K, the number of conditioning frames (and actions).
        channels, depths, attn_depths: the U-Net (DIAMOND Atari: (64, 64, 64, 64), (2, 2, 2, 2), no attention
            outside the mid blocks).
        cond_channels: width of the conditioning vector (DIAMOND: 256); must be divisible by ``context``.
        ctx_noise_buckets: > 0 adds GameNGen's learned embedding of the context-noise level bucket.
        step_levels: > 0 adds Dreamer 4's embedding of the shortcut step index ``log2(1/d)`` (k_max = 2^(levels-1)).
        cfg_drop: > 0 trains GameNGen's classifier-free guidance (the fraction of null frame contexts); set the
            attribute ``guidance`` (GameNGen: 1.5) to sample with it.
    """

    def __init__(self, num_actions: int | None, context: int = 4, img_channels: int = 3,
                 channels: tuple[int, ...] = (64, 64, 64, 64), depths: tuple[int, ...] = (2, 2, 2, 2),
                 attn_depths: tuple[bool, ...] | None = None, cond_channels: int = 256, action_dim: int | None = None,
                 ctx_noise_buckets: int = 0, step_levels: int = 0, cfg_drop: float = 0.0):
        super().__init__()
        if not 0.0 <= cfg_drop < 1.0:
            raise ValueError(f"cfg_drop must be in [0, 1), got {cfg_drop}")
        self.cfg_drop = float(cfg_drop)  # training: probability of a null (all-zero) frame context
        self.guidance = 1.0  # sampling: classifier-free guidance weight on the frame context (1 = off)
        if context < 1:
            raise ValueError(f"context must be >= 1 frame, got {context}")
        if cond_channels % context:
            raise ValueError(f"cond_channels ({cond_channels}) must be divisible by context ({context})")
        if (num_actions is None) == (action_dim is None):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim (continuous)")
        self.context, self.img_channels = context, img_channels
        self.num_actions, self.action_dim = num_actions, action_dim
        attn_depths = tuple(attn_depths) if attn_depths is not None else (False,) * len(channels)
        self.noise_emb = FourierFeatures(cond_channels)
        if num_actions is not None:
            self.act_emb = nn.Embedding(num_actions, cond_channels // context)
        else:
            self.act_emb = nn.Linear(action_dim, cond_channels // context)
        self.ctx_noise_emb = nn.Embedding(ctx_noise_buckets, cond_channels) if ctx_noise_buckets else None
        self.step_emb = nn.Embedding(step_levels, cond_channels) if step_levels else None
        self.cond_proj = nn.Sequential(nn.Linear(cond_channels, cond_channels), nn.SiLU(),
                                       nn.Linear(cond_channels, cond_channels))
        self.conv_in = nn.Conv2d((context + 1) * img_channels, channels[0], 3, padding=1)
        self.unet = UNet(cond_channels, tuple(depths), tuple(channels), attn_depths)
        self.norm_out = nn.GroupNorm(_groups(channels[0]), channels[0], eps=GN_EPS)
        self.conv_out = nn.Conv2d(channels[0], img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)

    # [eq:cfg]
    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, actions: torch.Tensor,
                ctx_bucket: torch.Tensor | None = None, step_index: torch.Tensor | None = None) -> torch.Tensor:
        """``body`` plus GameNGen's classifier-free guidance on the past frames (Valevski et al. 2024, section 4.2:
        guidance 1.5 on the past observations only, none on the actions). Training with ``cfg_drop`` > 0 zeroes
        the frame context of that fraction of the batch (the null condition); sampling with ``guidance`` w != 1
        returns ``F_uncond + w (F_cond - F_uncond)``, the unconditional pass seeing zero frames and the same
        actions, both in one batched call."""
        if self.training and self.cfg_drop > 0:
            keep = (torch.rand(context.shape[0], device=context.device) >= self.cfg_drop).to(context.dtype)  # (B,)
            context = context * keep[:, None, None, None, None]
        elif not self.training and self.guidance != 1.0:
            if self.cfg_drop == 0:
                raise ValueError(f"guidance {self.guidance}: this denoiser never learned the unconditional branch "
                                 "(train it with cfg_drop > 0)")

            def two(t):
                return None if t is None else torch.cat([t, t])

            out = self.body(two(x_in), two(c_noise), torch.cat([context, torch.zeros_like(context)]), two(actions),
                            two(ctx_bucket), two(step_index))  # (2B, C, H, W)
            cond, uncond = out.chunk(2)
            return uncond + self.guidance * (cond - uncond)
        return self.body(x_in, c_noise, context, actions, ctx_bucket, step_index)
    # [/eq:cfg]

    def body(self, x_in: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, actions: torch.Tensor,
             ctx_bucket: torch.Tensor | None = None, step_index: torch.Tensor | None = None) -> torch.Tensor:
        """x_in (B, C, H, W); c_noise (B,); context (B, K, C, H, W); actions (B, K) int or (B, K, A) float;
        ctx_bucket (B,) int; step_index (B,) int. Returns (B, C, H, W)."""
        B, K = context.shape[:2]
        if K != self.context or context.shape[2] != self.img_channels or context.shape[-2:] != x_in.shape[-2:]:
            raise ValueError(f"context: expected (B, {self.context}, {self.img_channels}, H, W) matching x_in "
                             f"{tuple(x_in.shape)}, got {tuple(context.shape)}")
        if actions.shape[:2] != (B, K):
            raise ValueError(f"actions: expected leading shape ({B}, {K}), got {tuple(actions.shape)}")
        if self.num_actions is not None and actions.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"actions: discrete action indices (int64) expected, got {actions.dtype}")
        cond = self.noise_emb(c_noise) + rearrange(self.act_emb(actions), "b k e -> b (k e)")  # (B, cond)
        if self.ctx_noise_emb is not None:
            if ctx_bucket is None:
                raise ValueError("ctx_bucket: this denoiser was built with context-noise conditioning; pass the bucket")
            cond = cond + self.ctx_noise_emb(ctx_bucket)
        if self.step_emb is not None:
            if step_index is None:
                raise ValueError("step_index: this denoiser was built for shortcut forcing; pass log2(1/d)")
            cond = cond + self.step_emb(step_index)
        cond = self.cond_proj(cond)  # (B, cond)
        x = self.conv_in(torch.cat([rearrange(context, "b k c h w -> b (k c) h w"), x_in], dim=1))  # (B, C0, H, W)
        x = self.unet(x, cond)  # (B, C0, H, W)
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, C, H, W)
