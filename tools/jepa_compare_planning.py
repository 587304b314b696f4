"""Planning success against training compute on Two-Rooms: the AC-JEPA vs DreamerV3's world model (issue #14).

    WMKIT_PROFILE=cpu OMP_NUM_THREADS=1 python tools/jepa_compare_planning.py --budgets 100 300 900 --episodes 40

trains the AC-JEPA (the cpu profile's `ema` recipe, the notebook's planner) for each budget given in AC-JEPA steps,
and DreamerV3's world model (stage 2's RSSM, `tiny`) for the same training FLOPs (one run, snapshots at the matched
step counts); plays both planners (the profile's CEM, horizon, replanning and energy; the RSSM with LEXA's latent
distance) and the random policy on the same episodes of LeWM's protocol; times one CEM plan through the diffusion world
model's pixel rollouts; prints JSON lines and a Markdown table, and writes results.json and a PNG plot (success and end
distance against training FLOPs and wall time) into --out. ``--models ac`` / ``--models dreamer`` run one side (two
processes on two cores); ``--merge a.json b.json`` tables and plots saved results without running anything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wmkit.jepa.ac import ACConfig
from wmkit.jepa.compare import step_flops, train_dreamer_wm
from wmkit.jepa.plan import evaluate_planning
from wmkit.jepa.plan_compare import (
    diffusion_plan_seconds,
    dreamer_energy_ranking,
    evaluate_dreamer_planning,
    matched_steps,
)
from wmkit.jepa.train import ACTrainConfig, block_windows, to_video, train_ac
from wmkit.jepa.tworooms import collect
from wmkit.profiles import profile

KEYS = ("plan_success", "plan_success_se", "plan_final_distance", "plan_final_distance_se", "random_success",
        "random_success_se", "random_final_distance", "random_final_distance_se", "difference", "difference_se",
        "distance_difference", "distance_difference_se", "start_distance")


RECIPE = {"name": "ema"}  # --ac-recipe: "ema" (the notebook's AC-JEPA until session 7), "lewm" (LeWM's recipe at the
# other models' sizes) or "lewm-notebook" (notebook 04's planner now: LeWM's recipe over lewm_model, at its own frame
# size, with lewm_schedule; both models then train and plan on that frame size)


def is_lewm() -> bool:
    return RECIPE["name"] in ("lewm", "lewm-notebook")


def ac_train_config(J, steps: int) -> ACTrainConfig:
    """The `ema` AC-JEPA (patch tokens, EMA target), or LeWM's recipe at the profile's lewm_* settings."""
    if RECIPE["name"] == "lewm":
        from wmkit.jepa.train import lewm_config

        return lewm_config(dict(J.ac_model), J.action_block, steps, batch=J.lewm_batch, pool=J.lewm_pool,
                           sigreg_proj=J.lewm_proj)
    if RECIPE["name"] == "lewm-notebook":  # exactly notebook 04's call
        from wmkit.jepa.train import lewm_config

        return lewm_config({**J.ac_model, **J.lewm_model}, J.action_block, steps, batch=J.lewm_batch,
                           pool=J.lewm_pool, sigreg_proj=J.lewm_proj, lr_schedule=J.lewm_schedule)
    m = ACConfig(**J.ac_model, regulariser="ema", loss="l1", normalize=True, sigreg_proj=J.sigreg_proj,
                 action_block=J.action_block)
    return ACTrainConfig(model=m, steps=steps, batch=J.ac_batch, length=J.ac_length, log_every=max(1, steps // 10))


def planner_setting(J):
    """(receding, energy): LeWM's protocol for a LeWM model (the profile's lewm_*), else the cpu planner's."""
    return (J.lewm_receding, J.lewm_energy) if is_lewm() else (J.plan_receding, J.plan_energy)


def ac_label(J) -> str:
    if RECIPE["name"] != "lewm-notebook":
        return RECIPE["name"]
    m = ac_train_config(J, 1).model
    return f"lewm, notebook 04's ({m.size} px, {m.depth} block{'s' if m.depth > 1 else ''})"


