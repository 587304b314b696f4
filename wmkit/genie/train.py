"""Train the three parts of Genie in the paper's order and measure them (Bruce et al. 2024, section 2.1).

1. :func:`train_tokenizer` -- video tokenizer on clips of ``tok_clip_len`` frames (VQ-VAE objective / FSQ + MSE);
2. :func:`train_lam`       -- latent action model on clips of ``lam_clip_len`` frames, on pixels;
3. :func:`train_dynamics`  -- MaskGIT dynamics on the frozen tokenizer's tokens and the frozen LAM's actions
   (Genie: "stop-gradient latent actions"): both are computed once per episode before training.

Evaluations on **held-out episodes** (the clips of :class:`wmkit.data.ClipDataset`'s "heldout" split):
:func:`eval_tokenizer` (reconstruction PSNR), :func:`eval_lam` (code usage, perplexity, confusion with the true
Crafter actions), :func:`eval_dynamics` (PSNR of generated frames against the horizon with the inferred actions and
with random ones; Genie's controllability metric Delta_t PSNR = PSNR(inferred) - PSNR(random) at t = 4).

Every trainer writes the layout of :mod:`wmkit.training` (config.json, metrics.jsonl, tb/) and a safetensors
checkpoint ``<run_dir>/<part>/ckpt/latest``; ``None`` fields of :class:`GenieConfig` come from the active profile.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wmkit.checkpoint import load_state, save_state
from wmkit.config import to_dict
from wmkit.genie.dynamics import DynamicsConfig, DynamicsModel
from wmkit.genie.lam import LAMConfig, LatentActionModel, code_usage, confusion, recalibrate_out_norm
from wmkit.genie.tokenizer import TokenizerConfig, VideoTokenizer, psnr, usage_stats
from wmkit.precision import autocast, prepare_model
from wmkit.profiles import profile
from wmkit.training import Logger, check_finite
from wmkit.utils import pick_device, runs_dir, seed_everything

__all__ = ["GenieConfig", "load_episodes", "train_tokenizer", "train_lam", "train_dynamics", "encode_episode",
           "infer_episode_actions", "eval_tokenizer", "eval_lam", "eval_dynamics", "load_models", "train_all"]


@dataclass
class GenieConfig:
    """One config for the whole pipeline (tokenizer, LAM, dynamics). None = the active profile's value."""

    run_dir: str | None = None
    """Where runs go (default: wmkit.utils.runs_dir('genie'))."""
    episodes: int | None = None
    """Crafter episodes recorded by wmkit.data.crafter_clips (20% held out by episode)."""
    episode_steps: int | None = None
    """Steps per episode."""
    frame_size: int | None = None
    """Frame height = width in pixels (56 with crop='tiles')."""
    crop: str = "tiles"
    """'tiles': the 7 x 7 Crafter tiles around the player, tile-aligned patches (wmkit); 'none': the whole frame."""
    seed: int = 0
    """Seed of data split, initialisation, batches and masks."""
    device: str | None = None
    """cpu | cuda | mps (default: the best available)."""
    precision: str = "fp32"
    """fp32 | bf16 | fp8 (wmkit.precision)."""
    tok_quantizer: str = "fsq"
    """fsq (wmkit default) or vq (Genie)."""
    tok_patch: int | None = None
    """Tokenizer patch size (N = (frame_size / patch)^2 tokens per frame)."""
    tok_dim: int | None = None
    """Tokenizer width."""
    tok_depth: int | None = None
    """ST blocks in the tokenizer's encoder and in its decoder."""
    tok_clip_len: int | None = None
    """Frames per tokenizer training clip (its temporal context)."""
    tok_steps: int | None = None
    """Tokenizer training steps."""
    tok_batch: int | None = None
    """Tokenizer clips per batch."""
    tok_encoder: str | None = None
    """Tokenizer encoder: 'st' (Genie's ST-transformer) or 'patch' (each token from its own patch alone;
    TokenizerConfig.encoder). None: the profile's choice."""
    lam_patch: int | None = None
    """LAM patch size (Genie: 16)."""
    lam_size: int | None = None
    """Resolution the LAM works at (0 = frame_size)."""
    lam_predict_delta: bool = True
    """LAM decoder predicts x_{t+1} - x_t (wmkit) instead of x_{t+1} (Genie)."""
    lam_dim: int | None = None
    """LAM width."""
    lam_depth: int | None = None
    """ST blocks in the LAM encoder and in its decoder."""
    lam_clip_len: int | None = None
    """Frames per LAM clip."""
    lam_steps: int | None = None
    """LAM training steps."""
    lam_batch: int | None = None
    """LAM clips per batch."""
    lam_actions: int = 8
    """|A|, the number of latent actions (Genie: 8)."""
    lam_quantizer: str = "vq"
    """LAM bottleneck: 'vq' (Genie) or 'fsq' (three 2-level channels, tinyworlds)."""
    lam_continuous_warmup: float = 0.0
    """Fraction of LAM steps with the decoder reading the continuous encoder output (0 = Genie)."""
    lam_lr: float | None = None
    """Peak learning rate of the LAM (None = lr)."""
    lam_patch_context: int | None = None
    """LAM input tokens: each patch with its k x k patch neighbourhood (1 = Genie; 3 = with its 8 neighbours)."""
    lam_enc_correlation: bool | None = None
    """LAM encoder tokens also get the 3 x 3 local cost volume to the previous frame (not in Genie)."""
    lam_corr_temperature: float | None = None
    """LAM cost volume: raw similarities (0) or their softmax over the 9 offsets at this temperature (> 0)."""
    lam_enc_patches: bool | None = None
    """LAM encoder tokens hold their pixels (True = Genie); False: only the cost volume (needs lam_enc_correlation)."""
    lam_enc_attention: str = "st"
    """LAM encoder attention: 'full' (block-causal over the clip, wmkit) or 'st' (Genie's ST blocks)."""
    lam_enc_positions: str = "learned"
    """LAM encoder patch positions: 'sincos' (fixed 2-D table) or 'learned' (std-0.02 table, the earlier wmkit)."""
    lam_move_fraction: float | None = None
    """Share of each LAM batch drawn from windows whose last transition scrolls the view (observed_motion != none);
    0 = uniform windows (Genie). The recordings are ~70 % no-scroll, so a uniform batch holds few moves (not in
    Genie)."""
    lam_enc_flow_token: bool = False
    """LAM action token reads the patch-averaged cost volume (the frame's displacement; False = Genie)."""
    lam_move_balance: bool = False
    """The ``lam_move_fraction`` share of a LAM batch is drawn with equal shares of left, right, up and down
    windows (False: uniformly from all scrolling windows, so each direction by its frequency; not in Genie)."""
    lam_restart_after: int = 50
    """Dead-code restart after this many unused steps (0 = off)."""
    lam_beta: float = 0.25
    """Commitment weight of the LAM's VQ loss (default 0.25, the VQ-VAE paper's value; LAMConfig.beta)."""
    lam_out_norm: str | None = None
    """LAM encoder output standardised over the batch before the quantizer ('batch') or not ('none' = Genie); see
    LAMConfig.out_norm. None: the profile's choice."""
    lam_recalibrate_batches: int = 50
    """With ``lam_out_norm='batch'``: training batches over which its statistics are re-estimated after training
    (0: keep the running averages kept during training)."""
    lam_decoder_mask: float = 0.0
    """Fraction of LAM decoder input patches (after frame 1) hidden behind a mask token."""
    lam_var_weight: float | None = None
    """Weight of the batch-variance penalty on the LAM encoder outputs (0 = off)."""
    dyn_dim: int | None = None
    """Dynamics width."""
    dyn_depth: int | None = None
    """Dynamics ST blocks."""
    dyn_clip_len: int | None = None
    """Frames per dynamics training clip (= the context it attends over when generating)."""
    dyn_steps: int | None = None
    """Dynamics training steps."""
    dyn_batch: int | None = None
    """Dynamics clips per batch."""
    dyn_move_fraction: float | None = None
    """Share of each dynamics batch drawn from windows whose last transition scrolls the view (as
    ``lam_move_fraction``; 0 = uniform windows, Genie). None: the profile's choice."""
    dyn_lr: float | None = None
    """Peak learning rate of the dynamics model (None: ``lr``)."""
    dyn_mask_min: float = 0.5
    """Lower end of the dynamics training masking rate U[dyn_mask_min, 1) (Genie and Jafar: 0.5)."""
    dyn_token_context: int | None = None
    """Dynamics input tokens hold their k x k neighbourhood (DynamicsConfig.token_context; 1 = Genie). None: the
    profile's choice."""
    dyn_prev_window: int | None = None
    """Dynamics tokens of frame t+1 read the k x k window of frame t by attention before the transformer
    (DynamicsConfig.prev_window; 1 = Genie). None: the profile's choice."""
    heads: int = 4
    """Attention heads of every transformer."""
    lr: float = 3e-4
    """Peak AdamW learning rate (Genie's tokenizer: 3e-4), linear warm-up over 5% of steps then cosine to lr/10."""
    maskgit_steps: int | None = None
    """MaskGIT decoding steps per generated frame (Genie: 25)."""
    temperature: float = 2.0
    """MaskGIT temperature (Genie: 2)."""
    log_every: int = 25
    """Log scalars every this many steps."""


