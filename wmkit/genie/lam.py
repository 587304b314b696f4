"""Genie's latent action model (LAM): discrete actions learned from video alone.

Bruce et al. 2024 (arXiv:2402.15391), section 2.1 "Latent Action Model" and figure 5. An encoder reads frames
x_{1:t+1} and emits a continuous latent a~_t for each transition; a VQ bottleneck with a tiny codebook
(|A| = 8) makes it one of 8 discrete actions; a decoder sees only the past frames x_{1:t} and a~_{1:t} and must
predict x_{t+1}. With 3 bits per transition the decoder cannot copy the future, so the code is forced to carry
*what changed* -- the controllable part. Genie trains it on pixels (patch 16) with the VQ-VAE objective:

    L_LAM = ||x_{t+1} - x_hat_{t+1}||^2 + ||sg[a_e] - e||^2 + beta ||a_e - sg[e]||^2                   (LAM)

Layout as in the Jafar re-implementation (FLAIROx/jafar, models/lam.py): a learned "action" token is prepended
to every frame's patches; the encoder is a causal ST-transformer, and the action-token output at frame t+1 (which
has seen x_{1:t+1}) is a~_t; the decoder adds a projection of the quantized a~_t to every token of frame t.

Collapse -- every transition mapped to one code -- is the known failure of public re-implementations (the decoder
first learns "next frame = this frame", codes that lose the nearest-code competition never get a gradient). The
switches that fight it, all measurable through :func:`code_usage` and :func:`confusion`:

* ``predict_delta`` -- the decoder predicts x_{t+1} - x_t (added to x_t) instead of x_{t+1}: a small decoder spends
  most of its loss re-drawing the unchanged frame, and the part the action explains (here: the view scrolling one
  tile) is a small share of the gradient; with the copy given for free it is nearly all of it. Not in Genie;
* ``restart_after`` -- dead-code restarts in :class:`~wmkit.genie.tokenizer.VectorQuantizer` (Jafar: 50 steps);
* ``decoder_mask`` -- hide this fraction of the decoder's input patches after the first frame behind a mask token
  (tinyworlds hides all of them), so the action has to carry more of the next frame;
* ``var_weight`` -- tinyworlds' batch-variance penalty: push the spread of the encoder outputs across the batch
  above ``var_target`` so that they cannot all sit on one code;
* cosine (l2-normalised) codes, which keep all codes on the unit sphere near the encoder's outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from wmkit.genie.st_transformer import FullTransformer, STTransformer
from wmkit.genie.tokenizer import FSQ, VectorQuantizer, usage_stats
from wmkit.nn import block_causal_mask, patchify, precise_batchnorm, sincos_2d, unpatchify

__all__ = ["LAMConfig", "LatentActionModel", "code_usage", "confusion", "recalibrate_out_norm"]


@dataclass
class LAMConfig:
    """Sizes and anti-collapse switches of the latent action model."""

    frame_size: int = 64
    """Frame height = width in pixels."""
    patch: int = 16
    """Patch size (Genie's LAM: 16), in pixels of the LAM's own input resolution ``lam_size``."""
    lam_size: int = 0
    """Resolution the LAM works at: frames are area-downsampled to lam_size x lam_size (0 = frame_size, Genie)."""
    dim: int = 128
    """Transformer width."""
    enc_depth: int = 2
    """ST blocks in the encoder."""
    dec_depth: int = 2
    """ST blocks in the decoder."""
    heads: int = 4
    """Attention heads."""
    num_actions: int = 8
    """Codebook size |A| (Genie: 8)."""
    quantizer: str = "vq"
    """'vq' (Genie: a codebook of num_actions codes) or 'fsq' (tinyworlds: log2(num_actions) channels of 2 levels)."""
    code_dim: int = 32
    """Dimension of a latent action code (Genie: 32)."""
    beta: float = 0.25
    """Commitment weight of the VQ loss."""
    restart_after: int = 50
    """Restart a code unused for this many consecutive steps (0 = never; Jafar: 50)."""
    decoder_mask: float = 0.0
    """Fraction of decoder input patches after the first frame replaced by a mask token (0 = Genie)."""
    predict_delta: bool = True
    """Decoder predicts x_{t+1} - x_t and adds x_t (wmkit; False = Genie: it predicts x_{t+1} through a sigmoid)."""
    var_weight: float = 0.0
    """Weight of the batch-variance penalty relu(var_target - Var_batch(a_e)) (0 = Genie; tinyworlds: 100)."""
    var_target: float = 0.01
    """Per-dimension batch variance of the (unit-norm) encoder outputs below which the penalty acts."""
    max_frames: int = 16
    """Longest clip."""
    patch_context: int = 1
    """Each input token holds its patch and its neighbours': a (patch_context x patch_context)-patch window centred on
    it (1 = Genie: the patch alone; 3: its 8 neighbours too, zeros past the border). A one-tile scroll then maps a
    token's input to one of its neighbours' -- a choice an MLP makes per token -- instead of a move the attention has
    to learn from positions (measured: with patch_context=1 the decoder, given the true motion, needed hundreds of
    steps to draw a scroll)."""
    enc_correlation: bool = False
    """Append to each encoder token of frame t+1 the similarity -mean((patch_{t+1} - patch'_t)^2) of its patch to the
    3 x 3 patches around it in frame t (a local cost volume, as optical-flow networks build; not in Genie). Measured:
    without it the encoder, even trained *supervised* on the motion label, did not learn to see a one-tile scroll."""
    corr_temperature: float = 0.0
    """0: the cost volume holds the raw similarities -mean((patch_{t+1} - patch'_t)^2). > 0: softmax over each token's 9
    offsets at this temperature -- "which neighbour does this patch match", the same whether the frame changed a lot
    or a little (measured on held-out Crafter: a nearest-class-mean readout of the motion from the token-averaged
    volume is right for 38-65 % of each scroll direction raw, 96-100 % with softmax at 0.001-0.003)."""
    enc_patches: bool = True
    """Encoder tokens hold the pixels of their patch (True = Genie). False (needs ``enc_correlation``): they hold only
    the 3 x 3 cost volume, so the code can depend on *how the frame moved* and not on *what it shows* -- a code
    cannot then be "this picture" (grass, water, night), only "this motion" (not in Genie)."""
    enc_flow_token: bool = False
    """Add to the action token's input the cost volume averaged over all patches (needs ``enc_correlation``): a
    9-bin histogram of "which neighbour did the patches match", i.e. the frame's 2-D displacement, read by the token
    that becomes the latent action before any attention pools it (False = Genie's learned constant token; not in
    Genie)."""
    enc_attention: str = "st"
    """Encoder attention: 'st' (Genie: spatial, then causal temporal at each position -- a patch of frame t+1 meets
    only the *same* position of frame t, so a shift shows only after spatial layers have moved the neighbours' content
    there) or 'full' (block-causal attention over all tokens of the clip: a patch of x_{t+1} can find its match
    anywhere in x_t in one layer, content-based, and read the match's position -- the displacement)."""
    out_norm: str = "none"
    """'none' (Genie) or 'batch': standardise each dimension of the encoder output a_e over the batch (a BatchNorm
    without scale and shift) before the quantizer. Measured on the cpu recording: at initialisation a_e is a shared
    constant plus a small part that depends on the motion (a nearest-class-mean readout finds all five motions in it,
    93-100 %), too small for the decoder to tell apart; training then folded right, up and down onto the other codes
    (readout 0 %, even with no quantizer at all). Standardising removes the constant and scales up the part that
    varies. Evaluation uses statistics re-estimated after training (:func:`recalibrate_out_norm`). Not in Genie."""
    enc_positions: str = "learned"
    """Encoder positions of the patch tokens: 'sincos' (fixed 2-D table, as Jafar's sin-cos) or 'learned' (a table
    initialised at std 0.02; with it the encoder starts blind to where a patch is, so it cannot tell a left scroll
    from a right one)."""


class LatentActionModel(nn.Module):
    """frames (B, T, 3, H, W) -> latent actions (B, T-1) in [0, |A|) and a prediction of frames 2..T."""

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.size = cfg.lam_size or cfg.frame_size
        if self.size % cfg.patch or cfg.frame_size % self.size:
            raise ValueError(f"LAM: lam_size={self.size} must divide frame_size={cfg.frame_size} and be divisible by "
                             f"patch={cfg.patch}")
        self.cfg = cfg
        g = self.size // cfg.patch
        self.num_patches = g * g
        if cfg.patch_context < 1 or cfg.patch_context % 2 == 0:
            raise ValueError(f"LAM patch_context: expected an odd number >= 1, got {cfg.patch_context}")
        pdim = 3 * (cfg.patch * cfg.patch_context) ** 2  # values per input token
        if cfg.corr_temperature < 0:
            raise ValueError(f"LAM corr_temperature: expected >= 0, got {cfg.corr_temperature}")
        if not cfg.enc_patches and not cfg.enc_correlation:
            raise ValueError("LAM enc_patches=False leaves the encoder no input: it needs enc_correlation=True")
        if cfg.enc_flow_token and not cfg.enc_correlation:
            raise ValueError("LAM enc_flow_token=True averages the cost volume: it needs enc_correlation=True")
        enc_in = (pdim if cfg.enc_patches else 0) + (9 if cfg.enc_correlation else 0)  # pixels + 3 x 3 cost volume
        self.action_in = nn.Parameter(torch.randn(enc_in) * 0.02)  # the learned action token's input
        # the encoder sees N + 1 tokens per frame (action token first): no 2-D grid table, a learned one instead
        if cfg.enc_attention not in ("st", "full"):
            raise ValueError(f"LAM enc_attention: expected 'st' or 'full', got {cfg.enc_attention!r}")
        Encoder = STTransformer if cfg.enc_attention == "st" else FullTransformer
        self.encoder = Encoder(cfg.dim, cfg.enc_depth, cfg.heads, None, cfg.max_frames, enc_in, cfg.code_dim)
        if cfg.enc_positions == "learned":
            self.enc_pos = nn.Parameter(torch.randn(self.num_patches + 1, cfg.dim) * 0.02)  # (N+1, D)
        elif cfg.enc_positions == "sincos":  # the action token (row 0) is told apart by its own learned input
            table = torch.cat([torch.zeros(1, cfg.dim), sincos_2d(g, g, cfg.dim)])  # (N+1, D)
            self.register_buffer("enc_pos", table, persistent=False)
        else:
            raise ValueError(f"LAM enc_positions: expected 'sincos' or 'learned', got {cfg.enc_positions!r}")
        if cfg.quantizer == "vq":
            self.vq = VectorQuantizer(cfg.num_actions, cfg.code_dim, cfg.beta, cosine=True,
                                      restart_after=cfg.restart_after)
            code_dim = cfg.code_dim
        elif cfg.quantizer == "fsq":
            bits = round(math.log2(cfg.num_actions))
            if 2**bits != cfg.num_actions:
                raise ValueError(f"LAM quantizer='fsq' needs num_actions = a power of 2, got {cfg.num_actions}")
            self.vq = FSQ((2,) * bits)
            code_dim = bits
        else:
            raise ValueError(f"LAM quantizer: expected 'vq' or 'fsq', got {cfg.quantizer!r}")
        self.encoder.out = nn.Linear(cfg.dim, code_dim)
        if cfg.out_norm == "batch":  # per-dimension (a_e - batch mean) / batch std; running statistics in eval mode
            self.out_norm = nn.BatchNorm1d(code_dim, affine=False)
        elif cfg.out_norm == "none":
            self.out_norm = None
        else:
            raise ValueError(f"LAM out_norm: expected 'none' or 'batch', got {cfg.out_norm!r}")
        self.action_up = nn.Linear(code_dim, cfg.dim)
        out_dim = 3 * cfg.patch * cfg.patch  # the decoder draws each token's own patch
        self.decoder = STTransformer(cfg.dim, cfg.dec_depth, cfg.heads, (g, g), cfg.max_frames, pdim, out_dim)
        self.mask_token = nn.Parameter(torch.zeros(cfg.dim))
        if cfg.predict_delta:  # start from "nothing moves" (x_hat_{t+1} = x_t) instead of x_t + noise
            nn.init.zeros_(self.decoder.out.weight)
            nn.init.zeros_(self.decoder.out.bias)

    def _check(self, frames: torch.Tensor) -> None:
        s = self.cfg.frame_size
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[-2:] != (s, s) or frames.shape[1] < 2:
            raise ValueError(f"frames: expected (B, T >= 2, 3, {s}, {s}) floats in [0, 1], got {tuple(frames.shape)}")

    def resize(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) at frame_size -> (B, T, 3, s, s) at the LAM's resolution (area averaging)."""
        if self.size == self.cfg.frame_size:
            return frames
        B = frames.shape[0]
        small = F.interpolate(frames.flatten(0, 1), size=(self.size, self.size), mode="area")  # (B*T, 3, s, s)
        return small.unflatten(0, (B, -1))

    def tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, s, s) -> (B, T, N, 3 (k p)^2): each patch with its k x k neighbourhood (k = patch_context)."""
        p, k = self.cfg.patch, self.cfg.patch_context
        if k == 1:
            return patchify(frames, p)  # (B, T, N, 3 p p)
        B = frames.shape[0]
        win = F.unfold(frames.flatten(0, 1), kernel_size=k * p, stride=p, padding=(k // 2) * p)  # (BT, 3(kp)^2, N)
        return rearrange(win, "(b t) c n -> b t n c", b=B)  # (B, T, N, 3 (k p)^2)

    def correlation(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, s, s) -> (B, T, N, 9): -mean squared difference between each patch of frame t and the 9 patches
        of frame t-1 at offsets (-1..1, -1..1) tiles around it (zeros past the border; all zeros at t = 0); with
        ``corr_temperature`` > 0 its softmax over the 9 offsets."""
        p = self.cfg.patch
        own = patchify(frames, p)  # (B, T, N, 3 p p)
        B, T = frames.shape[:2]
        win = F.unfold(frames[:, :-1].flatten(0, 1), kernel_size=3 * p, stride=p, padding=p)  # (B(T-1), 3 (3p)^2, N)
        sub = rearrange(win, "(b t) (c i p j q) n -> b t n (i j) (c p q)", b=B, c=3, i=3, p=p, j=3, q=p)
        d = -(own[:, 1:, :, None] - sub).pow(2).mean(-1)  # (B, T-1, N, 9)
        if self.cfg.corr_temperature > 0:  # which of the 9 neighbours matches, whatever the size of the change
            d = torch.softmax(d / self.cfg.corr_temperature, dim=-1)  # (B, T-1, N, 9), rows sum to 1
        return torch.cat([d.new_zeros(B, 1, *d.shape[2:]), d], dim=1)  # (B, T, N, 9)

    def encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (a_e (B, T-1, d) continuous, a_q (B, T-1, d) quantized, ids (B, T-1), vq loss)."""
        self._check(frames)
        frames = self.resize(frames)
        B, T = frames.shape[:2]
        feats = [self.tokens(frames)] if self.cfg.enc_patches else []  # (B, T, N, 3 (k p)^2)
        if self.cfg.enc_correlation:
            feats.append(self.correlation(frames))  # (B, T, N, 9)
        patches = torch.cat(feats, dim=-1)  # (B, T, N, C): C = 3 (k p)^2 [+ 9] or 9
        act = repeat(self.action_in, "c -> b t 1 c", b=B, t=T)  # (B, T, 1, C)
        if self.cfg.enc_flow_token:  # the token gets the frame's displacement histogram in its cost-volume slots
            act = act + F.pad(feats[-1].mean(2, keepdim=True), (act.shape[-1] - 9, 0))  # (B, T, 1, C)
        x = self.encoder.inp(torch.cat([act, patches], dim=2)) + self.enc_pos  # (B, T, N+1, D)
        x = self.encoder.add_positions(x)  # + temporal table
        if self.cfg.enc_attention == "full":  # every token sees every token of frames <= its own
            mask = block_causal_mask(T, x.shape[2], device=x.device)  # (T(N+1), T(N+1))
            x = rearrange(x, "b t n d -> b (t n) d")  # (B, T(N+1), D)
            for blk in self.encoder.blocks:
                x = blk(x, mask=mask)
            x = rearrange(x, "b (t n) d -> b t n d", t=T)  # (B, T, N+1, D)
        else:
            for blk in self.encoder.blocks:
                x = blk(x)  # (B, T, N+1, D): spatial, causal temporal, MLP
        a_e = self.encoder.out(self.encoder.norm(x[:, 1:, 0]))  # (B, T-1, d): action token of frames 2..T
        # [eq:lam-out-norm]
        if self.out_norm is not None:  # standardise each dimension over the batch's transitions
            a_e = self.out_norm(a_e.reshape(-1, a_e.shape[-1])).reshape(a_e.shape)  # (B, T-1, d)
        # [/eq:lam-out-norm]
        if isinstance(self.vq, FSQ):
            a_q, ids = self.vq(a_e)
            return a_e, a_q, ids, a_e.new_zeros(())
        a_q, ids, loss = self.vq(a_e)
        return a_e, a_q, ids, loss

    def decode(self, frames: torch.Tensor, a_q: torch.Tensor, mask_rate: float = 0.0) -> torch.Tensor:
        """Predict frames 2..T (at the LAM's resolution) from frames 1..T-1 and the quantized actions."""
        frames = self.resize(frames)
        s = self.size
        past = self.tokens(frames[:, :-1])  # (B, T-1, N, 3 (k p)^2)
        x = self.decoder.inp(past)  # (B, T-1, N, D)
        if mask_rate > 0:
            hide = torch.rand(x.shape[:3], device=x.device) < mask_rate  # (B, T-1, N)
            hide[:, 0] = False  # the first frame is always visible (the anchor)
            x = torch.where(hide[..., None], self.mask_token.to(x.dtype), x)
        x = x + self.action_up(a_q)[:, :, None, :]  # (B, T-1, N, D): a~_t added to every token of frame t
        x = self.decoder.add_positions(x)
        for blk in self.decoder.blocks:
            x = blk(x)
        out = self.decoder.out(self.decoder.norm(x))  # (B, T-1, N, 3 p p)
        if self.cfg.predict_delta:  # the copy x_t is free: the decoder only has to explain the change
            return frames[:, :-1] + unpatchify(out, self.cfg.patch, s, s)  # (B, T-1, 3, H, W)
        return unpatchify(torch.sigmoid(out), self.cfg.patch, s, s)  # (B, T-1, 3, H, W)

    def forward(self, frames: torch.Tensor, continuous: bool = False) -> dict[str, torch.Tensor]:
        """``continuous=True`` (a warm-up, ``GenieConfig.lam_continuous_warmup``; not in Genie): the decoder gets the
        unit-norm encoder output itself instead of its nearest code, so it first learns to draw what the encoder
        reports (a scroll); the codebook keeps learning (its VQ loss) and restarting on the encoder outputs, and takes
        over the clusters they formed when quantization starts."""
        a_e, a_q, ids, vq_loss = self.encode(frames)
        if continuous:
            a_q = F.normalize(a_e, dim=-1) if isinstance(self.vq, VectorQuantizer) and self.vq.cosine else a_e
        pred = self.decode(frames, a_q, self.cfg.decoder_mask if self.training else 0.0)
        target = self.resize(frames)[:, 1:]
        # [eq:lam-loss]
        mse = F.mse_loss(pred, target)
        loss = mse + vq_loss
        # [/eq:lam-loss]
        # [eq:lam-var]
        spread = F.normalize(a_e, dim=-1).reshape(-1, a_e.shape[-1]).var(0, unbiased=False).mean()  # batch variance
        if self.cfg.var_weight > 0:
            loss = loss + self.cfg.var_weight * F.relu(self.cfg.var_target - spread)
        # [/eq:lam-var]
        copy_mse = F.mse_loss(self.resize(frames)[:, :-1], target)  # "nothing moves": what the action must beat
        return {"loss": loss, "mse": mse, "vq_loss": vq_loss, "pred": pred, "actions": ids, "a_e": a_e,
                "spread": spread, "mse_over_copy": mse.detach() / copy_mse.clamp_min(1e-12)}

    @torch.no_grad()
    def infer_actions(self, frames: torch.Tensor) -> torch.Tensor:
        """Latent action ids (B, T-1) of a clip (the encoder only)."""
        was = self.training
        self.eval()
        ids = self.encode(frames)[2]
        self.train(was)
        return ids

    def code(self, ids: torch.Tensor) -> torch.Tensor:
        """Quantized code vectors (..., d) of action ids."""
        return self.vq.indices_to_codes(ids)


@torch.no_grad()
def recalibrate_out_norm(lam: LatentActionModel, batches) -> None:
    """Re-estimate the ``out_norm="batch"`` statistics as the plain average over ``batches`` (clips (B, T, 3, H, W))
    with the trained weights (:func:`wmkit.nn.precise_batchnorm`). Only the normalisation runs in training mode, so
    the quantizer neither counts usage nor restarts codes."""
    if lam.out_norm is None:
        return
    was = lam.training
    lam.eval()
    with precise_batchnorm([lam.out_norm]):
        for x in batches:
            lam.encode(x)
    lam.train(was)


def code_usage(ids: torch.Tensor | np.ndarray, num_actions: int) -> dict:
    """Per-code usage fractions, the number of live codes and the perplexity exp(H) of the code distribution."""
    s = usage_stats(torch.as_tensor(np.asarray(ids)), num_actions)
    return {"fraction": (s["counts"] / s["counts"].sum().clamp_min(1)).numpy(), "live": s["live"],
            "perplexity": s["perplexity"]}


def confusion(codes: np.ndarray, true_actions: np.ndarray, num_codes: int, num_true: int) -> np.ndarray:
    """Counts table (num_codes, num_true): row k, column a = transitions given code k whose real action was a."""
    codes, true_actions = np.asarray(codes).reshape(-1), np.asarray(true_actions).reshape(-1)
    if codes.shape != true_actions.shape:
        raise ValueError(f"codes and true_actions differ in length: {codes.shape} vs {true_actions.shape}")
    for name, v, n in (("codes", codes, num_codes), ("true_actions", true_actions, num_true)):
        if v.size and (v.min() < 0 or v.max() >= n):
            raise ValueError(f"{name}: expected ids in [0, {n}), got range [{v.min()}, {v.max()}]")
    table = np.zeros((num_codes, num_true), dtype=np.int64)
    np.add.at(table, (codes, true_actions), 1)
    return table
