"""Official weight initialisation of DreamerV3, for both recipes (``DreamerConfig.init="official"``).

The paper does not state its initialisers; they are in the code.

2023 (v1 ``dreamerv3/nets.py``, ``Initializer``; ``configs.yaml``: ``winit: normal, fan: avg`` for the RSSM,
encoder, decoder, heads, actor and critic):

    hidden layers   w ~ TN(-2, 2) * sqrt(1 / fan_avg) / 0.87962566      (std exactly sqrt(1 / fan_avg))
    output layers   w ~ U(-l, l),  l = sqrt(3 * outscale / fan_avg)       (std sqrt(outscale / fan_avg))

  TN(-2, 2) is a standard normal truncated at +-2 (its std is 0.87962566, hence the division), and
  fan_avg = (fan_in + fan_out) / 2, both times k*k for a conv. "Output layers" are those v1 builds without
  the config's ``winit`` (so with ``Linear``'s default ``winit='uniform'``): the RSSM's logit layers
  (``_stats``), every ``Dist`` head output (``outscale``: reward 0, critic 0 -> zeros; continue, actor and
  vector decoder 1), the image decoder's input ``Linear`` and its last transposed conv.

Current code (``embodied/jax/nets.py`` ``Initializer('trunc_normal', 'in')``; ``configs.yaml``:
``winit: trunc_normal_in`` everywhere):

    every layer     w ~ TN(-2, 2) * 1.1368 * sqrt(1 / fan_in) * outscale   (std ~ outscale / sqrt(fan_in))

  with ``outscale`` 0 for the reward and value heads (``rewhead``, ``value``), 0.01 for the policy, 1 for
  the rest (continue head, RSSM logits, decoder outputs).

Both: biases zero, norm scales one and shifts zero, the learned initial state w = 0. Fans follow the
official ``compute_fans``: a block-diagonal kernel (g, in/g, out/g) has fan_in = in, fan_out = out. Where
wmkit splits one official layer into several (the RSSM's input [z, a] in 2023 and the posterior's [h, e]
input: a Linear per part, summed), each part is drawn with the fans of the whole layer; the continuous
actor's single (mean, std) output layer is drawn as the official two separate layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wmkit.dreamer.rssm import BlockLinear

TN_STD = 0.87962566103423978   # std of a standard normal truncated to [-2, 2]

_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, BlockLinear)


def fans(layer: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out) of a layer's weight, as the official ``compute_fans``."""
    w = layer.weight
    if isinstance(layer, nn.Linear):
        return w.shape[1], w.shape[0]                                # (out, in)
    if isinstance(layer, nn.Conv2d):
        k = w.shape[2] * w.shape[3]
        return w.shape[1] * k, w.shape[0] * k                        # (out, in, k, k)
    if isinstance(layer, nn.ConvTranspose2d):
        k = w.shape[2] * w.shape[3]
        return w.shape[0] * k, w.shape[1] * k                        # (in, out, k, k)
    if isinstance(layer, BlockLinear):
        g = w.shape[0]
        return g * w.shape[1], g * w.shape[2]                        # (g, in/g, out/g)
    raise TypeError(f"no fans for {type(layer).__name__}")


# [eq:init]
@torch.no_grad()
def draw_(w: torch.Tensor, recipe: str, fan_in: int, fan_out: int, dist: str = "normal",
          scale: float = 1.0) -> None:
    """Fill ``w`` in place with the official initialiser of ``recipe``.

    2023: ``dist="normal"`` -> TN(-2, 2) sqrt(scale / fan_avg) / 0.8796; ``dist="uniform"`` -> U(+-sqrt(3 scale /
    fan_avg)). Current code ("2025"): TN(-2, 2) 1.1368 sqrt(1 / fan_in) scale (``dist`` is ignored).
    """
    if scale == 0.0:
        w.zero_()
        return
    if recipe == "2023":
        fan = (fan_in + fan_out) / 2
        if dist == "uniform":
            limit = math.sqrt(3 * scale / fan)
            w.uniform_(-limit, limit)
        elif dist == "normal":
            nn.init.trunc_normal_(w, 0.0, 1.0, -2.0, 2.0).mul_(math.sqrt(scale / fan) / TN_STD)
        else:
            raise ValueError(f"dist must be 'normal' or 'uniform', got {dist!r}")
    elif recipe == "2025":
        nn.init.trunc_normal_(w, 0.0, 1.0, -2.0, 2.0).mul_(1.1368 * math.sqrt(1 / fan_in) * scale)
    else:
        raise ValueError(f"recipe must be '2023' or '2025', got {recipe!r}")
