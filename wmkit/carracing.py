"""CarRacing-v3 with the same pixels at about twice the speed: the road drawn by numpy instead of a Python loop.

Every stage-1 phase that touches the real game (collecting rollouts, CMA-ES in the real environment, evaluating
a controller) spends most of its time in ``CarRacing._render_road``: on every step gymnasium rotates, scales
and bounds-checks the ~1,200 grass and road polygons one vertex at a time in Python (``pygame.math.Vector2``
per vertex, 14 ms of a 19 ms step on this CPU), although only a few dozen of them are on screen.

:class:`FastCarRacing` overrides only that method. It transforms all polygons in one numpy operation with the
arithmetic ``Vector2.rotate_rad`` performs (pygame-ce ``_vector2_rotate_helper``: the angle reduced to
[0, 2 pi), exact rotations at multiples of 90 degrees within 1e-6, else ``cos * x - sin * y``), applies the same
visibility rule, and hands the visible polygons, in the same order and as the same Python floats, to the same
``pygame.gfxdraw`` calls. Observations are therefore byte-identical to gymnasium's CarRacing-v3
(``tests/test_carracing.py`` compares full episodes); physics, rewards and termination are untouched.

    make_car_racing(max_episode_steps=300)             # the fast renderer (default)
    make_car_racing(fast=False)                        # gymnasium's own CarRacing-v3, for comparison
    WMKIT_CARRACING=official make book                 # every call site (worker processes too) uses gymnasium's
    wmkit bench carracing                              # steps/s of both, measured in one run
"""
from __future__ import annotations

import math
import os
import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d import car_racing as _cr

OFFICIAL_ID = "CarRacing-v3"
FAST_ID = "wmkit/CarRacing-v3"
_EPS = 1e-6  # pygame's Vector2.epsilon (VECTOR_EPSILON)


def rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (..., 2) points by ``angle`` radians exactly as ``pygame.math.Vector2.rotate_rad`` does."""
    a = math.fmod(angle, 2 * math.pi)
    if a < 0:
        a += 2 * math.pi
    x, y = xy[..., 0], xy[..., 1]
    if math.fmod(a + _EPS, math.pi / 2) < 2 * _EPS:  # 0, 90, 180, 270 (or 360) degrees: exact
        quarter = int((a + _EPS) / (math.pi / 2)) % 4
        return np.stack([(x, y), (-y, x), (-x, -y), (y, -x)][quarter], -1)
    c, s = math.cos(a), math.sin(a)
    return np.stack([c * x - s * y, s * x + c * y], -1)


class FastCarRacing(_cr.CarRacing):
    """gymnasium's CarRacing with ``_render_road`` vectorised (see the module docstring); nothing else changes."""

    _cache_src: list | None = None  # the road_poly list the cache was built from (a reference, not an id)

    def _polygons(self) -> np.ndarray:
        """All clipped polygons (grass then road) as one (P, 4, 2) array, rebuilt when the track changes."""
        if self._cache_src is not self.road_poly or self._cache_len != len(self.road_poly):
            g = _cr.GRASS_DIM
            grass = [[(g * x + g, g * y), (g * x, g * y), (g * x, g * y + g), (g * x + g, g * y + g)]
                     for x in range(-20, 20, 2) for y in range(-20, 20, 2)]
            road = [[(p[0], p[1]) for p in poly] for poly, _ in self.road_poly]
            self._poly = np.asarray(grass + road, np.float64)                  # (P, 4, 2) world coordinates
            self._n_grass = len(grass)
            self._cache_src, self._cache_len = self.road_poly, len(self.road_poly)
        return self._poly

    def _render_road(self, zoom, translation, angle):
        from pygame import gfxdraw

        bounds = _cr.PLAYFIELD
        field = [(bounds, bounds), (bounds, -bounds), (-bounds, -bounds), (-bounds, bounds)]
        self._draw_colored_polygon(self.surf, field, self.bg_color, zoom, translation, angle, clip=False)

        poly = self._polygons()
        screen = rotate(poly, angle)                                           # (P, 4, 2)
        screen = np.stack([screen[..., 0] * zoom + translation[0], screen[..., 1] * zoom + translation[1]], -1)
        m = _cr.MAX_SHAPE_DIM
        inside = ((screen[..., 0] >= -m) & (screen[..., 0] <= _cr.WINDOW_W + m)
                  & (screen[..., 1] >= -m) & (screen[..., 1] <= _cr.WINDOW_H + m))  # (P, 4) per vertex
        grass_color = self.grass_color
        for i in np.flatnonzero(inside.any(1)):                                # same order as gymnasium
            pts = [tuple(v) for v in screen[i].tolist()]
            # a road tile's colour is read now: the game recolours a tile when the car first touches it
            color = grass_color if i < self._n_grass else [int(c) for c in self.road_poly[i - self._n_grass][1]]
            gfxdraw.aapolygon(self.surf, pts, color)
            gfxdraw.filled_polygon(self.surf, pts, color)


