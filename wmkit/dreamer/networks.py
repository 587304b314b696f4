"""DreamerV3 networks (Hafner et al. 2023, Sec. 2 and Appendix "Model sizes").

* ``Encoder``   -- 64x64 images through a 4-stage CNN down to 4x4 -- 2023 (v1 ``resize: stride``): kernel
                   4 stride 2, channels d, 2d, 4d, 8d; current code (``rssm.Encoder``): kernel 5 stride 1 +
                   2x2 max-pool, channels d x (2, 3, 4, 4) -- and vectors through an MLP on ``symlog``
                   inputs; outputs one embedding per time step.
* ``Decoder``   -- 2023: the mirror image (transposed CNN, MSE on [-0.5, 0.5]); current code: h through a
                   block-linear map (``bspace: 8``) plus z through a 2-layer map onto the 4x4 grid, then
                   nearest 2x upsampling + kernel-5 convs, sigmoid output (MSE on [0, 1]). MLP for vectors
                   (symlog MSE) in both.
* ``TwoHotHead``-- reward and critic: 255 logits over bins, trained with two-hot cross-entropy,
                   output layer initialised to zero (the first predictions are exactly 0).
* ``MLP``       -- Linear -> LayerNorm/RMSNorm -> SiLU, ``layers`` times. ``bias``: the Linear has a bias
                   (current code: ``nets.Linear(bias=True)``) or not (2023: v1 ``Linear`` drops the bias
                   whenever a norm follows, ``bias and norm == 'none'``); the same switch for every
                   hidden conv and linear layer that a norm follows (``DreamerConfig.hidden_bias``).
* ``Actor``     -- categorical (1% unimix in 2023, none in the current code) for discrete actions,
                   bounded Gaussian for continuous ones.
"""

from __future__ import annotations

import torch
from torch import nn

from wmkit.dreamer.math import symexp, symlog, twohot_bins, twohot_parts


def gumbel_noise(shape: tuple, gen: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise: argmax(log p + g) is a sample from p (the Gumbel-max trick)."""
    u = torch.rand(shape, generator=gen, device=device).clamp_(1e-20, 1.0)
    return -torch.log(-torch.log(u))


def softmax(x: torch.Tensor) -> torch.Tensor:
    """``x.softmax(-1)``. On CPU, PyTorch's kernel is ~10x slower per row for a last axis shorter than
    16 (measured with AVX-512: 8 latent classes, 5 actions), so there the explicit formula is used."""
    if x.is_cpu and x.shape[-1] < 16:
        e = (x - x.amax(-1, keepdim=True)).exp()
        return e / e.sum(-1, keepdim=True)
    return x.softmax(-1)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh``; on CPU computed as 2 sigmoid(2x) - 1, which measured 3x faster there."""
    return 2.0 * torch.sigmoid(2.0 * x) - 1.0 if x.is_cpu else torch.tanh(x)


def make_norm(kind: str, dim: int) -> nn.Module:
    """LayerNorm (2023) or RMSNorm (2025), with the official code's epsilons."""
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-3)
    if kind == "rms":
        return nn.RMSNorm(dim, eps=1e-4)
    raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")


class MLP(nn.Module):
    """``layers`` x (Linear -> norm -> SiLU). ``symlog_inputs`` squashes raw vectors first; ``bias``: the
    Linear layers carry a bias (current code) or not (2023 code)."""

    def __init__(self, in_dim: int, units: int, layers: int, norm: str, symlog_inputs: bool = False,
                 bias: bool = False):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(in_dim if i == 0 else units, units, bias=bias), make_norm(norm, units),
                     nn.SiLU()]
        self.net = nn.Sequential(*mods)
        self.symlog_inputs = symlog_inputs
        self.out_dim = units if layers else in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(symlog(x) if self.symlog_inputs else x)


