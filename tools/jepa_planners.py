"""Compare Two-Rooms planner settings on one trained AC world model, on the same episode seeds (paired).

Each variant is ``horizon:receding:energy[:samples:elites:iterations]`` (CEM sizes default to the profile's), e.g.

    WMKIT_PROFILE=cpu OMP_NUM_THREADS=1 .venv/bin/wmkit jepa train-ac --regulariser ema --run-dir runs/jepa/ac_ema
    WMKIT_PROFILE=cpu OMP_NUM_THREADS=1 .venv/bin/python tools/jepa_planners.py \\
        --checkpoint runs/jepa/ac_ema/ckpt/latest --episodes 80 --variants 5:1:all 10:1:all 5:5:last

Every variant plays the same start/goal/door configurations (seeds seed..seed+E-1) against the same random policy,
so the differences between rows are paired. Prints one JSON line per variant and, at the end, a Markdown table:
success (planner, random) with standard errors, mean final distance with its s.e., the paired distance difference
planner - random (< 0: the planner ends closer to the goal), and the seconds per variant.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from wmkit.checkpoint import load_meta, load_state
from wmkit.jepa.ac import ACConfig, ACWorldModel
from wmkit.jepa.plan import energy_landscape, evaluate_planning
from wmkit.profiles import profile


def parse_variant(text: str, J) -> dict:
    """``"H:R:energy[:S:E:I]"`` -> keyword arguments of evaluate_planning; bad text raises a clear error."""
    parts = text.split(":")
    if len(parts) not in (3, 6) or parts[2] not in ("last", "all"):
        raise ValueError(f"variant {text!r}: expected horizon:receding:last|all[:samples:elites:iterations]")
    try:
        nums = [int(p) for p in parts[:2] + parts[3:]]
    except ValueError as err:
        raise ValueError(f"variant {text!r}: horizon, receding and CEM sizes must be integers") from err
    h, r = nums[:2]
    s, e, i = nums[2:] if len(parts) == 6 else (J.cem_samples, J.cem_elites, J.cem_iters)
    if not 1 <= r <= h:
        raise ValueError(f"variant {text!r}: need 1 <= receding <= horizon")
    return dict(horizon=h, receding=r, energy=parts[2], samples=s, elites=e, iterations=i)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="an AC checkpoint of `wmkit jepa train-ac`")
    ap.add_argument("--episodes", type=int, default=80, help="start/goal pairs per variant (>= 80 for a claim)")
    ap.add_argument("--seed", type=int, default=1000, help="first episode seed")
    ap.add_argument("--budget", type=int, default=None, help="steps per episode (None: the profile's plan_budget)")
    ap.add_argument("--variants", nargs="+", default=["5:1:all"], help="horizon:receding:energy[:samples:elites:iters]")
    ap.add_argument("--repeat", choices=["profile", "true", "false"], default="profile",
                    help="CEM searches one action per block, repeated (profile: plan_repeat; swm: false)")
    ap.add_argument("--landscape", action="store_true",
                    help="also print energy_landscape: Spearman(energy, distance) and the mean energy per distance bin")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    J = profile().jepa
    variants = [parse_variant(v, J) for v in a.variants]
    meta = load_meta(a.checkpoint)
    model = ACWorldModel(ACConfig(**meta["config"]["model"]))
    model.load_state_dict(load_state(a.checkpoint)["model"])
    if a.landscape:
        land = energy_landscape(model, model.cfg.size)
        bins = [0, 15, 45, 90, 150, 250, 800]
        e, d = land["energy"], land["distance"]
        means = {f"{lo}-{hi} px": round(float(e[(d >= lo) & (d < hi)].mean()), 4)
                 for lo, hi in zip(bins, bins[1:], strict=False)}
        print(json.dumps({"landscape_spearman": round(float(land["spearman"]), 3), "mean_energy": means}), flush=True)
    rows = []
    for text, kw in zip(a.variants, variants, strict=True):
        t = time.time()
        r = evaluate_planning(model, a.episodes, a.budget or J.plan_budget, kw["horizon"], kw["samples"],
                              kw["elites"], kw["iterations"], model.cfg.size, seed=a.seed, progress=False,
                              goal="offset", goal_offset=J.goal_offset, receding=kw["receding"], energy=kw["energy"],
                              repeat=J.plan_repeat if a.repeat == "profile" else a.repeat == "true")
        row = {"variant": text, **{k: v for k, v in r.items() if k != "episodes"}, "seconds": time.time() - t}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{a.checkpoint}, {a.episodes} episodes from seed {a.seed}, repeat={a.repeat}\n")
    print("| H:receding:energy[:S:E:I] | success planner | random | end distance planner (px) | random | "
          "planner - random (px) | s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['plan_success']:.1%} ± {r['plan_success_se']:.1%} | "
              f"{r['random_success']:.1%} ± {r['random_success_se']:.1%} | "
              f"{r['plan_final_distance']:.0f} ± {r['plan_final_distance_se']:.0f} | "
              f"{r['random_final_distance']:.0f} ± {r['random_final_distance_se']:.0f} | "
              f"{r['distance_difference']:+.0f} ± {r['distance_difference_se']:.0f} | {r['seconds']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