def frame_size(J) -> int:
    """The frames both models train and plan on: the AC-JEPA's frame size (tr_size, or lewm_model's for
    lewm-notebook)."""
    return ac_train_config(J, 1).model.size


def ac_step_flops(J, data) -> int:
    cfg = ac_train_config(J, 1)
    from wmkit.jepa.ac import ACWorldModel

    torch.manual_seed(0)
    model = ACWorldModel(cfg.model)
    wins = block_windows(to_video(data["frames"]), torch.from_numpy(data["actions"]),
                         [(e, 0) for e in range(cfg.batch)], cfg.length, J.action_block)
    return step_flops(lambda: model.loss(*wins)["loss"])


def plan_kwargs(J, a):
    return dict(budget=J.plan_budget, horizon=J.plan_horizon, samples=J.cem_samples, elites=J.cem_elites,
                iterations=J.cem_iters, render_size=frame_size(J), seed=a.seed, goal_offset=J.goal_offset)


def emit(row):
    print(json.dumps({k: v for k, v in row.items() if k not in ("episodes", "per_episode")}), flush=True)


def per_episode(r) -> dict:
    """The planner's outcome in every episode (seed order), so two models evaluated on the same episodes can be
    compared pair by pair (:func:`paired_table`)."""
    return {"success": [bool(e["plan_success"]) for e in r["episodes"]],
            "final_distance": [float(e["plan_final_distance"]) for e in r["episodes"]]}


def paired(a: dict, b: dict) -> dict | None:
    """Model a - model b on the same episodes: success difference (points) and end-distance difference (px), each
    with its paired standard error; None unless both rows carry per-episode outcomes of the same seeds."""
    pa, pb = a.get("per_episode"), b.get("per_episode")
    if not pa or not pb or a.get("seed") != b.get("seed") or len(pa["success"]) != len(pb["success"]):
        return None
    n = len(pa["success"])
    ds = np.array(pa["success"], float) - np.array(pb["success"], float)
    dd = np.array(pa["final_distance"]) - np.array(pb["final_distance"])
    return {"episodes": n, "success": float(ds.mean()), "success_se": float(ds.std(ddof=1) / np.sqrt(n)),
            "distance": float(dd.mean()), "distance_se": float(dd.std(ddof=1) / np.sqrt(n))}


def paired_table(rows) -> str:
    """AC-JEPA - RSSM at each budget both were evaluated at on the same episodes (rows of --merge or of one run)."""
    ac = [r for r in rows if r.get("model", "").startswith("AC-JEPA") and "budget" in r]
    rssm = [r for r in rows if r.get("model", "").startswith("DreamerV3") and "budget" in r]
    out = []
    for x in ac:
        for y in rssm:
            if y["budget"] != x["budget"] or (d := paired(x, y)) is None:
                continue
            out.append(f"| {x['model']} - {y['model']} | {x['budget']} | {x['flops']:.2e} / {y['flops']:.2e} | "
                       f"{100 * d['success']:+.1f} +- {100 * d['success_se']:.1f} pts | "
                       f"{d['distance']:+.0f} +- {d['distance_se']:.0f} px | {d['episodes']} |")
    if not out:
        return ""
    return "\n".join(["\n| AC-JEPA - RSSM, same episodes | budget (AC steps) | FLOPs (AC / RSSM) | success | "
                      "end distance | episodes |", "|---|---|---|---|---|---|", *out])


def run_ac(J, a, data, f_ac):
    rows = []
    for n in a.budgets:
        t = time.perf_counter()
        model, hist = train_ac(ac_train_config(J, n), data["frames"], data["actions"], progress=False)
        train_s = time.perf_counter() - t
        E = a.headline_episodes if n == a.headline else a.episodes
        t = time.perf_counter()
        receding, energy = planner_setting(J)
        r = evaluate_planning(model, E, **plan_kwargs(J, a), receding=receding, energy=energy,
                              repeat=J.plan_repeat, progress=False)
        row = {"model": f"AC-JEPA {ac_label(J)} ({receding}:{energy})", "budget": n, "seed": a.seed,
               "steps": n, "flops": n * f_ac, "flops_per_step": f_ac, "train_s": train_s,
               "eval_s": time.perf_counter() - t, "episodes": E, "final_loss": hist[-1]["loss"],
               "feature_std": hist[-1].get("feature_std"), **{k: r[k] for k in KEYS},
               "per_episode": per_episode(r)}
        emit(row)
        rows.append(row)
    return rows