def image_to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-0.5, 0.5]; float input is taken as already converted."""
    if img.dtype == torch.uint8:
        return img.float().mul_(1 / 255.0).sub_(0.5)
    return img


class ChannelNorm(nn.Module):
    """Normalise over the channel axis of an NCHW map (the official code normalises channels-last)."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.norm = make_norm(kind, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Encoder(nn.Module):
    """Observation dict -> embedding (..., E). Image: uint8 (..., 64, 64, 3); vector: float (..., D)."""

    def __init__(self, obs_space: dict, depth: int, units: int, layers: int, norm: str, cnn: str = "2023",
                 bias: bool = False):
        super().__init__()
        self.has_image, self.has_vector = "image" in obs_space, "vector" in obs_space
        self.out_dim = 0
        if self.has_image:
            mods = []
            if cnn == "2023":
                chans = [3, depth, 2 * depth, 4 * depth, 8 * depth]
                for cin, cout in zip(chans[:-1], chans[1:]):   # 64 -> 32 -> 16 -> 8 -> 4
                    mods += [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), ChannelNorm(norm, cout), nn.SiLU()]
            elif cnn == "2025":   # official: Conv2D(depth, 5) -> reshape-max over 2x2 -> norm -> act
                chans = [3, *(depth * m for m in (2, 3, 4, 4))]
                for cin, cout in zip(chans[:-1], chans[1:]):   # 64 -> 32 -> 16 -> 8 -> 4
                    mods += [nn.Conv2d(cin, cout, 5, 1, 2, bias=bias), nn.MaxPool2d(2), ChannelNorm(norm, cout),
                             nn.SiLU()]
            else:
                raise ValueError(f"cnn must be '2023' or '2025', got {cnn!r}")
            self.cnn = nn.Sequential(*mods)
            self.out_dim += chans[-1] * 4 * 4
        if self.has_vector:
            self.mlp = MLP(obs_space["vector"][0][0], units, layers, norm, symlog_inputs=True, bias=bias)
            self.out_dim += self.mlp.out_dim

    def forward(self, obs: dict) -> torch.Tensor:
        outs = []
        if self.has_image:
            img = image_to_float(obs["image"])                        # (..., 64, 64, 3) in [-0.5, 0.5]
            lead = img.shape[:-3]
            # NHWC memory seen as NCHW ("channels_last"): the fast layout for CPU (oneDNN) and GPU convs
            x = img.reshape(-1, 64, 64, 3).permute(0, 3, 1, 2)        # (N, 3, 64, 64)
            outs.append(self.cnn(x).permute(0, 2, 3, 1).reshape(*lead, -1))   # (..., 4*4*8d)
        if self.has_vector:
            outs.append(self.mlp(obs["vector"]))                     # (..., units)
        return torch.cat(outs, -1) if len(outs) > 1 else outs[0]


