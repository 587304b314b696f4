"""Trainers for World Models (Ha & Schmidhuber 2018, Car Racing experiment, "Procedure"), one per step:

1. :func:`run_collect`          -- rollouts, Brownian (default) or random-weight agents -> episodes/*.npz
2. :func:`train_vae`            -- V on every frame                                   -> vae/ckpt/latest
3. :func:`train_mdnrnn`         -- M on V's latents (z resampled from q(z|x) per epoch) -> mdnrnn/ckpt/latest
4. :func:`train_controller`     -- C with CMA-ES, in the dream (default) or the real env -> controller/...

Each takes a config dataclass (the same one drives ``wmkit worldmodels <step> --help``); ``None`` fields
are filled from the active profile (``wmkit.profile().worldmodels``). Every trainer writes the layout of
:mod:`wmkit.training` (config.json, metrics.jsonl, tb/, ckpt/latest.*) and continues from its checkpoint
with ``resume=True``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from wmkit.checkpoint import checkpoint_exists, load_meta, load_state, save_state
from wmkit.config import to_dict
from wmkit.profiles import profile
from wmkit.training import Logger, check_finite
from wmkit.utils import pick_device, rng_state, seed_everything, set_rng_state
from wmkit.worldmodels.controller import Controller, cma_search, real_returns
from wmkit.worldmodels.data import (
    LatentSequenceDataset,
    ShuffledFrames,
    collect,
    episode_paths,
    load_episode,
)
from wmkit.worldmodels.dream_env import dream_returns, encode_episode
from wmkit.worldmodels.mdnrnn import MDNRNN
from wmkit.worldmodels.vae import ConvVAE

ROOT = "runs/worldmodels"


def _fill(cfg, **from_profile):
    """Replace None fields of ``cfg`` by the active profile's numbers."""
    P = profile().worldmodels
    return dataclasses.replace(cfg, **{k: getattr(P, v) for k, v in from_profile.items()
                                        if getattr(cfg, k) is None})


def _num_frames(path: Path) -> int:
    """Frames in an episode file, reading only its small rewards array."""
    with np.load(path) as f:
        return len(f["rewards"]) + 1


def _ckpt(run_dir: str | Path) -> Path:
    return Path(run_dir) / "ckpt" / "latest"


# ---------------------------------------------------------------------------------------------- collect
@dataclass
class CollectConfig:
    """Collect CarRacing-v3 rollouts: wmkit's Brownian exploration (default) or the paper's random-weight agents."""

    out_dir: str = f"{ROOT}/episodes"
    """Folder for episode_<seed>.npz files (existing valid files are kept: collection resumes)."""
    n_rollouts: int | None = None
    """Number of episodes (default: the profile's n_rollouts; the paper uses 10,000)."""
    rollout_len: int | None = None
    """Maximum steps per episode (default: the profile's rollout_len; CarRacing's limit is 1000)."""
    workers: int | None = None
    """Parallel worker processes (default: the profile's workers)."""
    seed: int = 0
    """Episode i uses seed + i for the track and the exploration noise."""
    dt: float = 0.05
    """Brownian step size: each action component moves by sqrt(dt) * N(0, 1) per step."""
    follow_fraction: float = 0.5
    """Fraction of episodes that follow the road with Brownian noise (beyond the paper, whose random
    policy rarely stays on the road); 0 = purely Brownian data."""
    policy: str = "brownian"
    """'brownian' (wmkit: Brownian actions, plus follow_fraction road-following episodes) or
    'random_weights' (the paper's code: a fresh random-Cauchy-weight V+M+C agent per episode)."""


def run_collect(cfg: CollectConfig, progress: bool = True) -> list[Path]:
    cfg = _fill(cfg, n_rollouts="n_rollouts", rollout_len="rollout_len", workers="workers")
    return collect(cfg.out_dir, cfg.n_rollouts, cfg.rollout_len, seed=cfg.seed, workers=cfg.workers,
                   dt=cfg.dt, progress=progress, follow_fraction=cfg.follow_fraction, policy=cfg.policy)


