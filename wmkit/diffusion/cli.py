"""``wmkit diffusion train | play``: train a diffusion world model, then play it without a window.

    wmkit diffusion train --recipe edm                      # DIAMOND   -> runs/diffusion/edm
    wmkit diffusion train --recipe vpred --ctx-noise-max 0.7  # GameNGen  -> runs/diffusion/vpred
    wmkit diffusion train --recipe shortcut                 # Dreamer 4 -> runs/diffusion/shortcut
    wmkit diffusion play --run-dir runs/diffusion/edm --record out.mp4
    wmkit diffusion agent                                   # DIAMOND's agent in imagination, scored in the game
    wmkit diffusion drive                                   # 6 keyframes (3 s at 2 Hz) on held-out drives

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


@dataclass
class DriveConfig:
    """Train on 2 Hz keyframes of the driving stand-in (ego motion as the action), roll out 3 s on held-out drives."""

    episodes: int = 6
    """CarRacing drives recorded (20% held out by episode)."""
    steps: int = 350
    """50 Hz frames per drive (every 25th is a keyframe)."""
    size: int = 32
    """Keyframe side in pixels."""
    train_steps: int = 300
    """Denoiser updates."""
    horizon: int = 6
    """Keyframes generated (6 = 3 s at 2 Hz)."""
    steps_per_frame: int = 3
    """Sampling steps per generated keyframe."""
    max_windows: int = 64
    """Held-out windows evaluated (evenly spread)."""
    recipe: Literal["edm", "vpred", "shortcut"] = "edm"
    """Denoiser recipe."""
    run_dir: str = "runs/diffusion/driving"
    """Output folder."""
    seed: int = 0
    """Seed of recording, training and sampling."""


def drive(cfg: DriveConfig) -> dict:
    from wmkit.data import driving_clips
    from wmkit.diffusion.driving import driving_experiment

    clips = driving_clips(episodes=cfg.episodes, steps=cfg.steps, seed=cfg.seed, size=cfg.size, keyframe_hz=2.0)
    dcfg = config_from_profile(recipe=cfg.recipe, env="driving", run_dir=cfg.run_dir, seed=cfg.seed,
                               data_seed=cfg.seed)
    dcfg.size, dcfg.train_steps = cfg.size, cfg.train_steps
    r = driving_experiment(clips, dcfg, cfg.horizon, cfg.steps_per_frame, cfg.seed, cfg.max_windows, progress=True)
    e = r["eval"]
    return {"heldout": r["heldout_episodes"], "train_windows": r["train"]["train_windows"],
            "train_seconds": round(r["train"]["seconds"], 1),
            **{k: e[k] for k in ("seconds_ahead", "psnr", "copy_last_psnr", "changed_psnr", "copy_last_changed_psnr",
                                 "changed_fraction", "gain_over_copy", "gain_over_copy_sem", "windows")}}


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
    elif cmd == "agent":
        from wmkit.diffusion.rl import AgentConfig, agent_config_from_profile, run

        base = agent_config_from_profile()
        cfg = parse_config(AgentConfig, rest, prog="wmkit diffusion agent",
                           **{f.name: getattr(base, f.name) for f in fields(AgentConfig)})
        r = run(cfg)
        print(json.dumps({"run_dir": str(r["run_dir"]), "seconds": r["seconds"],
                          "rew_end_accuracy": r["rew_end_accuracy"],
                          "agent": {k: r["agent"][k] for k in ("mean", "sem", "episodes")},
                          "random": {k: r["random"][k] for k in ("mean", "sem", "episodes")},
                          "imag_reward_first10": float(np.mean([h["imag_reward"] for h in r["ac_history"][:10]])),
                          "imag_reward_last10": float(np.mean([h["imag_reward"] for h in r["ac_history"][-10:]]))}))
    elif cmd == "drive":
        print(json.dumps(drive(parse_config(DriveConfig, rest, prog="wmkit diffusion drive"))))
    else:
        raise SystemExit(f"wmkit diffusion: unknown command {cmd!r}; expected train, play, agent or drive")
