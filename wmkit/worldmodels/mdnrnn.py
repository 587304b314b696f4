"""M: the mixture-density recurrent network of World Models (Ha & Schmidhuber 2018, section 2.2).

An LSTM (Hochreiter & Schmidhuber 1997) with 256 hidden units reads [z_t, a_t] and outputs, for every
one of the 32 latent dimensions separately, a mixture of K = 5 one-dimensional Gaussians for z_{t+1}
(a mixture density network, Bishop 1994):

    P(z_{t+1} | a_t, z_t, h_t) = prod_i  sum_k pi_{ik} N(z_{t+1,i}; mu_{ik}, sigma_{ik}^2)

The head is one dense layer 256 -> 32 * 5 * 3 (logit pi, mu, log sigma). Parameters: LSTM
4 * 256 * (35 + 256) weights + biases, plus 256 * 480 + 480 for the head. TensorFlow's LSTM has one
bias vector per gate (4 * 256); PyTorch's nn.LSTM has two (b_ih and b_hh, 2 * 4 * 256), so the same
architecture counts 422,368 parameters in the paper and 423,392 here -- the difference is exactly 1,024.

Temperature tau (the paper's dream experiments; the ``temperature`` of its code): the mixture logits are
divided by tau and every standard deviation is multiplied by sqrt(tau). tau -> 0 gives the mean of the
most likely component (deterministic); tau > 1 makes dreams more chaotic.

Beyond the paper's CarRacing model: optional reward and done heads (the paper's Doom model predicts
done; we add both) so that a controller can be trained entirely inside the dream (dream_env.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class MDNOutput:
    logit_pi: torch.Tensor   # (B, T, Z, K) unnormalised mixture weights
    mu: torch.Tensor         # (B, T, Z, K)
    log_sigma: torch.Tensor  # (B, T, Z, K)
    reward: torch.Tensor | None       # (B, T) predicted r_t
    done_logit: torch.Tensor | None   # (B, T) logit of P(episode ends after step t)
    h: torch.Tensor          # (B, T, H) LSTM outputs (what the controller sees)
    state: tuple[torch.Tensor, torch.Tensor]  # (h_n, c_n), each (1, B, H)


# [eq:mdn_nll]
def mdn_nll(logit_pi: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
            x: torch.Tensor) -> torch.Tensor:
    """-log sum_k pi_k N(x; mu_k, sigma_k^2) per element, computed with log-sum-exp.

    logit_pi, mu, log_sigma: (..., K); x: (...). Returns (...). Working in log space throughout (log
    softmax for pi, log N for the Gaussians, logsumexp over k) never forms a tiny probability or a
    variance that could underflow, and sigma = exp(log sigma) can never be negative.
    """
    log_pi = F.log_softmax(logit_pi, dim=-1)                              # (..., K)
    z = (x.unsqueeze(-1) - mu) * torch.exp(-log_sigma)                    # (..., K) standardised
    log_normal = -0.5 * z.pow(2) - log_sigma - LOG_SQRT_2PI               # (..., K)
    return -torch.logsumexp(log_pi + log_normal, dim=-1)                  # (...)
# [/eq:mdn_nll]


# [eq:temperature]
def mdn_sample(logit_pi: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, tau: float = 1.0,
               generator: torch.Generator | None = None,
               noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sample x from the mixture at temperature tau: pi ~ softmax(logit / tau), sigma * sqrt(tau).

    Inputs (..., K); returns (...). tau = 0 returns the mean of the most likely component.
    ``noise`` = (uniforms (..., K), standard normals (..., 1)) replaces the random draws (to share them).
    """
    if tau < 0:
        raise ValueError(f"temperature tau must be >= 0, got {tau}")
    if tau == 0:
        k = logit_pi.argmax(dim=-1, keepdim=True)                         # (..., 1)
        return mu.gather(-1, k).squeeze(-1)
    if noise is None:
        noise = (torch.rand(logit_pi.shape, generator=generator, device=logit_pi.device),
                 torch.randn(logit_pi.shape[:-1] + (1,), generator=generator, device=mu.device))
    u, eps = noise
    gumbel = -torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))              # Gumbel-max = categorical draw
    k = (logit_pi / tau + gumbel).argmax(dim=-1, keepdim=True)           # (..., 1)
    sigma = torch.exp(log_sigma.gather(-1, k)) * math.sqrt(tau)
    return (mu.gather(-1, k) + sigma * eps).squeeze(-1)
# [/eq:temperature]