# [/eq:init]


def _layer(layer: nn.Module, recipe: str, dist: str = "normal", scale: float = 1.0,
           fan: tuple[int, int] | None = None) -> None:
    fan_in, fan_out = fan or fans(layer)
    draw_(layer.weight, recipe, fan_in, fan_out, dist, scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _default(module: nn.Module, recipe: str) -> None:
    """Every layer with the hidden-layer rule, norms to (1, 0). Outputs are overwritten afterwards."""
    for m in module.modules():
        if isinstance(m, _LAYERS):
            _layer(m, recipe)
        elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def _last_layer(seq: nn.Module) -> nn.Module:
    return [m for m in seq.modules() if isinstance(m, _LAYERS)][-1]


@torch.no_grad()
def init_world_model_(wm: nn.Module, cfg) -> None:
    """Official initialisation of a ``WorldModel`` (encoder, RSSM, decoder, reward, continue)."""
    if any(p.is_meta for p in wm.parameters()):
        return                                           # size tables on the meta device: nothing to draw
    r = cfg.recipe
    out = "uniform" if r == "2023" else "normal"         # 2023: output layers use v1's default winit
    _default(wm, r)
    rssm = wm.rssm
    D, Hd = cfg.deter, cfg.hidden
    E = rssm.post_embed.in_features
    # one official layer split in two: draw each part with the fans of the whole
    _layer(rssm.post_deter, r, fan=(D + E, Hd))
    _layer(rssm.post_embed, r, fan=(D + E, Hd))
    if r == "2023":
        zin = rssm.in_stoch.in_features + rssm.in_act.in_features
        _layer(rssm.in_stoch, r, fan=(zin, Hd))
        _layer(rssm.in_act, r, fan=(zin, Hd))
    _layer(rssm.post_out, r, out)                        # v1 _stats / current _logit (outscale 1)
    _layer(_last_layer(rssm.prior), r, out)
    if rssm.learned_initial:
        nn.init.zeros_(rssm.initial_deter)
    dec = wm.decoder
    if dec.has_image:
        _layer(_last_layer(dec.cnn), r, out)             # image output (v1: kw = {}; current: outscale 1)
        if r == "2023" and hasattr(dec, "img_in"):
            _layer(dec.img_in, r, "uniform")             # v1 Linear((4, 4, 8d)) without the config's winit
    if dec.has_vector:
        _layer(dec.vec_out, r, out)                      # decoder outscale 1
    _layer(wm.reward.out, r, out, scale=0.0)             # reward outscale 0 (both codes)
    _layer(_last_layer(wm.cont), r, out)                 # continue outscale 1


@torch.no_grad()
def init_heads_(actor: nn.Module, critic: nn.Module, cfg) -> None:
    """Official initialisation of the actor and the critic."""
    r = cfg.recipe
    out = "uniform" if r == "2023" else "normal"
    _default(actor, r)
    _default(critic, r)
    _layer(critic.out, r, out, scale=0.0)                # critic / value outscale 0 (both codes)
    scale = 1.0 if r == "2023" else 0.01                 # v1 actor outscale 1.0; current policy 0.01
    lin = actor.out
    if actor.discrete:
        _layer(lin, r, out, scale)
    else:   # officially two layers (mean, std), each (in -> n): draw each half with its own fans
        n = actor.n
        for half in (lin.weight[:n], lin.weight[n:]):
            draw_(half, r, lin.in_features, n, out, scale)
        nn.init.zeros_(lin.bias)
