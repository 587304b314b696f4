"""Train one latent action model (LAM) and print its held-out tables: what the page's LAM comparisons come from.

Issue #11 (book/stage3/genie.md, notebook 03a). Trains ``wmkit.genie.train.train_lam`` with the active profile's
GenieConfig, where any field can be overridden on the command line (``--lam-steps 600``, ``--lam-enc-flow-token``;
``--help`` lists them), on the same Crafter recording as the notebook, then measures on the held-out
episodes:

- code usage, perplexity and the LAM decoder's PSNR gain of the inferred code over a random one (``eval_lam``);
- the code x observed-motion table (none / left / right / up / down) and, per direction, its commonest code;
- what the LAM decoder draws under each code (``lam_effect_table``: the scroll of its next frame) and the number
  of distinct effects at 0.02;
- a readout of the motion from the encoder's *continuous* output a_e (before the quantizer): nearest class mean,
  class means from the training transitions, share right per held-out direction -- does the vertical component
  reach the quantizer?

    OMP_NUM_THREADS=1 WMKIT_PROFILE=cpu python tools/genie_lam_runs.py --counts     # transitions per direction only
    OMP_NUM_THREADS=1 WMKIT_PROFILE=cpu python tools/genie_lam_runs.py --lam-steps 600 --lam-enc-flow-token

Two diagnostics instead of a LAM run:

    ... genie_lam_runs.py --readout-at-init    # the readout above from the *untrained* encoder and the mean cost volume
    ... genie_lam_runs.py --oracle-decoder --lam-steps 600   # the LAM decoder alone, given the true motion as its code
"""
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import torch

from wmkit.config import parse_config
from wmkit.genie.lam import LatentActionModel
from wmkit.genie.play import distinct_effects, lam_effect_table
from wmkit.genie.train import (
    MOTIONS,
    GenieConfig,
    eval_lam,
    fill,
    lam_config,
    load_episodes,
    moving_windows,
    observed_motion,
    sample_windows,
    to_tensor,
    train_lam,
)


def counts(data: dict) -> None:
    """Transitions per observed direction and their mean squared change, per split."""
    for split, eps in data.items():
        m = np.concatenate([observed_motion(e["frames"]) for e in eps])
        d = np.concatenate([((e["frames"][1:].astype(np.float32) - e["frames"][:-1]) / 255.0) ** 2
                            for e in eps]).mean((1, 2, 3))
        print(f"{split}: {len(eps)} episodes; transitions " + ", ".join(f"{k} {int((m == i).sum())}"
                                                                       for i, k in enumerate(MOTIONS)))
        print("  mean squared change " + ", ".join(f"{k} {d[m == i].mean():.4f}" for i, k in enumerate(MOTIONS)
                                                   if (m == i).any()))


