"""Clips at scale: WebDataset tar shards, streamed, shuffled with a buffer, split over workers and ranks.

:func:`write_shards` cuts clips into fixed-length pieces (``clip_len`` frames at ``size``) and writes them
into ``shard-000000.tar``, ``shard-000001.tar``, ... with the ``webdataset`` package's ``TarWriter``: one
sample per piece, the WebDataset way -- files sharing a key, ``<key>.frames.npy``, ``<key>.actions.npy``,
``<key>.reward.npy``, ``<key>.done.npy``, ``<key>.extra.<name>.npy``, ``<key>.info.json`` -- so any WebDataset
reader can open them. Pieces start every ``clip_len`` frames; when a clip's length is not a multiple, one
last piece ends exactly at the clip's end (overlapping the previous one), so no frame is left out. Clips
shorter than ``clip_len`` are counted in the manifest and reported, never silently dropped. Piece i goes to
shard ``i // shard_size``; each shard is written to a temporary name and renamed, and
``manifest.json`` lists shards and counts, so an interrupted run resumes by skipping complete shards.

:class:`ShardDataset` is an ``IterableDataset`` that streams the tar files (nothing is loaded whole, so
data larger than memory works). Each epoch it permutes the shard list with ``(seed, epoch)`` -- the same
permutation on every rank -- and gives consumer ``g = rank * num_workers + worker_id`` of ``G = world_size *
num_workers`` the shards ``g, g + G, ...``; with fewer shards than consumers it reads every shard and keeps
samples ``g, g + G, ...`` instead. Either way every sample is seen exactly once per epoch across all ranks
and workers. ``shuffle_buffer > 0`` shuffles samples through a buffer of that size (WebDataset's
``shuffle``). Rank and world size come from ``torch.distributed`` when it is initialised, else from
``RANK``/``WORLD_SIZE``, else the arguments.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from wmkit.data.clip import ActionSpace, Clip, ClipFormatError
from wmkit.data.dataset import resize_frames, to_float

MANIFEST = "manifest.json"


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def clip_pieces(clip: Clip, clip_len: int) -> list[int]:
    """Start frames of the pieces of one clip (see module docstring); [] when the clip is too short."""
    T = len(clip)
    if T < clip_len:
        return []
    starts = list(range(0, T - clip_len + 1, clip_len))
    if starts[-1] + clip_len < T:
        starts.append(T - clip_len)
    return starts


def _sample(clip: Clip, start: int, clip_len: int, size) -> dict:
    piece = clip.slice(start, start + clip_len)
    key = f"{piece.episode}-{int(piece.meta['frame_index']):09d}".replace("/", "_").replace(".", "_")
    s = {"__key__": key, "frames.npy": _npy(resize_frames(piece.frames, size)), "actions.npy": _npy(piece.actions),
         "info.json": json.dumps({"action_space": piece.action_space.to_dict(), "meta": piece.meta}).encode()}
    if piece.reward is not None:
        s["reward.npy"] = _npy(piece.reward)
    if piece.done is not None:
        s["done.npy"] = _npy(piece.done)
    for k, v in piece.extras.items():
        s[f"extra.{k}.npy"] = _npy(v)
    return s


def write_shards(clips: Iterable[Clip], out_dir: str | os.PathLike, clip_len: int = 16, shard_size: int = 64,
                 size: int | tuple[int, int] | None = 64, progress: bool = True, resume: bool = True) -> dict:
    """Write the pieces of ``clips`` into tar shards under ``out_dir``; returns the manifest (also saved)."""
    import webdataset as wds
    from tqdm.auto import tqdm

    if clip_len < 1 or shard_size < 1:
        raise ValueError(f"clip_len and shard_size must be >= 1, got {clip_len}, {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = list(clips)
    todo = [(c, s) for c in clips for s in clip_pieces(c, clip_len)]
    short = [c.meta.get("source", c.episode) for c in clips if len(c) < clip_len]
    if short:
        warnings.warn(f"write_shards: {len(short)} clip(s) shorter than clip_len={clip_len} frames are not "
                      f"written: {short[:3]}", stacklevel=2)
    n_shards = (len(todo) + shard_size - 1) // shard_size
    params = {"clip_len": clip_len, "shard_size": shard_size, "size": size, "samples": len(todo)}
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else None
    if old is not None and {k: old.get(k) for k in params} != json.loads(json.dumps(params)):
        if resume:
            was = {k: old.get(k) for k in params}
            raise ValueError(f"{out / MANIFEST}: existing shards were written with {was}, now {params}; "
                             f"use another folder or resume=False")
    names, written, skipped = [], 0, 0
    bar = tqdm(total=n_shards, desc="write shards", unit="shard", disable=not progress)
    for i in range(n_shards):
        name = f"shard-{i:06d}.tar"
        names.append(name)
        part = todo[i * shard_size:(i + 1) * shard_size]
        path = out / name
        if resume and old is not None and name in old.get("shards", {}) and path.exists() \
                and old["shards"][name] == len(part):
            skipped += 1
            bar.update()
            continue
        tmp = out / f"{name}.{os.getpid()}.tmp"
        with wds.TarWriter(str(tmp)) as sink:
            for clip, start in part:
                sink.write(_sample(clip, start, clip_len, size))
        os.replace(tmp, path)
        written += 1
        bar.update()
        manifest = dict(params, shards={n: min(shard_size, len(todo) - j * shard_size) for j, n in enumerate(names)},
                        complete=i == n_shards - 1, too_short=short, episodes=sorted({c.episode for c in clips}))
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    bar.close()
    manifest = dict(params, shards={n: min(shard_size, len(todo) - j * shard_size) for j, n in enumerate(names)},
                    complete=True, too_short=short, episodes=sorted({c.episode for c in clips}),
                    written=written, resumed=skipped)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def shard_paths(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A shard folder (its manifest order, else sorted *.tar) or an explicit list of tar files."""
    if isinstance(source, (str, os.PathLike)):
        d = Path(source)
        if d.is_dir():
            m = d / MANIFEST
            names = list(json.loads(m.read_text())["shards"]) if m.exists() else sorted(p.name for p in d.glob("*.tar"))
            if not names:
                raise FileNotFoundError(f"{d}: no .tar shards")
            return [d / n for n in names]
        return [d]
    return [Path(p) for p in source]


