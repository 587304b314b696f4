"""The small numerical tools of DreamerV3 (Hafner et al. 2023, arXiv:2301.04104).

Everything here is a pure function of tensors (time is the FIRST axis where there is one):

* ``symlog`` / ``symexp``                -- Sec. "Robust predictions", Eq. 9/10.
* ``twohot`` and ``twohot_bins``         -- Sec. "Robust predictions", Eq. 11 (the two-hot target).
* ``lambda_return``                      -- Sec. "Critic learning", Eq. 7 (bootstrapped lambda-return).
* ``ReturnNormalizer``                   -- Sec. "Actor learning", Eq. 12 (percentile return scale).

Two recipes place the 255 two-hot bins differently (see ``twohot_bins``):
``"2023"`` (the paper): bins evenly spaced in symlog space, targets are ``symlog(y)``;
``"2025"`` (the later official code): bins ``symexp(linspace(-20, 20))`` in raw space, targets are ``y``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["symlog", "symexp", "twohot", "twohot_parts", "twohot_bins", "lambda_return", "ReturnNormalizer"]


# [eq:symlog]
def symlog(x: torch.Tensor) -> torch.Tensor:
    """symlog(x) = sign(x) * ln(|x| + 1): identity near 0, logarithmic for large |x| (Eq. 9)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """symexp(x) = sign(x) * (exp(|x|) - 1), the inverse of :func:`symlog` (Eq. 10)."""
    return torch.sign(x) * torch.expm1(torch.abs(x))
# [/eq:symlog]


