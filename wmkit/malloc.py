"""Keep freed CPU memory for reuse: large tensors without a page fault per 4 KiB.

Why. glibc's ``malloc`` serves a request of at least ``M_MMAP_THRESHOLD`` bytes with a fresh ``mmap`` and gives
it back to the kernel with ``munmap`` on ``free``. The threshold adapts to freed sizes but is capped at 32 MiB
on 64-bit Linux, and the top of the heap is given back too once more than ``M_TRIM_THRESHOLD`` is free (at most
64 MiB). So every CPU tensor larger than 32 MiB -- one conv activation of a DreamerV3 update, 1,024 frames x
32 x 32 x 8 floats, is 33.5 MiB -- arrives as untouched pages, and the first write to each 4 KiB page is a page
fault in which the kernel zeroes it. Measured on the 2-core CI machine (AMD EPYC, 1 thread): ``x * x`` on 8.4M
floats 35 ms with glibc's default, 6 ms with freed memory kept; the DreamerV3 ``tiny`` update 2,187 -> 1,567 ms.

What. :func:`keep_freed_memory` sets two ``mallopt`` parameters of the running process: ``M_MMAP_MAX = 0``
(large requests come from the heap, not from ``mmap``) and ``M_TRIM_THRESHOLD`` = 2 GiB (up to that much freed
memory stays at the top of the heap for the next request). ``import wmkit`` calls it on Linux with glibc unless the
environment sets ``WMKIT_KEEP_FREED_MEMORY=0``. The glibc environment variables ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647`` do the same for a whole process from its start.

The cost. The process keeps its peak memory (RSS does not shrink after a large step), and the heap can
fragment when large and small long-lived blocks interleave. The first reuses can miss: PyTorch asks for 64-byte
aligned blocks, so a request is a little larger than the block freed before it, and a freed block that cannot
merge into the top of the heap is skipped. In a loop of 64 MiB tensors glibc settles within a few rounds on a
handful of blocks that it then reuses with no page faults, and RSS stays flat (``tests/test_malloc.py``).
PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc; this needs no extra library.
GPUs are untouched (PyTorch caches CUDA memory itself). macOS, Windows and musl have other allocators: there the
call does nothing and returns False.

``wmkit bench malloc`` times the same work in two worker processes, one with glibc's default and one with
this setting, alternately, and prints the ratio and the page faults per call.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_TRIM_THRESHOLD = 2**31 - 1        # mallopt takes an int: 2 GiB, above any step's working set in the cpu profile
ENV = "WMKIT_KEEP_FREED_MEMORY"

_state = {"applied": False}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse in this process (see the module docstring). Returns True when the
    setting is in force, False where the allocator is not glibc's. Calling it again is harmless."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD) == 1 and ok
    _state["applied"] = ok
    return ok


def applied() -> bool:
    """Whether :func:`keep_freed_memory` is in force in this process."""
    return _state["applied"]


def apply_default() -> bool:
    """What ``import wmkit`` does: keep freed memory unless ``WMKIT_KEEP_FREED_MEMORY=0``."""
    value = os.environ.get(ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1, got {value!r}")
    return keep_freed_memory() if value == "1" else False


def _worker(conn, size: str, batch: int, length: int, threads: int) -> None:
    """One benchmark process: build a DreamerV3 agent, then run the job named by each message, reply with
    (ms, minor page faults) of that call; ``None`` ends it (reply: peak RSS in MiB)."""
    import resource
    import time

    import numpy as np
    import torch

    from wmkit.dreamer.agent import Agent
    from wmkit.dreamer.bench import image_path, synthetic_batch
    from wmkit.dreamer.config import DreamerConfig

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    agent = Agent({"image": ((64, 64, 3), np.uint8)}, {"n": 17, "discrete": True},
                  DreamerConfig(size=size), device=cpu, seed=0)
    data = synthetic_batch(batch, length, 17, cpu)
    jobs = {"update": lambda: agent.update(data), "image_path": lambda: image_path(agent.wm, data["image"])}
    conn.send(applied())
    while (name := conn.recv()) is not None:
        faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        jobs[name]()
        conn.send(((time.perf_counter() - t0) * 1e3, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench(argv: list[str]) -> None:
    """``wmkit bench malloc``: glibc's default allocator settings vs :func:`keep_freed_memory`, on a DreamerV3
    update and its image path (B x T frames through encoder and decoder), in two worker processes that take
    turns (one call of each per round), so load on a shared machine hits both alike."""
    import argparse
    import multiprocessing as mp
    import statistics

    from wmkit.bench import emit

    ap = argparse.ArgumentParser(prog="wmkit bench malloc", description=bench.__doc__)
    ap.add_argument("--sizes", nargs="+", default=["tiny"], help="DreamerV3 size presets")
    ap.add_argument("--batch", type=int, default=16, help="B, sequences per update")
    ap.add_argument("--length", type=int, default=64, help="T, steps per sequence")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    args = ap.parse_args(argv)
    if _glibc() is None:
        raise SystemExit("wmkit bench malloc: this allocator is not glibc's (Linux only); nothing to compare")
    ctx = mp.get_context("spawn")                 # a fresh interpreter, so glibc starts from its defaults
    for size in args.sizes:
        workers, before = {}, os.environ.get(ENV)
        try:
            for mode, value in (("glibc_default", "0"), ("keep_freed", "1")):
                os.environ[ENV] = value           # read by the worker's ``import wmkit``
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, size, args.batch, args.length, args.threads))
                proc.start()
                workers[mode] = (proc, parent)
        finally:                                  # give the parent its own setting back
            if before is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = before
        for mode, (_, conn) in workers.items():
            if conn.recv() != (mode == "keep_freed"):
                raise RuntimeError(f"worker {mode}: the allocator setting is not what was asked for")
        rows = {(job, mode): [] for job in ("update", "image_path") for mode in workers}
        for r in range(args.warmup + args.repeat):
            for job, mode in rows:
                workers[mode][1].send(job)
                ms, faults = workers[mode][1].recv()
                if r >= args.warmup:
                    rows[job, mode].append((ms, faults))
        rss = {}
        for mode, (proc, conn) in workers.items():
            conn.send(None)
            rss[mode] = conn.recv()
            proc.join()
        dims = dict(size=size, B=args.batch, T=args.length, threads=args.threads)
        for (job, mode), samples in rows.items():
            emit("malloc", f"{job}_ms", min(s[0] for s in samples), "ms", allocator=mode, **dims)
            emit("malloc", f"{job}_page_faults", statistics.median(s[1] for s in samples), "faults per call",
                 allocator=mode, **dims)
        for job in ("update", "image_path"):
            ratio = min(s[0] for s in rows[job, "glibc_default"]) / min(s[0] for s in rows[job, "keep_freed"])
            emit("malloc", f"{job}_speedup", ratio, "x (glibc default ms / keep_freed ms)", **dims)
        for mode, mib in rss.items():
            emit("malloc", "peak_rss", mib, "MiB", allocator=mode, **dims)
        print(f"{size}: " + "  ".join(f"{job} {mode} {min(s[0] for s in v):.0f} ms"
                                      for (job, mode), v in rows.items()), file=sys.stderr)