def fill(cfg: GenieConfig) -> GenieConfig:
    """Replace the None fields by the active profile's numbers."""
    P = profile().genie
    out = {f.name: getattr(P, f.name) for f in dataclasses.fields(cfg)
           if getattr(cfg, f.name) is None and hasattr(P, f.name)}
    cfg = dataclasses.replace(cfg, **out)
    if cfg.run_dir is None:
        cfg = dataclasses.replace(cfg, run_dir=str(runs_dir("genie")))
    return cfg


# ---------------------------------------------------------------------------------------------------- data
TILE = 8  # Crafter renders a 9 x 9 grid of units; at 72 x 72 pixels one unit (one tile) is 8 x 8 pixels


def crop_tiles(frames: np.ndarray) -> np.ndarray:
    """(T, 72, 72, 3) Crafter frames -> (T, 56, 56, 3): the 7 x 7 tiles of the world view centred on the player.

    Crafter's 72 x 72 image is the 9 x 7-tile local view (rows 0-55; the player in tile column 4, row 3) above a
    2-row inventory (rows 56-71). Keeping tile columns 1-7 and rows 0-6 centres the player and aligns the patch grid
    (patch 8) with the game's tiles, so one step of movement shifts the frame by exactly one token.
    """
    if frames.ndim != 4 or frames.shape[1:3] != (72, 72):
        raise ValueError(f"crop_tiles: expected (T, 72, 72, 3) Crafter frames rendered at size 72, got {frames.shape}")
    return np.ascontiguousarray(frames[:, : 7 * TILE, TILE: 8 * TILE])


