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
"""
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import torch

from wmkit.config import parse_config
from wmkit.genie.play import distinct_effects, lam_effect_table
from wmkit.genie.train import MOTIONS, GenieConfig, eval_lam, fill, load_episodes, observed_motion, to_tensor, train_lam


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


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    argv = list(sys.argv[1:] if argv is None else argv)
    only_counts = "--counts" in argv
    argv = [a for a in argv if a != "--counts"]
    cfg = fill(parse_config(GenieConfig, argv, prog="genie_lam_runs", run_dir=tempfile.mkdtemp()))
    data = load_episodes(cfg)
    counts(data)
    if only_counts:
        return
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
    means = np.stack([ftr[mtr == j].mean(0) for j in present])  # (C, d)
    guess = np.asarray(present)[((fho[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    print("readout of the motion from the continuous encoder output (nearest class mean), right per direction: "
          + ", ".join(f"{MOTIONS[j]} {np.mean(guess[mho == j] == j):.0%}" for j in present if (mho == j).any()))
    print("spread of a_e per direction (mean per-dim variance): "
          + ", ".join(f"{MOTIONS[j]} {ftr[mtr == j].var(0).mean():.4f}" for j in present))


if __name__ == "__main__":
    main()
