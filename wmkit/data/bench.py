"""``wmkit bench data``: is the data layer fast enough that it never limits training?

Figures (JSON lines via wmkit.bench.emit), all at 64x64, 16-frame clips:

* ``shard_stream`` -- clips/s streamed from WebDataset shards in this process (decode npy + to tensor);
* ``shard_loader_w<k>`` -- clips/s through a torch DataLoader with k workers (batch 8), and its ratio to
  the single-process rate;
* ``clipdataset`` -- windows/s from an in-memory ClipDataset (the notebooks' path), for comparison;
* ``mp4_decode`` -- frames/s decoding a 640x360 H.264 video (VPT's format) and resizing to 64x64;
* with ``--record``: ``crafter_worldgen`` (seconds per Crafter reset: world generation, ~2 s in pure Python,
  ~0.2 s when numba compiles opensimplex's noise) and ``crafter_record`` / ``driving_record`` -- seconds per
  1000 recorded frames, one episode's world or track generation included.

The synthetic clips are random uint8 frames (decode cost does not depend on content for npy).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def run(argv: list[str] | None = None) -> None:
    from torch.utils.data import DataLoader

    from wmkit.bench import emit
    from wmkit.data.clip import ActionSpace, Clip
    from wmkit.data.dataset import ClipDataset
    from wmkit.data.shards import ShardDataset, write_shards
    from wmkit.data.video import read_mp4, write_mp4
    from wmkit.profiles import profile

    P = profile()
    ap = argparse.ArgumentParser(prog="wmkit bench data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=P.data.bench_clips, help="16-frame clips in the shards")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader figure")
    ap.add_argument("--record", action="store_true", help="also time the Crafter and driving recorders")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    space = ActionSpace("discrete", n=17)
    clips = [Clip(rng.integers(0, 256, (16 * 8, 64, 64, 3), dtype=np.uint8), rng.integers(0, 17, 16 * 8),
                  space, np.zeros(16 * 8, np.float32), np.zeros(16 * 8, bool), dict(episode=f"e{i}", source=f"e{i}"))
             for i in range((args.clips + 7) // 8)]
    with tempfile.TemporaryDirectory() as tmp:
        m = write_shards(clips, tmp, clip_len=16, shard_size=max(args.clips // 8, 1), size=None, progress=False)
        n = m["samples"]
        t0 = time.perf_counter()
        count = sum(1 for _ in ShardDataset(tmp))
        single = count / (time.perf_counter() - t0)
        emit("data", "shard_stream", single, "clips/s", clips=count, frames=16, size=64, threads=1)
        loader = DataLoader(ShardDataset(tmp), batch_size=8, num_workers=args.workers)
        t0 = time.perf_counter()
        count = sum(len(b["frames"]) for b in loader)
        multi = count / (time.perf_counter() - t0)
        emit("data", f"shard_loader_w{args.workers}", multi, "clips/s", clips=count, batch=8,
             ratio_to_single=multi / single)
        assert count == n, f"the loader saw {count} of {n} clips"
    ds = ClipDataset(clips, context=8, future=8, size=None, split="all", stride=16)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    emit("data", "clipdataset", len(ds) / (time.perf_counter() - t0), "windows/s", windows=len(ds))
    with tempfile.TemporaryDirectory() as tmp:
        frames = rng.integers(0, 256, (60, 360, 640, 3), dtype=np.uint8)
        frames = np.repeat(np.repeat(frames[:, ::8, ::8], 8, 1), 8, 2)  # blocky, so H.264 behaves like on video
        write_mp4(Path(tmp) / "v.mp4", frames, fps=20)
        t0 = time.perf_counter()
        out = read_mp4(Path(tmp) / "v.mp4", size=64)
        emit("data", "mp4_decode", len(out) / (time.perf_counter() - t0), "frames/s", src="640x360 h264", size=64)
    if args.record:
        import crafter

        from wmkit.data.standins import record_crafter, record_driving

        try:
            import numba  # noqa: F401  (opensimplex JIT-compiles the world generation when numba is importable)
            jit = True
        except ImportError:
            jit = False
        torch.set_num_threads(1)
        crafter.Env(area=(64, 64), seed=1).reset()  # warm-up: loads numba's compiled cache
        t0 = time.perf_counter()
        for s in range(3):
            crafter.Env(area=(64, 64), seed=100 + s).reset()
        emit("data", "crafter_worldgen", (time.perf_counter() - t0) / 3, "s/episode", numba=jit)
        t0 = time.perf_counter()
        c = record_crafter(seed=12345, steps=500)
        emit("data", "crafter_record", 1000 * (time.perf_counter() - t0) / len(c), "s/1000 frames",
             frames=len(c), includes="world generation of 1 episode", numba=jit)
        t0 = time.perf_counter()
        d = record_driving(seed=12345, steps=500)
        emit("data", "driving_record", 1000 * (time.perf_counter() - t0) / len(d), "s/1000 frames",
             frames=len(d), includes="track generation + 50 skipped zoom frames")