class Decoder(nn.Module):
    """Features (..., F) -> {"image": (..., 64, 64, 3) centred at 0, "vector": symlog(vector)}."""

    def __init__(self, obs_space: dict, feat_dim: int, depth: int, units: int, layers: int, norm: str,
                 cnn: str = "2023", deter: int = 0, bspace: int = 8, bias: bool = False):
        super().__init__()
        self.has_image, self.has_vector = "image" in obs_space, "vector" in obs_space
        self.depth, self.kind, self.deter, self.bspace = depth, cnn, deter, bspace
        if self.has_image and cnn == "2025":
            from wmkit.dreamer.rssm import BlockLinear
            d = [depth * m for m in (2, 3, 4, 4)]
            self.top = d[-1]
            self.sp0 = BlockLinear(deter, 16 * self.top, bspace, bias=bias)      # h -> (g, 4, 4, top/g)
            self.sp1 = nn.Sequential(nn.Linear(feat_dim - deter, 2 * units, bias=bias), make_norm(norm, 2 * units),
                                     nn.SiLU(), nn.Linear(2 * units, 16 * self.top, bias=bias))  # z -> (4, 4, top)
            self.sp_norm = make_norm(norm, self.top)
            mods = []
            for cin, cout in ((d[3], d[2]), (d[2], d[1]), (d[1], d[0])):          # 4 -> 8 -> 16 -> 32
                mods += [nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 5, 1, 2, bias=bias), ChannelNorm(norm, cout),
                         nn.SiLU()]
            mods += [nn.Upsample(scale_factor=2), nn.Conv2d(d[0], 3, 5, 1, 2)]   # 32 -> 64
            self.cnn = nn.Sequential(*mods)
        elif self.has_image:
            self.img_in = nn.Linear(feat_dim, 8 * depth * 4 * 4)
            chans, mods = [8 * depth, 4 * depth, 2 * depth, depth], []
            for cin, cout in zip(chans[:-1], chans[1:]):              # 4 -> 8 -> 16 -> 32
                mods += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias), ChannelNorm(norm, cout),
                         nn.SiLU()]
            mods += [nn.ConvTranspose2d(depth, 3, 4, 2, 1)]           # 32 -> 64
            self.cnn = nn.Sequential(*mods)
        if self.has_vector:
            self.mlp = MLP(feat_dim, units, layers, norm, bias=bias)
            self.vec_out = nn.Linear(self.mlp.out_dim, obs_space["vector"][0][0])
        self.symlog_vector = True   # False only in the no_symlog_twohot ablation: plain MSE on raw vectors

    def forward(self, feat: torch.Tensor) -> dict:
        out = {}
        lead = feat.shape[:-1]
        if self.has_image and self.kind == "2025":
            f = feat.reshape(-1, feat.shape[-1])
            g, c = self.bspace, self.top // self.bspace
            x0 = self.sp0(f[:, :self.deter]).reshape(-1, g, 4, 4, c)                     # (N, g, 4, 4, c)
            x0 = x0.permute(0, 2, 3, 1, 4).reshape(-1, 4, 4, self.top)                   # (N, 4, 4, g*c)
            x1 = self.sp1(f[:, self.deter:]).reshape(-1, 4, 4, self.top)                 # (N, 4, 4, top)
            x = nn.functional.silu(self.sp_norm(x0 + x1)).permute(0, 3, 1, 2)           # (N, top, 4, 4)
            img = torch.sigmoid(self.cnn(x)) - 0.5      # official: sigmoid, MSE on [0, 1]; shifted the same
            out["image"] = img.permute(0, 2, 3, 1).reshape(*lead, 64, 64, 3)             # (..., 64, 64, 3)
        elif self.has_image:
            x = self.img_in(feat.reshape(-1, feat.shape[-1]))
            x = x.reshape(-1, 4, 4, 8 * self.depth).permute(0, 3, 1, 2)   # (N, 8d, 4, 4) channels_last
            out["image"] = self.cnn(x).permute(0, 2, 3, 1).reshape(*lead, 64, 64, 3)   # (..., 64, 64, 3)
        if self.has_vector:
            out["vector"] = self.vec_out(self.mlp(feat))             # (..., D) in symlog space
        return out

    # [eq:decoder_loss]
    def loss(self, pred: dict, obs: dict) -> torch.Tensor:
        """Sum of squared errors per step: image in [-0.5, 0.5], vector in symlog space. -> (...)"""
        total = 0.0
        if self.has_image:
            diff = pred["image"] - image_to_float(obs["image"])      # (..., 64, 64, 3)
            total = total + (diff * diff).sum((-3, -2, -1))
        if self.has_vector:
            target = symlog(obs["vector"]) if self.symlog_vector else obs["vector"]   # (..., D)
            total = total + (pred["vector"] - target).square().sum(-1)
        return total
    # [/eq:decoder_loss]

    def vector_mean(self, pred: dict) -> torch.Tensor:
        """The decoded vector in raw observation space (undo symlog unless ablated). -> (..., D)"""
        return symexp(pred["vector"]) if self.symlog_vector else pred["vector"]


