"""One environment API for DreamerV3 (Hafner et al. 2023, "Mastering Diverse Domains through World
Models", Sec. 4 and Appendix: Crafter, Atari 100k, visual control) and two cheap tasks of our own.

Every environment speaks the same dialect, borrowed from the official ``embodied`` code::

    env = make_env("crafter", seed=0)
    env.obs_space   # {"image": ((64, 64, 3), np.uint8)} and/or {"vector": ((D,), np.float32)}
    env.act_space   # {"n": 17, "discrete": True}
    obs = env.reset()            # dict: image/vector, reward=0, is_first=True, is_last, is_terminal
    obs = env.step(action)       # discrete: int or one-hot (n,); continuous: (n,) floats in [-1, 1]

``is_last`` marks the final step of an episode (termination OR time limit); ``is_terminal`` only a true
termination (the continue target of the world model is ``1 - is_terminal``, so a time limit does not
teach the model that the world ends). ``reward`` is the reward received on arriving at this obs.

Registered names (``ENV_NAMES``):

* ``reach`` / ``reach-continuous`` -- our cheap pixel task (8x8 grid drawn at 64x64: move the red block
  onto the green one; reward 1 - manhattan/14 per step, 50 steps). Learnable in minutes on a CPU, used
  by the tests and the cpu-profile notebook. A random policy scores about 30, a good one about 45.
  ``reach-vector`` is the same task seen as 4 numbers (agent and target cells), no pixels.
* ``cartpole`` -- gymnasium CartPole-v1 from its 4-D state vector (the "vector" observation path).
* ``pendulum`` -- gymnasium Pendulum-v1 rendered to 64x64 pixels, continuous torque, action repeat 2
  (as the paper's visual control runs), rewards in [-16.3, 0] per step.
* ``crafter`` -- Crafter (Hafner 2021) with its reward, 64x64x3, 17 actions, 22 achievements; the
  episode info lists the achievements unlocked, :func:`crafter_score` turns success rates into the
  Crafter score.
* ``atari100k:<game>`` -- Atari 100k as configured by the official DreamerV3 code (see ATARI100K below).
* ``atari:<game>``     -- the 200M-frame Atari protocol of Machado et al. (2018): sticky actions 0.25.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

SIZE = (64, 64)

#: Atari 100k settings of the official DreamerV3 config (``configs.yaml``, ``env.atari100k``): 64x64
#: colour frames, action repeat 4 (100k agent steps = 400k frames), max-pool over the last 2 frames of
#: each repeat, up to 30 random no-ops at reset, the minimal action set, no life-loss signal, no reward
#: clipping, 108k-frame time limit. Sticky actions: the Atari 100k benchmark (Kaiser et al. 2019) and
#: the official atari100k config use repeat_action_probability = 0; the paper's sticky actions (0.25,
#: Machado et al. 2018) belong to the 200M-frame Atari suite, which ``atari:<game>`` reproduces
#: (grey frames there in the official config; we keep colour so that one encoder fits all).
ATARI100K = dict(repeat=4, size=SIZE, gray=False, sticky=0.0, noops=30, actions="needed",
                 lives="unused", pooling=2, length=108_000, clip_reward=False)
ATARI200M = dict(ATARI100K, sticky=0.25, actions="all")

CRAFTER_ACHIEVEMENTS = (
    "collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling",
    "collect_stone", "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant",
    "make_iron_pickaxe", "make_iron_sword", "make_stone_pickaxe", "make_stone_sword",
    "make_wood_pickaxe", "make_wood_sword", "place_furnace", "place_plant", "place_stone",
    "place_table", "wake_up")


def crafter_score(success_rates_percent) -> float:
    """Crafter score (Hafner 2021, eq. 1): ``exp(mean_i ln(1 + s_i)) - 1`` with ``s_i`` in percent.

    The geometric mean rewards unlocking many achievements a little over one achievement a lot.
    """
    s = np.asarray(success_rates_percent, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"success_rates_percent must be a non-empty 1-D list, got shape {s.shape}")
    if (s < 0).any() or (s > 100).any():
        raise ValueError(f"success rates must be percentages in [0, 100], got {s.tolist()}")
    return float(np.exp(np.mean(np.log1p(s))) - 1.0)


def crafter_success_rates(episodes_achievements: list) -> dict[str, float]:
    """Percent of episodes in which each of the 22 achievements was unlocked at least once."""
    if not episodes_achievements:
        raise ValueError("need at least one finished Crafter episode to compute success rates")
    n = len(episodes_achievements)
    return {a: 100.0 * sum(a in set(ep) for ep in episodes_achievements) / n for a in CRAFTER_ACHIEVEMENTS}


def resize_image(frame: np.ndarray, size=SIZE) -> np.ndarray:
    """(H, W, 3) uint8 -> size uint8 with PIL bilinear (what the official code uses)."""
    from PIL import Image

    if frame.shape[:2] == tuple(size):
        return frame
    return np.array(Image.fromarray(frame).resize(size[::-1], Image.BILINEAR))  # writable copy


class Env:
    """Base class: subclasses implement ``_reset() -> (obs_parts)`` and ``_step(a) -> (parts, r, term,
    trunc)``; this class checks actions, counts steps and builds the obs dict."""

    obs_space: dict[str, tuple[tuple[int, ...], Any]]
    act_space: dict[str, Any]
    time_limit: int = 0  # agent steps per episode; 0 = the env decides

    def __init__(self, seed: int = 0):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self.episode = -1
        self._t = 0
        self._done = True
        self.episode_info: dict[str, Any] = {}  # filled at the end of each episode (return, length,..)
        self._return = 0.0

    # -- public API --------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Start an episode. Episode k of an env made with seed s uses seed s * 100003 + k unless
        ``seed`` is given, so a run can rebuild any episode exactly (used by exact resume)."""
        self.episode += 1
        ep_seed = self.episode_seed() if seed is None else int(seed)
        self._t, self._done, self._return = 0, False, 0.0
        parts = self._reset(ep_seed)
        return self._obs(parts, 0.0, first=True)

    def episode_seed(self, episode: int | None = None) -> int:
        return (self.seed * 100_003 + (self.episode if episode is None else episode)) % 2**31

    def step(self, action) -> dict[str, Any]:
        if self._done:
            raise RuntimeError(f"{type(self).__name__}.step() called after is_last; call reset() first")
        a = self._check_action(action)
        parts, reward, term, trunc = self._step(a)
        self._t += 1
        if self.time_limit and self._t >= self.time_limit:
            trunc = True
        self._return += float(reward)
        obs = self._obs(parts, reward, last=term or trunc, terminal=term)
        if obs["is_last"]:
            self._done = True
            self.episode_info = {"return": self._return, "length": self._t, **self._episode_extra()}
        return obs

    def close(self) -> None:
        pass

    # -- helpers -----------------------------------------------------------------------------------
    def _episode_extra(self) -> dict[str, Any]:
        return {}

    def _check_action(self, action):
        n, discrete = self.act_space["n"], self.act_space["discrete"]
        arr = np.asarray(action)
        if discrete:
            if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer):
                idx = int(arr)
            elif arr.shape == (n,):
                if not (np.isin(arr, (0, 1)).all() and arr.sum() == 1):
                    raise ValueError(f"{type(self).__name__}: a one-hot action must have one 1, got {arr}")
                idx = int(arr.argmax())
            else:
                raise ValueError(f"{type(self).__name__}: action must be an int in [0, {n}) or a one-hot "
                                 f"array of shape ({n},), got {action!r}")
            if not 0 <= idx < n:
                raise ValueError(f"{type(self).__name__}: action index {idx} out of range [0, {n})")
            return idx
        arr = arr.astype(np.float32)
        if arr.shape != (n,):
            raise ValueError(f"{type(self).__name__}: continuous action must have shape ({n},), "
                             f"got {arr.shape}")
        if not np.isfinite(arr).all() or np.abs(arr).max() > 1.0 + 1e-5:
            raise ValueError(f"{type(self).__name__}: continuous action must be finite and in [-1, 1], "
                             f"got {arr}")
        return arr

    def _obs(self, parts: dict, reward: float, first=False, last=False, terminal=False) -> dict:
        obs = dict(parts)
        obs.update(reward=np.float32(reward), is_first=bool(first), is_last=bool(last),
                   is_terminal=bool(terminal))
        return obs


