"""Replay buffer and train ratio for DreamerV3 (Hafner et al. 2023, Sec. 4 "Replay"; official
``embodied.replay`` with uniform selection and ``embodied.when.Ratio``).

One environment writes one stream of steps. Each stored step holds what the world model needs at time
t: the observation (``image`` and/or ``vector``), the action that LED TO it (zeros on ``is_first``), the
reward received on arriving, ``is_first`` and ``is_terminal``. Sequences of ``batch_length`` consecutive
steps are sampled uniformly; they may cross episode boundaries, which ``is_first`` marks (the RSSM
resets its state there), exactly as in the official code.

``train_ratio`` = replayed steps per environment step (official meaning): with batch B x T each update
replays B*T steps, so the loop trains ``train_ratio / (B*T)`` times per env step on average.

``online=True`` is the current official replay's online queue (``replay.online: True``): every time
``online_length`` new steps have completed a fresh non-overlapping window, its start is queued, and
training batches take queued windows first (each once) before sampling uniformly -- so every new step is
trained on at least once soon after it arrives. The 2023 code samples uniformly only (``replay_online:
False``).

``latents={"deter": D, "stoch": S*K}`` adds the current code's ``replay_context``: each step also stores
the RSSM latent the policy computed there (``set_latent``; zeros until then, e.g. during the random
prefill); ``sample(..., context=1)`` returns T steps plus the stored latent of the step BEFORE them, from
which the world model starts instead of the initial state, and ``write_latents`` stores the latents the
update recomputed (official ``Agent.train`` -> ``outs['replay']`` -> ``replay.update``).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from wmkit.checkpoint import load_state, save_state

BOOKKEEPING = {"action": np.float32, "reward": np.float32, "is_first": bool, "is_terminal": bool}


class Replay:
    """Bounded FIFO buffer of steps with uniform (B, T) sequence sampling.

    ``obs_space`` maps obs keys to ``(shape, dtype)``; ``act_dim`` is the action width (one-hot size for
    discrete actions). Storage is preallocated, so memory = capacity x step size (64x64x3 uint8 image:
    12 KiB per step, 1M steps = 12 GiB -- the gpu profile's size).
    """

    def __init__(self, obs_space: dict, act_dim: int, capacity: int, seed: int = 0, online: bool = False,
                 online_length: int = 0, latents: dict[str, int] | None = None):
        if online and online_length < 1:
            raise ValueError(f"online=True needs online_length >= 1 (the batch length), got {online_length}")
        self.online, self.online_length = bool(online), int(online_length)
        self.queue: deque[int] = deque()   # chronological starts of fresh windows (online replay)
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 steps, got {capacity}")
        if not obs_space:
            raise ValueError("obs_space is empty; expected 'image' and/or 'vector'")
        self.obs_space = {k: (tuple(s), np.dtype(d)) for k, (s, d) in obs_space.items()}
        self.act_dim, self.capacity = int(act_dim), int(capacity)
        self.data = {k: np.zeros((capacity, *s), d) for k, (s, d) in self.obs_space.items()}
        self.data["action"] = np.zeros((capacity, self.act_dim), np.float32)
        for k in ("reward", "is_first", "is_terminal"):
            self.data[k] = np.zeros((capacity,), BOOKKEEPING[k])
        self.latent_keys = [f"latent_{k}" for k in (latents or {})]
        for k, dim in (latents or {}).items():
            self.data[f"latent_{k}"] = np.zeros((capacity, int(dim)), np.float32)
        self.total = 0  # steps ever added; the next write goes to total % capacity
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def add(self, obs: dict, action) -> None:
        """Store one step: ``obs`` from the env (with reward/is_first/is_terminal) and the action that
        led to it (ignored and stored as zeros when ``obs['is_first']``)."""
        i = self.total % self.capacity
        for k, (shape, dtype) in self.obs_space.items():
            if k not in obs:
                raise ValueError(f"Replay.add: observation is missing {k!r}")
            v = np.asarray(obs[k])
            if v.shape != shape or v.dtype != dtype:
                raise ValueError(f"Replay.add: {k!r} must be {shape} {dtype.name}, "
                                 f"got {v.shape} {v.dtype.name}")
            self.data[k][i] = v
        first = bool(obs["is_first"])
        a = np.zeros(self.act_dim, np.float32) if first or action is None else np.asarray(action, np.float32)
        if a.shape != (self.act_dim,):
            raise ValueError(f"Replay.add: action must have shape ({self.act_dim},), got {a.shape}")
        self.data["action"][i] = a
        self.data["reward"][i] = obs["reward"]
        self.data["is_first"][i] = first
        self.data["is_terminal"][i] = bool(obs["is_terminal"])
        for k in self.latent_keys:   # no latent yet for a new step
            self.data[k][i] = 0.0
        self.total += 1
        if self.online and self.total % self.online_length == 0:   # a fresh window is complete
            self.queue.append(self.total - self.online_length)

    def _indices(self, batch_size: int, length: int, train: bool = True) -> np.ndarray:
        n = len(self)
        if n < length:
            raise ValueError(f"replay holds {n} steps, fewer than batch_length={length}; prefill more")
        oldest = self.total - n  # chronological position of the oldest stored step
        starts = oldest + self.rng.integers(0, n - length + 1, batch_size)  # uniform over valid windows
        if self.online and train:   # queued fresh windows first (the RNG stream is the same either way)
            k = 0
            while self.queue and k < batch_size:
                start = self.queue.popleft()
                if start >= oldest and start + length <= self.total:   # still stored, long enough
                    starts[k] = start
                    k += 1
        return (starts[:, None] + np.arange(length)[None]) % self.capacity  # (B, T)

    def sample(self, batch_size: int, length: int, device: str | torch.device = "cpu", train: bool = True,
               context: int = 0) -> dict:
        """A batch of ``batch_size`` sequences of ``length`` steps as torch tensors (B, T, ...).
        ``train=False`` (reports, videos) never takes from the online queue.

        ``context=0``: the first step of every sequence is marked ``is_first`` (the model starts from a
        fresh state there, as the 2023 replay does), and its action zeroed to match. ``context=1``
        (``replay_context``): the sequence is taken one step later and ``context_<key>`` (B, ...) holds
        the stored latents of the step before it; ``index`` (B, T) the buffer rows for ``write_latents``.
        """
        if context not in (0, 1):
            raise ValueError(f"context must be 0 or 1 (the official replay_context), got {context}")
        if context and not self.latent_keys:
            raise ValueError("sample(context=1) needs a Replay built with latents={'deter': D, 'stoch': S*K}")
        idx = self._indices(batch_size, length + context, train)
        batch = {k: v[idx[:, context:]] for k, v in self.data.items() if k not in self.latent_keys}  # (B, T, ...)
        if context:
            for k in self.latent_keys:
                batch[f"context_{k[len('latent_'):]}"] = self.data[k][idx[:, 0]]               # (B, ...)
            batch["index"] = idx[:, 1:].astype(np.int64)
        else:
            batch["is_first"][:, 0] = True
            batch["action"][:, 0] = 0.0
        return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}

    def set_latent(self, position: int, **latents) -> None:
        """Store the policy's latents (numpy/tensors of the registered widths) for chronological step
        ``position`` (``total - 1`` = the newest)."""
        if not self.total - len(self) <= position < self.total:
            raise ValueError(f"position {position} is not stored (steps {self.total - len(self)}..{self.total - 1})")
        for k, v in latents.items():
            self.data[f"latent_{k}"][position % self.capacity] = np.asarray(v, np.float32).reshape(-1)

    def write_latents(self, index, **latents) -> None:
        """Write recomputed latents (B, T, ...) back to buffer rows ``index`` (B, T) from ``sample``."""
        index = np.asarray(index)
        for k, v in latents.items():
            self.data[f"latent_{k}"][index] = np.asarray(v, np.float32)

    # -- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        n = len(self)
        order = (self.total - n + np.arange(n)) % self.capacity  # oldest -> newest
        return {"data": {k: v[order] for k, v in self.data.items()}, "total": self.total,
                "capacity": self.capacity, "rng": self.rng.bit_generator.state,
                "queue": np.asarray(list(self.queue), np.int64)}

    def load_state_dict(self, sd: dict) -> None:
        # Steps are stored oldest -> newest, so a buffer of another capacity (a run resumed with more
        # --steps) can take them; a smaller one keeps the newest.
        n, total = len(next(iter(sd["data"].values()))), int(sd["total"])
        keep = min(n, self.capacity)
        pos = (total - keep + np.arange(keep)) % self.capacity
        for k, v in sd["data"].items():
            if k not in self.data or self.data[k].shape[1:] != np.shape(v)[1:]:
                raise ValueError(f"replay checkpoint entry {k!r} {np.shape(v)[1:]} does not match this "
                                 f"buffer's spaces {({k: d.shape[1:] for k, d in self.data.items()})}")
            self.data[k][pos] = np.asarray(v)[n - keep:]
        self.total = total
        self.rng.bit_generator.state = sd["rng"]
        self.queue = deque(int(x) for x in np.asarray(sd.get("queue", np.zeros(0, np.int64))).reshape(-1))

    def save(self, path) -> None:
        save_state(path, self.state_dict(), {"kind": "dreamer-replay", "steps": len(self)})

    def load(self, path) -> None:
        self.load_state_dict(load_state(path))

    def episode_tail(self) -> np.ndarray:
        """Actions of the current (unfinished) episode after its first step, oldest first, for rebuilding
        the env exactly on resume. Empty if the last stored step starts an episode."""
        n = len(self)
        back = 0
        while back < n:
            i = (self.total - 1 - back) % self.capacity
            if self.data["is_first"][i]:
                break
            back += 1
        if back == n:
            raise ValueError("the current episode started before the oldest replay step; cannot rebuild it")
        idx = (self.total - back + np.arange(back)) % self.capacity
        return self.data["action"][idx]


class TrainRatio:
    """How many updates to run after env step ``step`` so that replayed steps / env steps -> ratio.

    ``ratio`` = train_ratio / (batch_size * batch_length) updates per env step; fractional ratios carry
    over (official ``embodied.when.Ratio``). The first call returns 1.
    """

    def __init__(self, updates_per_step: float):
        if updates_per_step < 0:
            raise ValueError(f"updates_per_step must be >= 0, got {updates_per_step}")
        self.ratio, self.prev = float(updates_per_step), None

    def __call__(self, step: int) -> int:
        if self.ratio == 0:
            return 0
        if self.prev is None:
            self.prev = float(step)
            return 1
        repeats = int((step - self.prev) * self.ratio)
        self.prev += repeats / self.ratio
        return repeats

    def state_dict(self) -> dict:
        return {"ratio": self.ratio, "prev": self.prev}

    def load_state_dict(self, sd: dict) -> None:
        self.ratio, self.prev = float(sd["ratio"]), sd["prev"]
