"""An action-conditioned JEPA world model that plans: V-JEPA 2-AC and the LeWM recipe, with CEM in feature space.

* V-JEPA 2-AC (Assran et al. 2025, section 3 "V-JEPA 2-AC", eq. 2-4; official ``facebookresearch/vjepa2``,
  ``app/vjepa_droid/train.py`` and ``src/models/ac_predictor.py``): a frozen video encoder E maps every frame
  (repeated to fill one tubelet) to N patch features z_t = LN(E(x_t)); a transformer predictor P with
  **block-causal** attention over frames reads [a_t, z_t^1..z_t^N] per frame and predicts z_{t+1}. It is trained with

      L_tf = mean_t | P(z_{<=t}, a_{<=t}) - z_{t+1} |_1                       (eq. 2, teacher forcing)
      L_ro = mean_k | P(zhat_{<=k}, a_{<=k}) - z_{k+1} |_1, zhat_0 = z_0, k < 2  (eq. 3, 2-step autoregressive rollout)

  and plans by minimising the energy  E(a_1..a_H) = | P^H(z_0, a) - z_goal |_1  (eq. 4) with the cross-entropy
  method (samples / elites / iterations: 400 / 10 / 10 by default, the values this project's brief gives).
* LeWM (Maes et al. 2026, ``lucas-maes/le-wm``: ``train.py``, ``config/train/lewm.yaml``): the encoder is trained
  end to end from pixels, with no EMA and no stop-gradient; the next-embedding MSE is regularised by SIGReg
  (Balestriero & LeCun 2025, LeJEPA, Algorithm 1) with weight 0.09, 1024 projections, 17 knots.
* ``regulariser``: "frozen" (V-JEPA 2-AC: a pretrained encoder, no gradient), "ema" (targets from an EMA copy,
  stop-gradient: the V-JEPA recipe end to end), "sigreg" (LeWM) or "none" (end to end with nothing against
  collapse: the demonstration that the encoder then maps everything to one point).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from wmkit.jepa.vjepa import VideoViT, VJEPAConfig, collapse_stats, ema_update, sincos_3d
from wmkit.nn import TransformerBlock, block_causal_mask, patchify_tubelets, sincos_1d

__all__ = ["ACConfig", "ACPredictor", "ACWorldModel", "Projector", "SIGReg", "cem"]


@dataclass
class ACConfig:
    """Sizes and recipe of an action-conditioned JEPA world model."""

    size: int = 32
    """frame height = width in pixels"""
    patch: int = 8
    """encoder patch size (N = (size / patch)^2 tokens per frame)"""
    dim: int = 64
    """encoder width"""
    depth: int = 2
    """encoder blocks"""
    heads: int = 4
    """encoder heads"""
    pred_dim: int = 64
    """predictor width"""
    pred_depth: int = 2
    """predictor blocks (V-JEPA 2-AC: 24 of width 1024)"""
    pred_heads: int = 4
    """predictor heads"""
    action_dim: int = 2
    """action size (Two-Rooms: 2-D velocity)"""
    action_block: int = 1
    """environment steps per predictor step (frameskip; LeWM / stable-worldmodel Two-Rooms: 5): the predictor reads
    the block's ``action_block`` actions concatenated and predicts the frame ``action_block`` steps later"""
    max_frames: int = 16
    """longest sequence the predictor's time table covers"""
    rollout_steps: int = 2
    """autoregressive steps of the rollout loss (V-JEPA 2-AC: 2)"""
    regulariser: Literal["frozen", "ema", "sigreg", "none"] = "ema"
    """what prevents collapse: frozen encoder, EMA target + stop-gradient, SIGReg (LeWM), or nothing"""
    loss: Literal["l1", "mse"] = "l1"
    """prediction loss: L1 (V-JEPA 2-AC) or MSE (LeWM)"""
    momentum: float = 0.99925
    """EMA momentum for regulariser='ema' (V-JEPA 2: constant 0.99925)"""
    sigreg_weight: float = 0.09
    """SIGReg weight (LeWM: 0.09)"""
    sigreg_proj: int = 1024
    """SIGReg random projections (LeWM: 1024)"""
    sigreg_samples: Literal["time", "all"] = "time"
    """which embeddings one SIGReg test sees: "time" = one test per time step over the batch (LeWM), "all" = one
    test over every (batch, time) embedding. The statistic of a collapsed cloud grows with the number of samples N
    (about 0.48 N) while a Gaussian's stays near 1.05, so at batch 16 with one pooled embedding per frame the LeWM
    form penalises collapse by only ~0.09 x 6.7 = 0.6 and the run collapses; "all" multiplies N by the window
    length"""
    normalize: bool = True
    """layer-normalise features (V-JEPA 2-AC normalize_reps=True); LeWM: False"""
    pooled: bool = False
    """one embedding per frame (mean of the tokens through an MLP projector, as LeWM's CLS + projector) instead of
    the N patch features (V-JEPA 2-AC)"""

    projector_norm: bool = True
    """BatchNorm1d inside the pooled projector (LeWM ``model/lewm.yaml``: ``norm_fn: BatchNorm1d``). Without it the
    pooled embeddings start with a tiny spread, where SIGReg's gradient (second order in the spread) vanishes, and
    the run collapses (measured: feature std 2e-4 after 300 steps)"""

    pool: Literal["mean", "cls"] = "mean"
    """with ``pooled``: how one embedding per frame is read from the encoder: "mean" of the output tokens, or "cls" =
    a learnable token prepended to the frame's tokens that attends to them through every encoder block, its output
    then projected (LeWM: the ViT's CLS token, ``last_hidden_state[:, 0]``). Mean pooling dilutes a 2-pixel agent
    into 1 / N of the embedding; a CLS token can attend to it"""
    projector_hidden: int = 0
    """hidden width of the pooled projector MLPs (0: 2 x dim, the earlier wmkit size; LeWM ``model/lewm.yaml``: 2048
    for width 192)"""
    pred_projector: bool = False
    """pass the predictor's output through a second projector MLP (LeWM ``pred_proj``: Linear-BatchNorm1d-GELU-Linear;
    needs ``pooled``). False: the predictor's linear output layer only (V-JEPA 2-AC)"""
    history: int = 0
    """frames of context the predictor sees when rolling out (LeWM ``history_size``: 3, the last 3 embeddings; train
    with ``length = history + 1`` windows so that planning never feeds positions the predictor was not trained on).
    0: the whole rollout so far (V-JEPA 2-AC)"""

    residual: bool = False
    """predict the change of every token, z_{t+1} = z_t + P(...), instead
    of the next features themselves (V-JEPA 2-AC, DINO-WM: False). Measured at the cpu profile: frames 5 steps apart
    differ by ~1 % of the features, and a direct predictor trained 300 steps ends 3x farther from the truth than
    copying its input; the residual form starts at that copy"""

    def encoder_config(self) -> VJEPAConfig:
        return VJEPAConfig(frames=2, size=self.size, patch=self.patch, tubelet=2, dim=self.dim, depth=self.depth,
                           heads=self.heads, pred_dim=self.pred_dim, pred_depth=1, pred_heads=self.pred_heads)


