"""Dreams: running the world inside M (Ha & Schmidhuber 2018, "Car Racing Dreams"; VizDoom experiment).

* :class:`DreamBatch` -- the batched core: B dreams stepped at once by one LSTM call. The state is
  (z_t, h_t, c_t); a step feeds [z_t, a_t] to M, samples z_{t+1} at temperature tau from the mixture,
  and reads r_t and done_t from M's extra heads. The controller observes [z_t, h_t] as in the paper.
* :class:`DreamEnv` -- one dream as a ``gymnasium.Env`` (passes ``gymnasium.utils.env_checker.check_env``);
  ``render()`` decodes z with V into a 64x64 frame.
* :class:`DreamVectorEnv` -- B dreams as a ``gymnasium.vector.VectorEnv`` (auto-reset on the next step).
* :func:`dream_returns` -- the CMA-ES fitness in the dream: every candidate x every rollout in one batch.
* :func:`dream_from_episode` -- re-dream a recorded episode from its real start with its real actions
  (the notebook's "real vs dreamed" comparison).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from wmkit.worldmodels.controller import Controller
from wmkit.worldmodels.data import ACTION_HIGH, ACTION_LOW, Episode, frames_to_tensor
from wmkit.worldmodels.mdnrnn import MDNRNN

Z_BOUND = 100.0


class DreamBatch:
    """B dreams in lock-step. ``reset(z0)`` then ``step(actions)``; observations are [z, h] (B, Z + H)."""

    def __init__(self, mdnrnn: MDNRNN, tau: float = 1.0, done_threshold: float = 0.5,
                 noise_period: int | None = None):
        self.noise_period = noise_period  # share random numbers between rows b and b + noise_period
        if mdnrnn.reward_head is None:
            raise ValueError("dreaming needs an MDNRNN with reward_done_heads=True (reward and done heads)")
        self.m, self.tau, self.done_threshold = mdnrnn.eval(), tau, done_threshold
        self.device = next(mdnrnn.parameters()).device
        self.generator = torch.Generator(device=self.device)

    @torch.no_grad()
    def reset(self, z0: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.z = z0.to(self.device, torch.float32)                  # (B, Z)
        self.state = self.m.initial_state(len(z0), self.device)     # 2 x (1, B, H)
        return self.obs()

    def obs(self) -> torch.Tensor:
        return torch.cat([self.z, self.state[0][0]], dim=-1)        # (B, Z + H)

    @torch.no_grad()
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """actions (B, 3) -> (obs (B, Z + H), reward (B,), done (B,) bool)."""
        out = self.m(self.z[:, None], actions.to(self.device, torch.float32)[:, None], self.state)
        self.z = self.m.sample_next(out, self.tau, self.generator, self.noise_period)  # (B, Z) z_{t+1}
        self.state = out.state
        reward = out.reward[:, -1]                                   # (B,)
        done = torch.sigmoid(out.done_logit[:, -1]) > self.done_threshold
        return self.obs(), reward, done


def _obs_space(m: MDNRNN) -> spaces.Box:
    """[z, h]: h is an LSTM output, inside [-1, 1]; z is bounded by +-Z_BOUND only nominally (a VAE's
    latents are O(1); gymnasium's checker wants finite bounds). Nothing is clipped."""
    high = np.concatenate([np.full(m.z_dim, Z_BOUND), np.ones(m.hidden)]).astype(np.float32)
    return spaces.Box(-high, high, dtype=np.float32)


def _initial_z(pool: torch.Tensor | None, rng: np.random.Generator, n: int, z_dim: int) -> torch.Tensor:
    """n starting latents: rows of a pool of real encoded frames, or N(0, I) without a pool."""
    if pool is None:
        return torch.from_numpy(rng.standard_normal((n, z_dim)).astype(np.float32))
    return pool[torch.from_numpy(rng.integers(0, len(pool), n))]


class DreamEnv(gym.Env):
    """One dream in M as a gymnasium environment. Observation: [z, h] float32; action: CarRacing's box.

    ``initial_z`` (N, Z): real encoded frames to start from (else z ~ N(0, I)). ``vae``: only needed
    for ``render_mode="rgb_array"``. Episodes end when M's done head says so or after ``max_steps``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, mdnrnn: MDNRNN, vae=None, initial_z: torch.Tensor | None = None,
                 tau: float = 1.0, max_steps: int = 1000, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if render_mode is not None and vae is None:
            raise ValueError("render_mode='rgb_array' needs a vae to decode the dreamed latents")
        self.core = DreamBatch(mdnrnn, tau)
        self.vae, self.render_mode, self.max_steps = vae, render_mode, max_steps
        self.initial_z = None if initial_z is None else torch.as_tensor(initial_z, dtype=torch.float32)
        self.observation_space = _obs_space(mdnrnn)
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        z0 = _initial_z(self.initial_z, self.np_random, 1, self.core.m.z_dim)
        obs = self.core.reset(z0, seed=int(self.np_random.integers(2**62)))
        self._t = 0
        return obs[0].cpu().numpy(), {}

    def step(self, action):
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (3,) or not np.isfinite(a).all():
            raise ValueError(f"DreamEnv.step expects a finite action of shape (3,), got {a.shape} {a}")
        obs, reward, done = self.core.step(torch.from_numpy(a)[None])
        self._t += 1
        return (obs[0].cpu().numpy(), float(reward[0]), bool(done[0]),
                self._t >= self.max_steps, {})

    @torch.no_grad()
    def render(self):
        if self.render_mode is None:
            return None
        img = self.vae.decode(self.core.z.to(next(self.vae.parameters()).device))  # (1, 3, 64, 64)
        return (img[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()


DREAM_ENV_ID = "wmkit/CarRacingDream-v0"
if DREAM_ENV_ID not in gym.registry:
    gym.register(id=DREAM_ENV_ID, entry_point="wmkit.worldmodels.dream_env:DreamEnv",
                 disable_env_checker=True)


def make_dream_env(mdnrnn: MDNRNN, vae=None, **kwargs) -> DreamEnv:
    """``gymnasium.make`` a :class:`DreamEnv` (so it has a spec) and return the unwrapped env."""
    return gym.make(DREAM_ENV_ID, mdnrnn=mdnrnn, vae=vae, **kwargs).unwrapped


class DreamVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` dreams stepped by one batched LSTM call (auto-reset on the step after done)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, mdnrnn: MDNRNN, num_envs: int, initial_z: torch.Tensor | None = None,
                 tau: float = 1.0, max_steps: int = 1000):
        self.core, self.num_envs, self.max_steps = DreamBatch(mdnrnn, tau), num_envs, max_steps
        self.initial_z = None if initial_z is None else torch.as_tensor(initial_z, dtype=torch.float32)
        self.single_observation_space = _obs_space(mdnrnn)
        self.single_action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        one = self.single_observation_space
        self.observation_space = spaces.Box(np.tile(one.low, (num_envs, 1)), np.tile(one.high, (num_envs, 1)),
                                            dtype=np.float32)
        self.action_space = spaces.Box(np.tile(ACTION_LOW, (num_envs, 1)),
                                       np.tile(ACTION_HIGH, (num_envs, 1)), dtype=np.float32)
        self._rng = np.random.default_rng()
        self._t = np.zeros(num_envs, int)
        self._needs_reset = np.zeros(num_envs, bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        z0 = _initial_z(self.initial_z, self._rng, self.num_envs, self.core.m.z_dim)
        obs = self.core.reset(z0, seed=int(self._rng.integers(2**62)))
        self._t[:] = 0
        self._needs_reset[:] = False
        return obs.cpu().numpy(), {}

    def step(self, actions):
        a = torch.as_tensor(np.asarray(actions, np.float32))
        if a.shape != (self.num_envs, 3):
            raise ValueError(
                f"DreamVectorEnv.step expects actions ({self.num_envs}, 3), got {tuple(a.shape)}")
        obs, reward, done = self.core.step(a)
        self._t += 1
        reward, term = reward.cpu().numpy(), done.cpu().numpy()
        trunc = self._t >= self.max_steps
        if self._needs_reset.any():  # envs that ended last step start a new dream now
            idx = np.flatnonzero(self._needs_reset)
            z0 = _initial_z(self.initial_z, self._rng, len(idx), self.core.m.z_dim).to(self.core.device)
            self.core.z[idx] = z0
            for s in self.core.state:
                s[:, idx] = 0.0
            reward[idx], term[idx], trunc[idx], self._t[idx] = 0.0, False, False, 0
            obs = self.core.obs()
        self._needs_reset = term | trunc
        return obs.cpu().numpy(), reward, term, trunc, {}


@torch.no_grad()
def dream_returns(params: np.ndarray, mdnrnn: MDNRNN, initial_z: torch.Tensor | None, rollouts: int,
                  horizon: int, tau: float = 1.0, seed: int = 0) -> np.ndarray:
    """Mean dreamed return of each controller in ``params`` (P, D) over ``rollouts`` dreams: (P,).

    All P * rollouts dreams run as one batch; a dream stops collecting reward once M says done.
    Every candidate sees the same starting latents and noise seed (common random numbers), so CMA-ES
    compares controllers, not luck.
    """
    P = len(params)
    core = DreamBatch(mdnrnn, tau, noise_period=rollouts)
    rng = np.random.default_rng(seed)
    z0 = _initial_z(initial_z, rng, rollouts, mdnrnn.z_dim).repeat(P, 1)  # (P * R, Z)
    obs = core.reset(z0, seed=seed)
    p = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=core.device)
    total = torch.zeros(P * rollouts, device=core.device)
    alive = torch.ones(P * rollouts, dtype=torch.bool, device=core.device)
    for _ in range(horizon):
        a = Controller.batched_act(p, obs.view(P, rollouts, -1)).reshape(P * rollouts, 3)
        obs, r, done = core.step(a)
        total += r * alive
        alive &= ~done
        if not alive.any():
            break
    return total.view(P, rollouts).mean(1).cpu().numpy()


@torch.no_grad()
def encode_episode(vae, ep: Episode, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """V's posterior for every frame of ``ep``: mu, logvar, each (T+1, Z) float32."""
    dev = next(vae.parameters()).device
    mus, lvs = [], []
    for s in range(0, len(ep.obs), batch):
        mu, lv = vae.encode(frames_to_tensor(ep.obs[s:s + batch]).to(dev))
        mus.append(mu.cpu())
        lvs.append(lv.cpu())
    return torch.cat(mus).numpy(), torch.cat(lvs).numpy()


@torch.no_grad()
def dream_from_episode(vae, mdnrnn: MDNRNN, ep: Episode, start: int = 0, horizon: int = 100,
                       context: int = 10, tau: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Re-dream ``ep`` from frame ``start``: M reads ``context`` real frames, then dreams ``horizon``
    steps on its own with the episode's real actions. Returns uint8 'real' and 'dream' (horizon, 64, 64, 3),
    the real rewards and the dreamed ones (horizon,).
    """
    if start + context + horizon > len(ep):
        raise ValueError(f"episode has {len(ep)} steps; start + context + horizon = "
                         f"{start + context + horizon} is too long")
    vae.eval()
    mdnrnn.eval()
    dev = next(vae.parameters()).device
    mu, _ = encode_episode(vae, ep)
    z = torch.from_numpy(mu).to(dev)                                          # (T+1, Z)
    acts = torch.from_numpy(ep.actions).to(dev)                               # (T, 3)
    state = None
    if context > 0:  # teacher-forced warm-up on real latents
        out = mdnrnn(z[None, start:start + context], acts[None, start:start + context])
        state = out.state
    core = DreamBatch(mdnrnn, tau)
    core.reset(z[start + context][None], seed=seed)
    if state is not None:
        core.state = state
    zs, rewards = [], []
    for t in range(start + context, start + context + horizon):
        zs.append(core.z)
        _, r, _ = core.step(acts[t][None])
        rewards.append(float(r[0]))
    dream = vae.decode(torch.cat(zs))                                          # (horizon, 3, 64, 64)
    dream = (dream.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
    span = slice(start + context, start + context + horizon)
    return {"real": ep.obs[span], "dream": dream, "real_reward": ep.rewards[span],
            "dream_reward": np.asarray(rewards, np.float32)}
