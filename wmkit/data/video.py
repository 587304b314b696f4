"""Video files in and out with PyAV (FFmpeg): any game or driving mp4 as a clip, and mp4 writing for fixtures.

* :func:`read_mp4` decodes every frame to (T, H, W, 3) uint8 RGB (optionally resized). A file FFmpeg cannot
  open, a decode error, or fewer decoded frames than the container declares (a truncated download) raises
  :class:`~wmkit.data.clip.ClipFormatError` naming the file and the frame.
* :func:`load_mp4` wraps one video as a :class:`~wmkit.data.clip.Clip` without actions (``kind="none"``).
* :func:`mp4_clips` loads a folder of mp4 files; ``strict=False`` skips unreadable ones and reports them.
* :func:`write_mp4` encodes frames with libx264 (yuv420p, constant rate factor ``crf``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wmkit.data.clip import NO_ACTIONS, Clip, ClipFormatError, report_skipped


def _open(path: Path):
    import av

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ClipFormatError(f"{path}: FFmpeg cannot open this file (truncated or not a video?): {e}") from e
    if not container.streams.video:
        container.close()
        raise ClipFormatError(f"{path}: no video stream")
    return container


def probe_mp4(path: str | os.PathLike) -> dict:
    """Frame count (as the container declares it), frame rate and size, without decoding."""
    path = Path(path)
    with _open(path) as c:
        s = c.streams.video[0]
        return {"frames": int(s.frames), "fps": float(s.average_rate or 0), "width": s.codec_context.width,
                "height": s.codec_context.height}


def iter_mp4(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield frames as (H, W, 3) uint8 RGB (resized by FFmpeg's swscale with area averaging when ``size`` is
    given); decode errors raise ClipFormatError naming the frame."""
    import av

    path = Path(path)
    h, w = (size, size) if isinstance(size, int) else size if size is not None else (None, None)
    with _open(path) as c:
        stream = c.streams.video[0]
        n = 0
        try:
            for frame in c.decode(stream):
                if size is None:
                    yield frame.to_ndarray(format="rgb24")  # (H, W, 3)
                else:
                    yield frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                n += 1
        except av.error.FFmpegError as e:
            raise ClipFormatError(f"{path}: decode error at frame {n}: {e}") from e
        declared = int(stream.frames)
        if declared and n < declared:
            raise ClipFormatError(f"{path}: truncated video: decoded {n} of the {declared} frames the container "
                                  f"declares (frame {n} onward is missing)")


def read_mp4(path: str | os.PathLike, size: int | tuple[int, int] | None = None,
             max_frames: int | None = None) -> np.ndarray:
    """All frames (or the first ``max_frames``) as (T, H, W, 3) uint8, resized to ``size`` if given."""
    frames = []
    for f in iter_mp4(path, size):
        frames.append(f)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise ClipFormatError(f"{path}: the video has no frames")
    return np.stack(frames)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 20.0, crf: int = 18) -> Path:
    """Encode (T, H, W, 3) uint8 frames as H.264 mp4 (even H and W, as yuv420p needs)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4 expects (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"write_mp4: H and W must be even for yuv420p, got {frames.shape[1:3]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=int(round(fps)))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": str(crf)}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def load_mp4(path: str | os.PathLike, size: int | tuple[int, int] | None = None, max_frames: int | None = None,
             episode: str | None = None) -> Clip:
    """One video file as an action-free clip (meta: source, fps, episode = file stem unless given)."""
    path = Path(path)
    info = probe_mp4(path)
    frames = read_mp4(path, size, max_frames)
    meta = dict(source=str(path), fps=info["fps"], episode=episode or path.stem, width=info["width"],
                height=info["height"])
    return Clip(frames, NO_ACTIONS.empty(len(frames)), NO_ACTIONS, meta=meta)


def mp4_clips(folder: str | os.PathLike, size: int | tuple[int, int] | None = 64, strict: bool = True,
              errors: list[str] | None = None, pattern: str = "**/*.mp4") -> list[Clip]:
    """Every mp4 under ``folder`` (episode = path relative to the folder). ``strict=False`` skips unreadable
    files: each message goes to ``errors`` (if given) and a warning reports how many were skipped."""
    folder = Path(folder)
    paths = sorted(folder.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no files matching {pattern} under {folder}")
    clips, bad = [], []
    for p in paths:
        try:
            clips.append(load_mp4(p, size, episode=str(p.relative_to(folder).with_suffix(""))))
        except ClipFormatError as e:
            if strict:
                raise
            bad.append(str(e))
    report_skipped(f"mp4_clips({folder})", bad, errors, total=len(paths), unit="files")
    return clips
