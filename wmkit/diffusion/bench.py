"""``wmkit bench diffusion``: speed of the diffusion world models (one JSON line per figure).

On synthetic frames (speed does not depend on the data), with the active profile's denoiser (``--profile cpu``
by default on a CPU: the 0.59M-parameter U-Net at 32x32; ``gpu``: DIAMOND's 4.4M one at 64x64):

  train_frames_per_s      one update (loss + backward + AdamW) of --batch windows, per recipe, frames/s
  generated_frames_per_s  play: one next frame at batch 1 with 1, 3 and 10 sampling steps, per recipe
  realtime_ok_3_steps     1 if 3-step generation reaches the 10 frames/s target (the issue's bar), else 0

The three recipes are timed round-robin in the same run (wmkit.bench.interleaved), so load on a shared machine
hits them alike; ratios to EDM are reported beside the raw numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from wmkit.bench import emit, interleaved
from wmkit.diffusion.train import RECIPES, build_recipe, config_from_profile
from wmkit.utils import count_parameters, pick_device

B = "diffusion"


def run(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="wmkit bench diffusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=None, help="profile whose model sizes to time (default: the active one)")
    p.add_argument("--batch", type=int, default=None, help="training batch (default: the profile's)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 3, 10], help="sampling steps to time")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds (default: the profile's bench_repeat)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave torch's default)")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from wmkit.profiles import profile

    P = profile(a.profile)
    repeat = a.repeat or P.diffusion.bench_repeat
    device = pick_device(None if a.device == "auto" else a.device)
    torch.manual_seed(0)
    models, opts = {}, {}
    for r in RECIPES:
        cfg = config_from_profile(P, recipe=r, ctx_noise_max=0.7 if r == "vpred" else 0.0)
        models[r] = build_recipe(cfg, 17).to(device)
        opts[r] = torch.optim.AdamW(models[r].parameters(), lr=1e-4)
    cfg = config_from_profile(P)
    batch = a.batch or cfg.batch_size
    S, K = cfg.size, cfg.context
    ctx = torch.rand(batch, K, 3, S, S, device=device) * 2 - 1
    act = torch.randint(0, 17, (batch, K), device=device)
    tgt = torch.rand(batch, 3, S, S, device=device) * 2 - 1
    extra = dict(profile=P.name, size=S, params=count_parameters(models["edm"].net), device=str(device))

    def train_step(r):
        def f():
            loss, _ = models[r].loss(ctx, act, tgt)
            opts[r].zero_grad()
            loss.backward()
            opts[r].step()
        return f

    ms = interleaved({r: train_step(r) for r in RECIPES}, warmup=1, repeat=repeat, sync=device)
    base = None
    for r in RECIPES:
        fps = batch / (statistics.median(ms[r]) / 1000)
        base = base or fps
        emit(B, "train_frames_per_s", fps, "frames/s", recipe=r, batch=batch, ratio_to_edm=fps / base, **extra)
    for steps in a.steps:
        def gen(r, steps=steps):
            g = torch.Generator(device=device).manual_seed(0)
            return lambda: models[r].sample(ctx[:1], act[:1], steps, generator=g)
        runnable = {r: gen(r) for r in RECIPES if not (r == "shortcut" and steps > cfg.k_max)}
        ms = interleaved(runnable, warmup=1, repeat=repeat, sync=device)
        base = None
        for r in runnable:
            fps = 1000 / statistics.median(ms[r])
            base = base or fps
            emit(B, "generated_frames_per_s", fps, "frames/s", recipe=r, sampling_steps=steps,
                 ratio_to_edm=fps / base, **extra)
            if steps == 3:
                emit(B, "realtime_ok_3_steps", float(fps >= 10.0), "bool", recipe=r, target_fps=10.0, **extra)
    print(f"timed {repeat} rounds per figure on {device}, {torch.get_num_threads()} threads", file=sys.stderr)
