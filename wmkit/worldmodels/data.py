"""Rollout data for World Models (Ha & Schmidhuber 2018, Car Racing experiment, "Procedure", step 1).

The paper collects 10,000 rollouts of CarRacing with a random policy and trains V and M on them. Here:

* What the paper's code did (``carracing/extract.py``): every episode gets a *random-weight agent* --
  V, M and C with fresh weights drawn from a Cauchy distribution of scale s ~ U(0, 0.01) -- and the
  actions are C's: a = tanh(W [z, h] + b) squashed to the box. :func:`random_weight_policy` does exactly
  that (``policy="random_weights"``). wmkit's default is different:
* :func:`brownian_actions` -- the random exploration: a smoothly varying ("Brownian") action process,
  a_{t+1} = clip(a_t + sqrt(dt) * eps), eps ~ N(0, I), so the car steers in long arcs instead of
  jittering in place as a random-weight agent mostly does (plus, by default, half of the episodes
  following the road; see :func:`collect`).
* :func:`preprocess_frame` -- 96x96x3 -> crop the dashboard (rows 84..95) -> 64x64x3 uint8, as in the
  paper's code.
* :func:`collect_episode` / :func:`collect` -- roll out gymnasium ``CarRacing-v3`` (the seed's
  ``CarRacing-v2`` was renamed ``v3`` in gymnasium 1.0) in parallel worker processes with a progress bar.
* Episodes on disk: one compressed ``.npz`` per episode (:func:`save_episode` / :func:`load_episode`),
  with ``obs`` (T+1, 64, 64, 3) uint8 -- the observation before each action plus the final one --,
  ``actions`` (T, A) float32 (A = 3 for CarRacing, 1 for VizDoom), ``rewards`` (T,) float32,
  ``terminated`` / ``truncated`` (T,) bool and
  the ``seed`` that reproduces the episode. Any corrupt, truncated or malformed file raises
  :class:`EpisodeFormatError` naming the file.
* :class:`FrameDataset` (frames for V) and :class:`LatentSequenceDataset` (latent sequences for M).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from wmkit.utils import process_pool

ENV_ID = "CarRacing-v3"
FRAME_SHAPE = (64, 64, 3)
ACTION_DIM = 3
ACTION_LOW = np.array([-1.0, 0.0, 0.0], dtype=np.float32)  # steer, gas, brake
ACTION_HIGH = np.array([1.0, 1.0, 1.0], dtype=np.float32)
EPISODE_KEYS = ("obs", "actions", "rewards", "terminated", "truncated", "seed")

Policy = Callable[[np.ndarray, int], np.ndarray]  # (64x64x3 uint8 frame, t) -> action (3,)


class EpisodeFormatError(ValueError):
    """An episode file (or array) is corrupt, truncated, or has the wrong shapes/dtypes."""


@dataclass
class Episode:
    """One rollout. ``obs`` has one more frame than ``actions`` (the observation after the last step)."""

    obs: np.ndarray         # (T+1, 64, 64, 3) uint8
    actions: np.ndarray     # (T, A) float32: A = 3 for CarRacing, 1 for VizDoom
    rewards: np.ndarray     # (T,) float32
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray   # (T,) bool
    seed: int

    def __len__(self) -> int:
        return len(self.actions)


# ------------------------------------------------------------------------------------------ actions
def brownian_actions(n: int, rng: np.random.Generator, dt: float = 0.05,
                     start: np.ndarray | None = None, brake_floor: float = -2.0) -> np.ndarray:
    """``n`` actions of the random exploration policy: a clipped Brownian motion in action space.

    ``dt`` sets how fast actions drift (std of one increment = sqrt(dt)). Steer and gas wander inside
    their ranges. The brake wanders inside [brake_floor, 1] and is then clipped at 0, so with the
    default it is off about two thirds of the time yet still covers all of [0, 1]: a brake as busy as
    the gas keeps the car standing still, and a brake that never goes above a small value lets a
    controller trained in the dream exploit M where it has seen no braking. The first point is drawn
    uniformly unless ``start`` (in the internal box) is given. Returns (n, 3) float32.
    """
    if n < 0 or dt <= 0:
        raise ValueError(f"brownian_actions needs n >= 0 and dt > 0, got n={n}, dt={dt}")
    low = np.array([ACTION_LOW[0], ACTION_LOW[1], min(brake_floor, 0.0)], np.float32)
    a = rng.uniform(low, ACTION_HIGH).astype(np.float32) if start is None else np.asarray(start, np.float32)
    out = np.empty((n, ACTION_DIM), np.float32)
    for t in range(n):
        out[t] = a
        a = np.clip(a + np.sqrt(dt) * rng.standard_normal(ACTION_DIM), low, ACTION_HIGH)
    out[:, 2] = np.maximum(out[:, 2], 0.0)
    return out


def random_weight_policy(seed: int, z_dim: int = 32, hidden: int = 256) -> Policy:
    """The paper's CarRacing data policy: V, M and C with random Cauchy weights, a fresh agent per episode.

    As ``carracing/extract.py`` + ``model.py`` (``init_random_model_params(stdev=np.random.rand() * 0.01)``):
    s ~ U(0, 0.01) is drawn once per episode and every weight is ``standard_cauchy * s``. The paper's
    V and M ``set_model_params`` then divide by 10,000 (their JSON format stores weights as integers x 1e4)
    while C's does not, so V and M get Cauchy(0, s / 1e4) -- practically zero: z = mu + sigma * eps is
    pure N(0, I) noise and M's h stays ~0 -- and C gets Cauchy(0, s). Each step a = tanh(W [z, h] + b),
    gas = (a_1 + 1) / 2, brake = clip(a_2, 0, 1), then M steps on [z, a]. The actions are thus a per-episode
    bias plus i.i.d. noise through W, with Cauchy's heavy tail making some agents steer or brake hard.
    Returns a ``policy(frame, t) -> action (3,)`` for :func:`collect_episode`; deterministic given ``seed``.
    """
    from wmkit.worldmodels.controller import squash_actions
    from wmkit.worldmodels.mdnrnn import MDNRNN
    from wmkit.worldmodels.vae import ConvVAE

    rng = np.random.default_rng(seed)
    stdev = float(rng.uniform()) * 0.01
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    vae, m = ConvVAE(z_dim).eval(), MDNRNN(z_dim, ACTION_DIM, hidden, reward_done_heads=False).eval()
    W = torch.empty(ACTION_DIM, z_dim + hidden)
    b = torch.empty(ACTION_DIM)
    with torch.no_grad():
        for p, scale in [*((p, stdev / 1e4) for p in [*vae.parameters(), *m.parameters()]), (W, stdev), (b, stdev)]:
            u = torch.rand(p.shape, generator=gen)                # inverse CDF of the standard Cauchy:
            p.copy_(torch.tan(torch.pi * (u - 0.5)) * scale)        # tan(pi (u - 1/2)) ~ Cauchy(0, 1)
    state = m.initial_state(1)

    @torch.no_grad()
    def policy(frame: np.ndarray, t: int) -> np.ndarray:
        nonlocal state
        mu, logvar = vae.encode(frames_to_tensor(np.array(frame[None])))         # (1, Z) each
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)  # (1, Z)
        a = squash_actions(torch.cat([z, state[0][0]], -1) @ W.T + b)           # (1, 3)
        state = m(z[:, None], a[:, None], state).state
        return a[0].numpy().astype(np.float32)

    return policy


# ------------------------------------------------------------------------------------------ frames
def preprocess_frame(frame: np.ndarray) -> np.ndarray:
    """CarRacing 96x96x3 uint8 -> 64x64x3 uint8: drop the dashboard (rows 84+), resize (paper's code)."""
    frame = np.asarray(frame)
    if frame.shape != (96, 96, 3) or frame.dtype != np.uint8:
        raise ValueError(f"preprocess_frame expects a (96, 96, 3) uint8 CarRacing frame, "
                         f"got shape {frame.shape} dtype {frame.dtype}")
    return np.asarray(Image.fromarray(frame[:84]).resize(FRAME_SHAPE[:2], Image.BILINEAR))


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Validate a stack of frames: (N, 64, 64, 3) uint8. Raises EpisodeFormatError naming ``name``."""
    if not isinstance(frames, np.ndarray):
        raise EpisodeFormatError(f"{name}: expected a NumPy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1:] != FRAME_SHAPE:
        raise EpisodeFormatError(f"{name}: expected frames of shape (N, 64, 64, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise EpisodeFormatError(f"{name}: expected dtype uint8 (0..255), got {frames.dtype}")
    return frames


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> (N, 3, 64, 64) float32 in [0, 1], the input V expects."""
    check_frames(frames)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, 64, 64)


