"""The rollout scrubber: aligned frame sequences side by side, a frame slider, and a plot strip.

Every chapter uses it to compare what happened with what a model imagined::

    from wmkit.widgets import Scrubber, abs_error
    Scrubber({"real": real, "imagined": dream, "|error|": abs_error(real, dream)},
             series={"reward": r, "value": v}, title="Dream vs real")

One object, two renderings:

* **live** (a Jupyter kernel): an ipywidgets view with Python callbacks -- play/pause, step buttons, a
  slider (arrow keys work while it has focus), a plot strip whose cursor follows the slider, and the
  series values at the cursor. Frames may be computed lazily (``{"dream": lambda t: ...}`` with
  ``num_frames=``) and :meth:`Scrubber.update` swaps in new data, e.g. a re-dream when a temperature
  slider moves.
* **static** (the rendered book, no kernel, no network): self-contained HTML + inline JavaScript with
  every frame embedded as a base64 PNG. Arrow keys, Home/End and Space work when it has focus; clicking
  the plot strip seeks. Nothing is loaded from anywhere.

Which one a bare ``scrubber`` at the end of a cell shows is decided by :func:`is_static`: the book build
sets ``WMKIT_RENDER=static`` for the kernels it runs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

FrameSource = Any  # np.ndarray (T,H,W[,C]) | torch.Tensor | Callable[[int], np.ndarray]


def is_static() -> bool:
    """True while the book is being built: outputs must then work without a kernel."""
    return os.environ.get("WMKIT_RENDER", "").lower() == "static"


def to_uint8_frame(frame: Any, name: str = "frame") -> np.ndarray:
    """Validate one frame and return it as (H, W, 3) uint8. Floats must lie in [0, 1] (never clipped)."""
    if hasattr(frame, "detach"):  # torch tensor
        frame = frame.detach().cpu().numpy()
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: expected a frame of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                         f"got {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if not (np.isfinite(a).all() and lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"{name}: float frames must be finite and in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        return np.round(a * 255.0).astype(np.uint8)
    raise TypeError(f"{name}: frames must be uint8 or float in [0, 1], got dtype {a.dtype}")


def abs_error(a: Any, b: Any, gain: float = 1.0) -> np.ndarray:
    """Per-pixel |a - b| of two aligned sequences (T,H,W[,C]), as uint8 frames (×``gain``, saturating)."""
    fa = np.stack([to_uint8_frame(f, "a") for f in np.asarray(a)]).astype(np.float32)
    fb = np.stack([to_uint8_frame(f, "b") for f in np.asarray(b)]).astype(np.float32)
    if fa.shape != fb.shape:
        raise ValueError(f"abs_error: sequences must have the same shape, got {fa.shape} and {fb.shape}")
    return np.minimum(np.abs(fa - fb) * gain, 255.0).astype(np.uint8)


def png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _series_svg(series: Mapping[str, np.ndarray], n: int, cursor: int, width: int = 600,
                row_h: int = 34) -> str:
    """One small line plot per series, stacked; a vertical cursor line at ``cursor``."""
    if not series:
        return ""
    pad_l, pad_r = 100, 8
    h = row_h * len(series)
    x = lambda t: pad_l + (width - pad_l - pad_r) * (t / max(n - 1, 1))  # noqa: E731
    parts = [f'<svg class="wmk-plot" viewBox="0 0 {width} {h}" width="100%" '
             f'preserveAspectRatio="none" data-n="{n}" data-left="{pad_l}" data-right="{pad_r}" '
             f'data-width="{width}" xmlns="http://www.w3.org/2000/svg">']
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (name, ys) in enumerate(series.items()):
        top = i * row_h
        finite = ys[np.isfinite(ys)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        span = hi - lo if hi > lo else 1.0
        y = lambda v, top=top, lo=lo, span=span: top + 4 + (row_h - 8) * (1 - (v - lo) / span)  # noqa: E731
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in enumerate(ys) if math.isfinite(v))
        c = colors[i % len(colors)]
        parts.append(f'<rect x="{pad_l}" y="{top + 2}" width="{width - pad_l - pad_r}" height="{row_h - 4}" '
                     f'fill="#f6f6f6"/>')
        parts.append(f'<text x="4" y="{top + row_h / 2 + 4:.0f}" font-size="12" fill="{c}">'
                     f'{html.escape(name)}</text>')
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.5"/>')
    xc = x(cursor)
    parts.append(f'<line class="wmk-cursor" x1="{xc:.1f}" x2="{xc:.1f}" y1="0" y2="{h}" stroke="#000" '
                 f'stroke-width="1.5"/></svg>')
    return "".join(parts)


def _fmt(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.4g}"


class Scrubber:
    """Aligned frame sequences + per-step series, scrubbed with one slider. See the module docstring.

    Args:
        sequences: name -> frames. Each value is an array/tensor of shape (T,H,W), (T,H,W,1),
            (T,H,W,3) or (T,H,W,4) (uint8, or float in [0,1]), or a callable ``t -> frame`` (lazy;
            then ``num_frames`` is required). Sequences may differ in frame size but not in length.
        series: name -> (T,) numbers (NaN allowed for "no value at this step").
        num_frames: T, required when every sequence is lazy; checked against the arrays otherwise.
        title: shown above the frames.
        fps: playback speed.
        zoom: display scale for the frames (pixels are kept sharp); default fits ~160 px high.
    """

    def __init__(self, sequences: Mapping[str, FrameSource], series: Mapping[str, Any] | None = None,
                 *, num_frames: int | None = None, title: str = "", fps: float = 8.0,
                 zoom: float | None = None):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.title, self.fps, self.zoom = title, float(fps), zoom
        self._cursor = 0
        self._widget = None
        self._set_data(sequences, series, num_frames)

    # ------------------------------------------------------------------ data
    def _set_data(self, sequences, series, num_frames) -> None:
        if not isinstance(sequences, Mapping) or not sequences:
            raise ValueError("sequences must be a non-empty mapping name -> frames")
        arrays: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for name, seq in sequences.items():
            if callable(seq):
                arrays[name] = seq
                continue
            a = seq.detach().cpu().numpy() if hasattr(seq, "detach") else np.asarray(seq)
            if a.ndim not in (3, 4):
                raise ValueError(f"sequence {name!r}: expected (T,H,W) or (T,H,W,C) frames, got shape {a.shape}")
            if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
                raise TypeError(f"sequence {name!r}: frames must be uint8 or float in [0,1], got {a.dtype}")
            arrays[name], lengths[name] = a, a.shape[0]
        if num_frames is not None:
            if int(num_frames) < 1:
                raise ValueError(f"num_frames must be >= 1, got {num_frames}")
            lengths = {"num_frames": int(num_frames), **lengths}
        if not lengths:
            raise ValueError("every sequence is a callable: pass num_frames= to say how many frames there are")
        if len(set(lengths.values())) != 1:
            raise ValueError(f"sequences are not aligned: lengths {lengths}; every sequence and series must "
                             f"have the same number of steps")
        n = next(iter(lengths.values()))
        if n < 1:
            raise ValueError("sequences are empty (0 frames)")
        ser: dict[str, np.ndarray] = {}
        for name, ys in (series or {}).items():
            v = np.asarray(ys.detach().cpu().numpy() if hasattr(ys, "detach") else ys, dtype=np.float64)
            if v.ndim != 1:
                raise ValueError(f"series {name!r}: expected shape ({n},), got {v.shape}")
            if v.shape[0] != n:
                raise ValueError(f"series {name!r} has {v.shape[0]} values but the sequences have {n} frames")
            if np.isinf(v).any():
                raise ValueError(f"series {name!r} contains inf (use NaN for 'no value at this step')")
            ser[name] = v
        self._sequences, self._series, self._n = arrays, ser, n
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._cursor = min(self._cursor, n - 1)

    @property
    def num_frames(self) -> int:
        return self._n

    @property
    def names(self) -> list[str]:
        return list(self._sequences)

    @property
    def series_names(self) -> list[str]:
        return list(self._series)

    def _check_t(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self._n:
            raise IndexError(f"frame index {t} out of range [0, {self._n - 1}]")
        return t

    def frame(self, t: int) -> dict[str, np.ndarray]:
        """All sequences at step ``t`` as (H, W, 3) uint8 (lazy sequences are computed and cached)."""
        t = self._check_t(t)
        out = {}
        for name, seq in self._sequences.items():
            key = (name, t)
            if key not in self._cache:
                raw = seq(t) if callable(seq) else seq[t]
                self._cache[key] = to_uint8_frame(raw, f"sequence {name!r} frame {t}")
            out[name] = self._cache[key]
        return out

    def values_at(self, t: int) -> dict[str, float]:
        """Series values at step ``t`` (what the display shows beside the cursor)."""
        t = self._check_t(t)
        return {k: float(v[t]) for k, v in self._series.items()}

    @property
    def cursor(self) -> int:
        return self._cursor

    @cursor.setter
    def cursor(self, t: int) -> None:
        self._cursor = self._check_t(t)
        if self._widget is not None:
            self._slider.value = self._cursor

    def update(self, sequences: Mapping[str, FrameSource] | None = None,
               series: Mapping[str, Any] | None = None, num_frames: int | None = None) -> Scrubber:
        """Replace sequences and/or series (e.g. after re-dreaming) and refresh the live view."""
        self._set_data(sequences if sequences is not None else self._sequences,
                       series if series is not None else self._series,
                       num_frames if num_frames is not None else (None if sequences is not None else self._n))
        if self._widget is not None:
            self._slider.max = self._play.max = self._n - 1
            self._refresh()
        return self

    # ------------------------------------------------------------------ static HTML
    def _display_height(self, frame: np.ndarray) -> int:
        return int(round(frame.shape[0] * (self.zoom if self.zoom else max(1.0, 160 / frame.shape[0]))))

    def to_html(self) -> str:
        """Self-contained HTML + inline JS with every frame embedded; needs no kernel and no network."""
        uid = "wmk-" + uuid.uuid4().hex[:10]
        first = self.frame(0)
        frames = {name: [] for name in self._sequences}
        for t in range(self._n):
            for name, f in self.frame(t).items():
                frames[name].append(base64.b64encode(png_bytes(f)).decode("ascii"))
        data = {"n": self._n, "fps": self.fps, "names": self.names, "frames": [frames[k] for k in self.names],
                "series": {k: [None if not math.isfinite(x) else x for x in v.tolist()]
                           for k, v in self._series.items()}}
        panels = "".join(
            f'<figure class="wmk-fig"><img class="wmk-frame" data-seq="{i}" data-t="0" alt="{html.escape(name)}" '
            f'style="height:{self._display_height(first[name])}px" src="data:image/png;base64,{frames[name][0]}">'
            f'<figcaption>{html.escape(name)}</figcaption></figure>'
            for i, name in enumerate(self.names))
        values = " · ".join(f"{html.escape(k)} = {_fmt(v)}" for k, v in self.values_at(0).items())
        title = f'<div class="wmk-title">{html.escape(self.title)}</div>' if self.title else ""
        # json.dumps does not escape "</", which would end the <script> early.
        blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        return (
            f'<div class="wmk-scrubber" id="{uid}" tabindex="0" role="group" aria-label="rollout scrubber">'
            f"<style>{_CSS}</style>{title}<div class=\"wmk-panels\">{panels}</div>"
            f'<div class="wmk-controls">'
            f'<button type="button" data-act="first" title="first frame (Home)">|&lt;</button>'
            f'<button type="button" data-act="prev" title="previous frame (←)">&lt;</button>'
            f'<button type="button" data-act="play" class="wmk-play" title="play/pause (Space)">play</button>'
            f'<button type="button" data-act="next" title="next frame (→)">&gt;</button>'
            f'<button type="button" data-act="last" title="last frame (End)">&gt;|</button>'
            f'<input type="range" class="wmk-slider" min="0" max="{self._n - 1}" value="0" step="1" '
            f'aria-label="frame">'
            f'<span class="wmk-step">t = 0 / {self._n - 1}</span></div>'
            f'{_series_svg(self._series, self._n, 0)}'
            f'<div class="wmk-values">{values}</div>'
            f'<script type="application/json" class="wmk-data">{blob}</script>'
            f"<script>{_JS.replace('__UID__', uid)}</script></div>")

    def save_html(self, path: str) -> None:
        """Write a standalone page (open it in any browser, offline)."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                     f"</title></head><body>{self.to_html()}</body></html>")

    # ------------------------------------------------------------------ live widget
    def widget(self):
        """The live ipywidgets view (built once; later calls return the same object)."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as W

        first = self.frame(self._cursor)
        self._images = {}
        figs = []
        for name in self.names:
            img = W.Image(value=png_bytes(first[name]), format="png",
                          layout=W.Layout(height=f"{self._display_height(first[name])}px", width="auto"))
            img.add_class("wmk-frame")
            self._images[name] = img
            figs.append(W.VBox([img, W.HTML(f"<center>{html.escape(name)}</center>")]))
        self._play = W.Play(value=self._cursor, min=0, max=self._n - 1, interval=int(1000 / self.fps))
        self._slider = W.IntSlider(value=self._cursor, min=0, max=self._n - 1, description="t",
                                   continuous_update=True, layout=W.Layout(width="420px"))
        W.jslink((self._play, "value"), (self._slider, "value"))
        buttons = []
        for label, fn in (("|<", lambda: 0), ("<", lambda: self._slider.value - 1),
                          (">", lambda: self._slider.value + 1), (">|", lambda: self._n - 1)):
            b = W.Button(description=label, layout=W.Layout(width="42px"))
            b.on_click(lambda _b, fn=fn: setattr(self._slider, "value", max(0, min(self._n - 1, fn()))))
            buttons.append(b)
        self._plot = W.HTML()
        self._values = W.HTML()
        self._slider.observe(lambda ch: self._refresh(), names="value")
        style = W.HTML("<style>.wmk-frame img{image-rendering:pixelated}</style>")
        title = [W.HTML(f"<b>{html.escape(self.title)}</b>")] if self.title else []
        self._widget = W.VBox([style, *title, W.HBox(figs),
                               W.HBox([buttons[0], buttons[1], self._play, buttons[2], buttons[3],
                                       self._slider]), self._plot, self._values])
        self._refresh()
        return self._widget

    def _refresh(self) -> None:
        t = self._cursor = min(int(self._slider.value), self._n - 1)
        for name, f in self.frame(t).items():
            self._images[name].value = png_bytes(f)
        self._plot.value = _series_svg(self._series, self._n, t)
        self._values.value = " · ".join(f"{html.escape(k)} = {_fmt(v)}" for k, v in self.values_at(t).items())

    # ------------------------------------------------------------------ display protocol
    def _repr_mimebundle_(self, include=None, exclude=None):
        if is_static():
            return {"text/html": self.to_html(), "text/plain": repr(self)}
        return self.widget()._repr_mimebundle_(include=include, exclude=exclude)

    def __repr__(self) -> str:
        return (f"Scrubber({self._n} frames; sequences {self.names}; series {self.series_names}"
                f"{'; title ' + repr(self.title) if self.title else ''})")


_CSS = (".wmk-scrubber{font:13px/1.4 system-ui,sans-serif;border:1px solid #ddd;border-radius:6px;"
        "padding:8px;margin:8px 0;outline:none}.wmk-scrubber:focus{border-color:#4a90d9}"
        ".wmk-title{font-weight:600;margin-bottom:4px}.wmk-panels{display:flex;flex-wrap:wrap;gap:8px}"
        ".wmk-fig{margin:0;text-align:center}.wmk-frame{image-rendering:pixelated;display:block}"
        ".wmk-controls{display:flex;align-items:center;gap:4px;margin:6px 0}"
        ".wmk-controls button{min-width:36px;padding:2px 6px;cursor:pointer}"
        ".wmk-slider{flex:1;min-width:120px}.wmk-step{font-variant-numeric:tabular-nums;min-width:90px}"
        ".wmk-plot{display:block;max-width:600px;cursor:crosshair}.wmk-values{font-variant-numeric:tabular-nums}")

_JS = r"""
(function(){
  var root = document.getElementById("__UID__");
  if (!root || root.dataset.ready) return; root.dataset.ready = "1";
  var data = JSON.parse(root.querySelector(".wmk-data").textContent);
  var imgs = root.querySelectorAll("img.wmk-frame"), slider = root.querySelector(".wmk-slider");
  var step = root.querySelector(".wmk-step"), vals = root.querySelector(".wmk-values");
  var plot = root.querySelector("svg.wmk-plot"), cur = root.querySelector(".wmk-cursor");
  var playBtn = root.querySelector(".wmk-play"), timer = null, t = 0;
  function fmt(v){ return (v === null || !isFinite(v)) ? "\u2013" : Number(v.toPrecision(4)).toString(); }
  function show(i){
    t = Math.max(0, Math.min(data.n - 1, i|0));
    slider.value = t; step.textContent = "t = " + t + " / " + (data.n - 1);
    for (var k = 0; k < imgs.length; k++){
      imgs[k].src = "data:image/png;base64," + data.frames[k][t]; imgs[k].dataset.t = t;
    }
    var parts = [];
    for (var name in data.series) parts.push(name + " = " + fmt(data.series[name][t]));
    vals.textContent = parts.join(" \u00b7 ");
    if (cur){
      var l = +plot.dataset.left, r = +plot.dataset.right, w = +plot.dataset.width;
      var x = l + (w - l - r) * (t / Math.max(data.n - 1, 1));
      cur.setAttribute("x1", x.toFixed(1)); cur.setAttribute("x2", x.toFixed(1));
    }
  }
  function pause(){ if (timer){ clearInterval(timer); timer = null; playBtn.textContent = "play"; } }
  function play(){
    if (timer) return pause();
    if (t >= data.n - 1) show(0);
    playBtn.textContent = "pause";
    timer = setInterval(function(){ if (t >= data.n - 1) pause(); else show(t + 1); }, 1000 / data.fps);
  }
  slider.addEventListener("input", function(){ pause(); show(+slider.value); });
  root.querySelectorAll("button[data-act]").forEach(function(b){
    b.addEventListener("click", function(){
      var a = b.dataset.act;
      if (a === "play") return play();
      pause();
      show(a === "first" ? 0 : a === "last" ? data.n - 1 : a === "prev" ? t - 1 : t + 1);
    });
  });
  root.addEventListener("keydown", function(e){
    if (e.target === slider && (e.key === "ArrowLeft" || e.key === "ArrowRight")) return; // native
    var k = e.key, handled = true;
    if (k === "ArrowRight") { pause(); show(t + 1); }
    else if (k === "ArrowLeft") { pause(); show(t - 1); }
    else if (k === "Home") { pause(); show(0); }
    else if (k === "End") { pause(); show(data.n - 1); }
    else if (k === " ") { play(); }
    else handled = false;
    if (handled) e.preventDefault();
  });
  if (plot) plot.addEventListener("click", function(e){
    var box = plot.getBoundingClientRect(), w = +plot.dataset.width;
    var l = +plot.dataset.left, r = +plot.dataset.right;
    var x = (e.clientX - box.left) / box.width * w;
    pause(); show(Math.round((x - l) / (w - l - r) * (data.n - 1)));
  });
})();
"""


def bench(argv: list[str]) -> None:
    """``wmkit bench scrubber``: PNG encoding rate and embedded HTML bytes per frame (64x64 and 96x96)."""
    import argparse
    import time

    from wmkit.bench import emit

    p = argparse.ArgumentParser(prog="wmkit bench scrubber")
    p.add_argument("--frames", type=int, default=200, help="frames per sequence")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    for size in (64, 96):
        # smooth frames (like rendered games), not noise, so PNG sizes are representative
        yy, xx = np.mgrid[0:size, 0:size]
        frames = np.stack([(np.stack([xx + t, yy, xx ^ yy], -1) % 256).astype(np.uint8)
                           for t in range(args.frames)])
        s = Scrubber({"real": frames, "noisy": np.clip(frames + rng.integers(0, 8, frames.shape), 0, 255)
                      .astype(np.uint8)}, series={"r": rng.normal(size=args.frames)})
        t0 = time.perf_counter()
        page = s.to_html()
        dt = time.perf_counter() - t0
        emit("scrubber", f"to_html_{size}px", 2 * args.frames / dt, "frames/s", frames=2 * args.frames)
        emit("scrubber", f"html_bytes_per_frame_{size}px", len(page) / (2 * args.frames), "bytes/frame")
