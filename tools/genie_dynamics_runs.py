"""Retrain only the dynamics model of a Genie run under a variant, and ask whether it now draws the scrolls.

Issue #11 (book/stage3/genie.md, "Why the dynamics model does not draw every scroll yet"). The tokenizer and the LAM
of RUN_DIR are copied unchanged into OUT; the dynamics model is trained again from scratch with the run's
configuration plus the changes asked for, then measured two ways:

- per observed motion (none / left / right / up / down), the greedy prediction of frame t+1 with all its tokens
  masked (tools/genie_dynamics_check.py), on the training episodes and on the held-out ones: a model that fits the
  scrolls of the training episodes but not the held-out ones has memorised them;
- the effect table of the notebook (``wmkit.genie.play.effect_table``, Genie's decoding: 25 MaskGIT steps,
  temperature 2): which scroll each action draws, and how many distinct effects there are.

Variants: ``--prev-window K`` and ``--token-context K`` (the dynamics model's two neighbourhood switches),
``--clip-len``, ``--batch``, ``--move-fraction``, ``--lr``, ``--augment`` (the dynamics model's training episodes in
all 8 symmetries of the tile grid), ``--steps N``,
``--mask-min R`` (training masking rate U[R, 1); Genie 0.5), ``--episodes E`` (more
recorded Crafter episodes: more scroll transitions per direction) and ``--true-motion``: the action of each
transition is its observed scroll (0-4) instead of the LAM's code -- the dynamics side of the oracle test that
tools/genie_lam_runs.py --oracle-decoder runs for the LAM decoder: can the dynamics model draw the scrolls at all
when its actions are clean?

    OMP_NUM_THREADS=1 WMKIT_PROFILE=cpu python tools/genie_dynamics_runs.py RUN_DIR OUT [--steps 600] \
        [--mask-min 0.5] [--episodes 10] [--true-motion]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from genie_dynamics_check import motion_table, print_table

from wmkit.genie import train as G
from wmkit.genie.play import distinct_effects, effect_table


def sym(frames: np.ndarray, k: int) -> np.ndarray:
    """Symmetry k (0-7) of the square grid applied to frames (T, H, W, 3): k % 4 quarter turns, then a mirror if
    k >= 4. Crafter's view is a grid of square tiles, so a transformed clip is a clip of a transformed world (the
    sprites turn with it); a scroll becomes a scroll in the transformed direction."""
    out = np.rot90(frames, k % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if k >= 4 else out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a folder written by `wmkit genie train` (tokenizer and LAM are reused)")
    ap.add_argument("out", help="new run folder for the retrained dynamics model")
    ap.add_argument("--steps", type=int, default=None, help="dynamics training steps (default: the run's)")
    ap.add_argument("--lr", type=float, default=None, help="peak dynamics learning rate (default: the run's dyn_lr)")
    ap.add_argument("--mask-min", type=float, default=None, help="masking rate U[r, 1) (default: the run's)")
    ap.add_argument("--episodes", type=int, default=None, help="recorded Crafter episodes (default: the run's)")
    ap.add_argument("--prev-window", type=int, default=None,
                    help="dynamics tokens read the k x k window of the previous frame (DynamicsConfig.prev_window)")
    ap.add_argument("--token-context", type=int, default=None,
                    help="dynamics input tokens hold their k x k neighbourhood (DynamicsConfig.token_context)")
    ap.add_argument("--clip-len", type=int, default=None, help="frames per dynamics training clip (dyn_clip_len)")
    ap.add_argument("--batch", type=int, default=None, help="dynamics clips per batch (dyn_batch)")
    ap.add_argument("--move-fraction", type=float, default=None,
                    help="share of each batch from windows whose last transition scrolls (dyn_move_fraction)")
    ap.add_argument("--true-motion", action="store_true", help="actions = the observed scroll, not the LAM code")
    ap.add_argument("--augment", action="store_true",
                    help="add the 7 other symmetries of the square tile grid (rotations, mirrors) of every training "
                         "episode; their latent actions are inferred by the LAM on the transformed frames")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    tok, lam, _, cfg = G.load_models(a.run_dir, "cpu")
    asked = (("dyn_steps", a.steps), ("dyn_lr", a.lr), ("dyn_mask_min", a.mask_min), ("episodes", a.episodes),
             ("dyn_prev_window", a.prev_window), ("dyn_token_context", a.token_context),
             ("dyn_clip_len", a.clip_len), ("dyn_batch", a.batch), ("dyn_move_fraction", a.move_fraction))
    changes = {k: v for k, v in asked if v is not None}
    cfg = dataclasses.replace(cfg, run_dir=a.out, **changes)
    for part in ("tokenizer", "lam"):
        if not (Path(a.out) / part).exists():
            shutil.copytree(Path(a.run_dir) / part, Path(a.out) / part)
    data = G.load_episodes(cfg)
    if a.augment:
        data["train"] = [dict(ep, frames=sym(ep["frames"], k), episode=f"{ep['episode']}-sym{k}")
                         for ep in data["train"] for k in range(8)]
    tok_data = {k: G.tokenize_episodes(tok, lam, v) for k, v in data.items()}
    if a.true_motion:
        if len(G.MOTIONS) > cfg.lam_actions:
            raise SystemExit(f"--true-motion needs lam_actions >= {len(G.MOTIONS)}, the run has {cfg.lam_actions}")
        for k in ("train", "heldout"):
            for e, ep in zip(tok_data[k], data[k]):
                e["latent"] = np.concatenate([G.observed_motion(ep["frames"]), [0]]).astype(e["latent"].dtype)
    tok_data["vocab"] = tok.vocab
    t0 = time.perf_counter()
    dyn, hist = G.train_dynamics(cfg, tok_data)
    print(f"{a.out}: {json.dumps(changes)}{' true-motion actions' if a.true_motion else ''}; "
          f"{cfg.dyn_steps} steps in {time.perf_counter() - t0:.0f} s, final loss {hist[-1]['loss']:.3f}")
    with torch.no_grad():
        for split in ("train", "heldout"):
            print(f"-- {split} episodes")
            print_table(motion_table(tok, dyn, tok_data[split], data[split]))
        eff = effect_table(tok, dyn, data["heldout"], frames=16, seed=cfg.seed)
    threshold = max(0.02, float(eff["resample"].max()))
    print(f"effect table (Genie decoding), rows = action, columns = {', '.join(G.MOTIONS)}:")
    for k, row in enumerate(eff["motion"].tolist()):
        print(f"  action {k}: {row}")
    print(f"distinct effects: {distinct_effects(eff['pairwise'], threshold)} (threshold {threshold:.3f})")


if __name__ == "__main__":
    main()
