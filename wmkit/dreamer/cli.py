r"""``wmkit dreamer train | evaluate`` -- the command line of stage 2 (DreamerV3, Hafner et al. 2023).

Examples::

    wmkit dreamer train --env reach-vector --steps 5000 --batch-size 16 --batch-length 16 \
        --train-ratio 256 --prefill 500 --run-dir runs/dreamer/reach   # learns on a CPU (see the book)
    wmkit dreamer train --env crafter --size size50m --steps 1000000 --train-ratio 512
    wmkit dreamer train --env atari100k:pong --steps 100000                    # 400k frames
    wmkit dreamer train --run-dir runs/dreamer/reach --resume                   # continue a run
    wmkit dreamer evaluate --run-dir runs/dreamer/reach --episodes 10

Every option of ``train`` is a field of :class:`wmkit.dreamer.train.TrainConfig` (``--help`` shows the
docstrings); fields left unset come from the active profile (``WMKIT_PROFILE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

from wmkit.config import parse_config


@dataclass
class EvaluateConfig:
    """Evaluate the latest checkpoint of a training run."""

    run_dir: str = "runs/dreamer"
    """Run folder written by `wmkit dreamer train` (holds config.json and ckpt/latest)."""
    episodes: int = 10
    """Evaluation episodes."""
    random_baseline: bool = True
    """Also report a uniformly random policy's return on the same env."""
    video: bool = True
    """Write a decoded imagination video to run_dir/videos."""
    device: str = "auto"
    """cpu, cuda, mps or auto."""


def train_main(argv: list[str]) -> dict:
    from wmkit.dreamer.train import TrainConfig, Trainer, load_config

    cfg = parse_config(TrainConfig, argv, prog="wmkit dreamer train")
    if cfg.resume:  # take the run's own config; flags given now (e.g. a larger --steps) override it
        try:
            saved = load_config(cfg.run_dir)
        except FileNotFoundError:
            saved = None
        if saved is not None:
            given = {a.split("=")[0][2:].replace("-", "_") for a in argv if a.startswith("--")}
            cfg = dataclasses.replace(saved, **{k: getattr(cfg, k) for k in given if k != "resume"},
                                      resume=True)
    trainer = Trainer(cfg)
    print(f"DreamerV3 on {trainer.cfg.env}: {trainer.dcfg.dims()}, device {trainer.device}, "
          f"{trainer.cfg.steps} env steps, train_ratio {trainer.cfg.train_ratio}"
          + (f", resumed at step {trainer.step}" if trainer.step else ""))
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    last = summary["evals"][-1]["eval/return"] if summary["evals"] else float("nan")
    print(json.dumps({"env": trainer.cfg.env, "steps": summary["step"], "updates": summary["updates"],
                      "env_steps_per_s": round(summary["env_steps_per_s"], 2), "last_eval_return": last,
                      "run_dir": str(trainer.run_dir)}))
    return summary


def evaluate_main(argv: list[str]) -> dict:
    import numpy as np

    from wmkit.dreamer.envs import random_returns
    from wmkit.dreamer.train import Trainer, load_config

    ecfg = parse_config(EvaluateConfig, argv, prog="wmkit dreamer evaluate")
    if ecfg.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {ecfg.episodes}")
    cfg = dataclasses.replace(load_config(ecfg.run_dir), resume=True, progress=False, device=ecfg.device)
    trainer = Trainer(cfg)
    if trainer.step == 0:
        raise SystemExit(f"no checkpoint in {ecfg.run_dir}/ckpt; train first")
    try:
        ev = trainer.evaluate(ecfg.episodes, video=ecfg.video, log=False)
    finally:
        trainer.close()
    out = {"env": cfg.env, "step": trainer.step, "episodes": ecfg.episodes,
           "return_mean": ev["eval/return"], "return_std": ev["eval/return_std"]}
    if "eval/crafter_score" in ev:
        out["crafter_score"] = ev["eval/crafter_score"]
    if ecfg.random_baseline:
        out["random_return_mean"] = float(np.mean(random_returns(cfg.env, ecfg.episodes, cfg.seed,
                                                                 cfg.reward_scale)))
    print(json.dumps(out))
    return out


COMMANDS = {"train": (train_main, "train an agent (see --help)"),
            "evaluate": (evaluate_main, "evaluate a run's latest checkpoint")}


def main(argv: list[str] | None = None):
    argv = list(argv or [])
    parser = argparse.ArgumentParser(
        prog="wmkit dreamer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in
                                                                      COMMANDS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        if not argv:
            raise SystemExit(2)
        return None
    args = parser.parse_args(argv[:1])
    return COMMANDS[args.command][0](argv[1:])
