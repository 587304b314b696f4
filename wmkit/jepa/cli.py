"""``wmkit jepa``: train-vjepa | train-ac | plan | pretrain (each has --help; sizes from the active profile)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Literal

from wmkit.config import parse_config

COMMANDS = {
    "train-vjepa": "pretrain V-JEPA (masked tube prediction) on Two-Rooms recordings",
    "train-ac": "train the action-conditioned JEPA world model (frozen V-JEPA encoder, EMA, SIGReg or nothing)",
    "plan": "CEM planning on Two-Rooms with a trained AC model, against a random policy",
    "pretrain": "distributed V-JEPA pretraining (same as `torchrun -m wmkit.jepa.pretrain ...`)",
}


@dataclass
class TrainVJEPAArgs:
    """Pretrain V-JEPA on Two-Rooms random-walk clips (sizes from the active profile's jepa block)."""

    steps: int | None = None
    """optimiser steps (None: the profile's vjepa_steps)"""
    precision: str = "fp32"
    """fp32 | bf16 | fp8"""
    seed: int = 0
    """seed of data, weights and masks"""
    run_dir: str = "runs/jepa/vjepa"
    """TensorBoard, metrics.jsonl and the checkpoint go here"""


@dataclass
class TrainACArgs:
    """Train the action-conditioned world model on Two-Rooms (sizes from the active profile)."""

    regulariser: Literal["frozen", "ema", "sigreg", "none"] = "ema"
    """frozen (needs --encoder), ema, sigreg (LeWM's loss on patch tokens: MSE + SIGReg) or none (collapses)"""
    recipe: Literal["ac", "lewm"] = "ac"
    """ac: the patch-token AC model of --regulariser; lewm: LeWM's recipe as published (one pooled embedding per
    frame, pred_proj, history 3, MSE + 0.09 SIGReg, batch --batch; wmkit.jepa.train.lewm_config), ignores
    --regulariser and --residual"""
    pool: Literal["mean", "cls"] | None = None
    """with --recipe lewm: how the frame embedding is read (cls = LeWM's CLS token; None: the profile's lewm_pool)"""
    batch: int | None = None
    """windows per step (None: the profile's ac_batch, or lewm_batch with --recipe lewm; LeWM: 128)"""
    size: int | None = None
    """frame size in pixels of the recordings and the model, with --recipe lewm (None: the profile's lewm_model size,
    else tr_size; 64 draws the agent as a 4-pixel disc, 32 as a 2-pixel one)"""
    episodes: int | None = None
    """weak-expert episodes recorded for training, with --recipe lewm (None: the profile's tr_episodes)"""
    patch: int | None = None
    """encoder patch size in pixels, with --recipe lewm (None: the profile's; e.g. 16 at --size 64 keeps 16 tokens
    per frame)"""
    lr: float | None = None
    """peak learning rate, with --recipe lewm (None: 1e-3; LeWM 5e-5 over 100 GPU epochs)"""
    lr_schedule: Literal["constant", "cosine"] | None = None
    """after the warm-up, with --recipe lewm: cosine to 0 (LeWM's) or constant (None: the profile's lewm_schedule)"""
    depth: int | None = None
    """encoder blocks, with --recipe lewm (None: the profile's lewm_model / ac_model; cpu: 1 at 64 x 64)"""
    bn_recalibrate: int = 8
    """batches over which BatchNorm statistics are re-estimated after training (0: PyTorch's running averages, as
    LeWM; only models with BatchNorm: --recipe lewm)"""
    encoder: str | None = None
    """V-JEPA checkpoint (runs/jepa/vjepa/ckpt/latest) whose target encoder to use: frozen under the predictor
    (regulariser=frozen, required) or fine-tuned with it (other recipes, at --encoder-lr-scale)"""
    steps: int | None = None
    """optimiser steps (None: the profile's ac_steps)"""
    residual: bool = False
    """predict the change of the features (z_t + P(...)) instead of the next features (False: the official form)"""
    encoder_lr_scale: float = 1.0
    """encoder learning rate / predictor learning rate (with --encoder and ema | sigreg | none: fine-tune the
    pretrained encoder at a low rate, e.g. 0.1)"""
    precision: str = "fp32"
    """fp32 | bf16 | fp8"""
    seed: int = 0
    """seed of data and weights"""
    run_dir: str = "runs/jepa/ac"
    """TensorBoard, metrics.jsonl and the checkpoint go here"""


@dataclass
class PlanArgs:
    """MPC with CEM toward the goal image's features; prints planner and random-policy success as JSON."""

    checkpoint: str = "runs/jepa/ac/ckpt/latest"
    """an AC checkpoint written by `wmkit jepa train-ac`"""
    episodes: int | None = None
    """start/goal pairs (None: the profile's plan_episodes)"""
    budget: int | None = None
    """steps per episode (None: the profile's plan_budget; the published Two-Rooms budget is 50)"""
    samples: int | None = None
    """CEM samples (V-JEPA 2-AC: 400 in the brief; None: profile)"""
    seed: int = 1000
    """seed of the evaluation episodes"""
    goal: str = "offset"
    """offset (LeWM / swm: where the weak expert stands goal_offset steps on) | other_room (the env's own target)"""
    energy: str | None = None
    """last (V-JEPA 2-AC, LeWM) | all (DINO-WM's mean over the predicted frames); None: the profile's plan_energy,
    or lewm_energy for a LeWM checkpoint"""
    repeat: bool | None = None
    """CEM searches one action per block, repeated (None: the profile's plan_repeat; swm: False)"""
    horizon: int | None = None
    """CEM horizon in predictor blocks (None: the profile's plan_horizon; LeWM / swm: 5)"""
    receding: int | None = None
    """blocks executed before replanning (None: the profile's plan_receding, or lewm_receding for a LeWM checkpoint;
    LeWM / swm: 5 = the whole plan)"""
    energy_base: float = 1.0
    """with energy=all: frame i weighs base^i (1: equal weights; DINO-WM's default base is 2)"""
    elites: int | None = None
    """CEM elites (None: the profile's cem_elites; V-JEPA 2-AC: 10)"""
    iterations: int | None = None
    """CEM iterations (None: the profile's cem_iters; V-JEPA 2-AC: 10)"""


def _data(P, seed, size=None, episodes=None):
    from wmkit.jepa.tworooms import collect

    return collect(episodes or P.tr_episodes, P.tr_steps, size or P.tr_size, seed=seed, policy=P.tr_policy)


def train_vjepa_cmd(argv):
    from wmkit.jepa.train import VJEPATrainConfig, train_vjepa
    from wmkit.jepa.vjepa import VJEPAConfig
    from wmkit.profiles import profile

    a = parse_config(TrainVJEPAArgs, argv, prog="wmkit jepa train-vjepa")
    P = profile().jepa
    cfg = VJEPATrainConfig(model=VJEPAConfig(**P.vjepa_model), steps=a.steps or P.vjepa_steps, batch=P.vjepa_batch,
                           ema=tuple(P.vjepa_ema), precision=a.precision, seed=a.seed)
    _, hist = train_vjepa(cfg, _data(P, a.seed)["frames"], run_dir=a.run_dir)
    print(json.dumps(hist[-1]))


def pretrained_encoder(path):
    """The EMA target encoder of a V-JEPA checkpoint written by ``wmkit jepa train-vjepa`` (metadata
    ``config.model``) or by ``torchrun -m wmkit.jepa.pretrain`` (metadata ``model``): the fine-tuning recipe's
    starting point (V-JEPA 2-AC: pretrained on video, frozen under a new action-conditioned predictor)."""
    from wmkit.jepa.finetune import load_encoder

    return load_encoder(path)


def train_ac_cmd(argv):
    from wmkit.jepa.ac import ACConfig
    from wmkit.jepa.train import ACTrainConfig, train_ac
    from wmkit.profiles import profile

    a = parse_config(TrainACArgs, argv, prog="wmkit jepa train-ac")
    P = profile().jepa
    encoder, sizes = None, dict(P.ac_model)
    if a.regulariser == "frozen" and a.encoder is None:
        raise SystemExit("wmkit jepa train-ac: --regulariser frozen needs --encoder <V-JEPA checkpoint>")
    if a.encoder is not None:  # frozen (V-JEPA 2-AC) or fine-tuned (other recipes, at encoder_lr_scale)
        encoder = pretrained_encoder(a.encoder)
        c = encoder.cfg  # the predictor works on the pretrained encoder's tokens: take its sizes
        sizes.update(size=c.size, patch=c.patch, dim=c.dim, depth=c.depth, heads=c.heads)
    if a.recipe == "lewm":
        from wmkit.jepa.train import lewm_config

        sizes.update(P.lewm_model)  # the profile's LeWM sizes (e.g. a larger frame than the other recipes')
        if a.size:
            sizes["size"] = a.size
        if a.patch:
            sizes["patch"] = a.patch
        if a.depth:
            sizes["depth"] = a.depth
        cfg = lewm_config(sizes, P.action_block, a.steps or P.lewm_steps, batch=a.batch or P.lewm_batch,
                          pool=a.pool or P.lewm_pool, sigreg_proj=P.lewm_proj, seed=a.seed, lr=a.lr or 1e-3,
                          lr_schedule=a.lr_schedule or P.lewm_schedule)
        cfg.bn_recalibrate = a.bn_recalibrate
        d = _data(P, a.seed, sizes["size"], a.episodes)
        _, hist = train_ac(cfg, d["frames"], d["actions"], encoder=encoder, run_dir=a.run_dir)
        print(json.dumps(hist[-1]))
        return
    mcfg = ACConfig(**sizes, regulariser=a.regulariser, loss="mse" if a.regulariser == "sigreg" else "l1",
                    normalize=a.regulariser != "sigreg", sigreg_proj=P.sigreg_proj, action_block=P.action_block,
                    residual=a.residual)
    cfg = ACTrainConfig(model=mcfg, steps=a.steps or P.ac_steps, batch=a.batch or P.ac_batch, length=P.ac_length,
                        precision=a.precision, seed=a.seed, encoder_lr_scale=a.encoder_lr_scale)
    d = _data(P, a.seed)
    _, hist = train_ac(cfg, d["frames"], d["actions"], encoder=encoder, run_dir=a.run_dir)
    print(json.dumps(hist[-1]))


def plan_cmd(argv):
    from wmkit.checkpoint import load_meta, load_state
    from wmkit.jepa.ac import ACConfig, ACWorldModel
    from wmkit.jepa.plan import evaluate_planning
    from wmkit.profiles import profile

    a = parse_config(PlanArgs, argv, prog="wmkit jepa plan")
    P = profile().jepa
    meta = load_meta(a.checkpoint)
    model = ACWorldModel(ACConfig(**meta["config"]["model"]))
    model.load_state_dict(load_state(a.checkpoint)["model"])
    lewm = model.cfg.pooled and model.cfg.pred_projector  # a LeWM checkpoint plans with LeWM's protocol by default
    receding, energy = (P.lewm_receding, P.lewm_energy) if lewm else (P.plan_receding, P.plan_energy)
    r = evaluate_planning(model, a.episodes or P.plan_episodes, a.budget or P.plan_budget,
                          a.horizon or P.plan_horizon, a.samples or P.cem_samples, a.elites or P.cem_elites,
                          a.iterations or P.cem_iters, model.cfg.size, seed=a.seed, goal=a.goal,
                          goal_offset=P.goal_offset, receding=a.receding or receding, energy=a.energy or energy,
                          energy_base=a.energy_base, repeat=P.plan_repeat if a.repeat is None else a.repeat,
                          progress=False)
    print(json.dumps({k: v for k, v in r.items() if k != "episodes"}))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: wmkit jepa {" + ",".join(COMMANDS) + "} [--help]\n")
        for k, v in COMMANDS.items():
            print(f"  {k:<12} {v}")
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd == "pretrain":
        from wmkit.jepa.pretrain import main as pretrain

        return pretrain(rest)
    {"train-vjepa": train_vjepa_cmd, "train-ac": train_ac_cmd, "plan": plan_cmd}[cmd](rest)
