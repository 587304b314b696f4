"""``wmkit bench fp8``: step time and memory of fp32 / bf16 / fp8, measured in one run, as ratios to bf16.

Two measurements, each timed round-robin (:func:`wmkit.bench.interleaved`) so that load on a shared machine
hits every precision alike:

* **matrix sweep** -- one training step (forward + backward with a dense output gradient) of a bias-free
  ``nn.Linear(size, size)`` on ``tokens x size`` inputs, for sizes 512 ... 8192. That is torchao's
  ``M, K, N = tokens, size, size``. Rows: ``linear_step_ms`` per precision, ``time_ratio_vs_bf16`` (below 1 =
  faster than bf16) and ``crossover_size`` (the smallest size from which fp8 stays faster than bf16; -1 if
  never). On a CPU the fp8 rows measure the *emulation overhead* (:mod:`wmkit.precision` rounds every
  operand and multiplies in fp32); only a GPU with FP8 tensor cores (TE or torchao backend) can be faster.
* **transformer step** -- one AdamW step of :class:`BenchTransformer` at the profile's size
  (``P.fp8.bench_model``): ``train_step_ms``, ``peak_memory_mb`` (CUDA's allocator peak; on a CPU torch keeps no
  peak, so the row is absent) and ``saved_activation_mb`` (bytes autograd keeps for the backward pass,
  counted with ``torch.autograd.graph.saved_tensors_hooks``: a real measurement on any device).

The same module holds the small real transformer the precision toggle trains (:func:`train_run`): token
embeddings + sine-cosine positions, ``wmkit.nn.TransformerBlock`` x depth (causal), a linear read-out, trained
on ``y_t = (x_t + x_{t-1}) mod V`` -- a task it can only solve by attending to the previous token.

Every JSON line names the device, the backend and why it was chosen; ``--out FILE`` also writes them to FILE
(the notebook reads the committed files in ``book/stage3/fp8_results/``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wmkit.bench import emit, interleaved
from wmkit.config import parse_config
from wmkit.nn import TransformerBlock, sincos_1d
from wmkit.precision import PRECISIONS, autocast, fp8_status, precision_of, prepare_model
from wmkit.profiles import profile
from wmkit.utils import pick_device


class BenchTransformer(nn.Module):
    """A small causal transformer language model: (B, L) int tokens -> (B, L, V) logits."""

    def __init__(self, vocab: int = 16, dim: int = 128, depth: int = 2, heads: int = 4, seq_len: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.register_buffer("pos", sincos_1d(seq_len, dim), persistent=False)  # (L, D)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]  # (B, L, D)
        for blk in self.blocks:
            h = blk(h, causal=True)  # (B, L, D)
        return self.head(self.norm(h))  # (B, L, V)


def sum_task_batch(batch: int, seq_len: int, vocab: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Inputs x (B, L) and targets y_t = (x_t + x_{t-1}) mod V (y_0 = x_0)."""
    x = torch.randint(0, vocab, (batch, seq_len), generator=generator)  # (B, L)
    y = (x + torch.roll(x, 1, dims=1)) % vocab
    y[:, 0] = x[:, 0]
    return x, y


class _SavedBytes:
    """Count the bytes autograd saves for backward (each storage once)."""

    def __init__(self):
        self.bytes, self._seen = 0, set()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += t.untyped_storage().nbytes()
        return t


