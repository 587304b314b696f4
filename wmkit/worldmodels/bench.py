"""``wmkit bench worldmodels``: speed and quality figures of stage 1 (one JSON line per figure).

Speed (synthetic inputs, the paper's model sizes):
  vae_train        images/s     V forward + backward + Adam step, batch --vae-batch
  mdnrnn_train     sequences/s  M forward + backward + Adam, batch --mdn-batch of --seq-len steps
  dream_steps      steps/s      DreamBatch: --dream-batch dreams per LSTM call (and batch 1, and the ratio)

Quality (real CarRacing-v3 data, held-out episodes):
  vae_recon_mse    per-pixel MSE of V's reconstructions (through the posterior mean), in [0, 1]^2 units
  mdnrnn_nll       M's next-latent NLL, nats per latent dimension, on z ~ q(z|x) (what M trains on)
  repeat_z_nll     baseline on the same z: z_{t+1} ~ N(z_t, s^2), s fitted per dim on training episodes
  nll_gain         repeat_z_nll - mdnrnn_nll (positive = M predicts better than "nothing moves")

By default the quality figures come from a quick run that fits the budget (--quick-episodes episodes
of --quick-steps steps, --quick-vae-epochs, --quick-mdn-epochs; about 2 minutes on 2 cores). With
``--runs DIR`` (e.g. runs/worldmodels after the cpu-profile CLI or notebook) they are measured on that
run's trained V and M instead, on the episodes in ``--heldout-dir`` (else its last --held-out ones,
which that run trained on).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from wmkit.bench import emit, timeit
from wmkit.worldmodels.data import Episode, episode_paths, frames_to_tensor, load_episode
from wmkit.worldmodels.dream_env import DreamBatch, encode_episode
from wmkit.worldmodels.mdnrnn import MDNRNN, mdn_nll
from wmkit.worldmodels.vae import ConvVAE

B = "worldmodels"


@torch.no_grad()
def recon_mse(vae: ConvVAE, episodes: list[Episode]) -> float:
    """Mean per-pixel squared error of V's reconstructions over every frame of ``episodes``."""
    errs, dev = [], next(vae.parameters()).device
    for ep in episodes:
        for s in range(0, len(ep.obs), 256):
            x = frames_to_tensor(ep.obs[s:s + 256]).to(dev)
            errs.append(((vae.reconstruct(x) - x) ** 2).mean(dim=(1, 2, 3)))
    return float(torch.cat(errs).mean())


def posterior_samples(vae: ConvVAE, episodes: list[Episode], seed: int = 0) -> list[np.ndarray]:
    """One z ~ q(z|x) per frame of each episode, with a fixed seed: the kind of latent M trains on."""
    rng = np.random.default_rng(seed)
    out = []
    for ep in episodes:
        mu, logvar = encode_episode(vae, ep)                                # (T+1, Z) each
        out.append((mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape)).astype(np.float32))
    return out


@torch.no_grad()
def next_latent_nll(m: MDNRNN, mus: list[np.ndarray], episodes: list[Episode]) -> float:
    """M's NLL of z_{t+1} given the real past (teacher forcing), nats per latent dimension."""
    tot, n, dev = 0.0, 0, next(m.parameters()).device
    for mu, ep in zip(mus, episodes):
        z = torch.from_numpy(mu)[None].to(dev)                              # (1, T+1, Z)
        out = m(z[:, :-1], torch.from_numpy(ep.actions)[None].to(dev))
        nll = mdn_nll(out.logit_pi, out.mu, out.log_sigma, z[:, 1:])        # (1, T, Z)
        tot, n = tot + float(nll.sum()), n + nll.numel()
    return tot / n


