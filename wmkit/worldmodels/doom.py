"""VizDoom TakeCover: the World Models dream experiment (Ha & Schmidhuber 2018, section 5, "VizDoom Experiment").

The agent strafes left or right to dodge fireballs; its reward is the number of frames it survives. The
paper trains C **only inside M's dream** and then plays the real game. Facts from the paper's code
(hardmaru/WorldModelsExperiments ``doomrnn/``), each implemented here:

* frames (``doomreal._process_frame``): keep the top 5/6 of the screen (the paper's 640x480 screen kept
  rows 0..399, above the HUD), resize to 64x64, and invert the colours: ``(1 - x) * 255``.
* actions: C outputs one number a = tanh(W [z, c, h]) in [-1, 1] (no bias; ``config.py``: 1088 inputs,
  1 output); the real game gets MOVE_LEFT if a < -1/3, MOVE_RIGHT if a > 1/3, else nothing.
  M is trained on that continuous a, not on the button.
* data (``extract.py``): a random a ~ U(-1, 1) held for a random 1..10 frames, redrawn; episodes of at
  most 2,100 frames.
* M (``doomrnn.py``): LSTM 512, 5 Gaussians per latent, one extra output: the logit that the episode
  ends ("restart"), trained with cross-entropy whose positives weigh ``restart_factor`` = 10. The dream
  ends when that logit is > 0 and pays 1 per frame alive; it is capped at 2,100 frames.
* C sees z (64) and M's cell state c and hidden state h (512 each): ``model_state_space = 2``.
* CMA-ES: population 64, each candidate scored by its mean over 16 dreams; the deployed C is the mean;
  evaluation: 100 real episodes. Temperature tau: 1.15 for the paper's headline (1092 +- 556 frames).

The gymnasium id is ``VizdoomTakeCover-v1`` from the ``vizdoom`` wheel (game and WAD bundled; headless;
its Discrete(3) actions are 0 = none, 1 = MOVE_RIGHT, 2 = MOVE_LEFT).
"""

from __future__ import annotations

import os
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wmkit.utils import mean_and_se, process_pool, spearman  # noqa: F401  (spearman: re-exported)
from wmkit.worldmodels.data import Episode, EpisodeFormatError, load_episode, save_episode
from wmkit.worldmodels.mdnrnn import MDNRNN

DOOM_ENV_ID = "VizdoomTakeCover-v1"
MAX_FRAMES = 2100          # doomrnn: max_frame / max_episode_length
THRESHOLD = 0.3333         # doomreal: |a| above this presses a button
NOOP, RIGHT, LEFT = 0, 1, 2  # the vizdoom wheel's Discrete(3) for TakeCover's buttons (MOVE_LEFT, MOVE_RIGHT)
PAPER_TAU_TABLE = {0.10: (193, 58), 0.50: (196, 50), 1.00: (868, 511), 1.15: (1092, 556), 1.30: (753, 139)}
"""Paper, Table 2: real survival (mean, std over 100 episodes) of C trained in the dream at each tau."""
PAPER_RANDOM = 210         # "random policy: ~210 time steps" (paper, section 5)


