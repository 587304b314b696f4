"""Stage 1: World Models (Ha & Schmidhuber 2018) -- V (ConvVAE), M (MDNRNN), C (Controller), dreams.

Modules: :mod:`.data` (CarRacing-v3 rollouts, episode files, datasets), :mod:`.vae`, :mod:`.mdnrnn`,
:mod:`.controller` (C and CMA-ES), :mod:`.dream_env` (dreams as gymnasium environments),
:mod:`.train` (trainers and their configs), :mod:`.cli` (``wmkit worldmodels ...``), :mod:`.bench`.
"""

from wmkit.worldmodels.controller import Controller, cma_search, real_returns, squash_actions
from wmkit.worldmodels.data import (
    ENV_ID,
    Episode,
    EpisodeFormatError,
    FrameDataset,
    LatentSequenceDataset,
    ShuffledFrames,
    brownian_actions,
    check_frames,
    collect,
    collect_episode,
    episode_paths,
    frames_to_tensor,
    load_episode,
    preprocess_frame,
    random_weight_policy,
    save_episode,
)
from wmkit.worldmodels.dream_env import (
    DreamBatch,
    DreamEnv,
    DreamVectorEnv,
    dream_from_episode,
    dream_returns,
    encode_episode,
    make_dream_env,
)
from wmkit.worldmodels.mdnrnn import MDNRNN, MDNOutput, mdn_nll, mdn_sample
from wmkit.worldmodels.vae import ConvVAE

__all__ = [
    "ConvVAE", "MDNRNN", "MDNOutput", "mdn_nll", "mdn_sample", "Controller", "squash_actions",
    "cma_search", "real_returns", "DreamBatch", "DreamEnv", "DreamVectorEnv", "dream_returns",
    "dream_from_episode", "encode_episode", "make_dream_env", "ENV_ID", "Episode", "EpisodeFormatError",
    "FrameDataset",
    "LatentSequenceDataset", "ShuffledFrames", "brownian_actions", "check_frames", "collect", "collect_episode",
    "episode_paths", "frames_to_tensor", "load_episode", "preprocess_frame", "random_weight_policy", "save_episode",
]
