"""Trainers for the VizDoom TakeCover experiment (Ha & Schmidhuber 2018, section 5), one per step:

1. :func:`run_doom_collect`       -- random-repeat rollouts of the real game           -> doom/episodes
2. :func:`train_doom_vae`         -- V with z = 64 (``doomrnn/vae_train.py``)           -> doom/vae
3. :func:`train_doom_mdnrnn`      -- M: LSTM 512, 5 Gaussians, a done head              -> doom/mdnrnn
4. :func:`train_doom_controller`  -- C by CMA-ES **only in M's dream**, then the real game -> doom/controller

Like the CarRacing trainers (:mod:`.train`): config dataclasses that drive ``wmkit worldmodels doom <step>``,
``None`` fields filled from the active profile (the ``doom_*`` keys), TensorBoard + metrics.jsonl,
safetensors checkpoints, ``resume=True``.

M's training follows ``doomrnn/rnn_train.py``'s treatment of time: the LSTM state starts at zero at an
episode's first frame (the paper's "restart" flag zeroes it) and is *carried* from one chunk of
``seq_len`` steps to the next (truncated backprop through time), so M learns over whole episodes, not
over windows as short as the shortest episode. Episodes are batched from their start and padded
(padding masked out of every loss) instead of the paper's one concatenated stream; same state semantics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmkit.checkpoint import checkpoint_exists, load_meta, load_state, save_state
from wmkit.config import to_dict
from wmkit.profiles import profile
from wmkit.training import Logger, check_finite
from wmkit.utils import pick_device, process_pool, rng_state, seed_everything, set_rng_state
from wmkit.worldmodels.controller import cma_search
from wmkit.worldmodels.data import episode_paths
from wmkit.worldmodels.doom import (
    collect_doom,
    doom_controller_dim,
    dream_survival,
    mean_and_se,
    real_survival,
)
from wmkit.worldmodels.mdnrnn import MDNRNN
from wmkit.worldmodels.train import TrainVAEConfig, encode_all, load_vae, train_vae
from wmkit.worldmodels.vae import ConvVAE

DOOM_ROOT = "runs/worldmodels/doom"
EVAL_SEED = 1_000_000  # real evaluation episodes use seeds EVAL_SEED + i: never seen in training


def _fill(cfg, **keys):
    P = profile().worldmodels
    return dataclasses.replace(cfg, **{k: getattr(P, v) for k, v in keys.items() if getattr(cfg, k) is None})


def _ckpt(run_dir) -> Path:
    return Path(run_dir) / "ckpt" / "latest"


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DoomCollectConfig:
    """Collect VizDoom TakeCover rollouts with the paper's random policy (a ~ U(-1, 1) held 1..10 frames)."""

    out_dir: str = f"{DOOM_ROOT}/episodes"
    """Output folder of episode_<seed>.npz files (the CarRacing episode format, actions (T, 1))."""
    n_rollouts: int | None = None
    """Episodes (default: the profile's doom_episodes; the paper: 10,000)."""
    max_steps: int | None = None
    """Frame cap per episode (default: the profile's doom_max_steps; paper: 2,100)."""
    seed: int = 0
    """Episode i uses seed + i."""
    workers: int | None = None
    """Parallel worker processes (default: the profile's workers)."""


def run_doom_collect(cfg: DoomCollectConfig, progress: bool = True) -> list[Path]:
    cfg = _fill(cfg, n_rollouts="doom_episodes", workers="workers", max_steps="doom_max_steps")
    return collect_doom(cfg.out_dir, cfg.n_rollouts, cfg.seed, cfg.max_steps, cfg.workers, progress)


# ---------------------------------------------------------------------------------------------- V
@dataclass
class DoomVAEConfig(TrainVAEConfig):
    """Train V for Doom: the CarRacing ConvVAE with z = 64 (``doomrnn/vae_train.py``)."""

    data_dir: str = f"{DOOM_ROOT}/episodes"
    """Folder of Doom episode files."""
    run_dir: str = f"{DOOM_ROOT}/vae"
    """Output folder."""
    z_dim: int = 64
    """Latent size (paper's Doom V: 64)."""
    epochs: int | None = None
    """Passes over the frames (default: the profile's doom_vae_epochs; paper: 10)."""
    batch_size: int | None = None
    """Frames per update (default: the profile's vae_batch; paper: 100)."""
    max_episodes: int | None = None
    """Train V on the first N episodes only (default: the profile's doom_vae_episodes; None there = all)."""