class TwoHotHead(nn.Module):
    """MLP -> ``num_bins`` logits. Reward and critic (Eq. 11). Output layer zero-initialised."""

    def __init__(self, in_dim: int, units: int, layers: int, norm: str, num_bins: int, space: str,
                 bias: bool = False):
        super().__init__()
        self.mlp = MLP(in_dim, units, layers, norm, bias=bias)
        self.out = nn.Linear(self.mlp.out_dim, num_bins)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.space = space
        self.register_buffer("bins", twohot_bins("2023" if space == "symlog" else "2025", num_bins),
                             persistent=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(feat))                               # (..., K) logits

    # [eq:twohot_head]
    def pred(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected value in raw space: symexp(E[bin]) (2023) or E[bin] (2025). -> (...)"""
        wb = logits.float().softmax(-1) * self.bins                            # (..., K)
        m = wb.shape[-1] // 2   # add mirrored bins in pairs: a uniform distribution gives exactly 0
        mean = (wb[..., :m].flip(-1) + wb[..., -m:]).sum(-1)
        if wb.shape[-1] % 2:
            mean = mean + wb[..., m]
        return symexp(mean) if self.space == "symlog" else mean

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the two-hot encoding of ``target`` (raw space). -> (...)

        Equal to ``-(twohot(y, bins) * log_softmax(logits)).sum(-1)``; only the two non-zero terms
        are gathered, so no (..., K) target is built.
        """
        y = symlog(target) if self.space == "symlog" else target
        below, above, w_lo, w_hi = twohot_parts(y.detach(), self.bins)
        logp = logits.float().log_softmax(-1)                         # (..., K) fp32 also under bf16
        return -(w_lo * logp.gather(-1, below.unsqueeze(-1)).squeeze(-1)
                 + w_hi * logp.gather(-1, above.unsqueeze(-1)).squeeze(-1))
    # [/eq:twohot_head]


class Actor(nn.Module):
    """Policy head. Discrete: logits with 1% unimix. Continuous: tanh mean, std in [min_std, max_std]."""

    def __init__(self, in_dim: int, n: int, discrete: bool, units: int, layers: int, norm: str,
                 unimix: float, min_std: float, max_std: float, bias: bool = False):
        super().__init__()
        self.mlp = MLP(in_dim, units, layers, norm, bias=bias)
        self.out = nn.Linear(self.mlp.out_dim, n if discrete else 2 * n)
        self.n, self.discrete, self.unimix = n, discrete, unimix
        self.min_std, self.max_std = min_std, max_std

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Discrete: (log-probs after unimix (..., n), None). Continuous: (mean, std), each (..., n)."""
        x = self.out(self.mlp(feat)).float()
        if self.discrete:
            if self.unimix == 0:   # current code: a plain categorical
                return x.log_softmax(-1), None
            probs = (1 - self.unimix) * softmax(x) + self.unimix / self.n
            return probs.log(), None
        mean, std = x.chunk(2, -1)
        std = (self.max_std - self.min_std) * torch.sigmoid(std + 2.0) + self.min_std
        return tanh(mean), std

    def noise(self, shape: tuple, gen: torch.Generator | None, device) -> torch.Tensor:
        """Noise for ``sample``: Gumbel (discrete) or standard normal (continuous), (*shape, n)."""
        if self.discrete:
            return gumbel_noise((*shape, self.n), gen, device)
        return torch.randn((*shape, self.n), generator=gen, device=device)

    def sample(self, dist: tuple, noise: torch.Tensor | None, mode: bool = False) -> torch.Tensor:
        """One-hot (..., n) float or a Gaussian sample (..., n) (not clipped; the env clips)."""
        a, b = dist
        if self.discrete:
            idx = a.argmax(-1, keepdim=True) if mode else (a + noise).argmax(-1, keepdim=True)
            return torch.zeros_like(a).scatter_(-1, idx, 1.0)
        return a if mode else a + b * noise

    def log_prob_entropy(self, dist: tuple, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = dist
        if self.discrete:
            return (a * action).sum(-1), -(a.exp() * a).sum(-1)
        logp = (-0.5 * ((action - a) / b).square() - b.log() - 0.9189385332046727).sum(-1)
        return logp, (0.5 + 0.9189385332046727 + b.log()).sum(-1)


def mlp_head(in_dim: int, units: int, layers: int, norm: str, out: int, bias: bool = False) -> nn.Sequential:
    """MLP followed by a linear output (the continue head: one Bernoulli logit)."""
    mlp = MLP(in_dim, units, layers, norm, bias=bias)
    return nn.Sequential(mlp, nn.Linear(mlp.out_dim, out))
