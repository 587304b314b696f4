"""Runnable stand-ins for the stage-3/4 datasets, recorded here from simulators (no download).

* :func:`crafter_clips` -- Option A, the game stand-in for Minecraft (MineRL / VPT): Crafter
  (Hafner 2021; 64x64x3, 17 discrete actions) played by a *mixed* policy: with probability
  ``random_prob`` a uniformly random action, otherwise :class:`CrafterExplorer`, a scripted player that
  walks toward trees/stone/water in view, mines what it faces, places a table, crafts pickaxes and swords,
  places stone and saplings. The random share keeps every action (and its visual effect) in the data,
  which an action-inferring model (Genie's latent action model) needs; the explorer makes the world
  change (mining, building) instead of a random walk on grass.
* :func:`driving_clips` -- Option B, the driving stand-in for nuScenes: gymnasium ``CarRacing-v3``
  (50 Hz) driven by :func:`wmkit.episodes.road_follower` plus Ornstein-Uhlenbeck noise on steering and gas.
  The action is the *ego motion* (speed, steering, yaw rate), as nuScenes gives it from ego poses;
  ``keyframe_hz=2`` returns 2 Hz keyframes (every 25th frame, ego motion averaged keyframe-to-keyframe),
  so "predict the next 3 s" is 6 keyframes, as on nuScenes.
* :func:`atari_clips` -- Atari through ale-py's bundled ROMs with the Atari 100k settings of
  :mod:`wmkit.dreamer.envs` (64x64 colour, action repeat 4, max-pool of the last 2 frames, up to 30
  no-ops, sticky actions 0) -- the protocol DIAMOND is evaluated on -- with a uniformly random policy.
* :func:`worldmodels_clips` -- stage-1 episode files (``episode_*.npz``: ``obs`` T+1 frames, ``actions``
  T) as clips; CarRacing and any other env (e.g. VizDoom) written in that format.

Each recorded episode is cached as ``<runs_dir("data")>/<kind>/<key>.npz`` (one clip per episode) so a
second call, or a second notebook, reads instead of re-simulating; ``cache=False`` always records.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wmkit.crafter_seeding import crafter_reproducible  # noqa: F401  (re-exported: record_crafter's docs name it)
from wmkit.data.clip import ActionSpace, Clip, ClipFormatError, load_clip, save_clip
from wmkit.data.dataset import resize_frames

CRAFTER_ACTIONS = ("noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
                   "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
                   "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword")
CRAFTER_SPACE = ActionSpace("discrete", n=17, names=CRAFTER_ACTIONS)
DRIVING_SPACE = ActionSpace("continuous", dim=3, names=("speed", "steering", "yaw_rate"),
                            units=("world units/s", "command in [-1, 1]", "rad/s"))
CARRACING_FPS = 50  # gymnasium car_racing.py: FPS = 50, one env step = 1/50 s
CACHE_VERSION = 2  # bump when a recorder changes so stale caches are not reused


def _cache_path(kind: str, key: str, cache: bool | str | os.PathLike) -> Path | None:
    if cache is False:
        return None
    from wmkit.utils import runs_dir

    root = Path(runs_dir("data")) if cache is True else Path(cache)
    return root / kind / f"{key}_v{CACHE_VERSION}.npz"


def _cached(kind: str, key: str, cache, record) -> Clip:
    path = _cache_path(kind, key, cache)
    if path is not None and path.exists():
        try:
            return load_clip(path)
        except ClipFormatError as e:  # a damaged cache file: say so, then record it again
            warnings.warn(f"re-recording a damaged cache file: {e}", stacklevel=3)
    clip = record()
    if path is not None:
        save_clip(path, clip)
    return clip


def _episodes(kind: str, episodes: int, progress: bool, fn) -> list[Clip]:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    return [fn(i) for i in tqdm(range(episodes), desc=f"record {kind}", unit="ep", disable=not progress)]


# ------------------------------------------------------------------------------------------ Crafter
class CrafterExplorer:
    """A scripted Crafter player that walks, mines, places and crafts (reads the engine's world state).

    Priorities each step: (1) ``do`` on a collectable material it faces (tree; stone/coal with a wood
    pickaxe; iron with a stone pickaxe; water when thirsty), or on a cow/zombie/skeleton it faces; turn
    toward a monster standing next to it; (2) craft at a
    table it stands next to (wood pickaxe, wood sword, stone pickaxe); (3) place a table when it has wood
    and none is near, a stone now and then, a sapling on grass; (4) walk toward the nearest wanted
    material (or a cow when hungry) in a 9x9 neighbourhood (moving into it turns the player to face it);
    (5) otherwise keep
    walking in one direction for a few steps, turning at random. When it has not moved for 3 steps
    (blocked by water, lava, a table...), it wanders at random for 4-11 steps. Uses crafter's internal ``_world`` /
    ``_player`` (crafter 1.8).
    """

    MOVES = {(-1, 0): 1, (1, 0): 2, (0, -1): 3, (0, 1): 4}  # facing -> move action id

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.heading = (0, 1)
        self.left = 0  # steps left in the current heading
        self.last_pos, self.stuck, self.wander = None, 0, 0

    def __call__(self, env) -> int:
        world, player = env._world, env._player
        inv = player.inventory
        x, y = (int(v) for v in player.pos)
        fx, fy = player.facing
        mat, obj = world[(x + fx, y + fy)]
        collect = {"tree"} | ({"stone", "coal"} if inv["wood_pickaxe"] else set()) \
            | ({"iron"} if inv["stone_pickaxe"] else set()) | ({"water"} if inv["drink"] < 7 else set())
        if mat in collect or (obj is not None and type(obj).__name__ in ("Cow", "Zombie", "Skeleton")):
            return 5  # do
        threat = self._toward(world, x, y, set(), {"Zombie", "Skeleton"}, r=1)
        if threat is not None:  # a monster next to the player: turn to it (the next step attacks)
            return self.MOVES[threat]
        near, _ = world.nearby((x, y), 1)
        if "table" in near:
            if inv["wood"] >= 1 and not inv["wood_pickaxe"]:
                return 11
            if inv["wood"] >= 1 and not inv["wood_sword"]:
                return 14
            if inv["wood"] >= 1 and inv["stone"] >= 1 and not inv["stone_pickaxe"]:
                return 12
        placeable = mat in ("grass", "sand", "path") and obj is None
        if placeable and inv["wood"] >= 2 and "table" not in world.nearby((x, y), 4)[0]:
            return 8  # place_table
        if placeable and inv["stone"] >= 1 and self.rng.random() < 0.15:
            return 7  # place_stone
        if mat == "grass" and obj is None and inv["sapling"] >= 1 and self.rng.random() < 0.3:
            return 10  # place_plant
        self.stuck = self.stuck + 1 if (x, y) == self.last_pos else 0
        self.last_pos = (x, y)
        if self.stuck >= 3:  # walked into something it cannot pass or mine: wander for a while
            self.wander, self.stuck = int(self.rng.integers(4, 12)), 0
            self.left = 0
        food = {"Cow"} if inv["food"] < 6 else set()
        step = self._toward(world, x, y, collect, food) if self.wander <= 0 else None
        self.wander -= 1
        if step is not None:
            return self.MOVES[step]
        if self.left <= 0 or self.rng.random() < 0.1:
            self.heading = list(self.MOVES)[int(self.rng.integers(4))]
            self.left = int(self.rng.integers(3, 10))
        self.left -= 1
        return self.MOVES[self.heading]

    @staticmethod
    def _toward(world, x, y, materials, objects=frozenset(), r: int = 4) -> tuple[int, int] | None:
        """Unit step toward the nearest wanted material or object (by class name) within ``r`` cells."""
        ids = [world._mat_ids[m] for m in materials if m in world._mat_ids]
        x0, y0 = max(x - r, 0), max(y - r, 0)
        patch = world._mat_map[x0:x + r + 1, y0:y + r + 1]  # (<=2r+1, <=2r+1) material ids around the player
        hits = np.argwhere(np.isin(patch, ids)) if ids else np.zeros((0, 2), int)
        if objects:
            omap = world._obj_map[x0:x + r + 1, y0:y + r + 1]  # object indices (0 = none)
            found = [(i, j) for i, j in np.argwhere(omap > 0)
                     if type(world._objects[omap[i, j]]).__name__ in objects]
            hits = np.concatenate([hits, np.asarray(found, int).reshape(-1, 2)])
        if not len(hits):
            return None
        d = np.abs(hits[:, 0] + x0 - x) + np.abs(hits[:, 1] + y0 - y)
        tx, ty = hits[int(np.argmin(d))] + (x0, y0)
        dx, dy = int(tx - x), int(ty - y)
        if abs(dx) >= abs(dy):
            return (int(np.sign(dx)), 0)
        return (0, int(np.sign(dy)))


def record_crafter(seed: int, steps: int, random_prob: float = 0.3, size: int = 64) -> Clip:
    """One Crafter episode of up to ``steps`` frames (fewer if the player dies), mixed policy; the same seed gives
    the same episode in every process (:func:`crafter_reproducible`)."""
    import crafter

    if not 0.0 <= random_prob <= 1.0:
        raise ValueError(f"random_prob must be in [0, 1], got {random_prob}")
    crafter_reproducible()
    env = crafter.Env(area=(64, 64), size=(size, size), seed=int(seed))
    rng = np.random.default_rng(seed)
    explorer = CrafterExplorer(rng)
    obs = env.reset()
    frames, actions, rewards, dones, unlocked = [], [], [], [], set()
    for _ in range(steps):
        a = int(rng.integers(17)) if rng.random() < random_prob else explorer(env)
        frames.append(obs)
        actions.append(a)
        obs, r, done, info = env.step(a)
        rewards.append(r)
        died = bool(done and info["discount"] == 0.0)
        dones.append(died)
        unlocked |= {k for k, v in info["achievements"].items() if v > 0}
        if done:
            break
    meta = dict(source=f"crafter:seed{seed}", fps=0.0, episode=f"crafter-{seed}", env="crafter", seed=int(seed),
                policy=f"mixed random {random_prob} + CrafterExplorer", achievements=sorted(unlocked))
    return Clip(np.stack(frames), np.asarray(actions, np.int64), CRAFTER_SPACE, np.asarray(rewards, np.float32),
                np.asarray(dones, bool), meta)


def crafter_clips(episodes: int = 8, steps: int = 200, seed: int = 0, random_prob: float = 0.3, size: int = 64,
                  cache: bool | str | os.PathLike = True, progress: bool = True) -> list[Clip]:
    """``episodes`` Crafter episodes (episode i: world seed ``seed * 100_003 + i``), one clip each.

    Crafter's world generation costs ~2 s per episode in pure Python and ~0.2 s when numba is installed
    (opensimplex then compiles its noise; the worlds are bit-identical); each step ~4 ms. Recordings are
    cached. Most episodes end with the player's death before ``steps`` (zombies at night, often while
    asleep after a random ``sleep``): over world seeds 0-7 with ``steps=1000`` they lasted 132-286 steps,
    mean 202; ``done`` marks the death.
    """
    def one(i):
        s = seed * 100_003 + i
        return _cached("crafter", f"s{s}_t{steps}_p{random_prob}_{size}", cache,
                       lambda: record_crafter(s, steps, random_prob, size))
    return _episodes("crafter", episodes, progress, one)


# ------------------------------------------------------------------------------------------ driving
def record_driving(seed: int, steps: int, size: int = 64, noise: float = 0.3, skip_zoom: int = 50) -> Clip:
    """One CarRacing-v3 drive: road follower + OU noise; actions = ego motion (speed, steer, yaw rate).

    ``actions[t]`` is the ego motion over the step after frame t: speed = |position change| / dt, yaw rate
    = wrapped heading change / dt (both from the car hull's pose before and after the step, dt = 1/50 s,
    as nuScenes derives them from consecutive ego poses), steering = the steering command.
    ``extras["control"]`` keeps the raw (steer, gas, brake) sent to the env, ``extras["pose"]`` the
    hull's (x, y, heading) at each frame. Frames: the 96x96 render without the dashboard (rows 84+,
    which would show speed and steering) resized to ``size``.
    """
    from wmkit.carracing import make_car_racing
    from wmkit.episodes import road_follower

    env = make_car_racing(max_episode_steps=skip_zoom + steps + 1)  # CarRacing-v3's frames, drawn faster
    rng = np.random.default_rng(seed)
    dt = 1.0 / CARRACING_FPS
    try:
        obs, _ = env.reset(seed=int(seed))
        for _ in range(skip_zoom):  # the zoom-in animation at the start carries no control
            obs, *_ = env.step(np.zeros(3, np.float32))
        hull = env.unwrapped.car.hull
        gas = float(rng.uniform(0.08, 0.2))  # each episode its own cruising throttle
        ou = np.zeros(2)
        frames, poses, controls, ego, rewards, dones = [], [], [], [], [], []
        for _ in range(steps):
            ou += 0.15 * -ou + 0.35 * rng.standard_normal(2)  # Ornstein-Uhlenbeck, theta=0.15, sigma=0.35
            base = road_follower(obs, gas=gas)
            steer = float(np.clip(base[0] + noise * ou[0], -1, 1))
            throttle = float(np.clip(base[1] + 0.5 * noise * ou[1], 0, 1))
            brake = float(rng.random() < 0.02) * 0.5
            a = np.array([steer, throttle, brake], np.float32)
            # [eq:ego]
            p0 = (float(hull.position[0]), float(hull.position[1]), float(hull.angle))
            frames.append(obs[:84])
            obs, r, term, trunc, _ = env.step(a)
            p1 = (float(hull.position[0]), float(hull.position[1]), float(hull.angle))
            dyaw = (p1[2] - p0[2] + np.pi) % (2 * np.pi) - np.pi
            ego.append((np.hypot(p1[0] - p0[0], p1[1] - p0[1]) / dt, steer, dyaw / dt))
            # [/eq:ego]
            poses.append(p0)
            controls.append(a)
            rewards.append(r)
            dones.append(bool(term))
            if term or trunc:
                break
    finally:
        env.close()
    frames = resize_frames(np.stack(frames), size)  # (T, size, size, 3)
    meta = dict(source=f"carracing:seed{seed}", fps=float(CARRACING_FPS), episode=f"carracing-{seed}",
                env="CarRacing-v3", seed=int(seed), policy=f"road_follower + OU noise {noise}")
    return Clip(frames, np.asarray(ego, np.float32), DRIVING_SPACE, np.asarray(rewards, np.float32),
                np.asarray(dones, bool), meta,
                {"control": np.stack(controls), "pose": np.asarray(poses, np.float32)})


def to_keyframes(clip: Clip, hz: float = 2.0) -> Clip:
    """Subsample a full-rate clip to ``hz`` keyframes (CarRacing 50 Hz -> 2 Hz: every 25th frame)."""
    every = clip.fps / hz
    if not clip.fps or abs(every - round(every)) > 1e-6:
        raise ValueError(f"to_keyframes: clip fps {clip.fps} is not a multiple of {hz} Hz")
    return clip.subsample(int(round(every)))


def driving_clips(episodes: int = 4, steps: int = 500, seed: int = 0, size: int = 64, noise: float = 0.3,
                  keyframe_hz: float | None = None, cache: bool | str | os.PathLike = True,
                  progress: bool = True) -> list[Clip]:
    """``episodes`` CarRacing drives of ``steps`` frames at 50 Hz (episode i: track seed ``seed * 100_003 + i``).

    ``keyframe_hz=2.0`` returns 2 Hz keyframe clips (``steps / 25`` frames each); the full-rate recording
    is what is cached.
    """
    def one(i):
        s = seed * 100_003 + i
        clip = _cached("driving", f"s{s}_t{steps}_n{noise}_{size}", cache,
                       lambda: record_driving(s, steps, size, noise))
        return clip if keyframe_hz is None else to_keyframes(clip, keyframe_hz)
    return _episodes("driving", episodes, progress, one)


# ------------------------------------------------------------------------------------------ Atari
def record_atari(game: str, seed: int, steps: int) -> Clip:
    """One Atari episode (Atari 100k settings, random policy) of up to ``steps`` agent steps."""
    import ale_py

    from wmkit.dreamer.envs import Atari

    env = Atari(game, seed=0)
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=int(seed))
    names = tuple(ale_py.Action(a).name for a in env.actions)
    frames, actions, rewards, dones = [], [], [], []
    for _ in range(steps):
        a = int(rng.integers(len(names)))
        frames.append(obs["image"])
        actions.append(a)
        obs = env.step(a)
        rewards.append(float(obs["reward"]))
        dones.append(bool(obs["is_terminal"]))
        if obs["is_last"]:
            break
    env.close()
    meta = dict(source=f"atari:{game}:seed{seed}", fps=15.0, episode=f"atari-{game}-{seed}", env=f"atari100k:{game}",
                seed=int(seed), policy="uniform random", frame_skip=4)
    return Clip(np.stack(frames), np.asarray(actions, np.int64), ActionSpace("discrete", n=len(names), names=names),
                np.asarray(rewards, np.float32), np.asarray(dones, bool), meta)


def atari_clips(game: str = "pong", episodes: int = 4, steps: int = 500, seed: int = 0,
                cache: bool | str | os.PathLike = True, progress: bool = True) -> list[Clip]:
    """``episodes`` Atari episodes of ``game`` (any ale-py bundled ROM id, e.g. pong, breakout, ms_pacman)."""
    def one(i):
        s = seed * 100_003 + i
        return _cached("atari", f"{game}_s{s}_t{steps}", cache, lambda: record_atari(game, s, steps))
    return _episodes(f"atari {game}", episodes, progress, one)


# ------------------------------------------------------------------------------------------ stage 1
def worldmodels_clips(paths: str | os.PathLike | Sequence[str | os.PathLike], fps: float | None = None) -> list[Clip]:
    """Stage-1 episode files as clips (a folder of ``episode_*.npz`` or a list of files).

    The format (see :mod:`wmkit.worldmodels.data`): ``obs`` (T+1, H, W, 3) uint8, ``actions`` (T, A) float or
    (T,) int, ``rewards`` (T,), ``terminated``/``truncated`` (T,) bool, ``seed``; optional ``env_id``. The
    clip keeps all T+1 frames; the last frame has no action after it, so its action is the pad value,
    its reward 0, and ``meta["last_action_known"] = False``. The env is read from an ``env_id`` array if
    stored, else from the action dim: 3 floats = CarRacing-v3 (steer, gas, brake; 50 Hz), 1 float = VizDoom
    TakeCover (C's continuous output a in [-1, 1], see :mod:`wmkit.worldmodels.doom`; fps left 0 = unknown
    unless given); integer actions become a discrete space with n = ``n_actions`` if stored, else max + 1.
    """
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        paths = sorted(p.glob("episode_*.npz")) if p.is_dir() else [p]
        if not paths:
            raise FileNotFoundError(f"no episode_*.npz files in {p}")
    out = []
    for path in paths:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - any decode failure of the file is a format error naming it
            raise ClipFormatError(f"{path}: corrupt or truncated episode file ({type(e).__name__}: {e})") from e
        missing = [k for k in ("obs", "actions", "rewards", "terminated") if k not in arrays]
        if missing:
            raise ClipFormatError(f"{path}: missing arrays {missing} (a stage-1 episode file has obs, actions, "
                                  f"rewards, terminated, truncated, seed)")
        obs, act = arrays["obs"], arrays["actions"]
        T = len(act)
        if len(obs) != T + 1:
            raise ClipFormatError(f"{path}: {len(obs)} frames for {T} actions; expected actions + 1 frames")
        env_id = str(arrays["env_id"]) if "env_id" in arrays else \
            {(3,): "CarRacing-v3", (1,): "VizdoomTakeCover-v1"}.get(act.shape[1:], "unknown")
        if np.issubdtype(act.dtype, np.integer):
            n = int(arrays["n_actions"]) if "n_actions" in arrays else int(act.max()) + 1
            space = ActionSpace("discrete", n=n)
            actions = np.concatenate([act.astype(np.int64), [0]])
        else:
            names = ("steer", "gas", "brake") if act.shape[1:] == (3,) and "CarRacing" in env_id else \
                ("strafe",) if act.shape[1:] == (1,) and "Vizdoom" in env_id else ()
            space = ActionSpace("continuous", dim=act.shape[1], names=names)
            actions = np.concatenate([act.astype(np.float32), np.zeros((1, act.shape[1]), np.float32)])
        seed = int(arrays["seed"]) if "seed" in arrays else -1
        rate = fps if fps is not None else 50.0 if "CarRacing" in env_id else 0.0
        meta = dict(source=str(path), fps=float(rate), episode=f"{env_id}-{path.stem}", env=env_id, seed=seed,
                    last_action_known=False)
        out.append(Clip(obs, actions, space, np.concatenate([arrays["rewards"], [0.0]]).astype(np.float32),
                        np.concatenate([arrays["terminated"].astype(bool), [False]]), meta))
    return out
