"""Genie's dynamics model: a MaskGIT transformer over video tokens, conditioned on latent actions.

Bruce et al. 2024 (arXiv:2402.15391), section 2.1 "Dynamics Model" and section 2.2 "Inference": a decoder-only
MaskGIT (Chang et al. 2022) ST-transformer takes the tokens z_{1:t-1} and the (stop-gradient) latent actions
a~_{1:t-1} and predicts the tokens of the next frame, z_t. Latent actions enter as *additive* embeddings. Training
(the paper and the Jafar re-implementation): for each clip draw a masking rate r ~ U[0.5, 1), replace each token of
frames 2..T by [MASK] with probability r (frame 1 is never masked) and minimise the cross-entropy on the masked
positions:

    L_dyn = - sum_{masked (t, n)} log p(z_{t,n} | z^masked_{1:t}, a~_{1:t-1}) / #masked                 (DYN)

Causal temporal attention means one pass trains every frame at once, and generation of frame t never looks at a
later frame. Generation (MaskGIT's iterative decoding, google-research/maskgit ``decode``): start with frame t all
[MASK]; for s = 1..S sample every masked token, keep the most confident ones and re-mask the rest so that
``floor(N cos(pi/2 * s/S))`` stay masked (clamped to keep at least one and fix at least one per step), with Gumbel
noise of scale ``temperature * (1 - s/S)`` added to the log-confidences; the last step fills every token. Genie
uses S = 25 steps and temperature 2.

Not in Genie (switches, off by default): ``token_context`` (each input token holds its k x k neighbourhood) and
``prev_window`` (:class:`PrevFrameWindow`: each token of frame t+1 attends over the k x k window of frame t before the
transformer, so that a latent action can select the neighbour a scroll brings in); the cpu profile uses the second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wmkit.genie.st_transformer import STTransformer

__all__ = ["DynamicsConfig", "DynamicsModel", "PrevFrameWindow", "sample_categorical", "token_windows",
           "window_index"]


@dataclass
class DynamicsConfig:
    """Sizes of the MaskGIT dynamics model and its decoding defaults."""

    vocab: int = 1000
    """Token vocabulary (the tokenizer's codebook size)."""
    grid: tuple[int, int] = (8, 8)
    """Token grid per frame (N = h * w)."""
    num_actions: int = 8
    """Latent actions |A|."""
    dim: int = 128
    """Transformer width."""
    depth: int = 3
    """ST blocks."""
    heads: int = 4
    """Attention heads."""
    max_frames: int = 16
    """Longest clip the model attends over (training clip length)."""
    mask_min: float = 0.5
    """Lower end of the training masking rate U[mask_min, 1) (Genie: 0.5)."""
    maskgit_steps: int = 25
    """MaskGIT decoding steps per frame (Genie: 25)."""
    temperature: float = 2.0
    """Scale of the Gumbel noise on the confidences, annealed to 0 (Genie: 2; MaskGIT's choice_temperature)."""
    sample_temperature: float = 1.0
    """Softmax temperature of the token samples (1 = the model's distribution, as in MaskGIT)."""
    token_context: int = 1
    """Each token's input embedding also holds its neighbours': the embeddings of the (k x k)-token window centred on
    it (zeros past the border), concatenated and projected to the width (1 = Genie: the token alone). With the
    tile-aligned frames a one-tile scroll makes a token of frame t+1 equal to a neighbour of the same position in
    frame t, which the causal temporal attention brings to it: the scroll becomes a per-token choice among 9 inputs
    that the action selects, instead of a move the spatial attention has to learn from positions (the LAM's
    ``patch_context``, same reason; not in Genie)."""
    prev_window: int = 1
    """Before the transformer, each token of frame t+1 reads the k x k window of frame t's tokens around its position
    by attention (:class:`PrevFrameWindow`): its query holds the latent action, each key a neighbour's embedding plus a
    learned embedding of its offset, so an action can pick "the token one to the left" directly and the decoding of
    the picked token into logits is the one copying (no scroll) already trains (1 = off, Genie: a token of frame t+1
    sees frame t only at its own position, and a scroll has to be routed through spatial attention; not in Genie)."""


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One sample per row of ``probs`` (K, V) -> (K,) ids, by inverting each row's CDF with one uniform number.

    The same distribution as ``torch.multinomial(probs, 1)``, which draws V exponentials per row: at V = 1000 that was
    40 % of the CPU time of MaskGIT generation. A zero-probability id is never drawn (its CDF step is empty).
    """
    cdf = probs.cumsum(-1)  # (K, V)
    u = torch.rand(len(cdf), 1, generator=generator).to(cdf.device) * cdf[:, -1:]  # (K, 1) in [0, total)
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_max(cdf.shape[-1] - 1)  # (K,)


def window_index(grid: tuple[int, int], k: int) -> torch.Tensor:
    """(N, k*k) index of each token's k x k window on an (h, w) grid, row-major offsets; N (one past the last token)
    where the window leaves the grid."""
    (h, w), o = grid, torch.arange(k) - k // 2
    r = torch.arange(h)[:, None, None, None] + o[None, None, :, None]  # (h, 1, k, 1)
    c = torch.arange(w)[None, :, None, None] + o[None, None, None, :]  # (1, w, 1, k)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)  # (h, w, k, k)
    return torch.where(inside, r * w + c, h * w).reshape(h * w, k * k)  # (N, k k)


def token_windows(x: torch.Tensor, grid: tuple[int, int], k: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, N, D) on an (h, w) grid -> (M, N, k*k, D): each token's k x k window (row-major offsets, zeros past the
    border), gathered by index (faster on the CPU than ``F.unfold``, the same numbers: a test checks it). ``index``:
    ``window_index(grid, k)`` computed once by the caller (the modules keep it as a buffer)."""
    index = window_index(grid, k) if index is None else index
    padded = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[-1])], dim=1)  # (M, N + 1, D): row N is the zero token
    return padded[:, index.to(x.device)]  # (M, N, k k, D)