class Reach(Env):
    """Move the red block onto the green one on an 8x8 grid (rendered 64x64). Our own toy task.

    Discrete: 5 actions (stay, up, down, left, right). Continuous: 2-D velocity in [-1, 1], up to one
    cell per step. Reward per step ``1 - d / 14`` (d = Manhattan distance in cells, 14 the largest), so
    returns lie in [0, 50]: a random policy gets ~30, one that walks straight to the target ~45.
    """

    GRID, CELL, LENGTH = 8, 8, 50
    MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], np.float32)

    def __init__(self, seed: int = 0, continuous: bool = False, pixels: bool = True):
        super().__init__(seed)
        self.continuous, self.pixels = continuous, pixels
        self.obs_space = {"image": ((*SIZE, 3), np.uint8)} if pixels else {"vector": ((4,), np.float32)}
        self.act_space = {"n": 2 if continuous else 5, "discrete": not continuous}
        self.time_limit = self.LENGTH

    def _reset(self, seed):
        rng = np.random.default_rng(seed)
        g = self.GRID
        self.pos = rng.integers(0, g, 2).astype(np.float32)
        self.target = rng.integers(0, g, 2).astype(np.float32)
        return self._parts()

    def _step(self, a):
        delta = np.asarray(a, np.float32) if self.continuous else self.MOVES[a]
        self.pos = np.clip(self.pos + delta, 0, self.GRID - 1)  # walls: the arena is bounded
        d = np.abs(np.round(self.pos) - self.target).sum()
        return self._parts(), 1.0 - d / (2 * (self.GRID - 1)), False, False

    def _parts(self):
        if not self.pixels:  # the same state as 4 numbers in [0, 1]: agent (y, x), target (y, x)
            return {"vector": np.concatenate([np.round(self.pos), self.target]) / (self.GRID - 1)}
        return {"image": self._render()}

    @classmethod
    def render_vector(cls, vec) -> np.ndarray:
        """Draw a (possibly imagined, fractional) state vector as the 64x64 frame -- so a world model
        trained on ``reach-vector`` can still be watched dreaming. (4,) or (T, 4) -> uint8 frames."""
        vec = np.asarray(vec, np.float32)
        if vec.ndim == 2:
            return np.stack([cls.render_vector(v) for v in vec])
        if vec.shape != (4,):
            raise ValueError(f"reach state vector must have shape (4,) or (T, 4), got {vec.shape}")
        img, c, top = np.zeros((*SIZE, 3), np.uint8), cls.CELL, SIZE[0] - cls.CELL
        (ay, ax), (ty, tx) = (np.clip(np.round(v * (cls.GRID - 1) * c), 0, top).astype(int)
                              for v in (vec[:2], vec[2:]))
        img[ty:ty + c, tx:tx + c, 1] = 255
        img[ay:ay + c, ax:ax + c, 0] = 255
        return img

    def _render(self):
        img = np.zeros((*SIZE, 3), np.uint8)
        c = self.CELL
        ty, tx = self.target.astype(int)
        img[ty * c:(ty + 1) * c, tx * c:(tx + 1) * c, 1] = 255
        ay, ax = np.round(self.pos).astype(int)
        img[ay * c:(ay + 1) * c, ax * c:(ax + 1) * c, 0] = 255
        return img


