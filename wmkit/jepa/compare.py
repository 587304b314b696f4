"""Feature prediction vs generative world models on the same data and a matched training-FLOP budget.

The same Two-Rooms random-walk recordings train (a) V-JEPA (masked video feature prediction, :mod:`vjepa`),
(b) the action-conditioned JEPA (:mod:`ac`, EMA or SIGReg), and (c) DreamerV3's world model (stage 2,
:class:`wmkit.dreamer.agent.WorldModel`: RSSM + pixel decoder + reward/continue heads, imported). FLOPs of one
training step (forward + backward) are counted with ``torch.utils.flop_counter.FlopCounterMode``; each model then
gets as many steps as the budget buys. The probes of :mod:`probes` read the agent's position from each model's
features of held-out episodes: the V-JEPA / AC encoders' tokens of a single frame, Dreamer's posterior state
[h_t, z_t] (which has also seen the past frames and actions: a sequence model's advantage, noted in the book).

(d) Stage 3's Genie video tokenizer (:class:`wmkit.genie.tokenizer.VideoTokenizer`, a pixel-reconstructing
ST-transformer with FSQ codes, imported) gives its continuous codes per frame.

(e) Stage 3b's diffusion world model (:class:`wmkit.diffusion.EDM` on DIAMOND's U-Net
:class:`wmkit.diffusion.Denoiser`, imported): trained to denoise the next frame given K past frames and actions.
Its features of a frame are the U-Net's mid-block activations (the lowest resolution, after self-attention) while
it denoises that frame at a low noise level with the frame itself as the context: the "diffusion features" probed
by DIFT (Tang et al. 2023) and similar work, one token per mid-level pixel.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

__all__ = ["step_flops", "dreamer_world_model", "dreamer_batch", "train_dreamer_wm", "dreamer_features",
           "train_genie_tokenizer", "genie_features", "train_diffusion_wm", "diffusion_features"]


def step_flops(fn: Callable[[], torch.Tensor]) -> int:
    """FLOPs of ``fn()`` plus the backward pass of the scalar it returns (PyTorch's FLOP counter: matmuls, convs,
    attention; elementwise ops are not counted)."""
    with FlopCounterMode(display=False) as fc:
        loss = fn()
        loss.backward()
    return int(fc.get_total_flops())


def dreamer_world_model(size: str = "tiny", seed: int = 0):
    """DreamerV3's world model for 64x64 RGB frames and 2-D continuous actions."""
    from wmkit.dreamer.agent import WorldModel
    from wmkit.dreamer.config import DreamerConfig

    torch.manual_seed(seed)
    cfg = DreamerConfig(size=size)
    return WorldModel({"image": ((64, 64, 3), np.uint8)}, 2, cfg), cfg


def dreamer_batch(frames: np.ndarray, actions: np.ndarray) -> dict[str, torch.Tensor]:
    """Windows (B, L, S, S, 3) uint8 and actions (B, L-1, 2) -> Dreamer's format: 64x64 (nearest upsampling of the
    same pixels), action[t] = the action that led to frame t (zeros at t = 0), no rewards, no terminals."""
    B, L, S = frames.shape[:3]
    if 64 % S:
        raise ValueError(f"dreamer_batch: frame size {S} must divide 64")
    k = 64 // S
    img = np.repeat(np.repeat(frames, k, axis=2), k, axis=3)  # (B, L, 64, 64, 3)
    act = np.concatenate([np.zeros((B, 1, 2), np.float32), actions], 1)  # (B, L, 2)
    first = np.zeros((B, L), bool)
    first[:, 0] = True
    return {"image": torch.from_numpy(img), "action": torch.from_numpy(act), "reward": torch.zeros(B, L),
            "is_first": torch.from_numpy(first), "is_terminal": torch.zeros(B, L, dtype=torch.bool)}


