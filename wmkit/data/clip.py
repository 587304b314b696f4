"""The one clip format every stage-3/4 model reads (Genie, GameNGen/DIAMOND, V-JEPA).

A :class:`Clip` is a stretch of one episode of video with the actions taken in it::

    clip.frames        # (T, H, W, 3) uint8
    clip.actions       # (T,) int64 (discrete) | (T, A) float32 (continuous) | (T, 0) float32 (no actions)
    clip.action_space  # ActionSpace(kind="discrete", n=17, names=(...)) or (kind="continuous", dim=3, ...)
    clip.reward        # (T,) float32 or None      clip.done: (T,) bool or None
    clip.meta          # JSON-able dict: source, fps, episode, frame_index (first frame's index), ...
    clip.extras        # name -> per-frame array (T, ...): raw controls, poses, text ids, ...

Time convention (the same as Genie's and DIAMOND's datasets): ``actions[t]`` is the action taken
*after seeing* ``frames[t]``; it leads to ``frames[t + 1]``. ``reward[t]`` is the reward that action
earned and ``done[t]`` says the episode ended after it. So a model predicting frame t+1 may condition on
frames[:t+1] and actions[:t+1]. Where a source records one fewer action than frames (the last frame has no
action after it), the last action is the space's ``pad`` value and ``meta["last_action_known"]`` is False.

Clips are stored as one ``.npz`` each (:func:`save_clip` / :func:`load_clip`): arrays plus a JSON string
for the action space and meta. Malformed input raises :class:`ClipFormatError` naming the file/field.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("discrete", "continuous", "none")


class ClipFormatError(ValueError):
    """A clip (or a file that should hold one) is malformed: the message names the file/field."""


def report_skipped(what: str, bad: list[str], errors: list[str] | None, total: int | None = None,
                   unit: str = "bad item(s)") -> None:
    """What every loader does with ``strict=False``: append the messages of the skipped items to ``errors`` (if
    given) and warn once with their count and the first message. Nothing is skipped silently."""
    if not bad:
        return
    if errors is not None:
        errors.extend(bad)
    count = f"{len(bad)} of {total} {unit}" if total is not None else f"{len(bad)} {unit}"
    warnings.warn(f"{what}: skipped {count}; first: {bad[0]}", stacklevel=3)


@dataclass(frozen=True)
class ActionSpace:
    """What a clip's ``actions`` array means.

    ``kind="discrete"``: ``actions`` is (T,) int64 in [0, n); ``names[i]`` names action i.
    ``kind="continuous"``: ``actions`` is (T, dim) float32; ``names[j]`` names component j, with optional
    ``low``/``high`` bounds (informative; checked by :meth:`validate` when given).
    ``kind="none"``: video without actions; ``actions`` is (T, 0) float32.
    """

    kind: str
    n: int = 0
    dim: int = 0
    names: tuple[str, ...] = ()
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    units: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "units", tuple(self.units))
        if self.kind not in KINDS:
            raise ValueError(f"ActionSpace.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "discrete":
            if self.n < 1 or self.dim:
                raise ValueError(f"a discrete ActionSpace needs n >= 1 and dim=0, got n={self.n}, dim={self.dim}")
            if self.names and len(self.names) != self.n:
                raise ValueError(f"ActionSpace: {len(self.names)} names for n={self.n} discrete actions")
        elif self.kind == "continuous":
            if self.dim < 1 or self.n:
                raise ValueError(f"a continuous ActionSpace needs dim >= 1 and n=0, got dim={self.dim}, n={self.n}")
            for name in ("names", "units", "low", "high"):
                v = getattr(self, name)
                if v and len(v) != self.dim:
                    raise ValueError(f"ActionSpace.{name} has {len(v)} entries for dim={self.dim}")
        elif self.n or self.dim:
            raise ValueError("ActionSpace(kind='none') takes no n or dim")

    @property
    def pad(self) -> np.ndarray:
        """The filler for an unknown action: 0 (no-op) or a zero vector."""
        return np.int64(0) if self.kind == "discrete" else np.zeros(self.dim, np.float32)

    def empty(self, T: int) -> np.ndarray:
        """A (T,) or (T, dim) array of ``pad`` values."""
        return np.zeros(T, np.int64) if self.kind == "discrete" else np.zeros((T, self.dim), np.float32)

    def validate(self, actions: np.ndarray, T: int, where: str = "actions") -> np.ndarray:
        """Check ``actions`` has this space's shape/dtype/range for T frames; returns it (cast if lossless)."""
        a = np.asarray(actions)
        if self.kind == "discrete":
            if a.shape != (T,):
                raise ClipFormatError(f"{where}: discrete actions must have shape ({T},), got {a.shape}")
            if not np.issubdtype(a.dtype, np.integer):
                raise ClipFormatError(f"{where}: discrete actions must be integers, got dtype {a.dtype}")
            bad = np.flatnonzero((a < 0) | (a >= self.n))
            if bad.size:
                raise ClipFormatError(f"{where}: action {int(a[bad[0]])} at frame {int(bad[0])} is outside "
                                      f"[0, {self.n})")
            return a.astype(np.int64)
        dim = self.dim if self.kind == "continuous" else 0
        if a.shape != (T, dim):
            raise ClipFormatError(f"{where}: {self.kind} actions must have shape ({T}, {dim}), got {a.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ClipFormatError(f"{where}: continuous actions must be floats, got dtype {a.dtype}")
        if a.size and not np.isfinite(a).all():
            frame = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
            raise ClipFormatError(f"{where}: non-finite action at frame {frame}: {a[frame]}")
        for bound, op, word in ((self.low, np.less, "below low"), (self.high, np.greater, "above high")):
            if bound and a.size:
                bad = np.argwhere(op(a, np.asarray(bound, np.float32) + (-1e-5 if word[0] == "b" else 1e-5)))
                if bad.size:
                    t, j = (int(x) for x in bad[0])
                    raise ClipFormatError(f"{where}: action[{t}][{j}] = {a[t, j]} is {word} {bound[j]}")
        return a.astype(np.float32)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "n": self.n, "dim": self.dim, "names": list(self.names), "units": list(self.units)}
        if self.low is not None:
            d["low"] = list(self.low)
        if self.high is not None:
            d["high"] = list(self.high)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ActionSpace:
        low, high = d.get("low"), d.get("high")
        return cls(kind=d["kind"], n=int(d.get("n", 0)), dim=int(d.get("dim", 0)), names=tuple(d.get("names", ())),
                   low=None if low is None else tuple(low), high=None if high is None else tuple(high),
                   units=tuple(d.get("units", ())))