# [eq:sigreg]
class SIGReg(nn.Module):
    """Epps-Pulley test of N(0, 1) along random unit directions (LeJEPA Algorithm 1; LeWM ``module.SIGReg``).

    For projections x_m = <z, u_m> of N samples: T = N * int w(t) |phi_N(t) - exp(-t^2/2)|^2 dt, with the
    empirical characteristic function phi_N(t) = mean_n exp(i t x_n), window w(t) = exp(-t^2/2), and the
    integral over [-3, 3] as twice the trapezoid rule on 17 knots of [0, 3]. Input (..., N, D) -> scalar
    (mean over projections and leading dims). Under H0 (isotropic Gaussian), E[T] = int w(t) (1 - exp(-t^2)) dt.
    """

    def __init__(self, knots: int = 17, num_proj: int = 1024, t_max: float = 3.0):
        super().__init__()
        t = torch.linspace(0, t_max, knots)
        dt = t_max / (knots - 1)
        w = torch.full((knots,), 2 * dt)
        w[[0, -1]] = dt
        self.num_proj = num_proj
        self.register_buffer("t", t)
        self.register_buffer("phi", torch.exp(-t.square() / 2))  # N(0, 1) characteristic function
        self.register_buffer("weights", w * torch.exp(-t.square() / 2))

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if z.ndim < 2 or z.shape[-2] < 2:
            raise ValueError(f"SIGReg: expected (..., N >= 2 samples, D), got {tuple(z.shape)}")
        A = torch.randn(z.shape[-1], self.num_proj, generator=generator, device=z.device)  # (D, M)
        A = A / A.norm(dim=0, keepdim=True)  # unit directions
        xt = (z @ A).unsqueeze(-1) * self.t  # (..., N, M, K)
        err = (xt.cos().mean(-3) - self.phi).square() + xt.sin().mean(-3).square()  # (..., M, K)
        return ((err @ self.weights) * z.shape[-2]).mean()
