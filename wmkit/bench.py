"""Benchmark plumbing: ``wmkit bench NAME`` / ``python -m wmkit.bench NAME``.

Each benchmark prints one JSON object per figure on its own line of stdout::

    {"bench": "worldmodels", "metric": "vae_train", "value": 812.4, "unit": "images/s", "device": "cpu", ...}

and may print a human-readable table on stderr. Figures that compare two variants are measured in the
same run and also reported as a ratio. Benchmarks are registered below by module path so that importing
this file stays cheap; a benchmark module exposes ``run(argv: list[str]) -> None``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

#: name -> (module:function, one-line description)
REGISTRY: dict[str, tuple[str, str]] = {
    "scrubber": ("wmkit.widgets:bench", "rollout scrubber: PNG encoding rate and embedded HTML size"),
    "carracing": ("wmkit.carracing:bench", "CarRacing-v3 ms per step: gymnasium's renderer vs wmkit's (same pixels)"),
    "worldmodels": ("wmkit.worldmodels.bench:run", "stage 1: VAE images/s, MDN-RNN sequences/s, dream steps/s"),
    "dreamer": ("wmkit.dreamer.bench:run", "stage 2: ms per DreamerV3 update, env steps/s"),
    "data": ("wmkit.data.bench:run", "stages 3-4 data: clips/s decoded and streamed from shards"),
    "genie": ("wmkit.genie.bench:run", "stage 3a: training tokens/s, generated frames/s, ST vs full attention"),
    "diffusion": ("wmkit.diffusion.bench:run", "stage 3b: training frames/s, generated frames/s per recipe"),
    "fp8": ("wmkit.precision_bench:run", "stage 3c: fp32/bf16/fp8 step time and memory, as ratios to bf16"),
    "jepa": ("wmkit.jepa.bench:run", "stage 4: training clips/s and FLOPs per sample of each compared model"),
    "malloc": ("wmkit.dreamer.bench:malloc_run",
               "CPU: a DreamerV3 update with glibc's default allocator vs freed memory kept"),
}


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), so that figures from different hosts are not mixed up."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(bench: str, metric: str, value: float, unit: str, **extra: Any) -> dict:
    """Print one figure as a JSON line on stdout and return it."""
    row = {"bench": bench, "metric": metric, "value": float(value), "unit": unit, **extra}
    row.setdefault("device", extra.get("device", "cpu"))
    row.setdefault("torch", torch.__version__)
    row.setdefault("threads", torch.get_num_threads())
    row.setdefault("machine", platform.machine())
    row.setdefault("cpu", cpu_model())
    print(json.dumps(row), flush=True)
    return row


def timeit(fn: Callable[[], Any], *, warmup: int = 2, repeat: int = 5, number: int = 1,
           sync: torch.device | str | None = None) -> dict[str, float]:
    """Median/min seconds per call of ``fn`` (``number`` calls per timed sample).

    ``sync`` names a CUDA device to synchronise before reading the clock, so GPU work is counted.
    """
    dev = torch.device(sync) if sync is not None else None

    def _sync() -> None:
        if dev is not None and dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(warmup):
        fn()
    _sync()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        _sync()
        samples.append((time.perf_counter() - t0) / number)
    return {"median": statistics.median(samples), "min": min(samples), "samples": len(samples)}


def interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int, repeat: int,
                sync: torch.device | str | None = None) -> dict[str, list[float]]:
    """Milliseconds per call of several variants, timed round-robin (one call of each per round) so that
    load on a shared machine hits all of them alike. The first ``warmup`` rounds are not recorded."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeat):
        for k, fn in fns.items():
            t = timeit(fn, warmup=0, repeat=1, sync=sync)["min"]
            if r >= warmup:
                samples[k].append(t * 1000)
    return samples


def run(name: str, argv: list[str] | None = None) -> None:
    if name not in REGISTRY:
        raise SystemExit(f"unknown benchmark {name!r}; available: {', '.join(sorted(REGISTRY))}")
    target, _ = REGISTRY[name]
    mod_name, fn_name = target.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise SystemExit(f"benchmark {name!r} is not available yet ({e})") from e
    getattr(module, fn_name)(list(argv or []))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="wmkit bench",
        description="Run one benchmark; prints one JSON object per figure on stdout.",
        epilog="benchmarks:\n" + "\n".join(f"  {k:<12} {v[1]}" for k, v in REGISTRY.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="benchmark name (see the list below)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    args = parser.parse_args(argv)
    run(args.name, args.rest)


if __name__ == "__main__":  # python -m wmkit.bench NAME
    main(sys.argv[1:])
