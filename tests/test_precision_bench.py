"""`wmkit bench fp8`, the toggle model's training run, and the precision toggle widget."""

from __future__ import annotations

import json

import pytest
import torch

import wmkit.precision_widget as pw
from wmkit.precision_bench import BenchTransformer, crossover, read_results, run, sum_task_batch, train_run
from wmkit.precision_widget import PrecisionToggle, precision_choices

TINY = dict(dim=32, depth=1, heads=2, seq_len=8, batch=4)


def test_crossover_by_hand():
    assert crossover([512, 1024, 2048], [1.2, 0.9, 0.8]) == 1024
    assert crossover([512, 1024, 2048], [0.9, 1.1, 0.8]) == 2048  # must stay below 1 from there on
    assert crossover([512, 1024, 2048], [1.1, 1.2, 1.3]) == -1


def test_sum_task_targets():
    x, y = sum_task_batch(2, 5, 16, torch.Generator().manual_seed(0))
    for b in range(2):
        assert y[b, 0] == x[b, 0]
        for t in range(1, 5):
            assert y[b, t] == (x[b, t] + x[b, t - 1]) % 16


def test_bench_transformer_is_causal(one_thread):
    torch.manual_seed(0)
    m = BenchTransformer(16, 32, 1, 2, 8).eval()
    x = torch.randint(0, 16, (1, 8))
    x2 = x.clone()
    x2[0, 5] = (x2[0, 5] + 1) % 16
    a, b = m(x), m(x2)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6) and not torch.allclose(a[:, 5:], b[:, 5:])


def test_train_run_measures_memory_and_time(one_thread):
    runs = {p: train_run(p, steps=3, device="cpu", **TINY) for p in ("fp32", "bf16", "fp8")}
    for r in runs.values():
        assert len(r["losses"]) == 3 and r["step_ms"] > 0 and r["peak_memory_mb"] is None
    assert runs["fp8"]["backend"] == "emulation"
    # autograd keeps bf16 activations for the backward pass: fewer bytes than fp32; the emulation keeps fp32
    # copies of its rounded operands, so it saves no memory (it is not meant to)
    assert runs["bf16"]["saved_activation_mb"] < runs["fp32"]["saved_activation_mb"]
    assert runs["fp8"]["saved_activation_mb"] > runs["bf16"]["saved_activation_mb"]
    with pytest.raises(ValueError, match="precision"):
        train_run("fp16", steps=1, **TINY)


def test_bench_cli_writes_rows(tmp_path, one_thread, capsys):
    out = tmp_path / "r.jsonl"
    run(["--sizes", "32,64", "--tokens", "16", "--repeat", "1", "--warmup", "0", "--model", "false", "--out", str(out),
         "--device", "cpu"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    metrics = {(r["metric"], r.get("precision"), r.get("K")) for r in rows}
    for p in ("fp32", "bf16", "fp8"):
        assert ("linear_step_ms", p, 64) in metrics and ("time_ratio_vs_bf16", p, 64) in metrics
    assert [r["value"] for r in rows if r["metric"] == "time_ratio_vs_bf16" and r["precision"] == "bf16"] == [1.0, 1.0]
    cross = [r for r in rows if r["metric"] == "crossover_size"]
    assert len(cross) == 1 and cross[0]["backend"] == "emulation" and cross[0]["sizes"] == [32, 64]
    assert len(capsys.readouterr().out.splitlines()) == len(rows)  # the same lines went to stdout
    assert read_results(tmp_path)[0]["file"] == "r.jsonl"


@pytest.mark.slow
def test_bench_compile_option_times_the_compiled_layer(tmp_path, one_thread):
    # --compile: the layer runs through torch.compile (compiled in an untimed warm-up round, even with
    # --warmup 0) and every row says it was compiled
    from wmkit.precision_bench import _linear_step

    step, backend = _linear_step(16, 8, "fp32", "auto", torch.device("cpu"), compile=True)
    step()  # compiles forward and backward
    assert backend == "torch"
    out = tmp_path / "c.jsonl"
    run(["--sizes", "16", "--tokens", "8", "--repeat", "1", "--warmup", "0", "--model", "false", "--out", str(out),
         "--device", "cpu", "--precisions", "fp32,bf16", "--compile", "true"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(r["compiled"] is True for r in rows)
    assert {r["precision"] for r in rows if r["metric"] == "linear_step_ms"} == {"fp32", "bf16"}


def test_read_results_names_the_bad_line(tmp_path):
    assert read_results(tmp_path) == []
    (tmp_path / "x.jsonl").write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match="x.jsonl:2"):
        read_results(tmp_path)


def _status(device="cuda:0", cap=(9, 0), te=(True, ""), ao=(True, "")):
    from wmkit.precision import fp8_recipe_for

    return {"device": device, "capability": cap, "te_recipe": fp8_recipe_for(cap) if cap else None,
            "backends": {"te": te, "torchao": ao, "emulation": (True, "")}, "bf16": (True, "")}


def test_choices_disable_what_cannot_run(monkeypatch):
    by = {c.label: c for c in precision_choices("cpu")}
    assert by["fp32"].enabled and by["bf16"].enabled and by["fp8 · emulation"].enabled
    assert not by["fp8 · te"].enabled and by["fp8 · te"].reason == "CPU: emulation only"
    assert not by["fp8 · torchao"].enabled
    monkeypatch.setattr(pw, "fp8_status", lambda device: _status(cap=(8, 6)))
    by = {c.label: c for c in precision_choices("cuda")}
    assert not by["fp8 · te"].enabled and "no FP8 tensor cores on this GPU" in by["fp8 · te"].reason
    monkeypatch.setattr(pw, "fp8_status", lambda device: _status(cap=(12, 0), te=(False, "TE import failed")))
    by = {c.label: c for c in precision_choices("cuda")}
    assert not by["fp8 · te"].enabled and by["fp8 · te"].reason == "TE import failed"
    assert by["fp8 · torchao"].enabled and "tensorwise" in by["fp8 · torchao"].reason


def test_toggle_trains_and_compares(one_thread):
    tog = PrecisionToggle(steps=3, model=TINY, device="cpu")
    with pytest.raises(ValueError, match="not available here"):
        tog.train("fp8", "te")
    tog.train("bf16")
    tog.train("fp8", "emulation")
    assert [r["label"] for r in tog.runs] == ["bf16", "fp8 · emulation"]
    table = tog.table_html()
    assert table.count("<tr>") == 3 and "1.00x" in table and "n/a on CPU" in table
    fig = tog.figure()
    assert len(fig.axes[0].lines) == 3  # two runs and the chance line
    w = tog.widget()
    buttons = w.children[0].children
    assert [b.description for b in buttons] == [c.label for c in tog.choices()]
    assert [b.disabled for b in buttons] == [not c.enabled for c in tog.choices()]
    assert buttons[2].tooltip == "CPU: emulation only"
