"""DIAMOND's agent half: a reward/termination model and an actor-critic trained inside the diffusion world model.

Alonso et al. 2024 (DIAMOND), section 3 ("Reinforcement learning in imagination") and appendix D; official code
eloialonso/diamond ``src/models/rew_end_model.py``, ``src/models/actor_critic.py``, ``src/envs/world_model_env.py``,
``src/coroutines/env_loop.py``, settings from ``config/agent/default.yaml`` and ``config/trainer.yaml``.

* :class:`RewEndModel` -- the denoiser predicts frames only; rewards and episode ends come from a separate model
  ``R_psi``: the pair (frame t, frame t+1) stacked on channels, a residual encoder whose group norms are
  conditioned on the action embedding (the :class:`~wmkit.diffusion.unet.ResBlock` of the denoiser), an LSTM over
  time, and a head ``Linear-SiLU-Linear`` giving reward logits and 2 end logits. DIAMOND classifies the clipped
  reward ``sign(r)`` in {-1, 0, 1}; ``reward_bins`` generalises the classes to any grid of reward values, targets
  are the two-hot encoding of the reward on that grid (:func:`wmkit.dreamer.math.twohot`, exactly one-hot when
  the reward lies on the grid), so DIAMOND's 3 classes are ``bins = (-1, 0, 1)`` on ``sign(r)``.
* :class:`ActorCritic` -- a small convolutional encoder (conv 3x3, then per level a ``SmallResBlock`` and a 2x2
  max-pool), an ``LSTMCell`` and two zero-initialised linear heads (policy logits, value).
* :class:`ImaginedEnv` -- DIAMOND's ``WorldModelEnv``: it starts from K real frames and actions, burns the
  reward/end model's LSTM in on them, then each ``step(action)`` samples the next frame with the diffusion
  sampler (3 Euler steps in DIAMOND) and *samples* reward and end from the reward/end logits.
* :func:`imagination_loss` -- one actor-critic update's loss: burn the actor-critic's LSTM in on the first K-1
  context frames, act for ``horizon`` (15) steps in imagination, then (DIAMOND's ``ActorCritic.forward``)::

      R_t = r_t + gamma (1 - d_t) ((1 - lambda) V(s_{t+1}) + lambda R_{t+1}),  R_H = V(s_H)   (lambda-returns)
      L = -E[log pi(a_t|s_t) sg(R_t - V(s_t))] - eta H[pi] + E[(V(s_t) - sg(R_t))^2]

  with gamma 0.985, lambda 0.95, eta 0.001. The returns use :func:`wmkit.dreamer.lambda_return`, the policy
  term :func:`wmkit.dreamer.agent.actor_loss_terms` (REINFORCE, return scale 1: DIAMOND does not normalise), the
  mask of steps after an imagined end :func:`wmkit.dreamer.agent.imagination_weight` with discount 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wmkit.diffusion.common import Recipe
from wmkit.diffusion.unet import GN_EPS, ResBlock, _groups
from wmkit.dreamer.agent import actor_loss_terms, imagination_weight
from wmkit.dreamer.math import ReturnNormalizer, lambda_return, twohot


def init_lstm(lstm: nn.Module) -> None:
    """DIAMOND's ``init_lstm``: Xavier input weights, orthogonal recurrent weights, zero biases, forget gate 1."""
    for name, p in lstm.named_parameters():
        if "weight_ih" in name:
            nn.init.xavier_uniform_(p)
        elif "weight_hh" in name:
            nn.init.orthogonal_(p)
        elif "bias" in name:
            nn.init.zeros_(p)
            if "bias_ih" in name:
                n = p.shape[0]
                nn.init.ones_(p[n // 4: n // 2])  # gates are ordered (input, forget, cell, output)


class RewEndModel(nn.Module):
    """``R_psi(r_t, d_t | x_<=t+1, a_<=t)``: reward logits over ``bins`` and 2 end logits for each transition."""

    def __init__(self, num_actions: int, img_size: int, bins: tuple[float, ...] = (-1.0, 0.0, 1.0),
                 channels: tuple[int, ...] = (32, 32, 32, 32), depths: tuple[int, ...] = (2, 2, 2, 2),
                 cond_channels: int = 128, lstm_dim: int = 512, img_channels: int = 3):
        super().__init__()
        if len(channels) != len(depths):
            raise ValueError(f"channels {channels} and depths {depths} must have the same length")
        if img_size % 2 ** (len(channels) - 1):
            raise ValueError(f"img_size {img_size} must be divisible by 2^{len(channels) - 1} (one halving per level)")
        b = torch.as_tensor(bins, dtype=torch.float32)
        if b.ndim != 1 or len(b) < 2 or not (b[1:] > b[:-1]).all():
            raise ValueError(f"reward bins must be >= 2 increasing values, got {bins}")
        self.register_buffer("bins", b)
        self.num_actions = num_actions
        self.act_emb = nn.Embedding(num_actions, cond_channels)
        self.conv_in = nn.Conv2d(2 * img_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for i, n in enumerate(depths):
            c1, c2 = channels[max(0, i - 1)], channels[i]
            self.blocks.append(nn.ModuleList([ResBlock(c1 if j == 0 else c2, c2, cond_channels, False)
                                              for j in range(n)]))
        self.blocks.append(nn.ModuleList([ResBlock(channels[-1], channels[-1], cond_channels, True)
                                          for _ in range(2)]))  # two final blocks with attention
        self.down = nn.ModuleList([nn.Identity()] + [nn.Conv2d(c, c, 3, stride=2, padding=1) for c in channels[:-1]]
                                  + [nn.Identity()])
        for m in self.down:
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
        feat = channels[-1] * (img_size // 2 ** (len(channels) - 1)) ** 2
        self.lstm = nn.LSTM(feat, lstm_dim, batch_first=True)
        self.head = nn.Sequential(nn.Linear(lstm_dim, lstm_dim), nn.SiLU(), nn.Linear(lstm_dim, len(b) + 2, bias=False))
        init_lstm(self.lstm)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, hc=None):
        """obs, next_obs (B, T, C, H, W) in [-1, 1]; act (B, T) int. -> reward logits (B, T, n_bins),
        end logits (B, T, 2), LSTM state."""
        B, T = act.shape
        if obs.shape != next_obs.shape or obs.shape[:2] != (B, T):
            raise ValueError(f"obs {tuple(obs.shape)}, act {tuple(act.shape)}, next_obs {tuple(next_obs.shape)}: "
                             "expected (B, T, C, H, W), (B, T), (B, T, C, H, W)")
        x = torch.cat([obs, next_obs], dim=2).flatten(0, 1)  # (B*T, 2C, H, W)
        cond = self.act_emb(act.flatten())  # (B*T, cond)
        x = self.conv_in(x)
        for blocks, down in zip(self.blocks, self.down):
            x = down(x)
            for block in blocks:
                x = block(x, cond)
        x = rearrange(x, "(b t) c h w -> b t (c h w)", b=B)  # (B, T, feat)
        x, hc = self.lstm(x, hc)  # (B, T, lstm)
        logits = self.head(x)  # (B, T, n_bins + 2)
        return logits[..., :-2], logits[..., -2:], hc

    def reward_target(self, reward: torch.Tensor, clip_sign: bool) -> torch.Tensor:
        """Two-hot target over the bins (B, T, n_bins); ``clip_sign`` first maps r -> sign(r) (DIAMOND)."""
        r = reward.sign() if clip_sign else reward
        lo, hi = float(self.bins[0]), float(self.bins[-1])
        if (r < lo - 1e-6).any() or (r > hi + 1e-6).any():
            raise ValueError(f"reward: values in [{float(r.min())}, {float(r.max())}] fall outside the reward bins "
                             f"[{lo}, {hi}]; widen reward_bins or clip the reward (reward_sign)")
        return twohot(r, self.bins)

    # [eq:rew_end_loss]
    def loss(self, obs, act, next_obs, reward, end, clip_sign: bool = True):
        """Cross-entropies of reward (two-hot over the bins) and end, averaged over B*T transitions."""
        logits_r, logits_e, _ = self(obs, act, next_obs)
        loss_r = -(self.reward_target(reward, clip_sign) * logits_r.log_softmax(-1)).sum(-1).mean()
        loss_e = F.cross_entropy(logits_e.flatten(0, 1), end.flatten().long())
        return loss_r + loss_e, {"loss_rew": loss_r.item(), "loss_end": loss_e.item()}
    # [/eq:rew_end_loss]


class SmallResBlock(nn.Module):
    """DIAMOND's ``SmallResBlock``: ``skip(x) + conv3x3(silu(groupnorm(x)))``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.f = nn.Sequential(nn.GroupNorm(_groups(c_in), c_in, eps=GN_EPS), nn.SiLU(),
                               nn.Conv2d(c_in, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.f(x)


class ActorCritic(nn.Module):
    """Policy and value from one frame and the LSTM state: ``logits, value, (h, c) = ac(obs, (h, c))``."""

    def __init__(self, num_actions: int, img_size: int, channels: tuple[int, ...] = (32, 32, 64, 64),
                 lstm_dim: int = 512, img_channels: int = 3, down: tuple[int, ...] | None = None):
        super().__init__()
        down = (1,) * len(channels) if down is None else tuple(int(d) for d in down)  # DIAMOND: down [1, 1, 1, 1]
        if len(down) != len(channels) or any(d not in (0, 1) for d in down):
            raise ValueError(f"down {down} must be 0/1 flags, one per level of channels {channels}")
        if img_size % 2 ** sum(down):
            raise ValueError(f"img_size {img_size} must be divisible by 2^{sum(down)} (one max-pool per down level)")
        layers = [nn.Conv2d(img_channels, channels[0], 3, padding=1)]
        for i, c in enumerate(channels):
            layers += [SmallResBlock(channels[max(0, i - 1)], c)] + ([nn.MaxPool2d(2)] if down[i] else [])
        self.encoder = nn.Sequential(*layers)
        self.lstm_dim, self.num_actions, self.down = lstm_dim, num_actions, down
        # DIAMOND's 64x64 frames end as a 4x4 map after 4 max-pools; a 16x16 frame pooled 4 times is 1x1, where
        # the max over the whole frame forgets WHERE things are (on reach: where the target is relative to the agent)
        self.lstm = nn.LSTMCell(channels[-1] * (img_size // 2 ** sum(down)) ** 2, lstm_dim)
        self.actor = nn.Linear(lstm_dim, num_actions)
        self.critic = nn.Linear(lstm_dim, 1)
        for m in (self.actor, self.critic):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        init_lstm(self.lstm)

    def initial_state(self, batch: int, device=None):
        z = torch.zeros(batch, self.lstm_dim, device=device)
        return z, z.clone()

    def forward(self, obs: torch.Tensor, hc):
        """obs (B, C, H, W) in [-1, 1] -> logits (B, A), value (B,), (h, c)."""
        x = self.encoder(obs).flatten(1)  # (B, feat)
        h, c = self.lstm(x, hc)  # (B, lstm)
        return self.actor(h), self.critic(h).squeeze(-1), (h, c)


class ImaginedEnv:
    """The diffusion model + reward/end model as a batched environment (DIAMOND's ``WorldModelEnv``)."""

    def __init__(self, model: Recipe, rew_end: RewEndModel, steps: int = 3, generator: torch.Generator | None = None):
        self.model, self.rew_end, self.steps, self.generator = model, rew_end, steps, generator
        self.K = model.net.context

    @torch.no_grad()
    def reset(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """obs (N, K, C, H, W) real frames in [-1, 1], act (N, K) (the last is replaced by each step's action).
        Burns the reward/end LSTM in on the K-1 real transitions; returns the current frame (N, C, H, W)."""
        if obs.ndim != 5 or obs.shape[1] != self.K or act.shape != obs.shape[:2]:
            raise ValueError(f"reset: expected obs (N, {self.K}, C, H, W) and act (N, {self.K}), got "
                             f"{tuple(obs.shape)} and {tuple(act.shape)}")
        self.obs, self.act = obs.clone(), act.clone()
        _, _, self.hc = self.rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        return self.obs[:, -1]

    @torch.no_grad()
    def step(self, action: torch.Tensor):
        """action (N,) int -> next frame (N, C, H, W), sampled reward (N,) and end (N,) float."""
        self.act[:, -1] = action
        nxt = self.model.sample(self.obs, self.act, self.steps, generator=self.generator)  # (N, C, H, W)
        logits_r, logits_e, self.hc = self.rew_end(self.obs[:, -1:], self.act[:, -1:], nxt[:, None], self.hc)
        g = self.generator
        r_idx = torch.multinomial(logits_r[:, 0].softmax(-1), 1, generator=g).squeeze(-1)  # (N,)
        end = torch.multinomial(logits_e[:, 0].softmax(-1), 1, generator=g).squeeze(-1).float()  # (N,)
        self.obs = torch.cat([self.obs[:, 1:], nxt[:, None]], 1)  # roll the K-frame buffer
        self.act = torch.cat([self.act[:, 1:], self.act[:, -1:]], 1)
        return nxt, self.rew_end.bins[r_idx], end


# [eq:imagination]
def imagination_loss(ac: ActorCritic, env: ImaginedEnv, obs: torch.Tensor, act: torch.Tensor, horizon: int = 15,
                     gamma: float = 0.985, lam: float = 0.95, entropy_weight: float = 1e-3,
                     value_weight: float = 1.0, generator: torch.Generator | None = None, adv_norm: str = "none",
                     retnorm: ReturnNormalizer | None = None):
    """One imagined batch -> (loss, metrics, imagined trajectory).

    obs (N, K, C, H, W), act (N, K): real starting segments (DIAMOND draws them from the replay buffer).
    ``adv_norm``: "none" uses R - V as DIAMOND does; "batch" standardises it over the imagined batch (mean and
    std of the live steps), a wmkit switch: with a dense positive reward the returns are large (about r / (1 -
    gamma)) and, while the critic still lags behind them, every sampled action gets a large positive advantage and
    the policy collapses within a few updates; "return" divides R - V by DreamerV3's max(1, S), S the running
    5th-95th percentile range of the returns (``retnorm``, a :class:`wmkit.dreamer.ReturnNormalizer` kept across
    updates by the caller): a scale that follows the returns, not the advantages, so it never magnifies the noise
    of a batch whose advantages happen to be small."""
    x = env.reset(obs, act)  # (N, C, H, W)
    hc = ac.initial_state(obs.shape[0], obs.device)
    with torch.no_grad():  # burn-in of the actor-critic's LSTM on the first K-1 real frames
        for k in range(obs.shape[1] - 1):
            _, _, hc = ac(obs[:, k], hc)
    logits, values, actions, rewards, ends, frames = [], [], [], [], [], [x]
    for _ in range(horizon):
        lg, v, hc = ac(x, hc)  # (N, A), (N,)
        a = torch.multinomial(lg.detach().softmax(-1), 1, generator=generator).squeeze(-1)  # (N,)
        x, r, d = env.step(a)
        frames.append(x)
        logits.append(lg), values.append(v), actions.append(a), rewards.append(r), ends.append(d)
    with torch.no_grad():
        _, v_last, _ = ac(x, hc)  # bootstrap V(s_H)
    val = torch.stack(values + [v_last])  # (H+1, N)
    zero = torch.zeros_like(rewards[0])
    rew = torch.stack([zero] + rewards)  # (H+1, N): rew[t+1] follows action t
    con = 1 - torch.stack([zero] + ends)  # (H+1, N)
    ret = lambda_return(rew, val.detach(), con, gamma, lam).detach()  # (H, N)
    weight = imagination_weight(con, 1.0)  # (H, N): 1 until an imagined end, 0 after it
    logp_all = torch.stack(logits).log_softmax(-1)  # (H, N, A)
    act_t = torch.stack(actions)  # (H, N)
    logp = logp_all.gather(-1, act_t[..., None]).squeeze(-1)  # (H, N)
    ent = -(logp_all.exp() * logp_all).sum(-1)  # (H, N)
    base, scale = val[:-1].detach(), 1.0  # DIAMOND: advantage R - V, no normalisation
    if adv_norm == "batch":
        adv = ret - base
        mean = (adv * weight).sum() / weight.sum()
        std = (((adv - mean) ** 2 * weight).sum() / weight.sum()).sqrt()
        base, scale = base + mean, std.clamp(min=1e-6)  # actor_loss_terms computes (ret - base) / scale
    elif adv_norm == "return":
        if retnorm is None:
            raise ValueError("adv_norm='return' needs retnorm, a wmkit.dreamer.ReturnNormalizer kept across updates")
        _, scale = retnorm.update(ret[weight > 0])  # DreamerV3: (R - V) / max(1, P95 - P5), EMA of the percentiles
    elif adv_norm != "none":
        raise ValueError(f"adv_norm must be 'none' (DIAMOND), 'batch' or 'return' (DreamerV3), got {adv_norm!r}")
    loss_actor = actor_loss_terms(ret, base, logp, ent, weight, scale, entropy_weight, "reinforce").mean()
    loss_value = value_weight * ((val[:-1] - ret).pow(2) * weight).mean()
    mets = {"loss_actor": loss_actor.item(), "loss_value": loss_value.item(), "entropy": ent.mean().item(),
            "imag_reward": torch.stack(rewards).mean().item(), "imag_return": ret[0].mean().item(),
            "value": val[:-1].mean().item(), "imag_end": torch.stack(ends).mean().item(),
            "adv_scale": float(scale), "adv_std": float(((ret - val[:-1].detach()) * weight).std())}
    traj = {"frames": torch.stack(frames, 1), "actions": act_t.T, "rewards": rew[1:].T, "ends": con[1:].T.eq(0)}
    return loss_actor + loss_value, mets, traj  # traj: (N, H+1, C, H, W) frames, (N, H) the rest
# [/eq:imagination]