def train_doom_vae(cfg: DoomVAEConfig, progress: bool = True):
    cfg = _fill(cfg, epochs="doom_vae_epochs", batch_size="vae_batch", max_episodes="doom_vae_episodes")
    return train_vae(cfg, progress)


# ---------------------------------------------------------------------------------------------- M
@dataclass
class DoomMDNRNNConfig:
    """Train Doom's M: LSTM + 5-Gaussian MDN on z, plus the done ("restart") head, over whole episodes."""

    data_dir: str = f"{DOOM_ROOT}/episodes"
    """Folder of Doom episode files."""
    vae_dir: str = f"{DOOM_ROOT}/vae"
    """Run folder of the trained Doom V."""
    run_dir: str = f"{DOOM_ROOT}/mdnrnn"
    """Output folder."""
    epochs: int | None = None
    """Passes over the episodes (default: the profile's doom_mdnrnn_epochs; paper's rnn_train.py: 400)."""
    batch_size: int | None = None
    """Episodes per batch (default: the profile's doom_mdnrnn_batch; paper: 100)."""
    seq_len: int | None = None
    """Steps per backprop chunk; the state is carried across chunks (default: doom_seq_len; paper: 500)."""
    hidden: int | None = None
    """LSTM units (default: the profile's doom_hidden; paper: 512)."""
    n_mix: int = 5
    """Gaussians per latent dimension (paper: 5)."""
    restart_factor: float = 10.0
    """Weight of the done cross-entropy on the steps that really end an episode (paper: 10)."""
    lr: float = 1e-3
    """Adam learning rate at step 0 (paper: 1e-3)."""
    lr_decay: float = 0.99999
    """lr_t = (lr - min_lr) * lr_decay^t + min_lr (paper: 0.99999, min 1e-5)."""
    min_lr: float = 1e-5
    """Floor of the decayed learning rate (paper: 1e-5)."""
    grad_clip: float = 1.0
    """Clip every gradient element to [-grad_clip, grad_clip] (paper: clip_by_value 1.0)."""
    heldout: int = 0
    """Episodes (the last ones) kept out of training to measure M (done-head calibration)."""
    max_episodes: int | None = None
    """Use only the first N episodes (None = all)."""
    seed: int = 0
    """Seed for initialisation, z sampling and batch order."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    resume: bool = False
    """Continue from run_dir/ckpt/latest."""


def episode_batches(lengths: list[int], batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffle episodes into batches of similar length (less padding): groups of 8 batches sorted by length."""
    order = rng.permutation(len(lengths))
    out = []
    for g in range(0, len(order), 8 * batch):
        grp = sorted(order[g:g + 8 * batch], key=lambda i: lengths[i])
        out += [list(grp[b:b + batch]) for b in range(0, len(grp), batch)]
    rng.shuffle(out)
    return out