def _register() -> None:
    if FAST_ID not in gym.registry:
        spec = gym.spec(OFFICIAL_ID)
        gym.register(id=FAST_ID, entry_point="wmkit.carracing:FastCarRacing",
                     max_episode_steps=spec.max_episode_steps, reward_threshold=spec.reward_threshold)


_register()


def make_car_racing(fast: bool | None = None, **kwargs) -> gym.Env:
    """``gym.make`` of :class:`FastCarRacing` or of gymnasium's CarRacing-v3, with the same wrappers.

    ``fast=None`` reads the environment variable ``WMKIT_CARRACING`` (``fast``, the default, or ``official``), so
    one switch covers every caller, including the worker processes of a vector env.
    """
    if fast is None:
        choice = os.environ.get("WMKIT_CARRACING", "fast")
        if choice not in ("fast", "official"):
            raise ValueError(f"WMKIT_CARRACING must be 'fast' or 'official', got {choice!r}")
        fast = choice == "fast"
    return gym.make(FAST_ID if fast else OFFICIAL_ID, **kwargs)


def bench(argv: list[str]) -> None:
    """``wmkit bench carracing [--steps N] [--rounds R]``: ms per step of both renderers, timed round-robin
    on the same tracks and actions, their ratio, and whether every observation was byte-identical."""
    import argparse
    import statistics

    from wmkit.bench import emit

    p = argparse.ArgumentParser(prog="wmkit bench carracing")
    p.add_argument("--steps", type=int, default=300, help="steps per episode (after the 50-step zoom-in)")
    p.add_argument("--rounds", type=int, default=3, help="episodes (tracks 0..R-1) per renderer")
    args = p.parse_args(argv)
    ms: dict[str, list[float]] = {"official": [], "fast": []}
    identical = True
    for seed in range(args.rounds):
        envs = {k: make_car_racing(fast=k == "fast", max_episode_steps=args.steps + 50) for k in ms}
        obs = {k: e.reset(seed=seed)[0] for k, e in envs.items()}
        rng = np.random.default_rng(seed)
        for t in range(args.steps + 50):
            a = np.zeros(3, np.float32) if t < 50 else rng.uniform([-1, 0, 0], [1, 1, 0.2]).astype(np.float32)
            for k, e in envs.items():
                t0 = time.perf_counter()
                obs[k], *_ = e.step(a)
                if t >= 50:
                    ms[k].append((time.perf_counter() - t0) * 1e3)
            identical &= bool(np.array_equal(obs["official"], obs["fast"]))
        for e in envs.values():
            e.close()
    med = {k: statistics.median(v) for k, v in ms.items()}
    for k, v in med.items():
        emit("carracing", f"step_{k}", v, "ms/step", steps=len(ms[k]))
    emit("carracing", "speedup_fast_over_official", med["official"] / med["fast"], "x", identical_frames=identical)
