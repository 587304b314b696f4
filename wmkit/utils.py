"""Small shared utilities: device selection, seeding, CPU threads."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """Choose a torch device.

    ``prefer`` may be ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None``/``"auto"`` (CUDA, then Apple MPS,
    then CPU). The environment variable ``WMKIT_DEVICE`` overrides ``"auto"``. Asking for a device that
    is not available raises a clear error instead of silently falling back.
    """
    choice = (prefer or os.environ.get("WMKIT_DEVICE") or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} requested but CUDA is not available on this machine")
        return torch.device(choice)
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError("device 'mps' requested but Apple MPS is not available on this machine")
        return torch.device("mps")
    if choice == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {prefer!r}; expected 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA). Returns a torch.Generator seeded the same way.

    On CPU the same seed gives bit-identical numbers (tests rely on this). On CUDA, cuDNN's
    non-deterministic kernels can still differ in the last bits unless you also call
    ``torch.use_deterministic_algorithms(True)``.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict:
    """Snapshot of every RNG this package uses (for exact resume)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (the figure papers report)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def process_pool(workers: int):
    """A ``concurrent.futures.ProcessPoolExecutor`` of ``workers`` processes, each with one torch thread (two
    processes on two cores). Fork where the OS has it (no re-import of the caller's script), spawn elsewhere
    (macOS/Windows: call from under ``if __name__ == "__main__":``). Arguments are pickled to the workers."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=torch.set_num_threads, initargs=(1,))


def mean_and_se(x) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n)); the error is NaN for fewer than 2 values."""
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation (ties get their average rank): do two scores order things alike?
    NaN when either is constant (no order to compare)."""
    def ranks(v):
        v = np.asarray(v, np.float64)
        r = np.empty(len(v))
        r[np.argsort(v, kind="stable")] = np.arange(len(v), dtype=np.float64)
        for u in np.unique(v):                     # average rank over ties
            r[v == u] = r[v == u].mean()
        return r
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def runs_dir(*parts: str) -> os.PathLike:
    """Folder for runs and generated data: ``$WMKIT_RUNS_DIR/<parts>`` or ``./runs/<parts>`` (created)."""
    path = Path(os.environ.get("WMKIT_RUNS_DIR", "runs")).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
