"""DreamerV3 agent: world model + actor-critic learned in imagination (Hafner et al. 2023).

* World model (Sec. "World model learning", Eq. 4-5): encoder -> RSSM posterior; decoder, reward
  (two-hot), continue (Bernoulli) heads on the features [h, z]; KL balancing with free bits.
* Critic (Sec. "Critic learning", Eq. 7-8): two-hot critic trained on lambda-returns of imagined
  trajectories (horizon 15 from EVERY replayed posterior state), regularised towards a slow EMA copy.
  Recipe "2025" adds a replay value loss: the critic is also trained on lambda-returns of the real
  replayed sequence, bootstrapped with the imagined returns.
* Actor (Sec. "Actor learning", Eq. 12): advantages (R - v) / max(1, P95 - P5); REINFORCE for discrete
  actions, back-propagation through the learned dynamics for continuous ones (2023; the current code
  uses REINFORCE for both); entropy 3e-4. The actor reads sg(state) in imagination (v1
  ``policy = lambda s: actor(sg(s))``), so dynamics gradients reach it only through its actions.
* Recipe "2025" follows the current official agent: ``contdisc`` (continue target times 1 - 1/333,
  discount 1 and the continue probability in imagination), ``repval_grad`` and one joint backward pass
  (the world model steps together with actor and critic), no unimix in the discrete actor.

Speed: the imagination loop runs under ``no_grad`` for discrete actions (log-probs are recomputed in
one batched actor call afterwards), metrics stay tensors until one ``tolist()`` at the end of
``update`` (a single host sync), optimisers and clipping use foreach kernels.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
from torch import nn

from wmkit.dreamer.config import SIZES, DreamerConfig
from wmkit.dreamer.init import init_heads_, init_world_model_
from wmkit.dreamer.math import ReturnNormalizer, lambda_return
from wmkit.dreamer.networks import Actor, Decoder, Encoder, TwoHotHead, image_to_float, mlp_head
from wmkit.dreamer.optim import LaProp, clip_agc_
from wmkit.dreamer.rssm import RSSM
from wmkit.training import check_finite

IMAGE_SHAPE = (64, 64, 3)


def check_spaces(obs_space: dict, act_space: dict) -> None:
    """Raise a ValueError naming the key if the spaces are not what the agent supports."""
    if not isinstance(obs_space, dict) or not obs_space:
        raise ValueError(f"obs_space must be a non-empty dict name -> (shape, dtype), got {obs_space!r}")
    for key, spec in obs_space.items():
        if key not in ("image", "vector"):
            raise ValueError(f"obs_space key {key!r} is not supported; expected 'image' and/or 'vector'")
        shape, dtype = tuple(spec[0]), np.dtype(spec[1])
        if key == "image" and (shape != IMAGE_SHAPE or dtype != np.uint8):
            raise ValueError(f"obs_space['image'] must be ((64, 64, 3), uint8), got ({shape}, {dtype})")
        if key == "vector" and (len(shape) != 1 or shape[0] < 1 or dtype != np.float32):
            raise ValueError(f"obs_space['vector'] must be ((D,), float32), got ({shape}, {dtype})")
    if not isinstance(act_space, dict) or not isinstance(act_space.get("n"), (int, np.integer)) \
            or act_space["n"] < 1 or not isinstance(act_space.get("discrete"), (bool, np.bool_)):
        raise ValueError(f"act_space must be {{'n': int >= 1, 'discrete': bool}}, got {act_space!r}")


class WorldModel(nn.Module):
    def __init__(self, obs_space: dict, n_act: int, cfg: DreamerConfig):
        super().__init__()
        c = cfg
        self.encoder = Encoder(obs_space, c.cnn_depth, c.units, c.mlp_layers, c.norm, c.cnn, c.hidden_bias)
        self.rssm = RSSM(c, self.encoder.out_dim, n_act)
        self.feat_dim = c.deter + c.stoch * c.classes
        self.decoder = Decoder(obs_space, self.feat_dim, c.cnn_depth, c.units, c.mlp_layers, c.norm, c.cnn,
                               c.deter, bias=c.hidden_bias)
        self.reward = TwoHotHead(self.feat_dim, c.units, c.head_layers, c.norm, c.num_bins, c.bins_space,
                                 c.hidden_bias)
        self.cont = mlp_head(self.feat_dim, c.units, c.head_layers, c.norm, 1, c.hidden_bias)
        if c.init == "official":   # the recipe's initialisers (wmkit/dreamer/init.py)
            init_world_model_(self, c)

    # [eq:wm_loss]
    def loss(self, data: dict, cfg: DreamerConfig, gen: torch.Generator | None, cell=None,
             state: tuple | None = None) -> tuple:
        """L = beta_pred (L_dec + L_rew + L_cont) + beta_dyn L_dyn + beta_rep L_rep, mean over (B, T).

        ``state``: (deter, stoch) to start from (``replay_context``); None = the initial state."""
        B = data["is_first"].shape[0]
        if "image" in data:   # convert once, share between the encoder and the decoder loss
            data = {**data, "image": image_to_float(data["image"])}
        embed = self.encoder(data)                                                     # (B, T, E)
        first = data["is_first"].clone()
        if state is None:
            first[:, 0] = True                     # the replayed chunk starts from the initial state
            state = self.rssm.initial(B, embed.device)
        out = self.rssm.observe(embed, data["action"], first, state, gen, cell)
        feat = torch.cat([out["deter"], out["stoch"]], -1)                              # (B, T, F)
        dec = self.decoder.loss(self.decoder(feat), data)                               # (B, T)
        rew = self.reward.loss(self.reward(feat), data["reward"])                       # (B, T)
        cont_target = 1.0 - data["is_terminal"].float()
        if cfg.contdisc:   # current code: the continue head also carries the discount 1 - 1/333
            cont_target = cont_target * cfg.discount
        cont = nn.functional.binary_cross_entropy_with_logits(
            self.cont(feat).squeeze(-1).float(), cont_target, reduction="none")                 # (B, T)
        dyn, rep, kl = self.rssm.kl_losses(out["post"], out["prior"], cfg.free_nats)    # (B, T)
        total = (cfg.pred_scale * (dec + rew + cont) + cfg.dyn_scale * dyn + cfg.rep_scale * rep).mean()
        mets = {"wm_loss": total, "dec_loss": dec.mean(), "reward_loss": rew.mean(),
                "cont_loss": cont.mean(), "dyn_loss": dyn.mean(), "rep_loss": rep.mean(), "kl": kl.mean()}
        return total, out, feat, mets
    # [/eq:wm_loss]


def replay_returns(rew: torch.Tensor, term: torch.Tensor, first: torch.Tensor, boot: torch.Tensor,
                   disc: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lambda-returns along replayed sequences (B, T) -> returns and validity (B, T-1).

    R[t] = rew[t+1] + disc (1 - term[t+1]) ((1 - lam) boot[t+1] + lam R[t+1]), R[T-1] = boot[T-1].
    Where step t+1 starts a new episode (``first[t+1]``) the transition is not real: R[t] = boot[t] and
    the step gets weight 0.
    """
    rew, con, boot = rew.T, 1.0 - term.float().T, boot.T                                  # (T, B)
    ok = (~first[:, 1:]).float().T                                                       # (T-1, B)
    # R[t] = a[t] + b[t] R[t+1]: the lambda-return where the next step is valid, else boot[t]
    a = ok * (rew[1:] + disc * con[1:] * (1 - lam) * boot[1:]) + (1 - ok) * boot[:-1]
    b = ok * disc * con[1:] * lam                                                        # (T-1, B)
    out = [boot[-1]]
    for t in reversed(range(boot.shape[0] - 1)):
        out.append(a[t] + b[t] * out[-1])
    return torch.stack(out[:0:-1]).T.detach(), ok.T                                      # (B, T-1)