def twohot_bins(recipe: str = "2023", num: int = 255, limit: float = 20.0,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The ``num`` bin positions of the two-hot heads (reward and critic).

    ``"2023"``: ``linspace(-limit, limit, num)`` -- positions in *symlog* space; encode ``symlog(y)``
    and decode the expected bin with ``symexp``. ``"2025"``: ``symexp`` of that grid, built as in the
    official code from one half mirrored so that it is exactly symmetric and contains 0 -- positions in
    *raw* space; encode ``y`` itself and decode the expected bin as is.
    """
    if recipe not in ("2023", "2025"):
        raise ValueError(f"recipe must be '2023' or '2025', got {recipe!r}")
    if num < 2:
        raise ValueError(f"num (number of bins) must be >= 2, got {num}")
    # Build one half and mirror it: exactly symmetric, exactly 0 in the middle for odd ``num``.
    if num % 2 == 1:
        half = torch.linspace(-limit, 0.0, (num - 1) // 2 + 1, dtype=torch.float64)
        half = symexp(half) if recipe == "2025" else half
        bins = torch.cat([half, -half[:-1].flip(0)])
    else:
        half = torch.linspace(-limit, limit, num, dtype=torch.float64)[: num // 2]
        half = symexp(half) if recipe == "2025" else half
        bins = torch.cat([half, -half.flip(0)])
    return bins.to(dtype=torch.float32, device=device)


# [eq:twohot]
def twohot_parts(y: torch.Tensor, bins: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The two bins that bracket ``y`` and their weights: (below, above, w_below, w_above), each (...).

    Linear interpolation inside the range; outside it both indices are the edge bin (weight 1 in all).
    """
    K = bins.shape[0]
    y = y.to(bins.dtype)
    above = torch.searchsorted(bins, y.contiguous(), right=True)     # (...) first bin > y
    below = (above - 1).clamp(0, K - 1)                               # (...) last bin <= y
    above = above.clamp(0, K - 1)
    b_lo, b_hi = bins[below], bins[above]                             # (...)
    span = b_hi - b_lo
    same = span == 0                                                  # y outside the range
    w_hi = torch.where(same, torch.zeros_like(y), (y - b_lo) / torch.where(same, 1.0, span))
    w_hi = torch.where(torch.isnan(y), y, w_hi)      # a NaN target stays NaN (never a silent edge bin)
    return below, above, 1.0 - w_hi, w_hi


def twohot(y: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot encoding of ``y`` (any shape) over sorted ``bins`` (K,) -> weights (..., K) (Eq. 11).

    The two bins that bracket ``y`` share the mass by linear interpolation, so that
    ``sum(weights * bins) == y`` inside the range; outside it all mass sits on the edge bin.
    """
    below, above, w_lo, w_hi = twohot_parts(y, bins)
    out = torch.zeros(*y.shape, bins.shape[0], dtype=bins.dtype, device=bins.device)
    out.scatter_add_(-1, below.unsqueeze(-1), w_lo.unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_hi.unsqueeze(-1))
    return out                                                        # (..., K)
# [/eq:twohot]


# [eq:lambda_return]
def lambda_return(rew: torch.Tensor, val: torch.Tensor, con: torch.Tensor, disc: float,
                  lam: float) -> torch.Tensor:
    """Bootstrapped lambda-returns, time first (Eq. 7).

    Inputs have length H+1 along axis 0 (index 0 is the start state; ``rew[0]`` and ``con[0]`` are
    unused). Output has length H:
    ``R[t] = rew[t+1] + disc * con[t+1] * ((1 - lam) * val[t+1] + lam * R[t+1])`` with ``R[H] = val[H]``.
    """
    if not (rew.shape == val.shape == con.shape):
        raise ValueError(f"rew, val, con must have the same shape, got {tuple(rew.shape)}, "
                         f"{tuple(val.shape)}, {tuple(con.shape)}")
    if rew.shape[0] < 2:
        raise ValueError(f"need at least 2 time steps (H+1 with H >= 1), got {rew.shape[0]}")
    # Precompute the parts that do not depend on the recursion (one fused op each, all steps at once).
    inter = rew[1:] + disc * con[1:] * (1 - lam) * val[1:]            # (H, ...)
    factor = disc * con[1:] * lam                                      # (H, ...)
    H = rew.shape[0] - 1
    out = [val[H]]
    for t in reversed(range(H)):
        out.append(inter[t] + factor[t] * out[-1])
    return torch.stack(out[:0:-1])                                     # (H, ...)
# [/eq:lambda_return]


def _percentiles(x: torch.Tensor, qs: tuple) -> list[torch.Tensor]:
    """Linear-interpolated percentiles of a flat tensor (numpy's default method), like
    ``torch.quantile`` but with the positions computed on the host from the size alone: no device sync."""
    xs = x.sort().values
    n, out = xs.shape[0], []
    for q in qs:
        pos = q / 100 * (n - 1)
        i = min(int(pos), n - 1)
        j = min(i + 1, n - 1)
        out.append(xs[i] + (xs[j] - xs[i]) * (pos - i))
    return out


# [eq:retnorm]
class ReturnNormalizer:
    """EMA of the 5th and 95th return percentiles; scale = max(limit, hi - lo) (Eq. 12).

    ``update(returns)`` folds a batch of returns into the running percentiles (both start at zero,
    no debiasing, as in the paper's code) and returns ``(offset, scale)`` as 0-dim tensors; the actor
    uses ``(R - v) / scale``. Scales below ``limit`` are not blown up: small returns stay small, which
    is what lets one entropy coefficient work for sparse and dense rewards alike.
    """

    def __init__(self, rate: float = 0.01, low: float = 5, high: float = 95, limit: float = 1.0,
                 device: torch.device | str | None = None):
        if not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rate}")
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100 (percentiles), got low={low}, high={high}")
        self.rate, self.low, self.high, self.limit = rate, low, high, limit
        self.lo = torch.zeros((), device=device)
        self.hi = torch.zeros((), device=device)

    def update(self, returns: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(returns).detach().float().reshape(-1).to(self.lo.device)
        lo, hi = _percentiles(x, (self.low, self.high))
        self.lo = (1 - self.rate) * self.lo + self.rate * lo
        self.hi = (1 - self.rate) * self.hi + self.rate * hi
        return self.stats()

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lo, torch.clamp(self.hi - self.lo, min=self.limit)

    def state_dict(self) -> dict:
        return {"lo": self.lo.clone(), "hi": self.hi.clone()}

    def load_state_dict(self, sd: dict) -> None:
        self.lo = sd["lo"].to(self.lo.device).clone()
        self.hi = sd["hi"].to(self.hi.device).clone()
# [/eq:retnorm]
