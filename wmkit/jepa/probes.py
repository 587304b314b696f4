"""Probes: how much of a quantity the environment knows (agent position, ...) can be read off frozen features.

* :func:`linear_probe` -- ridge regression in closed form on standardised features (V-JEPA's "frozen evaluation"
  uses an attentive probe; a linear one is the classic check). Score: R^2 on held-out samples, 0 = predicting the
  training mean (chance), 1 = perfect.
* :class:`AttentiveProbe` -- V-JEPA's attentive probe (Bardes et al. 2024, section 4 "frozen evaluation"): one
  learnable query cross-attends to the N frozen tokens, then a linear head; trained with AdamW.
* :func:`tokens_of` -- features of frames under any encoder callable; a later stage's model is compared with the
  earlier ones (DreamerV3's RSSM state, a pixel baseline) through the same two probes, see the book page.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["r2_score", "linear_probe", "AttentiveProbe", "attentive_probe", "tokens_of"]


def r2_score(pred: torch.Tensor, y: torch.Tensor) -> float:
    """1 - SSE / SST averaged over target columns (sklearn's 'uniform_average')."""
    if pred.shape != y.shape:
        raise ValueError(f"r2_score: pred {tuple(pred.shape)} and y {tuple(y.shape)} differ")
    sse = (pred - y).square().sum(0)
    sst = (y - y.mean(0)).square().sum(0).clamp_min(1e-12)
    return float((1 - sse / sst).mean())


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 ridge: float = 1.0) -> dict[str, float]:
    """Ridge regression (features flattened, standardised with the training statistics) -> held-out R^2."""
    if x_train.shape[0] != y_train.shape[0] or x_test.shape[0] != y_test.shape[0]:
        raise ValueError("linear_probe: features and targets must have the same number of rows")
    xtr, xte = x_train.flatten(1).double(), x_test.flatten(1).double()
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    ym = y_train.double().mean(0)
    A = xtr.T @ xtr + ridge * xtr.shape[0] * torch.eye(xtr.shape[1], dtype=torch.float64)  # (F, F)
    W = torch.linalg.solve(A, xtr.T @ (y_train.double() - ym))  # (F, Y)
    return {"r2_train": r2_score(xtr @ W + ym, y_train.double()), "r2": r2_score(xte @ W + ym, y_test.double())}


class AttentiveProbe(nn.Module):
    """(B, N, D) tokens -> (B, Y): one learnable query, multi-head cross-attention, LayerNorm, linear head."""

    def __init__(self, dim: int, out: int, heads: int = 4):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_in = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_in(tokens)  # (B, N, D)
        q = self.query.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        pooled, _ = self.attn(q, kv, kv, need_weights=False)  # (B, 1, D)
        return self.head(self.norm(pooled[:, 0]))  # (B, Y)


def attentive_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                    steps: int = 300, lr: float = 3e-3, batch: int = 64, seed: int = 0,
                    standardize: bool = True) -> dict[str, float]:
    """Train an :class:`AttentiveProbe` on standardised targets; held-out R^2.

    ``standardize``: first standardise every (token, channel) with the training set's mean and std, as
    :func:`linear_probe` does (V-JEPA's probe reads the raw tokens: ``standardize=False``). Features whose
    sample-to-sample variation is tiny against a constant part (the AC-JEPA's: std over samples 0.012 against a
    mean magnitude 0.71, measured) give the probe's query nothing to attend to, and the raw probe stays at R^2 ~ 0."""
    if x_train.ndim != 3:
        raise ValueError(f"attentive_probe: expected tokens (B, N, D), got {tuple(x_train.shape)}")
    if standardize:
        mu, sd = x_train.mean(0, keepdim=True), x_train.std(0, keepdim=True).clamp_min(1e-6)  # (1, N, D)
        x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ym, ys = y_train.mean(0), y_train.std(0).clamp_min(1e-6)
    probe = AttentiveProbe(x_train.shape[-1], y_train.shape[-1])
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-3)
    for _ in range(steps):
        idx = torch.randint(0, x_train.shape[0], (min(batch, x_train.shape[0]),), generator=g)
        loss = (probe(x_train[idx]) - (y_train[idx] - ym) / ys).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return {"r2_train": r2_score(probe(x_train) * ys + ym, y_train),
                "r2": r2_score(probe(x_test) * ys + ym, y_test)}


@torch.no_grad()
def tokens_of(encode: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Apply ``encode`` ((B, C, H, W) -> (B, N, D) or (B, D)) in chunks to frames (M, C, H, W)."""
    outs = [encode(frames[i:i + batch]) for i in range(0, frames.shape[0], batch)]
    out = torch.cat(outs)
    return out if out.ndim == 3 else out[:, None]
