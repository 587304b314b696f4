"""Stage 1 CLI: the whole pipeline in the smoke profile, resume, and the benchmark's JSON lines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wmkit.checkpoint import load_state
from wmkit.training import read_metrics
from wmkit.worldmodels import cli, load_episode


@pytest.mark.slow
def test_cli_pipeline_smoke_profile_with_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    r = tmp_path / "runs"
    ep_dir, vae, mdn, ctrl = r / "episodes", r / "vae", r / "mdnrnn", r / "controller"
    cli.main(["collect", "--out-dir", str(ep_dir), "--n-rollouts", "2", "--rollout-len", "30", "--workers", "2"])
    eps = sorted(ep_dir.glob("episode_*.npz"))
    assert [p.name for p in eps] == ["episode_000000.npz", "episode_000001.npz"]
    assert load_episode(eps[1]).seed == 1 and len(load_episode(eps[1])) == 30

    cli.main(["train-vae", "--data-dir", str(ep_dir), "--run-dir", str(vae), "--epochs", "1"])
    assert load_state(vae / "ckpt" / "latest")["epoch"] == 1
    steps_1 = load_state(vae / "ckpt" / "latest")["step"]
    cli.main(["train-vae", "--data-dir", str(ep_dir), "--run-dir", str(vae), "--epochs", "2", "--resume"])
    st = load_state(vae / "ckpt" / "latest")
    assert st["epoch"] == 2 and st["step"] == 2 * steps_1  # continued, did not restart
    assert (vae / "tb").is_dir() and (vae / "config.json").exists()

    cli.main(["train-mdnrnn", "--data-dir", str(ep_dir), "--vae-dir", str(vae), "--run-dir", str(mdn),
              "--seq-len", "8"])
    rows = read_metrics(mdn)
    assert rows and all(np.isfinite(row["mdnrnn/nll"]) for row in rows)

    capsys.readouterr()
    cli.main(["train-controller", "--data-dir", str(ep_dir), "--vae-dir", str(vae), "--mdnrnn-dir", str(mdn),
              "--run-dir", str(ctrl), "--generations", "2", "--eval-episodes", "1", "--eval-max-steps", "20"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["env"] == "dream" and np.isfinite(res["real_mean"])
    assert load_state(ctrl / "ckpt" / "latest")["params"].shape == (867,)

    cli.main(["dream", "--data-dir", str(ep_dir), "--vae-dir", str(vae), "--mdnrnn-dir", str(mdn),
              "--start", "0", "--context", "4", "--horizon", "20", "--tau", "1.15", "--out", str(r / "dream")])
    d = np.load(r / "dream.npz")
    assert d["real"].shape == d["dream"].shape == (20, 64, 64, 3) and d["dream"].dtype == np.uint8
    assert (r / "dream.png").exists()


def test_cli_help_and_unknown_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "train-mdnrnn" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown command 'fly'"):
        cli.main(["fly"])
    with pytest.raises(SystemExit):
        cli.main(["train-vae", "--help"])
    assert "kl_tolerance * z_dim" in capsys.readouterr().out


def test_bench_speed_prints_json_lines(capsys):
    from wmkit.worldmodels import bench

    bench.run(["--only", "speed", "--repeat", "1", "--vae-batch", "4", "--mdn-batch", "2", "--seq-len", "8",
               "--dream-batch", "8", "--threads", "1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["metric"] for r in rows} == {"vae_train", "mdnrnn_train", "dream_steps", "dream_steps_single",
                                          "dream_batched_speedup"}
    assert all(r["bench"] == "worldmodels" and r["value"] > 0 for r in rows)


def test_repeat_last_z_baseline_matches_the_gaussian_entropy():
    from wmkit.worldmodels.bench import repeat_z_nll

    rng = np.random.default_rng(0)
    walks = [np.cumsum(rng.normal(0, 0.3, size=(5000, 4)), axis=0) for _ in range(2)]
    expected = 0.5 + np.log(0.3) + 0.5 * np.log(2 * np.pi)  # entropy of N(0, 0.3^2) in nats
    assert repeat_z_nll(walks[:1], walks[1:]) == pytest.approx(expected, abs=0.03)
