"""Two-Rooms: a point agent must pass the door of a wall to reach a goal in the other room.

The navigation task of PLDM (Sobal et al. 2025), EB-JEPA and stable-worldmodel (``swm/TwoRoom``; LeWM reports
87 %, PLDM 97 %, DINO-WM 100 % success at a 50-step budget there). ``stable-worldmodel`` itself cannot be a
dependency here (``pip install --dry-run stable-worldmodel`` pulls torch 2.14 and CUDA wheels next to our torch),
so this module re-implements its specification (the pymunk version, now ``envs/two_room/legacy_env.py``; the current
``env.py`` is a torch re-write at a 64-px reference scale) without pymunk:

* a 512 x 512 arena (border 9 px, inner size 494), a vertical wall at x = ceil(494 / 2) = 247 of thickness 19,
  one door: by default swm's init value (75 px at y = 256..331; swm varies only the agent and target positions
  unless asked), with ``vary_door=True`` a random size 38..99 (at least 2.5 agent radii) at a random position;
* agent and goal are discs of radius 15; the agent starts anywhere free, the goal anywhere free in the *other* room;
* action: 2-D velocity in Box(-1, 1); its norm is clipped to 2.45; one control step lasts 0.1 s (10 physics steps of
  0.01 s) at speed 10, i.e. moves the agent by ``10 * action`` pixels, stopped by walls;
* success: the agent disc covers >= 50 % of the goal disc (the same radius, so "either covers half the other");
  an episode has 100 steps of energy (``max_energy``); reward +1 on success, -0.01 per step;
* observation: an RGB image (``render_size``), white background, wall (115, 127, 145), border (180, 189, 204),
  agent red; the goal image is the scene rendered with the agent standing on the goal.

Differences (see the book's table): walls stop the agent axis by axis (a slide) instead of pymunk's contact solver;
the goal disc is not drawn in observations (``draw_goal=True`` draws it, as swm does); positions are sampled
uniformly with the swm constraint functions, not through swm's variation spaces.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TwoRooms", "WeakExpert", "overlap_fraction", "random_walk_actions", "collect"]

WINDOW, BORDER = 512, 9
SIZE = WINDOW - 2 * BORDER  # 494
WALL_X = math.ceil(SIZE / 2)  # 247
WALL_HALF = 19 / 2
RADIUS = 15.0
SPEED = 10.0
MAX_STEP_NORM = 2.45
MAX_ENERGY = 100
N_SUB = 10  # physics steps per control step (dt 0.01 s, control 10 Hz)
# swm varies only agent.position and target.position by default (DEFAULT_VARIATIONS); the door keeps its init value:
# position t = size // 2 = 247 along the wall, size 75, i.e. y in [9 + 247, 9 + 247 + 75]
DEFAULT_DOOR = (BORDER + SIZE // 2, BORDER + SIZE // 2 + 75.0)


def overlap_fraction(d: float | np.ndarray, r: float = RADIUS) -> np.ndarray:
    """Area of the lens where two discs of radius r at distance d overlap, as a fraction of one disc."""
    d = np.minimum(np.asarray(d, dtype=np.float64), 2 * r)
    lens = 2 * r * r * np.arccos(d / (2 * r)) - 0.5 * d * np.sqrt(np.maximum(4 * r * r - d * d, 0.0))
    return lens / (math.pi * r * r)


class TwoRooms:
    """Gymnasium-style env: ``reset(seed) -> (obs, info)``, ``step(a) -> (obs, r, terminated, truncated, info)``."""

    def __init__(self, render_size: int = 64, draw_goal: bool = False, max_energy: int = MAX_ENERGY,
                 door_size: float | None = None, seed: int = 0, vary_door: bool = False):
        if render_size < 8:
            raise ValueError(f"TwoRooms.render_size: expected >= 8 pixels, got {render_size}")
        self.render_size = render_size
        self.draw_goal = draw_goal
        self.max_energy = max_energy
        self.fixed_door = door_size
        self.vary_door = vary_door
        self.rng = np.random.default_rng(seed)
        c = (np.arange(render_size) + 0.5) * WINDOW / render_size  # pixel centres in arena coordinates
        sub = (np.arange(4) + 0.5) / 4 * WINDOW / render_size - 0.5 * WINDOW / render_size  # 4x4 supersampling
        self._xs = (c[None, :, None] + sub[None, None, :])  # (1, S, 4)
        self._ys = (c[:, None, None] + sub[None, None, :])  # (S, 1, 4)

    # ---- geometry -------------------------------------------------------------------------------
    def collides(self, p: np.ndarray) -> bool:
        """Would a disc of radius 15 centred at ``p`` overlap the border or the wall (outside the door)?"""
        x, y = float(p[0]), float(p[1])
        if x - RADIUS < BORDER or x + RADIUS > WINDOW - BORDER or y - RADIUS < BORDER or y + RADIUS > WINDOW - BORDER:
            return True
        lo, hi = self.door
        for y0, y1 in ((BORDER, lo), (hi, WINDOW - BORDER)):  # the two pieces of wall beside the door
            dx = max(abs(x - WALL_X) - WALL_HALF, 0.0)  # distance from the centre to the rectangle
            dy = max(abs(y - (y0 + y1) / 2) - (y1 - y0) / 2, 0.0)
            if dx * dx + dy * dy < RADIUS * RADIUS:
                return True
        return False

    def _sample_free(self, room: int | None) -> np.ndarray:
        for _ in range(10_000):
            p = self.rng.uniform(BORDER + RADIUS, SIZE - RADIUS, size=2)  # swm: cx + r < size
            if abs(p[0] - WALL_X) <= WALL_HALF + RADIUS:
                continue
            if room is not None and int(p[0] > WALL_X) != room:
                continue
            if not self.collides(p):
                return p
        raise RuntimeError("TwoRooms: could not sample a free position")

    def room(self, p: np.ndarray) -> int:
        return int(p[0] > WALL_X)

    # ---- gym API -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, agent: np.ndarray | None = None, goal: np.ndarray | None = None,
              door: tuple[float, float] | None = None, same_room: bool = False):
        """New agent and goal (the goal in the other room, as the spec; ``same_room=True``: an easier variant without
        a door to pass). The door is swm's default one unless ``vary_door`` (then a random size and position, swm's
        ``door.size`` / ``door.position`` variations) or ``door=(y0, y1)`` is given."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if door is None and not self.vary_door:
            door = DEFAULT_DOOR
        if door is None:
            size = self.fixed_door if self.fixed_door is not None else float(self.rng.integers(38, 100))
            start = float(self.rng.integers(0, SIZE - int(size)))
            door = (BORDER + start, BORDER + start + size)
        self.door = (float(door[0]), float(door[1]))
        if self.door[1] - self.door[0] < 2.5 * RADIUS:
            raise ValueError(f"TwoRooms.reset: door {door} is narrower than 2.5 agent radii ({2.5 * RADIUS})")
        self.agent = np.asarray(agent, dtype=np.float64) if agent is not None else self._sample_free(None)
        self.goal = (np.asarray(goal, dtype=np.float64) if goal is not None
                     else self._sample_free(self.room(self.agent) if same_room else 1 - self.room(self.agent)))
        for name, p in (("agent", self.agent), ("goal", self.goal)):
            if self.collides(p):
                raise ValueError(f"TwoRooms.reset: {name} position {p.tolist()} collides with a wall")
        self.energy = self.max_energy
        return self.render(), self.info()

    def info(self) -> dict:
        d = float(np.linalg.norm(self.agent - self.goal))
        return {"pos_agent": self.agent.copy(), "pos_goal": self.goal.copy(), "door": self.door,
                "energy": self.energy, "overlap": float(overlap_fraction(d)), "distance": d}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"TwoRooms.step: action must be 2 finite floats, got {action!r}")
        norm = float(np.linalg.norm(a))
        if norm > MAX_STEP_NORM:
            a = a / norm * MAX_STEP_NORM
        delta = a * SPEED / N_SUB  # pixels per physics step
        for _ in range(N_SUB):
            for move in (delta, np.array([delta[0], 0.0]), np.array([0.0, delta[1]])):  # slide along walls
                q = self.agent + move
                if not self.collides(q):
                    self.agent = q
                    break
        self.energy -= 1
        info = self.info()
        terminated = info["overlap"] >= 0.5
        truncated = self.energy <= 0
        return self.render(), (1.0 if terminated else -0.01), terminated, truncated, info

    # ---- rendering -----------------------------------------------------------------------------
    def render(self, agent: np.ndarray | None = None) -> np.ndarray:
        """(S, S, 3) uint8 with 4x4 supersampled anti-aliasing. ``agent`` overrides the agent position."""
        agent = self.agent if agent is None else np.asarray(agent, dtype=np.float64)
        xs, ys = self._xs[..., :, None], self._ys[..., None, :]  # (1, S, 4, 1), (S, 1, 1, 4)
        img = np.ones((self.render_size, self.render_size, 3))

        def paint(mask, color):
            cov = mask.mean(axis=(-1, -2))[..., None]  # (S, S, 1) coverage of each pixel
            img[:] = img * (1 - cov) + np.asarray(color, dtype=np.float64)[None, None] / 255.0 * cov

        in_border = (xs < BORDER) | (xs > WINDOW - BORDER) | (ys < BORDER) | (ys > WINDOW - BORDER)
        paint(np.broadcast_to(in_border, (self.render_size, self.render_size, 4, 4)), (180, 189, 204))
        lo, hi = self.door
        wall = (np.abs(xs - WALL_X) <= WALL_HALF) & ((ys < lo) | (ys > hi))
        paint(np.broadcast_to(wall, (self.render_size, self.render_size, 4, 4)), (115, 127, 145))
        if self.draw_goal:
            paint((xs - self.goal[0]) ** 2 + (ys - self.goal[1]) ** 2 <= RADIUS ** 2, (0, 255, 0))
        paint((xs - agent[0]) ** 2 + (ys - agent[1]) ** 2 <= RADIUS ** 2, (255, 0, 0))
        return (img * 255).round().astype(np.uint8)

    def goal_image(self) -> np.ndarray:
        return self.render(agent=self.goal)


