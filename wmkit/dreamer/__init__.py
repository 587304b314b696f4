"""Stage 2: DreamerV3 (Hafner et al. 2023) -- world model, actor-critic in imagination, one config.

Model half: :mod:`wmkit.dreamer.math` (symlog, two-hot, lambda-returns, return normalisation),
:mod:`~wmkit.dreamer.config` (the one config, size presets), :mod:`~wmkit.dreamer.networks`,
:mod:`~wmkit.dreamer.rssm`, :mod:`~wmkit.dreamer.agent`, :mod:`~wmkit.dreamer.bench`.
"""

from wmkit.dreamer.agent import Agent
from wmkit.dreamer.config import SIZES, DreamerConfig
from wmkit.dreamer.math import ReturnNormalizer, lambda_return, symexp, symlog, twohot, twohot_bins

__all__ = ["symlog", "symexp", "twohot", "twohot_bins", "lambda_return", "ReturnNormalizer",
           "DreamerConfig", "SIZES", "Agent"]

# Training half: environments, replay, the training loop (wmkit/dreamer/{envs,replay,train}.py).
from wmkit.dreamer.envs import ENV_NAMES, crafter_score, make_env, random_returns  # noqa: E402
from wmkit.dreamer.replay import Replay, TrainRatio  # noqa: E402
from wmkit.dreamer.scores import ATARI100K_GAMES, human_normalized, human_normalized_mean  # noqa: E402
from wmkit.dreamer.train import TrainConfig, Trainer, train  # noqa: E402

__all__ += ["ENV_NAMES", "make_env", "random_returns", "crafter_score", "ATARI100K_GAMES", "human_normalized",
            "human_normalized_mean", "Replay", "TrainRatio",
            "TrainConfig", "Trainer", "train"]