def load_episodes(cfg: GenieConfig) -> dict[str, list[dict[str, np.ndarray]]]:
    """Record (or read from the cache) Crafter episodes; split by episode into train / heldout.

    ``crop="tiles"``: render at 72 x 72 and keep the 7 x 7 tiles around the player (56 x 56, see :func:`crop_tiles`);
    ``crop="none"``: the whole frame rendered at ``frame_size``. Returns {"train": [...], "heldout": [...]}, each
    episode {"frames": (T, H, W, 3) uint8, "actions": (T,) int64, "episode": str}.
    """
    from wmkit.data import ClipDataset, crafter_clips

    if cfg.crop not in ("tiles", "none"):
        raise ValueError(f"crop: expected 'tiles' or 'none', got {cfg.crop!r}")
    if cfg.crop == "tiles" and cfg.frame_size != 7 * TILE:
        raise ValueError(f"crop='tiles' gives {7 * TILE} x {7 * TILE} frames but frame_size={cfg.frame_size}")
    size = 9 * TILE if cfg.crop == "tiles" else cfg.frame_size
    clips = crafter_clips(episodes=cfg.episodes, steps=cfg.episode_steps, seed=cfg.seed, size=size, progress=False)
    ds = ClipDataset(clips, context=1, future=0, size=None, split="all", seed=cfg.seed)
    out: dict[str, list] = {"train": [], "heldout": []}
    for c in ds.clips:
        split = "heldout" if c.episode in ds.heldout_episodes else "train"
        frames = crop_tiles(c.frames) if cfg.crop == "tiles" else c.frames
        out[split].append({"frames": frames, "actions": c.actions.copy(), "episode": c.episode})
    if not out["train"] or not out["heldout"]:
        raise ValueError(f"need >= 1 training and >= 1 held-out episode; got {len(out['train'])} and "
                         f"{len(out['heldout'])} from episodes={cfg.episodes}")
    return out


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float().div_(255.0)