class GymEnv(Env):
    """A gymnasium env as pixels (``render_mode="rgb_array"`` resized to 64x64) or as a state vector."""

    def __init__(self, name: str, seed: int = 0, pixels: bool = True, repeat: int = 1, **kwargs):
        import gymnasium as gym

        if pixels:  # rgb_array rendering is off-screen; without this SDL complains about XDG_RUNTIME_DIR
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        super().__init__(seed)
        self.pixels, self.repeat = pixels, repeat
        self._env = gym.make(name, render_mode="rgb_array" if pixels else None, **kwargs)
        space = self._env.action_space
        if isinstance(space, gym.spaces.Discrete):
            self.act_space = {"n": int(space.n), "discrete": True}
        else:
            self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
            self.act_space = {"n": int(space.shape[0]), "discrete": False}
        if pixels:
            self.obs_space = {"image": ((*SIZE, 3), np.uint8)}
        else:
            self.obs_space = {"vector": (tuple(self._env.observation_space.shape), np.float32)}

    def _parts(self, o):
        if self.pixels:
            return {"image": resize_image(self._env.render())}
        return {"vector": np.asarray(o, np.float32)}

    def _reset(self, seed):
        o, _ = self._env.reset(seed=seed)
        return self._parts(o)

    def _step(self, a):
        if not self.act_space["discrete"]:  # [-1, 1] -> the env's box, linearly
            a = self._low + (np.asarray(a) + 1.0) * 0.5 * (self._high - self._low)
        total, term, trunc = 0.0, False, False
        for _ in range(self.repeat):
            o, r, term, trunc, _ = self._env.step(a)
            total += float(r)
            if term or trunc:
                break
        return self._parts(o), total, term, trunc

    def close(self):
        self._env.close()