def random_walk_actions(n: int, rng: np.random.Generator, turn: float = 0.6) -> np.ndarray:
    """(n, 2) actions in [-1, 1]^2 whose heading drifts (a random walk in angle), so trajectories travel."""
    angle = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, turn, size=n))
    speed = rng.uniform(0.3, 1.0, size=n)
    return np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]


# [expert]
class WeakExpert:
    """stable-worldmodel's Two-Rooms ``ExpertPolicy`` (``envs/two_room/expert_policy.py``), which recorded the
    ``tworoom_expert`` data set that LeWM / PLDM train and evaluate on (``ExpertPolicy(action_noise=2.0,
    action_repeat_prob=0.05)`` in its collection script): head for the door centre while the target is in the other
    room and the agent is farther than ``door_tol`` from it, else for the target; the unit direction plus
    N(0, ``noise``^2) per component; with probability ``repeat`` the previous action again; clipped to [-1, 1]."""

    def __init__(self, env: TwoRooms, noise: float = 2.0, repeat: float = 0.05, door_tol: float = 3 * 512 / 64,
                 rng: np.random.Generator | None = None):
        if noise < 0 or not 0 <= repeat <= 1:
            raise ValueError(f"WeakExpert: need noise >= 0 and 0 <= repeat <= 1, got {noise}, {repeat}")
        self.env, self.noise, self.repeat, self.door_tol = env, noise, repeat, door_tol
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.last = None

    def __call__(self, target: np.ndarray) -> np.ndarray:
        env, agent = self.env, self.env.agent
        waypoint = np.asarray(target, dtype=np.float64)
        if env.room(agent) != env.room(waypoint):
            door = np.array([WALL_X, (env.door[0] + env.door[1]) / 2])  # the one door's centre
            if np.linalg.norm(door - agent) > self.door_tol:
                waypoint = door
        d = waypoint - agent
        n = float(np.linalg.norm(d))
        a = d / n if n > 1e-8 else np.zeros(2)
        a = a + self.rng.normal(0.0, self.noise, size=2) if self.noise > 0 else a
        if self.last is not None and self.repeat > 0 and self.rng.uniform() < self.repeat:
            a = self.last
        self.last = np.clip(a, -1.0, 1.0)
        return self.last