# ------------------------------------------------------------------------------------------ episodes
def _validate(ep: Episode, where: str) -> Episode:
    check_frames(ep.obs, f"{where}: obs")
    T = len(ep.obs) - 1
    if T < 1:
        raise EpisodeFormatError(f"{where}: an episode needs at least 2 observations, got {len(ep.obs)}")
    A = ep.actions.shape[1] if ep.actions.ndim == 2 and ep.actions.shape[1] >= 1 else ACTION_DIM
    # CarRacing episodes have A = 3 (steer, gas, brake); VizDoom TakeCover episodes A = 1 (doom.py)
    expect = {"actions": ((T, A), np.floating), "rewards": ((T,), np.floating),
              "terminated": ((T,), np.bool_), "truncated": ((T,), np.bool_)}
    for key, (shape, kind) in expect.items():
        arr = getattr(ep, key)
        if arr.shape != shape:
            raise EpisodeFormatError(f"{where}: {key} has shape {arr.shape}, expected {shape} "
                                     f"(obs has {T + 1} frames = steps + 1)")
        if not np.issubdtype(arr.dtype, kind):
            raise EpisodeFormatError(f"{where}: {key} has dtype {arr.dtype}, expected {kind.__name__}")
    return ep


def save_episode(path: str | os.PathLike, ep: Episode) -> Path:
    """Validate and write ``ep`` as a compressed .npz (atomic: temp file then rename)."""
    path = Path(path)
    _validate(ep, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, obs=ep.obs, actions=ep.actions.astype(np.float32),
                        rewards=ep.rewards.astype(np.float32), terminated=ep.terminated,
                        truncated=ep.truncated, seed=np.int64(ep.seed))
    os.replace(tmp, path)
    return path


