"""Recurrent State-Space Model of DreamerV3 (Hafner et al. 2023, Sec. "World model learning", Eq. 1-5).

State = (h, z): h is the GRU's deterministic state (``deter``), z is ``stoch`` categorical variables
of ``classes`` classes each, kept as a flat one-hot vector (stoch*classes,).

    sequence model     h_t = f(h_{t-1}, z_{t-1}, a_t)        (``core``; a_t is the action that led to x_t)
    encoder/posterior  z_t ~ q(z_t | h_t, x_t)                (``post_logits``)
    dynamics/prior     z^_t ~ p(z^_t | h_t)                   (``prior_logits``)

Every categorical mixes in 1% uniform ("unimix", Sec. "Robust predictions") and is sampled with
straight-through gradients. The loss on the latents is KL *balancing* with free bits (Eq. 5):

    L_dyn = max(1, KL[sg(q) || p])   (trains the prior)      L_rep = max(1, KL[q || sg(p)])   (trains q)

Speed: ``observe`` precomputes everything that does not depend on the recursion (the action and
embedding projections for all T steps at once, the prior for all steps after the loop), so the Python
loop runs only the GRU cell, the posterior layer and the sample.

Initial state (``initial``): "learned" in the 2023 code -- h0 = tanh(w) with a learned w, z0 = the mode
of the prior at h0 (v1 ``nets.RSSM.initial``) -- and zeros in the current code. The state is reset to it
wherever ``is_first``, and every replayed chunk starts from it.

Actions are scaled by a * sg(clip / max(clip, |a|)) before they enter the RSSM, in observe and in
imagine (v1 ``action_clip: 1.0``; the current code's ``action /= sg(max(1, |a|))`` is the same map).

Recipes: "2023" feeds one projection of [z, a] and h into a LayerNorm GRU (the paper); "2025" feeds three
normed projections (h, z, a) into a block-diagonal GRU with one hidden block layer (official code). With
``blocks`` > 1 every block of the GRU sees its own slice of h plus the WHOLE input x (official
``_core``: ``concat([flat2group(deter), x.repeat(g)])``), in both recipes.
"""

from __future__ import annotations

import torch
from torch import nn

from wmkit.dreamer.networks import gumbel_noise, make_norm, softmax, tanh