NO_ACTIONS = ActionSpace("none")


@dataclass
class Clip:
    """A stretch of one episode: frames, the actions taken after each frame, optional reward/done, meta.

    Validated on construction; every problem raises :class:`ClipFormatError` naming ``meta["source"]``.
    """

    frames: np.ndarray  # (T, H, W, 3) uint8
    actions: np.ndarray  # (T,) int64 | (T, A) float32 | (T, 0) float32
    action_space: ActionSpace
    reward: np.ndarray | None = None  # (T,) float32
    done: np.ndarray | None = None  # (T,) bool
    meta: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T, ...)

    def __post_init__(self):
        where = str(self.meta.get("source", "clip"))
        f = self.frames
        if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[-1] != 3:
            raise ClipFormatError(f"{where}: frames must be a (T, H, W, 3) array, got "
                                  f"{getattr(f, 'shape', type(f).__name__)}")
        if f.dtype != np.uint8:
            raise ClipFormatError(f"{where}: frames must be uint8 (0..255), got {f.dtype}")
        T = len(f)
        if T < 1:
            raise ClipFormatError(f"{where}: a clip needs at least one frame")
        if not isinstance(self.action_space, ActionSpace):
            raise ClipFormatError(f"{where}: action_space must be an ActionSpace, got {type(self.action_space)}")
        self.actions = self.action_space.validate(self.actions, T, f"{where}: actions")
        if self.reward is not None:
            r = np.asarray(self.reward)
            if r.shape != (T,):
                raise ClipFormatError(f"{where}: reward must have shape ({T},) (one per frame), got {r.shape}")
            self.reward = r.astype(np.float32)
        if self.done is not None:
            d = np.asarray(self.done)
            if d.shape != (T,) or d.dtype != np.bool_:
                raise ClipFormatError(f"{where}: done must be a ({T},) bool array, got {d.shape} {d.dtype}")
        for k, v in self.extras.items():
            if np.asarray(v).shape[:1] != (T,):
                raise ClipFormatError(f"{where}: extras[{k!r}] must have {T} rows (one per frame), "
                                      f"got shape {np.asarray(v).shape}")
        try:
            json.dumps(self.meta)
        except TypeError as e:
            raise ClipFormatError(f"{where}: meta must be JSON-serialisable ({e})") from e
        self.meta.setdefault("frame_index", 0)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def episode(self) -> str:
        return str(self.meta.get("episode", self.meta.get("source", "?")))

    @property
    def fps(self) -> float:
        return float(self.meta.get("fps", 0.0))

    def slice(self, start: int, stop: int) -> Clip:
        """Frames [start, stop) as a new clip (meta.frame_index shifted accordingly)."""
        if not 0 <= start < stop <= len(self):
            raise IndexError(f"Clip.slice({start}, {stop}) outside [0, {len(self)}]")
        meta = dict(self.meta, frame_index=int(self.meta.get("frame_index", 0)) + start)
        if "last_action_known" in meta and stop < len(self):
            meta["last_action_known"] = True  # only the clip's final action can be the unknown pad
        return Clip(self.frames[start:stop], self.actions[start:stop], self.action_space,
                    None if self.reward is None else self.reward[start:stop],
                    None if self.done is None else self.done[start:stop], meta,
                    {k: np.asarray(v)[start:stop] for k, v in self.extras.items()})

    def subsample(self, every: int) -> Clip:
        """Keep frames 0, every, 2*every, ... (e.g. 50 Hz -> 2 Hz keyframes with every=25).

        The action of a kept frame must describe what happens until the *next* kept frame, so continuous
        actions are averaged over the ``every`` steps after it (mean speed, mean yaw rate, mean steering:
        the keyframe-to-keyframe ego motion, as nuScenes gives it), rewards are summed and ``done`` is any()
        over the interval. Discrete actions cannot be merged and raise. A last, incomplete interval is
        averaged over the steps it has.
        """
        if every < 1:
            raise ValueError(f"subsample: every must be >= 1, got {every}")
        if every == 1:
            return self
        if self.action_space.kind == "discrete":
            raise ValueError("subsample: discrete actions of skipped frames cannot be merged into one action; "
                             "record at the target rate instead (e.g. frame_skip)")
        T = len(self)
        keep = np.arange(0, T, every)
        groups = [slice(k, min(k + every, T)) for k in keep]
        actions = np.stack([self.actions[g].mean(0) for g in groups]).astype(np.float32)
        reward = None if self.reward is None else np.array([self.reward[g].sum() for g in groups], np.float32)
        done = None if self.done is None else np.array([self.done[g].any() for g in groups])
        meta = dict(self.meta, fps=self.fps / every if self.fps else 0.0,
                    frame_stride=int(self.meta.get("frame_stride", 1)) * every)
        extras = {k: np.asarray(v)[keep] for k, v in self.extras.items()}
        return Clip(self.frames[keep], actions, self.action_space, reward, done, meta, extras)