def pad_batch(mus, logvars, eps, idx: list[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Episodes ``idx`` from their first frame, padded to the longest: z sampled from V's posterior."""
    T = max(len(eps[i]) for i in idx)
    B, Z, A = len(idx), mus[idx[0]].shape[1], eps[idx[0]].actions.shape[1]
    z, a = torch.zeros(B, T + 1, Z), torch.zeros(B, T, A)
    done, mask = torch.zeros(B, T), torch.zeros(B, T)
    for b, i in enumerate(idx):
        n = len(eps[i])
        mu, std = torch.from_numpy(mus[i]), torch.from_numpy(logvars[i]).mul(0.5).exp()
        z[b, : n + 1] = mu + std * torch.randn(mu.shape, generator=gen)       # a fresh z each epoch
        a[b, :n] = torch.from_numpy(eps[i].actions)
        done[b, :n] = torch.from_numpy(eps[i].terminated.astype(np.float32))  # 1 on the frame that kills
        mask[b, :n] = 1.0
    return {"z": z, "actions": a, "dones": done, "mask": mask}


def train_doom_mdnrnn(cfg: DoomMDNRNNConfig, vae: ConvVAE | None = None, progress: bool = True):
    from tqdm.auto import tqdm

    cfg = _fill(cfg, epochs="doom_mdnrnn_epochs", batch_size="doom_mdnrnn_batch", seq_len="doom_seq_len",
                hidden="doom_hidden")
    dev = pick_device(cfg.device)
    seed_everything(cfg.seed)
    vae = vae if vae is not None else load_vae(cfg.vae_dir, cfg.device)
    paths = episode_paths(cfg.data_dir)[: cfg.max_episodes]
    if cfg.heldout >= len(paths):
        raise ValueError(f"heldout={cfg.heldout} leaves no training episodes of {len(paths)}")
    eps, mus, lvs = encode_all(vae, paths[: len(paths) - cfg.heldout], progress)
    m = MDNRNN(vae.z_dim, 1, cfg.hidden, cfg.n_mix, reward_done_heads=True, reward_head=False).to(dev)
    opt = torch.optim.Adam(m.parameters(), lr=cfg.lr)
    start_epoch, step = 0, 0
    if cfg.resume and checkpoint_exists(_ckpt(cfg.run_dir)):
        st = load_state(_ckpt(cfg.run_dir))
        m.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        start_epoch, step = st["epoch"], st["step"]
        set_rng_state(st["rng"])
    log = Logger(cfg.run_dir, resume=cfg.resume)
    log.save_config(to_dict(cfg))
    lengths = [len(e) for e in eps]
    bar = tqdm(range(start_epoch, cfg.epochs), desc="Doom MDN-RNN epochs", disable=not progress)
    for epoch in bar:
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        for idx in episode_batches(lengths, cfg.batch_size, rng):
            b = {k: v.to(dev) for k, v in pad_batch(mus, lvs, eps, idx, gen).items()}
            # [tbptt]
            state = None                                             # zero state at every episode's start
            for s in range(0, b["actions"].shape[1], cfg.seq_len):  # truncated BPTT, state carried
                sl = slice(s, s + cfg.seq_len)
                for g in opt.param_groups:
                    g["lr"] = (cfg.lr - cfg.min_lr) * cfg.lr_decay ** step + cfg.min_lr
                losses = m.loss(b["z"][:, s:s + cfg.seq_len + 1], b["actions"][:, sl], dones=b["dones"][:, sl],
                                done_pos_weight=cfg.restart_factor, mask=b["mask"][:, sl], state=state,
                                return_state=True)
                state = losses.pop("state")
                check_finite(losses, step)
                opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                torch.nn.utils.clip_grad_value_(m.parameters(), cfg.grad_clip)
                opt.step()
                # [/tbptt]
                step += 1
                log.log(step, **{f"doom_mdnrnn/{k}": v for k, v in losses.items()}, epoch=epoch)
        bar.set_postfix(nll=f"{losses['nll'].item():.3f}", done=f"{losses['done'].item():.3f}")
        init = np.stack([mu[0] for mu in mus]), np.stack([lv[0] for lv in lvs])  # first frames: dream starts
        save_state(_ckpt(cfg.run_dir), {"model": m.state_dict(), "optim": opt.state_dict(), "epoch": epoch + 1,
                                        "step": step, "rng": rng_state(), "init_mu": init[0], "init_logvar": init[1]},
                   metadata={"config": to_dict(cfg), "kind": "doom_mdnrnn", "z_dim": vae.z_dim})
    log.close()
    return m.eval(), log.history


def load_doom_mdnrnn(run_dir: str | Path = f"{DOOM_ROOT}/mdnrnn", device: str = "auto"):
    """(M, initial mu (N, Z), initial logvar (N, Z)) from a train-mdnrnn run folder."""
    meta, st = load_meta(_ckpt(run_dir)), load_state(_ckpt(run_dir))
    m = MDNRNN(meta["z_dim"], 1, meta["config"]["hidden"], meta["config"]["n_mix"], reward_head=False)
    m.load_state_dict(st["model"])
    return (m.to(pick_device(device)).eval(), torch.as_tensor(st["init_mu"]).float(),
            torch.as_tensor(st["init_logvar"]).float())


@torch.no_grad()
def done_calibration(m: MDNRNN, vae: ConvVAE, paths: list[Path],
                     bins: tuple[int, ...] = (0, 1, 5, 20, 100, 10**9)) -> list[dict]:
    """Is the done head calibrated? Teacher-forced on real episodes, the mean predicted P(done at t) by
    frames-to-death k (k = 0: the frame that kills, where the real rate is 1; k >= 1: real rate 0)."""
    from wmkit.worldmodels.data import load_episode
    from wmkit.worldmodels.dream_env import encode_episode

    dev = next(m.parameters()).device
    per_k: dict[int, list[float]] = {}
    for p in paths:
        ep = load_episode(p)
        if not ep.terminated[-1]:
            continue  # survived to the cap: no death to count down to
        mu, _ = encode_episode(vae, ep)
        out = m(torch.from_numpy(mu[None, :-1]).to(dev), torch.from_numpy(ep.actions[None]).to(dev))
        prob = torch.sigmoid(out.done_logit[0]).cpu().numpy()                 # (T,)
        for t, pr in enumerate(prob):
            per_k.setdefault(len(ep) - 1 - t, []).append(float(pr))
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        vals = [v for k, vs in per_k.items() if lo <= k < hi for v in vs]
        if vals:
            rows.append({"frames_to_death": f"{lo}" if hi == lo + 1 else f"{lo}-{min(hi - 1, 9999)}",
                         "predicted": float(np.mean(vals)), "real": 1.0 if lo == 0 else 0.0, "n": len(vals)})
    return rows


# ---------------------------------------------------------------------------------------------- C
@dataclass
class DoomControllerConfig:
    """Train C with CMA-ES only inside M's dream, then play the real game (and the random policy)."""

    vae_dir: str = f"{DOOM_ROOT}/vae"
    """Run folder of the Doom V (used only for the real-game evaluation)."""
    mdnrnn_dir: str = f"{DOOM_ROOT}/mdnrnn"
    """Run folder of the Doom M (the dream)."""
    run_dir: str = f"{DOOM_ROOT}/controller"
    """Output folder."""
    tau: float = 1.15
    """Dream temperature (the paper's headline: 1.15)."""
    popsize: int | None = None
    """CMA-ES population (default: the profile's doom_popsize; paper: 64)."""
    rollouts: int | None = None
    """Dreams averaged per candidate (default: doom_rollouts; paper: 16)."""
    generations: int | None = None
    """CMA-ES generations (default: doom_generations)."""
    dream_max_steps: int | None = None
    """Frame cap of a dream (default: doom_dream_max_steps; paper: 2,100)."""
    sigma0: float = 0.1
    """Initial CMA-ES step size (paper: sigma_init 0.1)."""
    weight_decay: float = 0.01
    """L2 penalty in CMA-ES's ranking (estool: 0.01; see cma_search)."""
    eval_episodes: int | None = None
    """Real episodes for the controller AND the random policy (default: doom_eval_episodes; paper: 100)."""
    eval_max_steps: int | None = None
    """Frame cap of a real episode (default: the profile's doom_max_steps; paper: 2,100)."""
    eval_random: bool = True
    """Also play the random policy on the same real episodes (False: skip it, e.g. in a tau sweep)."""
    workers: int | None = None
    """Processes for CMA-ES's dreams and the real games (default: the profile's workers; same result for any)."""
    seed: int = 0
    """Seed for CMA-ES and the dreams."""
    device: str = "cpu"
    """Device for V/M (the CPU is fastest for these small batches)."""
    resume: bool = False
    """Continue from run_dir/ckpt/latest (its CMA-ES mean as the start)."""


def _dream_part(pop, m, init_mu, init_lv, rollouts, tau, max_steps, seed):
    return dream_survival(pop, m, init_mu, init_lv, rollouts, tau, max_steps, seed=seed)


def train_doom_controller(cfg: DoomControllerConfig, vae: ConvVAE | None = None, mdnrnn=None,
                          progress: bool = True) -> tuple[np.ndarray, dict]:
    """CMA-ES in the dream. Returns (C's parameters = CMA-ES's mean, results with real and dreamed survival)."""
    cfg = _fill(cfg, popsize="doom_popsize", rollouts="doom_rollouts", generations="doom_generations",
                dream_max_steps="doom_dream_max_steps", eval_episodes="doom_eval_episodes",
                eval_max_steps="doom_max_steps", workers="workers")
    seed_everything(cfg.seed)
    m, init_mu, init_lv = mdnrnn if mdnrnn is not None else load_doom_mdnrnn(cfg.mdnrnn_dir, cfg.device)
    m = m.to(cfg.device)
    x0 = load_state(_ckpt(cfg.run_dir))["mean"] if cfg.resume and checkpoint_exists(_ckpt(cfg.run_dir)) else None
    log = Logger(cfg.run_dir, resume=cfg.resume)
    log.save_config(to_dict(cfg))

    n_proc = cfg.workers if cfg.device == "cpu" else 1
    pool = process_pool(n_proc) if n_proc > 1 else None  # CMA-ES's dreams split over processes

    def fitness(pop: np.ndarray, gen: int) -> np.ndarray:
        args = (m, init_mu, init_lv, cfg.rollouts, cfg.tau, cfg.dream_max_steps, cfg.seed * 100_003 + gen)
        if pool is None:
            return dream_survival(pop, *args).mean(1)
        # the candidates split over processes: every one still sees the same dreams (common random numbers,
        # drawn per rollout, not per candidate), so the fitness is the same as in one process
        parts = np.array_split(pop, n_proc)
        return np.concatenate([f.result() for f in [pool.submit(_dream_part, q, *args) for q in parts]]).mean(1)

    threads = torch.get_num_threads()
    if cfg.device == "cpu":
        torch.set_num_threads(1)
    try:
        params, history, es = cma_search(
            fitness, doom_controller_dim(m.z_dim, m.hidden), cfg.popsize, cfg.generations, cfg.sigma0, cfg.seed,
            x0=x0, progress=progress, weight_decay=cfg.weight_decay,
            callback=lambda g, row: log.log(g, **{f"cma/{k}": v for k, v in row.items() if k != "generation"}))
        dream = dream_survival(params[None], m, init_mu, init_lv, max(cfg.rollouts, 32), cfg.tau,
                               cfg.dream_max_steps, seed=123_456)[0]
        results = {"tau": cfg.tau, "dream_mean": float(dream.mean()), "history": history}
        if cfg.eval_episodes > 0:
            vae = (vae if vae is not None else load_vae(cfg.vae_dir, cfg.device)).to(cfg.device)
            seeds = [EVAL_SEED + i for i in range(cfg.eval_episodes)]
            real = real_survival(params, seeds, vae, m, cfg.eval_max_steps, progress=progress,
                                 workers=cfg.workers)["steps"]
            (rm, rse) = mean_and_se(real)
            results.update(real_mean=rm, real_se=rse, real_std=float(real.std()), real_steps=real.tolist())
            log.log(cfg.generations, **{"eval/real_mean": rm, "eval/dream_mean": dream.mean()})
            if cfg.eval_random:
                rand = real_survival(None, seeds, max_steps=cfg.eval_max_steps, progress=progress,
                                     workers=cfg.workers)["steps"]
                (bm, bse) = mean_and_se(rand)
                results.update(random_mean=bm, random_se=bse, random_steps=rand.tolist())
                log.log(cfg.generations, **{"eval/random_mean": bm})
    finally:
        torch.set_num_threads(threads)
        if pool is not None:
            pool.shutdown()
    save_state(_ckpt(cfg.run_dir), {"params": params, "mean": np.asarray(es.mean)},
               metadata={"config": to_dict(cfg), "kind": "doom_controller",
                         "results": {k: v for k, v in results.items() if k != "history"}})
    log.close()
    return params, results