def train_dreamer_wm(frames: np.ndarray, actions: np.ndarray, steps: int, batch: int, length: int, lr: float = 3e-4,
                     size: str = "tiny", seed: int = 0, progress: bool = True, snapshots: tuple[int, ...] = ()):
    """Train the world model alone (no actor/critic) on random windows; returns (wm, cfg, history, flops/step, s).

    ``snapshots``: step counts at which a copy of the weights and the training seconds so far are kept in
    ``history[-1]["snapshots"]`` ({steps: (state_dict, seconds)}); the learning rate is constant, so a snapshot at k
    steps is the model a k-step run trains."""
    if steps < 1 or batch < 1 or length < 2 or any(not 1 <= k <= steps for k in snapshots):
        raise ValueError(f"train_dreamer_wm: need steps >= 1, batch >= 1, length >= 2 and snapshots in [1, steps], "
                         f"got {steps}, {batch}, {length}, {snapshots}")
    wm, cfg = dreamer_world_model(size, seed)
    opt = torch.optim.Adam(wm.parameters(), lr=lr, eps=cfg.model_eps)
    g = torch.Generator().manual_seed(seed)
    E, T1 = frames.shape[:2]

    def batch_at():
        e = torch.randint(0, E, (batch,), generator=g).tolist()
        s = torch.randint(0, T1 - length + 1, (batch,), generator=g).tolist()
        return dreamer_batch(np.stack([frames[i, j:j + length] for i, j in zip(e, s, strict=True)]),
                             np.stack([actions[i, j:j + length - 1] for i, j in zip(e, s, strict=True)]))

    data = batch_at()
    flops = step_flops(lambda: wm.loss(data, cfg, g)[0])
    opt.zero_grad(set_to_none=True)
    history, t0, kept = [], time.perf_counter(), {}
    for step in tqdm(range(steps), desc="Dreamer WM", disable=not progress):
        loss, _, _, mets = wm.loss(batch_at(), cfg, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), cfg.model_clip)
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            history.append({"step": step, **{k: float(v.detach()) for k, v in mets.items()}})
        if step + 1 in snapshots:
            kept[step + 1] = ({k: v.detach().clone() for k, v in wm.state_dict().items()}, time.perf_counter() - t0)
    if snapshots:
        history[-1]["snapshots"] = kept
    return wm, cfg, history, flops, time.perf_counter() - t0


@torch.no_grad()
def dreamer_features(wm, cfg, frames: np.ndarray, actions: np.ndarray) -> torch.Tensor:
    """Posterior features [h_t, z_t] of whole episodes (E, T+1, S, S, 3) / (E, T, 2) -> (E, T+1, F)."""
    data = dreamer_batch(frames, actions)
    from wmkit.dreamer.networks import image_to_float

    data = {**data, "image": image_to_float(data["image"])}
    embed = wm.encoder(data)  # (E, T+1, Emb)
    out = wm.rssm.observe(embed, data["action"], data["is_first"], wm.rssm.initial(frames.shape[0], embed.device),
                          torch.Generator().manual_seed(0))
    return torch.cat([out["deter"], out["stoch"]], -1)  # (E, T+1, F)


def train_genie_tokenizer(frames: np.ndarray, steps: int, batch: int, length: int = 2, dim: int = 64, patch: int = 8,
                          lr: float = 3e-4, seed: int = 0, progress: bool = True):
    """Stage 3's tokenizer (reconstruction MSE through FSQ) on random ``length``-frame windows of ``frames``
    (E, T, S, S, 3) uint8; returns (tokenizer, history, flops per step, seconds)."""
    from wmkit.genie.tokenizer import TokenizerConfig, VideoTokenizer
    from wmkit.jepa.train import to_video

    torch.manual_seed(seed)
    tok = VideoTokenizer(TokenizerConfig(frame_size=frames.shape[2], patch=patch, dim=dim, enc_depth=2, dec_depth=2,
                                         heads=4, max_frames=max(2, length)))
    opt = torch.optim.AdamW(tok.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    video = to_video(frames)  # (E, T, 3, S, S)

    def batch_at():
        e = torch.randint(0, video.shape[0], (batch,), generator=g).tolist()
        s = torch.randint(0, video.shape[1] - length + 1, (batch,), generator=g).tolist()
        return torch.stack([video[i, j:j + length] for i, j in zip(e, s, strict=True)])

    x = batch_at()
    flops = step_flops(lambda: tok(x)["loss"])
    history, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc="Genie tokenizer", disable=not progress):
        out = tok(batch_at())
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            history.append({"step": step, "mse": float(out["mse"].detach())})
    return tok, history, flops, time.perf_counter() - t0


