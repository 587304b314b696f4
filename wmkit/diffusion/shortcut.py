"""Dreamer 4's recipe: shortcut forcing -- x-prediction on a flow path, dyadic step sizes, self-consistency.

Hafner et al. 2025, "Training Agents Inside of Scalable World Models" (Dreamer 4, arXiv:2509.24527), section 3.2
(shortcut models, Frans et al. 2024, applied to the dynamics with x-prediction); the public PyTorch
re-implementation nicklashansen/dreamer4 (``dynamics_pretrain_loss``, ``sample_one_timestep_packed``) for the
constants. Signal level ``tau`` in [0, 1] (1 = clean), step size ``d = 1 / 2^e`` with ``e`` in 0..log2(k_max)::

    x_tau = (1 - tau) x_0 + tau x_1          x_0 ~ N(0, I) noise, x_1 the clean frame       (flow interpolation)
    the network predicts the clean frame  x1_hat = F(x_tau, tau, d, ...)                    (x-prediction)
    its velocity  b(x_tau) = (x1_hat - x_tau) / (1 - tau)

* Rows at the finest step ``d_min = 1 / k_max`` (1 - self_fraction of the batch) learn the flow target:
  ``w(tau) || x1_hat - x_1 ||^2``;
* the other rows (self_fraction = 0.25) draw ``e`` in 0..log2(k_max)-1 (d >= 2 d_min) and learn the
  **self-consistency target**: two half steps of the model itself, with stop-gradient,
  ``b' = b(x_tau; d/2)``, ``x' = x_tau + b' d/2``, ``b'' = b(x'; tau + d/2, d/2)``,
  loss ``w(tau) (1 - tau)^2 || b(x_tau; d) - sg((b' + b'') / 2) ||^2`` (velocity space, scaled back to x units);
* ``tau`` lies on the grid of its step size (``tau = j d``, j uniform in 0..1/d - 1), and the ramp weight
  ``w(tau) = 0.9 tau + 0.1`` puts more weight on the cleaner inputs.

Sampling with n steps integrates from tau = 0 with Euler steps ``x <- x + b(x; tau, d) d``; n a power of two uses
n steps of 1/n; any other n <= k_max uses a dyadic partition of [0, 1] (``dyadic_steps``).
"""

from __future__ import annotations

import math

import torch

from wmkit.diffusion.common import ContextNoise, Recipe, quantize_8bit
from wmkit.diffusion.unet import Denoiser


def dyadic_steps(n: int, k_max: int) -> list[float]:
    """n step sizes from {1/2^e}, summing to 1, larger first: ``2^k - n`` steps of 2/2^k then ``2n - 2^k`` of 1/2^k
    with 2^(k-1) < n <= 2^k. E.g. 3 -> [1/2, 1/4, 1/4], 10 -> 6 x 1/8 then 4 x 1/16."""
    if not isinstance(n, int) or not 1 <= n <= k_max:
        raise ValueError(f"steps must be an int in [1, k_max={k_max}] for shortcut sampling, got {n!r}")
    k = math.ceil(math.log2(n))
    big, small = 2**k - n, 2 * n - 2**k
    return [2.0 / 2**k] * big + [1.0 / 2**k] * small


