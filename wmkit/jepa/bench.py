"""``wmkit bench jepa``: training clips/s and FLOPs per sample of each model compared in stage 4.

One training step (forward + backward + optimiser) of V-JEPA (masked tubes, the profile's ``vjepa_model``), the
action-conditioned JEPA (EMA recipe, ``ac_model``, windows of ``ac_length`` frames) and DreamerV3's world model
(stage 2, ``tiny``, the same windows at 64x64) on Two-Rooms clips, measured in the same run. FLOPs come from
``torch.utils.flop_counter`` (matmuls, convolutions, attention). Ratios to the Dreamer world model are emitted too.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from wmkit.bench import emit, timeit


def run(argv: list[str] | None = None) -> None:
    from wmkit.jepa.ac import ACConfig, ACWorldModel
    from wmkit.jepa.compare import dreamer_batch, dreamer_world_model, step_flops
    from wmkit.jepa.masks import VJEPA_MASKS, MultiBlock3D
    from wmkit.jepa.train import block_windows, to_video
    from wmkit.jepa.tworooms import collect
    from wmkit.jepa.vjepa import VJEPA, VJEPAConfig
    from wmkit.profiles import profile

    p = argparse.ArgumentParser(prog="wmkit bench jepa", description=__doc__)
    p.add_argument("--repeat", type=int, default=None, help="timed steps per model (default: profile bench_steps)")
    args = p.parse_args(argv)
    P = profile().jepa
    B, L = P.bench_batch, P.ac_length
    vcfg = VJEPAConfig(**P.vjepa_model)
    span = (L - 1) * P.action_block + 1  # environment frames under one AC window
    d = collect(max(2, B), max(vcfg.frames, span) + 1, P.tr_size, seed=0, policy=P.tr_policy)
    torch.manual_seed(0)
    rows = {}

    vj = VJEPA(vcfg)
    opt_v = torch.optim.AdamW([q for q in vj.parameters() if q.requires_grad])
    clips = to_video(np.stack([d["frames"][i % len(d["frames"]), :vcfg.frames] for i in range(B)]))
    gens = [MultiBlock3D(vcfg.grid, s) for s in VJEPA_MASKS]

    def vj_step():
        out = vj.loss(clips, [g(B) for g in gens])["loss"]
        opt_v.zero_grad()
        out.backward()
        opt_v.step()
    rows["vjepa"] = (step_flops(lambda: vj.loss(clips, [g(B) for g in gens])["loss"]), vj_step, vcfg.frames)

    ac = ACWorldModel(ACConfig(**P.ac_model, regulariser="ema", action_block=P.action_block))
    opt_a = torch.optim.AdamW([q for q in ac.parameters() if q.requires_grad])
    fr, act = block_windows(to_video(d["frames"]), torch.from_numpy(d["actions"]),
                            [(i % len(d["frames"]), 0) for i in range(B)], L, P.action_block)

    def ac_step():
        out = ac.loss(fr, act)["loss"]
        opt_a.zero_grad()
        out.backward()
        opt_a.step()
    rows["ac_jepa"] = (step_flops(lambda: ac.loss(fr, act)["loss"]), ac_step, L)

    wm, wcfg = dreamer_world_model("tiny")
    opt_d = torch.optim.Adam(wm.parameters(), lr=1e-4)
    data = dreamer_batch(np.stack([d["frames"][i % len(d["frames"]), :L] for i in range(B)]),
                         np.stack([d["actions"][i % len(d["actions"]), :L - 1] for i in range(B)]))
    g = torch.Generator().manual_seed(0)

    def dr_step():
        loss = wm.loss(data, wcfg, g)[0]
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    rows["dreamer_wm"] = (step_flops(lambda: wm.loss(data, wcfg, g)[0]), dr_step, L)

    repeat = args.repeat or P.bench_steps
    res = {}
    for name, (flops, fn, frames) in rows.items():
        t = timeit(fn, warmup=1, repeat=repeat)["median"]
        res[name] = (flops / B, B / t)
        emit("jepa", f"{name}_train_clips_per_s", B / t, "clips/s", batch=B, frames=frames, profile=profile().name)
        emit("jepa", f"{name}_flops_per_sample", flops / B, "FLOP", batch=B, frames=frames)
    for name in ("vjepa", "ac_jepa"):
        emit("jepa", f"{name}_flops_ratio_to_dreamer_wm", res[name][0] / res["dreamer_wm"][0], "x")
        emit("jepa", f"{name}_speed_ratio_to_dreamer_wm", res[name][1] / res["dreamer_wm"][1], "x")