# ---------------------------------------------------------------------------------------------- V
@dataclass
class TrainVAEConfig:
    """Train V, the convolutional VAE, on every collected frame."""

    data_dir: str = f"{ROOT}/episodes"
    """Folder of episode .npz files written by `wmkit worldmodels collect`."""
    run_dir: str = f"{ROOT}/vae"
    """Output folder: config.json, metrics.jsonl, tb/, ckpt/latest.*"""
    epochs: int | None = None
    """Passes over the frames (default: the profile's vae_epochs; the paper uses 1 over 10M frames)."""
    batch_size: int | None = None
    """Frames per update (default: the profile's vae_batch; the paper uses 100)."""
    lr: float = 1e-3
    """Adam learning rate (the paper's code: 1e-4 for 10M frames; small data needs larger steps)."""
    kl_tolerance: float = 0.5
    """Free bits: the KL term is not reduced below kl_tolerance * z_dim nats (paper: 0.5)."""
    z_dim: int = 32
    """Latent size (paper: 32 for CarRacing)."""
    max_episodes: int | None = None
    """Use only the first N episodes (None = all)."""
    chunk_episodes: int = 200
    """Episodes held in memory at once; frames are shuffled within a chunk (paper scale: 10M frames)."""
    seed: int = 0
    """Seed for initialisation and batch order."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    resume: bool = False
    """Continue from run_dir/ckpt/latest (model, optimiser, RNG and epoch)."""


def train_vae(cfg: TrainVAEConfig, progress: bool = True) -> tuple[ConvVAE, list[dict]]:
    from tqdm.auto import tqdm

    cfg = _fill(cfg, epochs="vae_epochs", batch_size="vae_batch")
    dev = pick_device(cfg.device)
    seed_everything(cfg.seed)
    paths = episode_paths(cfg.data_dir)[: cfg.max_episodes]
    data = ShuffledFrames(paths, cfg.batch_size, cfg.chunk_episodes, seed=cfg.seed)
    vae = ConvVAE(cfg.z_dim, cfg.kl_tolerance).to(dev)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    start_epoch, step = 0, 0
    if cfg.resume and checkpoint_exists(_ckpt(cfg.run_dir)):
        st = load_state(_ckpt(cfg.run_dir))
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        start_epoch, step = st["epoch"], st["step"]
        set_rng_state(st["rng"])
    log = Logger(cfg.run_dir, resume=cfg.resume)
    log.save_config(to_dict(cfg))
    per_epoch = sum(_num_frames(p) for p in paths) // cfg.batch_size
    log_every = 10 if per_epoch >= 100 else 1
    for epoch in range(start_epoch, cfg.epochs):
        data.set_epoch(epoch)
        bar = tqdm(data, desc=f"VAE epoch {epoch + 1}/{cfg.epochs}", total=per_epoch, disable=not progress)
        for x in bar:
            losses = vae.loss(x.to(dev))
            check_finite(losses, step)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            step += 1
            if step % log_every == 0:
                log.log(step, **{f"vae/{k}": v for k, v in losses.items()}, epoch=epoch)
            bar.set_postfix(recon=f"{losses['recon'].item():.1f}", kl=f"{losses['kl'].item():.1f}")
        save_state(_ckpt(cfg.run_dir), {"model": vae.state_dict(), "optim": opt.state_dict(),
                                        "epoch": epoch + 1, "step": step, "rng": rng_state()},
                   metadata={"config": to_dict(cfg), "kind": "vae"})
    log.close()
    return vae.eval(), log.history


def load_vae(run_dir: str | Path = f"{ROOT}/vae", device: str = "auto") -> ConvVAE:
    meta = load_meta(_ckpt(run_dir))["config"]
    vae = ConvVAE(meta["z_dim"], meta["kl_tolerance"])
    vae.load_state_dict(load_state(_ckpt(run_dir))["model"])
    return vae.to(pick_device(device)).eval()


# ---------------------------------------------------------------------------------------------- M
@dataclass
class TrainMDNRNNConfig:
    """Train M, the MDN-RNN, on V's latents of every episode."""

    data_dir: str = f"{ROOT}/episodes"
    """Folder of episode .npz files."""
    vae_dir: str = f"{ROOT}/vae"
    """Run folder of a trained V (train-vae's run_dir)."""
    run_dir: str = f"{ROOT}/mdnrnn"
    """Output folder."""
    epochs: int | None = None
    """Passes over the episodes (default: the profile's mdnrnn_epochs; paper: 20)."""
    batch_size: int | None = None
    """Sequences per update (default: the profile's mdnrnn_batch; paper: 100)."""
    seq_len: int | None = None
    """Steps per training sequence (default: the profile's mdnrnn_seq_len; paper: 999)."""
    lr: float = 1e-3
    """Adam learning rate (paper: 1e-3)."""
    grad_clip: float = 1.0
    """Clip the gradient norm (paper: 1.0)."""
    hidden: int = 256
    """LSTM units (paper: 256)."""
    n_mix: int = 5
    """Gaussians per latent dimension (paper: 5)."""
    reward_weight: float = 1.0
    """Weight of the reward-head MSE (beyond the paper; lets C train in the dream)."""
    done_weight: float = 1.0
    """Weight of the done-head cross-entropy (beyond the paper's CarRacing model)."""
    max_episodes: int | None = None
    """Use only the first N episodes (None = all)."""
    seed: int = 0
    """Seed for initialisation, z sampling and batch order."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    resume: bool = False
    """Continue from run_dir/ckpt/latest."""


def encode_all(vae: ConvVAE, paths: list[Path], progress: bool = True):
    """Episodes (frames dropped after encoding, to save memory) and V's (mu, logvar) per frame."""
    from tqdm.auto import tqdm

    eps, mus, lvs = [], [], []
    for p in tqdm(paths, desc="encode", disable=not progress):
        ep = load_episode(p)
        mu, lv = encode_episode(vae, ep)
        ep.obs = ep.obs[:1]  # keep only the first frame: 10k episodes of frames would be 120 GB
        eps.append(ep)
        mus.append(mu)
        lvs.append(lv)
    return eps, mus, lvs


