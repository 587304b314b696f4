"""From a pretrained V-JEPA encoder to a driving task: behaviour cloning and speed regression on CarRacing.

Bardes et al. 2024 (V-JEPA), section 4 and its appendix on evaluation ("frozen evaluation"): the pretrained *target*
encoder (official ``checkpoint_key: target_encoder``) is frozen and an attentive probe (one learnable query
cross-attending to all tokens, then a linear head) is trained on top; official ``facebookresearch/jepa``
``configs/evals/vitl16_k400_16x8x3.yaml``: AdamW, lr 1e-3 cosine-decayed to 0 with no warm-up
(``start_lr = lr = 0.001, final_lr = 0, warmup = 0``), weight decay 0.01, 20 epochs. V-JEPA 2 (Assran et al. 2025,
``facebookresearch/vjepa2`` ``configs/eval/vitl/ssv2.yaml``) keeps the encoder frozen too and trains several probes at
once over a grid (lr 5e-3 .. 1e-4 x weight decay 0.01 .. 0.8, 4 probe blocks). Here three modes are compared at the
same downstream steps, batches and head:

* ``scratch``  -- the same encoder architecture, randomly initialised, trained end to end with the head (lr x 1);
* ``frozen``   -- the pretrained target encoder frozen (no gradient, eval mode), only the probe trains;
* ``finetune`` -- the pretrained encoder trained end to end at ``encoder_lr_scale`` x the head's rate;
* ``random_frozen`` -- the control: the scratch encoder's random weights, frozen (what pretraining adds to them).

    minimise  E || g_psi( E_theta(x_{t-T+1..t}) ) - y_t ||^2,   y_t = standardised (steer, gas, speed)
    lr_psi(s) = lr * (1 + cos(pi s / S)) / 2,   lr_theta(s) = encoder_lr_scale * lr_psi(s)   (finetune)

The task (written here: no published driving benchmark fits a 32 x 32 CarRacing stand-in): clips of ``frames``
frames at 10 Hz (every 5th frame of wmkit.data's 50 Hz ``driving_clips``, OpenDV-YouTube's rate) -> the mean
steer and gas sent over the next 5 env steps (behaviour cloning of the recording policy) and the mean speed over
them (a quantity the env exposes); R^2 on held-out *episodes* (other tracks). Closed loop (:func:`drive`): the
cloned policy drives CarRacing from the end of the zoom-in, one prediction per 5 steps (action repeat 5), scored by
track tiles visited and return, paired on the same track seeds with a uniformly random policy and the data policy.

Pretraining goes through the scale path: :func:`export_opendv` writes the training episodes as OpenDV-YouTube
frame folders (9-digit JPEGs at 10 Hz), which ``torchrun -m wmkit.jepa.pretrain --data opendv:ROOT`` reads.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wmkit.config import parse_config, to_dict
from wmkit.jepa.probes import AttentiveProbe, r2_score
from wmkit.jepa.vjepa import VideoViT, VJEPAConfig, collapse_stats
from wmkit.nn import precise_batchnorm
from wmkit.precision import autocast
from wmkit.utils import pick_device

__all__ = ["FinetuneConfig", "PRESETS", "TARGETS", "MODES", "driving_data", "export_opendv", "load_encoder",
           "DrivingHead", "make_optimizer", "finetune", "drive", "main"]

MODES = ("scratch", "frozen", "finetune", "random_frozen")
TARGETS = ("steer", "gas", "speed")
# sizes per preset; "cpu" is what the book's table was measured with, "gpu" is sized for a 32 GB card (not run here)
PRESETS = {
    "smoke": dict(frame_size=32, episodes=4, episode_steps=60, heldout=1, steps=4, batch=4, drive_episodes=1,
                  drive_steps=20),
    "cpu": dict(frame_size=32, episodes=40, episode_steps=350, heldout=8, steps=300, batch=32, drive_episodes=8,
                drive_steps=350),
    # ViT-L/16 (the profile's pretrain_model) on 16 frames of 224 x 224: 1568 tokens per clip, so a small batch
    "gpu": dict(frame_size=224, episodes=200, episode_steps=1000, heldout=20, steps=5000, batch=16, drive_episodes=50,
                drive_steps=1000),
}


@dataclass
class FinetuneConfig:
    """Fine-tune / probe a (pretrained) V-JEPA encoder on the CarRacing driving task; R^2 on held-out episodes."""

    mode: str = "frozen"
    """scratch (random encoder, end to end) | frozen (pretrained, probe only) | finetune (pretrained, end to end) |
    random_frozen (the scratch encoder's random weights, frozen: what the probe reads without any pretraining)"""
    encoder: str | None = None
    """pretrain checkpoint (torchrun -m wmkit.jepa.pretrain: <run_dir>/ckpt/latest); its target encoder is loaded.
    Required for frozen / finetune; with scratch only its architecture is used"""
    preset: str = "cpu"
    """sizes of the fields left at None (smoke | cpu | gpu), and the encoder sizes of a scratch run without
    --encoder (the profile's jepa.pretrain_model)"""
    frame_size: int | None = None
    """frame height = width of the recorded drives (the encoder's size: cpu 32; gpu 224, upsampled from CarRacing's
    96 x 96 render as the profile's ViT-L/16 expects)"""
    episodes: int | None = None
    """driving episodes recorded (wmkit.data.driving_clips, track seeds 0..episodes-1)"""
    episode_steps: int | None = None
    """50 Hz env steps per recorded episode"""
    heldout: int | None = None
    """the last `heldout` episodes are the held-out (evaluation) tracks; the others train (and pretrain)"""
    labeled: int | None = None
    """labelled episodes the downstream task trains on (the first ones; None: all training episodes)"""
    every: int = 5
    """keep every 5th frame: 50 Hz -> 10 Hz (OpenDV-YouTube's rate); targets average these 5 env steps"""
    steps: int | None = None
    """downstream optimiser steps (the same for every mode)"""
    batch: int | None = None
    """clips per step"""
    curve_every: int = 0
    """also score held-out R^2 every this many steps (0: only at the end)"""
    lr: float = 1e-3
    """head learning rate, cosine-decayed to 0 with no warm-up (V-JEPA frozen eval: 0.001 -> 0)"""
    weight_decay: float = 0.01
    """AdamW weight decay of head and encoder (V-JEPA frozen eval: 0.01)"""
    encoder_lr_scale: float = 0.1
    """finetune mode: encoder rate / head rate (scratch trains the encoder at the head's rate)"""
    token_norm: str = "batchnorm"
    """batchnorm: the probe reads the tokens through a BatchNorm without affine parameters over (position, channel),
    as MAE's linear probe does (He et al. 2022, appendix A.2); none: the raw tokens, as the official V-JEPA probe
    reads them. Here the raw probe reads nothing: the tokens vary 0.02-0.05 from clip to clip against a
    per-position constant part of 0.8 (measured), and every mode stays at R^2 ~ 0"""
    probe_heads: int = 4
    """attention heads of the attentive probe (official ViT-L probe: 16 at width 1024)"""
    seed: int = 0
    """seed of the head / scratch encoder and of the batch order (the same batches in every mode)"""
    drive_episodes: int | None = None
    """closed-loop CarRacing episodes (track seeds drive_seed + i; 0: skip)"""
    drive_steps: int | None = None
    """env steps per closed-loop episode after the zoom-in"""
    drive_seed: int = 5000
    """first track seed of the closed-loop episodes (not among the recorded ones)"""
    export_opendv: str | None = None
    """write the training episodes as OpenDV frame folders under this root, then exit (for the pretrain run)"""
    device: str = "auto"
    """auto | cpu | cuda | mps (wmkit.utils.pick_device)"""
    precision: str = "fp32"
    """fp32 | bf16 (wmkit.precision.autocast around the forward passes of training)"""
    run_dir: str = "runs/jepa/finetune/run"
    """metrics.json and the trained head + encoder (safetensors) go here"""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {self.preset!r}")
        for k, v in PRESETS[self.preset].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.token_norm not in ("batchnorm", "none"):
            raise ValueError(f"--token-norm: expected batchnorm or none, got {self.token_norm!r}")
        if self.mode not in MODES:
            raise ValueError(f"--mode: expected one of {MODES}, got {self.mode!r}")
        if self.mode in ("frozen", "finetune") and self.encoder is None and self.export_opendv is None:
            raise ValueError(f"--mode {self.mode} needs --encoder <pretrain checkpoint>")
        if not 1 <= self.heldout < self.episodes:
            raise ValueError(f"--heldout must be in [1, episodes={self.episodes}), got {self.heldout}")
        if self.labeled is not None and not 1 <= self.labeled <= self.episodes - self.heldout:
            raise ValueError(f"--labeled must be in [1, {self.episodes - self.heldout}], got {self.labeled}")


def driving_data(cfg: FinetuneConfig, progress: bool = False) -> dict:
    """Recorded drives at 10 Hz: frames (E, T, H, W, 3) uint8 and targets (E, T, 3) float32 (steer, gas, speed:
    the means over the `every` env steps after each kept frame), plus the train / held-out episode indices."""
    from wmkit.data import driving_clips

    clips = driving_clips(episodes=cfg.episodes, steps=cfg.episode_steps, size=cfg.frame_size, progress=progress)
    k = cfg.every
    T = min(len(c) for c in clips) // k
    if T < 2:
        raise ValueError(f"driving_data: episodes of {cfg.episode_steps} steps give {T} frames at every={k}")
    frames = np.stack([c.frames[: T * k: k] for c in clips])  # (E, T, H, W, 3)
    ctrl = np.stack([c.extras["control"][: T * k] for c in clips]).reshape(len(clips), T, k, 3).mean(2)
    speed = np.stack([c.actions[: T * k, 0] for c in clips]).reshape(len(clips), T, k).mean(2)
    y = np.concatenate([ctrl[..., :2], speed[..., None]], -1).astype(np.float32)  # (E, T, 3): steer, gas, speed
    E = len(clips)
    return {"frames": frames, "targets": y, "train": list(range(E - cfg.heldout)),
            "heldout": list(range(E - cfg.heldout, E)), "episodes": [c.episode for c in clips]}


def export_opendv(data: dict, root: str | Path, quality: int = 95) -> Path:
    """The training episodes as OpenDV-YouTube frame folders: ``root/<episode>/000000000.jpg, ...`` (10 Hz)."""
    from PIL import Image

    root = Path(root)
    for e in data["train"]:
        folder = root / data["episodes"][e]
        folder.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(data["frames"][e]):
            Image.fromarray(f).save(folder / f"{i:09d}.jpg", quality=quality)
    return root


def load_encoder(path: str | Path) -> VideoViT:
    """The EMA target encoder of a ``wmkit.jepa.pretrain`` (or ``wmkit jepa train-vjepa``) checkpoint."""
    from wmkit.checkpoint import checkpoint_exists, load_meta, load_state
    from wmkit.jepa.vjepa import VJEPA

    if not checkpoint_exists(path):
        raise FileNotFoundError(f"--encoder {path}: no checkpoint there (expected <pretrain run_dir>/ckpt/latest)")
    meta = load_meta(path)
    mcfg = meta.get("model") or meta.get("config", {}).get("model")
    if not isinstance(mcfg, dict):
        raise ValueError(f"--encoder {path}: no V-JEPA model config in its metadata (keys {sorted(meta)})")
    model = VJEPA(VJEPAConfig(**mcfg))
    model.load_state_dict(load_state(path)["model"])
    return model.target_encoder


class DrivingHead(nn.Module):
    """Encoder + attentive probe: video (B, T, 3, H, W) in [0, 1] -> (B, 3) standardised (steer, gas, speed)."""

    def __init__(self, encoder: VideoViT, heads: int = 4, token_norm: str = "batchnorm"):
        super().__init__()
        self.encoder = encoder
        self.probe = AttentiveProbe(encoder.cfg.dim, len(TARGETS), heads=heads)
        N = math.prod(encoder.cfg.grid)
        # batch statistics while training, running ones in eval mode; identity for token_norm="none"
        self.token_norm = nn.BatchNorm1d(N * encoder.cfg.dim, affine=False) if token_norm == "batchnorm" \
            else nn.Identity()
        self.frozen = False

    def freeze_encoder(self) -> DrivingHead:
        """Frozen evaluation: no encoder parameter takes a gradient, and the encoder stays in eval mode."""
        self.frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        return self

    def train(self, mode: bool = True) -> DrivingHead:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                tokens = self.encoder(video)  # (B, N, D), no graph
        else:
            tokens = self.encoder(video)  # (B, N, D)
        return self.probe(self.token_norm(tokens.flatten(1)).view_as(tokens))  # (B, 3)


# [recipe]
def make_optimizer(model: DrivingHead, mode: str, lr: float, weight_decay: float,
                   encoder_lr_scale: float) -> torch.optim.AdamW:
    """AdamW with a head group (rate lr) and, unless frozen, an encoder group at lr (scratch) or
    encoder_lr_scale * lr (finetune). Each group keeps its ratio to the base rate in ``lr_scale``."""
    groups = [{"params": list(model.probe.parameters()), "lr": lr, "lr_scale": 1.0, "name": "head"}]
    if mode in ("frozen", "random_frozen"):
        model.freeze_encoder()
    else:
        scale = 1.0 if mode == "scratch" else encoder_lr_scale
        model.encoder.requires_grad_(True)  # a checkpoint's target encoder comes with requires_grad off
        groups.append({"params": list(model.encoder.parameters()), "lr": lr * scale, "lr_scale": scale,
                       "name": "encoder"})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def cosine_lr(step: int, steps: int, lr: float) -> float:
    """V-JEPA's eval schedule with start_lr = lr, warmup 0, final_lr 0: lr (1 + cos(pi step / steps)) / 2."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, steps)))
# [/recipe]


def _windows(frames: np.ndarray, episodes: list[int], length: int) -> list[tuple[int, int]]:
    return [(e, t) for e in episodes for t in range(length - 1, frames.shape[1])]  # (episode, last frame)


def _batch(frames: np.ndarray, y: torch.Tensor, idx: list[tuple[int, int]], length: int):
    video = np.stack([frames[e, t - length + 1: t + 1] for e, t in idx])  # (B, T, H, W, 3) uint8
    video = torch.from_numpy(video).permute(0, 1, 4, 2, 3).float() / 255.0  # (B, T, 3, H, W)
    return video, torch.stack([y[e, t] for e, t in idx])  # (B, 3)


@torch.no_grad()
def _precise_norm(model: DrivingHead, frames: np.ndarray, yn: torch.Tensor, idx: list[tuple[int, int]], L: int):
    """Re-estimate the token BatchNorm's statistics at the current encoder weights on training clips ``idx``
    (wmkit.nn.precise_batchnorm): the running averages lag an encoder that is still moving (measured: held-out R^2
    -1.6 at step 100 of a fine-tuning run with the running statistics, whose weights score well)."""
    if isinstance(model.token_norm, nn.BatchNorm1d):
        model.eval()
        with precise_batchnorm([model.token_norm]):
            for i in range(0, len(idx), 256):
                video = _batch(frames, yn, idx[i:i + 256], L)[0].to(model.token_norm.running_mean.device)
                model.token_norm(model.encoder(video).flatten(1))
    model.eval()


@torch.no_grad()
def _score(model: DrivingHead, frames: np.ndarray, yn: torch.Tensor, idx: list[tuple[int, int]], L: int) -> dict:
    dev = next(model.probe.parameters()).device
    pred = torch.cat([model(_batch(frames, yn, idx[i:i + 256], L)[0].to(dev)).cpu()
                      for i in range(0, len(idx), 256)])  # (M, 3)
    true = torch.stack([yn[e, t] for e, t in idx])  # (M, 3)
    return {name: r2_score(pred[:, j:j + 1], true[:, j:j + 1]) for j, name in enumerate(TARGETS)}


def finetune(cfg: FinetuneConfig, data: dict | None = None, encoder: VideoViT | None = None) -> dict:
    """Train one mode for cfg.steps and return held-out R^2 per target (and the trained model under "model")."""
    data = data if data is not None else driving_data(cfg)
    if encoder is None:
        if cfg.encoder is not None:
            encoder = load_encoder(cfg.encoder)
        else:
            from wmkit.profiles import profile

            encoder = VideoViT(VJEPAConfig(**profile(cfg.preset).jepa.pretrain_model))
    if cfg.mode in ("scratch", "random_frozen"):  # same architecture, fresh weights
        torch.manual_seed(cfg.seed + 1)
        encoder = VideoViT(encoder.cfg)
    H = data["frames"].shape[2]
    if encoder.cfg.size != H:
        raise ValueError(f"--encoder {cfg.encoder}: encoder expects {encoder.cfg.size} x {encoder.cfg.size} frames, "
                         f"the driving data has {H} x {H}")
    L = encoder.cfg.frames
    torch.manual_seed(cfg.seed)  # the same head initialisation in every mode
    device = pick_device(cfg.device)
    model = DrivingHead(encoder, heads=cfg.probe_heads, token_norm=cfg.token_norm).to(device)
    opt = make_optimizer(model, cfg.mode, cfg.lr, cfg.weight_decay, cfg.encoder_lr_scale)
    y = torch.from_numpy(data["targets"])  # (E, T, 3)
    ytr = y[data["train"]].reshape(-1, 3)
    mu, sd = ytr.mean(0), ytr.std(0).clamp_min(1e-6)
    yn = (y - mu) / sd
    labeled = data["train"][: cfg.labeled] if cfg.labeled else data["train"]
    train, held = _windows(data["frames"], labeled, L), _windows(data["frames"], data["heldout"], L)
    with torch.no_grad():  # collapse check of the starting encoder on held-out clips: std over samples, RankMe
        tokens = model.encoder.eval()(_batch(data["frames"], yn, held[:: max(1, len(held) // 128)], L)[0].to(device))
        start = collapse_stats(tokens.mean(1))  # pooled (B, D)
        start["token_std"] = float(tokens.std(0).mean())  # (N, D) std over clips, averaged
    curve, calib = [], train[:: max(1, len(train) // 512)]  # clips that re-estimate the token norm's statistics
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr) * group["lr_scale"]
        pick = torch.randint(0, len(train), (cfg.batch,), generator=g).tolist()
        video, target = _batch(data["frames"], yn, [train[i] for i in pick], L)
        with autocast(cfg.precision, device):
            pred = model(video.to(device)).float()  # (B, 3)
        loss = (pred - target.to(device)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if cfg.curve_every and (step + 1) % cfg.curve_every == 0 and step + 1 < cfg.steps:
            _precise_norm(model, data["frames"], yn, calib, L)
            curve.append({"step": step + 1, **_score(model, data["frames"], yn, held, L)})
            model.train()
    _precise_norm(model, data["frames"], yn, calib, L)
    out = {"mode": cfg.mode, "seed": cfg.seed, "steps": cfg.steps, "labeled_episodes": len(labeled),
           "train_loss_last50": float(np.mean(losses[-50:])), "start_feature_std": start["feature_std"],
           "start_effective_rank": start["effective_rank"], "start_token_std": start["token_std"]}
    for name, idx in (("train", train[:: max(1, len(train) // 1024)]), ("heldout", held)):
        out.update({f"r2_{name}_{k}": v for k, v in _score(model, data["frames"], yn, idx, L).items()})
    out["curve"] = curve + [{"step": cfg.steps, **{k: out[f"r2_heldout_{k}"] for k in TARGETS}}]
    out["model"], out["norm"] = model, (mu, sd)
    return out


@torch.no_grad()
def drive(policy: str, episodes: int, steps: int, seed: int, model: DrivingHead | None = None,
          norm: tuple[torch.Tensor, torch.Tensor] | None = None, every: int = 5, skip_zoom: int = 50) -> list[dict]:
    """Closed-loop CarRacing: ``policy`` model | random | data on track seeds seed .. seed + episodes - 1.
    Returns per episode the tiles visited (of the track's), the return and the steps driven."""
    from wmkit.carracing import make_car_racing
    from wmkit.jepa.goals import DataPolicy, frame_of

    if policy not in ("model", "random", "data"):
        raise ValueError(f"drive: policy must be model | random | data, got {policy!r}")
    if policy == "model" and (model is None or norm is None):
        raise ValueError("drive: policy 'model' needs the trained model and its target normalisation")
    results = []
    for e in range(episodes):
        env = make_car_racing(max_episode_steps=skip_zoom + steps + 1)
        rng = np.random.default_rng(seed + e)
        obs, _ = env.reset(seed=seed + e)
        for _ in range(skip_zoom):
            obs, *_ = env.step(np.zeros(3, np.float32))
        data_policy, history, action, ret, t = DataPolicy(rng), [], np.zeros(3, np.float32), 0.0, 0
        for t in range(steps):
            if policy == "data":
                action = data_policy(obs)
            elif policy == "random":
                action = rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)
            elif t % every == 0:  # one prediction per 10 Hz frame, held for `every` steps
                history.append(frame_of(obs, model.encoder.cfg.size))
                L = model.encoder.cfg.frames
                clip = ([history[0]] * L + history)[-L:]  # pad the start with the first frame
                video = torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).float()[None] / 255.0  # (1, T, 3, H, W)
                dev = next(model.probe.parameters()).device
                steer, gas, _ = (model(video.to(dev))[0].cpu() * norm[1] + norm[0]).tolist()
                action = np.array([np.clip(steer, -1, 1), np.clip(gas, 0, 1), 0.0], np.float32)
            obs, r, term, trunc, _ = env.step(action)
            ret += float(r)
            if term or trunc:
                break
        u = env.unwrapped
        results.append({"policy": policy, "track_seed": seed + e, "tiles": int(u.tile_visited_count),
                        "track_tiles": len(u.track), "return": ret, "steps": t + 1})
        env.close()
    return results


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(FinetuneConfig, argv, prog="python -m wmkit.jepa.finetune")
    torch.set_num_threads(1)
    data = driving_data(cfg, progress=True)
    if cfg.export_opendv is not None:
        root = export_opendv(data, cfg.export_opendv)
        print(json.dumps({"opendv_root": str(root), "videos": len(data["train"]),
                          "frames_per_video": int(data["frames"].shape[1])}))
        return {}
    out = finetune(cfg, data)
    model, norm = out.pop("model"), out.pop("norm")
    if cfg.drive_episodes:
        runs = drive("model", cfg.drive_episodes, cfg.drive_steps, cfg.drive_seed, model, norm, cfg.every)
        out["drive"] = runs
        out["drive_tiles_mean"] = float(np.mean([r["tiles"] for r in runs]))
        out["drive_return_mean"] = float(np.mean([r["return"] for r in runs]))
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    from wmkit.checkpoint import save_state

    save_state(run / "model", {"model": model.state_dict(), "mu": norm[0], "sd": norm[1]}, {"config": to_dict(cfg)})
    (run / "metrics.json").write_text(json.dumps({"config": to_dict(cfg), **out}, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "drive"}))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
