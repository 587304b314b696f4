"""Goal-reaching by model-predictive control in feature space (V-JEPA 2-AC section 3.3; LeWM ``eval.py``).

Every replanning round: encode the current frame and the goal image, run CEM over the next ``horizon`` predictor
steps (each a block of ``action_block`` environment actions) to minimise the energy |P^H(z_t, a) - z_goal|
(:meth:`wmkit.jepa.ac.ACWorldModel.energy`), execute the first ``receding`` blocks, repeat; the rest of the plan,
shifted, is the next CEM's initial mean. The baseline is the uniform random policy over the same action box
(stable-worldmodel's ``RandomPolicy``). Success is the environment's own test (Two-Rooms: >= 50 % overlap with the
goal disc) within ``budget`` environment steps.

Goals (``goal=``):

* ``"offset"`` -- the protocol of LeWM / stable-worldmodel (``config/eval/tworoom.yaml``: ``goal_offset_steps`` 25,
  ``eval_budget`` 50, ``horizon`` 5, ``receding_horizon`` 5, ``action_block`` 5): the goal is where the data set's
  weak expert (:class:`~wmkit.jepa.tworooms.WeakExpert`) stands ``goal_offset`` steps after the start. swm replays
  recorded expert episodes; here the expert is run from the start state, which is the same distribution.
* ``"other_room"`` -- the environment's own target (anywhere in the other room), a harder task than the
  published numbers measure (kept because the first version of this page used it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from wmkit.jepa.ac import ACWorldModel, cem
from wmkit.jepa.train import to_video
from wmkit.jepa.tworooms import TwoRooms, WeakExpert
from wmkit.utils import spearman

__all__ = ["offset_goal", "plan_episode", "random_episode", "evaluate_planning", "energy_landscape", "energy_ranking"]


def offset_goal(env: TwoRooms, offset: int, rng: np.random.Generator) -> np.ndarray:
    """Where the weak expert (heading for the env's own target) stands ``offset`` steps from the current state; the
    env is left as it was (agent, energy)."""
    if offset < 1:
        raise ValueError(f"offset_goal: offset must be >= 1, got {offset}")
    agent, energy = env.agent.copy(), env.energy
    expert = WeakExpert(env, rng=rng)
    for _ in range(offset):
        env.step(expert(env.goal))
    reached = env.agent.copy()
    env.agent, env.energy = agent, energy
    return reached


@torch.no_grad()
def plan_episode(model: ACWorldModel, env: TwoRooms, budget: int, horizon: int, samples: int, elites: int,
                 iterations: int, generator: torch.Generator, receding: int = 1, keep_frames: bool = False,
                 energy: str = "last", energy_base: float = 1.0, repeat: bool = False) -> dict:
    """One MPC episode from the env's current state; returns success, steps, final distance (and frames).

    ``repeat=True``: CEM searches one action per block, repeated ``action_block`` times (an H x A search instead of
    swm's H x (block x A)); the futures it samples then travel ~sqrt(block) times farther, and reach goals that the
    patch-feature energy only sees from a few tens of pixels away."""
    if not 1 <= receding <= horizon:
        raise ValueError(f"plan_episode: need 1 <= receding <= horizon, got receding={receding}, horizon={horizon}")
    model.eval()
    blk, adim = model.cfg.action_block, model.cfg.action_dim
    # the predictor is trained to output *target* features (EMA encoder, if any): compare with the goal there
    goal = model.encode(to_video(env.goal_image())[None, None], target=True)[:, 0]  # (1, N, D)
    obs = env.render()
    frames, dists = [obs], [env.info()["distance"]]
    mean, success, steps = None, False, 0
    while steps < budget and not success:
        z0 = model.encode(to_video(obs)[None, None])  # (1, 1, N, D)
        width = adim if repeat else blk * adim  # what CEM searches per block

        def blocks(a, reps=blk if repeat else 1):  # (S, H, width) -> (S, H, blk * A)
            return a if reps == 1 else a.repeat(1, 1, reps)  # (a_x, a_y) k times, in the block's "(k a)" order

        out = cem(lambda a, z0=z0: model.energy(z0, goal, blocks(a), energy, energy_base), horizon, width,
                  samples=samples, elites=elites, iterations=iterations, mean=mean, generator=generator)
        plan = rearrange(blocks(out["plan"][None])[0], "h (k a) -> h k a", k=blk)  # (H, blk, A)
        for action in plan[:receding].reshape(-1, adim):  # receding * blk environment steps
            obs, _, success, _, info = env.step(action.numpy())
            steps += 1
            dists.append(info["distance"])
            if keep_frames:
                frames.append(obs)
            if success or steps >= budget:
                break
        # warm start: the unexecuted rest of the plan, then zeros
        mean = torch.cat([out["plan"][receding:], torch.zeros(receding, width)])
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


def _reset(env: TwoRooms, seed: int, goal: str, goal_offset: int) -> None:
    env.reset(seed=seed)
    if goal == "offset":
        env.goal = offset_goal(env, goal_offset, np.random.default_rng(seed))


# [eval]
def evaluate_planning(model: ACWorldModel, episodes: int, budget: int, horizon: int, samples: int, elites: int,
                      iterations: int, render_size: int, seed: int = 1000, progress: bool = True,
                      goal: str = "offset", goal_offset: int = 25, receding: int | None = None,
                      energy: str = "last", energy_base: float = 1.0, repeat: bool = False) -> dict:
    """Planner vs random policy on the same ``episodes`` start/goal/door configurations (seeds seed..seed+E-1).

    Returns the per-episode rows and, over episodes, the success rates with their standard errors
    (sqrt(p (1 - p) / E)), the paired difference planner - random with its standard error, the mean final distances
    with their standard errors and their paired difference ``distance_difference`` (< 0: the planner ends closer)."""
    if episodes < 1 or budget < 1:
        raise ValueError(f"evaluate_planning: episodes and budget must be >= 1, got {episodes}, {budget}")
    if goal not in ("offset", "other_room"):
        raise ValueError(f"evaluate_planning: goal must be 'offset' or 'other_room', got {goal!r}")
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = TwoRooms(render_size=render_size, max_energy=10 * budget)
    rows = []
    for e in tqdm(range(episodes), desc="planning", disable=not progress):
        _reset(env, seed + e, goal, goal_offset)
        start = env.info()["distance"]
        p = plan_episode(model, env, budget, horizon, samples, elites, iterations, g,
                         receding=horizon if receding is None else receding, energy=energy, energy_base=energy_base,
                         repeat=repeat)
        _reset(env, seed + e, goal, goal_offset)
        r = random_episode(env, budget, rng)
        rows.append({"episode": e, "start_distance": start, "plan_success": p["success"],
                     "plan_final_distance": p["final_distance"], "random_success": r["success"],
                     "random_final_distance": r["final_distance"]})
    summary = {k: float(np.mean([row[k] for row in rows])) for k in rows[0] if k != "episode"}
    for who in ("plan", "random"):
        p = summary[f"{who}_success"]
        summary[f"{who}_success_se"] = math.sqrt(p * (1 - p) / episodes)
    diff = np.array([float(r["plan_success"]) - float(r["random_success"]) for r in rows])
    summary["difference"] = float(diff.mean())
    summary["difference_se"] = float(diff.std(ddof=1) / math.sqrt(episodes)) if episodes > 1 else float("nan")
    # final distances: standard errors over episodes and the paired difference planner - random (< 0: closer)
    def se(v):
        return float(np.std(v, ddof=1) / math.sqrt(episodes)) if episodes > 1 else float("nan")

    for who in ("plan", "random"):
        summary[f"{who}_final_distance_se"] = se([r[f"{who}_final_distance"] for r in rows])
    gap = [r["plan_final_distance"] - r["random_final_distance"] for r in rows]
    summary["distance_difference"], summary["distance_difference_se"] = float(np.mean(gap)), se(gap)
    return {"episodes": rows, **summary}
# [/eval]


@torch.no_grad()
def energy_landscape(model: ACWorldModel, render_size: int, goal: tuple[float, float] = (120.0, 256.0),
                     door: tuple[float, float] = (200.0, 300.0), step: float = 16.0) -> dict[str, np.ndarray]:
    """The planning energy |z(x) - z_goal| (target features, as the planner compares them) for the agent placed on
    a grid over the whole arena, against the true distance to the goal. Returns ``pos`` (M, 2), ``distance`` (M,),
    ``energy`` (M,) and the Spearman rank correlation ``spearman`` between them (1 = the energy orders positions
    exactly as the distance does)."""
    model.eval()
    env = TwoRooms(render_size=render_size)
    env.reset(agent=np.array(goal), goal=np.array(goal), door=door)
    xs = np.arange(30.0, 490.0, step)
    pos = np.array([(x, y) for x in xs for y in xs if not env.collides(np.array([x, y]))])  # (M, 2)
    zg = model.encode(to_video(env.render(agent=np.array(goal)))[None, None], target=True)[:, 0]  # (1, N, D)
    frames = np.stack([env.render(agent=p) for p in pos])  # (M, S, S, 3)
    z = torch.cat([model.encode(to_video(frames[i:i + 256])[:, None], target=True)[:, 0]
                   for i in range(0, len(frames), 256)])  # (M, N, D)
    d = (z - zg).abs() if model.cfg.loss == "l1" else (z - zg).square()
    energy = d.flatten(1).mean(1).numpy()
    dist = np.linalg.norm(pos - np.array(goal), axis=1)
    return {"pos": pos, "distance": dist, "energy": energy, "spearman": spearman(energy, dist)}


@torch.no_grad()
def energy_ranking(model: ACWorldModel, render_size: int, episodes: int = 10, futures: int = 16,
                   goal_offset: int = 25, seed: int = 5000) -> dict:
    """Does the planning energy rank *futures* the way the true distance does, within one episode (what CEM needs)?

    For each of ``episodes`` start/goal pairs of the evaluation protocol (offset goals), ``futures`` random action
    sequences of ``horizon = goal_offset / action_block`` blocks are both executed in the environment and rolled out
    by the predictor. Per episode, the Spearman rank correlation of the true final distance to the goal with (a) the
    energy of the **predicted** final features |P^H(z_0, a) - z_goal| (what the planner minimises) and (b) the energy
    of the **encoded real** final frame |E(x_H) - z_goal| (the best a perfect predictor could do with these
    features). Returns the per-episode values (0 where all futures get one energy or end equally far: an energy
    that orders nothing scores as no ranking) and their means with standard errors; also the predictor's error
    against the real features after 1 and H blocks and that of copying z_0 (``copy_error``)."""
    if episodes < 2 or futures < 3:
        raise ValueError(f"energy_ranking: need episodes >= 2 and futures >= 3, got {episodes}, {futures}")
    model.eval()
    blk, adim = model.cfg.action_block, model.cfg.action_dim
    H = max(1, goal_offset // blk)
    env = TwoRooms(render_size=render_size, max_energy=10 * H * blk)
    rng = np.random.default_rng(seed)
    dist = lambda a, b: ((a - b).abs() if model.cfg.loss == "l1" else (a - b).square()).flatten(-2).mean(-1)  # noqa
    pred_rho, real_rho, err1, errH, copy = [], [], [], [], []
    for e in range(episodes):
        _reset(env, seed + e, "offset", goal_offset)
        start = env.agent.copy()
        zg = model.encode(to_video(env.goal_image())[None, None], target=True)[:, 0]  # (1, N, D)
        z0 = model.encode(to_video(env.render())[None, None])  # (1, 1, N, D)
        acts = rng.uniform(-1, 1, size=(futures, H * blk, adim)).astype(np.float32)  # (F, H*blk, A)
        pred = model.rollout(z0.expand(futures, -1, -1, -1),
                             rearrange(torch.from_numpy(acts), "f (h k) a -> f h (k a)", k=blk))  # (F, H, N, D)
        frames, final = [], []
        for f in range(futures):
            env.agent, env.energy = start.copy(), env.max_energy
            for t, a in enumerate(acts[f]):
                obs, *_ = env.step(a)
                if (t + 1) % blk == 0:
                    frames.append(obs)
            final.append(float(np.linalg.norm(env.agent - env.goal)))
        real = model.encode(to_video(np.stack(frames))[:, None], target=True)[:, 0]  # (F*H, N, D)
        real = rearrange(real, "(f h) n d -> f h n d", f=futures)  # (F, H, N, D)
        pred_rho.append(np.nan_to_num(spearman(dist(pred[:, -1], zg).numpy(), final)))  # NaN (nothing to rank) -> 0
        real_rho.append(np.nan_to_num(spearman(dist(real[:, -1], zg).numpy(), final)))
        err1.append(float(dist(pred[:, 0], real[:, 0]).mean()))
        errH.append(float(dist(pred[:, -1], real[:, -1]).mean()))
        target0 = model.encode(to_video(env.render(agent=start))[None, None], target=True)[0, 0]  # (N, D)
        copy.append(float(dist(target0[None], real[:, -1]).mean()))
    se = lambda v: float(np.std(v, ddof=1) / math.sqrt(len(v)))  # noqa: E731
    return {"predicted": np.array(pred_rho), "real": np.array(real_rho),
            "predicted_mean": float(np.mean(pred_rho)), "predicted_se": se(pred_rho),
            "real_mean": float(np.mean(real_rho)), "real_se": se(real_rho),
            "error_1": float(np.mean(err1)), "error_H": float(np.mean(errH)), "copy_error": float(np.mean(copy)),
            "horizon": H}