@torch.no_grad()
def genie_features(tok, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Continuous FSQ codes of single frames (M, 3, S, S) -> (M, N, q)."""
    return torch.cat([tok.quantize(frames[i:i + batch, None])[0][:, 0] for i in range(0, len(frames), batch)])


def train_diffusion_wm(frames: np.ndarray, actions: np.ndarray, steps: int, batch: int, context: int = 4,
                       channels: tuple[int, ...] = (32, 32, 32), depths: tuple[int, ...] = (1, 1, 1),
                       cond_channels: int = 128, lr: float = 3e-4, seed: int = 0, progress: bool = True):
    """DIAMOND's EDM recipe (stage 3b) on windows of K + 1 frames of ``frames`` (E, T+1, S, S, 3) uint8 with
    ``actions`` (E, T, 2): denoise frame K from frames 0..K-1 and their actions. Sizes default to stage 3b's cpu
    profile. Returns (recipe, history, flops per step, seconds)."""
    from wmkit.diffusion import EDM, Denoiser
    from wmkit.jepa.train import to_video

    torch.manual_seed(seed)
    model = EDM(Denoiser(None, context=context, channels=tuple(channels), depths=tuple(depths),
                         cond_channels=cond_channels, action_dim=actions.shape[-1]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-8)
    g = torch.Generator().manual_seed(seed)
    video, acts = to_video(frames) * 2 - 1, torch.from_numpy(actions).float()  # frames in [-1, 1] as DIAMOND

    def batch_at():
        e = torch.randint(0, video.shape[0], (batch,), generator=g).tolist()
        s = torch.randint(0, video.shape[1] - context, (batch,), generator=g).tolist()
        win = torch.stack([video[i, j:j + context + 1] for i, j in zip(e, s, strict=True)])  # (B, K+1, 3, S, S)
        act = torch.stack([acts[i, j:j + context] for i, j in zip(e, s, strict=True)])  # (B, K, 2)
        return win[:, :context], act, win[:, context]

    ctx, act, tgt = batch_at()
    flops = step_flops(lambda: model.loss(ctx, act, tgt, g)[0])
    opt.zero_grad(set_to_none=True)
    history, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc="diffusion WM", disable=not progress):
        loss, logs = model.loss(*batch_at(), generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            history.append({"step": step, "loss": logs["loss"]})
    return model, history, flops, time.perf_counter() - t0


@torch.no_grad()
def diffusion_features(model, frames: torch.Tensor, sigma: float = 0.1, batch: int = 256,
                       seed: int = 0) -> torch.Tensor:
    """Mid-block activations of the EDM U-Net denoising each frame (M, 3, S, S) in [0, 1] at noise level ``sigma``,
    with the frame itself as all K context frames and zero actions -> tokens (M, h * w, C)."""
    model.eval()
    got = []
    hook = model.net.unet.mid[-1].register_forward_hook(lambda _m, _i, out: got.append(out))
    g = torch.Generator().manual_seed(seed)
    K, A = model.net.context, model.net.action_dim
    try:
        for i in range(0, len(frames), batch):
            x = frames[i:i + batch] * 2 - 1  # (B, 3, S, S) in [-1, 1]
            ctx = x[:, None].expand(-1, K, -1, -1, -1)  # (B, K, 3, S, S)
            noisy = x + sigma * torch.randn(x.shape, generator=g)
            s = torch.full((x.shape[0],), sigma)
            model.raw(noisy, s, ctx, torch.zeros(x.shape[0], K, A), None)
    finally:
        hook.remove()
    return torch.cat([f.flatten(2).transpose(1, 2) for f in got])  # (M, h*w, C)
