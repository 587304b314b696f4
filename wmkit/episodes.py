"""Record one real episode from a gymnasium environment (used by the tour and by tests).

``record_episode("CarRacing-v3", seed=0, steps=200)`` returns an :class:`Episode` with the frames the
environment rendered, the actions taken, the rewards and the termination flags -- the raw material
every later chapter compresses, predicts and dreams. The default CarRacing policy is a tiny
hand-written road follower (:func:`road_follower`), so the tour shows a car that actually drives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class Episode:
    """One recorded episode. ``frames[t]`` is the observation *before* ``actions[t]`` was taken."""

    env_id: str
    seed: int
    frames: np.ndarray  # (T+1, H, W, 3) uint8
    actions: np.ndarray  # (T, A) float32 or (T,) int64
    rewards: np.ndarray  # (T,) float32
    terminated: bool
    truncated: bool

    def __len__(self) -> int:
        return len(self.rewards)


def road_follower(obs: np.ndarray, gas: float = 0.12) -> np.ndarray:
    """Steer CarRacing's car toward the middle of the grey road a little ahead of it.

    The 96x96 frame shows the car at rows ~66-77, columns ~46-49; row 56 is ahead of it. Road pixels
    are grey (R, G, B nearly equal, 90-120); grass is green. Returns [steer, gas, brake].
    """
    if obs.shape != (96, 96, 3) or obs.dtype != np.uint8:
        raise ValueError(f"road_follower expects a (96, 96, 3) uint8 CarRacing frame, got {obs.shape} {obs.dtype}")
    row = obs[56].astype(np.int16)  # (96, 3)
    grey = (np.abs(row[:, 0] - row[:, 1]) < 12) & (np.abs(row[:, 1] - row[:, 2]) < 12) & (row[:, 0] > 80)
    cols = np.flatnonzero(grey)
    offset = (cols.mean() - 48.0) / 48.0 if cols.size else 0.0
    steer = float(np.clip(2.5 * offset, -1.0, 1.0))
    return np.array([steer, gas * (1.0 - 0.5 * abs(steer)), 0.0], dtype=np.float32)


def record_episode(env_id: str = "CarRacing-v3", seed: int = 0, steps: int = 200,
                   policy: Callable[[np.ndarray], np.ndarray] | None = None,
                   skip_zoom: int = 50) -> Episode:
    """Run ``policy`` (default: :func:`road_follower` for CarRacing, random otherwise) for ``steps``.

    ``skip_zoom`` CarRacing steps are taken with a zero action first and not recorded: the episode
    starts with a zoom-in animation that carries no control information.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if env_id == "CarRacing-v3":
        from wmkit.carracing import make_car_racing
        env = make_car_racing()  # the same frames, drawn faster (WMKIT_CARRACING=official for gymnasium's)
    else:
        env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        is_car = env_id.startswith("CarRacing")
        if is_car:
            for _ in range(skip_zoom):
                obs, *_ = env.step(np.zeros(3, dtype=np.float32))
        if policy is None:
            policy = road_follower if is_car else (lambda _o: env.action_space.sample())
        frames, actions, rewards = [obs], [], []
        terminated = truncated = False
        for _ in range(steps):
            a = policy(obs)
            obs, r, terminated, truncated, _ = env.step(a)
            frames.append(obs)
            actions.append(a)
            rewards.append(r)
            if terminated or truncated:
                break
    finally:
        env.close()
    return Episode(env_id=env_id, seed=seed, frames=np.stack(frames).astype(np.uint8),
                   actions=np.asarray(actions), rewards=np.asarray(rewards, dtype=np.float32),
                   terminated=bool(terminated), truncated=bool(truncated))
