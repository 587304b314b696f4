"""OpenDV-YouTube (Yang et al. 2024, GenAD) driving video as clips with the driving command as label.

The on-disk format (OpenDriveLab/DriveAGI, ``opendv/utils/frame_extraction.py`` and ``opendv/README.md``):
each video becomes one folder of JPEGs sampled at 10 Hz (the first 90 s and last 60 s discarded), named by a
9-digit zero-padded index, ``000000000.jpg``, ``000000001.jpg``, ... The language annotations
(``10hz_YouTube_train_split{0..9}.json``, ``10hz_YouTube_val.json``) are lists of records, one per clip::

    {"cmd": <int 0..13>, "blip": <str>, "folder": <path of the video's image folder>,
     "first_frame": "000000123.jpg", "last_frame": "000000162.jpg"}      # both frames included

``cmd`` indexes the 14 commands of ``opendv/utils/cmd2caption.py`` (:data:`COMMANDS`, the plain captions).
:func:`load_opendv` turns each record into a clip whose every action is that command (a discrete space of
14, so a command-conditioned model reads it like any action), with ``meta["blip"]`` (the BLIP caption of
the centre frame) and ``meta["command"]``. The clip's episode is the *video folder*, so the split by episode
keeps all clips of one video on the same side. Without annotations, each folder is one action-free clip.

A missing frame inside [first_frame, last_frame] (a JPEG gap), a badly named file, an unknown command or a
missing key raises :class:`~wmkit.data.clip.ClipFormatError` naming the annotation file and record index or
the folder and frame; ``strict=False`` skips and reports.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from wmkit.data.clip import NO_ACTIONS, ActionSpace, Clip, ClipFormatError, report_skipped
from wmkit.data.dataset import resize_frames

COMMANDS = ("Go straight.", "Pass the intersection.", "Turn left.", "Turn right.", "Change to the left lane.",
            "Change to the right lane.", "Go to the left lane branch.", "Go to the right lane branch.",
            "Pass the crosswalk.", "Pass the railroad.", "Merge.", "Make a U-turn.", "Stop.", "Deviate.")
COMMAND_SPACE = ActionSpace("discrete", n=len(COMMANDS), names=COMMANDS)
OPENDV_FPS = 10.0
FRAME_NAME = re.compile(r"^(\d{9})\.jpg$")
KEYS = ("cmd", "blip", "folder", "first_frame", "last_frame")


def frame_index(name: str, where: str) -> int:
    m = FRAME_NAME.match(name)
    if not m:
        raise ClipFormatError(f"{where}: frame name {name!r} is not a 9-digit zero-padded index + .jpg "
                              f"(e.g. 000000123.jpg)")
    return int(m.group(1))


def read_frames(folder: Path, first: int, last: int, size) -> np.ndarray:
    """JPEGs first..last (inclusive) of a video folder; a missing one raises naming it."""
    frames = []
    for i in range(first, last + 1):
        p = folder / f"{i:09d}.jpg"
        if not p.exists():
            raise ClipFormatError(f"{folder}: frame {p.name} is missing (gap in {first:09d}..{last:09d}.jpg)")
        try:
            img = np.asarray(Image.open(p).convert("RGB"))
        except OSError as e:
            raise ClipFormatError(f"{p}: unreadable JPEG ({e})") from e
        frames.append(resize_frames(img[None], size)[0] if size is not None else img)
    return np.stack(frames)


def _records(annotations) -> list[tuple[str, int, object]]:
    """(file, index, record) for every annotation record of a path, a list of paths, or a list of dicts."""
    if isinstance(annotations, (str, os.PathLike)):
        annotations = [annotations]
    out = []
    for item in annotations:
        if isinstance(item, dict):
            out.append(("<annotations>", len(out), item))
            continue
        path = Path(item)
        try:
            recs = json.loads(path.read_text())
        except ValueError as e:
            raise ClipFormatError(f"{path}: invalid JSON ({e})") from e
        if not isinstance(recs, list):
            raise ClipFormatError(f"{path}: expected a list of clip records, got {type(recs).__name__}")
        out += [(str(path), i, r) for i, r in enumerate(recs)]
    return out


def _annotated_clip(root: Path, where: str, rec, size) -> Clip:
    if not isinstance(rec, dict) or any(k not in rec for k in KEYS):
        missing = [k for k in KEYS if not isinstance(rec, dict) or k not in rec]
        raise ClipFormatError(f"{where}: record misses {missing} (expected keys {list(KEYS)})")
    cmd = rec["cmd"]
    if not isinstance(cmd, int) or not 0 <= cmd < len(COMMANDS):
        raise ClipFormatError(f"{where}: cmd {cmd!r} is not one of the 14 command ids 0..13")
    first = frame_index(rec["first_frame"], where)
    last = frame_index(rec["last_frame"], where)
    if last < first:
        raise ClipFormatError(f"{where}: last_frame {rec['last_frame']} comes before first_frame {rec['first_frame']}")
    folder = root / rec["folder"]
    if not folder.is_dir():
        raise ClipFormatError(f"{where}: folder {folder} does not exist")
    frames = read_frames(folder, first, last, size)
    meta = dict(source=f"{where} ({rec['folder']} {rec['first_frame']}..{rec['last_frame']})", fps=OPENDV_FPS,
                episode=str(rec["folder"]), frame_index=first, dataset="opendv", blip=str(rec["blip"]),
                command=COMMANDS[cmd], cmd=cmd)
    return Clip(frames, np.full(len(frames), cmd, np.int64), COMMAND_SPACE, meta=meta)


def _folder_clip(folder: Path, root: Path, size) -> Clip:
    names = sorted(p.name for p in folder.glob("*.jpg"))
    if not names:
        raise ClipFormatError(f"{folder}: no JPEG frames")
    idx = [frame_index(n, str(folder)) for n in names]
    frames = read_frames(folder, idx[0], idx[-1], size)  # a gap raises naming the missing frame
    meta = dict(source=str(folder), fps=OPENDV_FPS, episode=str(folder.relative_to(root)), frame_index=idx[0],
                dataset="opendv")
    return Clip(frames, NO_ACTIONS.empty(len(frames)), NO_ACTIONS, meta=meta)


def load_opendv(frames_root: str | os.PathLike, annotations: str | os.PathLike | Sequence | None = None,
                size: int | tuple[int, int] | None = 64, strict: bool = True,
                errors: list[str] | None = None) -> list[Clip]:
    """Clips of OpenDV-YouTube: one per annotation record (with its command), or one per video folder."""
    root = Path(frames_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no OpenDV frames folder")
    clips, bad = [], []
    if annotations is None:
        folders = sorted({p.parent for p in root.rglob("*.jpg")})
        items = [(str(f), lambda f=f: _folder_clip(f, root, size)) for f in folders]
    else:
        items = [(f"{file}[{i}]", lambda w=f"{file}[{i}]", r=rec: _annotated_clip(root, w, r, size))
                 for file, i, rec in _records(annotations)]
    for _where, make in items:
        try:
            clips.append(make())
        except ClipFormatError as e:
            if strict:
                raise
            bad.append(str(e))
    report_skipped("load_opendv", bad, errors, total=len(items), unit="clips")
    return clips
