"""DreamerV3 configuration: ONE set of hyperparameters for every environment (Hafner et al. 2023).

The paper's central claim (Sec. 1, Table "Hyperparameters" in Appendix) is that a single config --
the defaults below -- works from Atari to Crafter to DMC without tuning. Only the model SIZE changes
(``size``), and bigger is better and more data-efficient (Sec. "Scaling properties").

``recipe`` picks between the paper and its 2023 code (``"2023"``, arXiv:2301.04104 v1, danijar/dreamerv3
at c64680b) and the current official agent and published version (``"2025"``, ``dreamerv3/agent.py``,
``rssm.py``, ``configs.yaml``): KL dynamics scale 1.0 instead of 0.5, two-hot bins in raw space
(symexp-spaced) instead of symlog space, a replay value loss whose gradient also trains the world model,
one joint update, REINFORCE for every action space, ``contdisc``, a plain categorical actor, two prior
layers, one-layer reward/continue heads, the current CNNs, zeros instead of a learned initial state, the
LaProp optimiser with adaptive gradient clipping instead of Adam with global-norm clipping, and RMSNorm
instead of LayerNorm. Each difference is a field; fields left at ``None`` are filled from the recipe (and
the size preset) in ``__post_init__``. The replay's two switches of the current code are in the
training loop: ``TrainConfig.replay_online`` and ``TrainConfig.replay_context``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Named model sizes. ``tiny`` runs on 2 CPU cores; ``size3m`` is the ~3M preset of the benchmark;
#: ``xs``..``xl`` are the 2023 paper's table (8M..200M); ``size12m``..``size400m`` are the later
#: official presets (block GRU with 8 blocks). Parameter counts depend on the observation and action
#: spaces; ``wmkit.dreamer.agent.size_table()`` prints them for a 64x64 image and 17 actions.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(deter=128, hidden=64, stoch=8, classes=8, units=64, mlp_layers=1, cnn_depth=8, blocks=1),
    "size3m": dict(deter=256, hidden=256, stoch=16, classes=16, units=256, mlp_layers=2, cnn_depth=16,
                   blocks=1),
    # Paper (2023), Table "Model sizes" in the appendix: XS 8M, S 18M, M 37M, L 77M, XL 200M.
    "xs": dict(deter=256, hidden=256, stoch=32, classes=32, units=256, mlp_layers=1, cnn_depth=24, blocks=1),
    "s": dict(deter=512, hidden=512, stoch=32, classes=32, units=512, mlp_layers=2, cnn_depth=32, blocks=1),
    "m": dict(deter=1024, hidden=640, stoch=32, classes=32, units=640, mlp_layers=3, cnn_depth=48, blocks=1),
    "l": dict(deter=2048, hidden=768, stoch=32, classes=32, units=768, mlp_layers=4, cnn_depth=64, blocks=1),
    "xl": dict(deter=4096, hidden=1024, stoch=32, classes=32, units=1024, mlp_layers=5, cnn_depth=96,
               blocks=1),
    # Later official presets (dreamerv3 repository, 2024/2025): wide block-diagonal GRU, 3-layer MLPs.
    "size12m": dict(deter=2048, hidden=256, stoch=32, classes=16, units=256, mlp_layers=3, cnn_depth=16,
                    blocks=8),
    "size25m": dict(deter=3072, hidden=384, stoch=32, classes=24, units=384, mlp_layers=3, cnn_depth=24,
                    blocks=8),
    "size50m": dict(deter=4096, hidden=512, stoch=32, classes=32, units=512, mlp_layers=3, cnn_depth=32,
                    blocks=8),
    "size100m": dict(deter=6144, hidden=768, stoch=32, classes=48, units=768, mlp_layers=3, cnn_depth=48,
                     blocks=8),
    "size200m": dict(deter=8192, hidden=1024, stoch=32, classes=64, units=1024, mlp_layers=3, cnn_depth=64,
                     blocks=8),
    "size400m": dict(deter=12288, hidden=1536, stoch=32, classes=96, units=1536, mlp_layers=3,
                     cnn_depth=96, blocks=8),
}

#: What changes with ``recipe`` (fields left at None take these values).
# [recipes]
RECIPES: dict[str, dict] = {
    "2023": dict(dyn_scale=0.5, norm="layer", bins_space="symlog", optimizer="adam", repval_scale=0.0,
                 model_lr=1e-4, actor_lr=3e-5, critic_lr=3e-5, initial="learned", actor_grad_cont="backprop",
                 contdisc=False, repval_grad=False, actor_unimix=0.01, imglayers=1, joint_update=False,
                 cnn="2023", head_layers=None, hidden_bias=False),
    "2025": dict(dyn_scale=1.0, norm="rms", bins_space="symexp", optimizer="laprop", repval_scale=0.3,
                 model_lr=4e-5, actor_lr=4e-5, critic_lr=4e-5, initial="zeros", actor_grad_cont="reinforce",
                 contdisc=True, repval_grad=True, actor_unimix=0.0, imglayers=2, joint_update=True,
                 cnn="2025", head_layers=1, hidden_bias=True),
}
# [/recipes]


@dataclass
class DreamerConfig:
    """DreamerV3 agent: model size, recipe (2023 paper / 2025 official code) and the one fixed config."""

    recipe: Literal["2023", "2025"] = "2023"
    """Which DreamerV3: "2023" (the paper, arXiv v1) or "2025" (later official code / published version)."""
    size: str = "tiny"
    """Model size preset: tiny, size3m, xs, s, m, l, xl (2023 paper), size12m ... size400m (official)."""

    # ---- dimensions (None = from the size preset) ------------------------------------------------
    deter: int | None = None
    """GRU (deterministic state) units; None = from `size`."""
    hidden: int | None = None
    """Hidden units of the RSSM's input/prior/posterior layers; None = from `size`."""
    stoch: int | None = None
    """Number of categorical latent variables (32 in the paper); None = from `size`."""
    classes: int | None = None
    """Classes per categorical latent (32 in the paper); None = from `size`."""
    units: int | None = None
    """Hidden units of the MLPs (encoder/decoder for vectors, heads, actor, critic); None = from `size`."""
    mlp_layers: int | None = None
    """Hidden layers of each MLP; None = from `size`."""
    cnn_depth: int | None = None
    """Channels of the first CNN layer (doubles at each of the 4 stride-2 stages); None = from `size`."""
    blocks: int | None = None
    """Blocks of the block-diagonal GRU (1 = a plain GRU, the paper); None = from `size`."""
    head_layers: int | None = None
    """Hidden layers of the reward and continue heads: `mlp_layers` (2023: every MLP alike) / 1 (current
    code: ``rewhead``/``conhead`` ``layers: 1``)."""
    cnn: Literal["2023", "2025"] | None = None
    """Image encoder/decoder: "2023" (kernel 4 stride 2, channels d..8d, transposed-conv decoder) or "2025"
    (current code: kernel 5 + max-pool, channels d x (2, 3, 4, 4), block-linear + upsampling decoder)."""

    hidden_bias: bool | None = None
    """Every hidden linear/conv layer that a norm follows has a bias: False (2023: v1 ``nets.Linear`` and
    ``Conv2D`` keep a bias only without a norm, ``bias and norm == 'none'``) / True (current code:
    ``nets.Linear``, ``BlockLinear``, ``Conv2D`` default ``bias=True``, also before a norm)."""
    init: Literal["official", "torch"] = "official"
    """Weight initialisation: "official" = the recipe's initialiser (2023: ``winit: normal, fan: avg``,
    truncated normal with std sqrt(1/fan_avg), uniform fan-avg output layers; current code:
    ``trunc_normal_in``, truncated normal with std ~ sqrt(1/fan_in), output scales 0 for reward and value,
    0.01 for the policy), zero biases (``wmkit/dreamer/init.py``); "torch" = PyTorch's default
    (Kaiming-uniform; the reward and critic outputs are zero either way)."""

    # ---- world model (Sec. "World model learning") -----------------------------------------------
    unimix: float = 0.01
    """Mix 1% uniform into every latent categorical so no probability is ~0."""
    action_clip: float = 1.0
    """The RSSM sees a * sg(clip / max(clip, |a|)) in observe AND imagine steps (official 2023
    ``action_clip: 1.0``; the current code divides by sg(max(1, |a|)), the same map); 0 = off."""
    initial: Literal["learned", "zeros"] | None = None
    """Initial state (and the state after every is_first): "learned" h0 = tanh(w), z0 = mode of the
    prior (2023 code, ``initial: learned``) or zeros (current code); None = from the recipe."""
    imglayers: int | None = None
    """Hidden layers of the prior p(z | h): 1 (2023) / 2 (current code, ``imglayers: 2``)."""
    free_nats: float = 1.0
    """Free bits: each KL term (summed over latents) is clipped below at this many nats."""
    dyn_scale: float | None = None
    """beta_dyn: weight of KL(sg(post) || prior) that trains the prior; None = 0.5 (2023) / 1.0 (2025)."""
    rep_scale: float = 0.1
    """beta_rep: weight of KL(post || sg(prior)) that keeps the posterior predictable."""
    pred_scale: float = 1.0
    """beta_pred: weight of the decoder, reward and continue losses."""
    num_bins: int = 255
    """Bins of the two-hot reward and critic heads."""
    bins_space: Literal["symlog", "symexp"] | None = None
    """Two-hot bins evenly spaced in symlog space (2023) or symexp-spaced in raw space (2025)."""
    norm: Literal["layer", "rms"] | None = None
    """Normalisation after each linear/conv layer: LayerNorm (2023) or RMSNorm (2025)."""

    # ---- actor-critic in imagination (Sec. "Critic learning", "Actor learning") ------------------
    imag_horizon: int = 15
    """Imagination horizon H, started from every replayed posterior state."""
    discount_horizon: float = 333.0
    """gamma = 1 - 1/discount_horizon = 0.997."""
    lam: float = 0.95
    """lambda of the lambda-returns."""
    actor_entropy: float = 3e-4
    """eta: entropy regulariser of the actor (fixed, thanks to return normalisation)."""
    slow_critic_fraction: float = 0.02
    """EMA rate of the slow critic copy used as a regulariser target."""
    slowreg: float = 1.0
    """Weight of the critic's regulariser towards the slow critic's predictions."""
    repval_scale: float | None = None
    """Weight of the replay value loss (critic trained on replayed real trajectories); None = 0 (2023) /
    0.3 (2025)."""
    repval_grad: bool | None = None
    """Replay value loss also trains the world model (current code ``repval_grad: True``); needs
    ``joint_update``."""
    retnorm_rate: float = 0.01
    """EMA rate of the return percentiles (decay 0.99)."""
    retnorm_low: float = 5.0
    """Lower return percentile."""
    retnorm_high: float = 95.0
    """Upper return percentile."""
    retnorm_limit: float = 1.0
    """Floor of the return scale: returns are divided by max(limit, P95 - P5)."""
    actor_unimix: float | None = None
    """Uniform mix of the discrete actor: 0.01 (2023, ``actor.unimix``) / 0 (current code: a plain
    ``categorical`` policy head)."""
    actor_grad_cont: Literal["backprop", "reinforce"] | None = None
    """Actor gradient for continuous actions: back-propagation through the learned dynamics (2023,
    ``actor_grad_cont: backprop``) or REINFORCE (current code, ``ac_grads: False``). Discrete actions
    always use REINFORCE."""
    contdisc: bool | None = None
    """Current code's ``contdisc``: the continue target is (1 - terminal)(1 - 1/333), imagination uses
    discount 1 and the continue PROBABILITY (the discount lives in the continue head). 2023: the target
    is 1 - terminal, imagination uses gamma = 0.997 and the continue head's mode."""
    actor_min_std: float = 0.1
    """Continuous actions: minimum standard deviation of the Gaussian policy."""
    actor_max_std: float = 1.0
    """Continuous actions: maximum standard deviation of the Gaussian policy."""

    # ---- optimisation ----------------------------------------------------------------------------
    optimizer: Literal["adam", "laprop"] | None = None
    """Adam with global-norm clipping (2023) or LaProp with adaptive gradient clipping (2025)."""
    model_lr: float | None = None
    """World-model learning rate; None = 1e-4 (2023) / 4e-5 (2025)."""
    actor_lr: float | None = None
    """Actor learning rate; None = 3e-5 (2023) / 4e-5 (2025)."""
    critic_lr: float | None = None
    """Critic learning rate; None = 3e-5 (2023) / 4e-5 (2025)."""
    model_eps: float = 1e-8
    """Adam epsilon of the world model (2023)."""
    ac_eps: float = 1e-5
    """Adam epsilon of actor and critic (2023)."""
    model_clip: float = 1000.0
    """Global gradient-norm clip of the world model (2023)."""
    ac_clip: float = 100.0
    """Global gradient-norm clip of actor and critic (2023)."""
    laprop_eps: float = 1e-20
    """LaProp epsilon (2025)."""
    agc: float = 0.3
    """Adaptive gradient clipping: per tensor, |g| <= agc * max(|w|, 1e-3) (2025)."""
    warmup: int = 1000
    """Linear learning-rate warm-up in updates (2025)."""

    joint_update: bool | None = None
    """One backward pass through the sum of all losses, then every optimiser steps (current code: one
    optimiser over all modules, imagination with the pre-update world model). False = the 2023 order:
    world-model step first, then actor and critic on imagination with the updated world model."""

    # ---- engineering -----------------------------------------------------------------------------
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute precision of the update: fp32 (default; the exactness tests run in it) or bf16 autocast
    (the official code computes in bfloat16). Parameters and optimiser states stay fp32."""
    compile: bool = False
    """torch.compile the per-step RSSM/actor cells (helps on GPU; measure with `wmkit bench dreamer`)."""

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {list(SIZES)}")
        for k, v in SIZES[self.size].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        for k, v in RECIPES[self.recipe].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.head_layers is None:
            self.head_layers = self.mlp_layers
        if self.repval_grad and not self.joint_update:
            raise ValueError("repval_grad=True needs joint_update=True (the replay value loss must reach the "
                             "world model's backward pass)")
        if self.init not in ("official", "torch"):
            raise ValueError(f"init must be 'official' or 'torch', got {self.init!r}")
        if self.initial not in ("learned", "zeros"):
            raise ValueError(f"initial must be 'learned' or 'zeros', got {self.initial!r}")
        if self.actor_grad_cont not in ("backprop", "reinforce"):
            raise ValueError(f"actor_grad_cont must be 'backprop' or 'reinforce', got {self.actor_grad_cont!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.deter % self.blocks:
            raise ValueError(f"deter={self.deter} must be divisible by blocks={self.blocks}")

    @property
    def discount(self) -> float:
        """gamma = 1 - 1/333."""
        return 1.0 - 1.0 / self.discount_horizon

    def dims(self) -> str:
        """One-line summary of the model's dimensions (what the benchmark prints)."""
        return (f"deter={self.deter} hidden={self.hidden} stoch={self.stoch}x{self.classes} "
                f"units={self.units}x{self.mlp_layers} cnn_depth={self.cnn_depth} blocks={self.blocks}")
