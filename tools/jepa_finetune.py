"""The driving fine-tuning table of book/stage4/finetune.md: scratch vs frozen + probe vs fine-tuned, over seeds.

    OMP_NUM_THREADS=1 python tools/jepa_finetune.py --encoder runs/jepa/finetune/pretrain/ckpt/latest \
        --seeds 0 1 2 --out runs/jepa/finetune/table.json

Every mode trains the same head for the same steps on the same batches (wmkit.jepa.finetune.finetune); held-out
R^2 per target is averaged over seeds (+- standard error). Closed loop: every trained policy drives the same
tracks (drive_seed ..), as do a uniformly random policy and the data policy; tiles visited are averaged per track
over seeds, then mean +- s.e. over tracks, and the paired difference to the random policy on each track.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wmkit.jepa.finetune import MODES, TARGETS, FinetuneConfig, drive, driving_data, finetune
from wmkit.utils import mean_and_se


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="tools/jepa_finetune.py", description=__doc__.split("\n")[0])
    p.add_argument("--encoder", required=True, help="pretrain checkpoint (<run_dir>/ckpt/latest)")
    p.add_argument("--preset", default="cpu", help="smoke | cpu | gpu (wmkit.jepa.finetune.PRESETS)")
    p.add_argument("--modes", nargs="+", default=list(MODES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="downstream steps (default: the preset's)")
    p.add_argument("--labeled", type=int, default=None, help="labelled training episodes (default: all)")
    p.add_argument("--encoder-lr-scale", type=float, default=0.1)
    p.add_argument("--curve-every", type=int, default=0)
    p.add_argument("--raw-tokens", action="store_true", help="probe the raw tokens (official), no BatchNorm")
    p.add_argument("--drive-episodes", type=int, default=None, help="closed-loop tracks (default: the preset's)")
    p.add_argument("--skip-baselines", action="store_true", help="do not drive the random and data policies")
    p.add_argument("--out", default="runs/jepa/finetune/table.json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    base = dict(encoder=a.encoder, preset=a.preset, steps=a.steps, labeled=a.labeled,
                encoder_lr_scale=a.encoder_lr_scale, curve_every=a.curve_every, drive_episodes=a.drive_episodes,
                token_norm="none" if a.raw_tokens else "batchnorm")
    cfg0 = FinetuneConfig(mode="scratch", **base)
    data = driving_data(cfg0)
    runs, drives = [], {}
    for mode in a.modes:
        for seed in a.seeds:
            cfg = FinetuneConfig(mode=mode, seed=seed, **base)
            t0 = time.time()
            out = finetune(cfg, data)
            model, norm = out.pop("model"), out.pop("norm")
            out["train_seconds"] = time.time() - t0
            if cfg.drive_episodes:
                out["drive"] = drive("model", cfg.drive_episodes, cfg.drive_steps, cfg.drive_seed, model, norm,
                                     cfg.every)
            runs.append(out)
            print(json.dumps({k: v for k, v in out.items() if k not in ("drive", "curve")}), flush=True)
    if cfg0.drive_episodes and not a.skip_baselines:
        for pol in ("random", "data"):
            drives[pol] = drive(pol, cfg0.drive_episodes, cfg0.drive_steps, cfg0.drive_seed)
    rows = {}
    for mode in a.modes:
        rs = [r for r in runs if r["mode"] == mode]
        row = {f"r2_{t}": mean_and_se([r[f"r2_heldout_{t}"] for r in rs]) for t in TARGETS}
        row["r2_mean"] = mean_and_se([np.mean([r[f"r2_heldout_{t}"] for t in TARGETS]) for r in rs])
        row["start_effective_rank"] = mean_and_se([r["start_effective_rank"] for r in rs])
        row["start_feature_std"] = mean_and_se([r["start_feature_std"] for r in rs])
        row["start_token_std"] = mean_and_se([r["start_token_std"] for r in rs])
        row["train_seconds"] = mean_and_se([r["train_seconds"] for r in rs])
        if cfg0.drive_episodes:
            tiles = np.array([[d["tiles"] for d in r["drive"]] for r in rs]).mean(0)  # (tracks,) mean over seeds
            rets = np.array([[d["return"] for d in r["drive"]] for r in rs]).mean(0)
            row.update(tiles=mean_and_se(tiles), ret=mean_and_se(rets))
            if "random" in drives:
                rand = np.array([d["tiles"] for d in drives["random"]])
                row["tiles_minus_random"] = mean_and_se(tiles - rand)
        rows[mode] = row
    for pol, ds in drives.items():
        rows[pol] = {"tiles": mean_and_se([d["tiles"] for d in ds]), "ret": mean_and_se([d["return"] for d in ds])}
    result = {"args": vars(a), "rows": rows, "runs": runs, "baselines": drives}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print("| policy | " + " | ".join(f"R^2 {t}" for t in TARGETS) + " | tiles visited | return |")
    for name, row in rows.items():
        cells = [f"{row[f'r2_{t}'][0]:.3f} +- {row[f'r2_{t}'][1]:.3f}" if f"r2_{t}" in row else "" for t in TARGETS]
        drv = [f"{row[k][0]:.1f} +- {row[k][1]:.1f}" if k in row else "" for k in ("tiles", "ret")]
        print(f"| {name} | " + " | ".join(cells + drv) + " |")
    return result


if __name__ == "__main__":
    main()
