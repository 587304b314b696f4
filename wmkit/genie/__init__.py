"""Stage 3a: a Genie-style video world model (Bruce et al. 2024, arXiv:2402.15391) you can play.

* :mod:`wmkit.genie.st_transformer` -- the spatio-temporal transformer and its measured cost vs full attention
* :mod:`wmkit.genie.tokenizer`      -- video tokenizer (ST-ViViT) with FSQ or VQ (usage tracking, dead-code restarts)
* :mod:`wmkit.genie.lam`            -- latent action model: |A| = 8 discrete actions learned from video alone
* :mod:`wmkit.genie.dynamics`       -- MaskGIT dynamics model over tokens, conditioned on latent actions
* :mod:`wmkit.genie.train`          -- the three trainers and the evaluations (PSNR, usage, confusion, Delta_t PSNR)
* :mod:`wmkit.genie.play`           -- play a trained model: the live widget and recorded playthroughs
"""

from wmkit.genie.dynamics import DynamicsConfig, DynamicsModel
from wmkit.genie.lam import LAMConfig, LatentActionModel, code_usage, confusion
from wmkit.genie.st_transformer import FullTransformer, STTransformer, attention_cost
from wmkit.genie.tokenizer import FSQ, TokenizerConfig, VectorQuantizer, VideoTokenizer, psnr, usage_stats

__all__ = ["STTransformer", "FullTransformer", "attention_cost", "FSQ", "VectorQuantizer", "usage_stats", "psnr",
           "TokenizerConfig", "VideoTokenizer", "LAMConfig", "LatentActionModel", "code_usage", "confusion",
           "DynamicsConfig", "DynamicsModel"]