def train_run(precision: str, *, steps: int, dim: int = 128, depth: int = 2, heads: int = 4, seq_len: int = 32,
              batch: int = 16, vocab: int = 16, lr: float = 3e-3, seed: int = 0, device: str | None = None,
              backend: str = "auto", progress: bool = False, compile: bool = False) -> dict:
    """Train :class:`BenchTransformer` for ``steps`` AdamW steps in ``precision``; returns the loss curve and
    the measured step time (median, ms), CUDA peak memory (MB, None on CPU) and saved-activation MB.

    ``compile=True`` wraps the model in ``torch.compile`` after the precision swap (torchao's float8 training
    is meant to run compiled: eager, its casts are separate kernels). The first steps then include the
    compilation and are left out of the median; the saved-activation count is not taken (autograd's
    saved-tensor hooks do not see inside a compiled graph), so it is None."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    dev = pick_device(device)
    torch.manual_seed(seed)
    model = BenchTransformer(vocab, dim, depth, heads, seq_len).to(dev)
    model = prepare_model(model, precision, backend=backend)
    info = precision_of(model)  # read before compiling: the compiled wrapper hides the swapped layers
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    if compile:
        model = torch.compile(model)
    gen = torch.Generator().manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    losses, times, saved = [], [], None
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"{precision} ({precision_of(model).get('backend') or 'torch'})", leave=False)
    for step in it:
        x, y = (t.to(dev) for t in sum_task_batch(batch, seq_len, vocab, gen))
        t0 = time.perf_counter()
        counter = _SavedBytes() if step == 0 and not compile else None
        hooks = (torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t) if counter
                 else _null())
        with hooks, autocast(precision, dev, backend=backend):
            logits = model(x)  # (B, L, V)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - t0) * 1000)
        if counter is not None:
            saved = counter.bytes / 2**20
        losses.append(loss.item())
    timed = sorted(times[min(2, steps - 1):])  # the first steps include one-off setup (and compilation)
    return {"precision": precision, "backend": info.get("backend") or "torch", "reason": info.get("reason", ""),
            "losses": losses, "step_ms": timed[len(timed) // 2], "saved_activation_mb": saved,
            "peak_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
            "device": str(dev), "steps": steps, "compiled": compile,
            "model": dict(dim=dim, depth=depth, heads=heads, seq_len=seq_len, batch=batch, vocab=vocab)}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@dataclass
class Fp8BenchConfig:
    sizes: str = ""
    """Comma-separated layer widths K = N for the matrix sweep; empty = the profile's (P.fp8.bench_sizes)."""
    tokens: int = 0
    """Rows M of the input (tokens per step); 0 = the profile's (P.fp8.bench_tokens)."""
    precisions: str = "fp32,bf16,fp8"
    """Which precisions to time (bf16 is the reference of every ratio)."""
    backend: str = "auto"
    """FP8 backend: auto, te, torchao or emulation."""
    warmup: int = 1
    """Untimed rounds before timing."""
    repeat: int = 3
    """Timed rounds (the median is reported)."""
    model: bool = True
    """Also time a transformer training step at the profile's size (P.fp8.bench_model)."""
    model_steps: int = 6
    """Training steps timed for the transformer (median of those after the first two)."""
    compile: bool = False
    """Wrap each timed layer and the transformer in torch.compile (torchao recommends it for float8 training;
    compilation happens in the warm-up rounds, which are not timed). Rows carry ``compiled``."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """CPU threads (0 = leave torch's default)."""
    out: str = ""
    """Also write the JSON lines to this file (e.g. book/stage3/fp8_results/gpu-h100.jsonl)."""
    note: str = ""
    """Free text stored in every row, e.g. 'measured under load'."""


def _linear_step(size: int, tokens: int, precision: str, backend: str, dev: torch.device,
                 compile: bool = False):
    torch.manual_seed(0)
    lin = prepare_model(nn.Linear(size, size, bias=False).to(dev), precision, backend=backend)
    used = precision_of(lin).get("backend") or "torch"
    if compile:
        lin = torch.compile(lin)
    x = torch.randn(tokens, size, device=dev, requires_grad=True)  # (M, K)
    g = torch.randn(tokens, size, device=dev)  # (M, N): a dense output gradient

    def step():
        with autocast(precision, dev, backend=backend):
            y = lin(x)  # (M, N)
        y.backward(g.to(y.dtype))
        for p in lin.parameters():
            p.grad = None
        x.grad = None

    return step, used


def crossover(sizes: list[int], ratios: list[float]) -> int:
    """Smallest size from which every ratio (fp8 time / bf16 time) is below 1; -1 if none."""
    for i, s in enumerate(sizes):
        if all(r < 1.0 for r in ratios[i:]):
            return s
    return -1


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux) and the number of logical cores."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical cores"


