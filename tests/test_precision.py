"""wmkit.precision: exact FP8 rounding, scaling, the emulated FP8 linear layer, recipes and backend choice."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from torch import nn

import wmkit.precision as prec
from wmkit.precision import (
    FP8_FORMATS,
    CurrentScaler,
    DelayedScaler,
    Fp8Linear,
    autocast,
    choose_backend,
    current_scale,
    fp8_quantize,
    fp8_recipe_for,
    fp8_round_reference,
    fp8_values,
    precision_of,
    prepare_model,
)


def _edge_values(fmt: str) -> torch.Tensor:
    """Every representable value, every midpoint between neighbours (ties), and values just around them."""
    v = fp8_values(fmt)
    pos = v[v > 0]
    mids = (pos[1:] + pos[:-1]) / 2
    around = torch.cat([mids * (1 + 2**-20), mids * (1 - 2**-20), pos / 2, pos * 1.0001])
    big = torch.tensor([FP8_FORMATS[fmt].max * k for k in (1.01, 1.07, 1.2, 10.0, 1e6)] + [math.inf])
    x = torch.cat([v, mids, around, big, torch.tensor([0.0, 1e-30, 2.0**-30])])
    return torch.cat([x, -x])


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_quantize_equals_torch_float8_cast(fmt):
    f = FP8_FORMATS[fmt]
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20000, generator=g) * 10.0 ** torch.randint(-8, 5, (20000,), generator=g),
                   _edge_values(fmt)])
    for scale in (1.0, 0.37, 2.0**7, 1000.0):
        ours = fp8_quantize(x, fmt, scale)
        theirs = (x * scale).clamp(-f.max, f.max).to(f.dtype).float() / scale  # torch's own cast, saturated
        assert torch.equal(ours, theirs)
    # the plain-math reference rounding agrees bit for bit (ties to even, subnormals, saturation)
    assert torch.equal(fp8_round_reference(x, fmt), x.clamp(-f.max, f.max).to(f.dtype).float())


def test_known_values_and_saturation():
    e4, e5 = "e4m3", "e5m2"
    # hand-computed: E4M3 around 1 has spacing 1/8, so 1.0625 is a tie -> even mantissa (1.0); 1.1 -> 1.125
    assert fp8_quantize(torch.tensor([1.0625, 1.1, 1.1875]), e4).tolist() == [1.0, 1.125, 1.25]
    # E5M2 around 1 has spacing 1/4
    assert fp8_quantize(torch.tensor([1.125, 1.2, 1.375]), e5).tolist() == [1.0, 1.25, 1.5]
    # saturation at 448 / 57344; unsaturated E5M2 overflows to inf
    assert fp8_quantize(torch.tensor([1000.0, -1e9, math.inf]), e4).tolist() == [448.0, -448.0, 448.0]
    assert fp8_quantize(torch.tensor([1e6, -70000.0]), e5).tolist() == [57344.0, -57344.0]
    assert fp8_quantize(torch.tensor([1e6]), e5, saturate=False).item() == math.inf
    assert torch.equal(fp8_round_reference(torch.tensor([1e6]), e5, saturate=False), torch.tensor([math.inf]))
    assert math.isnan(fp8_quantize(torch.tensor([math.nan]), e4).item())
    # subnormals: E4M3's smallest is 2^-9; half of it is a tie that rounds to 0 (even)
    assert fp8_quantize(torch.tensor([2.0**-9, 2.0**-10, 1.5 * 2.0**-10]), e4).tolist() == [2.0**-9, 0.0, 2.0**-9]
    # a scale moves small numbers into range: 1e-4 is below E4M3's range without scaling, exact-ish with it
    assert fp8_quantize(torch.tensor([1e-4]), e4).item() == 0.0
    assert abs(fp8_quantize(torch.tensor([1e-4]), e4, scale=2.0**20).item() - 1e-4) < 1e-4 / 16


def test_format_grids():
    v4, v5 = fp8_values("e4m3"), fp8_values("e5m2")
    assert v4.numel() == 253 and v5.numel() == 247  # 256 patterns minus NaN/inf, +0 and -0 merged
    assert v4.max().item() == 448.0 and v5.max().item() == 57344.0
    assert v4[v4 > 0].min().item() == 2.0**-9 and v5[v5 > 0].min().item() == 2.0**-16
    assert FP8_FORMATS["e4m3"].min_normal == 2.0**-6 and FP8_FORMATS["e5m2"].min_normal == 2.0**-14


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="fmt"):
        fp8_quantize(torch.ones(2), "e3m4")
    with pytest.raises(ValueError, match="scale"):
        fp8_quantize(torch.ones(2), "e4m3", scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        fp8_quantize(torch.ones(2), "e4m3", scale=torch.ones(2))
    with pytest.raises(TypeError, match="x"):
        fp8_quantize(torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="precision"):
        prepare_model(nn.Linear(2, 2), "fp16")
    with pytest.raises(ValueError, match="precision"):
        with autocast("int8", "cpu"):
            pass
    with pytest.raises(ValueError, match="history_len"):
        DelayedScaler("e4m3", history_len=0)


def test_current_scaling_by_hand():
    x = torch.tensor([0.5, -2.0, 1.0])
    assert current_scale(x, "e4m3").item() == 224.0  # 448 / 2
    assert current_scale(x, "e5m2").item() == 28672.0  # 57344 / 2
    assert current_scale(x, "e4m3", margin=1).item() == 112.0
    assert current_scale(torch.zeros(3)).item() == 1.0  # amax 0: keep scale 1
    s = CurrentScaler("e4m3")
    assert s(x).item() == 224.0 and s.last_amax.item() == 2.0


def test_delayed_scaling_uses_the_history_of_previous_steps():
    s = DelayedScaler("e4m3", history_len=3)
    used = [s(torch.tensor([a])).item() for a in (2.0, 8.0, 1.0, 1.0, 1.0)]
    # step 1 casts with the initial scale 1; each later step with 448 / max(last <=3 amaxes before it)
    assert used == [1.0, 224.0, 56.0, 56.0, 56.0]
    assert s.scale.item() == 448.0  # the 8 has left the 3-step window
    m = DelayedScaler("e4m3", history_len=3, amax_compute_algo="most_recent")
    assert [m(torch.tensor([a])).item() for a in (2.0, 8.0, 1.0)] == [1.0, 224.0, 56.0]
    assert m.scale.item() == 448.0


def test_fp8_linear_forward_and_gradients_by_hand(one_thread):
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    fl = Fp8Linear.from_linear(lin, recipe="current")
    assert fl.weight is lin.weight and fl.bias is lin.bias  # the optimizer's tensors are untouched
    x = torch.randn(3, 5, 8, requires_grad=True)
    y = fl(x)  # (3, 5, 4)
    sx, sw = current_scale(x, "e4m3"), current_scale(lin.weight, "e4m3")
    xq, wq = fp8_quantize(x.detach(), "e4m3", sx), fp8_quantize(lin.weight.detach(), "e4m3", sw)
    assert torch.allclose(y, xq @ wq.t() + lin.bias, atol=1e-6)
    assert not torch.allclose(y, lin(x), atol=1e-4)  # the rounding is really there
    g = torch.randn(3, 5, 4)
    y.backward(g)
    gq = fp8_quantize(g, "e5m2", current_scale(g, "e5m2"))
    assert torch.allclose(x.grad, gq @ wq, atol=1e-6)
    assert torch.allclose(lin.weight.grad, gq.reshape(-1, 4).t() @ xq.reshape(-1, 8), atol=1e-5)
    assert torch.allclose(lin.bias.grad, g.sum((0, 1)), atol=1e-6)  # bias gradient is not quantised


def test_prepare_model_swaps_every_linear_and_keeps_state_dict(one_thread):
    from wmkit.nn import TransformerBlock

    block = TransformerBlock(32, 4)
    keys = set(block.state_dict())
    assert prepare_model(block, "fp32") is block and precision_of(block)["precision"] == "fp32"
    out = prepare_model(block, "fp8", backend="emulation")
    assert out is block
    assert sum(isinstance(m, Fp8Linear) for m in block.modules()) == 4  # qkv, proj, fc1, fc2
    assert set(block.state_dict()) == keys
    info = precision_of(block)
    assert info["backend"] == "emulation" and info["swapped"] == 4 and "emulation" in info["reason"]
    prepare_model(block, "fp8", backend="emulation")  # idempotent
    assert sum(isinstance(m, Fp8Linear) for m in block.modules()) == 4


def test_prepare_model_swaps_a_bare_linear(one_thread):
    lin = nn.Linear(16, 16)
    out = prepare_model(lin, "fp8", backend="emulation")
    assert isinstance(out, Fp8Linear) and out.weight is lin.weight
    x = torch.randn(4, 16)
    assert torch.equal(out(x), fp8_quantize(x, "e4m3", current_scale(x)) @ fp8_quantize(
        lin.weight.detach(), "e4m3", current_scale(lin.weight)).t() + lin.bias.detach())


def test_autocast_dtypes(one_thread):
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast("fp32", "cpu"):
        assert lin(x).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert lin(x).dtype == torch.bfloat16
    fl = Fp8Linear.from_linear(nn.Linear(4, 4))
    with autocast("fp8", "cpu"):
        assert fl(x).dtype == torch.bfloat16  # FP8 GEMMs write their output in the activation dtype


@pytest.mark.parametrize("cc, name", [((12, 0), "Float8CurrentScaling"), ((12, 1), "Float8CurrentScaling"),
                                      ((10, 0), "MXFP8BlockScaling"), ((10, 3), "MXFP8BlockScaling"),
                                      ((9, 0), "DelayedScaling"), ((8, 9), "DelayedScaling"),
                                      ((8, 6), None), ((8, 0), None), ((7, 5), None)])
def test_fp8_recipe_for(cc, name):
    assert fp8_recipe_for(cc) == name


def test_fp8_recipe_for_rejects_bad_capability():
    assert fp8_recipe_for(None) is None
    for bad in ("9.0", (9,), (9.0, 0)):
        with pytest.raises(ValueError, match="capability"):
            fp8_recipe_for(bad)


YES, NO_TE, NO_AO = (True, ""), (False, "TE missing"), (False, "torchao missing")


def test_choose_backend_matrix():
    cb = choose_backend
    assert cb("auto", device_type="cuda", capability=(12, 0), te_ok=YES, torchao_ok=YES)[0] == "te"
    assert cb("auto", device_type="cuda", capability=(9, 0), te_ok=NO_TE, torchao_ok=YES)[0] == "torchao"
    b, why = cb("auto", device_type="cuda", capability=(9, 0), te_ok=NO_TE, torchao_ok=NO_AO)
    assert b == "emulation" and "TE missing" in why and "torchao missing" in why
    b, why = cb("auto", device_type="cuda", capability=(8, 6), te_ok=YES, torchao_ok=YES)
    assert b == "emulation" and "no FP8 tensor cores" in why
    b, why = cb("auto", device_type="cpu", capability=None, te_ok=NO_TE, torchao_ok=NO_AO)
    assert b == "emulation" and "CPU: emulation only" in why
    assert cb("torchao", device_type="cuda", capability=(12, 0), te_ok=YES, torchao_ok=YES)[0] == "torchao"
    assert cb("emulation", device_type="cuda", capability=(9, 0), te_ok=YES, torchao_ok=YES)[0] == "emulation"
    with pytest.raises(ValueError, match="TE missing"):
        cb("te", device_type="cuda", capability=(9, 0), te_ok=NO_TE, torchao_ok=YES)
    with pytest.raises(ValueError, match="FP8 tensor cores"):
        cb("torchao", device_type="cpu", capability=None, te_ok=YES, torchao_ok=YES)
    with pytest.raises(ValueError, match="backend"):
        cb("apex", device_type="cpu", capability=None, te_ok=YES, torchao_ok=YES)


def test_backend_import_failures_are_reported_not_raised(monkeypatch):
    def broken(name):
        if name.startswith("transformer_engine"):
            raise OSError("libcudart.so.12: cannot open shared object file")  # what TE does without CUDA
        if name.startswith("torchao"):
            raise ImportError("No module named 'torchao'")
        raise AssertionError(name)

    monkeypatch.setattr(prec, "_import_module", broken)
    ok, why = prec.backend_available("te")
    assert not ok and "OSError" in why and "libcudart" in why
    ok, why = prec.backend_available("torchao")
    assert not ok and "torchao" in why
    status = prec.fp8_status("cpu")
    assert status["auto_backend"] == "emulation" and not status["speedup_possible"]
    assert status["backends"]["te"][0] is False


def test_importing_wmkit_does_not_import_te_or_torchao():
    import subprocess

    code = ("import sys, wmkit, wmkit.precision; "
            "print(any(m.split('.')[0] in ('transformer_engine', 'torchao') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _fake_modules():
    """Stand-ins for torchao.float8 and transformer_engine.pytorch that record how wmkit calls them."""
    calls = {}

    class Float8LinearConfig:
        @classmethod
        def from_recipe_name(cls, name):
            calls["recipe_name"] = name
            return cls()

    def convert_to_float8_training(model, *, config=None, module_filter_fn=None):
        calls["filtered"] = [fqn for fqn, m in model.named_modules() if isinstance(m, nn.Linear)
                             and module_filter_fn(m, fqn)]
        return model

    ao = types.SimpleNamespace(Float8LinearConfig=Float8LinearConfig,
                               convert_to_float8_training=convert_to_float8_training)

    class TELinear(nn.Linear):
        def __init__(self, i, o, bias=True, params_dtype=None, device=None):
            super().__init__(i, o, bias=bias, dtype=params_dtype, device=device)

    @__import__("contextlib").contextmanager
    def te_autocast(enabled=True, recipe=None):
        calls["te_autocast"] = recipe
        yield

    te = types.SimpleNamespace(Linear=TELinear, autocast=te_autocast)
    recipes = types.SimpleNamespace(Float8CurrentScaling=lambda: "CS", DelayedScaling=lambda: "DS",
                                    MXFP8BlockScaling=lambda: "MX")
    mods = {"torchao.float8": ao, "transformer_engine.pytorch": te, "transformer_engine.common.recipe": recipes}
    return calls, mods


def test_torchao_and_te_paths_with_injected_modules(monkeypatch):
    calls, mods = _fake_modules()
    monkeypatch.setattr(prec, "_import_module", lambda name: mods[name])
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))  # 10 is not a multiple of 16
    monkeypatch.setattr(prec, "_resolve", lambda backend, device: ("torchao", "injected"))
    prepare_model(model, "fp8")
    assert calls["recipe_name"] == "tensorwise" and calls["filtered"] == ["0.0"]  # (wrapped in a Sequential)
    assert precision_of(model)["skipped"] == ["2"]

    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    w0 = model[0].weight.detach().clone()
    monkeypatch.setattr(prec, "_resolve", lambda backend, device: ("te", "injected"))
    prepare_model(model, "fp8")
    assert type(model[0]).__name__ == "TELinear" and torch.equal(model[0].weight, w0)
    assert type(model[2]) is nn.Linear  # left alone: not a multiple of 16
    monkeypatch.setattr(prec, "_device_info", lambda device: (torch.device("cpu"), (12, 0)))
    with autocast("fp8", "cpu"):
        pass
    assert calls["te_autocast"] == "CS"  # Float8CurrentScaling on sm_120

    @__import__("contextlib").contextmanager
    def old_fp8_autocast(enabled=True, fp8_recipe=None):  # TE releases before `autocast` existed
        calls["old_fp8_autocast"] = fp8_recipe
        yield

    mods["transformer_engine.pytorch"] = types.SimpleNamespace(Linear=None, fp8_autocast=old_fp8_autocast)
    monkeypatch.setattr(prec, "_device_info", lambda device: (torch.device("cpu"), (9, 0)))
    with autocast("fp8", "cpu"):
        pass
    assert calls["old_fp8_autocast"] == "DS"  # DelayedScaling on Hopper


def _toy_run(precision: str, steps: int, seed: int = 0) -> list[float]:
    """A 2-block causal transformer learns y_t = (x_t + x_{t-1}) mod V: it must attend to the previous token."""
    from wmkit.nn import TransformerBlock, sincos_1d

    torch.manual_seed(seed)
    V, D, L = 16, 64, 16
    model = nn.ModuleList([nn.Embedding(V, D), TransformerBlock(D, 4), TransformerBlock(D, 4), nn.LayerNorm(D),
                           nn.Linear(D, V)])
    model = prepare_model(model, precision)
    pos = sincos_1d(L, D)  # (L, D)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randint(0, V, (16, L), generator=g)  # (B, L)
        y = (x + torch.roll(x, 1, dims=1)) % V
        y[:, 0] = x[:, 0]
        with autocast(precision, "cpu"):
            h = model[0](x) + pos  # (B, L, D)
            for blk in model[1:3]:
                h = blk(h, causal=True)
            logits = model[4](model[3](h))  # (B, L, V)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_emulated_fp8_trains_within_tolerance_of_bf16(one_thread):
    """Stated tolerance: over 300 steps (same seed and batches) fp8's mean loss is within 10% of bf16's, its
    last-20-step loss within 0.1 nats of bf16's, and both fall from chance (ln 16 = 2.77) below 0.3."""
    steps = 300
    bf16, fp8 = _toy_run("bf16", steps), _toy_run("fp8", steps)
    mean_bf16, mean_fp8 = sum(bf16) / steps, sum(fp8) / steps
    tail_bf16, tail_fp8 = sum(bf16[-20:]) / 20, sum(fp8[-20:]) / 20
    assert bf16[0] > 2.7 and fp8[0] > 2.7
    assert tail_bf16 < 0.3 and tail_fp8 < 0.3, (tail_bf16, tail_fp8)
    assert abs(mean_fp8 - mean_bf16) <= 0.10 * mean_bf16, (mean_fp8, mean_bf16)
    assert abs(tail_fp8 - tail_bf16) <= 0.1, (tail_fp8, tail_bf16)