# [eq:imag_weight]
def imagination_weight(con: torch.Tensor, disc: float) -> torch.Tensor:
    """Weight of imagined step t: the probability that the trajectory is still alive there,
    cumprod(disc * con)[t] / disc (v1 ``traj['weight']``). con (H+1, N) -> (H, N), no gradient."""
    return (torch.cumprod(disc * con, 0) / disc)[:-1].detach()
# [/eq:imag_weight]


# [eq:actor_loss]
def actor_loss_terms(ret: torch.Tensor, base: torch.Tensor, logp: torch.Tensor, ent: torch.Tensor,
                     weight: torch.Tensor, scale: torch.Tensor | float, eta: float, grad: str) -> torch.Tensor:
    """Per-step actor loss (H, N); MINIMISING it raises the normalised advantage and the entropy.

    adv = (R - base) / scale. REINFORCE: -(log pi(a) sg(adv) + eta H[pi]); backprop: -(adv + eta H[pi]),
    where the gradient of R (and of the baseline, which v1 does not detach) flows through the dynamics.
    Both weighted by sg(weight).
    """
    adv = (ret - base) / scale                                                          # (H, N)
    if grad == "reinforce":
        return -(logp * adv.detach() + eta * ent) * weight.detach()
    if grad == "backprop":
        return -(adv + eta * ent) * weight.detach()
    raise ValueError(f"grad must be 'reinforce' or 'backprop', got {grad!r}")