def train_mdnrnn(cfg: TrainMDNRNNConfig, vae: ConvVAE | None = None,
                 progress: bool = True) -> tuple[MDNRNN, list[dict]]:
    from tqdm.auto import tqdm

    cfg = _fill(cfg, epochs="mdnrnn_epochs", batch_size="mdnrnn_batch", seq_len="mdnrnn_seq_len")
    dev = pick_device(cfg.device)
    seed_everything(cfg.seed)
    vae = vae if vae is not None else load_vae(cfg.vae_dir, cfg.device)
    eps, mus, lvs = encode_all(vae, episode_paths(cfg.data_dir)[: cfg.max_episodes], progress)
    seq_len = min(cfg.seq_len, min(len(e) for e in eps))
    data = LatentSequenceDataset(mus, lvs, eps, seq_len)
    m = MDNRNN(vae.z_dim, 3, cfg.hidden, cfg.n_mix).to(dev)
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
    g = torch.Generator().manual_seed(cfg.seed + start_epoch)
    bar = tqdm(range(start_epoch, cfg.epochs), desc="MDN-RNN epochs", disable=not progress)
    for epoch in bar:
        loader = DataLoader(data, batch_size=min(cfg.batch_size, len(data)), shuffle=True, generator=g)
        for b in loader:
            losses = m.loss(b["z"].to(dev), b["actions"].to(dev), b["rewards"].to(dev), b["dones"].to(dev),
                            cfg.reward_weight, cfg.done_weight)
            check_finite(losses, step)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            log.log(step, **{f"mdnrnn/{k}": v for k, v in losses.items()}, epoch=epoch)
        bar.set_postfix(nll=f"{losses['nll'].item():.3f}")
        save_state(_ckpt(cfg.run_dir), {"model": m.state_dict(), "optim": opt.state_dict(),
                                        "epoch": epoch + 1, "step": step, "rng": rng_state()},
                   metadata={"config": to_dict(cfg), "kind": "mdnrnn", "z_dim": vae.z_dim})
    log.close()
    return m.eval(), log.history


