"""Several actor-critic seeds trained only inside one diffusion world model, each scored in the real game.

Issue #12 (DIAMOND's agent, book/stage3/diffusion.md, notebook 03d). One actor-critic seed beating the random
policy could be luck; this script trains ``--seeds`` actor-critics (``AgentConfig.ac_seed``) on the SAME denoiser
and reward/end model, each for the profile's ``agent_ac_steps`` updates in imagination, and plays each policy for
``eval_episodes`` real episodes (the same episode seeds ``10_000 + cfg.seed`` as the uniformly random policy, so
the comparison is paired by start state). It prints one row per seed (mean +- s.e. and the difference from random
in standard errors, s.e. of the difference = sqrt(s.e._agent^2 + s.e._random^2)) and the mean over seeds.

    # reuse the world model that notebook 03d trained (it saves to runs/diffusion/agent):
    OMP_NUM_THREADS=1 WMKIT_PROFILE=cpu python tools/diffusion_seeds.py --run-dir notebooks/runs/diffusion/agent
    # or train denoiser + reward/end model + a first agent from scratch (wmkit.diffusion.rl.run) into --run-dir:
    OMP_NUM_THREADS=1 WMKIT_PROFILE=cpu python tools/diffusion_seeds.py --run-dir /tmp/agent --seeds 0 1 2

Actor-critic seed ``cfg.seed`` (0) is the notebook's own seed: at the same torch thread count it retrains the same
agent (a test checks it); at another thread count float summation order differs and the 160 sampled updates
diverge, so it becomes one more seed (03d runs at 2 threads, this script at ``--threads 1``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from wmkit.diffusion.rl import agent_config_from_profile, evaluate, load_agent, record_episodes, run, train_actor_critic


def paired_gap(agent: dict, random: dict) -> tuple[float, float]:
    """(agent mean - random mean, that gap in standard errors of the difference)."""
    gap = agent["mean"] - random["mean"]
    se = math.sqrt(agent["sem"] ** 2 + random["sem"] ** 2)
    return gap, gap / se if se > 0 else float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="a wmkit.diffusion.rl.run folder (trained into it if empty)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="actor-critic seeds (ac_seed)")
    p.add_argument("--ac-steps", type=int, default=0, help="actor-critic updates (0: the saved config's)")
    p.add_argument("--eval-episodes", type=int, default=0, help="real episodes per policy (0: the config's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="", help="write the rows as JSON here")
    a = p.parse_args(argv)
    if any(s < 0 for s in a.seeds):
        raise SystemExit("--seeds must be >= 0")
    torch.set_num_threads(a.threads)
    run_dir = Path(a.run_dir)
    t0 = time.perf_counter()
    if not (run_dir / "agent.json").exists():
        print(f"no agent in {run_dir}: training denoiser, reward/end model and a first agent (rl.run)", flush=True)
        run(agent_config_from_profile(run_dir=str(run_dir)), progress=False)
    model, rew_end, _, cfg = load_agent(run_dir)
    cfg = replace(cfg, ac_steps=a.ac_steps or cfg.ac_steps, eval_episodes=a.eval_episodes or cfg.eval_episodes)
    clips = record_episodes(cfg.env, cfg.episodes, cfg.seed, cfg.max_steps)
    n = clips[0].action_space.n
    random_eval = evaluate(cfg.env, cfg.size, cfg.eval_episodes, None, seed=10_000 + cfg.seed)
    print(f"world model {run_dir}; {cfg.ac_steps} actor-critic updates, {cfg.imagined} imagined trajectories of "
          f"{cfg.horizon} steps, adv_norm={cfg.adv_norm!r}; {cfg.eval_episodes} real episodes per policy")
    print(f"random policy: {random_eval['mean']:.2f} +- {random_eval['sem']:.2f}", flush=True)
    rows = []
    for s in a.seeds:
        ts = time.perf_counter()
        ac, _, _ = train_actor_critic(replace(cfg, ac_seed=s), model, rew_end, clips, n, progress=False)
        e = evaluate(cfg.env, cfg.size, cfg.eval_episodes, ac, seed=10_000 + cfg.seed)
        gap, z = paired_gap(e, random_eval)
        rows.append({"ac_seed": s, "mean": e["mean"], "sem": e["sem"], "gap": gap, "z": z,
                     "seconds": time.perf_counter() - ts})
        print(f"actor-critic seed {s}: {e['mean']:.2f} +- {e['sem']:.2f}   vs random {gap:+.2f} ({z:+.1f} s.e.)  "
              f"[{rows[-1]['seconds']:.0f} s]", flush=True)
    means = [r["mean"] for r in rows]
    m = sum(means) / len(means)
    sd = math.sqrt(sum((x - m) ** 2 for x in means) / (len(means) - 1)) if len(means) > 1 else float("nan")
    print(f"mean over {len(rows)} seeds: {m:.2f} (s.d. between seeds {sd:.2f}); random {random_eval['mean']:.2f}; "
          f"seeds above random by > 2 s.e.: {sum(r['z'] > 2 for r in rows)}/{len(rows)}; "
          f"total {time.perf_counter() - t0:.0f} s")
    out = {"run_dir": str(run_dir), "ac_steps": cfg.ac_steps, "eval_episodes": cfg.eval_episodes,
           "random": {k: random_eval[k] for k in ("mean", "sem")}, "seeds": rows, "mean_over_seeds": m,
           "sd_between_seeds": sd}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