# ---------------------------------------------------------------------------------------------- env
def preprocess_doom_frame(screen: np.ndarray, invert: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 screen -> (64, 64, 3) uint8: top 5/6 of the rows, bilinear resize, inverted colours."""
    screen = np.asarray(screen)
    if screen.ndim != 3 or screen.shape[2] != 3 or screen.dtype != np.uint8:
        raise ValueError(f"preprocess_doom_frame expects an (H, W, 3) uint8 screen, "
                         f"got shape {screen.shape} dtype {screen.dtype}")
    top = screen[: screen.shape[0] * 5 // 6]                                    # (200, 320, 3) of 240x320
    small = np.asarray(Image.fromarray(top).resize((64, 64), Image.BILINEAR))   # (64, 64, 3)
    return 255 - small if invert else small


def discrete_action(a: np.ndarray | float) -> np.ndarray:
    """C's continuous a in [-1, 1] -> the game's button: LEFT below -1/3, RIGHT above 1/3, else NOOP."""
    a = np.asarray(a, np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"discrete_action: non-finite action {a}")
    return np.where(a < -THRESHOLD, LEFT, np.where(a > THRESHOLD, RIGHT, NOOP)).astype(np.int64)


def make_doom_env():
    """The real game (gymnasium ``VizdoomTakeCover-v1``); needs the ``vizdoom`` package."""
    import gymnasium as gym

    try:
        from vizdoom import gymnasium_wrapper  # noqa: F401  (registers the Vizdoom* ids)
    except ImportError as e:
        raise ImportError("the Doom experiment needs the vizdoom package: pip install 'vizdoom>=1.3'") from e
    # ViZDoom keeps its settings in ./_vizdoom/ of the working directory and creates it on first use; two worker
    # processes starting at once in a fresh directory both try, and one can fail ("Failed to create ./_vizdoom/
    # directory: File exists", seen once, with a BrokenProcessPool). Creating it first (idempotently) removes the race.
    Path("_vizdoom").mkdir(exist_ok=True)
    return gym.make(DOOM_ENV_ID)


def random_repeat_actions(n: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's data policy: a ~ U(-1, 1), held for k ~ U{1..10} frames, then redrawn. (n, 1) float32."""
    out = np.empty((n, 1), np.float32)
    t = 0
    while t < n:
        k = int(rng.integers(1, 11))
        out[t:t + k] = rng.uniform(-1.0, 1.0)
        t += k
    return out


FIXED_POLICIES = ("random, held 1-10 frames", "random every frame", "stand still", "hold left", "hold right")
"""Simple policies whose real and dreamed survival are compared (:func:`policy_table`). The first is the
paper's data policy (``extract.py``); "random every frame" draws a new a ~ U(-1, 1) at every frame."""


def fixed_policy_actions(policy: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 actions in [-1, 1] of one of :data:`FIXED_POLICIES`."""
    if policy == FIXED_POLICIES[0]:
        return random_repeat_actions(n, rng)[:, 0]
    if policy == FIXED_POLICIES[1]:
        return rng.uniform(-1.0, 1.0, n).astype(np.float32)
    const = {"stand still": 0.0, "hold left": -1.0, "hold right": 1.0}
    if policy not in const:
        raise ValueError(f"unknown policy {policy!r}; expected one of {FIXED_POLICIES}")
    return np.full(n, const[policy], np.float32)


def collect_doom_episode(seed: int, max_steps: int = MAX_FRAMES, actions: np.ndarray | None = None) -> Episode:
    """One real TakeCover episode with the random-repeat policy (or the given (max_steps, 1) actions)."""
    env = make_doom_env()
    rng = np.random.default_rng(seed)
    acts = random_repeat_actions(max_steps, rng) if actions is None else np.asarray(actions, np.float32)
    obs, _ = env.reset(seed=int(seed))
    frames, rews, terms = [preprocess_doom_frame(obs["screen"])], [], []
    for t in range(max_steps):
        obs, r, term, trunc, _ = env.step(int(discrete_action(acts[t, 0])))
        frames.append(preprocess_doom_frame(obs["screen"]) if not term else frames[-1].copy())
        rews.append(r)
        terms.append(term)
        if term or trunc:
            break
    env.close()
    T = len(rews)
    truncated = np.zeros(T, bool)
    truncated[-1] = not terms[-1]  # stopped by the cap
    return Episode(obs=np.stack(frames), actions=acts[:T].copy(), rewards=np.asarray(rews, np.float32),
                   terminated=np.asarray(terms, bool), truncated=truncated, seed=int(seed))


def _collect_to_file(seed: int, out: str, max_steps: int) -> str:
    save_episode(out, collect_doom_episode(seed, max_steps))
    return out


def collect_doom(out_dir: str | os.PathLike, n_rollouts: int, seed: int = 0, max_steps: int = MAX_FRAMES,
                 workers: int = 1, progress: bool = True) -> list[Path]:
    """``n_rollouts`` random-policy episodes into ``out_dir/episode_<seed>.npz`` (same format as CarRacing's;
    existing valid files are kept, so an interrupted collection resumes)."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, done = [], []
    for i in range(n_rollouts):
        p = out_dir / f"episode_{seed + i:06d}.npz"
        try:
            load_episode(p)
            done.append(p)
        except (FileNotFoundError, EpisodeFormatError):
            todo.append((seed + i, str(p)))
    bar = tqdm(total=n_rollouts, initial=len(done), desc="collect Doom", unit="ep", disable=not progress)
    if workers <= 1:
        for s, p in todo:
            done.append(Path(_collect_to_file(s, p, max_steps)))
            bar.update()
    else:
        with process_pool(workers) as pool:
            for fut in as_completed([pool.submit(_collect_to_file, s, p, max_steps) for s, p in todo]):
                done.append(Path(fut.result()))
                bar.update()
    bar.close()
    return sorted(done)


# ---------------------------------------------------------------------------------------------- C
def doom_controller_dim(z_dim: int = 64, hidden: int = 512) -> int:
    """C's parameter count: one weight per input of [z, c, h], no bias (paper: 64 + 512 + 512 = 1088)."""
    return z_dim + 2 * hidden


# [eq:doom_controller]
def doom_act(params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """Many controllers at once: a = tanh(obs @ w). params (P, F); obs (P, N, F) = [z, c, h] -> (P, N)."""
    if params.ndim != 2 or obs.ndim != 3 or params.shape[0] != obs.shape[0] or params.shape[1] != obs.shape[2]:
        raise ValueError(f"doom_act: params {tuple(params.shape)} do not fit obs {tuple(obs.shape)} "
                         "(expected (P, F) and (P, N, F))")
    return torch.tanh(torch.einsum("pnf,pf->pn", obs, params))  # (P, N) in [-1, 1]
# [/eq:doom_controller]


def _obs(z: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return torch.cat([z, state[1][0], state[0][0]], dim=-1)  # (B, Z + 2H): [z, c, h] as the paper's code


# ---------------------------------------------------------------------------------------------- dream
@torch.no_grad()
def dream_survival(params: np.ndarray | None, m: MDNRNN, init_mu: torch.Tensor, init_logvar: torch.Tensor,
                   rollouts: int, tau: float = 1.15, max_steps: int = MAX_FRAMES, seed: int = 0,
                   actions: np.ndarray | None = None, skip_dead: bool = True) -> np.ndarray:
    """Frames each controller survives in M's dream, (P, rollouts) float: the CMA-ES fitness.

    Every candidate sees the same ``rollouts`` starting latents and noise (common random numbers).
    A dream starts from z ~ N(mu, sigma^2) of a real first frame (``initial_z.json`` in the paper),
    pays 1 per frame (including the frame M says it dies on) and ends when the done logit is > 0.
    ``params=None`` plays the random data policy instead (P = 1): is the dream as deadly as the game?
    ``actions`` (max_steps, rollouts) with ``params=None``: play these fixed action sequences instead (e.g.
    "hold left" = all -1), to ask whether dreamed survival depends on the actions as real survival does.
    ``skip_dead`` (speed only): M steps only the dreams still running, with the same random numbers, so the
    result equals the plain loop (``skip_dead=False``, every dream stepped until the last one dies), which
    a CMA-ES generation would otherwise spend mostly on dead dreams (``tests/test_worldmodels_doom.py``).
    """
    if m.done_head is None:
        raise ValueError("dream_survival needs an MDNRNN with a done head (reward_done_heads=True)")
    rand = None
    if actions is not None:
        if params is not None:
            raise ValueError("dream_survival: give params (a controller) or actions (fixed sequences), not both")
        rand = np.asarray(actions, np.float32)
        if rand.shape != (max_steps, rollouts):
            raise ValueError(f"dream_survival: actions must have shape (max_steps, rollouts) = "
                             f"{(max_steps, rollouts)}, got {rand.shape}")
        params = np.zeros((1, doom_controller_dim(m.z_dim, m.hidden)))
    elif params is None:  # the paper's random policy, one action sequence per dream: (T, R)
        rand = np.stack([random_repeat_actions(max_steps, np.random.default_rng([seed, r]))[:, 0]
                         for r in range(rollouts)], 1)
        params = np.zeros((1, doom_controller_dim(m.z_dim, m.hidden)))
    P, dev = len(params), next(m.parameters()).device
    g = torch.Generator(device=dev).manual_seed(int(seed))
    idx = torch.randint(0, len(init_mu), (rollouts,), generator=g)
    eps = torch.randn(rollouts, m.z_dim, generator=g)
    z = (init_mu[idx] + (0.5 * init_logvar[idx]).exp() * eps).to(dev).repeat(P, 1)        # (P * R, Z)
    state = m.initial_state(P * rollouts, dev)
    p = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=dev)             # (P, F)
    alive = torch.ones(P * rollouts, dtype=torch.bool, device=dev)
    steps = torch.zeros(P * rollouts, device=dev)
    for t in range(max_steps):
        if rand is None:
            a = doom_act(p, _obs(z, state).view(P, rollouts, -1)).reshape(P * rollouts, 1)  # (P * R, 1)
        else:
            a = torch.from_numpy(rand[t]).float().to(dev)[:, None]                          # (R, 1)
        steps += alive
        if not skip_dead or bool(alive.all()):  # the plain loop: every dream, dead or not
            out = m(z[:, None], a[:, None], state)
            z = m.sample_next(out, tau, g, noise_period=rollouts)                        # (P * R, Z)
            state = out.state
            alive &= out.done_logit[:, -1] <= 0.0                                        # logit > 0: dead
        else:                                   # fast path: only the L running dreams, the same noise
            live = alive.nonzero().squeeze(1)                                            # (L,)
            out = m(z[live, None], a[live, None], (state[0][:, live], state[1][:, live]))
            z, state = z.clone(), (state[0].clone(), state[1].clone())
            z[live] = m.sample_next(out, tau, g, noise_period=rollouts, rows=live)       # (L, Z)
            state[0][:, live], state[1][:, live] = out.state
            alive[live] = out.done_logit[:, -1] <= 0.0
        if not alive.any():
            break
    return steps.view(P, rollouts).cpu().numpy()


@torch.no_grad()
def dream_frames(params: np.ndarray, m: MDNRNN, vae, init_mu: torch.Tensor, init_logvar: torch.Tensor,
                 tau: float = 1.15, max_steps: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """One dream played by controller ``params`` (F,), decoded by V for watching: {'frames' (T, 64, 64, 3)
    uint8, 'p_done' (T,) M's death probability per frame, 'action' (T,)}; it stops where M says dead."""
    dev = next(m.parameters()).device
    g = torch.Generator(device=dev).manual_seed(int(seed))
    i = int(torch.randint(0, len(init_mu), (1,), generator=g))
    z = (init_mu[i] + (0.5 * init_logvar[i]).exp() * torch.randn(m.z_dim, generator=g))[None].to(dev)  # (1, Z)
    state = m.initial_state(1, dev)
    p = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=dev)[None]                  # (1, F)
    zs, pd, acts = [], [], []
    for _ in range(max_steps):
        a = doom_act(p, _obs(z, state)[None])[0]                                                    # (1,)
        out = m(z[:, None], a[:, None, None], state)
        zs.append(z)
        pd.append(float(torch.sigmoid(out.done_logit[0, -1])))
        acts.append(float(a[0]))
        z, state = m.sample_next(out, tau, g), out.state
        if out.done_logit[0, -1] > 0:
            break
    img = vae.decode(torch.cat(zs).to(next(vae.parameters()).device))                              # (T, 3, 64, 64)
    frames = (img.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
    return {"frames": frames, "p_done": np.asarray(pd, np.float32), "action": np.asarray(acts, np.float32)}


# ---------------------------------------------------------------------------------------------- real
@torch.no_grad()
def real_survival(params: np.ndarray | None, seeds: list[int], vae=None, m: MDNRNN | None = None,
                  max_steps: int = MAX_FRAMES, batch: int = 16, progress: bool = False,
                  record: int | None = None, policy: str = FIXED_POLICIES[0], workers: int = 1,
                  skip_dead: bool = True) -> dict:
    """Frames survived in the real game by controller ``params`` (F,) on each seed; ``params=None`` plays
    ``policy`` (one of :data:`FIXED_POLICIES`; default the paper's random data policy, a drawn from the seed).
    ``batch`` games run in lock-step, V/M/C batched over them; ``workers > 1`` plays the batches in that many
    processes (the same batches with the same random numbers, so the same result as ``workers=1``).
    ``skip_dead`` (speed only, the same result): V, C and M run only on the games of a batch still running;
    ``False`` runs them on every game until the batch's last one ends, as a plain lock-step loop would.

    As ``doomreal.py``: z is *sampled* from V's posterior of each frame, M's state steps on [z, a] and C
    sees [z, c, h]. Returns {'steps': (N,) int, 'frames': (T, 64, 64, 3) of episode ``record`` or None}.
    """
    from tqdm.auto import tqdm

    if params is not None and (vae is None or m is None):
        raise ValueError("real_survival: a controller needs vae and m (C sees V's z and M's state)")
    if workers < 1:
        raise ValueError(f"real_survival: workers must be >= 1, got {workers}")
    batches = [list(range(s, min(s + batch, len(seeds)))) for s in range(0, len(seeds), batch)]
    args = (params, [int(s) for s in seeds], vae, m, max_steps, record, policy, skip_dead)
    bar = tqdm(total=len(seeds), desc="real Doom episodes", disable=not progress)
    if workers == 1 or len(batches) == 1:
        steps, frames = _play_batches(*args, batches, bar.update)
    else:
        # each process plays every n-th batch (its own envs, V and M on one thread)
        steps, frames = np.zeros(len(seeds), np.int64), None
        n = min(workers, len(batches))
        with process_pool(n) as pool:
            futs = [pool.submit(_play_batches, *args, batches[w::n]) for w in range(n)]
            for fut in as_completed(futs):
                part, f = fut.result()
                steps += part
                frames = f if f is not None else frames
                bar.update(int((part > 0).sum()))
    bar.close()
    return {"steps": steps, "frames": frames}


@torch.no_grad()
def _play_batches(params, seeds, vae, m, max_steps, record, policy, skip_dead, batches, tick=None):
    """Play the episodes of ``batches`` (lists of indices into ``seeds``); the other entries of steps stay 0."""
    steps = np.zeros(len(seeds), np.int64)
    frames_out = []
    pool = [make_doom_env() for _ in range(max(len(b) for b in batches))]  # ~0.2 s each to start: reused
    for idx in batches:
        envs = pool[: len(idx)]
        obs = [e.reset(seed=seeds[i])[0]["screen"] for e, i in zip(envs, idx)]
        rngs = [np.random.default_rng(seeds[i]) for i in idx]
        rand_acts = [fixed_policy_actions(policy, max_steps, r) for r in rngs] if params is None else None
        alive = np.ones(len(idx), bool)
        watch = idx.index(record) if record is not None and record in idx else None
        if params is not None:
            dev = next(vae.parameters()).device
            p = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=dev)[None]  # (1, F)
            state = m.initial_state(len(idx), dev)
            g = torch.Generator(device=dev).manual_seed(seeds[idx[0]])
        for t in range(max_steps):
            if params is None:  # a fixed policy needs no frames (only the recorded episode's)
                a = np.array([ra[t] for ra in rand_acts], np.float32)
                if watch is not None and alive[watch]:
                    frames_out.append(preprocess_doom_frame(obs[watch]))
            else:
                # V, C and M see only the L games still running (a batch runs as long as its longest game);
                # the random numbers are drawn for the whole batch as before, so the result is unchanged
                live = np.flatnonzero(alive) if skip_dead else np.arange(len(idx))         # (L,)
                rows = torch.from_numpy(live).to(dev)
                small = np.stack([preprocess_doom_frame(obs[j]) for j in live])             # (L, 64, 64, 3)
                if watch is not None and alive[watch]:
                    frames_out.append(small[int(np.searchsorted(live, watch))])
                x = torch.from_numpy(small).to(dev).permute(0, 3, 1, 2).float() / 255       # (L, 3, 64, 64)
                mu, logvar = vae.encode(x)
                noise = torch.randn((len(idx), mu.shape[1]), generator=g)[rows]             # (L, Z)
                z = mu + (0.5 * logvar).exp() * noise                                       # (L, Z)
                sub = (state[0][:, rows], state[1][:, rows])
                a_t = doom_act(p, _obs(z, sub)[None])[0]                                    # (L,)
                new = m(z[:, None], a_t[:, None, None], sub).state
                state = (state[0].clone(), state[1].clone())
                state[0][:, rows], state[1][:, rows] = new
                a = np.zeros(len(idx), np.float32)
                a[live] = a_t.cpu().numpy()
            for j, e in enumerate(envs):
                if not alive[j]:
                    continue
                o, _, term, trunc, _ = e.step(int(discrete_action(a[j])))
                steps[idx[j]] += 1
                if term or trunc:
                    alive[j] = False
                else:
                    obs[j] = o["screen"]
            if not alive.any():
                break
        if tick is not None:
            tick(len(idx))
    for e in pool:
        e.close()
    return steps, (np.stack(frames_out) if frames_out else None)


def policy_table(m: MDNRNN, init_mu: torch.Tensor, init_logvar: torch.Tensor, seeds: list[int], dreams: int = 32,
                 tau: float = 1.15, dream_max_steps: int = 1000, max_steps: int = MAX_FRAMES,
                 policies: tuple[str, ...] = FIXED_POLICIES, seed: int = 11,
                 workers: int = 1) -> tuple[list[dict], float]:
    """Does dreamed survival depend on the actions the way real survival does? Each fixed policy plays
    ``dreams`` dreams (capped at ``dream_max_steps``) and the real game on ``seeds``. Returns rows
    {policy, dreamed, dreamed_se, real, real_se} and the Spearman correlation of dreamed vs real means.
    ``workers``: processes for the real games (see :func:`real_survival`)."""
    rows = []
    for pol in policies:
        acts = np.stack([fixed_policy_actions(pol, dream_max_steps, np.random.default_rng([seed, r]))
                         for r in range(dreams)], 1)                                        # (T, R)
        d = dream_survival(None, m, init_mu, init_logvar, dreams, tau, dream_max_steps, seed=seed, actions=acts)[0]
        r = real_survival(None, seeds, max_steps=max_steps, policy=pol, workers=workers)["steps"]
        rows.append({"policy": pol, "dreamed": mean_and_se(d)[0], "dreamed_se": mean_and_se(d)[1],
                     "real": mean_and_se(r)[0], "real_se": mean_and_se(r)[1]})
    return rows, spearman([r["dreamed"] for r in rows], [r["real"] for r in rows])
