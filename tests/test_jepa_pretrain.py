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


def _shard_clips(n_episodes, length, size, seed=0):
    import numpy as np

    from wmkit.data import ActionSpace, Clip

    rng = np.random.default_rng(seed)
    space = ActionSpace("discrete", n=2, names=("a", "b"))
    # every frame's first pixel holds (episode, frame index), so a drawn window says where it came from
    clips = []
    for e in range(n_episodes):
        fr = rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8)
        fr[:, 0, 0, 0], fr[:, 0, 0, 1] = e, np.arange(length)
        clips.append(Clip(fr, np.zeros(length, np.int64), space, meta=dict(source=f"t:{e}", episode=f"ep{e}")))
    return clips


def test_shards_source_draws_shuffled_windows_and_names_bad_samples(tmp_path):
    """``--data shards:DIR``: batches of (B, T, 3, H, W) windows at random offsets of longer samples, mixed across
    episodes by the shuffle buffer (without it a batch is neighbouring samples of one episode); a sample of the wrong
    size or too few frames is an error naming the shard, never skipped (before, it was skipped, and a folder of
    only such samples looped forever)."""
    import numpy as np
    import torch

    from wmkit.data import write_shards
    from wmkit.jepa.pretrain import make_source
    from wmkit.jepa.vjepa import VJEPAConfig

    cfg = VJEPAConfig(frames=4, size=16, patch=8, dim=16, depth=1, heads=2, pred_dim=16, pred_depth=1, pred_heads=2)
    write_shards(_shard_clips(4, 48, 16), tmp_path / "ok", clip_len=6, shard_size=8, size=None, progress=False)

    def where(x):  # (B, T, 3, H, W) -> the (episode, frame) of each window's first frame
        px = np.rint(x[:, 0, :2, 0, 0].numpy() * 255).astype(int)
        return [tuple(p) for p in px]

    plain = make_source(f"shards:{tmp_path / 'ok'}", cfg, rank=0, world=1, seed=0, shuffle_buffer=0)
    mixed = make_source(f"shards:{tmp_path / 'ok'}", cfg, rank=0, world=1, seed=0, shuffle_buffer=16)
    x = plain(0, 8)
    assert x.shape == (8, 4, 3, 16, 16) and x.dtype == torch.float32 and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    first = where(x)
    assert len({e for e, _ in first}) == 1  # shard order: one episode's neighbouring samples
    assert {f % 6 for _, f in first} - {0} and all(f % 6 <= 2 for _, f in first)  # offsets 0..2 inside 6-frame samples
    seen = {e for step in range(3) for e, _ in where(mixed(step, 8))}
    assert len(seen) >= 3  # the buffer mixes episodes
    # 64 windows over two epochs of 32 samples: all come from the data, each with its 4 consecutive frames
    for step in range(8):
        y = plain(step + 1, 8)
        frames = np.rint(y[:, :, 1, 0, 0].numpy() * 255).astype(int)  # (B, T) frame indices
        assert (np.diff(frames, axis=1) == 1).all()

    write_shards(_shard_clips(1, 12, 24), tmp_path / "big", clip_len=6, shard_size=8, size=None, progress=False)
    with pytest.raises(ValueError, match=r"shard-000000\.tar.*24x24 frames.*--size 16"):
        make_source(f"shards:{tmp_path / 'big'}", cfg, rank=0, world=1, seed=0)(0, 2)
    write_shards(_shard_clips(1, 12, 16), tmp_path / "short", clip_len=3, shard_size=8, size=None, progress=False)
    with pytest.raises(ValueError, match=r"shard-000000\.tar.*3 frames.*--clip-len 4"):
        make_source(f"shards:{tmp_path / 'short'}", cfg, rank=0, world=1, seed=0)(0, 2)
    from wmkit.jepa.pretrain import main

    with pytest.raises(SystemExit, match="--shuffle-buffer: expected >= 0"):
        main(["--shuffle-buffer", "-1"])