# [/eq:actor_loss]


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Parameters get no gradients inside (gradients still flow THROUGH the modules)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Agent:
    """The DreamerV3 agent (see module docstring). Public API: ``initial_state``, ``policy``, ``update``,
    ``imagine_report``, ``state_dict``/``load_state_dict``, ``param_counts``."""

    def __init__(self, obs_space: dict, act_space: dict, cfg: DreamerConfig | None = None,
                 device: str | torch.device = "cpu", seed: int = 0):
        check_spaces(obs_space, act_space)
        self.cfg = cfg = cfg or DreamerConfig()
        self.obs_space = {k: (tuple(v[0]), np.dtype(v[1])) for k, v in obs_space.items()}
        self.n_act, self.discrete = int(act_space["n"]), bool(act_space["discrete"])
        self.device = torch.device(device)
        self.seed = seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.wm = WorldModel(self.obs_space, self.n_act, cfg).to(self.device)
            F = self.wm.feat_dim
            self.actor = Actor(F, self.n_act, self.discrete, cfg.units, cfg.mlp_layers, cfg.norm,
                               cfg.actor_unimix, cfg.actor_min_std, cfg.actor_max_std,
                               cfg.hidden_bias).to(self.device)
            self.critic = TwoHotHead(F, cfg.units, cfg.mlp_layers, cfg.norm, cfg.num_bins,
                                     cfg.bins_space, cfg.hidden_bias).to(self.device)
            if cfg.init == "official":   # the recipe's initialisers (wmkit/dreamer/init.py)
                init_heads_(self.actor, self.critic, cfg)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.gen = torch.Generator(self.device).manual_seed(seed)           # update-time sampling
        self.act_gen = torch.Generator(self.device).manual_seed(seed + 1)   # acting
        self.retnorm = ReturnNormalizer(cfg.retnorm_rate, cfg.retnorm_low, cfg.retnorm_high,
                                        cfg.retnorm_limit, device=self.device)
        self.opts = {name: self._make_opt(mod, lr, eps) for name, mod, lr, eps in (
            ("wm", self.wm, cfg.model_lr, cfg.model_eps), ("actor", self.actor, cfg.actor_lr, cfg.ac_eps),
            ("critic", self.critic, cfg.critic_lr, cfg.ac_eps))}
        self.clips = {"wm": cfg.model_clip, "actor": cfg.ac_clip, "critic": cfg.ac_clip}
        self.step = 0
        self._obs_cell, self._img_cell = self.wm.rssm.obs_cell, self.img_cell
        if cfg.compile:   # fuse the small per-step ops of the two loops (measure: wmkit bench dreamer)
            self._obs_cell = torch.compile(self.wm.rssm.obs_cell, dynamic=False)
            self._img_cell = torch.compile(self.img_cell, dynamic=False)

    def _make_opt(self, module: nn.Module, lr: float, eps: float) -> torch.optim.Optimizer:
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(module.parameters(), lr=lr, eps=eps, foreach=True)
        return LaProp(module.parameters(), lr=lr, eps=self.cfg.laprop_eps, warmup=self.cfg.warmup)

    def _clip(self, name: str, module: nn.Module) -> torch.Tensor:
        if self.cfg.optimizer == "adam":
            return torch.nn.utils.clip_grad_norm_(module.parameters(), self.clips[name], foreach=True)
        return clip_agc_(list(module.parameters()), self.cfg.agc)

    # ---- input checking --------------------------------------------------------------------------
    def _check(self, x, key: str, lead: tuple, shape: tuple, dtypes: tuple, what: str) -> None:
        if tuple(x.shape) != (*lead, *shape):
            raise ValueError(f"{what}[{key!r}] must have shape {(*lead, *shape)}, got {tuple(x.shape)}")
        if str(x.dtype).replace("torch.", "") not in dtypes:
            raise ValueError(f"{what}[{key!r}] must have dtype {' or '.join(dtypes)}, got {x.dtype}")

    def _prepare(self, data: dict, lead_ndim: int, what: str, need: tuple) -> dict:
        missing = [k for k in (*self.obs_space, *need) if k not in data]
        if missing:
            raise ValueError(f"{what} is missing keys {missing}; it has {sorted(data)}")
        ref = data["is_first"]
        lead = tuple(ref.shape[:lead_ndim])
        if len(ref.shape) != lead_ndim:
            raise ValueError(f"{what}['is_first'] must have {lead_ndim} axes, got shape {tuple(ref.shape)}")
        out = {}
        for k, (shape, dtype) in self.obs_space.items():
            self._check(data[k], k, lead, shape, (dtype.name,), what)
        for k in need:
            spec = {"action": ((self.n_act,), ("float32",)), "reward": ((), ("float32",)),
                    "is_first": ((), ("bool",)), "is_terminal": ((), ("bool",))}[k]
            self._check(data[k], k, lead, spec[0], spec[1], what)
        for k in (*self.obs_space, *need):
            out[k] = torch.as_tensor(data[k]).to(self.device, non_blocking=True)
        return out

    # ---- acting ----------------------------------------------------------------------------------
    @torch.no_grad()
    def initial_state(self, batch_size: int) -> dict:
        """Policy carry: dict of tensors (checkpointable with wmkit.checkpoint)."""
        deter, stoch = self.wm.rssm.initial(batch_size, self.device)
        return {"deter": deter.clone(), "stoch": stoch.clone(),
                "action": torch.zeros(batch_size, self.n_act, device=self.device)}

    @torch.no_grad()
    def policy(self, obs: dict, state: dict, mode: str = "train") -> tuple[np.ndarray, dict]:
        """One posterior step and one action per environment. obs: numpy (B, ...) + is_first (B,).

        ``mode``: "train" and "eval" both SAMPLE from the policy (the official agent does, in v1 and now);
        "greedy" takes the argmax / the mean instead (not what the paper's scores use)."""
        if mode not in ("train", "eval", "greedy"):
            raise ValueError(f"mode must be 'train', 'eval' or 'greedy', got {mode!r}")
        data = self._prepare(obs, 1, "obs", ("is_first",))
        rssm = self.wm.rssm
        keep = (~data["is_first"]).float().unsqueeze(-1)                                 # (B, 1)
        state = {k: state[k].to(self.device) for k in ("deter", "stoch", "action")}   # e.g. restored on CPU
        init_d, init_s = rssm.initial(keep.shape[0], self.device)
        deter = state["deter"] * keep + (1 - keep) * init_d                               # reset where first
        stoch, prev = state["stoch"] * keep + (1 - keep) * init_s, state["action"] * keep
        embed = self.wm.encoder(data)                                                    # (B, E)
        deter = rssm.core(deter, stoch, rssm.action_input(prev))                         # (B, D)
        B = deter.shape[0]
        stoch = rssm.sample(rssm.post_logits(deter, rssm.post_embed(embed)),
                            rssm.noise((B,), self.act_gen, self.device))
        dist = self.actor(torch.cat([deter, stoch], -1))
        action = self.actor.sample(dist, self.actor.noise((B,), self.act_gen, self.device),
                                   mode=(mode == "greedy"))
        if not self.discrete:
            action = action.clamp(-1.0, 1.0)
        return action.float().cpu().numpy(), {"deter": deter, "stoch": stoch, "action": action}

    # ---- learning --------------------------------------------------------------------------------
    def _imagine(self, deter: torch.Tensor, stoch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll the prior H steps with the actor from N starts -> feats (H+1, N, F), actions (H, N, A)."""
        H, N = self.cfg.imag_horizon, deter.shape[0]
        noise_a = self.actor.noise((H, N), self.gen, self.device)                         # (H, N, A)
        noise_z = self.wm.rssm.noise((H, N), self.gen, self.device)                       # (H, N, S, K)
        feats, actions = [torch.cat([deter, stoch], -1)], []
        for t in range(H):
            deter, stoch, action = self._img_cell(deter, stoch, noise_a[t], noise_z[t])
            feats.append(torch.cat([deter, stoch], -1))
            actions.append(action)
        return torch.stack(feats), torch.stack(actions)

    def img_cell(self, deter: torch.Tensor, stoch: torch.Tensor, noise_a: torch.Tensor,
                 noise_z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One imagination step: the actor picks a_t from sg(s_t), the prior gives s_{t+1}. (pure)"""
        feat = torch.cat([deter, stoch], -1).detach()      # v1/current: policy(sg(state))
        action = self.actor.sample(self.actor(feat), noise_a)                             # (N, A)
        deter, stoch = self.wm.rssm.img_step(deter, stoch, action, noise_z)
        return deter, stoch, action

    # [eq:actor_critic]
    def _actor_critic_loss(self, start: tuple, start_cont: torch.Tensor) -> tuple:
        cfg, wm = self.cfg, self.wm
        backprop = not self.discrete and cfg.actor_grad_cont == "backprop"
        if backprop:   # dynamics backprop: gradients flow through the model to the actions
            with frozen(wm, self.critic):
                feats, actions = self._imagine(*start)                                   # (H+1, N, F)
        else:          # REINFORCE: the imagined trajectory is a constant (current code: sg(imgfeat))
            with torch.no_grad():
                feats, actions = self._imagine(*start)
        with frozen(wm), torch.set_grad_enabled(backprop):
            rew = wm.reward.pred(wm.reward(feats[1:]).float())                           # (H, N)
            cont = wm.cont(feats).squeeze(-1).float()                                    # (H+1, N) logits
        if cfg.contdisc:   # current code: continue PROBABILITY at every state, discount 1
            con, disc = torch.sigmoid(cont), 1.0
        else:              # 2023: first = 1 - terminal of the start, then the head's mode; gamma = 0.997
            con, disc = torch.cat([start_cont[None], (cont[1:] > 0).float()]), cfg.discount
        if backprop:       # the value must pass gradients to the actor, not to the critic
            with frozen(self.critic):
                val = self.critic.pred(self.critic(feats).float())                       # (H+1, N)
            logits = self.critic(feats[:-1].detach()).float()                            # (H, N, K)
        else:              # one critic pass: its logits train the critic, their mean is the value
            logits = self.critic(feats[:-1]).float()                                     # (H, N, K)
            with torch.no_grad():
                val = self.critic.pred(torch.cat([logits.detach(), self.critic(feats[-1:]).float()]))
        rew = torch.cat([torch.zeros_like(rew[:1]), rew])                                # (H+1, N)
        ret = lambda_return(rew, val, con, disc, cfg.lam)                                # (H, N)
        weight = imagination_weight(con, disc)                                           # (H, N)
        _, scale = self.retnorm.update(ret)
        # v1 backprop: the baseline v(s_t) is NOT detached (its gradient reaches the actor too)
        base = val[:-1] if backprop else val[:-1].detach()
        logp, ent = self.actor.log_prob_entropy(self.actor(feats[:-1].detach()), actions.detach())
        actor_loss = actor_loss_terms(ret, base, logp.float(), ent.float(), weight, scale, cfg.actor_entropy,
                                      "backprop" if backprop else "reinforce").mean()
        target = ret.detach()
        with torch.no_grad():
            slow = self.slow_critic.pred(self.slow_critic(feats[:-1]).float())           # (H, N)
        critic_loss = ((self.critic.loss(logits, target) + cfg.slowreg * self.critic.loss(logits, slow))
                       * weight).mean()
        adv = (ret - val[:-1]).detach() / scale
        mets = {"actor_loss": actor_loss, "critic_loss": critic_loss, "actor_entropy": ent.mean(),
                "imag_return": ret.mean(), "imag_reward": rew[1:].mean(), "value": val.mean(),
                "return_scale": scale, "advantage_abs": adv.abs().mean(), "imag_weight": weight.mean()}
        return actor_loss, critic_loss, ret.detach(), mets
    # [/eq:actor_critic]

    # [eq:repval]
    def _replay_value_loss(self, feat: torch.Tensor, data: dict, boot: torch.Tensor) -> torch.Tensor:
        """2025 recipe: the critic also learns from the REAL replayed sequence (feat (B, T, F)), with
        lambda-returns of the replayed rewards bootstrapped by the imagined return of each replayed state
        (boot (B, T))."""
        cfg = self.cfg
        ret, valid = replay_returns(data["reward"], data["is_terminal"], data["is_first"], boot,
                                    cfg.discount, cfg.lam)                               # (B, T-1)
        logits = self.critic(feat[:, :-1]).float()     # feat detached by the caller unless repval_grad
        with torch.no_grad():
            slow = self.slow_critic.pred(self.slow_critic(feat[:, :-1]))
        loss = self.critic.loss(logits, ret) + cfg.slowreg * self.critic.loss(logits, slow)
        return (loss * valid).mean()
    # [/eq:repval]

    def _autocast(self):
        """bf16 autocast when ``precision == "bf16"`` (parameters stay fp32), else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def update(self, batch: dict) -> dict[str, float]:
        """One full update: world model, then actor and critic in imagination. Returns floats.

        2023 order (``joint_update=False``): the world model steps first, imagination then uses the
        updated model. Current code (``joint_update=True``): one backward pass of the summed losses,
        then every optimiser steps (the replay value loss reaches the world model if ``repval_grad``)."""
        data = self._prepare(batch, 2, "batch", ("action", "reward", "is_first", "is_terminal"))
        cfg = self.cfg
        B, T = data["is_first"].shape
        context = None   # replay_context: start from the latent the replay stored before the chunk
        if "context_deter" in batch:
            context = tuple(torch.as_tensor(batch[f"context_{k}"]).to(self.device, torch.float32)
                            for k in ("deter", "stoch"))
            if context[0].shape != (B, cfg.deter) or context[1].shape != (B, cfg.stoch * cfg.classes):
                raise ValueError(f"batch context_deter/context_stoch must be ({B}, {cfg.deter}) and "
                                 f"({B}, {cfg.stoch * cfg.classes}), got {tuple(context[0].shape)}, "
                                 f"{tuple(context[1].shape)}")
        with self._autocast():
            wm_loss, out, feat, mets = self.wm.loss(data, cfg, self.gen, self._obs_cell, context)
        # the recomputed latents, for the replay to store (replay_context); None without a context
        self.last_latents = None if context is None else {
            "deter": out["deter"].detach().float().cpu().numpy(), "stoch": out["stoch"].detach().float().cpu().numpy()}
        if not cfg.joint_update:
            self.opts["wm"].zero_grad(set_to_none=True)
            wm_loss.backward()
            mets["wm_grad_norm"] = self._clip("wm", self.wm)
            self.opts["wm"].step()

        start = (out["deter"].detach().reshape(B * T, -1), out["stoch"].detach().reshape(B * T, -1))
        start_cont = 1.0 - data["is_terminal"].float().reshape(B * T)
        with self._autocast():
            actor_loss, critic_loss, ret, ac_mets = self._actor_critic_loss(start, start_cont)
            mets.update(ac_mets)
            if cfg.repval_scale > 0:
                rfeat = feat if cfg.repval_grad else feat.detach()
                repval = self._replay_value_loss(rfeat, data, ret[0].reshape(B, T))
                critic_loss = critic_loss + cfg.repval_scale * repval
                mets["repval_loss"] = repval
        names = ("wm", "actor", "critic") if cfg.joint_update else ("actor", "critic")
        for name in names:
            self.opts[name].zero_grad(set_to_none=True)
        total = actor_loss + critic_loss + (wm_loss if cfg.joint_update else 0.0)
        total.backward()
        if cfg.joint_update:
            mets["wm_grad_norm"] = self._clip("wm", self.wm)
        mets["actor_grad_norm"] = self._clip("actor", self.actor)
        mets["critic_grad_norm"] = self._clip("critic", self.critic)
        for name in names:
            self.opts[name].step()
        with torch.no_grad():   # slow critic: EMA with fraction 0.02 after every update
            torch._foreach_lerp_(list(self.slow_critic.parameters()), list(self.critic.parameters()),
                                 cfg.slow_critic_fraction)
        self.step += 1
        keys = list(mets)
        values = torch.stack([mets[k].detach().float().reshape(()) for k in keys]).tolist()  # one sync
        result = dict(zip(keys, values))
        # components first, so that the message names the loss that went bad, not the total
        watch = sorted((k for k in result if k.endswith(("loss", "norm"))), key=lambda k: k == "wm_loss")
        check_finite({k: result[k] for k in watch}, self.step)
        return result

    # ---- the scrubber ----------------------------------------------------------------------------
    @torch.no_grad()
    def imagine_report(self, batch: dict, context: int = 5, horizon: int | None = None) -> dict:
        """Posterior for ``context`` steps, then the prior open-loop with the batch's real actions."""
        data = self._prepare(batch, 2, "batch", ("action", "reward", "is_first", "is_terminal"))
        B, T = data["is_first"].shape
        horizon = T - context if horizon is None else horizon
        if context < 1 or horizon < 0 or context + horizon > T:
            raise ValueError(f"need 1 <= context and context + horizon <= T={T}, got {context}, {horizon}")
        gen = torch.Generator(self.device).manual_seed(self.seed + 2)
        rssm = self.wm.rssm
        embed = self.wm.encoder({k: v[:, :context] for k, v in data.items() if k in self.obs_space})
        first = data["is_first"][:, :context].clone()
        first[:, 0] = True
        out = rssm.observe(embed, data["action"][:, :context], first, rssm.initial(B, self.device), gen)
        deters, stochs = list(out["deter"].unbind(1)), list(out["stoch"].unbind(1))
        for t in range(context, context + horizon):
            d, s = rssm.img_step(deters[-1], stochs[-1], data["action"][:, t], rssm.noise((B,), gen, self.device))
            deters.append(d)
            stochs.append(s)
        feat = torch.cat([torch.stack(deters, 1), torch.stack(stochs, 1)], -1)           # (B, L, F)
        dec = self.wm.decoder(feat)
        L = context + horizon
        rep = {"reward": self.wm.reward.pred(self.wm.reward(feat)),
               "cont": torch.sigmoid(self.wm.cont(feat).squeeze(-1)),
               "value": self.critic.pred(self.critic(feat)),
               "real_reward": data["reward"][:, :L]}
        if "image" in dec:
            rep["real"] = data["image"][:, :L]
            rep["imagined"] = ((dec["image"] + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        if "vector" in dec:
            rep["real_vector"] = data["vector"][:, :L]
            rep["imagined_vector"] = self.wm.decoder.vector_mean(dec)
        return {k: v.cpu().numpy() for k, v in rep.items()}

    # ---- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"wm": self.wm.state_dict(), "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(), "slow_critic": self.slow_critic.state_dict(),
                "opts": {k: o.state_dict() for k, o in self.opts.items()},
                "retnorm": self.retnorm.state_dict(), "step": self.step,
                "gen": self.gen.get_state(), "act_gen": self.act_gen.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.wm.load_state_dict(sd["wm"])
        self.actor.load_state_dict(sd["actor"])
        self.critic.load_state_dict(sd["critic"])
        self.slow_critic.load_state_dict(sd["slow_critic"])
        for k, o in self.opts.items():
            o.load_state_dict(sd["opts"][k])
        self.retnorm.load_state_dict(sd["retnorm"])
        self.step = int(sd["step"])
        self.gen.set_state(sd["gen"].cpu())
        self.act_gen.set_state(sd["act_gen"].cpu())

    def param_counts(self) -> dict[str, int]:
        """Parameters per part (the slow critic, a non-trained copy, is not counted)."""
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        wm = self.wm
        counts = {"encoder": n(wm.encoder), "rssm": n(wm.rssm), "decoder": n(wm.decoder),
                  "reward": n(wm.reward), "cont": n(wm.cont), "actor": n(self.actor),
                  "critic": n(self.critic)}
        counts["world_model"] = n(wm)
        counts["total"] = counts["world_model"] + counts["actor"] + counts["critic"]
        return counts


def size_table(recipe: str = "2023", n_act: int = 17) -> dict[str, int]:
    """Total parameters of every size preset for a 64x64x3 image and ``n_act`` discrete actions.

    Built on the ``meta`` device (no memory), so even the 400M preset costs nothing.
    """
    obs = {"image": (IMAGE_SHAPE, np.uint8)}
    out = {}
    for name in SIZES:
        cfg = DreamerConfig(recipe=recipe, size=name)
        with torch.device("meta"):
            wm = WorldModel(obs, n_act, cfg)
            F = wm.feat_dim
            actor = Actor(F, n_act, True, cfg.units, cfg.mlp_layers, cfg.norm, cfg.unimix, 0.1, 1.0, cfg.hidden_bias)
            critic = TwoHotHead(F, cfg.units, cfg.mlp_layers, cfg.norm, cfg.num_bins, cfg.bins_space,
                                cfg.hidden_bias)
        out[name] = sum(p.numel() for m in (wm, actor, critic) for p in m.parameters())
    return out
