"""DIAMOND's recipe: EDM preconditioning, log-normal noise levels, Euler / Heun sampling.

Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models" (EDM), section 5 and
table 1; Alonso et al. 2024 (DIAMOND) section 3; official code eloialonso/diamond
``src/models/diffusion/denoiser.py`` and ``diffusion_sampler.py``, Atari settings from ``config/``.

The denoiser is ``D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), ...)`` (EDM eq. 7)::

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)      c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)             c_noise = ln(sigma) / 4

and training minimises ``|| F(...) - (x - c_skip x_noisy) / c_out ||^2`` (EDM eq. 8 with its weight
lambda = 1 / c_out^2 folded in), with ``ln sigma ~ N(-0.4, 1.2^2)`` clipped to [2e-3, 20] (DIAMOND
``sigma_distribution``), sigma_data = 0.5. DIAMOND also adds *offset noise* (one N(0, 0.3^2) value per image
channel) and folds it into the conditioners (``sigma <- sqrt(sigma^2 + 0.3^2)``); the context frames enter
divided by sigma_data.

Sampling (EDM algorithm 1 with S_churn = 0, as DIAMOND's sampler): noise levels
``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, then 0, with sigma_max 5,
sigma_min 2e-3, rho 7; Euler steps ``x <- x + (x - D(x; sigma_i)) / sigma_i (sigma_{i+1} - sigma_i)``, or Heun's
second-order correction (order 2) except on the last step to sigma = 0. DIAMOND plays Atari with 3 Euler steps
and rounds every denoised estimate to 8 bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wmkit.diffusion.common import ContextNoise, Recipe, quantize_8bit
from wmkit.diffusion.unet import Denoiser


# [eq:precond]
def edm_precond(sigma: torch.Tensor | float, sigma_data: float = 0.5):
    """EDM preconditioning (Karras et al. 2022, table 1): ``(c_skip, c_out, c_in, c_noise)`` for noise level sigma."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    if (sigma <= 0).any():
        raise ValueError(f"sigma must be > 0 (c_noise = ln(sigma) / 4), got min {float(sigma.min())}")
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise
# [/eq:precond]


def sample_sigma(n: int, loc: float = -0.4, scale: float = 1.2, sigma_min: float = 2e-3, sigma_max: float = 20.0,
                 generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training noise levels: ``exp(N(loc, scale^2))`` clipped to [sigma_min, sigma_max] (DIAMOND's Atari values)."""
    return (torch.randn(n, generator=generator, device=device) * scale + loc).exp().clip(sigma_min, sigma_max)


def karras_sigmas(steps: int, sigma_min: float = 2e-3, sigma_max: float = 5.0, rho: float = 7.0) -> torch.Tensor:
    """``steps`` noise levels from sigma_max down to sigma_min spaced by EDM eq. 5, then a final 0: (steps + 1,)."""
    ramp = torch.linspace(0, 1, steps)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


class EDM(Recipe):
    """DIAMOND's EDM denoiser (``sigma_offset_noise=0`` gives plain EDM)."""

    name = "edm"

    def __init__(self, net: Denoiser, ctx_noise: ContextNoise | None = None, sigma_data: float = 0.5,
                 sigma_offset_noise: float = 0.3, loc: float = -0.4, scale: float = 1.2,
                 train_sigma_min: float = 2e-3, train_sigma_max: float = 20.0, sigma_min: float = 2e-3,
                 sigma_max: float = 5.0, rho: float = 7.0, order: int = 1, init_scaled: bool = False):
        super().__init__(net, ctx_noise)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (Euler) or 2 (Heun), got {order}")
        self.sigma_data, self.sigma_offset_noise = sigma_data, sigma_offset_noise
        self.train_dist = dict(loc=loc, scale=scale, sigma_min=train_sigma_min, sigma_max=train_sigma_max)
        self.sampler = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
        self.order = order
        # DIAMOND's sampler starts from N(0, 1) although the first level is sigma_max = 5; EDM's algorithm 1
        # starts from N(0, sigma_max^2). init_scaled=True gives EDM's.
        self.init_scaled = init_scaled

    def conditioners(self, sigma: torch.Tensor):
        """DIAMOND folds the offset noise into the level seen by the preconditioning."""
        c_skip, c_out, c_in, c_noise = edm_precond((sigma**2 + self.sigma_offset_noise**2).sqrt(), self.sigma_data)
        return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1), c_in.view(-1, 1, 1, 1), c_noise

    def raw(self, x_noisy, sigma, context, actions, bucket):
        """``F(c_in x, c_noise, context / sigma_data, actions)`` and the conditioners used."""
        cs = self.conditioners(sigma)
        out = self.net(cs[2] * x_noisy, cs[3], context / self.sigma_data, actions, ctx_bucket=bucket)  # (B, C, H, W)
        return out, cs

    # [eq:edm_loss]
    def loss(self, context, actions, target, generator=None):
        self.check_batch(context, actions, target)
        B, C = target.shape[:2]
        context, bucket = self.ctx_noise.train(context, generator)
        sigma = sample_sigma(B, **self.train_dist, generator=generator, device=target.device)  # (B,)
        offset = self.sigma_offset_noise * torch.randn(B, C, 1, 1, generator=generator, device=target.device)
        noise = torch.randn(target.shape, generator=generator, device=target.device)
        x_noisy = target + offset + sigma.view(-1, 1, 1, 1) * noise  # (B, C, H, W)
        out, (c_skip, c_out, _, _) = self.raw(x_noisy, sigma, context, actions, bucket)
        goal = (target - c_skip * x_noisy) / c_out  # what F must output so that D(x_noisy) = target
        loss = F.mse_loss(out.float(), goal)
        return loss, {"loss": loss.item(), "sigma_mean": sigma.mean().item()}
    # [/eq:edm_loss]

    @torch.no_grad()
    def denoise(self, x, sigma, context, actions, bucket, quantize: bool = True):
        out, (c_skip, c_out, _, _) = self.raw(x, sigma, context, actions, bucket)
        d = c_skip * x + c_out * out.float()  # D(x; sigma), EDM eq. 7
        return quantize_8bit(d) if quantize else d

    # [eq:edm_sample]
    @torch.no_grad()
    def sample(self, context, actions, steps, generator=None, order: int | None = None, quantize: bool = True,
               ctx_level: float | None = None):
        self.check_batch(context, actions)
        self.check_steps(steps)
        order = self.order if order is None else order
        context, bucket = self.ctx_noise.infer(context, generator, ctx_level)
        B, _, C, H, W = context.shape
        sigmas = karras_sigmas(steps, **self.sampler).tolist()  # (steps + 1,) ending in 0
        x = torch.randn(B, C, H, W, generator=generator, device=context.device)  # (B, C, H, W)
        if self.init_scaled:
            x = x * sigmas[0]
        ones = torch.ones(B, device=context.device)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            denoised = self.denoise(x, s * ones, context, actions, bucket, quantize)
            d = (x - denoised) / s  # dx/dsigma of the probability-flow ODE (EDM eq. 3 with sigma(t) = t)
            if order == 1 or s_next == 0:
                x = x + d * (s_next - s)  # Euler
            else:
                x2 = x + d * (s_next - s)
                d2 = (x2 - self.denoise(x2, s_next * ones, context, actions, bucket, quantize)) / s_next
                x = x + (d + d2) / 2 * (s_next - s)  # Heun
        return x
    # [/eq:edm_sample]