def iter_shard(path: Path) -> Iterator[dict[str, bytes]]:
    """Stream the samples of one tar shard (fields grouped by key, WebDataset convention)."""
    current: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                key, _, field = base.partition(".")
                if current and key != current["__key__"]:
                    yield current
                    current = {}
                current["__key__"] = key
                current[field] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ClipFormatError(f"{path}: corrupt or truncated shard after sample {current.get('__key__')!r} "
                              f"({type(e).__name__}: {e})") from e
    if current:
        yield current


def decode_sample(s: dict[str, bytes], where: str) -> Clip:
    """One shard sample -> Clip (errors name the shard and key)."""
    try:
        load = lambda b: np.load(io.BytesIO(b), allow_pickle=False)  # noqa: E731
        info = json.loads(s["info.json"])
        extras = {k[len("extra."):-len(".npy")]: load(v) for k, v in s.items() if k.startswith("extra.")}
        meta = dict(info["meta"], shard=where)
        return Clip(load(s["frames.npy"]), load(s["actions.npy"]), ActionSpace.from_dict(info["action_space"]),
                    load(s["reward.npy"]) if "reward.npy" in s else None,
                    load(s["done.npy"]) if "done.npy" in s else None, meta, extras)
    except (KeyError, ValueError) as e:
        raise ClipFormatError(f"{where}: sample {s.get('__key__')!r} is malformed ({type(e).__name__}: {e})") from e


def clip_to_item(clip: Clip) -> dict:
    """The training dict ClipDataset returns, for a whole (already cut and resized) clip."""
    r = clip.reward if clip.reward is not None else np.zeros(len(clip), np.float32)
    d = clip.done if clip.done is not None else np.zeros(len(clip), bool)
    return {"frames": torch.from_numpy(to_float(clip.frames)),  # (T, 3, H, W)
            "actions": torch.from_numpy(clip.actions), "reward": torch.from_numpy(r), "done": torch.from_numpy(d),
            "episode": clip.episode, "start": int(clip.meta.get("frame_index", 0))}


def _dist() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


class ShardDataset(IterableDataset):
    """Stream clips from shards; split over ranks and DataLoader workers; optional shuffle buffer.

    ``as_tensors=True`` yields ClipDataset-style dicts (frames float (T, 3, H, W) in [0, 1], ...), else Clips.
    ``episodes`` keeps only samples of those episodes (e.g. ``ClipDataset``'s ``train_episodes``).
    Call :meth:`set_epoch` each epoch for a new shard order and shuffle.
    """

    def __init__(self, source, shuffle_buffer: int = 0, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, as_tensors: bool = True, episodes: Iterable[str] | None = None):
        self.paths = shard_paths(source)
        missing = [p for p in self.paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"missing shard file(s): {missing[:3]}")
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0
        self.rank, self.world_size, self.as_tensors = rank, world_size, as_tensors
        self.episodes = None if episodes is None else set(episodes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def consumer(self) -> tuple[int, int]:
        """(g, G): this process's consumer index and the number of consumers (ranks x workers)."""
        d = _dist()
        rank, world = d if d is not None else (self.rank or 0, self.world_size or 1)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world_size {world}")
        w = get_worker_info()
        wid, nw = (w.id, w.num_workers) if w is not None else (0, 1)
        return rank * nw + wid, world * nw

    def _samples(self) -> Iterator[Clip]:
        # [eq:split]
        g, G = self.consumer()
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.paths))
        paths = [self.paths[i] for i in order]
        by_shard = len(paths) >= G
        mine = paths[g::G] if by_shard else paths
        n = 0
        for p in mine:
            for s in iter_shard(p):
                n += 1
                if not by_shard and (n - 1) % G != g:
                    continue
                # [/eq:split]
                clip = decode_sample(s, str(p))
                if self.episodes is None or clip.episode in self.episodes:
                    yield clip

    def __iter__(self):
        it = self._samples()
        if self.shuffle_buffer > 0:
            it = self._shuffled(it)
        for clip in it:
            yield clip_to_item(clip) if self.as_tensors else clip

    def _shuffled(self, it: Iterator[Clip]) -> Iterator[Clip]:
        g, _ = self.consumer()
        rng = np.random.default_rng([self.seed, self.epoch, g, 1])
        buf: list[Clip] = []
        for x in it:
            if len(buf) < self.shuffle_buffer:
                buf.append(x)
                continue
            i = int(rng.integers(len(buf)))
            buf[i], x = x, buf[i]
            yield x
        rng.shuffle(buf)
        yield from buf
