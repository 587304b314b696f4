"""Ablations of DreamerV3's robustness tricks (Hafner et al. 2023, Sec. 3 "Robust predictions" and
"Return normalization"; the paper's ablation figure), applied to a built :class:`~wmkit.dreamer.Agent`.

* ``no_symlog_twohot`` -- reward and critic become plain regression heads (one output, squared error
  on the RAW reward/return), vector inputs are no longer symlog-squashed and the vector decoder
  regresses the raw vector. With rewards of 1000 per
  step the squared errors -- and the gradients -- are ~10^6 times larger than with rewards of 1.
* ``no_retnorm`` -- advantages are no longer divided by the 5th-95th percentile range of the returns:
  both tracked percentiles are set to the median, so ``scale = max(1, P50 - P50) = 1``. The fixed entropy
  weight 3e-4 then means something different for every reward scale (too weak at x1000, too strong
  at x0.001).

The agent keeps its API, so the training loop, checkpoints and resume work unchanged. (This module
reaches into the agent: ``wm.reward``, ``critic``, ``slow_critic``, ``retnorm.low/high`` and
``_make_opt``; if those change in agent.py, change them here too -- tests/test_dreamer_train.py checks.)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from wmkit.dreamer.networks import MLP

ABLATIONS = ("", "no_symlog_twohot", "no_retnorm")


class MSEHead(nn.Module):
    """MLP -> one number, trained with 0.5 (y - target)^2 in raw space (what symlog/two-hot replace).

    Same interface as TwoHotHead: ``forward`` -> "logits" (..., 1), ``pred`` -> (...), ``loss`` -> (...).
    """

    def __init__(self, in_dim: int, units: int, layers: int, norm: str):
        super().__init__()
        self.mlp = MLP(in_dim, units, layers, norm)
        self.out = nn.Linear(self.mlp.out_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(feat))                                   # (..., 1)

    def pred(self, out: torch.Tensor) -> torch.Tensor:
        return out.squeeze(-1)                                            # (...)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (out.squeeze(-1) - target).square()                  # (...)


def apply(agent, name: str):
    """Modify ``agent`` in place for ablation ``name`` (call right after building it). Returns it."""
    check(name)
    if name == "no_retnorm":  # both percentiles at the median: hi - lo = 0, so scale = limit = 1
        agent.retnorm.low = agent.retnorm.high = 50.0
        return agent
    if name != "no_symlog_twohot":
        return agent
    cfg, F = agent.cfg, agent.wm.feat_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(agent.seed + 17)
        agent.wm.reward = MSEHead(F, cfg.units, cfg.head_layers, cfg.norm).to(agent.device)
        agent.critic = MSEHead(F, cfg.units, cfg.mlp_layers, cfg.norm).to(agent.device)
    agent.slow_critic = copy.deepcopy(agent.critic).requires_grad_(False)
    if getattr(agent.wm.encoder, "has_vector", False):
        agent.wm.encoder.mlp.symlog_inputs = False     # raw vector inputs ...
        agent.wm.decoder.symlog_vector = False         # ... and a plain MSE on raw vectors
    # The optimisers held the old heads' parameters: rebuild them exactly as the agent does.
    agent.opts = {k: agent._make_opt(mod, lr, eps) for k, mod, lr, eps in (
        ("wm", agent.wm, cfg.model_lr, cfg.model_eps), ("actor", agent.actor, cfg.actor_lr, cfg.ac_eps),
        ("critic", agent.critic, cfg.critic_lr, cfg.ac_eps))}
    return agent


def check(name: str) -> None:
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; expected one of {ABLATIONS} ('' = none)")