@torch.no_grad()
def nll_by_time(m: MDNRNN, zs: list[np.ndarray], actions: list[np.ndarray],
                edges: tuple[int, ...] = (0, 16, 64, 128, 256, 512, 1000, 2100)) -> list[dict]:
    """M's next-latent NLL (nats per dim) by time since the episode's start, teacher-forced from a zero
    state over whole episodes: does M still predict well beyond the window it was trained on?
    Rows: {'t': 'lo-hi', 'nll', 'n' (predicted steps)} for every bin with data."""
    dev = next(m.parameters()).device
    sums, counts = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1, np.int64)
    for z, a in zip(zs, actions):
        zt = torch.from_numpy(np.asarray(z, np.float32))[None].to(dev)     # (1, T+1, Z)
        out = m(zt[:, :-1], torch.from_numpy(np.asarray(a, np.float32))[None].to(dev))
        per_t = mdn_nll(out.logit_pi, out.mu, out.log_sigma, zt[:, 1:]).mean(-1)[0].cpu().numpy()  # (T,)
        b = np.digitize(np.arange(len(per_t)), edges) - 1                  # bin of each t
        ok = (b >= 0) & (b < len(counts))
        np.add.at(sums, b[ok], per_t[ok])
        np.add.at(counts, b[ok], 1)
    return [{"t": f"{edges[i]}-{edges[i + 1] - 1}", "nll": float(sums[i] / counts[i]), "n": int(counts[i])}
            for i in range(len(counts)) if counts[i]]


@torch.no_grad()
def reward_head_fit(m: MDNRNN, zs: list[np.ndarray], episodes: list[Episode], constant: float,
                    windows: tuple[int, ...] = (1, 10, 50)) -> list[dict]:
    """Is M's reward head informative? Teacher-forced over whole episodes, its predictions against the real
    rewards, per frame and summed over sliding ``windows`` of frames: R^2 = 1 - MSE / MSE of ``constant``
    (e.g. the training episodes' mean reward: what a head that learnt nothing predicts; 0 = no better than
    it) and the correlation. CarRacing pays +1000/N for a new tile in a few frames and -0.1 in the others, so
    a frame's reward is mostly luck and a window's sum is what C's return depends on.
    Rows: {'window', 'r2', 'corr', 'n'}."""
    dev = next(m.parameters()).device
    if m.reward_head is None:
        raise ValueError("reward_head_fit: this M has no reward head (reward_done_heads=False)")
    pred, real = [], []
    for z, ep in zip(zs, episodes):
        zt = torch.from_numpy(np.asarray(z, np.float32))[None].to(dev)      # (1, T+1, Z)
        out = m(zt[:, :-1], torch.from_numpy(np.asarray(ep.actions, np.float32))[None].to(dev))
        pred.append(out.reward[0].cpu().numpy())                            # (T,): r_t from z_<=t, a_<=t
        real.append(np.asarray(ep.rewards, np.float32)[: len(pred[-1])])
    rows = []
    for w in windows:
        p = np.concatenate([np.convolve(x, np.ones(w), "valid") for x in pred])   # (N,) window sums
        r = np.concatenate([np.convolve(x, np.ones(w), "valid") for x in real])
        rows.append({"window": w, "r2": float(1 - ((p - r) ** 2).mean() / ((constant * w - r) ** 2).mean()),
                     "corr": float(np.corrcoef(p, r)[0, 1]), "n": len(r)})
    return rows


def repeat_z_nll(train_mus: list[np.ndarray], test_mus: list[np.ndarray]) -> float:
    """Baseline NLL: z_{t+1} ~ N(z_t, s^2), s = RMS of (z_{t+1} - z_t) per dim on training episodes."""
    d_train = np.concatenate([np.diff(m, axis=0) for m in train_mus])      # (N, Z)
    s = np.sqrt((d_train ** 2).mean(0)) + 1e-6                             # (Z,)
    d = np.concatenate([np.diff(m, axis=0) for m in test_mus])
    return float((0.5 * (d / s) ** 2 + np.log(s) + 0.5 * np.log(2 * np.pi)).mean())


