"""GameNGen's recipe: v-prediction on a DDPM noise schedule, context noise augmentation, few-step DDIM.

Valevski et al. 2024, "Diffusion Models Are Real-Time Game Engines" (GameNGen), sections 3.2-3.3 and 4. GameNGen
fine-tunes Stable Diffusion 1.4 with the velocity parameterisation (Salimans & Ho 2022) and samples with 4 DDIM
steps (Song et al. 2021); no official code is public, so the schedule is Stable Diffusion 1.4's (the model it
starts from): ``beta_t = (linspace(sqrt(0.00085), sqrt(0.012), 1000)_t)^2``, ``abar_t = prod_{s<=t} (1 - beta_s)``.

Forward process and target (variance preserving, ``a_t = sqrt(abar_t)``, ``s_t = sqrt(1 - abar_t)``)::

    x_t = a_t x_0 + s_t eps            v = a_t eps - s_t x_0            loss = || F(x_t, t, ...) - v ||^2

and from a predicted v: ``x_0 = a_t x_t - s_t v``, ``eps = s_t x_t + a_t v``. DDIM (eta = 0) moves to the previous
timestep with ``x_prev = a_prev x_0 + s_prev eps``; the last step returns x_0. Timesteps are spaced "trailing"
(999, 749, 499, 249 for 4 steps) so that the first step starts from (almost) pure noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wmkit.diffusion.common import ContextNoise, Recipe, quantize_8bit
from wmkit.diffusion.unet import Denoiser


def sd_alphas_cumprod(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion 1.x "scaled linear" schedule: ``abar_t`` for t = 0..T-1, (T,) float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(steps: int, T: int = 1000) -> list[int]:
    """"Trailing" spacing: ``round(T - i T / steps) - 1`` for i = 0..steps-1, e.g. 4 -> [999, 749, 499, 249]."""
    return [int(round(T - i * T / steps)) - 1 for i in range(steps)]


class VPrediction(Recipe):
    """v-prediction + (optional) context noise + DDIM, GameNGen's recipe on the shared denoiser body."""

    name = "vpred"

    def __init__(self, net: Denoiser, ctx_noise: ContextNoise | None = None, train_timesteps: int = 1000):
        super().__init__(net, ctx_noise)
        self.T = train_timesteps
        self.register_buffer("abar", sd_alphas_cumprod(train_timesteps).float(), persistent=False)

    def coefs(self, t: torch.Tensor):
        abar = self.abar[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return abar.sqrt(), (1 - abar).sqrt()

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() / self.T  # the timestep, in [0, 1), into the body's Fourier features

    # [eq:vpred_loss]
    def loss(self, context, actions, target, generator=None):
        self.check_batch(context, actions, target)
        B = target.shape[0]
        context, bucket = self.ctx_noise.train(context, generator)
        t = torch.randint(0, self.T, (B,), generator=generator, device=target.device)  # (B,)
        eps = torch.randn(target.shape, generator=generator, device=target.device)
        a, s = self.coefs(t)
        x_t = a * target + s * eps  # (B, C, H, W)
        v = a * eps - s * target
        out = self.net(x_t, self.c_noise(t), context, actions, ctx_bucket=bucket)
        loss = F.mse_loss(out.float(), v)
        return loss, {"loss": loss.item()}
    # [/eq:vpred_loss]

    # [eq:ddim]
    @torch.no_grad()
    def sample(self, context, actions, steps, generator=None, quantize: bool = True, ctx_level: float | None = None):
        self.check_batch(context, actions)
        self.check_steps(steps, self.T)
        context, bucket = self.ctx_noise.infer(context, generator, ctx_level)
        B, _, C, H, W = context.shape
        x = torch.randn(B, C, H, W, generator=generator, device=context.device)  # x_T
        ts = ddim_timesteps(steps, self.T)
        for i, t in enumerate(ts):
            tt = torch.full((B,), t, device=context.device, dtype=torch.long)
            a, s = self.coefs(tt)
            v = self.net(x, self.c_noise(tt), context, actions, ctx_bucket=bucket).float()
            x0 = a * x - s * v
            if i == len(ts) - 1:
                x = x0
                break
            eps = s * x + a * v
            a_prev, s_prev = self.coefs(torch.full_like(tt, ts[i + 1]))
            x = a_prev * x0 + s_prev * eps  # DDIM, eta = 0
        return quantize_8bit(x) if quantize else x
    # [/eq:ddim]