def test_cpu_bf16_native_matches_the_cpu_flags():
    """oneDNN's bf16 kernels need AVX-512 (F, BW, VL, DQ: its avx512_core) or AVX2 with the AVX-NE-CONVERT
    instructions (x86): the check must agree with /proc/cpuinfo."""
    import platform
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not info.exists():
        pytest.skip("the flags are read from Linux x86-64's /proc/cpuinfo")
    flags = next(line for line in info.read_text().splitlines() if line.startswith("flags")).split()
    avx512_core = all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq"))
    assert prec.cpu_bf16_native() == (avx512_core or "avx_ne_convert" in flags)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_kernels_warns_once(monkeypatch, native):
    import warnings

    monkeypatch.setattr(prec, "cpu_bf16_native", lambda: native)
    monkeypatch.setattr(prec, "_WARNED_CPU_BF16", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for precision in ("fp32", "bf16", "bf16", "fp8"):  # a loop enters the context at every step
            with prec.autocast(precision, "cpu"):
                pass
    slow = [w for w in caught if "no native bf16 kernels" in str(w.message)]
    assert len(slow) == (0 if native else 1)
    if not native:
        assert "precision='bf16'" in str(slow[0].message) and slow[0].filename == __file__
    ok, why = prec.fp8_status("cpu")["bf16"]
    assert ok and (why == "" if native else "emulated" in why)