# [/eq:sigreg]


class Projector(nn.Module):
    """LeWM's projector MLP: Linear -> BatchNorm1d (optional) -> GELU -> Linear, on (..., D) embeddings."""

    def __init__(self, dim: int, hidden: int, norm: bool = True):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.norm = nn.BatchNorm1d(hidden) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)  # (..., hidden)
        h = self.norm(h.reshape(-1, h.shape[-1])).reshape(h.shape)  # statistics over every embedding of the batch
        return self.fc2(F.gelu(h))  # (..., D)


class ACPredictor(nn.Module):
    """Frame-causal transformer: (z (B, T, N, D), a (B, T, A)) -> (B, T, N, D), output t predicts z_{t+1}."""

    def __init__(self, cfg: ACConfig):
        super().__init__()
        g = 1 if cfg.pooled else cfg.size // cfg.patch
        self.n = g * g
        self.embed = nn.Linear(cfg.dim, cfg.pred_dim)
        self.action = nn.Linear(cfg.action_dim * cfg.action_block, cfg.pred_dim)  # one block of actions
        self.register_buffer("pos", sincos_3d(cfg.max_frames, g, g, cfg.pred_dim), persistent=False)
        self.register_buffer("tpos", sincos_1d(cfg.max_frames, cfg.pred_dim), persistent=False)  # (T, Dp)
        self.blocks = nn.ModuleList(TransformerBlock(cfg.pred_dim, cfg.pred_heads, qkv_bias=True)
                                    for _ in range(cfg.pred_depth))
        self.norm = nn.LayerNorm(cfg.pred_dim)
        self.proj = nn.Linear(cfg.pred_dim, cfg.dim)
        self.residual = cfg.residual
        if cfg.residual:  # start as the identity map: the first prediction is "nothing moves"
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        B, T, N, _ = z.shape
        if a.shape[:2] != (B, T) or N != self.n or T > self.tpos.shape[0]:
            raise ValueError(f"ACPredictor: expected z (B, T <= {self.tpos.shape[0]}, {self.n}, D) and a (B, T, A); "
                             f"got {tuple(z.shape)} and {tuple(a.shape)}")
        x = self.embed(z) + rearrange(self.pos[:T * N], "(t n) d -> t n d", t=T)  # (B, T, N, Dp)
        act = (self.action(a) + self.tpos[:T])[:, :, None]  # (B, T, 1, Dp): one action token per frame
        x = rearrange(torch.cat([act, x], 2), "b t n d -> b (t n) d")  # (B, T*(N+1), Dp)
        mask = block_causal_mask(T, N + 1, device=z.device)  # frame t attends to frames <= t only
        for blk in self.blocks:
            x = blk(x, mask=mask)
        x = rearrange(x, "b (t n) d -> b t n d", t=T)[:, :, 1:]  # (B, T, N, Dp): drop the action tokens
        out = self.proj(self.norm(x))  # (B, T, N, D)
        return z + out if self.residual else out


