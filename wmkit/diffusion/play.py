"""Play a trained diffusion world model: every next frame is generated from the model's own past frames.

:class:`DreamGame` is the game engine (GameNGen's loop, DIAMOND's ``WorldModelEnv`` without reward): it is
started from K real frames, then ``step(action)`` samples the next frame conditioned on the last K frames --
after K steps all of them are the model's own -- and the last K actions. :func:`play_widget` wraps it in
ipywidgets buttons with a live frames/s readout (a Jupyter kernel is needed); :func:`record_session` plays a
list of actions without a window and :func:`write_video` saves it as mp4 (PyAV) or GIF (Pillow).
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from wmkit.diffusion.common import Recipe
from wmkit.diffusion.evaluate import to_uint8


class DreamGame:
    """The world model as an interactive game. Frames in and out of ``step`` are uint8 (H, W, 3)."""

    def __init__(self, model: Recipe, context: torch.Tensor, actions: torch.Tensor, steps: int = 3, seed: int = 0):
        """context: (K, 3, H, W) real frames in [-1, 1]; actions: (K,) or (K, A), actions[k] after frame k
        (the last one is replaced by each ``step``'s action)."""
        K = model.net.context
        if context.ndim != 4 or context.shape[0] != K:
            raise ValueError(f"context: expected ({K}, 3, H, W) frames in [-1, 1], got {tuple(context.shape)}")
        if actions.shape[0] != K:
            raise ValueError(f"actions: expected {K} past actions, got shape {tuple(actions.shape)}")
        self.model, self.steps, self.K = model, steps, K
        self.device = next(model.parameters()).device
        self.frames = deque(context.to(self.device).unbind(0), maxlen=K)
        self.action_like = actions[-1].to(self.device)
        self.actions = deque(actions[: K - 1].to(self.device).unbind(0), maxlen=K - 1)  # taken after frames 0..K-2
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.history: list[np.ndarray] = [to_uint8(f) for f in context]
        self.step_seconds: list[float] = []

    @torch.no_grad()
    def step(self, action) -> np.ndarray:
        """Take ``action`` after the current frame; returns the generated next frame (H, W, 3) uint8."""
        t0 = time.perf_counter()
        a = torch.as_tensor(action, dtype=self.action_like.dtype, device=self.device)
        if a.shape != self.action_like.shape:
            raise ValueError(f"action: expected shape {tuple(self.action_like.shape)}, got {tuple(a.shape)}")
        if self.model.net.num_actions is not None and not 0 <= int(a) < self.model.net.num_actions:
            raise ValueError(f"action: expected an index in [0, {self.model.net.num_actions}), got {int(a)}")
        acts = torch.stack(list(self.actions) + [a])[None]  # (1, K[, A]): the action just taken is the last
        ctx = torch.stack(list(self.frames))[None]  # (1, K, 3, H, W)
        x = self.model.sample(ctx, acts, self.steps, generator=self.generator)[0]  # (3, H, W)
        self.actions.append(a)
        self.frames.append(x)
        frame = to_uint8(x)
        self.history.append(frame)
        self.step_seconds.append(time.perf_counter() - t0)
        return frame

    @property
    def fps(self) -> float:
        """Generated frames per second over the last (up to) 10 steps."""
        last = self.step_seconds[-10:]
        return len(last) / sum(last) if last else 0.0


def record_session(game: DreamGame, actions) -> np.ndarray:
    """Play ``actions`` (a sequence) and return all frames (K real + len(actions) generated), (T, H, W, 3) uint8."""
    for a in actions:
        game.step(a)
    return np.stack(game.history)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 10.0, scale: int = 4) -> Path:
    """Save (T, H, W, 3) uint8 frames as .mp4 (H.264 via PyAV) or .gif (Pillow), upscaled ``scale`` x (nearest)."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    elif path.suffix == ".mp4":
        import av

        h, w = frames.shape[1:3]
        with av.open(str(path), mode="w") as out:
            stream = out.add_stream("libx264", rate=int(round(fps)))
            stream.width, stream.height = w + w % 2, h + h % 2
            stream.pix_fmt = "yuv420p"
            for f in frames:
                f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)))
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    else:
        raise ValueError(f"record path {str(path)!r}: expected a .mp4 or .gif file name")
    return path


def play_widget(game: DreamGame, buttons: dict[str, object], scale: int = 6):
    """ipywidgets: one button per action (name -> action), the latest generated frame, frames/s. Needs a kernel."""
    import io

    import ipywidgets as W
    from PIL import Image

    def png(frame):
        buf = io.BytesIO()
        Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST).save(buf, "PNG")
        return buf.getvalue()

    image = W.Image(value=png(game.history[-1]), format="png")
    label = W.Label("press a button: each press generates one frame")

    def press(name):
        def go(_):
            game.step(buttons[name])
            image.value = png(game.history[-1])
            label.value = f"{len(game.history) - game.K} frames generated, {game.fps:.1f} frames/s ({name})"
        return go

    row = []
    for name in buttons:
        b = W.Button(description=name, layout=W.Layout(width="auto"))
        b.on_click(press(name))
        row.append(b)
    return W.VBox([image, W.HBox(row), label])