def sample_windows(episodes: list[dict], length: int, batch: int, g: np.random.Generator, key: str = "frames"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` random windows of ``length`` steps: (B, length, ...) of ``key`` and (B, length) true actions."""
    ok = [e for e in episodes if len(e[key]) >= length]
    if not ok:
        raise ValueError(f"no episode has {length} steps (lengths {[len(e[key]) for e in episodes][:8]})")
    lens = np.array([len(e[key]) - length + 1 for e in ok], dtype=np.float64)
    ei = g.choice(len(ok), size=batch, p=lens / lens.sum())
    starts = [int(g.integers(0, lens[i])) for i in ei]
    x = np.stack([ok[i][key][s:s + length] for i, s in zip(ei, starts)])
    a = np.stack([ok[i]["actions"][s:s + length] for i, s in zip(ei, starts)])
    return x, a


def _schedule(opt: torch.optim.Optimizer, step: int, total: int, lr: float) -> None:
    warm = max(1, total // 20)
    f = step / warm if step < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    for group in opt.param_groups:
        group["lr"] = lr * f


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.9), weight_decay=1e-4)  # Genie appendix


def tokenizer_config(cfg: GenieConfig) -> TokenizerConfig:
    return TokenizerConfig(frame_size=cfg.frame_size, patch=cfg.tok_patch, dim=cfg.tok_dim, enc_depth=cfg.tok_depth,
                           dec_depth=cfg.tok_depth, heads=cfg.heads, quantizer=cfg.tok_quantizer,
                           max_frames=cfg.tok_clip_len, encoder=cfg.tok_encoder or "st")


def lam_config(cfg: GenieConfig) -> LAMConfig:
    return LAMConfig(frame_size=cfg.frame_size, patch=cfg.lam_patch, dim=cfg.lam_dim, enc_depth=cfg.lam_depth,
                     dec_depth=cfg.lam_depth, heads=cfg.heads, num_actions=cfg.lam_actions,
                     restart_after=cfg.lam_restart_after, beta=cfg.lam_beta, decoder_mask=cfg.lam_decoder_mask,
                     var_weight=cfg.lam_var_weight, max_frames=cfg.lam_clip_len, lam_size=cfg.lam_size,
                     predict_delta=cfg.lam_predict_delta, quantizer=cfg.lam_quantizer,
                     enc_positions=cfg.lam_enc_positions, enc_attention=cfg.lam_enc_attention,
                     patch_context=cfg.lam_patch_context,
                     enc_correlation=cfg.lam_enc_correlation, enc_patches=cfg.lam_enc_patches,
                     corr_temperature=cfg.lam_corr_temperature, enc_flow_token=cfg.lam_enc_flow_token,
                     out_norm=cfg.lam_out_norm or "none")


def dynamics_config(cfg: GenieConfig, vocab: int, grid: tuple[int, int]) -> DynamicsConfig:
    return DynamicsConfig(vocab=vocab, grid=grid, num_actions=cfg.lam_actions, dim=cfg.dyn_dim, depth=cfg.dyn_depth,
                          heads=cfg.heads, max_frames=cfg.dyn_clip_len, maskgit_steps=cfg.maskgit_steps,
                          temperature=cfg.temperature, token_context=cfg.dyn_token_context or 1,
                          prev_window=cfg.dyn_prev_window or 1, mask_min=cfg.dyn_mask_min)


def _train_loop(name: str, cfg: GenieConfig, model: torch.nn.Module, steps: int, batch_fn, loss_fn, extra_log=None,
                lr: float | None = None, finish=None) -> list[dict]:
    """The loop shared by the three trainers: AdamW, warm-up + cosine, precision switch, logging, checkpoint
    (``finish(model)``, if given, runs after the last step and before the checkpoint is written)."""
    device = torch.device(cfg.device or pick_device())
    model = prepare_model(model.to(device), cfg.precision)
    lr = lr or cfg.lr
    opt = _optimizer(model, lr)
    run = Path(cfg.run_dir) / name
    history = []
    with Logger(run) as log:
        log.save_config(to_dict(cfg))
        t0 = time.perf_counter()
        for step in tqdm(range(steps), desc=f"genie {name}", leave=False):
            _schedule(opt, step, steps, lr)
            batch = batch_fn()
            with autocast(cfg.precision, device):
                out = loss_fn(model, batch)
            check_finite({f"{name}/loss": out["loss"]}, step)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % cfg.log_every == 0 or step == steps - 1:
                row = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}
                if extra_log is not None:
                    row.update(extra_log(model, out))
                row["seconds"] = time.perf_counter() - t0
                history.append({"step": step, **row})
                log.log(step, **row)
        if finish is not None:
            finish(model)
        save_state(run / "ckpt" / "latest", {"model": model.state_dict()},
                   {"config": to_dict(cfg), "part": name, "steps": steps})
    return history


# ---------------------------------------------------------------------------------------------------- 1. tokenizer
def train_tokenizer(cfg: GenieConfig, data: dict) -> tuple[VideoTokenizer, list[dict]]:
    cfg = fill(cfg)
    seed_everything(cfg.seed)
    g = np.random.default_rng(cfg.seed)
    model = VideoTokenizer(tokenizer_config(cfg))
    device = torch.device(cfg.device or pick_device())

    def batch():
        return to_tensor(sample_windows(data["train"], cfg.tok_clip_len, cfg.tok_batch, g)[0]).to(device)

    def loss(m, x):
        out = m(x)
        return {"loss": out["loss"], "mse": out["mse"], "psnr": psnr(out["recon"].detach(), x).mean(),
                "tokens": out["tokens"]}

    def usage(m, out):
        s = usage_stats(out["tokens"].cpu(), m.vocab)
        return {"codes_live": s["live"], "codes_perplexity": s["perplexity"]}

    hist = _train_loop("tokenizer", cfg, model, cfg.tok_steps, batch, loss, usage)
    return model.eval(), hist


@torch.no_grad()
def encode_episode(tok: VideoTokenizer, frames: np.ndarray) -> torch.Tensor:
    """Tokens (T, N) of a whole episode, encoded in consecutive chunks of the tokenizer's context."""
    L, dev = tok.cfg.max_frames, next(tok.parameters()).device
    out = [tok.encode(to_tensor(frames[s:s + L])[None].to(dev))[0] for s in range(0, len(frames), L)]
    return torch.cat(out).cpu()  # (T, N)


@torch.no_grad()
def decode_tokens(tok: VideoTokenizer, tokens: torch.Tensor) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of tokens (T, N), decoded in chunks of the tokenizer's context."""
    L, dev = tok.cfg.max_frames, next(tok.parameters()).device
    out = [tok.decode(tokens[s:s + L][None].to(dev))[0] for s in range(0, len(tokens), L)]
    return (torch.cat(out).movedim(1, -1).clamp(0, 1) * 255).round().byte().cpu().numpy()


@torch.no_grad()
def eval_tokenizer(tok: VideoTokenizer, episodes: list[dict]) -> dict:
    """Reconstruction PSNR (dB) over every frame of ``episodes`` and token usage."""
    ps, used = [], []
    for e in episodes:
        toks = encode_episode(tok, e["frames"])
        rec = to_tensor(decode_tokens(tok, toks))
        ps.append(psnr(rec, to_tensor(e["frames"])))
        used.append(toks.flatten())
    s = usage_stats(torch.cat(used), tok.vocab)
    return {"psnr": float(torch.cat(ps).mean()), "codes_live": s["live"], "codes_perplexity": s["perplexity"],
            "vocab": tok.vocab}


# ---------------------------------------------------------------------------------------------------- 2. LAM
def moving_windows(episodes: list[dict], length: int, balance: bool = False
                   ) -> tuple[list[tuple[int, int]], np.ndarray | None]:
    """Windows (episode, start) of ``length`` frames whose last transition scrolls the view, and the probability of
    drawing each: None (uniform over windows: each direction by its frequency) or, with ``balance``, equal total
    probability for every direction present (left, right, up, down by :func:`observed_motion`)."""
    moving, direction = [], []
    for i, e in enumerate(episodes):
        if len(e["frames"]) >= length:
            m = observed_motion(e["frames"])[length - 2:]  # motion of the last transition of window s: m[s]
            for s in np.flatnonzero(m != 0):
                moving.append((i, int(s)))
                direction.append(int(m[s]))
    if not balance or not moving:
        return moving, None
    d = np.asarray(direction, dtype=np.int64)
    w = 1.0 / np.bincount(d)[d]  # (M,): 1 / (windows of the same direction)
    return moving, w / w.sum()


def train_lam(cfg: GenieConfig, data: dict) -> tuple[LatentActionModel, list[dict]]:
    cfg = fill(cfg)
    seed_everything(cfg.seed + 1)
    g = np.random.default_rng(cfg.seed + 1)
    model = LatentActionModel(lam_config(cfg))
    device = torch.device(cfg.device or pick_device())

    if not 0.0 <= cfg.lam_move_fraction <= 1.0:
        raise ValueError(f"lam_move_fraction: expected a share in [0, 1], got {cfg.lam_move_fraction}")
    L = cfg.lam_clip_len
    # windows (episode, start) whose last transition (start + L - 2 -> start + L - 1) scrolls the view
    moving, p_move = moving_windows(data["train"], L, cfg.lam_move_balance)
    n_move = round(cfg.lam_move_fraction * cfg.lam_batch)
    if n_move and not moving:
        raise ValueError("lam_move_fraction > 0 but no training transition scrolls the view")

    def batch():
        x = sample_windows(data["train"], L, cfg.lam_batch - n_move, g)[0]  # (B - n_move, L, H, W, 3)
        if n_move:  # oversample the moves: n_move windows drawn uniformly from the scrolling ones
            pick = g.choice(len(moving), size=n_move, p=p_move)
            x = np.concatenate([x, np.stack([data["train"][moving[j][0]]["frames"][moving[j][1]:moving[j][1] + L]
                                             for j in pick])])
        return to_tensor(x).to(device)

    warm = int(cfg.lam_continuous_warmup * cfg.lam_steps)
    calls = [0]

    def loss(m, x):
        out = m(x, continuous=calls[0] < warm)  # the first `warm` steps: the decoder reads the continuous output
        calls[0] += 1
        return {k: out[k] for k in ("loss", "mse", "vq_loss", "spread", "mse_over_copy", "actions")}

    def usage(m, out):
        u = code_usage(out["actions"].cpu(), cfg.lam_actions)
        row = {"codes_live": u["live"], "codes_perplexity": u["perplexity"],
               "restarts": float(getattr(m.vq, "restarts", 0))}
        row.update({f"usage/{k}": float(f) for k, f in enumerate(u["fraction"])})
        return row

    def finish(m):  # out_norm="batch": evaluation statistics from the trained weights on training batches
        if cfg.lam_recalibrate_batches > 0:  # 0: keep the running averages of training (BatchNorm's default)
            recalibrate_out_norm(m, (batch() for _ in range(cfg.lam_recalibrate_batches)))

    hist = _train_loop("lam", cfg, model, cfg.lam_steps, batch, loss, usage, lr=cfg.lam_lr, finish=finish)
    return model.eval(), hist


@torch.no_grad()
def infer_episode_actions(lam: LatentActionModel, frames: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Latent action (T-1,) of every transition t -> t+1 of an episode, each read by the causal encoder from the
    window of ``lam_clip_len`` frames that ends at frame t+1 (as in training).

    The full-length windows are encoded together, ``batch`` at a time (one forward instead of one per transition;
    the same windows, so the same codes); the first ``lam_clip_len - 2`` transitions have shorter windows and are
    encoded one by one.
    """
    L, dev = lam.cfg.max_frames, next(lam.parameters()).device
    x = to_tensor(frames).to(dev)  # (T, 3, H, W)
    ids = []
    for t in range(1, min(L - 1, len(frames))):  # transitions whose window starts at frame 0 (shorter than L)
        ids.append(lam.infer_actions(x[:t + 1][None])[0, -1:])
    if len(frames) >= L:
        win = x.unfold(0, L, 1).movedim(-1, 1)  # (T-L+1, L, 3, H, W): window s = frames s..s+L-1
        for s in range(0, len(win), batch):
            ids.append(lam.infer_actions(win[s:s + batch])[:, -1])  # the code of each window's last transition
    return torch.cat(ids).cpu() if ids else torch.zeros(0, dtype=torch.long)


MOTIONS = ("none", "left", "right", "up", "down")


def observed_motion(frames: np.ndarray, shift: int = TILE) -> np.ndarray:
    """Which way the player actually moved at each transition of tile-aligned frames (T, H, W, 3) -> (T-1,) ids
    into :data:`MOTIONS`: the shift of the picture by one tile (or none) that best explains x_{t+1} from x_t.

    The player stays in the centre, so moving left scrolls the world right (x_{t+1}[:, s:] = x_t[:, :-s]). A move
    into a tree or water does not scroll and counts as "none", which is why this, not the pressed key, is the label
    a latent action can be expected to match.
    """
    x = frames.astype(np.float32) / 255.0
    x0, x1 = x[:-1], x[1:]  # (T-1, H, W, 3)
    s = shift
    err = np.stack([((x1 - x0) ** 2).mean(axis=(1, 2, 3)),
                    ((x1[:, :, s:] - x0[:, :, :-s]) ** 2).mean(axis=(1, 2, 3)),  # player left: world right
                    ((x1[:, :, :-s] - x0[:, :, s:]) ** 2).mean(axis=(1, 2, 3)),  # player right
                    ((x1[:, s:] - x0[:, :-s]) ** 2).mean(axis=(1, 2, 3)),  # player up: world down
                    ((x1[:, :-s] - x0[:, s:]) ** 2).mean(axis=(1, 2, 3))], axis=1)  # player down
    return err.argmin(1)


@torch.no_grad()
def eval_lam(lam: LatentActionModel, episodes: list[dict], num_true: int = 17) -> dict:
    """Held-out code usage, perplexity, confusion with the true actions and with the observed motion
    (:func:`observed_motion`; meaningful for tile-aligned frames), and how much the code matters: PSNR of the LAM
    decoder's next-frame prediction with the inferred code minus with a random code."""
    codes, true, gain, motion = [], [], [], []
    g = torch.Generator().manual_seed(0)
    dev = next(lam.parameters()).device
    for e in episodes:
        ids = infer_episode_actions(lam, e["frames"])
        codes.append(ids.numpy())
        true.append(e["actions"][:-1])
        motion.append(observed_motion(e["frames"]))
        x = to_tensor(e["frames"]).to(dev)
        pairs = torch.stack([x[:-1], x[1:]], 1)  # (T-1, 2, 3, H, W)
        rnd = torch.randint(0, lam.cfg.num_actions, ids.shape, generator=g)
        p_inf = lam.decode(pairs, lam.code(ids.to(dev))[:, None])[:, 0]
        p_rnd = lam.decode(pairs, lam.code(rnd.to(dev))[:, None])[:, 0]
        target = lam.resize(pairs)[:, 1]  # the next frame at the LAM's resolution
        gain.append(psnr(p_inf, target) - psnr(p_rnd, target))
    codes_a, true_a = np.concatenate(codes), np.concatenate(true)
    u = code_usage(codes_a, lam.cfg.num_actions)
    return {"codes_live": u["live"], "codes_perplexity": u["perplexity"], "usage": u["fraction"],
            "confusion": confusion(codes_a, true_a, lam.cfg.num_actions, num_true),
            "motion_confusion": confusion(codes_a, np.concatenate(motion), lam.cfg.num_actions, len(MOTIONS)),
            "decoder_psnr_gain": float(torch.cat(gain).mean()), "codes": codes_a, "true": true_a}


# ---------------------------------------------------------------------------------------------------- 3. dynamics
def tokenize_episodes(tok: VideoTokenizer, lam: LatentActionModel, episodes: list[dict]) -> list[dict]:
    """Each episode with its tokens (T, N) and latent actions (T,) (the last one is a filler, never used)."""
    out = []
    for e in episodes:
        a = infer_episode_actions(lam, e["frames"])
        out.append({**e, "tokens": encode_episode(tok, e["frames"]).numpy(),
                    "latent": np.concatenate([a.numpy(), [0]]).astype(np.int64)})
    return out


def train_dynamics(cfg: GenieConfig, tok_data: dict) -> tuple[DynamicsModel, list[dict]]:
    """``tok_data``: {"train": tokenize_episodes(...), ...}. Tokens and latent actions are fixed (stop-gradient)."""
    cfg = fill(cfg)
    seed_everything(cfg.seed + 2)
    g = np.random.default_rng(cfg.seed + 2)
    tg = torch.Generator().manual_seed(cfg.seed + 2)
    ep0 = tok_data["train"][0]["tokens"]
    side = int(round(math.sqrt(ep0.shape[1])))
    vocab = int(tok_data["vocab"])
    model = DynamicsModel(dynamics_config(cfg, vocab, (side, side)))
    device = torch.device(cfg.device or pick_device())

    if not 0.0 <= cfg.dyn_move_fraction <= 1.0:
        raise ValueError(f"dyn_move_fraction: expected a share in [0, 1], got {cfg.dyn_move_fraction}")
    L, n_move = cfg.dyn_clip_len, round(cfg.dyn_move_fraction * cfg.dyn_batch)
    moving, p_move = moving_windows(tok_data["train"], L) if n_move else ([], None)  # last transition scrolls
    if n_move and not moving:
        raise ValueError("dyn_move_fraction > 0 but no training transition scrolls the view")

    lat_eps = [{"frames": e["tokens"], "actions": e["latent"]} for e in tok_data["train"]]  # sample_windows' keys

    def batch():
        tokens, latent = sample_windows(lat_eps, L, cfg.dyn_batch - n_move, g)  # (B - n_move, L, N), (B - n_move, L)
        if n_move:  # oversample the scrolls: n_move windows drawn uniformly from those whose last transition scrolls
            wins = [moving[j] for j in g.choice(len(moving), size=n_move, p=p_move)]
            tokens = np.concatenate([tokens, np.stack([lat_eps[i]["frames"][s:s + L] for i, s in wins])])
            latent = np.concatenate([latent, np.stack([lat_eps[i]["actions"][s:s + L] for i, s in wins])])
        return torch.from_numpy(tokens).to(device), torch.from_numpy(latent[:, :-1]).to(device)

    def loss(m, b):
        return m.loss(b[0], b[1], generator=tg)

    hist = _train_loop("dynamics", cfg, model, cfg.dyn_steps, batch, loss, lr=cfg.dyn_lr)
    return model.eval(), hist


@torch.no_grad()
def eval_dynamics(dyn: DynamicsModel, tok: VideoTokenizer, episodes: list[dict], context: int = 1, horizon: int = 4,
                  starts_per_episode: int = 4, seed: int = 0, steps: int | None = None) -> dict:
    """PSNR of generated vs real frames against the horizon, with the LAM's inferred actions and with random ones.

    Delta_t PSNR (Genie, section 3 "Metrics") = PSNR(x_t, x_hat_t) - PSNR(x_t, x_hat'_t), with x_hat from inferred
    latent actions and x_hat' from random ones, at t = ``horizon`` (Genie: t = 4). Frames decoded from the real
    tokens give the tokenizer's ceiling. All windows are generated as one batch.
    """
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = next(dyn.parameters()).device
    toks, lats, reals = [], [], []
    for e in episodes:
        n = len(e["tokens"]) - context - horizon + 1
        for s in rng.choice(max(n, 0), size=min(starts_per_episode, max(n, 0)), replace=False):
            toks.append(e["tokens"][s:s + context + horizon])  # (c+h, N)
            lats.append(e["latent"][s:s + context + horizon - 1])  # (c+h-1,)
            reals.append(e["frames"][s + context:s + context + horizon])  # (h, H, W, 3)
    if not toks:
        raise ValueError(f"no held-out episode is longer than context + horizon = {context + horizon} frames")
    toks_t = torch.from_numpy(np.stack(toks)).to(dev)  # (M, c+h, N)
    lat = torch.from_numpy(np.stack(lats)).to(dev)  # (M, c+h-1)
    rnd = torch.randint(0, dyn.cfg.num_actions, lat.shape, generator=g).to(dev)
    real = to_tensor(np.stack(reals))  # (M, h, 3, H, W)
    gen_i = dyn.rollout(toks_t[:, :context], lat, steps=steps, generator=g)[:, context:]  # (M, h, N)
    gen_r = dyn.rollout(toks_t[:, :context], rnd, steps=steps, generator=g)[:, context:]

    def frames(tokens):  # (M, h, N) -> (M, h, 3, H, W)
        return torch.stack([to_tensor(decode_tokens(tok, t.cpu())) for t in tokens])

    pi, pr, pt = (psnr(frames(t), real).mean(0).numpy() for t in (gen_i, gen_r, toks_t[:, context:]))
    return {"psnr_inferred": pi, "psnr_random": pr, "psnr_tokenizer": pt, "delta_psnr": float(pi[-1] - pr[-1]),
            "horizon": horizon, "samples": len(toks)}


# ---------------------------------------------------------------------------------------------------- all
def train_all(cfg: GenieConfig) -> dict:
    """Data, tokenizer, LAM, dynamics and every evaluation; returns the models, histories and metrics."""
    cfg = fill(cfg)
    data = load_episodes(cfg)
    tok, tok_hist = train_tokenizer(cfg, data)
    lam, lam_hist = train_lam(cfg, data)
    tok_data = {k: tokenize_episodes(tok, lam, v) for k, v in data.items()}
    tok_data["vocab"] = tok.vocab
    dyn, dyn_hist = train_dynamics(cfg, tok_data)
    return {"cfg": cfg, "data": data, "tok_data": tok_data, "tokenizer": tok, "lam": lam, "dynamics": dyn,
            "history": {"tokenizer": tok_hist, "lam": lam_hist, "dynamics": dyn_hist}}


def load_models(run_dir: str | Path, device: str | None = None
                ) -> tuple[VideoTokenizer, LatentActionModel, DynamicsModel, GenieConfig]:
    """The three trained models of a run folder (written by the trainers above)."""
    from wmkit.checkpoint import load_meta
    from wmkit.config import from_dict

    run_dir = Path(run_dir)
    meta = load_meta(run_dir / "dynamics" / "ckpt" / "latest")
    # a run folder written before a switch existed was trained with the switch's old behaviour, not the profile's
    before = {"tok_encoder": "st", "lam_out_norm": "none", "dyn_token_context": 1, "dyn_prev_window": 1}
    cfg = fill(from_dict(GenieConfig, {**before, **meta["config"]}))
    tok = VideoTokenizer(tokenizer_config(cfg))
    lam = LatentActionModel(lam_config(cfg))
    tok.load_state_dict(load_state(run_dir / "tokenizer" / "ckpt" / "latest")["model"])
    lam.load_state_dict(load_state(run_dir / "lam" / "ckpt" / "latest")["model"])
    g = tok.grid
    dyn = DynamicsModel(dynamics_config(cfg, tok.vocab, g))
    dyn.load_state_dict(load_state(run_dir / "dynamics" / "ckpt" / "latest")["model"])
    dev = torch.device(device or pick_device())
    return tok.to(dev).eval(), lam.to(dev).eval(), dyn.to(dev).eval(), cfg