class ACWorldModel(nn.Module):
    """Encoder + action-conditioned predictor + (optionally) an EMA target encoder; losses and planning energy."""

    def __init__(self, cfg: ACConfig, encoder: VideoViT | None = None):
        super().__init__()
        self.cfg = cfg
        # a passed encoder is shared under "frozen" (no gradient); every other recipe fine-tunes a copy of it (at
        # ACTrainConfig.encoder_lr_scale times the predictor's rate), so the caller's module -- e.g. a V-JEPA's target
        # encoder, which comes with requires_grad off -- is never changed
        if encoder is not None and cfg.regulariser != "frozen":
            encoder = copy.deepcopy(encoder)
        self.encoder = encoder if encoder is not None else VideoViT(cfg.encoder_config())
        self.encoder.requires_grad_(cfg.regulariser != "frozen")
        self.predictor = ACPredictor(cfg)
        self.target_encoder = None
        if cfg.regulariser == "ema":
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.sigreg = SIGReg(num_proj=cfg.sigreg_proj)
        if cfg.pred_projector and not cfg.pooled:
            raise ValueError("ACConfig.pred_projector needs pooled=True (LeWM projects one embedding per frame)")
        if cfg.history < 0:
            raise ValueError(f"ACConfig.history must be >= 0 (0: the whole rollout), got {cfg.history}")
        if cfg.pool not in ("mean", "cls") or (cfg.pool == "cls" and (not cfg.pooled or cfg.regulariser == "ema")):
            raise ValueError(f"ACConfig.pool: 'mean' or 'cls' (cls needs pooled=True and a recipe without an EMA "
                             f"target), got pool={cfg.pool!r}, pooled={cfg.pooled}, regulariser={cfg.regulariser!r}")
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, cfg.dim)) if cfg.pool == "cls" else None
        hidden = cfg.projector_hidden or 2 * cfg.dim
        self.projector = Projector(cfg.dim, hidden, cfg.projector_norm) if cfg.pooled else None
        self.pred_projector = Projector(cfg.dim, hidden, cfg.projector_norm) if cfg.pred_projector else None
        self.target_projector = (copy.deepcopy(self.projector).requires_grad_(False)
                                 if cfg.pooled and cfg.regulariser == "ema" else None)

    def _norm(self, z: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(z, (z.shape[-1],)) if self.cfg.normalize else z

    def encode(self, frames: torch.Tensor, target: bool = False) -> torch.Tensor:
        """(B, T, C, H, W) in [0, 1] -> features (B, T, N, D)."""
        enc, proj = self.encoder, self.projector
        if target and self.target_encoder is not None:
            enc, proj = self.target_encoder, self.target_projector
        with torch.set_grad_enabled(torch.is_grad_enabled() and not (target and self.cfg.regulariser in ("ema",
                                                                                                          "frozen"))):
            z = self._cls(enc, frames) if self.cls_token is not None else enc.encode_frames(frames)  # (B, T, N, D)
            if proj is not None:
                z = proj(z.mean(2, keepdim=True))  # (B, T, 1, D): one embedding per frame
            return self._norm(z)

    def _cls(self, enc: VideoViT, frames: torch.Tensor) -> torch.Tensor:
        """``pool="cls"``: the encoder run on [CLS, tokens] of every frame (repeated to one tubelet, as
        ``VideoViT.encode_frames``); returns the CLS output (B, T, 1, D)."""
        B, c = frames.shape[0], enc.cfg
        clips = repeat(frames, "b t c h w -> (b t) k c h w", k=c.tubelet)  # (B*T, t, C, H, W)
        tokens = patchify_tubelets(clips, c.patch, c.tubelet)  # (B*T, N, C*t*p*p)
        x = enc.patch_embed(tokens) + enc.pos[:tokens.shape[1]]  # (B*T, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)  # (B*T, 1 + N, D)
        for blk in enc.blocks:
            x = blk(x)
        return rearrange(enc.norm(x)[:, :1], "(b t) n d -> b t n d", b=B)  # (B, T, 1, D)

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean() if self.cfg.loss == "l1" else (a - b).square().mean()

    def predict(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The predictor, then LeWM's ``pred_proj`` if ``pred_projector``: z (B, T, N, D), a (B, T, A) -> same."""
        out = self.predictor(z, a)  # (B, T, N, D)
        return out if self.pred_projector is None else self.pred_projector(out)

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Autoregressive prediction from context z0 (B, T0, N, D) under actions (B, H, A) -> (B, H, N, D).
        ``actions[:, k]`` is taken after frame T0 - 1 + k. With ``cfg.history`` > 0 the predictor sees only the last
        ``history`` frames (and their actions) at every step, as LeWM's ``JEPA.rollout``."""
        T0 = z0.shape[1]
        hist = actions.new_zeros(actions.shape[0], T0 - 1, actions.shape[-1])  # no action known inside the context
        zs, acts = z0, torch.cat([hist, actions], 1)  # (B, T0 - 1 + H, A)
        keep = self.cfg.history
        preds = []
        for _ in range(actions.shape[1]):
            T = zs.shape[1]
            lo = max(0, T - keep) if keep else 0  # the context window
            nxt = self._norm(self.predict(zs[:, lo:], acts[:, lo:T])[:, -1:])  # (B, 1, N, D)
            preds.append(nxt)
            zs = torch.cat([zs, nxt], 1)
        return torch.cat(preds, 1)  # (B, H, N, D)

    def loss(self, frames: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, T, C, H, W), actions (B, T - 1, A) with actions[:, t] leading from frame t to t + 1."""
        B, T = frames.shape[:2]
        if actions.shape[:2] != (B, T - 1):
            raise ValueError(f"ACWorldModel.loss: actions must be (B={B}, T-1={T - 1}, A), got {tuple(actions.shape)}")
        z = self.encode(frames)  # (B, T, N, D): predictor inputs (no gradient when frozen)
        if self.cfg.regulariser == "ema":
            h = self.encode(frames, target=True)  # stop-gradient targets
        else:
            h = z  # frozen: the same features, no gradient; LeWM and 'none': the online features (gradient flows)
        return self.feature_loss(z, h, actions)

    def feature_loss(self, z: torch.Tensor, h: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses from encoded features: inputs z and targets h (B, T, N, D), actions (B, T - 1, A)."""
        c = self.cfg
        T = z.shape[1]
        # [eq:ac-loss]
        pred = self.predict(z[:, :-1], actions)  # (B, T-1, N, D): teacher forcing
        out = {"tf_loss": self._dist(self._norm(pred), h[:, 1:])}
        k = min(c.rollout_steps, T - 1)
        ro = self.rollout(z[:, :1], actions[:, :k]) if k > 0 else None  # (B, k, N, D)
        out["rollout_loss"] = self._dist(ro, h[:, 1:k + 1]) if ro is not None else z.new_zeros(())
        out["loss"] = out["tf_loss"] + out["rollout_loss"]
        # [/eq:ac-loss]
        if c.regulariser == "sigreg":
            if c.sigreg_samples == "time":
                emb = rearrange(z, "b t n d -> t (b n) d")  # per time step over the batch (LeWM)
            else:
                emb = rearrange(z, "b t n d -> (b t n) d")  # one test over all embeddings of the batch
            out["sigreg"] = self.sigreg(emb)
            out["loss"] = out["loss"] + c.sigreg_weight * out["sigreg"]
        out.update({k2: torch.tensor(v) for k2, v in collapse_stats(z).items()})
        return out

    def after_step(self) -> None:
        if self.cfg.regulariser == "ema":
            ema_update(self.target_encoder, self.encoder, self.cfg.momentum)
            if self.projector is not None:
                ema_update(self.target_projector, self.projector, self.cfg.momentum)

    @torch.no_grad()
    def energy(self, z0: torch.Tensor, goal: torch.Tensor, actions: torch.Tensor, mode: str = "last",
               base: float = 1.0) -> torch.Tensor:
        """Planning energy of S action sequences (S, H, A) from z0 (1, T0, N, D) to goal (1, N, D) -> (S,).

        ``mode="last"``: the distance of the last predicted frame (V-JEPA 2-AC eq. 4, LeWM); ``"all"``: a weighted
        mean over every predicted frame i = 0..H-1 with weights base^i / sum_j base^j (DINO-WM's
        ``objective mode="all"``, whose default base is 2; base 1 weighs the frames equally), which also rewards
        passing the goal early."""
        if mode not in ("last", "all"):
            raise ValueError(f"energy: mode must be 'last' or 'all', got {mode!r}")
        S = actions.shape[0]
        z = self.rollout(z0.expand(S, -1, -1, -1), actions)  # (S, H, N, D)
        d = (z - goal[:, None]).abs() if self.cfg.loss == "l1" else (z - goal[:, None]).square()
        d = d.flatten(2).mean(2)  # (S, H): the distance of every predicted frame
        if mode == "last":
            return d[:, -1]  # (S,)
        w = base ** torch.arange(d.shape[1], dtype=d.dtype)
        return d @ (w / w.sum())  # (S,)


# [eq:cem]
@torch.no_grad()
def cem(energy: Callable[[torch.Tensor], torch.Tensor], horizon: int, action_dim: int, samples: int = 400,
        elites: int = 10, iterations: int = 10, init_std: float = 1.0, low: float = -1.0, high: float = 1.0,
        mean: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Cross-entropy method: sample ``samples`` sequences (H, A) from N(mu, sigma^2), clip them to [low, high],
    keep the ``elites`` of lowest energy, refit mu and sigma to them; ``iterations`` times (V-JEPA 2-AC: 10).
    Returns the final mean ``plan`` (H, A) and the best energy of every iteration."""
    if not 1 <= elites <= samples:
        raise ValueError(f"cem: need 1 <= elites <= samples, got elites={elites}, samples={samples}")
    mu = torch.zeros(horizon, action_dim) if mean is None else mean.clone()
    sigma = torch.full((horizon, action_dim), init_std)
    best = []
    for _ in range(iterations):
        a = mu + sigma * torch.randn(samples, horizon, action_dim, generator=generator)  # (S, H, A)
        a = a.clamp(low, high)
        e = energy(a)  # (S,)
        idx = torch.topk(e, elites, largest=False).indices
        mu, sigma = a[idx].mean(0), a[idx].std(0, unbiased=False)  # (H, A)
        best.append(e[idx[0]])
    return {"plan": mu, "best_energy": torch.stack(best)}
# [/eq:cem]
