"""What the three recipes share: the recipe interface, GameNGen's context-noise augmentation, 8-bit output.

A *recipe* wraps one :class:`~wmkit.diffusion.unet.Denoiser` and says how to train it (``loss``) and how to sample
the next frame with it (``sample``). Frames are in [-1, 1] (DIAMOND's convention); ``context`` is (B, K, C, H, W),
``actions`` (B, K) -- ``actions[:, k]`` is the action taken after context frame k, so ``actions[:, -1]`` leads to
the frame being generated.

**Context noise augmentation** (Valevski et al. 2024, GameNGen, section 3.2.1): during training the context frames
are corrupted with Gaussian noise of a random level ``a ~ U(0, a_max)`` (a_max = 0.7 in GameNGen), the level is
discretised into ``buckets`` (10) and the bucket's learned embedding is given to the model, so that at inference,
when the context is the model's own imperfect output, it can "correct" it. At inference a small fixed level is
used. GameNGen adds the noise to its latents; wmkit adds it to the [-1, 1] pixels (``ctx + a * eps``), as DIAMOND's
CS:GO model does with its ``noise_previous_obs`` switch (inference ``s_cond`` 0.005).
"""

from __future__ import annotations

import torch
from torch import nn

from wmkit.diffusion.unet import Denoiser


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and round to the 256 levels of an 8-bit image (DIAMOND's ``wrap_model_output``)."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


class ContextNoise:
    """GameNGen's context-noise augmentation; ``a_max = 0`` switches it off (no embedding, clean context)."""

    def __init__(self, a_max: float = 0.0, buckets: int = 10, infer_level: float = 0.0):
        if a_max < 0 or infer_level < 0:
            raise ValueError(f"context noise levels must be >= 0, got a_max={a_max}, infer_level={infer_level}")
        if a_max > 0 and buckets < 1:
            raise ValueError(f"ctx_noise_buckets must be >= 1 when context noise is on, got {buckets}")
        if a_max > 0 and infer_level > a_max:
            raise ValueError(f"ctx_noise_infer ({infer_level}) must be <= ctx_noise_max ({a_max}): the model never "
                             "saw a larger level")
        self.a_max, self.buckets, self.infer_level = float(a_max), int(buckets), float(infer_level)

    @property
    def on(self) -> bool:
        return self.a_max > 0

    def bucket(self, level: torch.Tensor) -> torch.Tensor:
        """Level in [0, a_max] -> bucket index in [0, buckets - 1] (equal-width buckets)."""
        return torch.clamp((level / self.a_max * self.buckets).floor().long(), 0, self.buckets - 1)

    def train(self, context: torch.Tensor, generator: torch.Generator | None = None):
        """Corrupt a training context with a random level per sample: -> (noisy context, bucket) or (context, None)."""
        if not self.on:
            return context, None
        B = context.shape[0]
        level = torch.rand(B, generator=generator, device=context.device) * self.a_max  # (B,)
        eps = torch.randn(context.shape, generator=generator, device=context.device)
        return context + level[:, None, None, None, None] * eps, self.bucket(level)  # (B, K, C, H, W), (B,)

    def infer(self, context: torch.Tensor, generator: torch.Generator | None = None,
              level: float | None = None):
        """Inference: corrupt with the fixed level (or ``level``) and return its bucket."""
        if not self.on:
            return context, None
        level = self.infer_level if level is None else float(level)
        if not 0.0 <= level <= self.a_max:
            raise ValueError(f"context noise level {level} is outside the trained range [0, {self.a_max}]")
        B = context.shape[0]
        lv = torch.full((B,), level, device=context.device)
        if level > 0:
            context = context + level * torch.randn(context.shape, generator=generator, device=context.device)
        return context, self.bucket(lv)


class Recipe(nn.Module):
    """Base class: a denoiser ``net`` plus context noise; subclasses define ``loss`` and ``sample``."""

    name = "recipe"

    def __init__(self, net: Denoiser, ctx_noise: ContextNoise | None = None):
        super().__init__()
        self.net = net
        self.ctx_noise = ctx_noise or ContextNoise()
        if self.ctx_noise.on and net.ctx_noise_emb is None:
            raise ValueError("context noise is on but the denoiser has no ctx_noise_emb (build it with "
                             "ctx_noise_buckets > 0)")

    def loss(self, context: torch.Tensor, actions: torch.Tensor, target: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, context: torch.Tensor, actions: torch.Tensor, steps: int,
               generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def check_steps(steps: int, most: int = 1000) -> int:
        if not isinstance(steps, int) or not 1 <= steps <= most:
            raise ValueError(f"steps must be an int in [1, {most}], got {steps!r}")
        return steps

    @staticmethod
    def check_batch(context: torch.Tensor, actions: torch.Tensor, target: torch.Tensor | None = None) -> None:
        if context.ndim != 5:
            raise ValueError(f"context: expected (B, K, C, H, W) frames in [-1, 1], got shape {tuple(context.shape)}")
        if target is not None and (target.shape[0] != context.shape[0] or target.shape[1:] != context.shape[2:]):
            raise ValueError(f"target: expected {(context.shape[0], *context.shape[2:])}, got {tuple(target.shape)}")
        if actions.shape[0] != context.shape[0]:
            raise ValueError(f"actions: batch {actions.shape[0]} != context batch {context.shape[0]}")