def load_episode(path: str | os.PathLike) -> Episode:
    """Read one episode file; any corruption or format problem raises EpisodeFormatError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in EPISODE_KEYS if k not in f.files]
            if missing:
                raise EpisodeFormatError(f"{path}: missing arrays {missing}; expected {list(EPISODE_KEYS)}")
            data = {k: f[k] for k in EPISODE_KEYS}
    except EpisodeFormatError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise EpisodeFormatError(
            f"{path}: corrupt or truncated episode file ({type(e).__name__}: {e})") from e
    ep = Episode(obs=data["obs"], actions=data["actions"], rewards=data["rewards"],
                 terminated=data["terminated"], truncated=data["truncated"], seed=int(data["seed"]))
    return _validate(ep, str(path))


def episode_paths(data_dir: str | os.PathLike) -> list[Path]:
    """Sorted episode files in ``data_dir``; a clear error when there are none."""
    paths = sorted(Path(data_dir).glob("episode_*.npz"))
    if not paths:
        raise FileNotFoundError(
            f"no episode_*.npz files in {data_dir}; run `wmkit worldmodels collect` first")
    return paths


# ------------------------------------------------------------------------------------------ collection
def collect_episode(seed: int, max_steps: int = 1000, policy: Policy | None = None,
                    dt: float = 0.05, follow_road: bool = False) -> Episode:
    """Roll out one CarRacing-v3 episode. ``policy=None`` uses :func:`brownian_actions`.

    ``follow_road=True`` (beyond the paper) steers with :func:`wmkit.episodes.road_follower` plus
    half of the Brownian steering, with Brownian gas and brake: the car wobbles along the road, so
    the data shows the track and what earns reward. ``seed`` seeds the track (env.reset(seed=...))
    and the exploration noise, so the same seed and options give the same episode.
    """
    from wmkit.carracing import make_car_racing
    from wmkit.episodes import road_follower

    env = make_car_racing(max_episode_steps=max_steps)  # gymnasium's CarRacing-v3, its road drawn faster
    rng = np.random.default_rng(seed)
    explore = brownian_actions(max_steps, rng, dt=dt) if policy is None else None
    obs96, _ = env.reset(seed=seed)
    frames = [preprocess_frame(obs96)]
    acts, rews, terms, truncs = [], [], [], []
    for t in range(max_steps):
        if policy is not None:
            a = np.asarray(policy(frames[-1], t), np.float32)
        elif follow_road:
            steer = road_follower(obs96)[0] + 0.5 * explore[t, 0]
            a = np.array([np.clip(steer, -1, 1), explore[t, 1], explore[t, 2]], np.float32)
        else:
            a = explore[t]
        obs96, r, term, trunc, _ = env.step(a)
        frames.append(preprocess_frame(obs96))
        acts.append(a)
        rews.append(r)
        terms.append(term)
        truncs.append(trunc)
        if term or trunc:
            break
    env.close()
    truncs[-1] = truncs[-1] or not terms[-1]  # stopped by max_steps -> truncated
    return Episode(obs=np.stack(frames), actions=np.stack(acts).astype(np.float32),
                   rewards=np.asarray(rews, np.float32), terminated=np.asarray(terms, bool),
                   truncated=np.asarray(truncs, bool), seed=int(seed))


POLICIES = ("brownian", "random_weights")


def _collect_to_file(seed: int, out: str, max_steps: int, dt: float,
                     follow_road: bool = False, policy: str = "brownian") -> tuple[str, int, float]:
    if policy == "random_weights":
        torch.set_num_threads(1)  # one tiny agent per worker process
        ep = collect_episode(seed, max_steps=max_steps, policy=random_weight_policy(seed))
    else:
        ep = collect_episode(seed, max_steps=max_steps, dt=dt, follow_road=follow_road)
    save_episode(out, ep)
    return out, len(ep), float(ep.rewards.sum())


def collect(out_dir: str | os.PathLike, n_rollouts: int, max_steps: int, seed: int = 0,
            workers: int = 1, dt: float = 0.05, progress: bool = True,
            follow_fraction: float = 0.0, policy: str = "brownian") -> list[Path]:
    """Collect ``n_rollouts`` exploration episodes into ``out_dir/episode_<seed>.npz``.

    ``policy="random_weights"``: the paper's data, every episode from a fresh random-weight V+M+C agent
    (:func:`random_weight_policy`; ``dt`` and ``follow_fraction`` are then unused).
    ``policy="brownian"`` (wmkit's default): Brownian exploration as below.

    Episode i uses seed ``seed + i``; files that already exist and load cleanly are kept (so an
    interrupted collection resumes). ``workers > 1`` runs episodes in parallel processes. Every
    k-th episode (a ``follow_fraction`` of them) follows the road with Brownian noise, the others are
    pure Brownian exploration (``follow_fraction=0``: the paper's random data).
    """
    from tqdm.auto import tqdm

    if policy not in POLICIES:
        raise ValueError(f"collect: policy must be one of {POLICIES}, got {policy!r}")
    if policy == "random_weights":
        follow_fraction = 0.0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, done = [], []
    for i in range(n_rollouts):
        p = out_dir / f"episode_{seed + i:06d}.npz"
        follow = int((i + 1) * follow_fraction) > int(i * follow_fraction)
        try:
            load_episode(p)
            done.append(p)
        except (FileNotFoundError, EpisodeFormatError):
            todo.append((seed + i, str(p), follow))
    bar = tqdm(total=n_rollouts, initial=len(done), desc="collect", unit="ep", disable=not progress)
    if workers <= 1:
        for s, p, f in todo:
            _collect_to_file(s, p, max_steps, dt, f, policy)
            done.append(Path(p))
            bar.update()
    else:
        with process_pool(workers) as pool:
            futs = [pool.submit(_collect_to_file, s, p, max_steps, dt, f, policy) for s, p, f in todo]
            for fut in as_completed(futs):
                done.append(Path(fut.result()[0]))
                bar.update()
    bar.close()
    return sorted(done)


# ------------------------------------------------------------------------------------------ datasets
class FrameDataset(Dataset):
    """Every frame of a set of episodes, for training V. Item: (3, 64, 64) float32 in [0, 1].

    Frames stay uint8 in memory (12 KB each) and are converted per item.
    """

    def __init__(self, episodes: Sequence[str | os.PathLike | Episode]):
        if len(episodes) == 0:
            raise ValueError("FrameDataset needs at least one episode")
        eps = [e if isinstance(e, Episode) else load_episode(e) for e in episodes]
        self.frames = torch.from_numpy(np.concatenate([e.obs for e in eps]))  # (N, 64, 64, 3) uint8

    @classmethod
    def from_frames(cls, frames: np.ndarray) -> FrameDataset:
        self = cls.__new__(cls)
        self.frames = torch.from_numpy(check_frames(frames, "FrameDataset.from_frames"))
        return self

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.frames[i].permute(2, 0, 1).float().div(255.0)  # (3, 64, 64)


class ShuffledFrames(IterableDataset):
    """Frames of many episodes in shuffled batches without holding them all in memory.

    Paper scale is 10M frames (120 GB as uint8), so each pass reads ``chunk_episodes`` episodes at a
    time (in a fresh random order), shuffles their frames together and yields (B, 3, 64, 64) float
    batches. When every episode fits in one chunk this is an ordinary full shuffle.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], batch_size: int, chunk_episodes: int = 200,
                 seed: int = 0, drop_last: bool = True):
        if not paths:
            raise ValueError("ShuffledFrames needs at least one episode file")
        self.paths, self.batch_size, self.chunk = [Path(p) for p in paths], batch_size, chunk_episodes
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.paths))
        for c in range(0, len(order), self.chunk):
            frames = np.concatenate([load_episode(self.paths[i]).obs for i in order[c:c + self.chunk]])
            perm = rng.permutation(len(frames))
            stop = len(perm) - (len(perm) % self.batch_size if self.drop_last else 0)
            for s in range(0, stop, self.batch_size):
                yield frames_to_tensor(frames[np.sort(perm[s:s + self.batch_size])])  # (B, 3, 64, 64)


