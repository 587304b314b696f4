"""Planning success against training compute: the AC-JEPA vs DreamerV3's world model on Two-Rooms (issue #14).

Both world models are trained on the same weak-expert recordings (:func:`wmkit.jepa.tworooms.collect`) for the same
number of training FLOPs (forward + backward of one step counted by ``torch.utils.flop_counter``,
:func:`wmkit.jepa.compare.step_flops`; :func:`matched_steps` turns a FLOP budget into each model's step count), and
both plan with the same CEM (:func:`wmkit.jepa.ac.cem`, the same samples / elites / iterations, horizon and
replanning) on the same episodes of LeWM's protocol (goals the weak expert reaches ``goal_offset`` = 25 steps on,
budget 50, seeds ``seed..seed+E-1``, the random policy on the same episodes: :func:`wmkit.jepa.plan.evaluate_planning`
for the AC-JEPA, :func:`evaluate_dreamer_planning` here, which replays the same random-policy actions).

How a Dreamer / RSSM world model plans toward a goal image -- we follow LEXA (Mendonca et al. 2021, "Discovering and
Achieving Goals via World Models", section 3 "latent distances"; official ``orybkin/lexa``, ``gcdreamer_wm.py``
``get_init_feat_embed`` and ``gcdreamer_imag.py`` ``_gc_reward``, configs ``lexa_cosine`` / ``gc_reward: l2``):

* the goal is the model state [h_g, z_g] after one posterior step from the initial state on the goal image's
  embedding (:func:`dreamer_goal_feat`; LEXA ``get_init_feat_embed``);
* the current state is the posterior [h_t, z_t] filtered along the episode from every frame seen and action taken
  (:func:`dreamer_obs_step`);
* an action sequence's energy is the latent distance of the imagined states (prior rollout, ``img_step``) to the goal
  state: ``cosine`` = 1 - cos([h, z], [h_g, z_g]) (LEXA's main latent distance, whose reward is +cos) or ``l2`` =
  mean squared difference (LEXA ``gc_reward: l2``) (:func:`latent_distance`, :func:`dreamer_energy`).

LEXA trains a goal-conditioned actor on that reward in imagination; here the same reward is optimised by CEM over
action sequences (model-predictive control, as DINO-WM / PLDM plan), so that the world models, not the policy
learners, are compared. The stochastic parts take the mode (argmax) of the posterior and of the prior instead of a
sample, so that one action sequence gets one energy.

The diffusion world model (stage 3b, EDM on DIAMOND's U-Net) would plan by denoising whole frames for every imagined
step of every CEM sample; :func:`diffusion_plan_seconds` measures what one such CEM plan costs on this CPU.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from wmkit.jepa.ac import cem
from wmkit.jepa.plan import offset_goal, random_episode
from wmkit.jepa.tworooms import TwoRooms

__all__ = ["matched_steps", "dreamer_embed", "dreamer_obs_step", "dreamer_goal_feat", "latent_distance",
           "dreamer_imagine", "dreamer_energy", "plan_episode_dreamer", "evaluate_dreamer_planning",
           "summarise", "dreamer_energy_ranking", "diffusion_plan_seconds"]

DISTANCES = ("cosine", "l2")
TARGETS = ("feat", "stoch", "pixels")


def matched_steps(budget_flops: float, flops_per_step: float) -> int:
    """Optimiser steps that a training FLOP budget buys (rounded to the nearest step, at least 1)."""
    if not (budget_flops > 0 and flops_per_step > 0 and math.isfinite(budget_flops) and math.isfinite(flops_per_step)):
        raise ValueError(f"matched_steps: need finite budget_flops > 0 and flops_per_step > 0, got {budget_flops}, "
                         f"{flops_per_step}")
    return max(1, round(budget_flops / flops_per_step))


# ---- DreamerV3's world model as a goal-reaching planner (LEXA's latent distance) ------------------------------
def _mode(logits: torch.Tensor) -> torch.Tensor:
    """Log-probs (B, S, K) -> the one-hot mode, flat (B, S*K)."""
    return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0).flatten(-2)


@torch.no_grad()
def dreamer_embed(wm, frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (M, S, S, 3), S dividing 64 -> encoder embeddings (M, E) (nearest upsampling to 64 x 64, as
    :func:`wmkit.jepa.compare.dreamer_batch` trains the model)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 64 % frames.shape[1]:
        raise ValueError(f"dreamer_embed: expected uint8 frames (M, S, S, 3) with S dividing 64, got {frames.dtype} "
                         f"{frames.shape}")
    k = 64 // frames.shape[1]
    img = np.repeat(np.repeat(frames, k, axis=1), k, axis=2)  # (M, 64, 64, 3)
    return wm.encoder({"image": torch.from_numpy(img)})  # (M, E)


@torch.no_grad()
def dreamer_obs_step(wm, state: tuple[torch.Tensor, torch.Tensor] | None, action: torch.Tensor | None,
                     embed: torch.Tensor, action_dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """One posterior step h_t = f(h_{t-1}, z_{t-1}, a_t), z_t = mode q(z | h_t, e_t) -> (deter (B, D), stoch
    (B, S*K)). ``state=None``: the first frame of an episode (the initial state and a zero action, as ``observe`` does
    where ``is_first``)."""
    rssm = wm.rssm
    B = embed.shape[0]
    if state is None:
        state = rssm.initial(B, embed.device)
        action = embed.new_zeros(B, action_dim)
    deter = rssm.core(state[0], state[1], rssm.action_input(action))  # (B, D)
    return deter, _mode(rssm.post_logits(deter, rssm.post_embed(embed)))  # (B, D), (B, S*K)


@torch.no_grad()
def dreamer_goal_feat(wm, goal_frame: np.ndarray) -> torch.Tensor:
    """LEXA ``get_init_feat_embed``: the state [h, z] after one posterior step from the initial state on the goal
    image (S, S, 3) uint8 -> (1, F)."""
    deter, stoch = dreamer_obs_step(wm, None, None, dreamer_embed(wm, goal_frame[None]))
    return torch.cat([deter, stoch], -1)  # (1, F)


def latent_distance(feat: torch.Tensor, goal: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """(..., F) vs (1, F) or (..., F) -> (...): ``cosine`` 1 - cos (LEXA ``lexa_cosine``: reward = cos), ``l2`` mean
    squared difference (LEXA ``gc_reward: l2``). Zero when ``feat`` equals ``goal``."""
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(feat, goal.expand_as(feat), dim=-1, eps=1e-8)
    if kind == "l2":
        return (feat - goal).square().mean(-1)
    raise ValueError(f"latent_distance: kind must be one of {DISTANCES}, got {kind!r}")


@torch.no_grad()
def dreamer_imagine(wm, start: tuple[torch.Tensor, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """Prior rollout (mode of every z) from one state (deter (1, D), stoch (1, S*K)) under S action sequences
    (S, T, A) -> imagined features (S, T, F), entry t = the state after action t."""
    rssm = wm.rssm
    S, T, _ = actions.shape
    deter, stoch = start[0].expand(S, -1), start[1].expand(S, -1)  # (S, D), (S, S*K)
    act_in = rssm.action_input(actions)  # (S, T, Hd): all steps at once
    feats = []
    for t in range(T):
        deter = rssm.core(deter, stoch, act_in[:, t])  # (S, D)
        stoch = _mode(rssm.prior_logits(deter))  # (S, S*K)
        feats.append(torch.cat([deter, stoch], -1))
    return torch.stack(feats, 1)  # (S, T, F)


@torch.no_grad()
def dreamer_energy(wm, start: tuple[torch.Tensor, torch.Tensor], goal: torch.Tensor, actions: torch.Tensor,
                   block: int = 1, mode: str = "last", distance: str = "cosine", target: str = "feat") -> torch.Tensor:
    """Energy of S plans (S, H, block * A) (H blocks of ``block`` environment actions, in the AC-JEPA's layout):
    the distance to the goal of the imagined state after the last block (``last``) or the mean over the states after
    every block (``all``, equal weights, as the AC planner's ``energy="all"``) -> (S,).

    ``target``: what is compared. ``"feat"`` -- the whole state [h, z] against the goal state ``goal`` (1, F) (LEXA);
    ``"stoch"`` -- only the categorical part z (the part computed from the image; h also carries the history, which
    the goal state, one step from the initial state, lacks); ``"pixels"`` -- the decoded frame against ``goal`` given
    as the goal image (1, 64, 64, 3) in Dreamer's [-0.5, 0.5] (mean squared error; ``distance`` is ignored)."""
    if mode not in ("last", "all"):
        raise ValueError(f"dreamer_energy: mode must be 'last' or 'all', got {mode!r}")
    if target not in TARGETS:
        raise ValueError(f"dreamer_energy: target must be one of {TARGETS}, got {target!r}")
    if actions.ndim != 3 or actions.shape[-1] % block:
        raise ValueError(f"dreamer_energy: actions must be (S, H, block * A) with block={block}, got "
                         f"{tuple(actions.shape)}")
    steps = rearrange(actions, "s h (k a) -> s (h k) a", k=block)  # (S, H*block, A)
    feat = dreamer_imagine(wm, start, steps)[:, block - 1::block]  # (S, H, F): the state after every block
    if target == "pixels":
        img = wm.decoder(feat)["image"]  # (S, H, 64, 64, 3) in [-0.5, 0.5]
        d = (img - goal[:, None]).square().flatten(2).mean(-1)  # (S, H)
    elif target == "stoch":
        D = wm.rssm.deter
        d = latent_distance(feat[..., D:], goal[..., D:], distance)  # (S, H)
    else:
        d = latent_distance(feat, goal, distance)  # (S, H)
    return d[:, -1] if mode == "last" else d.mean(1)


@torch.no_grad()
def plan_episode_dreamer(wm, env: TwoRooms, budget: int, horizon: int, samples: int, elites: int, iterations: int,
                         generator: torch.Generator, block: int = 5, receding: int = 1, energy: str = "all",
                         distance: str = "cosine", target: str = "feat") -> dict:
    """One MPC episode with the RSSM from the env's current state (the loop of :func:`wmkit.jepa.plan.plan_episode`):
    CEM over ``horizon`` blocks of ``block`` actions, execute ``receding`` blocks, filter the posterior through every
    executed step, warm-start the next CEM with the unexecuted rest. Returns success, steps, final distance."""
    if not 1 <= receding <= horizon:
        raise ValueError(f"plan_episode_dreamer: need 1 <= receding <= horizon, got {receding}, {horizon}")
    wm.eval()
    adim = 2
    if target == "pixels":  # the goal image itself, as the decoder outputs frames: 64 x 64 in [-0.5, 0.5]
        k = 64 // env.render_size
        img = np.repeat(np.repeat(env.goal_image(), k, axis=0), k, axis=1)  # (64, 64, 3)
        goal = torch.from_numpy(img)[None].float() / 255.0 - 0.5  # (1, 64, 64, 3)
    else:
        goal = dreamer_goal_feat(wm, env.goal_image())  # (1, F)
    state = dreamer_obs_step(wm, None, None, dreamer_embed(wm, env.render()[None]))
    mean, success, steps, dist = None, False, 0, env.info()["distance"]
    while steps < budget and not success:
        out = cem(lambda a, s=state: dreamer_energy(wm, s, goal, a, block, energy, distance, target), horizon,
                  block * adim,
                  samples=samples, elites=elites, iterations=iterations, mean=mean, generator=generator)
        plan = rearrange(out["plan"], "h (k a) -> (h k) a", k=block)  # (H*block, A)
        for action in plan[:receding * block]:
            obs, _, success, _, info = env.step(action.numpy())
            steps += 1
            dist = info["distance"]
            state = dreamer_obs_step(wm, state, action[None], dreamer_embed(wm, obs[None]))
            if success or steps >= budget:
                break
        mean = torch.cat([out["plan"][receding:], torch.zeros(receding, block * adim)])
    return {"success": bool(success), "steps": steps, "final_distance": float(dist)}


def summarise(rows: list[dict]) -> dict:
    """Success rates with s.e. sqrt(p (1 - p) / E), the paired difference planner - random (s.e. over episodes), mean
    final distances with s.e. and their paired difference: the fields of :func:`wmkit.jepa.plan.evaluate_planning`."""
    E = len(rows)
    if E < 2:
        raise ValueError(f"summarise: need >= 2 episodes, got {E}")

    def se(v):
        return float(np.std(v, ddof=1) / math.sqrt(E))

    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "episode"}
    for who in ("plan", "random"):
        p = out[f"{who}_success"]
        out[f"{who}_success_se"] = math.sqrt(p * (1 - p) / E)
        out[f"{who}_final_distance_se"] = se([r[f"{who}_final_distance"] for r in rows])
    diff = [float(r["plan_success"]) - float(r["random_success"]) for r in rows]
    out["difference"], out["difference_se"] = float(np.mean(diff)), se(diff)
    gap = [r["plan_final_distance"] - r["random_final_distance"] for r in rows]
    out["distance_difference"], out["distance_difference_se"] = float(np.mean(gap)), se(gap)
    return {"episodes": rows, **out}


def evaluate_dreamer_planning(wm, episodes: int, budget: int, horizon: int, samples: int, elites: int,
                              iterations: int, render_size: int, seed: int = 1000, goal_offset: int = 25,
                              block: int = 5, receding: int = 1, energy: str = "all", distance: str = "cosine",
                              target: str = "feat", progress: bool = True) -> dict:
    """The RSSM planner vs the random policy on the episodes of :func:`wmkit.jepa.plan.evaluate_planning` with the
    same ``seed``: the same starts, offset goals and random-policy actions (one numpy stream over the random episodes),
    so its random rows equal that function's and the planners are paired episode by episode."""
    if episodes < 2 or budget < 1:
        raise ValueError(f"evaluate_dreamer_planning: need episodes >= 2 and budget >= 1, got {episodes}, {budget}")
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = TwoRooms(render_size=render_size, max_energy=10 * budget)

    def reset(e):
        env.reset(seed=seed + e)
        env.goal = offset_goal(env, goal_offset, np.random.default_rng(seed + e))

    rows = []
    for e in tqdm(range(episodes), desc="Dreamer planning", disable=not progress):
        reset(e)
        start = env.info()["distance"]
        p = plan_episode_dreamer(wm, env, budget, horizon, samples, elites, iterations, g, block, receding, energy,
                                 distance, target)
        reset(e)
        r = random_episode(env, budget, rng)
        rows.append({"episode": e, "start_distance": start, "plan_success": p["success"],
                     "plan_final_distance": p["final_distance"], "random_success": r["success"],
                     "random_final_distance": r["final_distance"]})
    return summarise(rows)


@torch.no_grad()
def dreamer_energy_ranking(wm, render_size: int, episodes: int = 10, futures: int = 16, goal_offset: int = 25,
                           block: int = 5, horizon: int = 5, target: str = "feat", distance: str = "cosine",
                           seed: int = 5000) -> dict:
    """Does the RSSM's planning energy rank futures as the true distance does (what CEM needs)? For each of
    ``episodes`` starts and offset goals of the protocol, ``futures`` uniform random action sequences of ``horizon``
    blocks are imagined from the start's posterior (energy of the last state, :func:`dreamer_energy`) and executed in
    the environment (true final distance to the goal); returns the per-episode Spearman correlations (0 where nothing
    can be ranked) with their mean and standard error (the RSSM counterpart of
    :func:`wmkit.jepa.plan.energy_ranking`'s ``predicted``)."""
    from wmkit.utils import spearman

    if episodes < 2 or futures < 3:
        raise ValueError(f"dreamer_energy_ranking: need episodes >= 2 and futures >= 3, got {episodes}, {futures}")
    wm.eval()
    env = TwoRooms(render_size=render_size, max_energy=10 * horizon * block)
    rng = np.random.default_rng(seed)
    rho = []
    for e in range(episodes):
        env.reset(seed=seed + e)
        env.goal = offset_goal(env, goal_offset, np.random.default_rng(seed + e))
        start_pos = env.agent.copy()
        if target == "pixels":
            k = 64 // render_size
            goal = torch.from_numpy(np.repeat(np.repeat(env.goal_image(), k, 0), k, 1))[None].float() / 255.0 - 0.5
        else:
            goal = dreamer_goal_feat(wm, env.goal_image())  # (1, F)
        state = dreamer_obs_step(wm, None, None, dreamer_embed(wm, env.render()[None]))
        acts = rng.uniform(-1, 1, size=(futures, horizon * block, 2)).astype(np.float32)  # (F, H*blk, 2)
        energy = dreamer_energy(wm, state, goal, rearrange(torch.from_numpy(acts), "f (h k) a -> f h (k a)", k=block),
                                block, "last", distance, target).numpy()  # (F,)
        final = []
        for f in range(futures):
            env.agent, env.energy = start_pos.copy(), env.max_energy
            for a in acts[f]:
                env.step(a)
            final.append(float(np.linalg.norm(env.agent - env.goal)))
        rho.append(float(np.nan_to_num(spearman(energy, np.array(final)))))
    return {"rho": rho, "mean": float(np.mean(rho)), "se": float(np.std(rho, ddof=1) / math.sqrt(episodes))}


# ---- the diffusion world model: what one CEM plan through pixel-space denoising rollouts costs -------------
@torch.no_grad()
def diffusion_plan_seconds(model, goal: torch.Tensor, context: torch.Tensor, horizon_steps: int, samples: int,
                           elites: int, iterations: int, denoise_steps: int = 3, seed: int = 0) -> dict:
    """Time one CEM plan whose energy rolls the EDM world model forward ``horizon_steps`` frames per sample
    (``denoise_steps`` sampler steps each, DIAMOND: 3) and takes the pixel MSE of the last frame to ``goal`` (3, S, S)
    in [-1, 1]; ``context`` (K, 3, S, S) in [-1, 1] are the past frames (zero past actions). Returns seconds and the
    wall-clock and CPU seconds (process time: what the load does not change) and the number of denoiser forward
    passes (each on a batch of ``samples`` frames)."""
    K, A = model.net.context, model.net.action_dim
    if context.shape[0] != K or goal.shape != context.shape[1:]:
        raise ValueError(f"diffusion_plan_seconds: need context (K={K}, 3, S, S) and goal (3, S, S), got "
                         f"{tuple(context.shape)} and {tuple(goal.shape)}")
    model.eval()
    g = torch.Generator().manual_seed(seed)
    calls = [0]

    def energy(a):  # a (S, T, A)
        S = a.shape[0]
        ctx = context[None].expand(S, -1, -1, -1, -1)  # (S, K, 3, H, W)
        acts = torch.zeros(S, K, A)  # (S, K, A): the actions that led to the context frames
        for t in range(horizon_steps):
            acts = torch.cat([acts[:, 1:], a[:, t:t + 1]], 1)
            nxt = model.sample(ctx, acts, denoise_steps, generator=g)  # (S, 3, H, W)
            calls[0] += denoise_steps
            ctx = torch.cat([ctx[:, 1:], nxt[:, None]], 1)
        return (ctx[:, -1] - goal).square().flatten(1).mean(1)  # (S,)

    t0, c0 = time.perf_counter(), time.process_time()
    cem(energy, horizon_steps, A, samples=samples, elites=elites, iterations=iterations, generator=g)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "denoiser_calls": calls[0], "batch": samples}