def load_mdnrnn(run_dir: str | Path = f"{ROOT}/mdnrnn", device: str = "auto") -> MDNRNN:
    meta = load_meta(_ckpt(run_dir))
    m = MDNRNN(meta["z_dim"], 3, meta["config"]["hidden"], meta["config"]["n_mix"])
    m.load_state_dict(load_state(_ckpt(run_dir))["model"])
    return m.to(pick_device(device)).eval()


# ---------------------------------------------------------------------------------------------- C
@dataclass
class TrainControllerConfig:
    """Train C with CMA-ES, inside M's dream (default) or in the real CarRacing-v3."""

    data_dir: str = f"{ROOT}/episodes"
    """Episodes whose encoded frames are the dream's starting states."""
    vae_dir: str = f"{ROOT}/vae"
    """Run folder of a trained V."""
    mdnrnn_dir: str = f"{ROOT}/mdnrnn"
    """Run folder of a trained M."""
    run_dir: str = f"{ROOT}/controller"
    """Output folder."""
    env: str = "dream"
    """Where fitness is measured: 'dream' (inside M, batched) or 'real' (CarRacing-v3, slow)."""
    popsize: int | None = None
    """CMA-ES population (default: the profile's cma_popsize; paper: 64)."""
    generations: int | None = None
    """CMA-ES generations (default: the profile's cma_generations)."""
    rollouts: int | None = None
    """Rollouts averaged per candidate (default: the profile's cma_rollouts; paper: 16)."""
    horizon: int | None = None
    """Steps per dreamed rollout (default: the profile's dream_horizon)."""
    tau: float = 1.15
    """Dream temperature: > 1 makes the dream harder to exploit (the paper's Doom setting: 1.15)."""
    sigma0: float = 0.1
    """Initial CMA-ES step size."""
    weight_decay: float = 0.01
    """L2 penalty CMA-ES ranks by: fitness - weight_decay * mean(params^2) (estool's default 0.01)."""
    eval_episodes: int | None = None
    """Real-env evaluation episodes of the deployed (mean) controller at the end (default: the profile's)."""
    eval_max_steps: int | None = None
    """Steps per real evaluation episode (default: the profile's eval_max_steps)."""
    workers: int | None = None
    """Real environments run in parallel (default: the profile's workers)."""
    search_envs: int | None = None
    """With env='real': environments stepped together during the search (default: a whole generation,
    popsize x rollouts, at most 16; V/M/C batched over them). Same returns as ``workers`` at a time; at 8 it
    was 1.2-1.4x faster than 2 on the 2-core machine."""
    seed: int = 0
    """Seed for CMA-ES and the dream noise."""
    device: str = "cpu"
    """Device for V/M during the search (small batches: the CPU is usually fastest)."""
    resume: bool = False
    """Continue from run_dir/ckpt/latest (its CMA-ES mean as the new search's start)."""


def initial_latents(vae: ConvVAE, data_dir: str, skip: int = 50, max_episodes: int = 50) -> torch.Tensor:
    """Encoded real frames to start dreams from (skipping CarRacing's zoom-in animation): (N, Z)."""
    eps, mus, _ = encode_all(vae, episode_paths(data_dir)[:max_episodes], progress=False)
    return torch.from_numpy(np.concatenate([m[skip:] if len(m) > skip + 1 else m for m in mus]))