@torch.no_grad()
def encoder_outputs(lam, episodes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Continuous encoder output a_e (M, d) of every transition (as a 2-frame window) and its observed motion."""
    feats, motion = [], []
    for e in episodes:
        x = to_tensor(e["frames"])  # (T, 3, H, W)
        pairs = torch.stack([x[:-1], x[1:]], 1)  # (T-1, 2, 3, H, W)
        feats.append(torch.nn.functional.normalize(lam.encode(pairs)[0][:, -1], dim=-1).numpy())
        motion.append(observed_motion(e["frames"]))
    return np.concatenate(feats), np.concatenate(motion)


def readout(ftr: np.ndarray, mtr: np.ndarray, fho: np.ndarray, mho: np.ndarray) -> str:
    """Nearest-class-mean readout of the motion: class means from the training rows, share right per held-out class."""
    present = [j for j in range(len(MOTIONS)) if (mtr == j).any()]
    means = np.stack([ftr[mtr == j].mean(0) for j in present])  # (C, d)
    guess = np.asarray(present)[((fho[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    return ", ".join(f"{MOTIONS[j]} {np.mean(guess[mho == j] == j):.0%}" for j in present if (mho == j).any())


@torch.no_grad()
def mean_volumes(lam, episodes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The softmax cost volume of every transition averaged over its patches (M, 9), and the observed motion."""
    feats, motion = [], []
    for e in episodes:
        x = to_tensor(e["frames"])
        pairs = lam.resize(torch.stack([x[:-1], x[1:]], 1))  # (T-1, 2, 3, s, s)
        feats.append(lam.correlation(pairs)[:, 1].mean(1).numpy())
        motion.append(observed_motion(e["frames"]))
    return np.concatenate(feats), np.concatenate(motion)


def readout_at_init(cfg: GenieConfig, data: dict) -> None:
    """Is the motion in the untrained encoder's output? Readouts from a_e at initialisation and from the volume."""
    torch.manual_seed(cfg.seed + 1)  # the seed train_lam builds its model with
    lam = LatentActionModel(lam_config(cfg)).eval()
    print("readout from a_e at initialisation: " + readout(*encoder_outputs(lam, data["train"]),
                                                           *encoder_outputs(lam, data["heldout"])))
    print("readout from the patch-averaged cost volume: " + readout(*mean_volumes(lam, data["train"]),
                                                                     *mean_volumes(lam, data["heldout"])))


def oracle_decoder(cfg: GenieConfig, data: dict) -> None:
    """Train the LAM decoder alone for ``lam_steps``, handing it the *true* observed motion of each transition as its
    code (5 learned unit vectors instead of the encoder's quantized output), on batches drawn as ``train_lam`` draws
    them; print the held-out decoder error / copying error per motion. Can the decoder draw every scroll?"""
    torch.manual_seed(cfg.seed + 1)
    g = np.random.default_rng(cfg.seed + 1)
    lam = LatentActionModel(lam_config(cfg))
    table = torch.nn.Parameter(torch.randn(len(MOTIONS), lam.action_up.in_features))  # one code per true motion
    params = [*lam.decoder.parameters(), *lam.action_up.parameters(), table, lam.mask_token]
    opt = torch.optim.AdamW(params, lr=cfg.lam_lr or cfg.lr, betas=(0.9, 0.9))
    moving, p = moving_windows(data["train"], 2, cfg.lam_move_balance)
    n_move = round(cfg.lam_move_fraction * cfg.lam_batch)

    def codes(m: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(table[m], dim=-1)[:, None]  # (B, 1, d)

    t0 = time.perf_counter()
    for _ in range(cfg.lam_steps):
        x = sample_windows(data["train"], 2, cfg.lam_batch - n_move, g)[0]  # (B - n_move, 2, H, W, 3)
        if n_move:
            pick = g.choice(len(moving), size=n_move, p=p)
            x = np.concatenate([x, np.stack([data["train"][moving[j][0]]["frames"][moving[j][1]:moving[j][1] + 2]
                                             for j in pick])])
        m = torch.from_numpy(np.array([observed_motion(w)[-1] for w in x]))  # (B,) true motion of each window
        xt = to_tensor(x)
        loss = torch.nn.functional.mse_loss(lam.decode(xt, codes(m)), lam.resize(xt)[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"decoder trained {cfg.lam_steps} steps with the true motion as its code in {time.perf_counter() - t0:.0f} s")
    err = np.zeros((len(MOTIONS), 2))
    with torch.no_grad():
        for e in data["heldout"]:
            x = to_tensor(e["frames"])
            pairs, m = torch.stack([x[:-1], x[1:]], 1), torch.from_numpy(observed_motion(e["frames"]))
            small = lam.resize(pairs)
            pred = lam.decode(pairs, codes(m))  # (T-1, 1, 3, s, s)
            for j in range(len(MOTIONS)):
                sel = m == j
                err[j] += [float(((pred[sel] - small[sel, 1:]) ** 2).sum()),
                           float(((small[sel, :1] - small[sel, 1:]) ** 2).sum())]
    print("held-out decoder error / copying error: " + ", ".join(
        f"{k} {a / max(b, 1e-12):.3f}" for k, (a, b) in zip(MOTIONS, err)))


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {f: f in argv for f in ("--counts", "--readout-at-init", "--oracle-decoder")}
    only_counts = flags["--counts"]
    argv = [a for a in argv if a not in flags]
    cfg = fill(parse_config(GenieConfig, argv, prog="genie_lam_runs", run_dir=tempfile.mkdtemp()))
    data = load_episodes(cfg)
    counts(data)
    if only_counts:
        return
    if flags["--readout-at-init"]:
        return readout_at_init(cfg, data)
    if flags["--oracle-decoder"]:
        return oracle_decoder(cfg, data)
    t0 = time.perf_counter()
    lam, hist = train_lam(cfg, data)
    print(f"LAM trained {cfg.lam_steps} steps in {time.perf_counter() - t0:.0f} s; last batch: decoder error / copy "
          f"{hist[-1]['mse_over_copy']:.3f}, live codes {hist[-1]['codes_live']}")
    ev = eval_lam(lam, data["heldout"])
    mc = ev["motion_confusion"]  # (|A|, 5)
    print(f"held-out: {ev['codes_live']} live codes, perplexity {ev['codes_perplexity']:.2f}, decoder gain over a "
          f"random code {ev['decoder_psnr_gain']:+.2f} dB")
    print("code x observed motion (" + " / ".join(MOTIONS) + "):")
    for k, row in enumerate(mc):
        print(f"  code {k}: " + " / ".join(str(int(v)) for v in row))
    for j, name in enumerate(MOTIONS):
        k = int(mc[:, j].argmax())
        print(f"  {name}: commonest code {k} ({mc[k, j]} of {mc[:, j].sum()}); code {k} is {name} for {mc[k, j]} "
              f"of its {mc[k].sum()}")
    lt = lam_effect_table(lam, data["heldout"], frames=16, seed=0)
    print("LAM decoder draws (16 held-out frames; " + " / ".join(MOTIONS) + "):")
    for k, row in enumerate(lt["motion"]):
        print(f"  code {k}: " + " / ".join(str(int(v)) for v in row))
    print(f"distinct LAM-decoder effects at 0.02: {distinct_effects(lt['pairwise'], 0.02)}")
    ftr, mtr = encoder_outputs(lam, data["train"])
    fho, mho = encoder_outputs(lam, data["heldout"])
    present = [j for j in range(len(MOTIONS)) if (mtr == j).any()]
    print("readout of the motion from the continuous encoder output (nearest class mean), right per direction: "
          + readout(ftr, mtr, fho, mho))
    print("spread of a_e per direction (mean per-dim variance): "
          + ", ".join(f"{MOTIONS[j]} {ftr[mtr == j].var(0).mean():.4f}" for j in present))


if __name__ == "__main__":
    main()