def run_dreamer(J, a, data, f_ac):
    L = a.dreamer_length or (J.ac_length - 1) * J.action_block + 1
    *_, f_d, _ = train_dreamer_wm(data["frames"], data["actions"], 1, J.ac_batch, L, progress=False)
    steps = {n: matched_steps(n * f_ac, f_d) for n in a.budgets}
    wm, cfg, hist, f_d, total_s = train_dreamer_wm(data["frames"], data["actions"], max(steps.values()), J.ac_batch,
                                                   L, progress=False, snapshots=tuple(sorted(set(steps.values()))))
    snaps = hist[-1]["snapshots"]
    rows = []
    for n in a.budgets:
        k = steps[n]
        wm.load_state_dict(snaps[k][0])
        E = a.headline_episodes if n == a.headline else a.episodes
        for target in a.targets:
            if a.ranking:  # Spearman(energy of the imagined last state, true final distance) over random futures
                rk = dreamer_energy_ranking(wm, frame_size(J), a.ranking, 16, J.goal_offset, J.action_block,
                                            J.plan_horizon, target, a.distance)
                emit({"model": f"DreamerV3 RSSM ({target}, {a.distance})", "steps": k, "ranking_episodes": a.ranking,
                      "spearman_mean": rk["mean"], "spearman_se": rk["se"]})
                if a.ranking_only:
                    continue
            t = time.perf_counter()
            receding, energy = planner_setting(J)
            r = evaluate_dreamer_planning(wm, E, **plan_kwargs(J, a), block=J.action_block, receding=receding,
                                          energy=energy, distance=a.distance, target=target, progress=False)
            losses = [h for h in hist if h["step"] < k]
            name = f"DreamerV3 RSSM ({a.distance})" if target == "feat" else (
                "DreamerV3 RSSM (decoded pixels)" if target == "pixels" else f"DreamerV3 RSSM (z only, {a.distance})")
            if is_lewm():
                name += f" ({receding}:{energy}, FLOPs of LeWM" + (
                    f", {frame_size(J)} px)" if RECIPE["name"] == "lewm-notebook" else ")")
            row = {"model": name, "budget": n, "seed": a.seed, "steps": k, "flops": k * f_d, "flops_per_step": f_d,
                   "train_s": snaps[k][1], "eval_s": time.perf_counter() - t, "episodes": E, "window": L,
                   "final_loss": losses[-1]["wm_loss"], "dec_loss": losses[-1]["dec_loss"],
                   **{x: r[x] for x in KEYS}, "per_episode": per_episode(r)}
            emit(row)
            rows.append(row)
    return rows


def run_diffusion(J, a):
    from wmkit.diffusion import EDM, Denoiser

    torch.manual_seed(0)
    d = J.diff_model
    model = EDM(Denoiser(None, context=4, channels=tuple(d["channels"]), depths=tuple(d["depths"]),
                         cond_channels=d["cond_channels"], action_dim=2))
    S = J.tr_size
    ctx, goal = torch.rand(4, 3, S, S) * 2 - 1, torch.rand(3, S, S) * 2 - 1
    H = J.plan_horizon * J.action_block
    r = diffusion_plan_seconds(model, goal, ctx, H, J.cem_samples, J.cem_elites, a.diffusion_iterations,
                               denoise_steps=3)
    per_iter = r["seconds"] / a.diffusion_iterations
    replans = int(np.ceil(J.plan_budget / (J.plan_receding * J.action_block)))
    row = {"model": "diffusion (EDM, stage 3b cpu sizes)", "horizon_frames": H, "cem_samples": J.cem_samples,
           "iterations_timed": a.diffusion_iterations, "seconds_timed": r["seconds"],
           "cpu_seconds_timed": r["cpu_seconds"], "cpu_plan_s": r["cpu_seconds"] / a.diffusion_iterations * J.cem_iters,
           "denoiser_calls_timed": r["denoiser_calls"], "plan_s": per_iter * J.cem_iters,
           "episode_s": per_iter * J.cem_iters * replans, "replans_per_episode": replans,
           "eval_s_for_episodes": per_iter * J.cem_iters * replans * a.episodes}
    emit(row)
    return row