class MDNRNN(nn.Module):
    """The paper's M (plus optional reward/done heads). See the module docstring."""

    def __init__(self, z_dim: int = 32, action_dim: int = 3, hidden: int = 256, n_mix: int = 5,
                 reward_done_heads: bool = True, reward_head: bool = True):
        """``reward_done_heads=False``: the paper's CarRacing M. ``reward_head=False`` (with the done head):
        the paper's Doom M, whose one extra output is the done ("restart") logit."""
        super().__init__()
        self.z_dim, self.action_dim, self.hidden, self.n_mix = z_dim, action_dim, hidden, n_mix
        self.lstm = nn.LSTM(z_dim + action_dim, hidden, batch_first=True)
        self.mdn = nn.Linear(hidden, z_dim * n_mix * 3)
        self.reward_head = nn.Linear(hidden, 1) if reward_done_heads and reward_head else None
        self.done_head = nn.Linear(hidden, 1) if reward_done_heads else None

    def initial_state(self, batch: int, device: torch.device | str = "cpu"):
        zeros = torch.zeros(1, batch, self.hidden, device=device)
        return zeros, zeros.clone()

    def forward(self, z: torch.Tensor, a: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None) -> MDNOutput:
        """z: (B, T, Z), a: (B, T, A) -> predictions for z_{t+1} (and r_t, done_t) at every t."""
        if z.ndim != 3 or z.shape[-1] != self.z_dim:
            raise ValueError(f"MDNRNN expects z of shape (B, T, {self.z_dim}), got {tuple(z.shape)}")
        if a.shape[:2] != z.shape[:2] or a.shape[-1] != self.action_dim:
            raise ValueError(f"MDNRNN expects actions of shape {tuple(z.shape[:2]) + (self.action_dim,)}, "
                             f"got {tuple(a.shape)}")
        h, state = self.lstm(torch.cat([z, a], dim=-1), state)            # (B, T, H)
        B, T, _ = h.shape
        out = self.mdn(h).view(B, T, self.z_dim, 3, self.n_mix)           # (B, T, Z, 3, K)
        logit_pi, mu, log_sigma = out.unbind(dim=3)                       # (B, T, Z, K) each
        reward = self.reward_head(h).squeeze(-1) if self.reward_head is not None else None
        done = self.done_head(h).squeeze(-1) if self.done_head is not None else None
        return MDNOutput(logit_pi, mu, log_sigma, reward, done, h, state)

    def loss(self, z: torch.Tensor, a: torch.Tensor, rewards: torch.Tensor | None = None,
             dones: torch.Tensor | None = None, reward_weight: float = 1.0,
             done_weight: float = 1.0, done_pos_weight: float = 1.0, mask: torch.Tensor | None = None,
             state: tuple[torch.Tensor, torch.Tensor] | None = None, return_state: bool = False) -> dict:
        """z: (B, T+1, Z), a: (B, T, A) -> {'loss', 'nll' (per latent dim), 'reward', 'done', 'state'}.

        ``done_pos_weight``: the cross-entropy of a step that really ends the episode counts this many
        times (the paper's Doom ``restart_factor`` = 10: a death is one step in hundreds). ``mask`` (B, T)
        marks real steps (padding after an episode's end gets 0). ``state``: LSTM state to start from
        (truncated backprop through time with carried state); ``return_state=True`` adds the final state,
        detached, under 'state'.
        """
        out = self(z[:, :-1], a, state)
        m = torch.ones(z.shape[0], z.shape[1] - 1, device=z.device) if mask is None else mask.float()  # (B, T)
        denom = m.sum().clamp(min=1.0)
        nll = (mdn_nll(out.logit_pi, out.mu, out.log_sigma, z[:, 1:]).mean(-1) * m).sum() / denom  # nats/dim
        losses = {"nll": nll}
        loss = nll
        if rewards is not None and out.reward is not None:
            losses["reward"] = ((out.reward - rewards).pow(2) * m).sum() / denom
            loss = loss + reward_weight * losses["reward"]
        if dones is not None and out.done_logit is not None:
            bce = F.binary_cross_entropy_with_logits(out.done_logit, dones, reduction="none",
                                                     pos_weight=torch.tensor(done_pos_weight, device=z.device))
            losses["done"] = (bce * m).sum() / denom
            loss = loss + done_weight * losses["done"]
        losses["loss"] = loss
        if return_state:
            losses["state"] = tuple(s.detach() for s in out.state)
        return losses

    def sample_next(self, out: MDNOutput, tau: float = 1.0, generator: torch.Generator | None = None,
                    noise_period: int | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Draw z_{t+1} from the last time step of ``out`` at temperature tau: (B, Z).

        ``noise_period=R``: row b uses the random numbers of row b % R (common random numbers, so
        that B / R controllers evaluated on the same R dreams see the same luck).
        ``rows`` (B,): ``out`` holds only these rows of a larger batch (the dreams still running); row i then
        uses the random numbers of row rows[i] % R, drawn exactly as for the whole batch.
        """
        logit, mu, log_sigma = out.logit_pi[:, -1], out.mu[:, -1], out.log_sigma[:, -1]  # (B, Z, K)
        noise = None
        if noise_period is not None:
            B, Z, K = logit.shape
            if rows is None:
                if B % noise_period:
                    raise ValueError(f"batch {B} is not a multiple of noise_period {noise_period}")
                rows = torch.arange(B, device=logit.device)
            u = torch.rand(noise_period, Z, K, generator=generator, device=logit.device)
            eps = torch.randn(noise_period, Z, 1, generator=generator, device=logit.device)
            j = rows % noise_period                                              # (B,)
            noise = (u[j], eps[j])
        elif rows is not None:
            raise ValueError("sample_next: rows needs noise_period (the noise is shared per row % noise_period)")
        return mdn_sample(logit, mu, log_sigma, tau, generator, noise)
