"""Goal-reaching by model-predictive control in feature space (V-JEPA 2-AC section 3.3; LeWM ``eval.py``).

Every step: encode the current frame and the goal image, run CEM over the next ``horizon`` actions to minimise the
energy |P^H(z_t, a) - z_goal| (:meth:`wmkit.jepa.ac.ACWorldModel.energy`), execute the first action, repeat
(receding horizon; the previous plan, shifted by one step, is the next CEM's initial mean). The baseline is the
uniform random policy over the same action box. Success is the environment's own test (Two-Rooms: >= 50 % overlap
with the goal disc) within ``budget`` steps (the published Two-Rooms budget is 50).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from wmkit.jepa.ac import ACWorldModel, cem
from wmkit.jepa.train import to_video
from wmkit.jepa.tworooms import TwoRooms

__all__ = ["plan_episode", "random_episode", "evaluate_planning"]


@torch.no_grad()
def plan_episode(model: ACWorldModel, env: TwoRooms, budget: int, horizon: int, samples: int, elites: int,
                 iterations: int, generator: torch.Generator, keep_frames: bool = False) -> dict:
    """One MPC episode from the env's current state; returns success, steps, final distance (and frames)."""
    model.eval()
    # the predictor is trained to output *target* features (EMA encoder, if any): compare with the goal there
    goal = model.encode(to_video(env.goal_image())[None, None], target=True)[:, 0]  # (1, N, D)
    obs = env.render()
    frames, dists = [obs], [env.info()["distance"]]
    mean = None
    success, steps = False, 0
    for steps in range(1, budget + 1):  # noqa: B007 - steps is read after the loop
        z0 = model.encode(to_video(obs)[None, None])  # (1, 1, N, D)
        out = cem(lambda a, z0=z0: model.energy(z0, goal, a), horizon, 2, samples=samples, elites=elites,
                  iterations=iterations, mean=mean, generator=generator)
        plan = out["plan"]  # (H, 2)
        obs, _, success, _, info = env.step(plan[0].numpy())
        mean = torch.cat([plan[1:], torch.zeros(1, 2)])  # warm start: the rest of the plan, then zeros
        dists.append(info["distance"])
        if keep_frames:
            frames.append(obs)
        if success:
            break
    out = {"success": bool(success), "steps": steps, "final_distance": dists[-1], "distances": np.array(dists)}
    if keep_frames:
        out["frames"] = np.stack(frames)
    return out


def random_episode(env: TwoRooms, budget: int, rng: np.random.Generator) -> dict:
    """The baseline: uniform random actions in [-1, 1]^2."""
    success, steps, info = False, 0, env.info()
    for steps in range(1, budget + 1):  # noqa: B007
        _, _, success, _, info = env.step(rng.uniform(-1, 1, size=2))
        if success:
            break
    return {"success": bool(success), "steps": steps, "final_distance": info["distance"]}


def evaluate_planning(model: ACWorldModel, episodes: int, budget: int, horizon: int, samples: int, elites: int,
                      iterations: int, render_size: int, seed: int = 1000, progress: bool = True,
                      same_room: bool = False) -> dict:
    """Planner vs random policy on the same ``episodes`` start/goal/door configurations (seeds seed..seed+E-1)."""
    if episodes < 1 or budget < 1:
        raise ValueError(f"evaluate_planning: episodes and budget must be >= 1, got {episodes}, {budget}")
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = TwoRooms(render_size=render_size, max_energy=budget)
    rows = []
    for e in tqdm(range(episodes), desc="planning", disable=not progress):
        env.reset(seed=seed + e, same_room=same_room)
        start = env.info()["distance"]
        p = plan_episode(model, env, budget, horizon, samples, elites, iterations, g)
        env.reset(seed=seed + e, same_room=same_room)
        r = random_episode(env, budget, rng)
        rows.append({"episode": e, "start_distance": start, "plan_success": p["success"],
                     "plan_final_distance": p["final_distance"], "random_success": r["success"],
                     "random_final_distance": r["final_distance"]})
    summary = {k: float(np.mean([row[k] for row in rows])) for k in rows[0] if k != "episode"}
    return {"episodes": rows, **summary}
