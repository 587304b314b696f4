"""CarRacing goal reaching with the AC-JEPA (issue #14): train on the driving stand-in, plan toward goal images.

    WMKIT_PROFILE=cpu OMP_NUM_THREADS=1 python tools/jepa_compare_goals.py --episodes 40

records (or reads from the cache) ``--clips`` CarRacing drives of ``--steps`` frames at the AC model's size
(:func:`wmkit.data.driving_clips`, controls as actions), trains the profile's `ema` AC-JEPA on them with 3-D actions,
and plays :func:`wmkit.jepa.goals.evaluate_driving` (planner vs the uniform random policy vs the data policy, the same
starts and goals). Prints JSON lines and a Markdown table; writes results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wmkit.jepa.goals import GoalTask, driving_ac_config, evaluate_driving, training_drives
from wmkit.jepa.train import train_ac
from wmkit.profiles import profile


def main(argv=None):
    p = argparse.ArgumentParser(prog="tools/jepa_compare_goals.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=32, help="recorded drives for training")
    p.add_argument("--steps", type=int, default=300, help="frames per drive (50 Hz)")
    p.add_argument("--train-steps", type=int, default=None, help="AC-JEPA steps (None: the profile's ac_steps)")
    p.add_argument("--episodes", type=int, default=40, help="goal-reaching episodes (track seeds 5000..)")
    p.add_argument("--offset", type=int, default=50, help="goal = where the data policy is this many steps on")
    p.add_argument("--budget", type=int, default=100, help="steps to reach the goal")
    p.add_argument("--radius", type=float, default=3.0, help="success radius, world units (track width 6.7)")
    p.add_argument("--horizon", type=int, default=None, help="CEM horizon in blocks (None: the profile's plan_horizon)")
    p.add_argument("--no-brake", action="store_true", help="CEM searches steering and gas only (brake 0)")
    p.add_argument("--out", default="runs/jepa/compare_goals")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    P = profile()
    J = P.jepa
    print(f"# {P.name} profile; load {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    t = time.perf_counter()
    frames, actions = training_drives(a.clips, a.steps, J.tr_size)
    T = frames.shape[1]
    data_s = time.perf_counter() - t
    cfg = driving_ac_config(J, "ema", a.train_steps)
    t = time.perf_counter()
    model, hist = train_ac(cfg, frames, actions, progress=False)
    train_s = time.perf_counter() - t
    print(json.dumps({"clips": a.clips, "frames": T, "data_s": data_s, "train_steps": cfg.steps, "train_s": train_s,
                      "final": {k: hist[-1][k] for k in ("loss", "feature_std")}}), flush=True)
    task = GoalTask(size=J.tr_size, offset=a.offset, budget=a.budget, radius=a.radius)
    t = time.perf_counter()
    r = evaluate_driving(model, task, a.episodes, a.horizon or J.plan_horizon, J.cem_samples, J.cem_elites,
                         J.cem_iters, receding=J.plan_receding, energy=J.plan_energy, progress=False,
                         brake=not a.no_brake)
    eval_s = time.perf_counter() - t
    row = {k: v for k, v in r.items() if k != "episodes"}
    row.update(eval_s=eval_s, episodes=a.episodes, radius=a.radius, offset=a.offset, budget=a.budget)
    print(json.dumps(row), flush=True)
    print("| policy | success | final distance (units) | closest approach |\n|---|---|---|---|")
    for who, name in (("plan", "AC-JEPA planner"), ("random", "uniform random"), ("data_policy", "data policy")):
        se = r.get(f"{who}_success_se", float("nan"))
        fd = [x[f"{who}_final_distance"] for x in r["episodes"]]
        md = [x[f"{who}_min_distance"] for x in r["episodes"]]
        print(f"| {name} | {100 * r[f'{who}_success']:.1f} % +- {100 * se:.1f} | {np.mean(fd):.1f} +- "
              f"{np.std(fd, ddof=1) / np.sqrt(len(fd)):.1f} | {np.mean(md):.1f} |")
    print(f"mean start distance {r['start_distance']:.1f} units; planner - random {100 * r['difference']:+.1f} +- "
          f"{100 * r['difference_se']:.1f} pts, distance {r['distance_difference']:+.1f} +- "
          f"{r['distance_difference_se']:.1f}; {a.episodes} episodes in {eval_s:.0f} s")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(a), "profile": P.name, "train_s": train_s,
                                                  "summary": row, "episodes": r["episodes"]}, indent=1))


if __name__ == "__main__":
    main()
