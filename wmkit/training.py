"""Shared training plumbing: run folders, TensorBoard + JSONL scalars, NaN/Inf detection.

Every trainer in wmkit writes the same layout::

    <run_dir>/config.json        the config dataclass
    <run_dir>/metrics.jsonl      one JSON object per logged step (easy to plot in a notebook)
    <run_dir>/tb/                TensorBoard event files (`tensorboard --logdir <run_dir>/tb`)
    <run_dir>/ckpt/latest.*      checkpoint (safetensors + JSON), see wmkit.checkpoint
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss or gradient norm becomes NaN or Inf; the message names which one."""


def check_finite(values: Mapping[str, Any], step: int | None = None) -> None:
    """Raise :class:`NonFiniteLossError` naming the first NaN/Inf entry of ``values``.

    Call it on the scalar losses of an update. Tensors are checked on their own device without a
    host sync per entry: one combined ``isfinite`` reduction, then a lookup only if it failed.
    """
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    ok = True
    if tensors:
        flags = torch.stack([torch.isfinite(v.detach()).all() for v in tensors.values()])
        ok = bool(flags.all())
    floats_bad = [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]
    if ok and not floats_bad:
        return
    bad = floats_bad + [k for k, v in tensors.items() if not bool(torch.isfinite(v.detach()).all())]
    where = f" at step {step}" if step is not None else ""
    details = ", ".join(f"{k}={float(values[k].detach().float().mean()) if k in tensors else values[k]}"
                        for k in bad)
    raise NonFiniteLossError(
        f"non-finite value in {bad[0]!r}{where} ({details}). Training stopped; lower the learning "
        f"rate, check the inputs of {bad[0]!r}, or resume from the last checkpoint.")


class Logger:
    """Writes scalars to TensorBoard and to ``metrics.jsonl``; keeps the history in memory too."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a" if resume else "w")  # noqa: SIM115
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        self.history: list[dict[str, Any]] = []

    def log(self, step: int, **scalars: Any) -> dict[str, float]:
        row = {"step": int(step)}
        for k, v in scalars.items():
            row[k] = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            if self._tb is not None:
                self._tb.add_scalar(k, row[k], step)
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        self.history.append(row)
        return row

    def save_config(self, cfg_dict: dict) -> None:
        (self.run_dir / "config.json").write_text(json.dumps(cfg_dict, indent=2))

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of ``metrics.jsonl`` (for plotting a finished run in a notebook)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; has the run logged anything yet?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
