"""Stage 3b: diffusion world models you can play -- DIAMOND's EDM, GameNGen's context noise, Dreamer 4's
shortcut forcing, on one denoiser body. See ``book/stage3/diffusion.md``. Entry points::

    from wmkit.diffusion import edm_precond, Denoiser, EDM, VPrediction, Shortcut, DiffusionConfig, train
"""

from wmkit.diffusion.common import ContextNoise, Recipe, quantize_8bit
from wmkit.diffusion.edm import EDM, edm_precond, karras_sigmas, sample_sigma
from wmkit.diffusion.gamengen import VPrediction, ddim_timesteps, sd_alphas_cumprod
from wmkit.diffusion.shortcut import Shortcut, dyadic_steps
from wmkit.diffusion.train import (
    DiffusionConfig,
    build_recipe,
    config_from_profile,
    load_clips,
    load_model,
    train,
    window_tensors,
)
from wmkit.diffusion.unet import Denoiser

__all__ = ["ContextNoise", "Recipe", "quantize_8bit", "EDM", "edm_precond", "karras_sigmas", "sample_sigma",
           "VPrediction", "ddim_timesteps", "sd_alphas_cumprod", "Shortcut", "dyadic_steps", "DiffusionConfig",
           "build_recipe", "config_from_profile", "load_clips", "load_model", "train", "window_tensors", "Denoiser"]
