"""wmkit core: profiles, seeding, devices, checkpoints, configs, training helpers, CLI and bench plumbing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
import torch

import wmkit
from wmkit.checkpoint import checkpoint_exists, load_meta, load_state, save_state
from wmkit.config import field_docs, from_dict, parse_config, to_dict
from wmkit.profiles import PROFILE_NAMES, chapter_keys, default_profile_name, profile
from wmkit.training import Logger, NonFiniteLossError, check_finite, read_metrics
from wmkit.utils import count_parameters, pick_device, rng_state, seed_everything, set_rng_state

# ---------------------------------------------------------------------------------------- profiles


def test_every_profile_has_the_same_keys_per_chapter():
    for chapter, per_profile in chapter_keys().items():
        keys = per_profile["smoke"]
        for name in PROFILE_NAMES:
            assert per_profile[name] == keys, f"{chapter}: profile {name} keys differ from smoke"


def test_profile_selection(monkeypatch):
    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    assert default_profile_name() == "smoke" and profile().name == "smoke"
    monkeypatch.delenv("WMKIT_PROFILE")
    assert default_profile_name() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("WMKIT_PROFILE", "laptop")
    with pytest.raises(ValueError, match="WMKIT_PROFILE='laptop'"):
        default_profile_name()


def test_profile_attribute_access_and_errors():
    p = profile("cpu")
    assert p.tour.episode_steps == 200
    assert "cpu" in str(p) and "episode_steps" in p.table("tour")
    with pytest.raises(AttributeError, match="no chapter 'nope'"):
        _ = p.nope
    with pytest.raises(ValueError, match="unknown profile"):
        profile("huge")
    # sizes grow from smoke to gpu where they are budgets
    assert profile("smoke").tour.episode_steps < p.tour.episode_steps < profile("gpu").tour.episode_steps


# ---------------------------------------------------------------------------------------- utils


def test_seed_everything_is_deterministic_on_cpu():
    seed_everything(123)
    a = (torch.randn(5), np.random.rand(3))
    seed_everything(123)
    b = (torch.randn(5), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="non-negative int"):
        seed_everything(-1)


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    seed_everything(7)
    save_state(tmp_path / "rng", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(2), __import__("random").random())
    set_rng_state(load_state(tmp_path / "rng")["rng"])
    got = (torch.rand(3), np.random.rand(2), __import__("random").random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")


def test_count_parameters_known_answer():
    # Linear(3, 4): 3*4 weights + 4 biases = 16
    assert count_parameters(torch.nn.Linear(3, 4)) == 16


# ---------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip_model_optimizer_and_structures(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": 3, "tuple": (1, "a"),
             "arr": np.arange(6, dtype=np.int16).reshape(2, 3), "inf": math.inf, "none": None}
    save_state(tmp_path / "ckpt" / "latest", state, metadata={"config": {"lr": 1e-3}})
    assert checkpoint_exists(tmp_path / "ckpt" / "latest")
    back = load_state(tmp_path / "ckpt" / "latest")
    assert back["step"] == 3 and back["tuple"] == (1, "a") and back["none"] is None and back["inf"] == math.inf
    assert back["arr"].dtype == np.int16 and np.array_equal(back["arr"], state["arr"])
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    # optimiser state keeps its int keys and loads into a fresh optimiser
    assert set(back["opt"]["state"]) == set(opt.state_dict()["state"])
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert load_meta(tmp_path / "ckpt" / "latest") == {"config": {"lr": 1e-3}}
    # the files are what the docs say: safetensors + JSON, no pickle
    assert (tmp_path / "ckpt" / "latest.safetensors").exists()
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["format"] == "wmkit-checkpoint"


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state(tmp_path / "missing")
    with pytest.raises(TypeError, match="cannot checkpoint value of type object"):
        save_state(tmp_path / "bad", {"x": object()})
    save_state(tmp_path / "ok", {"x": torch.ones(1)})
    (tmp_path / "ok.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(tmp_path / "ok")


# ---------------------------------------------------------------------------------------- configs


@dataclass
class _Cfg:
    """A config used by the tests."""

    lr: float = 1e-3
    """Learning rate."""
    steps: int = 10
    """Number of updates."""
    name: str = "run"
    """Run name."""
    use_amp: bool = False
    """Mixed precision."""
    recipe: Literal["2023", "2025"] = "2023"
    """Which recipe."""
    sizes: tuple[int, ...] = (32, 64)
    """Channel sizes."""
    budget: int | None = None
    """Optional budget."""


def test_field_docs_and_parse():
    docs = field_docs(_Cfg)
    assert docs["lr"] == "Learning rate." and docs["sizes"] == "Channel sizes."
    cfg = parse_config(_Cfg, ["--lr", "0.5", "--use-amp", "--recipe", "2025", "--sizes", "1", "2", "3",
                              "--budget", "none"])
    assert cfg == _Cfg(lr=0.5, use_amp=True, recipe="2025", sizes=(1, 2, 3), budget=None)
    assert parse_config(_Cfg, ["--use-amp", "false"]).use_amp is False
    assert parse_config(_Cfg, [], steps=99).steps == 99


def test_parse_errors_are_clear(capsys):
    with pytest.raises(SystemExit):
        parse_config(_Cfg, ["--recipe", "2019"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(_Cfg, ["--no-such-flag"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_help_shows_docstrings(capsys):
    with pytest.raises(SystemExit):
        parse_config(_Cfg, ["--help"], prog="demo")
    out = capsys.readouterr().out
    assert "Learning rate." in out and "--use-amp" in out


def test_config_dict_roundtrip():
    cfg = _Cfg(sizes=(1, 2))
    assert from_dict(_Cfg, json.loads(json.dumps(to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="unknown _Cfg fields: \\['typo'\\]"):
        from_dict(_Cfg, {"typo": 1})


# ---------------------------------------------------------------------------------------- training helpers


def test_check_finite_names_the_bad_loss():
    check_finite({"a": torch.tensor(1.0), "b": 2.0})
    with pytest.raises(NonFiniteLossError, match="'kl'.*step 5"):
        check_finite({"recon": torch.tensor(1.0), "kl": torch.tensor(float("nan"))}, step=5)
    with pytest.raises(NonFiniteLossError, match="'reward'"):
        check_finite({"reward": float("inf")})


def test_logger_writes_jsonl_and_tensorboard(tmp_path):
    with Logger(tmp_path / "run") as log:
        log.save_config({"lr": 1})
        log.log(0, loss=torch.tensor(2.0))
        log.log(1, loss=1.5)
    rows = read_metrics(tmp_path / "run")
    assert rows == [{"step": 0, "loss": 2.0}, {"step": 1, "loss": 1.5}]
    assert any((tmp_path / "run" / "tb").iterdir())
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"lr": 1}


# ---------------------------------------------------------------------------------------- CLI and bench


def _wmkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wmkit.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_help_lists_subcommands():
    out = _wmkit("--help")
    assert out.returncode == 0
    for sub in ("info", "bench", "worldmodels", "dreamer"):
        assert sub in out.stdout
    assert _wmkit("--version").stdout.strip() == wmkit.__version__
    bad = _wmkit("fly")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_cli_info_prints_profile():
    out = _wmkit("info")
    assert out.returncode == 0 and "wmkit profile:" in out.stdout and "[tour]" in out.stdout
    assert "cpu: " in out.stdout and "torch kernels " in out.stdout and "freed memory kept" in out.stdout
    assert "bf16 kernels: native" in out.stdout or "bf16 kernels: emulated" in out.stdout


def test_bench_prints_json_lines():
    out = subprocess.run([sys.executable, "-m", "wmkit.bench", "scrubber", "--frames", "4"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert row["bench"] == "scrubber" and isinstance(row["value"], float) and row["value"] > 0
        assert {"metric", "unit", "device", "torch"} <= set(row)
    unknown = subprocess.run([sys.executable, "-m", "wmkit.bench", "nope"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown benchmark 'nope'" in unknown.stderr


def test_interleaved_times_round_robin_and_drops_warmup():
    from wmkit.bench import interleaved

    calls = []
    out = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeat=3)
    assert calls == ["a", "b"] * 4                      # one call of each per round, warm-up round included
    assert [len(v) for v in out.values()] == [3, 3]     # ... but not recorded
    assert all(t >= 0 for v in out.values() for t in v)
