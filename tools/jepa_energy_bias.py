"""Does an AC model's predicted planning energy prefer fast futures, whatever their direction?

For ``--episodes`` starts and offset goals of the planning protocol (seeds seed..), ``--futures`` random 25-step action
sequences with a random speed each (uniform actions scaled by U(0, 1)) are rolled out by the predictor; per episode
the Spearman correlation of the predicted last-frame energy with the mean action norm and with the net displacement
is printed (mean +- s.e. over episodes; negative: the energy rewards moving fast / far, not toward the goal).

    WMKIT_PROFILE=cpu OMP_NUM_THREADS=1 python tools/jepa_energy_bias.py --checkpoint runs/jepa/ac_ema/ckpt/latest
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
from einops import rearrange

from wmkit.checkpoint import load_meta, load_state
from wmkit.jepa.ac import ACConfig, ACWorldModel
from wmkit.jepa.plan import offset_goal
from wmkit.jepa.train import to_video
from wmkit.jepa.tworooms import TwoRooms
from wmkit.profiles import profile
from wmkit.utils import spearman


@torch.no_grad()
def energy_bias(model: ACWorldModel, render_size: int, episodes: int = 10, futures: int = 64, goal_offset: int = 25,
                seed: int = 1000) -> dict:
    """Per-episode Spearman(predicted energy, mean |a|) and Spearman(predicted energy, |sum a|), with means and s.e."""
    if episodes < 2 or futures < 3:
        raise ValueError(f"energy_bias: need episodes >= 2 and futures >= 3, got {episodes}, {futures}")
    model.eval()
    blk = model.cfg.action_block
    steps = max(1, goal_offset // blk) * blk
    env = TwoRooms(render_size=render_size, max_energy=10 * steps)
    rng = np.random.default_rng(seed)
    speed, disp = [], []
    for e in range(episodes):
        env.reset(seed=seed + e)
        env.goal = offset_goal(env, goal_offset, np.random.default_rng(seed + e))
        zg = model.encode(to_video(env.goal_image())[None, None], target=True)[:, 0]  # (1, N, D)
        z0 = model.encode(to_video(env.render())[None, None])  # (1, 1, N, D)
        a = rng.uniform(-1, 1, size=(futures, steps, 2)) * rng.uniform(0, 1, size=(futures, 1, 1))
        a = torch.from_numpy(a.astype(np.float32))  # (F, steps, 2)
        energy = model.energy(z0, zg, rearrange(a, "f (h k) x -> f h (k x)", k=blk), "last").numpy()  # (F,)
        speed.append(np.nan_to_num(spearman(energy, a.norm(dim=-1).mean(1).numpy())))
        disp.append(np.nan_to_num(spearman(energy, a.sum(1).norm(dim=-1).numpy())))
    se = lambda v: float(np.std(v, ddof=1) / math.sqrt(len(v)))  # noqa: E731
    return {"speed": float(np.mean(speed)), "speed_se": se(speed), "displacement": float(np.mean(disp)),
            "displacement_se": se(disp)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="an AC checkpoint of `wmkit jepa train-ac`")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--futures", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1000)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    J = profile().jepa
    model = ACWorldModel(ACConfig(**load_meta(a.checkpoint)["config"]["model"]))
    model.load_state_dict(load_state(a.checkpoint)["model"])
    r = energy_bias(model, model.cfg.size, a.episodes, a.futures, J.goal_offset, a.seed)
    print(json.dumps(r))
    return r


if __name__ == "__main__":
    main()
