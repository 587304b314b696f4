"""CarRacing goal task (issue #14): does the planner's energy rank real frames by their true distance to the goal?

    WMKIT_PROFILE=cpu OMP_NUM_THREADS=1 python tools/jepa_compare_goals_energy.py --episodes 10 --recipe ema

trains the AC model of ``--recipe`` on the driving clips exactly as ``tools/jepa_compare_goals.py`` does (``ema``:
the profile's patch-token AC-JEPA; ``lewm``: LeWM's recipe, :func:`wmkit.jepa.train.lewm_config`, with the 3 controls
as actions), then, on the goal task's episodes (:class:`wmkit.jepa.goals.GoalTask`, the same starts and goals):

* **path**: the data policy's own drive from the start through the goal and ``--after`` steps beyond it; per episode
  the Spearman correlation of the energy of each encoded real frame to the goal image's features with the car's true
  distance to the goal (1: the energy falls and rises exactly as the distance does);
* **futures**: ``--futures`` action sequences of ``plan_horizon`` blocks drawn as CEM's first iteration draws them
  (N(0, 1) clipped, through :func:`wmkit.jepa.goals.to_control`), executed in the game from the start; per episode the
  Spearman correlation of the true final distance with the energy of the encoded real final frame and with the
  planner's energy of the predicted one (``plan_energy``), the same two numbers as
  :func:`wmkit.jepa.plan.energy_ranking` gives on Two-Rooms; and the spread of the true final distances (if every
  future ends about as far away, no energy can help).

Prints JSON lines and the means +- standard errors over episodes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from wmkit.jepa.goals import DataPolicy, GoalTask, driving_ac_config, frame_of, to_control, training_drives
from wmkit.jepa.plan import spearman
from wmkit.jepa.train import to_video, train_ac
from wmkit.profiles import profile
from wmkit.utils import mean_and_se


@torch.no_grad()
def frame_energy(model, frames: np.ndarray, goal: torch.Tensor) -> np.ndarray:
    """|E(x) - z_goal| of real frames (M, S, S, 3) with the planner's distance (L1 or squared), target features."""
    z = model.encode(to_video(frames)[:, None], target=True)[:, 0]  # (M, N, D)
    d = (z - goal).abs() if model.cfg.loss == "l1" else (z - goal).square()
    return d.flatten(1).mean(1).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(prog="tools/jepa_compare_goals_energy.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=["ema", "lewm"], default="ema", help="the AC model that is measured")
    p.add_argument("--clips", type=int, default=32, help="recorded drives for training")
    p.add_argument("--steps", type=int, default=300, help="frames per drive (50 Hz)")
    p.add_argument("--train-steps", type=int, default=None, help="AC steps (None: ac_steps, or lewm_steps for lewm)")
    p.add_argument("--episodes", type=int, default=10, help="goal episodes (track seeds 5000..)")
    p.add_argument("--offset", type=int, default=50, help="goal = where the data policy is this many steps on")
    p.add_argument("--after", type=int, default=50, help="path steps recorded beyond the goal")
    p.add_argument("--futures", type=int, default=16, help="CEM-like action sequences per episode")
    p.add_argument("--seed", type=int, default=0, help="seed of the futures")
    p.add_argument("--no-brake", action="store_true", help="futures with the brake at 0 (CEM without the brake)")
    a = p.parse_args(argv)
    if a.episodes < 2 or a.futures < 3:
        raise SystemExit("--episodes must be >= 2 and --futures >= 3")
    torch.set_num_threads(1)
    P = profile()
    J = P.jepa
    print(f"# {P.name} profile; load {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    frames, actions = training_drives(a.clips, a.steps, J.tr_size)
    cfg = driving_ac_config(J, a.recipe, a.train_steps)
    t = time.perf_counter()
    model, hist = train_ac(cfg, frames, actions, progress=False)
    model.eval()
    print(json.dumps({"recipe": a.recipe, "train_steps": cfg.steps, "train_s": time.perf_counter() - t,
                      "final": {k: hist[-1][k] for k in ("loss", "feature_std")}}), flush=True)
    task = GoalTask(size=J.tr_size, offset=a.offset)
    blk, H = J.action_block, J.plan_horizon
    g = torch.Generator().manual_seed(a.seed)
    rows = []
    for e in range(a.episodes):
        info = task.goal(e)
        goal = model.encode(to_video(info["frame"])[None, None], target=True)[:, 0]  # (1, N, D)
        # the data policy's own path through the goal (the same policy draws as GoalTask.goal)
        policy = DataPolicy(np.random.default_rng(task.seed + e), task.noise)
        obs = task._replay(e, [])
        for _ in range(task.warmup):
            obs, *_ = task.env.step(policy(obs))
        path_f, path_d = [], []
        for _ in range(a.offset + a.after):
            obs, *_ = task.env.step(policy(obs))
            path_f.append(frame_of(obs, task.size))
            path_d.append(float(np.linalg.norm(task.position() - info["position"])))
        e_path = frame_energy(model, np.stack(path_f), goal)
        # CEM-like futures from the start, executed in the game and rolled out by the predictor
        acts = to_control(torch.randn(a.futures, H * blk, 3, generator=g).clamp(-1, 1), not a.no_brake)  # (F, H*blk, 3)
        final_f, final_d = [], []
        for f in range(a.futures):
            obs = task.start(e)
            for u in acts[f].numpy():
                obs, *_ = task.env.step(u)
            final_f.append(frame_of(obs, task.size))
            final_d.append(float(np.linalg.norm(task.position() - info["position"])))
        z0 = model.encode(to_video(frame_of(task.start(e), task.size))[None, None])  # (1, 1, N, D)
        e_pred = model.energy(z0, goal, rearrange(acts, "f (h k) a -> f h (k a)", k=blk), J.plan_energy).numpy()
        e_real = frame_energy(model, np.stack(final_f), goal)
        d = np.asarray(final_d)
        row = {"episode": e, "path_spearman": spearman(e_path, np.asarray(path_d)),
               "futures_real_spearman": spearman(e_real, d), "futures_predicted_spearman": spearman(e_pred, d),
               "futures_distance_mean": float(d.mean()), "futures_distance_sd": float(d.std(ddof=1)),
               "start_distance": float(np.linalg.norm(info["start_position"] - info["position"]))}
        print(json.dumps(row), flush=True)
        rows.append(row)
    # a Spearman is NaN where an energy is constant (no order): left out of the mean
    out = {k: mean_and_se([r[k] for r in rows if np.isfinite(r[k])]) for k in rows[0] if k != "episode"}
    print(json.dumps({"recipe": a.recipe, "episodes": a.episodes, "mean_se": out}), flush=True)


if __name__ == "__main__":
    main()
