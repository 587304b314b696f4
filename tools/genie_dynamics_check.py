"""Does a trained Genie dynamics model draw the scrolls? Token-level checks on held-out Crafter transitions.

Issue #11 (book/stage3/genie.md, "Why the dynamics model does not draw the scrolls yet"). For a run folder written by
``wmkit genie train`` (tokenizer, LAM, dynamics), per observed motion (none / left / right / up / down):

- the dynamics model's greedy prediction of frame t+1 with *all* its tokens masked (one forward pass, the LAM's
  inferred action), as token accuracy against the real frame t+1, against copying frame t, and how often the
  prediction simply equals frame t;
- how shift-equivariant the tokenizer is: the tokens of frame t shifted by one position in the observed direction
  against those of frame t+1 on the positions still in view (1.0 would make a scroll an exact shift of the grid).

    OMP_NUM_THREADS=1 WMKIT_PROFILE=cpu python tools/genie_dynamics_check.py RUN_DIR
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from wmkit.genie import train as G


def shifted(a: np.ndarray, b: np.ndarray, motion: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of token grids a = frame t and b = frame t+1 (h, w) that show the same tiles after ``motion``."""
    if motion == 1:  # the player moved left: the world scrolls right
        return a[:, :-1], b[:, 1:]
    if motion == 2:
        return a[:, 1:], b[:, :-1]
    if motion == 3:  # up: the world scrolls down
        return a[:-1], b[1:]
    if motion == 4:
        return a[1:], b[:-1]
    return a, b


@torch.no_grad()
def motion_table(tok, dyn, tok_eps: list[dict], episodes: list[dict]) -> list[dict]:
    """Per observed motion: transitions, greedy all-masked token accuracy, copying accuracy, how often the prediction
    equals frame t, and the tokenizer's shift equivariance (in view). ``tok_eps`` from ``tokenize_episodes``."""
    h, w = tok.grid
    acc = np.zeros((len(G.MOTIONS), 4))  # tokens, pred == real, copy == real, pred == copy
    view = np.zeros((len(G.MOTIONS), 2))  # in-view tokens, shifted frame t == frame t+1
    for e, ep in zip(tok_eps, episodes):
        z = torch.from_numpy(e["tokens"])  # (T, N)
        a = torch.from_numpy(e["latent"])[:-1]  # (T-1,): the last latent is a filler
        m = G.observed_motion(ep["frames"])  # (T-1,)
        pairs = torch.stack([z[:-1], z[1:]], 1)  # (T-1, 2, N)
        mask = torch.zeros_like(pairs, dtype=torch.bool)
        mask[:, 1] = True  # frame t+1 fully masked, as at the first MaskGIT step
        pred = dyn(pairs, a[:, None], mask)[:, 1].argmax(-1)  # (T-1, N)
        for j in range(len(G.MOTIONS)):
            s = torch.from_numpy(m == j)
            acc[j, 0] += int(s.sum()) * z.shape[1]
            acc[j, 1] += int((pred[s] == pairs[s, 1]).sum())
            acc[j, 2] += int((pairs[s, 0] == pairs[s, 1]).sum())
            acc[j, 3] += int((pred[s] == pairs[s, 0]).sum())
        grid = e["tokens"].reshape(len(e["tokens"]), h, w)
        for t, j in enumerate(m):
            x, y = shifted(grid[t], grid[t + 1], int(j))
            view[j] += [x.size, int((x == y).sum())]
    return [{"motion": name, "transitions": int(acc[j, 0]) // (h * w), "accuracy": acc[j, 1] / acc[j, 0],
             "copy": acc[j, 2] / acc[j, 0], "pred_is_t": acc[j, 3] / acc[j, 0],
             "shift_equivariance": view[j, 1] / max(view[j, 0], 1)}
            for j, name in enumerate(G.MOTIONS) if acc[j, 0]]


def print_table(rows: list[dict]) -> None:
    print("motion | transitions | masked next frame: accuracy | copying frame t | prediction = frame t | "
          "shifted frame t = frame t+1 (in view)")
    for r in rows:
        print(f"{r['motion']} | {r['transitions']} | {r['accuracy']:.3f} | {r['copy']:.3f} | {r['pred_is_t']:.3f} | "
              f"{r['shift_equivariance']:.3f}")


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        raise SystemExit("usage: genie_dynamics_check.py RUN_DIR (a folder written by `wmkit genie train`)")
    tok, lam, dyn, cfg = G.load_models(argv[0], "cpu")
    data = G.load_episodes(cfg)
    held = G.tokenize_episodes(tok, lam, data["heldout"])
    print(f"run {argv[0]}: tokenizer encoder {cfg.tok_encoder}, dynamics token_context {cfg.dyn_token_context}")
    print_table(motion_table(tok, dyn, held, data["heldout"]))


if __name__ == "__main__":
    main()
