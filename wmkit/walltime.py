"""How long a notebook's training takes at a profile's sizes on this machine: measured, then multiplied.

The gpu profile is sized for a 32 GB card and must say how long it will run. No GPU was lent while this book was
built, so no gpu-profile notebook was timed end to end here, and a table of guessed hours would be worse than
none. Instead a notebook run in the gpu profile measures its own training steps on the reader's card before it
trains, and prints

    expected wall time = sum over the notebook's training phases of  steps(profile) x seconds per step (measured)

Each phase's step is the real update of that model at the profile's sizes and batch (forward, backward,
optimiser step; the trainers' default fp32), on synthetic inputs of the right shapes (the speed of these models
does not depend on the pixel values), timed after three untimed warm-up steps (the median of ``repeat`` steps). A
phase that does not fit in the card's memory prints "out of memory" instead of a time: that is the answer a
reader needs before starting a multi-hour run. Stage 1 spends most of its time in the environments on the CPU
(recording 10,000 rollouts, CMA-ES in the real game), so its tables also count environment steps, timed in
chunks of 100 steps of the real game and divided among the profile's worker processes. What is not counted --
evaluation, plots, whatever else the table's last line names -- is printed under the table.

Checked on the cpu profile, where the notebooks' own times are known (2 idle cores, 2026-11-28): 02b's 3,500
DreamerV3 updates projected 4.4 min, the notebook printed 270 s; 03b's four denoisers projected 86-95 s each
against 73-91 s in `make book`; 03d's denoiser 1.7 min against 95 s.

    from wmkit.walltime import expected_wall_time
    print(expected_wall_time("03a"))            # the active profile, the best device here
    wmkit walltime 03a --profile gpu            # the same from a shell (``python -m wmkit.walltime``)

The step counts come from the same profile keys the notebook reads, so the table cannot drift from the notebook.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from wmkit.bench import timeit
from wmkit.profiles import Profile, profile
from wmkit.utils import pick_device


@dataclass
class Phase:
    """One training phase of a notebook: ``steps`` updates, each like one call of the function ``make()`` returns."""

    name: str
    """What trains, with its batch (shown in the table)."""
    steps: int
    """How many updates the notebook runs at this profile (from the profile's keys)."""
    make: Callable[[torch.device], Callable[[], object]]
    """Builds the model(s) and synthetic inputs on a device and returns one update as a function (built lazily,
    so that only one phase's models are in memory at a time)."""


# ---------------------------------------------------------------------------------------------- helpers
def _update(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], lr: float = 1e-4) -> Callable[[], None]:
    """One AdamW update of ``model`` on ``loss_fn()``: what every trainer's step costs."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
    return step


def _dreamer_updates(steps: int, prefill: int, ratio: float, batch: int, length: int) -> int:
    """Updates the DreamerV3 loop runs: train_ratio / (B * T) per env step after the prefill (the official
    meaning of train_ratio; notebook 02b's exercise checks the same formula against a run)."""
    return int(max(steps - prefill, 0) * ratio / (batch * length))


def _dreamer_phase(name: str, updates: int, size: str, batch: int, length: int, obs: str) -> Phase:
    def make(device):
        import numpy as np

        from wmkit.dreamer import Agent, DreamerConfig
        from wmkit.dreamer.bench import synthetic_batch
        space = {"image": ((64, 64, 3), np.uint8)} if obs == "image" else {"vector": ((16,), np.float32)}
        agent = Agent(space, {"n": 17, "discrete": True}, DreamerConfig(size=size), device=device, seed=0)
        data = synthetic_batch(batch, length, 17, device, obs=obs)
        return lambda: agent.update(data)
    return Phase(f"{name}: DreamerV3 {size} update, B{batch} x T{length}, {obs}", updates, make)


_VECTOR_ENVS = ("reach-vector", "cartpole")   # wmkit.dreamer.envs: the tasks observed as vectors, not pixels


# ---------------------------------------------------------------------------------------------- notebooks
def _env_steps(name: str, total: int, workers: int, run: Callable[[int], object], chunk: int = 100) -> Phase:
    """Steps of a real environment on the CPU, ``workers`` processes at a time: counted in chunks of ``chunk``
    steps per worker (one chunk timed = one call of ``run(chunk)``, a fresh episode included)."""
    def make(device):
        return lambda: run(chunk)
    return Phase(f"{name} ({chunk} steps per call, {workers} worker(s))", -(-total // (chunk * workers)), make)


def _vae_phase(frames: int, epochs: int, batch: int, z_dim: int) -> Phase:
    def make(device):
        from wmkit.worldmodels.vae import ConvVAE
        m = ConvVAE(z_dim).to(device)
        x = torch.rand(batch, 3, 64, 64, device=device)                            # (B, 3, 64, 64)
        return _update(m, lambda: m.loss(x)["loss"], lr=1e-3)
    return Phase(f"V (ConvVAE, z {z_dim}), B{batch}", epochs * -(-frames // batch), make)


def _mdn_phase(sequences: int, chunks: int, epochs: int, batch: int, seq_len: int, z_dim: int, action_dim: int,
               hidden: int) -> Phase:
    def make(device):
        from wmkit.worldmodels.mdnrnn import MDNRNN
        m = MDNRNN(z_dim, action_dim, hidden).to(device)
        z = torch.randn(batch, seq_len + 1, z_dim, device=device)                  # (B, T+1, Z)
        a = torch.rand(batch, seq_len, m.action_dim, device=device)
        r, d = torch.rand(batch, seq_len, device=device), torch.zeros(batch, seq_len, device=device)
        return _update(m, lambda: m.loss(z, a, r, d)["loss"], lr=1e-3)
    return Phase(f"M (LSTM {hidden}, 5 Gaussians), B{batch} x {seq_len} steps",
                 epochs * -(-sequences // batch) * chunks, make)


def _plan_01(P: Profile) -> tuple[list[Phase], list[str]]:
    import numpy as np
    W = P.worldmodels

    def collect(n):
        from wmkit.worldmodels.data import collect_episode
        return collect_episode(0, max_steps=n)

    def cma_dream(device):      # one generation: every candidate in cma_rollouts dreams of dream_horizon steps (CPU)
        from wmkit.worldmodels.dream_env import dream_returns
        from wmkit.worldmodels.mdnrnn import MDNRNN
        m = MDNRNN(32, 3, 256)
        torch.nn.init.constant_(m.done_head.bias, -30.0)  # an untrained done head would end the dreams at once
        params = np.random.default_rng(0).normal(0, 0.1, (W.cma_popsize, (32 + 256) * 3 + 3))
        return lambda: dream_returns(params, m, None, W.cma_rollouts, W.dream_horizon)

    def real_run(n):            # one controller on one track for n steps, V and M in the loop
        from wmkit.worldmodels.controller import real_returns
        from wmkit.worldmodels.mdnrnn import MDNRNN
        from wmkit.worldmodels.vae import ConvVAE
        params = np.zeros((1, (32 + 256) * 3 + 3))
        return real_returns(params, [0], ConvVAE(32), MDNRNN(32, 3, 256), max_steps=n)
    frames = W.n_rollouts * W.rollout_len
    real_cma = W.real_generations * W.real_popsize * W.real_rollouts * W.real_horizon
    return ([_env_steps("collect: CarRacing, Brownian policy", frames, W.workers, collect),
             _vae_phase(frames, W.vae_epochs, W.vae_batch, 32),
             _mdn_phase(W.n_rollouts, 1, W.mdnrnn_epochs, W.mdnrnn_batch, W.mdnrnn_seq_len, 32, 3, 256),
             Phase(f"C in the dream: one CMA-ES generation ({W.cma_popsize} x {W.cma_rollouts} dreams of "
                   f"{W.dream_horizon} steps, CPU)", W.cma_generations, cma_dream),
             _env_steps("C in the real game: CMA-ES", real_cma, W.workers, real_run),
             _env_steps("evaluation in the real game", 2 * W.eval_episodes * W.eval_max_steps, W.workers, real_run)],
            ["the held-out recordings, encoding the episodes for M, the plots; the real-game phases are an upper "
             "bound where episodes end early"])


def _plan_01b(P: Profile) -> tuple[list[Phase], list[str]]:
    import numpy as np
    W = P.worldmodels
    episodes = W.doom_vae_episodes or W.doom_episodes
    frames = W.doom_episodes * W.doom_max_steps                                   # upper bound: episodes end at death

    def collect(n):
        from wmkit.worldmodels.doom import collect_doom_episode
        return collect_doom_episode(0, max_steps=n)

    def cma_dream(device):      # one generation at one temperature; M's done head held off: full-length dreams
        from wmkit.worldmodels.doom import doom_controller_dim, dream_survival
        from wmkit.worldmodels.mdnrnn import MDNRNN
        m = MDNRNN(64, 1, W.doom_hidden, reward_head=False)
        torch.nn.init.constant_(m.done_head.bias, -30.0)
        params = np.random.default_rng(0).normal(0, 0.1, (W.doom_popsize, doom_controller_dim(64, W.doom_hidden)))
        mu, lv = torch.zeros(W.doom_rollouts, 64), torch.zeros(W.doom_rollouts, 64)
        return lambda: dream_survival(params, m, mu, lv, W.doom_rollouts, 1.15, W.doom_dream_max_steps)

    def real_run(n):
        from wmkit.worldmodels.doom import real_survival
        return real_survival(None, [0], max_steps=n, batch=1)
    taus = len(W.doom_taus)
    return ([_env_steps("collect: VizDoom TakeCover, random policy", frames, W.workers, collect),
             _vae_phase(episodes * W.doom_max_steps, W.doom_vae_epochs, W.vae_batch, 64),
             _mdn_phase(W.doom_episodes, -(-W.doom_max_steps // W.doom_seq_len), W.doom_mdnrnn_epochs,
                        W.doom_mdnrnn_batch, W.doom_seq_len, 64, 1, W.doom_hidden),
             Phase(f"C in the dream: one CMA-ES generation ({W.doom_popsize} x {W.doom_rollouts} dreams of up to "
                   f"{W.doom_dream_max_steps} frames) x {taus} temperatures", W.doom_generations * taus, cma_dream),
             _env_steps("evaluation in the real game", (taus + 2) * W.doom_eval_episodes * W.doom_max_steps,
                        W.workers, real_run)],
            ["(every phase above is an upper bound: collection, V's and M's passes over the data, dreams "
             "and games are counted at the maximum episode length (2,100 frames), and most episodes end earlier at "
             "death (the random policy's survive about 210 frames))", "encoding the episodes for M, the plots"])


def _plan_02b(P: Profile) -> tuple[list[Phase], list[str]]:
    D = P.dreamer
    learn = _dreamer_updates(D.learn_steps, D.learn_prefill, D.learn_train_ratio, D.learn_batch_size,
                             D.learn_batch_length)
    pix_prefill = min(D.learn_prefill, D.pixel_steps // 2)
    pix = _dreamer_updates(D.pixel_steps, pix_prefill, D.pixel_train_ratio, D.learn_batch_size, D.learn_batch_length)
    obs = "vector" if D.learn_env in _VECTOR_ENVS else "image"
    return ([_dreamer_phase(D.learn_env, learn, D.learn_size, D.learn_batch_size, D.learn_batch_length, obs),
             _dreamer_phase(D.pixel_env, pix, D.pixel_size, D.learn_batch_size, D.learn_batch_length, "image")],
            [f"{D.learn_steps + D.pixel_steps:,} environment steps and the policy acting in them (on an H100 "
             "10-35 ms per Crafter step)", "evaluation episodes"])


def _plan_02c(P: Profile) -> tuple[list[Phase], list[str]]:
    D = P.dreamer
    prefill = min(D.learn_prefill, D.onecfg_steps // 2)
    n = _dreamer_updates(D.onecfg_steps, prefill, D.learn_train_ratio, D.learn_batch_size, D.learn_batch_length)
    runs = {"vector": 0, "image": 0}
    for env in D.onecfg_envs:
        runs["vector" if env in _VECTOR_ENVS else "image"] += 1
    runs["vector" if D.learn_env in _VECTOR_ENVS else "image"] += len(D.onecfg_scales) + 2   # + the 2 ablations
    phases = [_dreamer_phase(f"{k} runs x {runs[k]}", n * runs[k], D.size, D.learn_batch_size, D.learn_batch_length,
                             k) for k in ("vector", "image") if runs[k]]
    note = [f"the runs run {D.onecfg_workers} at a time (onecfg_workers); the table adds them up as if one by one"]
    return phases, note + ["environment steps, evaluation, random baselines", f"fit_heads ({D.heads_steps} steps)"]


def _genie_cfg(P: Profile):
    from wmkit.genie import train as T
    fields = {f.name for f in dataclasses.fields(T.GenieConfig)}
    return T.GenieConfig(**{k: v for k, v in vars(P.genie).items() if k in fields}, run_dir="unused")


def _plan_03a(P: Profile) -> tuple[list[Phase], list[str]]:
    from wmkit.genie import train as T
    from wmkit.genie.dynamics import DynamicsModel
    from wmkit.genie.lam import LatentActionModel
    from wmkit.genie.tokenizer import VideoTokenizer
    cfg = _genie_cfg(P)
    s = cfg.frame_size

    def tok(device):
        m = VideoTokenizer(T.tokenizer_config(cfg)).to(device)
        x = torch.rand(cfg.tok_batch, cfg.tok_clip_len, 3, s, s, device=device)   # (B, T, 3, H, W)
        return _update(m, lambda: m(x)["loss"])

    def lam(device):
        m = LatentActionModel(T.lam_config(cfg)).to(device)
        x = torch.rand(cfg.lam_batch, cfg.lam_clip_len, 3, s, s, device=device)
        return _update(m, lambda: m(x)["loss"])

    def dyn(device):
        t = VideoTokenizer(T.tokenizer_config(cfg))        # only for its vocabulary and token grid
        m = DynamicsModel(T.dynamics_config(cfg, t.vocab, t.grid)).to(device)
        z = torch.randint(0, t.vocab, (cfg.dyn_batch, cfg.dyn_clip_len, t.num_tokens), device=device)  # (B, T, N)
        a = torch.randint(0, cfg.lam_actions, (cfg.dyn_batch, cfg.dyn_clip_len - 1), device=device)
        return _update(m, lambda: m.loss(z, a)["loss"])
    return ([Phase(f"tokenizer, B{cfg.tok_batch} x {cfg.tok_clip_len} frames", cfg.tok_steps, tok),
             Phase(f"latent action model, B{cfg.lam_batch} x {cfg.lam_clip_len} frames", cfg.lam_steps, lam),
             Phase(f"dynamics (MaskGIT), B{cfg.dyn_batch} x {cfg.dyn_clip_len} frames", cfg.dyn_steps, dyn)],
            ["recording the Crafter episodes", "inferring latent actions and tokens of the episodes",
             "evaluation, the effect tables and play (MaskGIT decoding)"])


def _denoiser(P: Profile, recipe: str, **overrides):
    def make(device):
        from wmkit.diffusion.train import build_recipe, config_from_profile
        cfg = dataclasses.replace(config_from_profile(P, recipe=recipe), **overrides)
        m = build_recipe(cfg, 17).to(device)
        B, K, S = cfg.batch_size, cfg.context, cfg.size
        ctx = torch.rand(B, K, 3, S, S, device=device) * 2 - 1                     # (B, K, 3, S, S)
        act = torch.randint(0, 17, (B, K), device=device)
        tgt = torch.rand(B, 3, S, S, device=device) * 2 - 1
        return _update(m, lambda: m.loss(ctx, act, tgt)[0])
    return make


def _plan_03b(P: Profile) -> tuple[list[Phase], list[str]]:
    D = P.diffusion
    runs = (("EDM (DIAMOND)", "edm", {}),                       # the notebook's four runs (its RUN_SPECS)
            ("v-prediction + context noise (GameNGen)", "vpred", {"ctx_noise_max": 0.7}),
            ("v-prediction, no context noise", "vpred", {"ctx_noise_max": 0.0}),
            ("shortcut (Dreamer 4)", "shortcut", {}))
    return ([Phase(f"{name}, B{D.batch_size} at {D.size}x{D.size}", D.train_steps, _denoiser(P, r, **o))
             for name, r, o in runs],
            ["recording the episodes", f"evaluation on {D.eval_windows} held-out windows at {D.steps_list} steps",
             f"the drift rollouts ({D.drift_episodes} x {D.drift_horizon} frames) and play"])


def _plan_03d(P: Profile) -> tuple[list[Phase], list[str]]:
    from wmkit.diffusion.rl import agent_config_from_profile, denoiser_config
    D, A = P.diffusion, agent_config_from_profile(P)
    n_act, S, K = 5, A.size, A.context            # reach: 5 actions

    def world_model(device):
        from wmkit.diffusion.train import build_recipe
        return build_recipe(denoiser_config(A, "unused"), n_act).to(device)

    def rew_end_model(device):
        from wmkit.diffusion.agent import RewEndModel
        return RewEndModel(n_act, S, A.reward_bins, A.rew_end_channels, A.rew_end_depths, A.rew_end_cond,
                           A.rew_end_lstm).to(device)

    def denoiser(device):
        m = world_model(device)
        ctx = torch.rand(A.batch_size, K, 3, S, S, device=device) * 2 - 1         # (B, K, 3, S, S)
        act = torch.randint(0, n_act, (A.batch_size, K), device=device)
        tgt = torch.rand(A.batch_size, 3, S, S, device=device) * 2 - 1
        return _update(m, lambda: m.loss(ctx, act, tgt)[0])

    def rew_end(device):
        m = rew_end_model(device)
        B, L = A.rew_end_batch or A.batch_size, K + A.horizon + 1               # DIAMOND's sequences
        f = torch.rand(B, L, 3, S, S, device=device) * 2 - 1
        a = torch.randint(0, n_act, (B, L), device=device)
        lo, hi = float(min(A.reward_bins)), float(max(A.reward_bins))
        r = lo + (hi - lo) * torch.rand(B, L - 1, device=device)                  # inside the reward bins
        d = torch.zeros(B, L - 1, dtype=torch.bool, device=device)
        return _update(m, lambda: m.loss(f[:, :-1], a[:, :-1], f[:, 1:], r, d, A.reward_sign)[0])

    def actor_critic(device):
        from wmkit.diffusion.agent import ActorCritic, ImaginedEnv, imagination_loss
        env = ImaginedEnv(world_model(device).eval(), rew_end_model(device).eval(), A.denoise_steps,
                          generator=torch.Generator(device=device).manual_seed(0))
        ac = ActorCritic(n_act, S, A.ac_channels, A.ac_lstm, down=A.ac_down or None).to(device)
        obs = torch.rand(A.imagined, K, 3, S, S, device=device) * 2 - 1            # real starting segments
        act = torch.randint(0, n_act, (A.imagined, K), device=device)
        return _update(ac, lambda: imagination_loss(ac, env, obs, act, A.horizon, A.gamma, A.lam,
                                                    A.entropy_weight, A.value_weight)[0])
    return ([Phase(f"denoiser (EDM), B{A.batch_size} at {S}x{S}", A.wm_steps, denoiser),
             Phase(f"reward/end model, B{A.rew_end_batch or A.batch_size} x {K + A.horizon + 1} frames",
                   A.rew_end_steps, rew_end),
             Phase(f"actor-critic in imagination, {A.imagined} x {A.horizon} steps x {A.denoise_steps} Euler steps",
                   A.ac_steps, actor_critic),
             Phase(f"driving denoiser, B{D.batch_size} at {D.drive_size}x{D.drive_size}", D.drive_train_steps,
                   _denoiser(P, "edm", size=D.drive_size))],
            [f"recording {A.episodes} episodes", f"{A.eval_episodes} evaluation episodes in the real game (and the "
             "notebook's scoring of the policy during training)", "the driving recordings and evaluation"])


def _plan_04(P: Profile) -> tuple[list[Phase], list[str]]:
    J = P.jepa

    def vjepa(device):
        from wmkit.jepa.masks import VJEPA_MASKS, MultiBlock3D
        from wmkit.jepa.vjepa import VJEPA, VJEPAConfig
        cfg = VJEPAConfig(**J.vjepa_model)
        m = VJEPA(cfg).to(device)
        clips = torch.rand(J.vjepa_batch, cfg.frames, 3, cfg.size, cfg.size, device=device)   # (B, T, 3, H, W)
        gens = [MultiBlock3D(cfg.grid, s) for s in VJEPA_MASKS]

        def loss():
            masks = [tuple(t.to(device) for t in g(J.vjepa_batch)) for g in gens]
            return m.loss(clips, masks)["loss"]
        return _update(m, loss)

    def ac(regulariser):
        def make(device):
            from wmkit.jepa.ac import ACConfig, ACWorldModel
            m = ACWorldModel(ACConfig(**J.ac_model, regulariser=regulariser, action_block=J.action_block)).to(device)
            S = J.ac_model.get("size", J.tr_size)
            fr = torch.rand(J.ac_batch, J.ac_length, 3, S, S, device=device)           # (B, L, 3, H, W)
            act = torch.randn(J.ac_batch, J.ac_length - 1, m.cfg.action_dim * J.action_block, device=device)
            return _update(m, lambda: m.loss(fr, act)["loss"])
        return make
    def lewm(device):  # LeWM's recipe as the notebook trains it (wmkit.jepa.train.lewm_config): windows of 4 frames
        from wmkit.jepa.ac import ACWorldModel
        from wmkit.jepa.train import lewm_config
        cfg = lewm_config({**J.ac_model, **J.lewm_model}, J.action_block, J.lewm_steps, batch=J.lewm_batch,
                          pool=J.lewm_pool, sigreg_proj=J.lewm_proj)
        m = ACWorldModel(cfg.model).to(device)
        S = m.cfg.size
        fr = torch.rand(cfg.batch, cfg.length, 3, S, S, device=device)                      # (B, 4, 3, H, W)
        act = torch.randn(cfg.batch, cfg.length - 1, m.cfg.action_dim * J.action_block, device=device)
        return _update(m, lambda: m.loss(fr, act)["loss"])
    phases = [Phase(f"V-JEPA pretraining, B{J.vjepa_batch}", J.vjepa_steps, vjepa)]
    phases += [Phase(f"AC-JEPA ({r}), B{J.ac_batch} x {J.ac_length} frames", J.ac_steps, ac(r)) for r in J.ac_recipes]
    if "frozen" in J.planners:  # the notebook trains the frozen-encoder planner only when it plans with it
        phases.append(Phase(f"AC predictor on the frozen V-JEPA encoder, B{J.ac_batch}", J.frozen_steps,
                            ac("frozen")))
    if "lewm" in J.planners:
        phases.append(Phase(f"LeWM (pooled embedding, SIGReg), B{J.lewm_batch} x 4 frames", J.lewm_steps, lewm))
    return phases, ["collecting Two-Rooms episodes", "the compared models trained to matched FLOPs (DreamerV3, "
                    "the Genie tokenizer, the diffusion U-Net: about as long again as one AC-JEPA run)",
                    f"probes ({J.probe_steps} steps), the collapse demonstration ({J.collapse_steps} steps)",
                    f"planning ({J.plan_episodes} episodes of CEM {J.cem_samples}/{J.cem_elites}/{J.cem_iters})"]


PLANS: dict[str, Callable[[Profile], tuple[list[Phase], list[str]]]] = {
    "01": _plan_01, "01b": _plan_01b, "02b": _plan_02b, "02c": _plan_02c,
    "03a": _plan_03a, "03b": _plan_03b, "03d": _plan_03d, "04": _plan_04}
"""Notebook (the start of its file name) -> its training phases and what the table leaves out."""


# ---------------------------------------------------------------------------------------------- measure, report
def plan(notebook: str, P: Profile | None = None) -> tuple[list[Phase], list[str]]:
    """The training phases of ``notebook`` at profile ``P`` (default: the active one) and the uncounted parts."""
    if notebook not in PLANS:
        raise ValueError(f"walltime: no plan for notebook {notebook!r}; known: {', '.join(PLANS)}")
    return PLANS[notebook](P or profile())


def measure(phases: list[Phase], device: torch.device | str | None = None, repeat: int = 5,
            warmup: int = 3) -> list[dict]:
    """Time one update of each phase (``warmup`` untimed, then the median of ``repeat`` timed ones; the first few
    updates of a model run slower while the allocator and the kernels warm up) and multiply by its step count.
    A phase that runs out of memory gets ``seconds_per_step = None`` and ``error = "out of memory"``."""
    if repeat < 1:
        raise ValueError(f"walltime.measure: repeat must be >= 1, got {repeat}")
    device = torch.device(device) if device is not None else pick_device()
    rows = []
    for ph in phases:
        row = {"phase": ph.name, "steps": int(ph.steps), "seconds_per_step": None, "seconds": None, "error": None}
        step = None
        try:
            step = ph.make(device)
            row["seconds_per_step"] = timeit(step, warmup=warmup, repeat=repeat, sync=device)["median"]
            row["seconds"] = row["seconds_per_step"] * ph.steps
        except torch.OutOfMemoryError:
            row["error"] = "out of memory"
        finally:
            del step
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def _hms(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def report(rows: list[dict], notebook: str, profile_name: str, device: str, left_out: list[str]) -> str:
    """The table a notebook prints: each phase's steps, measured seconds per step and expected time, the total."""
    w = max([len(r["phase"]) for r in rows] + [5])
    lines = [f"expected training wall time of notebook {notebook} at the {profile_name} profile on {device} "
             "(measured now: a few updates of each phase, synthetic inputs):",
             f"  {'phase':<{w}}  {'steps':>9}  {'s/step':>8}  {'expected':>9}"]
    for r in rows:
        per = f"{r['seconds_per_step']:.3f}" if r["seconds_per_step"] is not None else "--"
        exp = _hms(r["seconds"]) if r["seconds"] is not None else r["error"]
        lines.append(f"  {r['phase']:<{w}}  {r['steps']:>9,}  {per:>8}  {exp:>9}")
    known = [r["seconds"] for r in rows if r["seconds"] is not None]
    failed = [r for r in rows if r["seconds"] is None]
    total = _hms(sum(known)) + (f" + {len(failed)} phase(s) that did not fit" if failed else "")
    lines.append(f"  {'total (training only)':<{w}}  {'':>9}  {'':>8}  {total:>9}")
    lines += ["  not counted: " + "; ".join(left_out)] if left_out else []
    return "\n".join(lines)


def expected_wall_time(notebook: str, P: Profile | None = None, device: torch.device | str | None = None,
                       repeat: int = 5) -> str:
    """Measure ``notebook``'s training phases at profile ``P`` on ``device`` and return the printed table."""
    P = P or profile()
    phases, left_out = plan(notebook, P)
    device = torch.device(device) if device is not None else pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return report(measure(phases, device, repeat), notebook, P.name, name, left_out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="wmkit walltime", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", choices=list(PLANS), help="the notebook (start of its file name)")
    ap.add_argument("--profile", default=None, help="smoke | cpu | gpu (default: the active one)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: the best available)")
    ap.add_argument("--repeat", type=int, default=5, help="timed updates per phase (after 3 untimed)")
    a = ap.parse_args(argv)
    print(expected_wall_time(a.notebook, profile(a.profile), a.device, a.repeat))


if __name__ == "__main__":  # python -m wmkit.walltime 03a --profile gpu
    main(sys.argv[1:])
