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
"""

from __future__ import annotations

import time

import numpy as np
import torch

from wmkit.genie.dynamics import DynamicsModel
from wmkit.genie.lam import LatentActionModel
from wmkit.genie.tokenizer import VideoTokenizer
from wmkit.genie.train import decode_tokens, encode_episode, infer_episode_actions, to_tensor

__all__ = ["GeniePlayer", "playthrough", "action_effects"]


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