class PrevFrameWindow(nn.Module):
    """Each token of frame t+1 attends over the k x k window of frame t's tokens around its position (one layer,
    multi-head, pre-norm; the output is added to the token's input). DynamicsConfig.prev_window explains why."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], k: int):
        super().__init__()
        if k < 3 or k % 2 == 0:
            raise ValueError(f"prev_window: expected an odd window >= 3 (1 = off), got {k}")
        self.grid, self.k, self.heads = tuple(grid), k, heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.offset = nn.Parameter(0.02 * torch.randn(k * k, dim))  # (k k, D): "which neighbour", learned
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("index", window_index(self.grid, k), persistent=False)  # (N, k k)

    def forward(self, query: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """query (M, N, D): frame t+1's inputs (token + action); prev (M, N, D): frame t's token embeddings."""
        # keys/values of the window: kv(content + offset). kv is linear without bias, so project each token once and
        # then gather its window (k*k times fewer FLOPs than projecting the gathered windows; zeros past the border
        # stay zeros): kv(win) + kv(offset).
        kv = token_windows(self.kv(self.norm_kv(prev)), self.grid, self.k, self.index)  # (M, N, kk, 2D)
        kv = kv + self.kv(self.offset)  # (M, N, kk, 2D)
        q = rearrange(self.q(self.norm_q(query)), "m n (h d) -> m n h d", h=self.heads)  # (M, N, H, d)
        k, v = rearrange(kv, "m n kk (two h d) -> two m n h kk d", two=2, h=self.heads)  # (M, N, H, kk, d)
        att = torch.einsum("mnhd,mnhkd->mnhk", q, k) / math.sqrt(q.shape[-1])  # (M, N, H, kk)
        out = torch.einsum("mnhk,mnhkd->mnhd", att.softmax(-1), v)  # (M, N, H, d)
        return self.proj(rearrange(out, "m n h d -> m n (h d)"))  # (M, N, D)


class DynamicsModel(nn.Module):
    """tokens (B, T, N), latent actions (B, T-1) -> logits (B, T, N, vocab)."""

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.cfg = cfg
        self.num_tokens = cfg.grid[0] * cfg.grid[1]
        self.mask_id = cfg.vocab  # one extra embedding row for [MASK]
        self.token_embed = nn.Embedding(cfg.vocab + 1, cfg.dim)
        if not 0.0 <= cfg.mask_min < 1.0:
            raise ValueError(f"mask_min: expected a rate in [0, 1), got {cfg.mask_min}")
        k = cfg.token_context
        if k < 1 or k % 2 == 0:
            raise ValueError(f"token_context: expected an odd number >= 1, got {k}")
        self.context_proj = nn.Linear(k * k * cfg.dim, cfg.dim) if k > 1 else None  # (k k D) -> D
        self.register_buffer("context_index", window_index(tuple(cfg.grid), k), persistent=False)  # (N, k k)
        self.action_embed = nn.Embedding(cfg.num_actions, cfg.dim)
        self.prev_read = (PrevFrameWindow(cfg.dim, cfg.heads, cfg.grid, cfg.prev_window) if cfg.prev_window != 1
                          else None)
        self.transformer = STTransformer(cfg.dim, cfg.depth, cfg.heads, tuple(cfg.grid), cfg.max_frames,
                                         None, cfg.vocab, causal_time=True)

    def _check(self, tokens: torch.Tensor, actions: torch.Tensor) -> None:
        B, T, N = tokens.shape
        if N != self.num_tokens:
            raise ValueError(f"tokens: expected {self.num_tokens} tokens per frame, got shape {tuple(tokens.shape)}")
        if T > self.cfg.max_frames:
            raise ValueError(f"tokens: T={T} frames is beyond the trained context max_frames={self.cfg.max_frames}")
        if actions.shape != (B, T - 1):
            raise ValueError(f"actions: expected shape {(B, T - 1)} (one per transition), got {tuple(actions.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.cfg.num_actions):
            raise ValueError(f"actions: latent action ids must be in [0, {self.cfg.num_actions}), got "
                             f"[{int(actions.min())}, {int(actions.max())}]")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > self.cfg.vocab):
            raise ValueError(f"tokens: ids must be in [0, {self.cfg.vocab}] ({self.cfg.vocab} = [MASK])")

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (..., N) -> input embeddings (..., N, D): the token's own (Genie), or with ``token_context`` k > 1
        the projection of its k x k neighbourhood's embeddings."""
        x = self.token_embed(tokens)  # (..., N, D)
        if self.context_proj is None:
            return x
        N, D = x.shape[-2:]
        win = token_windows(x.reshape(-1, N, D), self.cfg.grid, self.cfg.token_context, self.context_index)
        return self.context_proj(win.flatten(-2)).reshape(x.shape)  # (..., N, D)

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check(tokens, actions)
        if mask is not None:
            tokens = torch.where(mask, torch.full_like(tokens, self.mask_id), tokens)  # (B, T, N)
        e = self.embed(tokens)  # (B, T, N, D)
        # [eq:action-add]
        a = self.action_embed(actions)[:, :, None, :]  # (B, T-1, 1, D): a~_t drives frame t+1
        x = torch.cat([e[:, :1], e[:, 1:] + a], dim=1)  # (B, T, N, D)
        # [/eq:action-add]
        x = self.read_previous(x, e)  # (B, T, N, D)
        return self.transformer(x)  # (B, T, N, vocab)

    def read_previous(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """With ``prev_window`` k > 1: frames 2..T of x (B, T, N, D) add what they read from the k x k windows of the
        previous frame's embeddings e (B, T, N, D); frame 1 has no previous frame. k = 1: x unchanged."""
        if self.prev_read is None or x.shape[1] < 2:
            return x
        B, T = x.shape[:2]
        r = self.prev_read(x[:, 1:].flatten(0, 1), e[:, :-1].flatten(0, 1)).unflatten(0, (B, T - 1))  # (B,T-1,N,D)
        return torch.cat([x[:, :1], x[:, 1:] + r], dim=1)  # (B, T, N, D)

    def loss(self, tokens: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
             ) -> dict[str, torch.Tensor]:
        """Masked-token cross-entropy (DYN) with a per-clip masking rate r ~ U[mask_min, 1)."""
        B, T, N = tokens.shape
        # [eq:dyn-mask]
        rate = self.cfg.mask_min + (1 - self.cfg.mask_min) * torch.rand(B, 1, 1, generator=generator)  # (B, 1, 1)
        mask = torch.rand(B, T, N, generator=generator) < rate  # (B, T, N)
        mask[:, 0] = False  # the first frame is always given
        # [/eq:dyn-mask]
        mask = mask.to(tokens.device)
        logits = self(tokens, actions, mask)  # (B, T, N, V)
        ce = F.cross_entropy(logits.flatten(0, 2).float(), tokens.flatten(), reduction="none").view(B, T, N)
        loss = (ce * mask).sum() / mask.sum().clamp_min(1)
        acc = ((logits.argmax(-1) == tokens) & mask).sum() / mask.sum().clamp_min(1)
        return {"loss": loss, "acc": acc, "mask_frac": mask[:, 1:].float().mean()}

    # ------------------------------------------------------------------ speed trick: cache the context once
    # Temporal attention is causal and spatial attention stays inside a frame, so nothing the context frames compute
    # depends on the frame being generated. The plain way (``cache=False``) re-runs the whole clip at every MaskGIT
    # step; with the cache, each step runs the new frame's N tokens alone against the context's stored temporal keys
    # and values: (c + 1) times less work for c context frames, the same logits (a test checks it).
    @torch.no_grad()
    def context_cache(self, context: torch.Tensor, actions: torch.Tensor
                      ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Per ST block, the temporal keys and values (B*N, heads, c, D/heads) of the context frames (B, c, N), and
        the last context frame's embeddings (B, N, D) (read by ``prev_window``); ``actions`` (B, c - 1) are the
        context's own transitions."""
        tr, B = self.transformer, context.shape[0]
        e = self.embed(context)  # (B, c, N, D)
        x = torch.cat([e[:, :1], e[:, 1:] + self.action_embed(actions)[:, :, None, :]], dim=1)  # (B, c, N, D)
        x = tr.add_positions(self.read_previous(x, e))
        cache = []
        for blk in tr.blocks:
            s = rearrange(blk.norm_s(x), "b t n d -> (b t) n d")  # (B c, N, D)
            x = x + rearrange(blk.spatial(s), "(b t) n d -> b t n d", b=B)
            t = rearrange(blk.norm_t(x), "b t n d -> (b n) t d")  # (B N, c, D)
            q, k, v = rearrange(blk.temporal.qkv(t), "b l (three h d) -> three b h l d", three=3,
                                h=blk.temporal.heads)  # (B N, H, c, d)
            cache.append((k, v))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B N, H, c, d)
            o = blk.temporal.proj(rearrange(o, "b h l d -> b l (h d)"))  # (B N, c, D)
            x = x + rearrange(o, "(b n) t d -> b t n d", b=B)
            x = x + blk.mlp(blk.norm_m(x))  # (B, c, N, D)
        return cache, e[:, -1]

    @torch.no_grad()
    def next_logits(self, cache: tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor], tokens: torch.Tensor,
                    action: torch.Tensor) -> torch.Tensor:
        """Logits (B, N, V) of the frame after the cached context: its current tokens (B, N) ([MASK] where unknown)
        and the action (B,) leading to it. Equal to ``self(cat(context, tokens), actions)[:, -1]``."""
        tr, B = self.transformer, tokens.shape[0]
        cache, last = cache
        c = cache[0][0].shape[2]
        x = self.embed(tokens) + self.action_embed(action)[:, None, :]  # (B, N, D)
        if self.prev_read is not None:
            x = x + self.prev_read(x, last)  # (B, N, D): the new frame reads the last context frame
        x = x + tr.pos_t[c].to(x.dtype) + tr.pos_s.to(x.dtype)  # the new frame sits at time index c
        for blk, (k_c, v_c) in zip(tr.blocks, cache):
            x = x + blk.spatial(blk.norm_s(x))  # (B, N, D)
            t = rearrange(blk.norm_t(x), "b n d -> (b n) 1 d")  # (B N, 1, D)
            q, k, v = rearrange(blk.temporal.qkv(t), "b l (three h d) -> three b h l d", three=3,
                                h=blk.temporal.heads)  # (B N, H, 1, d)
            o = F.scaled_dot_product_attention(q, torch.cat([k_c, k], 2), torch.cat([v_c, v], 2))  # sees all c + 1
            x = x + rearrange(blk.temporal.proj(rearrange(o, "b h l d -> b l (h d)")), "(b n) 1 d -> b n d", b=B)
            x = x + blk.mlp(blk.norm_m(x))  # (B, N, D)
        return tr.out(tr.norm(x))  # (B, N, V)

    @torch.no_grad()
    def generate_next(self, context: torch.Tensor, actions: torch.Tensor, steps: int | None = None,
                      temperature: float | None = None, sample_temperature: float | None = None,
                      generator: torch.Generator | None = None, history: list | None = None,
                      cache: bool = True) -> torch.Tensor:
        """One new frame by MaskGIT decoding.

        context (B, t, N) tokens of the frames so far; actions (B, t) latent actions, actions[:, -1] leads from the
        last context frame to the new one. Returns the new frame's tokens (B, N). If ``history`` is a list, each
        step appends ``(sampled (B, N), still_masked (B, N))``. ``cache=False`` runs the whole clip through the model
        at every step (the plain math); ``True`` computes the context once (:meth:`context_cache`).
        """
        steps = self.cfg.maskgit_steps if steps is None else steps
        temperature = self.cfg.temperature if temperature is None else temperature
        sample_temperature = self.cfg.sample_temperature if sample_temperature is None else sample_temperature
        if steps < 1:
            raise ValueError(f"steps: expected >= 1 MaskGIT steps, got {steps}")
        B, t, N = context.shape
        if actions.shape != (B, t):
            raise ValueError(f"actions: expected shape {(B, t)} (one per context frame), got {tuple(actions.shape)}")
        keep = self.cfg.max_frames - 1  # slide the window: the model attends over at most max_frames frames
        context, actions = context[:, -keep:], actions[:, -keep:]
        cur = torch.full((B, N), self.mask_id, dtype=torch.long, device=context.device)
        unknown = torch.ones(B, N, dtype=torch.bool, device=context.device)
        if cache:
            self._check(torch.cat([context, cur[:, None]], 1), actions)
            kv = self.context_cache(context, actions[:, :-1])
        for s in range(steps):
            if cache:
                logits = self.next_logits(kv, cur, actions[:, -1]).float()  # (B, N, V)
            else:
                logits = self(torch.cat([context, cur[:, None]], 1), actions)[:, -1].float()  # (B, N, V)
            idx = unknown.nonzero(as_tuple=True)  # the K tokens still masked: only they are sampled (speed)
            probs = torch.softmax(logits[idx] / sample_temperature, -1)  # (K, V)
            draw = sample_categorical(probs, generator)  # (K,)
            sampled = cur.clone()
            sampled[idx] = draw  # fixed tokens stay
            if s == steps - 1:
                cur, unknown = sampled, torch.zeros_like(unknown)
            else:
                # [eq:maskgit]
                ratio = (s + 1) / steps
                n_mask = torch.full((B,), math.floor(N * math.cos(math.pi / 2 * ratio)), device=context.device)
                n_mask = torch.maximum(torch.ones_like(n_mask), torch.minimum(unknown.sum(1) - 1, n_mask))  # (B,)
                conf = torch.full((B, N), math.inf, device=logits.device)  # (B, N); fixed tokens: never re-masked
                conf[idx] = torch.log(probs.gather(-1, draw[:, None])[:, 0].clamp_min(1e-30))  # log p of each sample
                u = torch.rand(B, N, generator=generator).to(conf.device).clamp(1e-20, 1 - 1e-7)
                conf = conf + temperature * (1 - ratio) * -torch.log(-torch.log(u))  # Gumbel noise, annealed
                cutoff = conf.sort(-1).values.gather(-1, n_mask[:, None].long())  # (B, 1)
                unknown = conf < cutoff  # the n_mask least confident stay masked
                cur = torch.where(unknown, torch.full_like(sampled, self.mask_id), sampled)
                # [/eq:maskgit]
            if history is not None:
                history.append((sampled.clone(), unknown.clone()))
        return cur

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, actions: torch.Tensor, **kw) -> torch.Tensor:
        """Autoregressive generation: context (B, t0, N), actions (B, t0 - 1 + H) -> tokens (B, t0 + H, N)."""
        B, t0, N = context.shape
        H = actions.shape[1] - (t0 - 1)
        if actions.ndim != 2 or actions.shape[0] != B or H < 1:
            raise ValueError(f"actions: expected (B={B}, t0-1+H) with H >= 1 = {t0 - 1}+H, got {tuple(actions.shape)}")
        toks = context
        for _ in range(H):
            nxt = self.generate_next(toks, actions[:, : toks.shape[1]], **kw)  # (B, N)
            toks = torch.cat([toks, nxt[:, None]], 1)
        return toks