class LatentSequenceDataset(Dataset):
    """Fixed-length windows of encoded episodes, for training M.

    Each episode is stored as V's posterior (mu, logvar) per frame; a fresh z ~ N(mu, sigma^2) is drawn
    every time a window is read (the paper's data augmentation). Item: dict with ``z`` (L+1, Z),
    ``actions`` (L, 3), ``rewards`` (L,), ``dones`` (L,) -- z[t+1] is the target for (z[t], a[t]).
    """

    def __init__(self, mus: Sequence[np.ndarray], logvars: Sequence[np.ndarray],
                 episodes: Sequence[Episode], seq_len: int, sample: bool = True):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.mus, self.logvars, self.seq_len, self.sample = list(mus), list(logvars), seq_len, sample
        self.actions = [e.actions for e in episodes]
        self.rewards = [e.rewards for e in episodes]
        self.dones = [e.terminated for e in episodes]
        self.index = []  # (episode, start): non-overlapping windows covering each episode
        for k, e in enumerate(episodes):
            if len(self.mus[k]) != len(e) + 1:
                raise ValueError(f"episode {k}: {len(self.mus[k])} latents but {len(e) + 1} frames")
            T = len(e)
            if T < seq_len:
                continue
            self.index += [(k, s) for s in range(0, T - seq_len + 1, seq_len)]
        if not self.index:
            raise ValueError(f"no episode is at least seq_len={seq_len} steps long")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k, s = self.index[i]
        L = self.seq_len
        mu = torch.from_numpy(self.mus[k][s:s + L + 1])  # (L+1, Z)
        z = mu
        if self.sample:
            std = torch.from_numpy(self.logvars[k][s:s + L + 1]).mul(0.5).exp()
            z = mu + std * torch.randn_like(std)
        return {"z": z.float(), "actions": torch.from_numpy(self.actions[k][s:s + L]),
                "rewards": torch.from_numpy(self.rewards[k][s:s + L]),
                "dones": torch.from_numpy(self.dones[k][s:s + L].astype(np.float32))}