class Shortcut(Recipe):
    """Shortcut forcing on the shared denoiser body (the body needs ``step_levels = log2(k_max) + 1``)."""

    name = "shortcut"

    def __init__(self, net: Denoiser, ctx_noise: ContextNoise | None = None, k_max: int = 64,
                 self_fraction: float = 0.25, bootstrap_start: int = 0):
        super().__init__(net, ctx_noise)
        if k_max < 2 or k_max & (k_max - 1):
            raise ValueError(f"k_max must be a power of two >= 2, got {k_max}")
        if not 0.0 <= self_fraction < 1.0:
            raise ValueError(f"self_fraction must be in [0, 1), got {self_fraction}")
        self.k_max, self.emax = k_max, int(math.log2(k_max))
        if net.step_emb is None or net.step_emb.num_embeddings != self.emax + 1:
            raise ValueError(f"the denoiser needs step_levels = log2(k_max) + 1 = {self.emax + 1} for shortcut forcing")
        self.self_fraction, self.bootstrap_start = self_fraction, bootstrap_start
        self.step = 0  # training step counter, for bootstrap_start

    def predict(self, x, tau, e, context, actions, bucket):
        """x1_hat = F(x_tau, tau, e = log2(1/d), ...)."""
        return self.net(x, tau, context, actions, ctx_bucket=bucket, step_index=e).float()

    def grid(self, e: torch.Tensor, generator=None) -> torch.Tensor:
        """tau = j / 2^e with j uniform in 0..2^e - 1 (the grid of step size d = 1/2^e)."""
        K = (2 ** e).float()
        j = torch.floor(torch.rand(e.shape, generator=generator, device=e.device) * K)
        return j / K

    @torch.no_grad()
    def self_consistency_target(self, x_tau, tau, e, context, actions, bucket):
        """Velocity target of a step d = 1/2^e: the mean of two half steps of the model itself (no gradient)."""
        d_half = (0.5 ** e.float()) / 2  # (B,)
        den1 = (1 - tau).clamp_min(1e-6).view(-1, 1, 1, 1)
        b1 = (self.predict(x_tau, tau, e + 1, context, actions, bucket) - x_tau) / den1  # velocity, half step
        x_mid = x_tau + b1 * d_half.view(-1, 1, 1, 1)  # one half step
        t_mid = tau + d_half
        den2 = (1 - t_mid).clamp_min(1e-6).view(-1, 1, 1, 1)
        b2 = (self.predict(x_mid, t_mid, e + 1, context, actions, bucket) - x_mid) / den2  # second half step
        return (b1 + b2) / 2  # (B, C, H, W)

    # [eq:shortcut_loss]
    def loss(self, context, actions, target, generator=None):
        self.check_batch(context, actions, target)
        B, dev = target.shape[0], target.device
        B_self = int(B * self.self_fraction) if self.step >= self.bootstrap_start else 0
        B_emp = B - B_self
        context, bucket = self.ctx_noise.train(context, generator)
        e = torch.full((B,), self.emax, dtype=torch.long, device=dev)  # finest step for the flow rows
        e[B_emp:] = torch.randint(0, self.emax, (B_self,), generator=generator, device=dev)
        tau = self.grid(e, generator)  # (B,)
        x0 = torch.randn(target.shape, generator=generator, device=dev)
        x_tau = (1 - tau).view(-1, 1, 1, 1) * x0 + tau.view(-1, 1, 1, 1) * target  # (B, C, H, W)
        w = 0.9 * tau + 0.1  # ramp weight
        x1_hat = self.predict(x_tau, tau, e, context, actions, bucket)
        flow = (x1_hat[:B_emp] - target[:B_emp]).pow(2).mean(dim=(1, 2, 3))  # (B_emp,)
        loss_emp = (w[:B_emp] * flow).mean()
        loss_self = torch.zeros((), device=dev)
        boot = torch.zeros((), device=dev)
        if B_self > 0:
            sl = slice(B_emp, B)
            ts, xs, es = tau[sl], x_tau[sl], e[sl]
            ctx_s, act_s = context[sl], actions[sl]
            bk = None if bucket is None else bucket[sl]
            v_target = self.self_consistency_target(xs, ts, es, ctx_s, act_s, bk)
            den1 = (1 - ts).clamp_min(1e-6).view(-1, 1, 1, 1)
            v_hat = (x1_hat[sl] - xs) / den1
            per = (1 - ts).pow(2) * (v_hat - v_target).pow(2).mean(dim=(1, 2, 3))  # (B_self,)
            loss_self = (w[sl] * per).mean()
            boot = per.mean().detach()
        loss = (loss_emp * B_emp + loss_self * B_self) / B
        self.step += 1 if self.training else 0
        return loss, {"loss": loss.item(), "flow_mse": flow.mean().item(), "bootstrap_mse": float(boot)}
    # [/eq:shortcut_loss]

    # [eq:shortcut_sample]
    @torch.no_grad()
    def sample(self, context, actions, steps, generator=None, quantize: bool = True, ctx_level: float | None = None):
        self.check_batch(context, actions)
        ds = dyadic_steps(steps, self.k_max)
        context, bucket = self.ctx_noise.infer(context, generator, ctx_level)
        B, _, C, H, W = context.shape
        x = torch.randn(B, C, H, W, generator=generator, device=context.device)  # tau = 0: pure noise
        tau = 0.0
        for d in ds:
            tt = torch.full((B,), tau, device=context.device)
            e = torch.full((B,), int(round(math.log2(1 / d))), dtype=torch.long, device=context.device)
            x1_hat = self.predict(x, tt, e, context, actions, bucket)
            x = x + (x1_hat - x) / max(1e-4, 1 - tau) * d  # Euler step along the predicted velocity
            tau += d
        return quantize_8bit(x) if quantize else x
    # [/eq:shortcut_sample]
