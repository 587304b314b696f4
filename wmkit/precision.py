"""One precision switch for every wmkit training loop: ``"fp32"``, ``"bf16"`` or ``"fp8"``.

FP8 training follows Micikevicius et al. 2022, "FP8 Formats for Deep Learning" (arXiv:2209.05433):

* two 8-bit formats (section 3, table 1): **E4M3** (4 exponent bits, bias 7, 3 mantissa bits; no infinities,
  one NaN pattern per sign, so its largest value is 1.75 * 2^8 = **448**) for weights and activations in the
  forward pass, and **E5M2** (5 exponent bits, bias 15, 2 mantissa bits; IEEE-like, largest finite
  1.75 * 2^15 = **57344**) for gradients in the backward pass -- NVIDIA's "HYBRID" format;
* per-tensor scaling (section 4.3): a tensor is multiplied by a scale ``s`` before the cast and the result
  divided by ``s`` after, so that its largest magnitude ``amax`` lands near the top of the format:
  ``s = fp8_max / amax / 2^margin``. **Current** scaling measures ``amax`` of the tensor being cast;
  **delayed** scaling (Transformer Engine's ``DelayedScaling``) uses the maximum over a history of the
  ``amax`` of previous steps, so the cast needs no extra pass over the data;
* matrix multiplies take FP8 operands and accumulate in higher precision (here fp32); everything else (norms,
  softmax, the optimizer and its master weights) stays in bf16/fp32.

Three backends do the FP8 work (``prepare_model(model, "fp8", backend=...)``):

* ``"te"`` -- NVIDIA Transformer Engine: ``te.Linear`` layers inside ``te.autocast(recipe=...)`` (the
  pre-2.x name ``te.fp8_autocast(fp8_recipe=...)`` is used where ``autocast`` does not exist). The recipe is
  TE's own default for the GPU (:func:`fp8_recipe_for`).
* ``"torchao"`` -- ``torchao.float8.convert_to_float8_training`` with tensorwise dynamic scaling (torchao's
  default recipe; rowwise FP8 matmuls fail on sm_120, the RTX 5090).
* ``"emulation"`` -- :class:`Fp8Linear` below, on any device: every operand of every linear layer is rounded
  exactly as torch's ``float8_e4m3fn`` / ``float8_e5m2`` dtypes round it (:func:`fp8_quantize`), then
  multiplied in fp32. It shows what FP8 does to the *numbers* (and the loss curve); it gives **no speed-up
  and no memory saving** -- it is slower than fp32, since every operand is rounded twice on top of the
  fp32 matmul.

``backend="auto"`` picks TE, else torchao, on a GPU with FP8 tensor cores (compute capability >= 8.9), and
emulation elsewhere. Importing wmkit never imports TE or torchao; :func:`fp8_status` says what is usable
and why not. Usage in a training loop (the two calls every wmkit trainer makes)::

    model = prepare_model(model, cfg.precision)          # fp8: swaps nn.Linear layers
    with autocast(cfg.precision, device):                # bf16/fp8: torch.autocast(bf16) (+ TE's fp8 autocast)
        loss = model(x).loss
    loss.backward()
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["PRECISIONS", "BACKENDS", "FP8_FORMATS", "Fp8Format", "fp8_quantize", "fp8_round_reference",
           "fp8_values", "current_scale", "DelayedScaler", "CurrentScaler", "Fp8Linear", "fp8_recipe_for",
           "choose_backend", "backend_available", "fp8_status", "prepare_model", "autocast", "precision_of"]

PRECISIONS = ("fp32", "bf16", "fp8")
BACKENDS = ("te", "torchao", "emulation")

# ----------------------------------------------------------------------------------------------------
# The two formats (Micikevicius et al. 2022, table 1).


@dataclass(frozen=True)
class Fp8Format:
    """One 8-bit floating-point format: sign, ``exp_bits`` exponent bits (bias ``bias``), ``man_bits`` mantissa."""

    name: str
    dtype: torch.dtype
    exp_bits: int
    man_bits: int
    bias: int
    max: float
    """largest finite magnitude"""

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.man_bits)


FP8_FORMATS = {
    # E4M3: exponent field 1111 is an ordinary binade except S.1111.111 (NaN), so max = 1.75 * 2^(15-7) = 448.
    "e4m3": Fp8Format("e4m3", torch.float8_e4m3fn, exp_bits=4, man_bits=3, bias=7, max=448.0),
    # E5M2: IEEE-754 style (exponent 11111 = inf/NaN), so max = 1.75 * 2^(30-15) = 57344.
    "e5m2": Fp8Format("e5m2", torch.float8_e5m2, exp_bits=5, man_bits=2, bias=15, max=57344.0),
}


def _fmt(fmt: str | Fp8Format) -> Fp8Format:
    if isinstance(fmt, Fp8Format):
        return fmt
    if fmt not in FP8_FORMATS:
        raise ValueError(f"fmt: expected one of {sorted(FP8_FORMATS)}, got {fmt!r}")
    return FP8_FORMATS[fmt]


def fp8_values(fmt: str = "e4m3") -> torch.Tensor:
    """Every finite value the format can represent, sorted (fp32): all 256 bit patterns, NaN/inf removed."""
    f = _fmt(fmt)
    v = torch.arange(256, dtype=torch.uint8).view(f.dtype).float()  # (256,)
    return torch.unique(v[torch.isfinite(v)])  # sorted; +0 and -0 merge


def _check_scale(scale: torch.Tensor | float) -> torch.Tensor:
    s = torch.as_tensor(scale, dtype=torch.float32)
    if s.numel() != 1:
        raise ValueError(f"scale: expected one per-tensor number, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"scale: expected a finite positive number, got {float(s)}")
    return s


def fp8_quantize(x: torch.Tensor, fmt: str = "e4m3", scale: torch.Tensor | float = 1.0,
                 saturate: bool = True) -> torch.Tensor:
    """Round ``x`` to FP8 with a per-tensor ``scale``: ``cast(x * scale) / scale``, returned in fp32.

    The cast is torch's own ``float8_e4m3fn`` / ``float8_e5m2`` conversion (round to nearest, ties to even,
    with subnormals). ``saturate=True`` (what Transformer Engine and torchao do) first clamps ``x * scale``
    to +-``max`` (448 or 57344), so an overflow becomes the largest finite value; ``saturate=False`` leaves
    the raw cast, where E5M2 overflows to inf. NaN stays NaN. This is exact numerics, not speed: the result
    is an ordinary fp32 tensor.
    """
    f = _fmt(fmt)
    if not torch.is_floating_point(x):
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
    s = _check_scale(scale).to(x.device)
    y = x.float() * s  # same shape as x
    if saturate:
        y = y.clamp(-f.max, f.max)  # clamp keeps NaN
    return y.to(f.dtype).float() / s


def fp8_round_reference(x: torch.Tensor, fmt: str = "e4m3", saturate: bool = True) -> torch.Tensor:
    """The plain math of the FP8 cast (for teaching and tests; :func:`fp8_quantize` uses torch's dtypes).

    For ``|x|`` in binade ``[2^e, 2^(e+1))`` (with ``e`` held at the smallest normal exponent ``1 - bias`` for
    subnormals) the grid spacing is ``2^(e - man_bits)``; round ``x`` to the nearest grid point, ties to
    even (``torch.round``). Overflow saturates to +-``max`` or, unsaturated, becomes inf (E5M2) / NaN (E4M3
    has no inf).
    """
    f = _fmt(fmt)
    xf = x.float()
    a = xf.abs()
    e = torch.floor(torch.log2(a.clamp_min(f.min_subnormal)))  # binade exponent
    e = e.clamp_min(1 - f.bias)  # subnormals share the smallest normal binade's spacing
    step = torch.exp2(e - f.man_bits)
    q = torch.round(a / step) * step  # ties to even on the grid
    q = torch.where(torch.isinf(a), a, q)  # inf / inf would be NaN; inf is an overflow like any other
    overflow = q > f.max
    if saturate:
        q = torch.where(overflow, torch.full_like(q, f.max), q)
    else:
        q = torch.where(overflow, torch.full_like(q, math.inf if f.name == "e5m2" else math.nan), q)
    q = torch.where(torch.isnan(xf), xf, q)
    return torch.copysign(q, xf)


# ----------------------------------------------------------------------------------------------------
# Per-tensor scaling (section 4.3): current and delayed.


def current_scale(x: torch.Tensor, fmt: str = "e4m3", margin: int = 0) -> torch.Tensor:
    """``fp8_max / amax(x) / 2^margin`` (fp32 0-d tensor); 1 when ``amax`` is 0 or not finite.

    Transformer Engine's ``Float8CurrentScaling`` and torchao's tensorwise dynamic scaling both compute it
    this way (torchao clamps amax at 1e-12; an infinite scale becomes fp32's max, as in TE).
    """
    f = _fmt(fmt)
    amax = x.detach().abs().max().float()
    return _scale_from_amax(amax, f.max, margin, torch.ones((), device=x.device))


def _scale_from_amax(amax: torch.Tensor, fp8_max: float, margin: int, previous: torch.Tensor) -> torch.Tensor:
    """TE's scaling-factor rule: ``fp8_max / amax / 2^margin``; keep ``previous`` if amax is 0, inf or NaN."""
    sf = (fp8_max / amax) / (2.0 ** margin)
    sf = torch.where((amax > 0) & torch.isfinite(amax), sf, previous)
    return torch.where(torch.isinf(sf), torch.full_like(sf, torch.finfo(torch.float32).max), sf)


class CurrentScaler(nn.Module):
    """Scale each tensor by its own amax, measured now (``Float8CurrentScaling``; torchao tensorwise)."""

    def __init__(self, fmt: str, margin: int = 0):
        super().__init__()
        self.fmt, self.margin = _fmt(fmt), margin
        self.register_buffer("last_scale", torch.ones(()), persistent=False)
        self.register_buffer("last_amax", torch.zeros(()), persistent=False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # returns the scale to use for x
        self.last_amax = x.detach().abs().max().float()
        self.last_scale = _scale_from_amax(self.last_amax, self.fmt.max, self.margin,
                                           torch.ones((), device=x.device))
        return self.last_scale


class DelayedScaler(nn.Module):
    """Delayed scaling (TE's ``DelayedScaling``): cast with a scale computed from *previous* amaxes.

    Per call: cast with the current ``scale``; write this tensor's amax into ``amax_history[0]``; reduce the
    history (``"max"`` over the window, or ``"most_recent"``); roll the history by one and zero slot 0; set
    ``scale = fp8_max / amax / 2^margin`` for the next call. The window therefore holds the last
    ``history_len`` amaxes. TE's defaults: ``history_len=1024``, ``amax_compute_algo="max"``, ``margin=0``,
    initial scale 1.
    """

    def __init__(self, fmt: str, history_len: int = 1024, amax_compute_algo: str = "max", margin: int = 0):
        super().__init__()
        if history_len < 1:
            raise ValueError(f"history_len: expected >= 1, got {history_len}")
        if amax_compute_algo not in ("max", "most_recent"):
            raise ValueError(f"amax_compute_algo: expected 'max' or 'most_recent', got {amax_compute_algo!r}")
        self.fmt, self.margin, self.algo = _fmt(fmt), margin, amax_compute_algo
        # not persistent: a state_dict stays the same across precisions (see the book's differences table)
        self.register_buffer("amax_history", torch.zeros(history_len), persistent=False)
        self.register_buffer("scale", torch.ones(()), persistent=False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # returns the scale to use for x, then updates
        used = self.scale.clone()
        self.amax_history[0] = x.detach().abs().max().float()
        amax = self.amax_history.max() if self.algo == "max" else self.amax_history[0].clone()
        self.amax_history.copy_(torch.roll(self.amax_history, -1, 0))
        self.amax_history[0] = 0.0
        self.scale.copy_(_scale_from_amax(amax, self.fmt.max, self.margin, self.scale))
        return used


def _make_scaler(recipe: str, fmt: str, history_len: int) -> nn.Module:
    if recipe == "current":
        return CurrentScaler(fmt)
    if recipe == "delayed":
        return DelayedScaler(fmt, history_len=history_len)
    raise ValueError(f"recipe: expected 'current' or 'delayed', got {recipe!r}")


# ----------------------------------------------------------------------------------------------------
# The emulated FP8 linear layer: forward E4M3 x E4M3, backward E5M2 gradients (the HYBRID format).


class _Fp8LinearFn(torch.autograd.Function):
    """``y = q4(x) q4(W)^T + b``; backward ``dx = q5(g) q4(W)``, ``dW = q5(g)^T q4(x)`` (fp32 accumulation)."""

    @staticmethod
    def forward(ctx, x, weight, bias, x_scaler, w_scaler, g_scaler, out_dtype):
        with torch.autocast(x.device.type, enabled=False):
            xq = fp8_quantize(x, "e4m3", x_scaler(x))  # (..., K) fp32 on the E4M3 grid
            wq = fp8_quantize(weight, "e4m3", w_scaler(weight))  # (N, K)
            y = xq @ wq.t()  # (..., N)
            if bias is not None:
                y = y + bias.float()
        ctx.save_for_backward(xq, wq)  # TE keeps the FP8 input for the weight gradient; so do we
        ctx.g_scaler, ctx.has_bias = g_scaler, bias is not None
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return y.to(out_dtype)

    @staticmethod
    def backward(ctx, g):
        xq, wq = ctx.saved_tensors
        with torch.autocast(g.device.type, enabled=False):
            gq = fp8_quantize(g, "e5m2", ctx.g_scaler(g))  # (..., N) on the E5M2 grid
            dx = gq @ wq  # (..., K)
            g2, x2 = gq.reshape(-1, gq.shape[-1]), xq.reshape(-1, xq.shape[-1])  # (M, N), (M, K)
            dw = g2.t() @ x2  # (N, K)
            db = g.float().reshape(-1, g.shape[-1]).sum(0) if ctx.has_bias else None  # bias grad unquantised
        xd, wd, bd = ctx.dtypes
        return dx.to(xd), dw.to(wd), (db.to(bd) if db is not None else None), None, None, None, None


class Fp8Linear(nn.Linear):
    """``nn.Linear`` whose matmuls run on exactly-rounded FP8 operands (CPU/GPU emulation, no speed-up).

    Shares the ``weight``/``bias`` Parameters of the layer it replaces, so an optimizer built before or after
    :func:`prepare_model` trains the same tensors and the state_dict keys do not change.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, recipe: str = "current",
                 history_len: int = 1024, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._add_scalers(recipe, history_len)

    def _add_scalers(self, recipe: str, history_len: int) -> None:
        self.recipe = recipe
        self.input_scaler = _make_scaler(recipe, "e4m3", history_len).to(self.weight.device)  # activations
        self.weight_scaler = _make_scaler(recipe, "e4m3", history_len).to(self.weight.device)  # weights
        self.grad_scaler = _make_scaler(recipe, "e5m2", history_len).to(self.weight.device)  # output gradients

    @classmethod
    def from_linear(cls, lin: nn.Linear, recipe: str = "current", history_len: int = 1024) -> Fp8Linear:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = lin.in_features, lin.out_features
        new.register_parameter("weight", lin.weight)  # the same Parameter objects
        new.register_parameter("bias", lin.bias)
        new._add_scalers(recipe, history_len)
        new.train(lin.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        dev = x.device.type
        out_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        return _Fp8LinearFn.apply(x, self.weight, self.bias, self.input_scaler, self.weight_scaler,
                                  self.grad_scaler, out_dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fp8 emulation (recipe={self.recipe})"


# ----------------------------------------------------------------------------------------------------
# Recipes and backends.


def fp8_recipe_for(capability: tuple[int, int] | None) -> str | None:
    """Transformer Engine's default FP8 recipe for a CUDA compute capability, or None (no FP8 tensor cores).

    Mirrors TE's ``get_default_fp8_recipe`` (transformer_engine/pytorch/quantization.py): MXFP8 where
    ``check_mxfp8_support`` passes (10.0 <= cc < 12.0: B200/GB200); ``Float8CurrentScaling`` on 12.x
    (RTX 5090; MXFP8 "is not supported on 12.0+ architectures yet", and ``DelayedScaling`` is rejected under
    torch.compile anyway); ``DelayedScaling`` on Hopper (9.0) and Ada (8.9); nothing below 8.9.
    """
    if capability is None:
        return None
    if (not isinstance(capability, tuple | list) or len(capability) != 2
            or not all(isinstance(c, int) and c >= 0 for c in capability)):
        raise ValueError(f"capability: expected (major, minor) ints such as (9, 0), got {capability!r}")
    cc = tuple(capability)
    if cc >= (12, 0):
        return "Float8CurrentScaling"
    if cc >= (10, 0):
        return "MXFP8BlockScaling"
    if cc >= (8, 9):
        return "DelayedScaling"
    return None


# Import hook: tests replace this to simulate a missing or broken install (TE raises OSError/RuntimeError at
# import on machines without CUDA libraries, not only ImportError).
_import_module = importlib.import_module
_BACKEND_MODULES = {"te": "transformer_engine.pytorch", "torchao": "torchao.float8"}


def backend_available(name: str) -> tuple[bool, str]:
    """(usable, reason) for a backend's Python package; never raises."""
    if name == "emulation":
        return True, ""
    if name not in _BACKEND_MODULES:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    try:
        _import_module(_BACKEND_MODULES[name])
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable", with the reason kept
        pkg = "transformer_engine[pytorch]" if name == "te" else "torchao (pip install -e '.[fp8]')"
        return False, f"{_BACKEND_MODULES[name]} cannot be imported ({type(e).__name__}: {e}); install {pkg}"
    return True, ""


def choose_backend(backend: str, *, device_type: str, capability: tuple[int, int] | None,
                   te_ok: tuple[bool, str], torchao_ok: tuple[bool, str]) -> tuple[str, str]:
    """Pure backend choice: returns (backend, why). Raises ValueError if an explicit choice cannot run."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend: expected 'auto' or one of {BACKENDS}, got {backend!r}")
    has_cores = device_type == "cuda" and fp8_recipe_for(capability) is not None
    if device_type != "cuda":
        hw = f"{device_type.upper()}: emulation only (no FP8 tensor cores)"
    elif not has_cores:
        hw = f"no FP8 tensor cores on this GPU (compute capability {capability[0]}.{capability[1]} < 8.9)"
    else:
        hw = ""
    if backend == "emulation":
        return "emulation", "emulation requested" + (f"; {hw}" if hw else "")
    if backend in ("te", "torchao"):
        if hw:
            raise ValueError(f"backend={backend!r} needs a CUDA GPU with FP8 tensor cores: {hw}")
        ok, why = te_ok if backend == "te" else torchao_ok
        if not ok:
            raise ValueError(f"backend={backend!r} is not usable: {why}")
        return backend, f"{backend} requested"
    if hw:
        return "emulation", hw
    if te_ok[0]:
        return "te", f"Transformer Engine, recipe {fp8_recipe_for(capability)}"
    if torchao_ok[0]:
        return "torchao", "torchao float8 (tensorwise), Transformer Engine not usable: " + te_ok[1]
    return "emulation", f"GPU has FP8 tensor cores but neither TE nor torchao is usable ({te_ok[1]}; {torchao_ok[1]})"


def _device_info(device: torch.device | str | None) -> tuple[torch.device, tuple[int, int] | None]:
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    cap = torch.cuda.get_device_capability(dev) if dev.type == "cuda" else None
    return dev, cap


_RESOLVED: dict[tuple, tuple[str, str]] = {}


def _resolve(backend: str, device: torch.device | str | None) -> tuple[str, str]:
    """The backend :func:`prepare_model` and :func:`autocast` use; cached per (backend, device), because
    ``autocast`` runs every step and a failing TE import is slow to repeat."""
    dev, cap = _device_info(device)
    key = (backend, str(dev), cap, id(_import_module))  # a replaced import hook (tests) invalidates the cache
    if key not in _RESOLVED:
        needs_probe = dev.type == "cuda" and backend in ("auto", "te", "torchao")
        te_ok = backend_available("te") if needs_probe else (False, "not probed")
        ao_ok = backend_available("torchao") if needs_probe else (False, "not probed")
        _RESOLVED[key] = choose_backend(backend, device_type=dev.type, capability=cap, te_ok=te_ok,
                                        torchao_ok=ao_ok)
    return _RESOLVED[key]


_CPU_BF16_SLOW = ("this CPU has no native bf16 kernels (x86 without AVX-512 or AVX-NE-CONVERT): bf16 autocast is "
                  "emulated and several times slower than fp32 (8-11x measured on an AVX2-only AMD EPYC)")
_WARNED_CPU_BF16 = False


@functools.cache   # asked at every autocast entry on CPU (every training step): answer once per process
def cpu_bf16_native() -> bool:
    """Whether this CPU runs bf16 matrix products and convolutions with native oneDNN kernels (x86 with AVX-512
    F/BW/VL/DQ, or AVX2 with AVX-NE-CONVERT; Arm with bf16). Without them ``torch.autocast("cpu", bfloat16)``
    still runs, emulated, and a DreamerV3 update took 8-11x as long as in fp32 (README, Timings). Where torch
    cannot tell, assume native."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def fp8_status(device: torch.device | str | None = None) -> dict[str, Any]:
    """What FP8 can run here and why: device, capability, TE recipe, each backend's (usable, reason),
    the backend ``"auto"`` picks, and a plain sentence. Also whether bf16 runs natively."""
    dev, cap = _device_info(device)
    te_ok, ao_ok = backend_available("te"), backend_available("torchao")
    chosen, why = choose_backend("auto", device_type=dev.type, capability=cap, te_ok=te_ok, torchao_ok=ao_ok)
    if dev.type == "cuda":
        bf16 = (True, "") if torch.cuda.is_bf16_supported() else (
            False, "this GPU has no bf16 support (compute capability < 8.0)")
    else:  # a CPU always runs bf16 autocast, but without native kernels it is much slower than fp32
        bf16 = (True, "" if cpu_bf16_native() else _CPU_BF16_SLOW)
    return {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
            "capability": cap, "te_recipe": fp8_recipe_for(cap) if dev.type == "cuda" else None,
            "backends": {"te": te_ok, "torchao": ao_ok, "emulation": (True, "")},
            "auto_backend": chosen, "reason": why, "bf16": bf16,
            "speedup_possible": chosen in ("te", "torchao")}


# ----------------------------------------------------------------------------------------------------
# The two calls every training loop makes.


def _swap_linears(module: nn.Module, make, keep=lambda m: True) -> int:
    n = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and not isinstance(child, Fp8Linear) and keep(child):
            setattr(module, name, make(child))
            n += 1
        else:
            n += _swap_linears(child, make, keep)
    return n


def _dims_ok(lin: nn.Linear) -> bool:
    return lin.in_features % 16 == 0 and lin.out_features % 16 == 0  # FP8 GEMMs need multiples of 16


def prepare_model(model: nn.Module, precision: str, backend: str = "auto", *, recipe: str = "current",
                  history_len: int = 1024) -> nn.Module:
    """Make ``model`` train in ``precision``. fp32/bf16: returned as is (bf16 comes from :func:`autocast`).

    fp8: swaps ``nn.Linear`` layers for FP8 ones of the chosen backend, in place, and returns the model (a
    new module if ``model`` itself is an ``nn.Linear``: always use the returned model).
    ``recipe``/``history_len`` configure the emulation's scaling: "current" (default; what TE picks on an
    RTX 5090 and what torchao's tensorwise recipe does) or "delayed" (TE's default on Hopper/Ada, history
    1024); TE uses :func:`fp8_recipe_for` and torchao its tensorwise recipe. TE and torchao only take
    layers whose dimensions are multiples of 16; the rest stay in bf16 and are listed in
    ``model.wmkit_precision["skipped"]``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if precision != "fp8":
        model.wmkit_precision = {"precision": precision, "backend": None}
        return model
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    chosen, why = _resolve(backend, device)
    skipped = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _dims_ok(m)]
    root = nn.Sequential(model)  # so that a bare nn.Linear passed as the model is swapped too
    if chosen == "emulation":
        n = _swap_linears(root, lambda lin: Fp8Linear.from_linear(lin, recipe=recipe, history_len=history_len))
        skipped = []
    elif chosen == "te":
        te = _import_module("transformer_engine.pytorch")

        def make_te(lin: nn.Linear) -> nn.Module:
            new = te.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None,
                            params_dtype=lin.weight.dtype, device=lin.weight.device)
            with torch.no_grad():
                new.weight.copy_(lin.weight)
                if lin.bias is not None:
                    new.bias.copy_(lin.bias)
            return new

        n = _swap_linears(root, make_te, keep=_dims_ok)
    else:  # torchao
        ao = _import_module("torchao.float8")
        cfg_cls = ao.Float8LinearConfig
        config = cfg_cls.from_recipe_name("tensorwise") if hasattr(cfg_cls, "from_recipe_name") else cfg_cls()
        before = sum(isinstance(m, nn.Linear) for m in model.modules())
        ao.convert_to_float8_training(root, config=config,
                                      module_filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and _dims_ok(m))
        n = before - len(skipped)
    model = root[0]
    model.wmkit_precision = {"precision": "fp8", "backend": chosen, "reason": why, "swapped": n,
                             "skipped": skipped, "recipe": recipe if chosen == "emulation" else None}
    return model


def precision_of(model: nn.Module) -> dict[str, Any]:
    """What :func:`prepare_model` did to ``model`` (precision, backend, layers swapped/skipped)."""
    return getattr(model, "wmkit_precision", {"precision": "fp32", "backend": None})


def _te_recipe(te_recipe_module, capability) -> Any:
    name = fp8_recipe_for(capability)
    return getattr(te_recipe_module, name)()


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str, backend: str = "auto"):
    """fp32: nothing. bf16: ``torch.autocast(bfloat16)``. fp8: the same bf16 autocast (for everything that
    is not an FP8 linear layer), plus ``te.autocast(recipe=...)`` when the backend is Transformer Engine.
    Pass the same ``backend`` as to :func:`prepare_model` if you overrode it there."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    if precision == "fp32":
        yield
        return
    global _WARNED_CPU_BF16
    if dev.type == "cpu" and not _WARNED_CPU_BF16 and not cpu_bf16_native():
        _WARNED_CPU_BF16 = True   # once per process: a training loop enters this context at every step
        warnings.warn(f"precision={precision!r} on CPU: {_CPU_BF16_SLOW}; precision='fp32' is faster here",
                      stacklevel=3)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        if precision == "bf16":
            yield
            return
        chosen, _ = _resolve(backend, dev)
        if chosen != "te":
            yield
            return
        te = _import_module("transformer_engine.pytorch")
        recipe = _te_recipe(_import_module("transformer_engine.common.recipe"), _device_info(dev)[1])
        if hasattr(te, "autocast"):
            ctx = te.autocast(enabled=True, recipe=recipe)
        else:  # Transformer Engine < 2.x
            ctx = te.fp8_autocast(enabled=True, fp8_recipe=recipe)
        with ctx:
            yield
