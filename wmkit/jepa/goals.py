"""CarRacing goal reaching: drive to where a goal image was seen (issue #14's goal-reaching task on the data issue's
driving stand-in, :func:`wmkit.data.driving_clips`).

The task, written here because no published benchmark fixes one for CarRacing (LeWM / DINO-WM / PLDM evaluate
goal images on Two-Rooms, PushT, mazes; V-JEPA 2-AC on robot arms), follows LeWM's "offset goal" protocol
(:func:`wmkit.jepa.plan.offset_goal`) on the recorded driving data:

* **episode** ``e``: CarRacing-v3 track seed ``seed + e``; the zoom-in animation is skipped (``skip_zoom`` zero
  actions, as :func:`wmkit.data.standins.record_driving` does), then the **data policy** (the road follower plus
  Ornstein-Uhlenbeck noise that recorded ``driving_clips``, :class:`DataPolicy`) drives ``warmup`` steps so that the
  car is moving: that is the start;
* **goal**: where the same data policy is ``offset`` steps later (50 Hz: offset 50 = 1 s); the goal image is the frame
  seen there (the 84 rows above the dashboard, resized to the model's size, as in the training clips);
* **success**: the car's hull comes within ``radius`` world units of the goal position at any step within ``budget``
  steps (CarRacing's track is 40 / 6 = 6.7 units wide);
* **baselines on the same episodes** (the start is replayed exactly: Box2D is deterministic for the same actions):
  the uniform random policy over the action box (steer in [-1, 1], gas and brake in [0, 1]) and the data policy
  with a fresh noise draw (a reference that knows the road);
* **planner**: an action-conditioned JEPA trained on the driving clips with the raw controls (steer, gas, brake) as
  actions, CEM over ``horizon`` blocks of ``action_block`` controls toward the goal image's target features
  (:meth:`wmkit.jepa.ac.ACWorldModel.energy`), replanning after ``receding`` blocks, as on Two-Rooms.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from wmkit.jepa.ac import ACConfig, ACWorldModel, cem
from wmkit.jepa.plan_compare import summarise
from wmkit.jepa.train import ACTrainConfig, lewm_config, to_video

__all__ = ["DataPolicy", "to_control", "frame_of", "GoalTask", "plan_drive", "evaluate_driving", "training_drives",
           "driving_ac_config"]

TRACK_WIDTH = 40 / 6  # gymnasium car_racing.py: TRACK_WIDTH = 40 / SCALE, SCALE = 6


class DataPolicy:
    """The driving stand-in's recording policy (``record_driving``): road follower steering + OU noise (theta 0.15,
    sigma 0.35, scaled by ``noise``; half of it on the gas), a per-episode cruising gas in [0.08, 0.2], and a brake of
    0.5 on 2 % of the steps."""

    def __init__(self, rng: np.random.Generator, noise: float = 0.3):
        from wmkit.episodes import road_follower

        self.follow, self.rng, self.noise = road_follower, rng, noise
        self.gas = float(rng.uniform(0.08, 0.2))
        self.ou = np.zeros(2)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.ou += 0.15 * -self.ou + 0.35 * self.rng.standard_normal(2)
        base = self.follow(obs, gas=self.gas)
        steer = float(np.clip(base[0] + self.noise * self.ou[0], -1, 1))
        gas = float(np.clip(base[1] + 0.5 * self.noise * self.ou[1], 0, 1))
        return np.array([steer, gas, float(self.rng.random() < 0.02) * 0.5], np.float32)


def to_control(a: torch.Tensor, brake: bool = True) -> torch.Tensor:
    """CEM's samples in [-1, 1]^3 -> CarRacing controls: steer as is, gas and brake clipped to [0, 1]. (..., 3)

    ``brake=False`` sets the brake to 0 (CEM then searches steering and gas only): CEM's first samples, N(0, 1)
    clipped, brake on half of the steps (mean 0.4), and 25 such steps move the car ~1 world unit."""
    ctrl = torch.cat([a[..., :1], a[..., 1:].clamp(0.0, 1.0)], -1)
    return ctrl if brake else torch.cat([ctrl[..., :2], torch.zeros_like(ctrl[..., 2:])], -1)


def frame_of(obs: np.ndarray, size: int) -> np.ndarray:
    """A 96 x 96 CarRacing observation -> the model's frame: rows above the dashboard, resized. (size, size, 3)"""
    from wmkit.data.dataset import resize_frames

    return resize_frames(obs[None, :84], size)[0]


