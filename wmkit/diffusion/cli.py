"""``wmkit diffusion train | play``: train a diffusion world model, then play it without a window.

    wmkit diffusion train --recipe edm                      # DIAMOND   -> runs/diffusion/edm
    wmkit diffusion train --recipe vpred --ctx-noise-max 0.7  # GameNGen  -> runs/diffusion/vpred
    wmkit diffusion train --recipe shortcut                 # Dreamer 4 -> runs/diffusion/shortcut
    wmkit diffusion play --run-dir runs/diffusion/edm --record out.mp4

Sizes default to the active profile (WMKIT_PROFILE=smoke|cpu|gpu); every option is in ``--help``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from wmkit.config import from_dict, parse_config, to_dict
from wmkit.diffusion.train import DiffusionConfig, config_from_profile, load_clips, load_model, train


@dataclass
class PlayConfig:
    """Play a trained model from the start of a held-out episode and record the session (no window needed)."""

    run_dir: str = "runs/diffusion/edm"
    """Run folder of a trained model (wmkit diffusion train)."""
    record: str = "runs/diffusion/play.mp4"
    """Output video, .mp4 (PyAV) or .gif."""
    frames: int = 60
    """Frames to generate."""
    steps: int = 3
    """Sampling steps per frame (DIAMOND: 3 Euler steps; GameNGen: 4 DDIM steps)."""
    policy: Literal["replay", "random"] = "replay"
    """replay: the held-out episode's recorded actions; random: uniform random actions (discrete spaces)."""
    fps: float = 10.0
    """Frame rate of the written video."""
    seed: int = 0
    """Seed of the sampling noise and of the random policy."""


def play(cfg: PlayConfig) -> dict:
    from wmkit.data import ClipDataset
    from wmkit.diffusion.play import DreamGame, record_session, write_video

    model = load_model(cfg.run_dir)
    train_cfg = from_dict(DiffusionConfig, json.loads((Path(cfg.run_dir) / "config.json").read_text()))
    clips = load_clips(train_cfg)
    K = model.net.context
    held = ClipDataset(clips, context=K, future=0, size=train_cfg.size, split="heldout", seed=train_cfg.data_seed)
    clip = held.clips[0]
    first = held[0]
    ctx = first["frames"] * 2 - 1  # (K, 3, H, W)
    if cfg.policy == "replay":
        acts = clip.actions[K:K + cfg.frames]
        if len(acts) < cfg.frames:
            raise ValueError(f"frames: the held-out episode has only {len(acts)} recorded actions after its context")
    else:
        if model.net.num_actions is None:
            raise ValueError("policy 'random' needs a discrete action space; use --policy replay")
        acts = np.random.default_rng(cfg.seed).integers(0, model.net.num_actions, cfg.frames)
    game = DreamGame(model, ctx, first["actions"], steps=cfg.steps, seed=cfg.seed)
    video = record_session(game, list(acts))
    path = write_video(cfg.record, video, fps=cfg.fps)
    return {"record": str(path), "frames": int(video.shape[0]), "generated_fps": float(game.fps),
            "mean_step_s": float(np.mean(game.step_seconds))}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    cmd, rest = argv[0], argv[1:]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if cmd == "train":
        base = config_from_profile()
        cfg = parse_config(DiffusionConfig, rest, prog="wmkit diffusion train",
                           **{f.name: getattr(base, f.name) for f in fields(DiffusionConfig)})
        r = train(cfg)
        print(json.dumps({"run_dir": str(r["run_dir"]), "seconds": round(r["seconds"], 1),
                          "train_frames_per_s": round(r["frames_per_s"], 1),
                          "final_loss": r["history"][-1]["loss"], "config": to_dict(cfg)}))
    elif cmd == "play":
        print(json.dumps(play(parse_config(PlayConfig, rest, prog="wmkit diffusion play"))))
    else:
        raise SystemExit(f"wmkit diffusion: unknown command {cmd!r}; expected train or play")