def table(rows):
    out = ["| model | steps | training FLOPs | train s | success (random) | end distance px (random) | "
           "planner - random, success | planner - random, distance | episodes | eval s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "steps" not in r:
            continue
        out.append(f"| {r['model']} | {r['steps']} | {r['flops']:.2e} | {r['train_s']:.0f} | "
                   f"{100 * r['plan_success']:.1f} % +- {100 * r['plan_success_se']:.1f} "
                   f"({100 * r['random_success']:.1f} % +- {100 * r['random_success_se']:.1f}) | "
                   f"{r['plan_final_distance']:.0f} +- {r['plan_final_distance_se']:.0f} "
                   f"({r['random_final_distance']:.0f} +- {r['random_final_distance_se']:.0f}) | "
                   f"{100 * r['difference']:+.1f} +- {100 * r['difference_se']:.1f} pts | "
                   f"{r['distance_difference']:+.0f} +- {r['distance_difference_se']:.0f} | {r['episodes']} | "
                   f"{r['eval_s']:.0f} |")
    for r in rows:
        if "plan_s" in r:
            out.append(f"\nDiffusion world model: one CEM plan ({r['cem_samples']} samples x {r['horizon_frames']} "
                       f"frames x 3 denoising steps per iteration) costs {r['plan_s']:.0f} s "
                       f"({r['iterations_timed']} of the iterations timed: {r['seconds_timed']:.1f} s, "
                       f"{r['denoiser_calls_timed']} denoiser calls at batch {r['cem_samples']}); one episode "
                       f"({r['replans_per_episode']} plans) ~{r['episode_s'] / 60:.0f} min."
                       + (f" CPU time: {r['cpu_seconds_timed']:.1f} s timed, {r['cpu_plan_s']:.0f} s per plan."
                          if "cpu_seconds_timed" in r else ""))
    return "\n".join(out)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(1, 3, figsize=(14, 4.6))
    models = sorted({r["model"] for r in rows if "steps" in r})
    for m in models:
        rs = sorted((r for r in rows if r.get("model") == m), key=lambda r: r["flops"])
        s, se = np.array([r["plan_success"] for r in rs]) * 100, np.array([r["plan_success_se"] for r in rs]) * 100
        d, dse = np.array([r["plan_final_distance"] for r in rs]), np.array([r["plan_final_distance_se"] for r in rs])
        for axis, x in ((ax[0], [r["flops"] for r in rs]), (ax[1], [r["train_s"] for r in rs])):
            axis.errorbar(x, s, yerr=se, marker="o", capsize=3, label=m)
        ax[2].errorbar([r["flops"] for r in rs], d, yerr=dse, marker="o", capsize=3, label=m)
    rnd = [r for r in rows if "steps" in r]
    if rnd:
        p, pse = 100 * np.mean([r["random_success"] for r in rnd]), 100 * max(r["random_success_se"] for r in rnd)
        dist = np.mean([r["random_final_distance"] for r in rnd])
        for axis in ax[:2]:
            axis.axhspan(p - pse, p + pse, color="grey", alpha=0.3, label="random policy (same episodes)")
        ax[2].axhline(dist, color="grey", ls="--", label="random policy")
        ax[2].axhline(np.mean([r["start_distance"] for r in rnd]), color="k", ls=":", label="start")
    ax[0].set(xscale="log", xlabel="training FLOPs", ylabel="success %", title="success vs training FLOPs")
    ax[1].set(xscale="log", xlabel="training wall time, s (1 thread)", ylabel="success %",
              title="success vs wall time")
    ax[2].set(xscale="log", xlabel="training FLOPs", ylabel="mean end distance, px", title="end distance to the goal")
    for axis in ax:
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the decades: no overlapping labels
    handles, labels = ax[0].get_legend_handles_labels()
    h2, l2 = ax[2].get_legend_handles_labels()
    extra = [(h, la) for h, la in zip(h2, l2, strict=True) if la not in labels]
    fig.legend(handles + [h for h, _ in extra], labels + [la for _, la in extra], loc="lower center", ncol=4,
               fontsize=7)  # one legend under the three panels
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(prog="tools/jepa_compare_planning.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 900],
                   help="training budgets in AC-JEPA steps (FLOPs = steps x its FLOPs per step)")
    p.add_argument("--episodes", type=int, default=40, help="paired episodes per point")
    p.add_argument("--headline", type=int, default=300, help="the budget evaluated on --headline-episodes")
    p.add_argument("--headline-episodes", type=int, default=80)
    p.add_argument("--seed", type=int, default=1000, help="first episode seed (as tools/jepa_planners.py)")
    p.add_argument("--models", nargs="+", default=["ac", "dreamer", "diffusion"],
                   choices=["ac", "dreamer", "diffusion"])
    p.add_argument("--distance", default="cosine", choices=["cosine", "l2"], help="the RSSM's latent distance")
    p.add_argument("--targets", nargs="+", default=["feat"], choices=["feat", "stoch", "pixels"],
                   help="what the RSSM's energy compares: the state [h, z] (LEXA), z only, or the decoded frame")
    p.add_argument("--ranking", type=int, default=0,
                   help="episodes x 16 random futures: Spearman of the RSSM's energy with the true final distance")
    p.add_argument("--ranking-only", action="store_true", help="with --ranking: skip the planning evaluation")
    p.add_argument("--dreamer-length", type=int, default=None,
                   help="RSSM training window in frames (None: the AC-JEPA window's span, (length - 1) x block + 1)")
    p.add_argument("--diffusion-iterations", type=int, default=1, help="CEM iterations timed for the diffusion model")
    p.add_argument("--ac-recipe", default="ema", choices=["ema", "lewm", "lewm-notebook"],
                   help="the AC-JEPA: ema (patch tokens, EMA target), lewm (LeWM's recipe, the profile's lewm_*, at "
                        "ac_model's sizes, planned with lewm_receding / lewm_energy) or lewm-notebook (notebook 04's "
                        "planner: also lewm_model's sizes and frame size, and lewm_schedule); budgets count its steps, "
                        "and the RSSM trains on the same frames and plans with the same setting")
    p.add_argument("--out", default="runs/jepa/compare_planning")
    p.add_argument("--merge", nargs="+", default=None, help="results.json files to table and plot (runs nothing)")
    a = p.parse_args(argv)
    if any(b < 1 for b in a.budgets) or a.episodes < 2 or a.headline_episodes < 2:
        p.error("--budgets must be >= 1 and --episodes / --headline-episodes >= 2")
    RECIPE["name"] = a.ac_recipe
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.merge:
        rows = [r for f in a.merge for r in json.loads(Path(f).read_text())["rows"]]
    else:
        torch.set_num_threads(1)
        P = profile()
        J = P.jepa
        print(f"# {P.name} profile; load {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
        data = collect(J.tr_episodes, J.tr_steps, frame_size(J), seed=0, policy=J.tr_policy)  # as notebook 04
        f_ac = ac_step_flops(J, data)
        rows = []
        if "ac" in a.models:
            rows += run_ac(J, a, data, f_ac)
        if "dreamer" in a.models:
            rows += run_dreamer(J, a, data, f_ac)
        if "diffusion" in a.models:
            rows.append(run_diffusion(J, a))
        name = "results" if len(a.models) == 3 else "results_" + "_".join(a.models + [t for t in a.targets
                                                                                      if t != "feat"])
        name += {"ema": "", "lewm": "_lewm", "lewm-notebook": "_lewm64"}[a.ac_recipe]
        (out / f"{name}.json").write_text(json.dumps({"args": vars(a), "profile": P.name, "rows": rows}, indent=1))
    print(table(rows))
    print(paired_table(rows))
    plot(rows, out / "success_vs_compute.png")
    print(f"wrote {out / 'success_vs_compute.png'}")


if __name__ == "__main__":
    main()