class GoalTask:
    """Episodes of the task. ``start(e)`` resets the env to episode e's start and returns its observation; ``goal(e)``
    gives the goal position (2,) and goal frame (size, size, 3) (computed once per episode, cached)."""

    def __init__(self, size: int = 32, warmup: int = 50, offset: int = 50, budget: int = 100, radius: float = 3.0,
                 noise: float = 0.3, skip_zoom: int = 50, seed: int = 5000):
        if min(warmup, offset, budget) < 1 or radius <= 0:
            raise ValueError(f"GoalTask: need warmup, offset, budget >= 1 and radius > 0, got {warmup}, {offset}, "
                             f"{budget}, {radius}")
        from wmkit.carracing import make_car_racing

        self.size, self.warmup, self.offset, self.budget, self.radius = size, warmup, offset, budget, radius
        self.noise, self.skip_zoom, self.seed = noise, skip_zoom, seed
        self.env = make_car_racing(max_episode_steps=skip_zoom + warmup + offset + budget + 10)
        self._cache: dict[int, dict] = {}

    def position(self) -> np.ndarray:
        hull = self.env.unwrapped.car.hull
        return np.array([hull.position[0], hull.position[1]], np.float64)

    def _replay(self, e: int, actions: list[np.ndarray]) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed + e)
        for _ in range(self.skip_zoom):
            obs, *_ = self.env.step(np.zeros(3, np.float32))
        for a in actions:
            obs, *_ = self.env.step(a)
        return obs

    def goal(self, e: int) -> dict:
        if e not in self._cache:
            policy = DataPolicy(np.random.default_rng(self.seed + e), self.noise)
            obs, acts = self._replay(e, []), []
            for _ in range(self.warmup):
                acts.append(policy(obs))
                obs, *_ = self.env.step(acts[-1])
            start = self.position()
            for _ in range(self.offset):
                obs, *_ = self.env.step(policy(obs))
            self._cache[e] = {"warmup_actions": acts, "start_position": start, "position": self.position(),
                              "frame": frame_of(obs, self.size)}
        return self._cache[e]

    def start(self, e: int) -> np.ndarray:
        return self._replay(e, self.goal(e)["warmup_actions"])

    def run(self, obs: np.ndarray, act, e: int) -> dict:
        """Drive from the current state with ``act(obs, step) -> control (3,)`` for ``budget`` steps; success if the
        hull comes within ``radius`` of episode e's goal position."""
        goal = self.goal(e)["position"]
        dist = float(np.linalg.norm(self.position() - goal))
        best, success = dist, dist <= self.radius
        for t in range(self.budget):
            if success:
                break
            obs, _, term, trunc, _ = self.env.step(np.asarray(act(obs, t), np.float32))
            dist = float(np.linalg.norm(self.position() - goal))
            best, success = min(best, dist), dist <= self.radius
            if term or trunc:
                break
        return {"success": bool(success), "final_distance": dist, "min_distance": best}


@torch.no_grad()
def plan_drive(model: ACWorldModel, task: GoalTask, e: int, horizon: int, samples: int, elites: int, iterations: int,
               generator: torch.Generator, receding: int = 1, energy: str = "all", brake: bool = True) -> dict:
    """The AC-JEPA planner on episode e (MPC as :func:`wmkit.jepa.plan.plan_episode`, controls through
    :func:`to_control`)."""
    if not 1 <= receding <= horizon:
        raise ValueError(f"plan_drive: need 1 <= receding <= horizon, got {receding}, {horizon}")
    model.eval()
    blk, adim = model.cfg.action_block, model.cfg.action_dim
    goal = model.encode(to_video(task.goal(e)["frame"])[None, None], target=True)[:, 0]  # (1, N, D)
    state = {"queue": [], "mean": None}

    def act(obs, _t):
        if not state["queue"]:
            z0 = model.encode(to_video(frame_of(obs, task.size))[None, None])  # (1, 1, N, D)
            out = cem(lambda a: model.energy(z0, goal, to_control(a.unflatten(-1, (blk, adim)), brake).flatten(-2),
                                             energy),
                      horizon, blk * adim, samples=samples, elites=elites, iterations=iterations,
                      mean=state["mean"], generator=generator)
            plan = to_control(rearrange(out["plan"], "h (k a) -> (h k) a", k=blk), brake)  # (H*blk, A)
            state["queue"] = list(plan[:receding * blk].numpy())
            state["mean"] = torch.cat([out["plan"][receding:], torch.zeros(receding, blk * adim)])
        return state["queue"].pop(0)

    return task.run(task.start(e), act, e)