class Crafter(Env):
    """Crafter with its reward (+1 per new achievement, +-0.1 per health point). Episodes end on death
    (terminal) or after 10,000 steps (time limit). ``episode_info["achievements"]`` lists what the
    episode unlocked."""

    def __init__(self, seed: int = 0, length: int = 10_000):
        super().__init__(seed)
        self.length = length
        self.obs_space = {"image": ((*SIZE, 3), np.uint8)}
        self.act_space = {"n": 17, "discrete": True}
        self._env = None

    def _reset(self, seed):
        import crafter

        from wmkit.crafter_seeding import crafter_reproducible

        # A fresh crafter.Env per episode, seeded, so any episode can be rebuilt exactly -- in any process: without
        # crafter_reproducible, which creature Crafter despawns depends on memory addresses.
        crafter_reproducible()
        self._env = crafter.Env(area=(64, 64), size=SIZE, length=self.length, seed=seed)
        self._unlocked: set[str] = set()
        return {"image": self._env.reset()}

    def _step(self, a):
        img, r, done, info = self._env.step(a)
        self._unlocked |= {k for k, v in info["achievements"].items() if v > 0}
        terminal = done and info["discount"] == 0.0  # died; otherwise the time limit
        return {"image": img}, float(r), terminal, done and not terminal

    def _episode_extra(self):
        return {"achievements": sorted(self._unlocked)}


class Atari(Env):
    """Atari through ale-py with its bundled ROMs; settings from ATARI100K / ATARI200M above."""

    def __init__(self, game: str, seed: int = 0, **settings):
        import ale_py
        from ale_py import roms

        super().__init__(seed)
        self.cfg = dict(ATARI100K, **settings)
        if game not in roms.get_all_rom_ids():
            raise ValueError(f"unknown Atari game {game!r}; ale-py ships {len(roms.get_all_rom_ids())} "
                             f"ROMs, e.g. pong, breakout, ms_pacman (see ale_py.roms.get_all_rom_ids())")
        self.game, self._ale_py, self._rom = game, ale_py, roms.get_rom_path(game)
        self.ale = None
        self._load(0)
        actions = self.ale.getMinimalActionSet() if self.cfg["actions"] == "needed" else \
            self.ale.getLegalActionSet()
        self.actions = list(actions)
        self.obs_space = {"image": ((*self.cfg["size"], 1 if self.cfg["gray"] else 3), np.uint8)}
        self.act_space = {"n": len(self.actions), "discrete": True}

    def _load(self, seed):
        ale = self._ale_py.ALEInterface()
        ale.setLoggerMode(self._ale_py.LoggerMode.Error)
        ale.setInt("random_seed", int(seed))
        ale.setFloat("repeat_action_probability", float(self.cfg["sticky"]))
        ale.loadROM(self._rom)  # reloading per episode makes every episode reproducible from its seed
        self.ale = ale

    def _reset(self, seed):
        self._load(seed)
        rng = np.random.default_rng(seed)
        for _ in range(int(rng.integers(self.cfg["noops"] + 1))):
            self.ale.act(self._ale_py.Action.NOOP)
            if self.ale.game_over():
                self.ale.reset_game()
        self._frames = [self.ale.getScreenRGB()] * self.cfg["pooling"]
        self._lives, self._frames_done = self.ale.lives(), 0
        return {"image": self._image()}

    def _step(self, a):
        reward, term = 0.0, False
        for k in range(self.cfg["repeat"]):
            reward += self.ale.act(self.actions[a])
            self._frames_done += 1
            if k >= self.cfg["repeat"] - self.cfg["pooling"]:
                self._frames = self._frames[1:] + [self.ale.getScreenRGB()]
            if self.ale.game_over():
                term = True
                break
        if self.cfg["clip_reward"]:
            reward = float(np.sign(reward))
        trunc = self._frames_done >= self.cfg["length"]
        return {"image": self._image()}, reward, term, trunc and not term

    def _image(self):
        img = resize_image(np.max(np.stack(self._frames), 0), self.cfg["size"])
        if self.cfg["gray"]:
            img = (img @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
        return img


class RewardScale(Env):
    """Multiply an env's rewards by a constant (the one-config-everywhere experiment)."""

    def __init__(self, env: Env, scale: float):
        if not math.isfinite(scale) or scale == 0:
            raise ValueError(f"reward scale must be finite and non-zero, got {scale}")
        self.env, self.scale = env, float(scale)
        self.obs_space, self.act_space = env.obs_space, env.act_space

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, seed=None):
        return self.env.reset(seed)

    def step(self, action):
        obs = self.env.step(action)
        obs["reward"] = np.float32(obs["reward"] * self.scale)
        if obs["is_last"]:
            self.env.episode_info["return"] *= self.scale
        return obs


