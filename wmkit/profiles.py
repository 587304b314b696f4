"""Run profiles: the one place where every chapter's sizes and budgets live.

Three profiles (see ../shared/CONVENTIONS.md and the book's "Setting up" page):

* ``smoke`` -- CI. Every notebook runs top to bottom in seconds; numbers are meaningless but every
  code path executes.
* ``cpu``   -- the default without a GPU. Real but small results in a few minutes per notebook on a
  2-core laptop.
* ``gpu``   -- sized for a 32 GB card (RTX 5090); paper scale where that is feasible.

Selection: the environment variable ``WMKIT_PROFILE`` if set, else ``gpu`` when CUDA is available,
else ``cpu``. Notebooks print the active profile in their first cell and read every heavy number from
it, e.g. ``P = wmkit.profile(); P.worldmodels.vae_epochs``.

Each chapter owns one block below (``_TOUR``, ``_WORLDMODELS``, ``_DREAMER``): a dict from profile
name to that chapter's sizes. Add a key to all three profiles at once; a test checks that they agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType, SimpleNamespace
from typing import Any

PROFILE_NAMES = ("smoke", "cpu", "gpu")
ENV_VAR = "WMKIT_PROFILE"

# ----------------------------------------------------------------------------------------------------
# Chapter 0: the tour notebook.
_TOUR = {
    "smoke": dict(episode_steps=24, frame_size=96),
    "cpu": dict(episode_steps=200, frame_size=96),
    "gpu": dict(episode_steps=400, frame_size=96),
}

# ----------------------------------------------------------------------------------------------------
# Stage 1: World Models (Ha & Schmidhuber 2018). The gpu column follows the paper (10k rollouts,
# 1 VAE epoch, 20 MDN-RNN epochs, CMA-ES population 64 with 16 rollouts each).
_WORLDMODELS = {
    "smoke": dict(n_rollouts=2, rollout_len=40, vae_epochs=1, vae_batch=16, mdnrnn_epochs=1,
                  mdnrnn_batch=2, mdnrnn_seq_len=16, cma_popsize=4, cma_generations=1,
                  cma_rollouts=1, dream_horizon=20, eval_episodes=1, eval_max_steps=40, workers=1,
                  real_popsize=4, real_generations=1, real_rollouts=1, real_horizon=30,
                  doom_episodes=3, doom_max_steps=60, doom_vae_epochs=1, doom_mdnrnn_epochs=1, doom_mdnrnn_batch=2,
                  doom_seq_len=16, doom_hidden=32, doom_popsize=4, doom_rollouts=2, doom_generations=1,
                  doom_dream_max_steps=30, doom_eval_episodes=2, doom_taus=(1.15,), doom_vae_episodes=None),
    # cpu: ~10k frames; V ~450 updates of 64 (2-5 min on 2 cores), M 30 epochs (~1 min), C: CMA-ES in
    # the dream (16 x 8 dreams of 200 steps per generation, ~1 min), 4 real evaluation episodes.
    # real_*: C trained in the real env instead (the paper's CarRacing setup), ~5 min on 2 cores.
    "cpu": dict(n_rollouts=32, rollout_len=300, vae_epochs=3, vae_batch=64, mdnrnn_epochs=30,
                mdnrnn_batch=16, mdnrnn_seq_len=64, cma_popsize=16, cma_generations=40,
                cma_rollouts=8, dream_horizon=200, eval_episodes=4, eval_max_steps=1000, workers=2,
                real_popsize=8, real_generations=10, real_rollouts=1, real_horizon=300,
                # doom_*: VizDoom TakeCover trained in the dream (notebook 01b; 8 min 55 s on 2 idle cores in
                # `make book`, evaluations and dreams in 2 worker processes). 110 episodes; V 3 epochs over the
                # first 60 (834 updates);
                # M 60 epochs over 100 (~2,000 updates: with 4 epochs (132 updates) every C was "hold left").
                # Measured figures and commands: book/stage1/doom_dream.md.
                doom_episodes=110, doom_vae_episodes=60, doom_max_steps=2100, doom_vae_epochs=3, doom_mdnrnn_epochs=60,
                doom_mdnrnn_batch=16, doom_seq_len=100, doom_hidden=256, doom_popsize=16, doom_rollouts=8,
                doom_generations=20, doom_dream_max_steps=600, doom_eval_episodes=50, doom_taus=(0.1, 1.0, 1.15, 1.3)),
    "gpu": dict(n_rollouts=10_000, rollout_len=1000, vae_epochs=1, vae_batch=100, mdnrnn_epochs=20,
                mdnrnn_batch=100, mdnrnn_seq_len=999, cma_popsize=64, cma_generations=300,
                cma_rollouts=16, dream_horizon=1000, eval_episodes=100, eval_max_steps=1000,
                workers=16, real_popsize=16, real_generations=30, real_rollouts=2, real_horizon=1000,
                # doom_*: the paper's doomrnn/ (10k episodes, V 10 epochs, M 400 epochs of 500-step chunks,
                # LSTM 512, CMA-ES 64 x 16 dreams of up to 2,100 frames, 100 real evaluation episodes).
                doom_episodes=10_000, doom_max_steps=2100, doom_vae_epochs=10, doom_mdnrnn_epochs=400,
                doom_mdnrnn_batch=100, doom_seq_len=500, doom_hidden=512, doom_popsize=64, doom_rollouts=16,
                doom_generations=200, doom_dream_max_steps=2100, doom_eval_episodes=100,
                doom_taus=(0.1, 0.5, 1.0, 1.15, 1.3), doom_vae_episodes=None),
}

# ----------------------------------------------------------------------------------------------------
# Stage 2: DreamerV3 (Hafner et al. 2023). gpu = the paper's budgets (Crafter 1M, Atari 100k): days on
# one GPU, so the gpu runs checkpoint every ckpt_every steps and resume_runs continues an interrupted
# build from the last checkpoint (cpu/smoke always start fresh, so a changed notebook never reuses a run).
_DREAMER = {
    "smoke": dict(size="tiny", env_steps=300, train_ratio=32, batch_size=4, batch_length=16,
                  imag_horizon=15, prefill=100, eval_episodes=1,
                  anatomy_size="tiny", anatomy_steps=30, anatomy_updates=2,
                  learn_env="reach-vector", learn_steps=120, learn_batch_size=4, learn_batch_length=16,
                  learn_train_ratio=8, learn_prefill=100, pixel_env="reach", pixel_steps=120, pixel_train_ratio=8,
                  learn_size="tiny", pixel_size="tiny", learn_eval_episodes=1,
                  threads=1,   # tiny models thrash on 2 threads under load (02c: 17 s on 1 thread vs 150 s)
                  ckpt_every=0, resume_runs=False,
                  onecfg_envs=("reach-vector", "cartpole", "pendulum"), onecfg_steps=80,
                  onecfg_scales=(1000.0,), ablation_scale=1000.0, heads_steps=40, random_episodes=2,
                  onecfg_workers=2),
    # learn_*: notebook 02b's reach-vector run. 6,000 steps (5,501 updates): with 4,000 the sampled policy was still
    # at the random level (25.9 vs 30.6 over 20 episodes, greedy 31.2; 2026-12-07); the notebook at 6,000 ended at
    # 41.0 +- 0.5 (+6.2 s.e.; greedy 42.3), its return jumping between 4,500 and 5,250 steps (dreamerv3_training.md).
    "cpu": dict(size="tiny", env_steps=20_000, train_ratio=64, batch_size=16, batch_length=64,
                imag_horizon=15, prefill=1000, eval_episodes=5,
                anatomy_size="tiny", anatomy_steps=300, anatomy_updates=12,
                learn_env="reach-vector", learn_steps=6000, learn_batch_size=16, learn_batch_length=16,
                learn_train_ratio=256, learn_prefill=500, pixel_env="reach", pixel_steps=600,
                pixel_train_ratio=256, ckpt_every=0, resume_runs=False,
                learn_size="tiny", pixel_size="tiny", learn_eval_episodes=20, threads=2,
                onecfg_envs=("reach-vector", "cartpole", "pendulum"), onecfg_steps=800,
                onecfg_scales=(0.001, 1000.0), ablation_scale=1000.0, heads_steps=1000, random_episodes=20,
                onecfg_workers=2),   # 02c's runs in 2 processes of 1 thread (tiny models: ~1.1x from a 2nd thread)
    "gpu": dict(size="s", env_steps=1_000_000, train_ratio=512, batch_size=16,
                batch_length=64, imag_horizon=15, prefill=5000, eval_episodes=20,
                anatomy_size="size12m", anatomy_steps=300, anatomy_updates=40,
                learn_env="atari100k:pong", learn_steps=100_000, learn_batch_size=16,
                learn_batch_length=64, learn_train_ratio=1024, learn_prefill=5000, pixel_env="crafter",
                pixel_steps=1_000_000, pixel_train_ratio=512, ckpt_every=50_000, resume_runs=True,
                # the 2023 code's own configs (dreamerv3/configs.yaml at c64680b): atari100k = size S
                # (deter 512, units 512, cnn_depth 32, 2 layers), train ratio 1024, 100 sampled eval
                # episodes; crafter = the default XL size (deter 4096, units 1024, cnn_depth 96, 5 layers),
                # train ratio 512
                learn_size="s", pixel_size="xl", learn_eval_episodes=100, threads=2,
                onecfg_envs=("reach-vector", "cartpole", "pendulum", "crafter", "atari100k:pong"),
                onecfg_steps=100_000, onecfg_scales=(0.001, 1000.0),
                ablation_scale=1000.0, heads_steps=3000, random_episodes=50, onecfg_workers=1),
}

# ----------------------------------------------------------------------------------------------------
# Stages 3-4 data layer (wmkit.data): stand-in recordings (Crafter, CarRacing driving, Atari) and shards.
# crafter/driving/atari_*: how many episodes of how many frames the stand-ins record (cached under runs/data);
# shard_*: the WebDataset demo (clips of shard_clip_len frames, shard_size clips per tar).
_DATA: dict[str, dict[str, Any]] = {
    "smoke": dict(crafter_episodes=2, crafter_steps=40, driving_episodes=1, driving_steps=100, atari_episodes=1,
                  atari_steps=60, size=64, shard_clip_len=16, shard_size=4, bench_clips=32),
    "cpu": dict(crafter_episodes=8, crafter_steps=200, driving_episodes=2, driving_steps=300, atari_episodes=2,
                atari_steps=300, size=64, shard_clip_len=16, shard_size=16, bench_clips=256),
    "gpu": dict(crafter_episodes=100, crafter_steps=1000, driving_episodes=20, driving_steps=1500, atari_episodes=20,
                atari_steps=2000, size=64, shard_clip_len=16, shard_size=64, bench_clips=2048),
}

# ----------------------------------------------------------------------------------------------------
# Stage 3a: Genie-style video world model (wmkit.genie).
# Frames: the 7 x 7 Crafter tiles around the player, 56 x 56 (wmkit.genie.train.crop_tiles); patch 8 = one tile.
# cpu: 49 tokens per frame, 2-frame tokenizer/LAM clips, 2-frame dynamics clips; the LAM sees 28 x 28 (patch 4 =
# one tile, 48 pixel values per token < its width, so a move is an exact copy of the neighbouring token).
# gpu: the widths and depths of Genie's CoinRun case study (appendix F) as re-implemented by Jafar: tokenizer
# 8 blocks d512 patch 4 (196 tokens/frame), LAM 8 blocks d512, dynamics 12 blocks d512, 16-frame clips.
# LAM switches (wmkit.genie.train.GenieConfig): smoke/cpu use the encoder that reads only the softmax cost volume
# (which neighbour each patch matches), neighbourhood tokens, half of each batch from scrolling windows, lr 1e-3,
# 1200 steps -- the first combination whose held-out codes followed moves (left and right; not up or down), book page
# "Session 4"; 900 steps since the standardised output below (every motion had a code at 600); gpu keeps Genie's
# LAM (pixels in, uniform windows, lr = lr), not run. smoke/cpu also standardise the
# LAM encoder's output over the batch (lam_out_norm; without it right, up and down got no code), compute each tokenizer
# token from its own patch (tok_encoder="patch": a scroll is an exact shift of the token grid); the dynamics model reads
# the previous frame's 3 x 3 window by attention (dyn_prev_window), trains on 2-frame clips (every target frame has an
# unmasked previous frame), half of each batch from windows that end with a scroll (dyn_move_fraction), at lr 1e-3 --
# the combination with which every direction got an action of its own (book page, "How the dynamics model learned to
# draw every scroll"); gpu keeps Genie's forms.
_GENIE: dict[str, dict[str, Any]] = {
    "smoke": dict(episodes=3, episode_steps=40, frame_size=56, tok_patch=8, tok_dim=32, tok_depth=1, tok_clip_len=2,
                  tok_steps=4, tok_batch=4, lam_patch=4, lam_size=28, lam_dim=32, lam_depth=1, lam_clip_len=2,
                  lam_steps=4, lam_batch=4, lam_var_weight=100.0, dyn_dim=32, dyn_depth=1, dyn_clip_len=2,
                  dyn_steps=4, dyn_batch=8, maskgit_steps=4, eval_horizon=4, eval_starts=2, play_frames=6,
                  cost_T=(2, 4, 8), cost_N=16, cost_dim=32, cost_depth=1, cost_run_T=(2, 4), bench_batch=2,
                  bench_steps=2, effect_frames=2,
                  lam_lr=1e-3, lam_patch_context=3, lam_enc_correlation=True, lam_corr_temperature=0.002,
                  lam_enc_patches=False, lam_move_fraction=0.5, lam_out_norm="batch", tok_encoder="patch",
                  dyn_token_context=1, dyn_prev_window=3, dyn_move_fraction=0.5, dyn_lr=1e-3),
    "cpu": dict(episodes=10, episode_steps=200, frame_size=56, tok_patch=8, tok_dim=128, tok_depth=2, tok_clip_len=2,
                tok_steps=400, tok_batch=16, lam_patch=4, lam_size=28, lam_dim=96, lam_depth=2, lam_clip_len=2,
                lam_steps=900, lam_batch=32, lam_var_weight=100.0, dyn_dim=128, dyn_depth=3, dyn_clip_len=2,
                dyn_steps=600, dyn_batch=32, maskgit_steps=25, eval_horizon=4, eval_starts=8, play_frames=48,
                cost_T=(4, 8, 16, 32, 64, 128, 256, 512), cost_N=64, cost_dim=128, cost_depth=2,
                cost_run_T=(4, 8, 16, 32), bench_batch=8, bench_steps=5, effect_frames=16,
                lam_lr=1e-3, lam_patch_context=3, lam_enc_correlation=True, lam_corr_temperature=0.002,
                lam_enc_patches=False, lam_move_fraction=0.5, lam_out_norm="batch", tok_encoder="patch",
                dyn_token_context=1, dyn_prev_window=3, dyn_move_fraction=0.5, dyn_lr=1e-3),
    "gpu": dict(episodes=100, episode_steps=1000, frame_size=56, tok_patch=4, tok_dim=512, tok_depth=8,
                tok_clip_len=16, tok_steps=30_000, tok_batch=48, lam_patch=8, lam_size=0, lam_dim=512, lam_depth=8,
                lam_clip_len=16, lam_steps=30_000, lam_batch=36, lam_var_weight=100.0, dyn_dim=512, dyn_depth=12,
                dyn_clip_len=16, dyn_steps=50_000, dyn_batch=36, maskgit_steps=25, eval_horizon=4, eval_starts=8,
                play_frames=100, cost_T=(4, 8, 16, 32, 64, 128, 256, 512), cost_N=256, cost_dim=512, cost_depth=8,
                cost_run_T=(4, 8, 16, 32, 64), bench_batch=36, bench_steps=10, effect_frames=64,
                lam_lr=None, lam_patch_context=1, lam_enc_correlation=False, lam_corr_temperature=0.0,
                lam_enc_patches=True, lam_move_fraction=0.0, lam_out_norm="none", tok_encoder="st",
                dyn_token_context=1, dyn_prev_window=1, dyn_move_fraction=0.0, dyn_lr=None),
}

# ----------------------------------------------------------------------------------------------------
# Stage 3b: diffusion world models (wmkit.diffusion): DIAMOND's EDM, GameNGen, Dreamer 4 shortcut forcing.
# cpu: DIAMOND's U-Net shrunk to 0.59M parameters at 32x32 (~0.26 s per update of 32 on 2 idle cores), 300
# updates per recipe at lr 3e-4 (DIAMOND: 1e-4 over 100k+ updates); gpu: DIAMOND's Atari denoiser (4.4M, 64x64).
# threads: torch CPU threads for the notebook (smoke's tiny models run fastest on one; 0 = torch's default).
# agent (cpu): the actor-critic learned reach (true game at 16x16) in ~200 updates of 32 imagined trajectories, not
# in 120 of 16. Reward/end 800 updates: with 400 (67 % held-out accuracy) the idle notebook's policy fell back to
# random by update 160 (31.02 vs 31.28); with 800 (96 %) it rose to 38.56 +- 0.56, and 03d took 436 s idle.
_DIFFUSION = {
    "smoke": dict(episodes=2, episode_steps=40, size=16, context=4, channels=(16, 16), depths=(1, 1),
                  cond_channels=32, batch_size=8, train_steps=20, lr=3e-4, k_max=8, eval_windows=8,
                  steps_list=(1, 3), drift_horizon=6, drift_episodes=2, play_frames=8, bench_repeat=2,
                  threads=1, agent_episodes=6, agent_size=16, agent_diamond_sizes=False, agent_wm_steps=10,
                  agent_rew_end_steps=10, agent_ac_steps=3, agent_imagined=8, agent_eval_episodes=6,
                  drive_source="nuscenes-fixture", drive_episodes=5, drive_steps=12, drive_size=16,
                  drive_train_steps=10, drive_windows=8, agent_warmup=2, agent_adv_norm="none",
                  agent_ac_down=(1, 1, 0, 0), agent_critic_init="data"),
    "cpu": dict(episodes=8, episode_steps=200, size=32, context=4, channels=(32, 32, 32), depths=(1, 1, 1),
                cond_channels=128, batch_size=32, train_steps=300, lr=3e-4, k_max=64, eval_windows=64,
                steps_list=(1, 3, 10), drift_horizon=30, drift_episodes=10, play_frames=60, bench_repeat=5,
                threads=2, agent_episodes=200, agent_size=16, agent_diamond_sizes=False, agent_wm_steps=2000,
                agent_rew_end_steps=800, agent_ac_steps=160, agent_imagined=32, agent_eval_episodes=50,
                drive_source="carracing", drive_episodes=6, drive_steps=350, drive_size=32, drive_train_steps=300,
                drive_windows=64, agent_warmup=10, agent_adv_norm="none",
                agent_ac_down=(1, 1, 0, 0), agent_critic_init="data"),
    "gpu": dict(episodes=100, episode_steps=1000, size=64, context=4, channels=(64, 64, 64, 64), depths=(2, 2, 2, 2),
                cond_channels=256, batch_size=32, train_steps=20_000, lr=1e-4, k_max=64, eval_windows=1024,
                steps_list=(1, 3, 10), drift_horizon=100, drift_episodes=32, play_frames=300, bench_repeat=20,
                threads=0, agent_episodes=400, agent_size=64, agent_diamond_sizes=True, agent_wm_steps=20_000,
                agent_rew_end_steps=5000, agent_ac_steps=5000, agent_imagined=32, agent_eval_episodes=100,
                drive_source="carracing", drive_episodes=50, drive_steps=1500, drive_size=64, drive_train_steps=20_000,
                drive_windows=1024, agent_warmup=100, agent_adv_norm="none",
                agent_ac_down=(1, 1, 1, 1), agent_critic_init="zero"),
}

# ----------------------------------------------------------------------------------------------------
# Stage 3c: FP8 training (wmkit.precision).
# toggle_*: the small causal transformer the precision toggle trains (wmkit.precision_bench.train_run);
# bench_*: `wmkit bench fp8` -- matrix sweep (M = bench_tokens, K = N = each size) and one transformer step.
_FP8: dict[str, dict[str, Any]] = {
    "smoke": dict(toggle_model=dict(dim=32, depth=1, heads=2, seq_len=16, batch=8), toggle_steps=12,
                  bench_sizes=(128, 256), bench_tokens=32,
                  bench_model=dict(dim=32, depth=1, heads=2, seq_len=16, batch=4)),
    # cpu: three 300-step runs of a 2-block, 64-wide transformer (~10-30 s each on one core)
    "cpu": dict(toggle_model=dict(dim=64, depth=2, heads=4, seq_len=16, batch=16), toggle_steps=300,
                bench_sizes=(512, 1024, 2048, 4096, 8192), bench_tokens=256,
                bench_model=dict(dim=256, depth=2, heads=4, seq_len=64, batch=8)),
    # gpu: a world-model-sized transformer (width 512) for the toggle; the bench model is 8 x 1024 wide
    "gpu": dict(toggle_model=dict(dim=512, depth=4, heads=8, seq_len=256, batch=32), toggle_steps=500,
                bench_sizes=(512, 1024, 2048, 4096, 8192), bench_tokens=4096,
                bench_model=dict(dim=1024, depth=8, heads=16, seq_len=1024, batch=8)),
}

# ----------------------------------------------------------------------------------------------------
# Stage 4: V-JEPA (wmkit.jepa).
# Two-Rooms (tr_*) random-walk recordings feed everything; vjepa_* = masked-video pretraining; ac_* = the
# action-conditioned world model; collapse_steps = the EMA / SIGReg / nothing demonstration; plan_* = MPC with CEM
# (V-JEPA 2-AC: 400 samples, 10 elites, 10 iterations; the published Two-Rooms budget is 50 steps);
# pretrain_model = the model of `torchrun -m wmkit.jepa.pretrain --size <profile>`.
# cpu: 32x32 frames, patch 8 (16 tokens per frame), width 64: ~0.3 s per AC step at batch 16 on one core.
_JEPA: dict[str, dict[str, Any]] = {
    # Two-Rooms data: swm's weak expert (tr_policy), episodes of tr_steps; the AC predictor steps action_block
    # environment steps at a time (swm / LeWM frameskip 5). Planning: LeWM's protocol (goal = the expert's position
    # goal_offset steps on, budget 50), CEM over plan_horizon blocks, plan_receding blocks executed per plan.
    # ac_recipes: the AC models that plan ("frozen" = V-JEPA 2-AC: the V-JEPA encoder frozen under a new predictor of
    # frozen_steps, residual if ac_residual, trained with frozen_loss: l1 = V-JEPA 2-AC, mse = LeWM, also the planning
    # energy); rank_*: energy_ranking's episodes x random futures. cpu keeps "ema": "frozen" with the MSE predictor of
    # 3000 steps (38.8 % +- 5.4 % vs random 3.8 % +- 2.1 % over 80 scratch episodes) planned 21 % +- 8 % but ended
    # 183 px from the goal (random 99) in the idle notebook run, for 134 s more training (ema: 17 % +- 8 %, 111 px).
    # planners: the models the notebook plans with (the first one is shown), from ac_recipes' runs, "frozen", or
    # "lewm" = LeWM's recipe as published (wmkit.jepa.train.lewm_config: lewm_steps at batch lewm_batch, lewm_pool
    # "mean" | "cls", lewm_proj SIGReg projections), which plans with LeWM's protocol (lewm_receding blocks executed
    # per plan, lewm_energy; lewm_model overrides ac_model's sizes, lewm_schedule the lr after warm-up). cpu: 64 x 64
    # frames (8-px patches: the agent a 4-px disc), a 1-block encoder, 600 steps at batch 64, constant lr, to fit the
    # 330 s notebook; 80 paired episodes, seeds 1000-1079: 25.0 % +- 4.8 % (random 3.8 % +- 2.1 %), ending 58 +- 4 px
    # from the goal (random 100 +- 5; paired -42 +- 6). At 32 x 32 (2 blocks, 300 steps) 27.5 % but +1 px.
    "smoke": dict(tr_episodes=8, tr_steps=16, tr_size=32, tr_policy="expert", test_episodes=4,
                  vjepa_model=dict(frames=4, size=32, patch=8, dim=32, depth=1, heads=2, pred_dim=16, pred_depth=1,
                                   pred_heads=2),
                  vjepa_steps=3, vjepa_batch=4, vjepa_ema=(0.99, 1.0),
                  ac_model=dict(size=32, patch=8, dim=32, depth=1, heads=2, pred_dim=32, pred_depth=1, pred_heads=2),
                  action_block=5, ac_steps=3, ac_batch=4, ac_length=3, sigreg_proj=64, collapse_steps=3,
                  ac_recipes=("frozen", "ema"), probe_steps=5, diff_model=dict(channels=(16, 16), depths=(1, 1),
                                                                                cond_channels=32), diff_max_steps=2,
                  plan_episodes=2, plan_budget=10, plan_horizon=2, plan_receding=1, goal_offset=5, plan_energy="last",
                  plan_repeat=False, ac_residual=True, frozen_steps=3, frozen_loss="mse", rank_episodes=2,
                  rank_futures=4,
                  cem_samples=16, cem_elites=4, cem_iters=2, lewm_steps=3, lewm_batch=8, lewm_pool="mean",
                  lewm_proj=64, lewm_receding=2, lewm_energy="last", lewm_model=dict(size=16, patch=4, depth=1),
                  lewm_schedule="cosine",
                  planners=("lewm", "frozen", "ema"),
                  pretrain_model=dict(frames=4, size=32, patch=8, dim=32, depth=1, heads=2, pred_dim=16,
                                      pred_depth=1, pred_heads=2),
                  bench_batch=2, bench_steps=1),
    "cpu": dict(tr_episodes=96, tr_steps=60, tr_size=32, tr_policy="expert", test_episodes=32,
                vjepa_model=dict(frames=8, size=32, patch=8, dim=64, depth=2, heads=4, pred_dim=32, pred_depth=2,
                                 pred_heads=4),
                vjepa_steps=150, vjepa_batch=16, vjepa_ema=(0.99, 1.0),
                ac_model=dict(size=32, patch=8, dim=64, depth=2, heads=4, pred_dim=64, pred_depth=2, pred_heads=4),
                action_block=5, ac_steps=300, ac_batch=16, ac_length=6, sigreg_proj=128, collapse_steps=100,
                ac_recipes=("ema",), probe_steps=300, diff_model=dict(channels=(32, 32, 32), depths=(1, 1, 1),
                                                                       cond_channels=128), diff_max_steps=150,
                plan_episodes=24, plan_budget=50, plan_horizon=5, plan_receding=1, goal_offset=25, plan_energy="all",
                plan_repeat=False, ac_residual=True, frozen_steps=3000, frozen_loss="mse", rank_episodes=10,
                rank_futures=16,
                cem_samples=64, cem_elites=8, cem_iters=6, lewm_steps=600, lewm_batch=64, lewm_pool="mean",
                lewm_proj=1024, lewm_receding=5, lewm_energy="last", lewm_model=dict(size=64, depth=1),
                lewm_schedule="constant",
                planners=("lewm",),
                pretrain_model=dict(frames=8, size=32, patch=8, dim=64, depth=2, heads=4, pred_dim=32,
                                    pred_depth=2, pred_heads=4),
                bench_batch=16, bench_steps=3),
    # gpu: a ViT-S-like encoder on 64x64 frames (patch 8, 64 tokens per frame), V-JEPA's official EMA schedule,
    # LeWM's Two-Rooms evaluation as published (horizon 5, receding 5, CEM 300 samples / 30 elites / 30 iterations).
    "gpu": dict(tr_episodes=2000, tr_steps=100, tr_size=64, tr_policy="expert", test_episodes=200,
                vjepa_model=dict(frames=16, size=64, patch=8, dim=384, depth=12, heads=6, pred_dim=192, pred_depth=6,
                                 pred_heads=6),
                vjepa_steps=20_000, vjepa_batch=64, vjepa_ema=(0.998, 1.0),
                ac_model=dict(size=64, patch=8, dim=384, depth=12, heads=6, pred_dim=384, pred_depth=6, pred_heads=6),
                action_block=5, ac_steps=20_000, ac_batch=64, ac_length=8, sigreg_proj=1024, collapse_steps=3000,
                ac_recipes=("frozen", "ema", "sigreg"), probe_steps=2000,
                diff_model=dict(channels=(64, 64, 64, 64), depths=(2, 2, 2, 2), cond_channels=256),
                diff_max_steps=20_000,
                plan_episodes=50, plan_budget=50, plan_horizon=5, plan_receding=5, goal_offset=25, plan_energy="last",
                plan_repeat=False, ac_residual=False, frozen_steps=20_000, frozen_loss="l1", rank_episodes=20,
                rank_futures=32,
                cem_samples=300, cem_elites=30, cem_iters=30, lewm_steps=20_000, lewm_batch=128, lewm_pool="cls",
                lewm_proj=1024, lewm_receding=5, lewm_energy="last", lewm_model=dict(), lewm_schedule="cosine",
                planners=("frozen", "ema", "sigreg", "lewm"),
                pretrain_model=dict(frames=16, size=224, patch=16, dim=1024, depth=24, heads=16, pred_dim=384,
                                    pred_depth=12, pred_heads=12),
                bench_batch=32, bench_steps=5),
}

_CHAPTERS: dict[str, dict[str, dict[str, Any]]] = {
    "tour": _TOUR,
    "worldmodels": _WORLDMODELS,
    "dreamer": _DREAMER,
    "data": _DATA,
    "genie": _GENIE,
    "diffusion": _DIFFUSION,
    "fp8": _FP8,
    "jepa": _JEPA,
}

_DESCRIPTIONS = {
    "smoke": "CI smoke test: every code path runs in seconds; the numbers mean nothing.",
    "cpu": "No GPU: real but small results in a few minutes per notebook on 2 CPU cores.",
    "gpu": "One 32 GB GPU (RTX 5090): paper scale where feasible.",
}


@dataclass(frozen=True)
class Profile:
    """The active sizes for every chapter. ``P.worldmodels.vae_epochs`` reads one number."""

    name: str
    description: str
    chapters: Mapping[str, Mapping[str, Any]]

    def __getattr__(self, chapter: str) -> SimpleNamespace:
        chapters = object.__getattribute__(self, "chapters")
        if chapter in chapters:
            return SimpleNamespace(**chapters[chapter])
        raise AttributeError(
            f"profile {self.name!r} has no chapter {chapter!r}; chapters: {sorted(chapters)}"
        )

    def __str__(self) -> str:
        return f"wmkit profile: {self.name} -- {self.description}"

    def table(self, chapter: str) -> str:
        """A two-column text table of one chapter's sizes (what notebooks print at the top)."""
        rows = self.chapters[chapter]
        if not rows:
            return "(no sizes)"
        width = max(len(k) for k in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items())


def default_profile_name() -> str:
    """``WMKIT_PROFILE`` if set, else ``gpu`` when CUDA is available, else ``cpu``."""
    name = os.environ.get(ENV_VAR, "").strip()
    if name:
        if name not in PROFILE_NAMES:
            raise ValueError(f"{ENV_VAR}={name!r} is not a profile; expected one of {PROFILE_NAMES}")
        return name
    try:
        import torch

        if torch.cuda.is_available():
            return "gpu"
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return "cpu"


def profile(name: str | None = None) -> Profile:
    """Return the named profile, or the active one (see :func:`default_profile_name`)."""
    name = name or default_profile_name()
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; expected one of {PROFILE_NAMES}")
    chapters = {ch: MappingProxyType(dict(table[name])) for ch, table in _CHAPTERS.items()}
    return Profile(name=name, description=_DESCRIPTIONS[name], chapters=MappingProxyType(chapters))


def chapter_keys() -> dict[str, dict[str, set[str]]]:
    """For tests: the key set of every chapter in every profile."""
    return {ch: {p: set(t[p]) for p in PROFILE_NAMES} for ch, t in _CHAPTERS.items()}
