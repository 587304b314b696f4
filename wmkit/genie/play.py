"""Play a trained Genie: pick a latent action, the dynamics model generates the next frame.

Bruce et al. 2024 (arXiv:2402.15391), section 2.2 "Inference: Action-Controllable Video Generation": the player
gives a first frame x_1 (tokenised to z_1) and then, at every step, a latent action id a_t in [0, |A|); the dynamics
model generates z_{t+1} by MaskGIT decoding and the tokenizer's decoder turns it into the frame x_{t+1}. The LAM is
not needed while playing -- only to label the actions of a recorded clip (:func:`playthrough`).

* :class:`GeniePlayer` -- the loop above, with ``step(a)``, ``reset()``, the measured frames per second, and a live
  ipywidgets view (one button per latent action; keys 1-8 when ``ipyevents`` is installed).
* :func:`playthrough` -- a recorded held-out clip re-generated from its first frame with the LAM's inferred actions:
  real | generated | |error| with the latent and true actions as series, for :class:`wmkit.widgets.Scrubber`.
* :func:`action_effects` -- the next frame under each of the |A| actions from one context: are the effects distinct?
* :func:`effect_table` and :func:`distinct_effects` -- the same over many held-out frames: which one-tile scroll each
  action produces, and how many actions have effects that differ by more than a stated threshold.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from wmkit.genie.dynamics import DynamicsModel
from wmkit.genie.lam import LatentActionModel
from wmkit.genie.tokenizer import VideoTokenizer
from wmkit.genie.train import decode_tokens, encode_episode, infer_episode_actions, to_tensor

__all__ = ["GeniePlayer", "playthrough", "action_effects", "effect_table", "lam_effect_table", "distinct_effects"]


class GeniePlayer:
    """Generate frame after frame from latent actions chosen by the player."""

    def __init__(self, tok: VideoTokenizer, dyn: DynamicsModel, first_frames: np.ndarray, steps: int | None = None,
                 temperature: float | None = None, seed: int = 0, labels: list[str] | None = None):
        if first_frames.ndim != 4 or first_frames.shape[-1] != 3:
            raise ValueError(f"first_frames: expected (T, H, W, 3) uint8, got shape {first_frames.shape}")
        self.tok, self.dyn, self.steps, self.temperature = tok, dyn, steps, temperature
        self.first, self.seed = first_frames, seed
        self.labels = labels or [f"a{k}" for k in range(dyn.cfg.num_actions)]
        self.reset()

    def reset(self) -> np.ndarray:
        self.gen = torch.Generator().manual_seed(self.seed)
        self.tokens = encode_episode(self.tok, self.first)  # (t, N)
        self.actions: list[int] = [0] * (len(self.first) - 1)  # the context's own transitions (not shown)
        self.frames = list(decode_tokens(self.tok, self.tokens))
        self.seconds: list[float] = []
        return self.frames[-1]

    @property
    def fps(self) -> float:
        """Frames generated per second over the last 10 steps (MaskGIT decoding + tokenizer decoding)."""
        last = self.seconds[-10:]
        return len(last) / sum(last) if last else float("nan")

    def step(self, action: int) -> np.ndarray:
        n = self.dyn.cfg.num_actions
        if not isinstance(action, (int, np.integer)) or not 0 <= int(action) < n:
            raise ValueError(f"action: expected a latent action id in [0, {n}), got {action!r}")
        t0 = time.perf_counter()
        dev = next(self.dyn.parameters()).device
        self.actions.append(int(action))
        ctx = self.tokens[-(self.dyn.cfg.max_frames - 1):]
        acts = torch.tensor(self.actions[-len(ctx):])[None]
        nxt = self.dyn.generate_next(ctx[None].to(dev), acts.to(dev), steps=self.steps, temperature=self.temperature,
                                     generator=self.gen)[0].cpu()  # (N,)
        self.tokens = torch.cat([self.tokens, nxt[None]])
        L = self.tok.cfg.max_frames  # decode the new frame with the tokenizer's causal context
        self.frames.append(decode_tokens(self.tok, self.tokens[-L:])[-1])
        self.seconds.append(time.perf_counter() - t0)
        return self.frames[-1]

    def widget(self):
        """Live view: the current frame, one button per latent action, reset, and the measured FPS."""
        import ipywidgets as W

        from wmkit.widgets import png_bytes

        img = W.Image(value=png_bytes(self.frames[-1]), format="png", layout=W.Layout(width="256px"))
        img.add_class("wmk-frame")
        info = W.HTML()

        def show():
            img.value = png_bytes(self.frames[-1])
            last = self.actions[-1] if self.seconds else "-"
            info.value = (f"frame {len(self.frames) - len(self.first)} · last action {last}"
                          f" · {self.fps:.1f} frames/s generated")

        def act(k):
            self.step(k)
            show()

        buttons = []
        for k, lab in enumerate(self.labels):
            b = W.Button(description=f"{k + 1}: {lab}", layout=W.Layout(width="auto"))
            b.on_click(lambda _b, k=k: act(k))
            buttons.append(b)
        reset = W.Button(description="reset", button_style="warning")
        reset.on_click(lambda _b: (self.reset(), show()))
        box = W.VBox([W.HTML("<style>.wmk-frame img{image-rendering:pixelated}</style>"), img,
                      W.HBox(buttons[:4]), W.HBox(buttons[4:] + [reset]), info])
        try:  # keys 1..|A| when ipyevents is installed (optional)
            from ipyevents import Event

            ev = Event(source=box, watched_events=["keydown"])
            ev.on_dom_event(lambda e: act(int(e["key"]) - 1) if e.get("key", "").isdigit()
                            and 1 <= int(e["key"]) <= len(buttons) else None)
            self._event = ev
            info.value = "click here, then press 1-8 or use the buttons"
        except ImportError:
            info.value = "use the buttons (pip install ipyevents for the keys 1-8)"
        show()
        return box


@torch.no_grad()
def playthrough(tok: VideoTokenizer, lam: LatentActionModel, dyn: DynamicsModel, episode: dict, start: int = 0,
                frames: int = 32, context: int = 1, steps: int | None = None, seed: int = 0) -> dict:
    """Re-generate ``frames`` frames of a recorded episode from its first ``context`` frames, following the actions
    the LAM infers from the real clip. Returns uint8 (T, H, W, 3) arrays ``real``, ``generated``, and per-step
    ``latent`` / ``true`` actions and the PSNR of each generated frame."""
    from wmkit.genie.tokenizer import psnr

    x = episode["frames"][start:start + context + frames]
    if len(x) < context + 1:
        raise ValueError(f"episode {episode.get('episode')} has {len(episode['frames'])} frames; need start + "
                         f"{context + 1}")
    latent = infer_episode_actions(lam, x)  # (T-1,)
    toks = encode_episode(tok, x[:context])[None]  # (1, c, N)
    dev = next(dyn.parameters()).device
    out = dyn.rollout(toks.to(dev), latent[None].to(dev), steps=steps, generator=torch.Generator().manual_seed(seed))
    gen = decode_tokens(tok, out[0].cpu())  # (T, H, W, 3)
    gen[:context] = x[:context]
    p = psnr(to_tensor(gen), to_tensor(x)).numpy()
    p[:context] = np.nan
    true = episode["actions"][start:start + len(x)].astype(float)
    lat = np.concatenate([latent.numpy().astype(float), [np.nan]])
    return {"real": x, "generated": gen, "latent": lat, "true": true, "psnr": p}


@torch.no_grad()
def action_effects(tok: VideoTokenizer, dyn: DynamicsModel, context_frames: np.ndarray, steps: int | None = None,
                   seed: int = 0) -> dict:
    """The next frame under every latent action from the same context (uint8 (|A|, H, W, 3)) and the mean absolute
    pixel difference between every pair of them (|A| x |A|, in [0, 1]): distinct effects have large off-diagonals."""
    A = dyn.cfg.num_actions
    toks = encode_episode(tok, context_frames)  # (c, N)
    dev = next(dyn.parameters()).device
    ctx = toks[None].expand(A, -1, -1).to(dev)
    acts = torch.zeros(A, toks.shape[0], dtype=torch.long)
    acts[:, -1] = torch.arange(A)
    nxt = dyn.generate_next(ctx, acts.to(dev), steps=steps, generator=torch.Generator().manual_seed(seed)).cpu()
    L = tok.cfg.max_frames
    frames = np.stack([decode_tokens(tok, torch.cat([toks, nxt[k:k + 1]])[-L:])[-1] for k in range(A)])
    f = frames.astype(np.float32) / 255.0
    diff = np.abs(f[:, None] - f[None]).mean(axis=(2, 3, 4))
    return {"frames": frames, "pairwise_l1": diff}


def distinct_effects(pairwise: np.ndarray, threshold: float) -> int:
    """How many distinct effects |A| actions have: the actions fall into groups where two actions whose effects
    differ by at most ``threshold`` (mean |pixel difference| in [0, 1]) are the same effect (connected components
    of the graph "pairwise <= threshold"). 1 = every action does the same thing; |A| = all differ."""
    d = np.asarray(pairwise, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"pairwise: expected a square (|A|, |A|) table, got shape {d.shape}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    A = d.shape[0]
    group = list(range(A))

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for i in range(A):
        for j in range(i + 1, A):
            if d[i, j] <= threshold:
                group[root(j)] = root(i)
    return len({root(i) for i in range(A)})


@torch.no_grad()
def effect_table(tok: VideoTokenizer, dyn: DynamicsModel, episodes: list[dict], frames: int = 16,
                 steps: int | None = None, seed: int = 0) -> dict:
    """The next frame under every latent action from ``frames`` held-out frames (one batch of frames x |A|).

    Returns ``pairwise`` (|A|, |A|): mean |pixel difference| between the next frames of two actions, averaged over
    the context frames; ``motion`` (|A|, 5): for each action, how often its generated frame is best explained as
    each one-tile scroll (:data:`~wmkit.genie.train.MOTIONS`, by :func:`~wmkit.genie.train.observed_motion` on the
    pair (context, generated)); ``frames`` (frames, |A|, H, W, 3) uint8 and ``context`` (frames, H, W, 3);
    ``resample`` (|A|,): the mean |pixel difference| between two samples (seeds ``seed``, ``seed + 1``) of the same
    action -- MaskGIT's sampling noise, the floor below which a difference between two actions means nothing.
    """
    from wmkit.genie.train import MOTIONS, observed_motion

    A = dyn.cfg.num_actions
    pool = [(e, t) for e in episodes for t in range(len(e["frames"]) - 1)]
    if not pool:
        raise ValueError("effect_table: the episodes have no transition")
    pick = np.random.default_rng(seed).choice(len(pool), size=min(frames, len(pool)), replace=False)
    ctx = np.stack([pool[i][0]["frames"][pool[i][1]] for i in pick])  # (M, H, W, 3)
    toks = torch.stack([encode_episode(tok, c[None])[0] for c in ctx])  # (M, N)
    M, dev = len(ctx), next(dyn.parameters()).device
    context = toks.repeat_interleave(A, 0)[:, None].to(dev)  # (M*A, 1, N)
    acts = torch.arange(A).repeat(M)[:, None].to(dev)  # (M*A, 1)
    def sample(s):  # (M, A, H, W, 3) uint8: the next frame of every (context, action), each decoded alone
        nxt = dyn.generate_next(context, acts, steps=steps, generator=torch.Generator().manual_seed(s)).cpu()
        img = tok.decode(nxt[:, None].to(next(tok.parameters()).device))[:, 0]  # (M*A, 3, H, W)
        return (img.movedim(1, -1).clamp(0, 1) * 255).round().byte().cpu().numpy().reshape(M, A, *ctx.shape[1:])

    gen, again = sample(seed), sample(seed + 1)  # MaskGIT samples: the same action twice is not the same frame
    f = gen.astype(np.float32) / 255.0
    pairwise = np.abs(f[:, :, None] - f[:, None]).mean(axis=(0, 3, 4, 5))  # (A, A)
    resample = np.abs(f - again.astype(np.float32) / 255.0).mean(axis=(0, 2, 3, 4))  # (A,)
    motion = np.zeros((A, len(MOTIONS)), dtype=np.int64)
    for m in range(M):
        for k in range(A):
            motion[k, observed_motion(np.stack([ctx[m], gen[m, k]]))[0]] += 1
    return {"pairwise": pairwise, "motion": motion, "frames": gen, "context": ctx, "resample": resample}


@torch.no_grad()
def lam_effect_table(lam: LatentActionModel, episodes: list[dict], frames: int = 64, seed: int = 0) -> dict:
    """The LAM decoder's own next frame under every code, from ``frames`` held-out frames (at the LAM resolution).

    This asks the LAM, not the dynamics model, what each code means: same outputs as :func:`effect_table`
    (``pairwise`` (|A|, |A|), ``motion`` (|A|, 5) with the scroll measured at the LAM's tile size lam_size / 7,
    ``frames`` (frames, |A|, s, s, 3) uint8, ``context`` (frames, s, s, 3) uint8).
    """
    from wmkit.genie.train import MOTIONS, TILE, observed_motion

    A, dev = lam.cfg.num_actions, next(lam.parameters()).device
    pool = [(e, t) for e in episodes for t in range(len(e["frames"]))]
    pick = np.random.default_rng(seed).choice(len(pool), size=min(frames, len(pool)), replace=False)
    x = to_tensor(np.stack([pool[i][0]["frames"][pool[i][1]] for i in pick])).to(dev)  # (M, 3, H, W)
    M = len(x)
    pairs = x[:, None].expand(M, 2, *x.shape[1:]).repeat_interleave(A, 0)  # (M*A, 2, 3, H, W); frame 2 unused
    codes = lam.code(torch.arange(A, device=dev).repeat(M))[:, None]  # (M*A, 1, d)
    pred = lam.decode(pairs, codes)[:, 0].clamp(0, 1)  # (M*A, 3, s, s)
    to8 = lambda t: (t.movedim(-3, -1) * 255).round().byte().cpu().numpy()  # noqa: E731
    gen = to8(pred).reshape(M, A, *pred.shape[-2:], 3)  # (M, A, s, s, 3)
    ctx = to8(lam.resize(x[:, None])[:, 0])  # (M, s, s, 3)
    f = gen.astype(np.float32) / 255.0
    pairwise = np.abs(f[:, :, None] - f[:, None]).mean(axis=(0, 3, 4, 5))  # (A, A)
    shift = TILE * lam.size // lam.cfg.frame_size  # one tile at the LAM's resolution
    motion = np.zeros((A, len(MOTIONS)), dtype=np.int64)
    for m in range(M):
        for k in range(A):
            motion[k, observed_motion(np.stack([ctx[m], gen[m, k]]), shift=shift)[0]] += 1
    return {"pairwise": pairwise, "motion": motion, "frames": gen, "context": ctx}