def evaluate_driving(model: ACWorldModel, task: GoalTask, episodes: int, horizon: int, samples: int, elites: int,
                     iterations: int, receding: int = 1, energy: str = "all", seed: int = 0,
                     progress: bool = True, brake: bool = True) -> dict:
    """Planner, uniform random policy and the data policy (fresh noise) on the same ``episodes`` starts and goals.
    Returns the summary of :func:`wmkit.jepa.plan_compare.summarise` (planner vs random) plus the data policy's
    success and distances and the start distances."""
    if episodes < 2:
        raise ValueError(f"evaluate_driving: need episodes >= 2, got {episodes}")
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = []
    for e in tqdm(range(episodes), desc="driving goals", disable=not progress):
        info = task.goal(e)
        p = plan_drive(model, task, e, horizon, samples, elites, iterations, g, receding, energy, brake)
        r = task.run(task.start(e), lambda _o, _t: np.array([rng.uniform(-1, 1), rng.uniform(0, 1),
                                                             rng.uniform(0, 1)]), e)
        follower = DataPolicy(np.random.default_rng(10_000_019 + seed + e), task.noise)
        d = task.run(task.start(e), lambda o, _t, f=follower: f(o), e)
        rows.append({"episode": e, "start_distance": float(np.linalg.norm(info["start_position"] - info["position"])),
                     "plan_success": p["success"], "plan_final_distance": p["final_distance"],
                     "plan_min_distance": p["min_distance"], "random_success": r["success"],
                     "random_final_distance": r["final_distance"], "random_min_distance": r["min_distance"],
                     "data_policy_success": d["success"], "data_policy_final_distance": d["final_distance"],
                     "data_policy_min_distance": d["min_distance"]})
    out = summarise(rows)
    p = out["data_policy_success"]
    out["data_policy_success_se"] = math.sqrt(p * (1 - p) / episodes)
    return out


def training_drives(clips: int, steps: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The planner's training data: ``clips`` recorded drives (:func:`wmkit.data.driving_clips`, seed 0) of ``steps``
    frames at ``size`` px, cut to the shortest: frames uint8 (E, T, S, S, 3) and the raw controls (steer, gas,
    brake) float32 (E, T-1, 3) as actions."""
    from wmkit.data import driving_clips

    cl = driving_clips(episodes=clips, steps=steps, seed=0, size=size, progress=False)
    T = min(len(c.frames) for c in cl)
    frames = np.stack([c.frames[:T] for c in cl])  # (E, T, S, S, 3)
    actions = np.stack([c.extras["control"][:T - 1] for c in cl]).astype(np.float32)  # (E, T-1, 3)
    return frames, actions


def driving_ac_config(J, recipe: str = "ema", steps: int | None = None) -> ACTrainConfig:
    """The AC-JEPA trained on the drives with the profile's sizes ``J`` (``wmkit.profile().jepa``): ``"ema"`` =
    the Two-Rooms AC recipe (L1, EMA target, ``J.ac_steps``), ``"lewm"`` = LeWM's (``J.lewm_steps``); 3-d actions."""
    if recipe == "ema":
        m = ACConfig(**{**J.ac_model, "size": J.tr_size}, regulariser="ema", loss="l1", normalize=True,
                     sigreg_proj=J.sigreg_proj, action_dim=3, action_block=J.action_block)
        steps = steps or J.ac_steps
        return ACTrainConfig(model=m, steps=steps, batch=J.ac_batch, length=J.ac_length, log_every=max(1, steps // 10))
    if recipe == "lewm":
        cfg = lewm_config({**J.ac_model, "size": J.tr_size}, J.action_block, steps or J.lewm_steps,
                          batch=J.lewm_batch, pool=J.lewm_pool, sigreg_proj=J.lewm_proj, lr_schedule=J.lewm_schedule)
        cfg.model = replace(cfg.model, action_dim=3)
        return cfg
    raise ValueError(f"recipe: expected 'ema' or 'lewm', got {recipe!r}")