def run(argv: list[str]) -> None:
    cfg = parse_config(Fp8BenchConfig, argv, prog="wmkit bench fp8")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    P = profile()
    dev = pick_device(None if cfg.device == "auto" else cfg.device)
    precisions = [p.strip() for p in cfg.precisions.split(",") if p.strip()]
    for p in precisions:
        if p not in PRECISIONS:
            raise SystemExit(f"--precisions: {p!r} is not one of {PRECISIONS}")
    if "bf16" not in precisions:
        raise SystemExit("--precisions must include bf16 (the reference of every ratio)")
    sizes = [int(s) for s in cfg.sizes.split(",")] if cfg.sizes else list(P.fp8.bench_sizes)
    tokens = cfg.tokens or P.fp8.bench_tokens
    status = fp8_status(dev)
    out = open(cfg.out, "a") if cfg.out else None  # noqa: SIM115 - closed below
    common = dict(bench="fp8", device=str(dev), device_name=status["device_name"],
                  capability=list(status["capability"]) if status["capability"] else None,
                  profile=P.name, note=cfg.note, cpu=cpu_name(), compiled=cfg.compile,
                  date=time.strftime("%Y-%m-%d"))

    def put(metric, value, unit, **extra):
        row = emit("fp8", metric, value, unit, **{k: v for k, v in common.items() if k != "bench"}, **extra)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    print(f"# {status['device_name']}: fp8 backend {status['auto_backend']} ({status['reason']})", file=sys.stderr)
    ratios = []
    for size in sizes:
        fns, backends = {}, {}
        for p in precisions:
            fns[p], backends[p] = _linear_step(size, tokens, p, cfg.backend, dev, compile=cfg.compile)
        # compiling happens in the first call, so a compiled run needs at least one untimed round
        ms = interleaved(fns, warmup=max(cfg.warmup, 1 if cfg.compile else 0), repeat=cfg.repeat, sync=dev)
        med = {p: sorted(v)[len(v) // 2] for p, v in ms.items()}
        shape = dict(M=tokens, K=size, N=size)
        for p in precisions:
            put("linear_step_ms", med[p], "ms", precision=p, backend=backends[p], **shape)
            put("time_ratio_vs_bf16", med[p] / med["bf16"], "x", precision=p, backend=backends[p], **shape)
        if "fp8" in med:
            ratios.append(med["fp8"] / med["bf16"])
        print(f"# {tokens}x{size}x{size}: " + "  ".join(f"{p} {med[p]:.2f} ms" for p in precisions), file=sys.stderr)
    if "fp8" in precisions:
        put("crossover_size", crossover(sizes, ratios), "K=N", backend=backends["fp8"], M=tokens,
            sizes=sizes, best_time_ratio=min(ratios))
    if cfg.model:
        m = dict(P.fp8.bench_model)
        for p in precisions:
            r = train_run(p, steps=cfg.model_steps, device=str(dev), backend=cfg.backend, compile=cfg.compile,
                          **m)
            put("train_step_ms", r["step_ms"], "ms", precision=p, backend=r["backend"], model=m)
            if r["saved_activation_mb"] is not None:  # not countable inside a compiled graph
                put("saved_activation_mb", r["saved_activation_mb"], "MB", precision=p, backend=r["backend"],
                    model=m)
            if r["peak_memory_mb"] is not None:
                put("peak_memory_mb", r["peak_memory_mb"], "MB", precision=p, backend=r["backend"], model=m)
    if out:
        out.close()


def read_results(folder: str | Path) -> list[dict]:
    """All JSON lines of every ``*.jsonl`` file in ``folder`` (each row gets ``file``); [] if none."""
    rows = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not a JSON line ({e})") from e
                row["file"] = path.name
                rows.append(row)
    return rows
