"""Optimisers of the two DreamerV3 recipes.

* 2023 (the paper, Appendix "Hyperparameters"): Adam, gradients clipped to a global norm
  (1000 for the world model, 100 for actor and critic).
* 2025 (the later official code): LaProp (Ziyin et al. 2020) -- Adam with the momentum taken AFTER
  dividing by the RMS, which keeps updates bounded for tiny epsilons (1e-20) -- preceded by adaptive
  gradient clipping (AGC, Brock et al. 2021): each tensor's gradient is rescaled so that
  ``|g| <= agc * max(|w|, 1e-3)``; and a linear learning-rate warm-up.

All tensor math uses ``torch._foreach_*`` ops and keeps the step count on the device: no host syncs.
"""

from __future__ import annotations

import torch


# [eq:agc]
@torch.no_grad()
def clip_agc_(params: list[torch.Tensor], clip: float, pmin: float = 1e-3) -> torch.Tensor:
    """Adaptive gradient clipping in place; returns the global gradient norm before clipping.

    Per tensor: g <- g * min(1, clip * max(|w|, pmin) / |g|). A handful of foreach kernels for all
    tensors together, whatever their number.
    """
    params = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params]
    gnorm = torch.stack(torch._foreach_norm(grads))                    # (P,)
    pnorm = torch.stack(torch._foreach_norm(params))                   # (P,)
    scale = torch.clamp(clip * pnorm.clamp(min=pmin) / gnorm.clamp(min=1e-12), max=1.0)
    torch._foreach_mul_(grads, list(scale.unbind()))
    return torch.linalg.vector_norm(gnorm)
# [/eq:agc]


class LaProp(torch.optim.Optimizer):
    """LaProp: v = b2 v + (1-b2) g^2; m = b1 m + (1-b1) g / (sqrt(v^) + eps); p -= lr * m^ (debiased).

    ``warmup`` > 0 scales the learning rate linearly from 0 over that many steps.
    """

    def __init__(self, params, lr: float = 4e-5, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-20, warmup: int = 0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, warmup=warmup))

    # [eq:laprop]
    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            b1, b2 = group["betas"]
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            for p in ps:
                st = self.state[p]
                if not st:
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
            first = self.state[ps[0]]   # one step counter per group, kept with its first parameter
            if "step" not in first:
                first["step"] = torch.zeros((), device=ps[0].device)
            grads = [p.grad for p in ps]
            ms = [self.state[p]["exp_avg"] for p in ps]
            vs = [self.state[p]["exp_avg_sq"] for p in ps]
            step = first["step"]
            step += 1
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            denom = torch._foreach_div(vs, 1 - b2 ** step)                      # debiased v
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            upd = torch._foreach_div(grads, denom)
            torch._foreach_mul_(ms, b1)
            torch._foreach_add_(ms, upd, alpha=1 - b1)
            lr = group["lr"] / (1 - b1 ** step)                                 # debiased m
            if group["warmup"]:
                lr = lr * torch.clamp(step / group["warmup"], max=1.0)
            torch._foreach_add_(ps, torch._foreach_mul(ms, -lr))
        return None
    # [/eq:laprop]
