"""The 2-process gloo run of `torchrun -m wmkit.jepa.pretrain`: replicas agree, resume continues identically."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "wmkit.jepa.pretrain", "--backend", "gloo", "--steps", "3"]


def _run(args, run_dir):
    env = {**os.environ, "WMKIT_PROFILE": "smoke", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(TORCHRUN + ["--run-dir", str(run_dir)] + args, env=env, capture_output=True, text=True,
                         timeout=180, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_process_gloo_run_replicas_agree_and_resume_is_exact(tmp_path, mode):
    """DDP: rank 0 writes the state dicts. FSDP2: the shards are gathered into full tensors and re-sharded on resume
    through torch.distributed.checkpoint.state_dict; the resumed run must match the uninterrupted one exactly."""
    dist = ["--dist", mode]
    full = _run(dist, tmp_path / "full")
    for d in full:
        assert d["world"] == 2 and d["end"] == 3 and len(d["losses"]) == 3 and d["dist"] == mode
    # the replicas (DDP) or the gathered shards (FSDP2) agree exactly on both ranks
    assert full[0]["online"] == full[1]["online"] and full[0]["target"] == full[1]["target"]
    assert full[0]["losses"] == full[1]["losses"]  # the all-reduced loss
    # interrupted after step 1, resumed from the checkpoint: the same step-2 loss and the same weights
    first = _run(dist + ["--stop-at", "1"], tmp_path / "resumed")
    assert first[0]["end"] == 2
    resumed = _run(dist + ["--resume", "true"], tmp_path / "resumed")
    assert resumed[0]["start"] == 2
    assert resumed[0]["losses"] == full[0]["losses"][2:]
    assert resumed[0]["online"] == full[0]["online"] and resumed[1]["target"] == full[1]["target"]