def speed(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    vae = ConvVAE()
    opt = torch.optim.Adam(vae.parameters(), 1e-4)
    x = torch.rand(args.vae_batch, 3, 64, 64)

    def vae_step():
        loss = vae.loss(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = timeit(vae_step, warmup=1, repeat=args.repeat)
    emit(B, "vae_train", args.vae_batch / t["median"], "images/s", batch=args.vae_batch)

    m = MDNRNN()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    z, a = torch.randn(args.mdn_batch, args.seq_len + 1, 32), torch.rand(args.mdn_batch, args.seq_len, 3)
    r, d = torch.randn(args.mdn_batch, args.seq_len), torch.zeros(args.mdn_batch, args.seq_len)

    def mdn_step():
        loss = m.loss(z, a, r, d)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = timeit(mdn_step, warmup=1, repeat=args.repeat)
    emit(B, "mdnrnn_train", args.mdn_batch / t["median"], "sequences/s", batch=args.mdn_batch,
         seq_len=args.seq_len)

    rates = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny per-step ops: extra threads only add synchronisation
    for batch in (1, args.dream_batch):
        core = DreamBatch(m, tau=1.0)
        core.reset(torch.randn(batch, 32), seed=0)
        acts = torch.rand(batch, 3)

        def steps(core=core, acts=acts):
            for _ in range(20):
                core.step(acts)

        t = timeit(steps, warmup=1, repeat=args.repeat)
        rates[batch] = 20 * batch / t["median"]
    emit(B, "dream_steps", rates[args.dream_batch], "steps/s", batch=args.dream_batch, threads=1)
    emit(B, "dream_steps_single", rates[1], "steps/s", batch=1, threads=1)
    emit(B, "dream_batched_speedup", rates[args.dream_batch] / rates[1], "x",
         batch=args.dream_batch, threads=1)
    torch.set_num_threads(threads)


def quality(args: argparse.Namespace) -> None:
    from wmkit.worldmodels.train import (
        CollectConfig,
        TrainMDNRNNConfig,
        TrainVAEConfig,
        load_mdnrnn,
        load_vae,
        run_collect,
        train_mdnrnn,
        train_vae,
    )

    if args.runs:
        root = Path(args.runs)
        paths = episode_paths(root / "episodes")
        vae, m = load_vae(root / "vae", "cpu"), load_mdnrnn(root / "mdnrnn", "cpu")
        budget = f"trained run {root}"
    else:
        root = Path(tempfile.mkdtemp(prefix="wm_bench_"))
        n = args.quick_episodes
        run_collect(CollectConfig(out_dir=str(root / "episodes"), n_rollouts=n, rollout_len=args.quick_steps,
                                  workers=2, seed=1000), progress=False)
        paths = episode_paths(root / "episodes")
        train_paths = root / "train"
        train_paths.mkdir()
        for p in paths[:-args.held_out]:
            (train_paths / p.name).symlink_to(p)
        vae, _ = train_vae(TrainVAEConfig(data_dir=str(train_paths), run_dir=str(root / "vae"),
                                          epochs=args.quick_vae_epochs, batch_size=32, device="cpu"),
                           progress=False)
        m, _ = train_mdnrnn(TrainMDNRNNConfig(data_dir=str(train_paths), run_dir=str(root / "mdnrnn"),
                                              epochs=args.quick_mdn_epochs, batch_size=8, seq_len=64,
                                              device="cpu"), vae=vae, progress=False)
        budget = (f"quick: {n - args.held_out} train episodes x {args.quick_steps} steps, "
                  f"VAE {args.quick_vae_epochs} epochs, M {args.quick_mdn_epochs} epochs")
    eps = [load_episode(p) for p in paths]
    train, test = eps[:-args.held_out], eps[-args.held_out:]
    if args.runs and args.heldout_dir:  # episodes V and M never trained on
        train, test = eps, [load_episode(p) for p in episode_paths(args.heldout_dir)]
        budget += f", held out: {args.heldout_dir}"
    mus_train, mus_test = posterior_samples(vae, train, seed=1), posterior_samples(vae, test, seed=2)
    emit(B, "vae_recon_mse", recon_mse(vae, test), "mse/pixel", budget=budget)
    nll, base = next_latent_nll(m, mus_test, test), repeat_z_nll(mus_train, mus_test)
    emit(B, "mdnrnn_nll", nll, "nats/dim", budget=budget)
    emit(B, "repeat_z_nll", base, "nats/dim", budget=budget)
    emit(B, "nll_gain", base - nll, "nats/dim", budget=budget)


def run(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="wmkit bench worldmodels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["speed", "quality", "all"], default="all")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--mdn-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--dream-batch", type=int, default=64, help="e.g. CMA-ES population x rollouts")
    p.add_argument("--runs", default=None, help="measure quality on a trained run folder instead")
    p.add_argument("--held-out", type=int, default=2, help="last N episodes are the test set")
    p.add_argument("--heldout-dir", default=None,
                   help="with --runs: a folder of episodes the run never trained on (the test set)")
    p.add_argument("--quick-episodes", type=int, default=10)
    p.add_argument("--quick-steps", type=int, default=200)
    p.add_argument("--quick-vae-epochs", type=int, default=3)
    p.add_argument("--quick-mdn-epochs", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only in ("speed", "all"):
        speed(args)
    if args.only in ("quality", "all"):
        quality(args)


if __name__ == "__main__":
    run(sys.argv[1:])