ENV_NAMES = ("reach", "reach-continuous", "reach-vector", "cartpole", "pendulum", "crafter", "atari100k:<game>",
             "atari:<game>")


def make_env(name: str, seed: int = 0, reward_scale: float = 1.0) -> Env:
    """Build a registered environment by name (see ``ENV_NAMES``)."""
    if name == "reach":
        env = Reach(seed)
    elif name == "reach-continuous":
        env = Reach(seed, continuous=True)
    elif name == "reach-vector":
        env = Reach(seed, pixels=False)
    elif name == "cartpole":
        env = GymEnv("CartPole-v1", seed, pixels=False)
    elif name == "pendulum":
        env = GymEnv("Pendulum-v1", seed, pixels=True, repeat=2)
    elif name == "crafter":
        env = Crafter(seed)
    elif name.startswith("atari100k:"):
        env = Atari(name.split(":", 1)[1], seed, **ATARI100K)
    elif name.startswith("atari:"):
        env = Atari(name.split(":", 1)[1], seed, **ATARI200M)
    else:
        raise ValueError(f"unknown environment {name!r}; expected one of {ENV_NAMES}")
    return env if reward_scale == 1.0 else RewardScale(env, reward_scale)


def random_returns(name: str, episodes: int, seed: int = 0, reward_scale: float = 1.0) -> list[float]:
    """Episode returns of a uniformly random policy (the baseline every learning curve is read against)."""
    env = make_env(name, seed + 7_919, reward_scale)
    rng = np.random.default_rng(seed)
    n, discrete = env.act_space["n"], env.act_space["discrete"]
    out = []
    for _ in range(episodes):
        obs = env.reset()
        while not obs["is_last"]:
            a = int(rng.integers(n)) if discrete else rng.uniform(-1, 1, n).astype(np.float32)
            obs = env.step(a)
        out.append(env.episode_info["return"])
    env.close()
    return out


def check_obs(obs: dict, obs_space: dict, batch: bool = False) -> None:
    """Raise a clear error if ``obs`` does not match ``obs_space`` (shapes and dtypes)."""
    for key, (shape, dtype) in obs_space.items():
        if key not in obs:
            raise ValueError(f"observation is missing key {key!r}; expected keys {sorted(obs_space)}")
        arr = np.asarray(obs[key])
        want = shape if not batch else (arr.shape[:1] + tuple(shape))
        if arr.shape != tuple(want) or arr.dtype != np.dtype(dtype):
            raise ValueError(f"observation {key!r} must have shape {tuple(want)} and dtype "
                             f"{np.dtype(dtype).name}, got shape {arr.shape} and dtype {arr.dtype.name}")