# ------------------------------------------------------------------------------------------ files
def clip_to_arrays(clip: Clip) -> dict[str, np.ndarray]:
    """The arrays a clip is stored as (npz and WebDataset shards share this layout)."""
    arrays = {"frames": clip.frames, "actions": clip.actions,
              "info": np.frombuffer(json.dumps({"action_space": clip.action_space.to_dict(),
                                                "meta": clip.meta}).encode(), np.uint8)}
    if clip.reward is not None:
        arrays["reward"] = clip.reward
    if clip.done is not None:
        arrays["done"] = clip.done
    for k, v in clip.extras.items():
        arrays[f"extra.{k}"] = np.asarray(v)
    return arrays


def clip_from_arrays(arrays: dict[str, np.ndarray], where: str) -> Clip:
    """Inverse of :func:`clip_to_arrays`; errors name ``where``."""
    missing = [k for k in ("frames", "actions", "info") if k not in arrays]
    if missing:
        raise ClipFormatError(f"{where}: missing arrays {missing}")
    try:
        info = json.loads(bytes(np.asarray(arrays["info"], np.uint8)).decode())
        space = ActionSpace.from_dict(info["action_space"])
        meta = info["meta"]
    except (ValueError, KeyError, TypeError) as e:
        raise ClipFormatError(f"{where}: unreadable clip info ({type(e).__name__}: {e})") from e
    meta = dict(meta)
    meta.setdefault("source", where)
    extras = {k[len("extra."):]: v for k, v in arrays.items() if k.startswith("extra.")}
    try:
        return Clip(arrays["frames"], arrays["actions"], space, arrays.get("reward"), arrays.get("done"),
                    meta, extras)
    except ClipFormatError as e:
        raise ClipFormatError(f"{where}: {e}") from e


def save_clip(path: str | os.PathLike, clip: Clip, compress: bool = True) -> Path:
    """Write one clip as .npz (atomic: temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")  # unique: parallel writers
    (np.savez_compressed if compress else np.savez)(tmp, **clip_to_arrays(clip))
    os.replace(tmp, path)
    return path


def load_clip(path: str | os.PathLike) -> Clip:
    """Read a clip written by :func:`save_clip`; a corrupt or malformed file raises ClipFormatError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ClipFormatError(f"{path}: corrupt or truncated clip file ({type(e).__name__}: {e})") from e
    return clip_from_arrays(arrays, str(path))