# [/expert]


def collect(episodes: int, steps: int, render_size: int = 32, seed: int = 0,
            policy: str = "random_walk", vary_door: bool = False) -> dict[str, np.ndarray]:
    """``frames`` (E, T+1, S, S, 3) uint8, ``actions`` (E, T, 2), ``pos`` (E, T+1, 2), ``door`` (E, 2).

    ``policy``: "random_walk" (a drifting heading, :func:`random_walk_actions`) or "expert" (the weak expert of
    stable-worldmodel's ``tworoom_expert`` data set, :class:`WeakExpert`, heading for a target in the other room)."""
    if episodes < 1 or steps < 1:
        raise ValueError(f"collect: episodes and steps must be >= 1, got {episodes}, {steps}")
    if policy not in ("random_walk", "expert"):
        raise ValueError(f"collect: policy must be 'random_walk' or 'expert', got {policy!r}")
    env = TwoRooms(render_size=render_size, max_energy=steps + 1, seed=seed, vary_door=vary_door)
    rng = np.random.default_rng(seed + 1)
    frames, actions, pos, doors = [], [], [], []
    for e in range(episodes):
        obs, info = env.reset(seed=seed * 100_003 + e)
        expert = WeakExpert(env, rng=rng) if policy == "expert" else None
        walk = random_walk_actions(steps, rng) if expert is None else None
        fr, ps, acts = [obs], [info["pos_agent"]], []
        for t in range(steps):
            a = walk[t] if expert is None else expert(env.goal)
            acts.append(a)
            obs, _, _, _, info = env.step(a)
            fr.append(obs)
            ps.append(info["pos_agent"])
        frames.append(np.stack(fr))
        actions.append(np.asarray(acts, dtype=np.float32))
        pos.append(np.stack(ps).astype(np.float32))
        doors.append(np.asarray(env.door, dtype=np.float32))
    return {"frames": np.stack(frames), "actions": np.stack(actions), "pos": np.stack(pos), "door": np.stack(doors)}