def train_controller(cfg: TrainControllerConfig, vae: ConvVAE | None = None, mdnrnn: MDNRNN | None = None,
                     progress: bool = True) -> tuple[Controller, dict]:
    """CMA-ES over C's 867 parameters. Returns C set to CMA-ES's final distribution mean (what the
    paper's code deploys) and a results dict."""
    cfg = _fill(cfg, popsize="cma_popsize", generations="cma_generations", rollouts="cma_rollouts",
                horizon="dream_horizon", eval_episodes="eval_episodes", eval_max_steps="eval_max_steps",
                workers="workers")
    if cfg.env not in ("dream", "real"):
        raise ValueError(f"env must be 'dream' or 'real', got {cfg.env!r}")
    seed_everything(cfg.seed)
    vae = (vae if vae is not None else load_vae(cfg.vae_dir)).to(cfg.device)
    mdnrnn = (mdnrnn if mdnrnn is not None else load_mdnrnn(cfg.mdnrnn_dir)).to(cfg.device)
    ctrl = Controller(mdnrnn.z_dim, mdnrnn.hidden)
    x0 = None
    if cfg.resume and checkpoint_exists(_ckpt(cfg.run_dir)):
        x0 = load_state(_ckpt(cfg.run_dir))["mean"]
    z_pool = initial_latents(vae, cfg.data_dir) if cfg.env == "dream" else None
    log = Logger(cfg.run_dir, resume=cfg.resume)
    log.save_config(to_dict(cfg))

    def fitness(pop: np.ndarray, gen: int) -> np.ndarray:
        if cfg.env == "dream":
            return dream_returns(pop, mdnrnn, z_pool, cfg.rollouts, cfg.horizon, cfg.tau,
                                 seed=cfg.seed * 100_003 + gen)
        seeds = [10_000 + cfg.seed * 1000 + gen * cfg.rollouts + r for r in range(cfg.rollouts)]
        n_env = cfg.search_envs or min(16, len(pop) * cfg.rollouts)
        rets = real_returns(np.repeat(pop, cfg.rollouts, 0), seeds * len(pop), vae, mdnrnn,
                            cfg.horizon, n_env)
        return rets.reshape(len(pop), cfg.rollouts).mean(1)

    threads = torch.get_num_threads()
    if cfg.device == "cpu":  # many tiny LSTM steps: one thread avoids synchronisation (2-3x faster)
        torch.set_num_threads(1)
    try:
        deployed, history, es = cma_search(
            fitness, ctrl.num_params, cfg.popsize, cfg.generations, cfg.sigma0, cfg.seed, x0=x0,
            progress=progress, weight_decay=cfg.weight_decay,
            callback=lambda g, row: log.log(g, **{f"cma/{k}": v for k, v in row.items() if k != "generation"}))
    finally:
        torch.set_num_threads(threads)
    ctrl.set_flat(deployed)
    # "train_best": the best single noisy candidate's fitness (optimistic); the deployed C is the mean.
    results = {"env": cfg.env, "train_best": history[-1]["best_so_far"], "history": history}
    if cfg.eval_episodes > 0:
        seeds = [50_000 + i for i in range(cfg.eval_episodes)]  # tracks never used in training
        real = real_returns(np.repeat(deployed[None], len(seeds), 0), seeds, vae, mdnrnn, cfg.eval_max_steps,
                            cfg.workers, progress=progress)
        results.update(real_mean=float(real.mean()), real_std=float(real.std()), real_returns=real.tolist())
        log.log(cfg.generations, **{"eval/real_mean": real.mean(), "eval/real_std": real.std()})
    save_state(_ckpt(cfg.run_dir), {"model": ctrl.state_dict(), "params": deployed, "mean": np.asarray(es.mean)},
               metadata={"config": to_dict(cfg), "kind": "controller",
                         "results": {k: v for k, v in results.items() if k != "history"}})
    log.close()
    return ctrl, results


def load_controller(run_dir: str | Path = f"{ROOT}/controller") -> Controller:
    st = load_state(_ckpt(run_dir))
    ctrl = Controller(hidden=(st["model"]["linear.weight"].shape[1] - 32))
    ctrl.load_state_dict(st["model"])
    return ctrl