class BlockLinear(nn.Module):
    """Block-diagonal linear map: ``blocks`` independent (in/blocks -> out/blocks) linears."""

    def __init__(self, in_dim: int, out_dim: int, blocks: int, bias: bool = True):
        super().__init__()
        if in_dim % blocks or out_dim % blocks:
            raise ValueError(f"in_dim={in_dim} and out_dim={out_dim} must be divisible by blocks={blocks}")
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, in_dim // blocks, out_dim // blocks))
        nn.init.uniform_(self.weight, -(blocks / in_dim) ** 0.5, (blocks / in_dim) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.blocks
        if g == 1:
            y = x @ self.weight[0]
        else:
            y = torch.einsum("ngi,gio->ngo", x.reshape(x.shape[0], g, -1), self.weight)
            y = y.reshape(x.shape[0], -1)
        return y if self.bias is None else y + self.bias


class RSSM(nn.Module):
    def __init__(self, cfg, embed_dim: int, act_dim: int):
        super().__init__()
        D, Hd, S, K = cfg.deter, cfg.hidden, cfg.stoch, cfg.classes
        self.deter, self.stoch, self.classes, self.blocks = D, S, K, cfg.blocks
        self.unimix, self.recipe = cfg.unimix, cfg.recipe
        norm, bias = cfg.norm, cfg.hidden_bias   # bias: of the layers a norm follows (2023 none, 2025 all)
        act = nn.SiLU()
        self.act = act
        if cfg.recipe == "2023":
            # x = SiLU(Norm(W_z z + W_a a)); [x, h] -> Norm(W [x, h]) -> GRU gates
            self.in_stoch = nn.Linear(S * K, Hd, bias=bias)    # with in_act: one Linear on [z, a] (v1 img_in)
            self.in_act = nn.Linear(act_dim, Hd, bias=False)
            self.in_norm = make_norm(norm, Hd)
            # each block: [its slice of h (D/g), the whole x (Hd)] -> its 3 gates (3D/g)
            self.gru = BlockLinear(D + cfg.blocks * Hd, 3 * D, cfg.blocks, bias=bias)
            self.gru_norm = make_norm(norm, 3 * D)
        else:
            # three normed projections, broadcast to every block, one block hidden layer, block GRU
            self.in_deter = nn.Sequential(nn.Linear(D, Hd, bias=bias), make_norm(norm, Hd), nn.SiLU())
            self.in_stoch = nn.Sequential(nn.Linear(S * K, Hd, bias=bias), make_norm(norm, Hd), nn.SiLU())
            self.in_act = nn.Sequential(nn.Linear(act_dim, Hd, bias=bias), make_norm(norm, Hd), nn.SiLU())
            g = cfg.blocks
            self.hid = BlockLinear(D + g * 3 * Hd, D, g, bias=bias)
            self.hid_norm = make_norm(norm, D)
            self.gru = BlockLinear(D, 3 * D, g)
        # posterior q(z | h, x): SiLU(Norm(W_h h + W_e e + b)) -> logits (one Linear on [h, e] officially)
        self.post_deter = nn.Linear(D, Hd, bias=bias)
        self.post_embed = nn.Linear(embed_dim, Hd, bias=False)
        self.post_norm = make_norm(norm, Hd)
        self.post_out = nn.Linear(Hd, S * K)
        # prior p(z | h): ``imglayers`` hidden layers (1 in 2023, 2 in the current code)
        layers: list[nn.Module] = []
        for i in range(cfg.imglayers):
            layers += [nn.Linear(D if i == 0 else Hd, Hd, bias=bias), make_norm(norm, Hd), nn.SiLU()]
        self.prior = nn.Sequential(*layers, nn.Linear(Hd, S * K))
        self.action_clip = cfg.action_clip
        self.learned_initial = cfg.initial == "learned"
        if self.learned_initial:   # v1: self.get('initial', jnp.zeros, ...) -> h0 = tanh(w)
            self.initial_deter = nn.Parameter(torch.zeros(D))

    # ---- pieces ----------------------------------------------------------------------------------
    # [eq:initial]
    def initial(self, batch: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial state: deter (B, D), stoch (B, S*K). Learned (2023): h0 = tanh(w), z0 = the one-hot
        mode of p(z | h0), differentiable in w through h0. Zeros (current code)."""
        if not self.learned_initial:
            return (torch.zeros(batch, self.deter, device=device),
                    torch.zeros(batch, self.stoch * self.classes, device=device))
        deter = torch.tanh(self.initial_deter).to(device)                                # (D,)
        logits = self.prior_logits(deter[None])                                          # (1, S, K)
        mode = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        return deter.expand(batch, -1), mode.flatten(-2).expand(batch, -1)
    # [/eq:initial]

    # [eq:action_clip]
    def action_input(self, action: torch.Tensor) -> torch.Tensor:
        """The action's contribution to the GRU input, computable for all steps at once. (..., Hd)"""
        if self.action_clip > 0:   # a * sg(clip / max(clip, |a|)): |a| <= clip, gradient scaled
            action = action * (self.action_clip / action.abs().clamp(min=self.action_clip)).detach()
        return self.in_act(action)
    # [/eq:action_clip]

    # [eq:gru]
    def core(self, deter: torch.Tensor, stoch: torch.Tensor, act_in: torch.Tensor) -> torch.Tensor:
        """h_t = f(h_{t-1}, z_{t-1}, a_t) with ``act_in = action_input(a_t)``. (B, D)"""
        B = deter.shape[0]
        if self.recipe == "2023":
            g = self.blocks
            x = self.act(self.in_norm(self.in_stoch(stoch) + act_in))                  # (B, Hd)
            x = torch.cat([deter.reshape(B, g, -1), x.unsqueeze(1).expand(B, g, x.shape[-1])], -1)
            x = self.gru_norm(self.gru(x.reshape(B, -1)))                               # (B, 3D)
        else:
            g = self.blocks
            x = torch.cat([self.in_deter(deter), self.in_stoch(stoch), act_in], -1)      # (B, 3Hd)
            x = torch.cat([deter.reshape(B, g, -1), x.unsqueeze(1).expand(B, g, x.shape[-1])], -1)
            x = self.act(self.hid_norm(self.hid(x.reshape(B, -1))))                     # (B, D)
            x = self.gru(x)                                                              # (B, 3D)
        if self.blocks > 1:   # gates are laid out per block: (B, g, 3, D/g)
            reset, cand, update = x.reshape(B, self.blocks, 3, -1).unbind(2)
            reset, cand, update = (t.reshape(B, -1) for t in (reset, cand, update))
        else:
            reset, cand, update = x.chunk(3, -1)
        reset = torch.sigmoid(reset)
        cand = tanh(reset * cand)
        update = torch.sigmoid(update - 1.0)     # bias -1: start out remembering
        return update * cand + (1 - update) * deter                                       # (B, D)
    # [/eq:gru]

    # [eq:unimix]
    def _logits(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw (..., S*K) -> log-probs (..., S, K) with 1% uniform mixed in."""
        probs = softmax(raw.float().reshape(*raw.shape[:-1], self.stoch, self.classes))   # fp32 under bf16
        return ((1 - self.unimix) * probs + self.unimix / self.classes).log()
    # [/eq:unimix]

    def post_logits(self, deter: torch.Tensor, embed_in: torch.Tensor) -> torch.Tensor:
        """q(z_t | h_t, x_t) with ``embed_in = post_embed(e_t)`` -> log-probs (..., S, K)."""
        return self._logits(self.post_out(self.act(self.post_norm(self.post_deter(deter) + embed_in))))

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        """p(z_t | h_t) -> log-probs (..., S, K)."""
        return self._logits(self.prior(deter))

    # [eq:straight_through]
    def sample(self, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One-hot sample with straight-through gradients: onehot + p - sg(p). (..., S*K)

        ``noise`` is Gumbel noise of the logits' shape (drawn for all steps at once by the caller), so
        that argmax(logits + noise) is an exact sample (the Gumbel-max trick).
        """
        idx = (logits + noise).argmax(-1, keepdim=True)
        probs = logits.exp()
        onehot = torch.zeros_like(probs).scatter_(-1, idx, 1.0)
        return (onehot + probs - probs.detach()).flatten(-2)
    # [/eq:straight_through]

    def noise(self, shape: tuple, gen: torch.Generator | None, device) -> torch.Tensor:
        """Gumbel noise (*shape, S, K) for ``sample``."""
        return gumbel_noise((*shape, self.stoch, self.classes), gen, device)

    # ---- sequences -------------------------------------------------------------------------------
    def obs_cell(self, deter: torch.Tensor, stoch: torch.Tensor, keep: torch.Tensor, act_in: torch.Tensor,
                 emb_in: torch.Tensor, noise: torch.Tensor, init: tuple | None = None) -> tuple[torch.Tensor, ...]:
        """One posterior step (the body of ``observe``; pure, so ``torch.compile`` can fuse it).
        Where ``keep`` is 0 the state is reset to ``init`` (the initial state; None = zeros)."""
        deter, stoch = deter * keep, stoch * keep                                         # reset
        if init is not None:
            deter, stoch = deter + (1 - keep) * init[0], stoch + (1 - keep) * init[1]
        deter = self.core(deter, stoch, act_in)                                           # (B, D)
        logit = self.post_logits(deter, emb_in)                                           # (B, S, K)
        return deter, self.sample(logit, noise), logit

    def observe(self, embed: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator | None,
                cell=None) -> dict:
        """Posterior rollout over a batch of sequences.

        embed (B, T, E), action (B, T, A) (a_t led to x_t), is_first (B, T) bool. The state is reset
        to the initial state where ``is_first``. Returns deter (B, T, D), stoch (B, T, S*K), post and prior
        log-probs (B, T, S, K). ``cell`` replaces ``obs_cell`` (e.g. a compiled version).
        """
        B, T = embed.shape[:2]
        cell = cell or self.obs_cell
        keep = (~is_first).to(embed.dtype).unsqueeze(-1)                                 # (B, T, 1)
        act_in = self.action_input(action * keep)                                         # (B, T, Hd)
        emb_in = self.post_embed(embed)                                                   # (B, T, Hd)
        noise = self.noise((T, B), gen, embed.device)                                     # (T, B, S, K)
        deter, stoch = state
        init = self.initial(B, embed.device) if self.learned_initial else None
        deters, stochs, posts = [], [], []
        for t in range(T):
            deter, stoch, logit = cell(deter, stoch, keep[:, t], act_in[:, t], emb_in[:, t], noise[t], init)
            deters.append(deter)
            stochs.append(stoch)
            posts.append(logit)
        deter = torch.stack(deters, 1)                                                    # (B, T, D)
        return {"deter": deter, "stoch": torch.stack(stochs, 1), "post": torch.stack(posts, 1),
                "prior": self.prior_logits(deter)}                                        # (B, T, S, K)

    def img_step(self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor,
                 noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the prior (imagination): (B, D), (B, S*K), action (B, A) -> next state."""
        deter = self.core(deter, stoch, self.action_input(action))
        return deter, self.sample(self.prior_logits(deter), noise)

    # [eq:kl_balance]
    def kl_losses(self, post: torch.Tensor, prior: torch.Tensor, free: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """KL balancing with free bits on log-probs (B, T, S, K) -> (dyn, rep, raw KL), each (B, T).

        dyn = max(free, KL[sg(q) || p]) moves only the prior; rep = max(free, KL[q || sg(p)]) moves
        only the posterior (and through it the encoder). The KL is summed over the S latents first.
        """
        def kl(lq: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
            return (lq.exp() * (lq - lp)).sum((-2, -1))                                  # (B, T)

        dyn = kl(post.detach(), prior)
        rep = kl(post, prior.detach())
        return dyn.clamp(min=free), rep.clamp(min=free), dyn.detach()
    # [/eq:kl_balance]
