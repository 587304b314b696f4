"""``wmkit worldmodels collect | train-vae | train-mdnrnn | train-controller | dream``.

The paper's procedure (Ha & Schmidhuber 2018, Car Racing experiment, "Procedure"), one subcommand per step::

    wmkit worldmodels collect                  # 1. random rollouts  -> runs/worldmodels/episodes
    wmkit worldmodels train-vae                # 2. V                -> runs/worldmodels/vae
    wmkit worldmodels train-mdnrnn             # 3. M                -> runs/worldmodels/mdnrnn
    wmkit worldmodels train-controller         # 4. C by CMA-ES in the dream, evaluated in the real env
    wmkit worldmodels dream --tau 1.15         # re-dream a recorded episode; writes frames + a PNG strip

The VizDoom TakeCover experiment (section 5: C trained only in the dream), same steps, its own folders::

    wmkit worldmodels doom collect             # random-repeat rollouts -> runs/worldmodels/doom/episodes
    wmkit worldmodels doom train-vae           # V, z = 64
    wmkit worldmodels doom train-mdnrnn        # M: LSTM + 5 Gaussians + done head, whole episodes (TBPTT)
    wmkit worldmodels doom train-controller --tau 1.15   # CMA-ES in the dream, then real game vs random
    wmkit worldmodels doom evaluate            # a trained C and the random policy in the real game
    wmkit worldmodels doom policies            # dreamed vs real survival of five fixed policies (Spearman)

(``wmkit worldmodels <step> --env doom`` is the same as ``wmkit worldmodels doom <step>``.)
Sizes default to the active profile (WMKIT_PROFILE=smoke|cpu|gpu); every option is in ``--help``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wmkit.config import parse_config
from wmkit.worldmodels import doom_train as D
from wmkit.worldmodels import train as T
from wmkit.worldmodels.data import episode_paths, load_episode
from wmkit.worldmodels.dream_env import dream_from_episode

ROOT = T.ROOT


@dataclass
class DreamConfig:
    """Re-dream a recorded episode with M (real actions, M's own samples) and save real vs dream."""

    data_dir: str = f"{ROOT}/episodes"
    """Folder of episode .npz files."""
    episode: int = -1
    """Index of the episode in data_dir (sorted; -1 = the last one)."""
    vae_dir: str = f"{ROOT}/vae"
    """Run folder of a trained V."""
    mdnrnn_dir: str = f"{ROOT}/mdnrnn"
    """Run folder of a trained M."""
    start: int = 50
    """First frame (50 skips CarRacing's zoom-in animation)."""
    context: int = 10
    """Real frames M reads before it starts dreaming."""
    horizon: int = 100
    """Dreamed steps."""
    tau: float = 1.0
    """Temperature (paper: 1.0 ... 1.3)."""
    seed: int = 0
    """Seed of the dream's randomness."""
    out: str = f"{ROOT}/dream"
    """Output prefix: <out>.npz (real, dream, rewards) and <out>.png (every 10th frame, real over dream)."""


def dream(cfg: DreamConfig) -> dict:
    from PIL import Image

    vae, m = T.load_vae(cfg.vae_dir), T.load_mdnrnn(cfg.mdnrnn_dir)
    ep = load_episode(episode_paths(cfg.data_dir)[cfg.episode])
    start = min(cfg.start, max(0, len(ep) - cfg.context - cfg.horizon))
    res = dream_from_episode(vae, m, ep, start, cfg.horizon, cfg.context, cfg.tau, cfg.seed)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".npz"), **res)
    idx = slice(0, cfg.horizon, 10)
    strip = np.concatenate([np.concatenate(list(res["real"][idx]), 1),
                            np.concatenate(list(res["dream"][idx]), 1)], 0)
    Image.fromarray(strip).save(out.with_suffix(".png"))
    mse = float(np.mean((res["real"] / 255.0 - res["dream"] / 255.0) ** 2))
    summary = {"out": str(out.with_suffix(".npz")), "tau": cfg.tau, "frames": cfg.horizon,
               "pixel_mse_real_vs_dream": mse, "dream_return": float(res["dream_reward"].sum()),
               "real_return": float(res["real_reward"].sum())}
    print(json.dumps(summary))
    return summary


COMMANDS = {
    "collect": (T.CollectConfig, lambda c: print(f"{len(T.run_collect(c))} episodes in {c.out_dir}")),
    "train-vae": (T.TrainVAEConfig, lambda c: T.train_vae(c)),
    "train-mdnrnn": (T.TrainMDNRNNConfig, lambda c: T.train_mdnrnn(c)),
    "train-controller": (T.TrainControllerConfig,
                         lambda c: print(json.dumps({k: v for k, v in T.train_controller(c)[1].items()
                                                     if k != "history"}))),
    "dream": (DreamConfig, dream),
}


@dataclass
class DoomEvalConfig:
    """Play a dream-trained Doom controller and the random policy in the real game; print survival as JSON."""

    controller_dir: str = f"{D.DOOM_ROOT}/controller"
    """Run folder of `wmkit worldmodels doom train-controller`."""
    vae_dir: str = f"{D.DOOM_ROOT}/vae"
    """Run folder of the Doom V."""
    mdnrnn_dir: str = f"{D.DOOM_ROOT}/mdnrnn"
    """Run folder of the Doom M."""
    episodes: int = 100
    """Real episodes for each policy (paper: 100)."""
    max_steps: int = 2100
    """Frame cap per episode (paper: 2,100)."""
    seed: int = D.EVAL_SEED
    """Episode i uses seed + i (the same seeds for both policies)."""
    workers: int = 2
    """Processes playing the real games (the result does not depend on it)."""


def doom_evaluate(cfg: DoomEvalConfig) -> dict:
    from wmkit.checkpoint import load_state
    from wmkit.worldmodels.doom import mean_and_se, real_survival

    params = load_state(D._ckpt(cfg.controller_dir))["params"]
    vae, (m, _, _) = T.load_vae(cfg.vae_dir, "cpu"), D.load_doom_mdnrnn(cfg.mdnrnn_dir, "cpu")
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    w = cfg.workers
    real = real_survival(params, seeds, vae, m, cfg.max_steps, progress=True, workers=w)["steps"]
    rand = real_survival(None, seeds, max_steps=cfg.max_steps, progress=True, workers=w)["steps"]
    every = real_survival(None, seeds, max_steps=cfg.max_steps, policy="random every frame", workers=w)["steps"]
    (rm, rse), (bm, bse), (em, ese) = mean_and_se(real), mean_and_se(rand), mean_and_se(every)
    out = {"episodes": cfg.episodes, "controller_mean": rm, "controller_se": rse, "random_mean": bm,
           "random_se": bse, "random_every_frame_mean": em, "random_every_frame_se": ese}
    print(json.dumps(out))
    return out


@dataclass
class DoomPoliciesConfig:
    """Does M's dream rank simple policies as the real game does? Dreamed vs real survival of five fixed
    policies (the data policy, random every frame, stand still, hold left, hold right) and their Spearman."""

    mdnrnn_dir: str = f"{D.DOOM_ROOT}/mdnrnn"
    """Run folder of the Doom M (the dream)."""
    episodes: int = 100
    """Real episodes per policy."""
    dreams: int = 64
    """Dreams per policy (the same starts and random numbers for every policy)."""
    tau: float = 1.15
    """Dream temperature."""
    dream_max_steps: int = 1000
    """Frame cap of a dream."""
    max_steps: int = 2100
    """Frame cap of a real episode (paper: 2,100)."""
    seed: int = D.EVAL_SEED
    """Real episode i uses seed + i."""


def doom_policies(cfg: DoomPoliciesConfig) -> dict:
    from wmkit.worldmodels.doom import policy_table

    m, mu0, lv0 = D.load_doom_mdnrnn(cfg.mdnrnn_dir, "cpu")
    rows, rho = policy_table(m, mu0, lv0, [cfg.seed + i for i in range(cfg.episodes)], cfg.dreams, cfg.tau,
                             cfg.dream_max_steps, cfg.max_steps)
    out = {"rows": rows, "spearman": rho}
    print(json.dumps(out))
    return out


DOOM_COMMANDS = {
    "collect": (D.DoomCollectConfig, lambda c: print(f"{len(D.run_doom_collect(c))} episodes in {c.out_dir}")),
    "train-vae": (D.DoomVAEConfig, lambda c: D.train_doom_vae(c)),
    "train-mdnrnn": (D.DoomMDNRNNConfig, lambda c: D.train_doom_mdnrnn(c)),
    "train-controller": (D.DoomControllerConfig,
                         lambda c: print(json.dumps({k: v for k, v in D.train_doom_controller(c)[1].items()
                                                     if k not in ("history", "real_steps", "random_steps")}))),
    "evaluate": (DoomEvalConfig, doom_evaluate),
    "policies": (DoomPoliciesConfig, doom_policies),
}


def _doom_argv(argv: list[str]) -> list[str] | None:
    """``doom <step> ...`` or ``<step> ... --env doom`` -> [<step>, ...]; None when not a Doom command."""
    if argv and argv[0] == "doom":
        return argv[1:]
    for i, a in enumerate(argv):
        if a == "--env" and i + 1 < len(argv) and argv[i + 1] == "doom":
            return argv[:i] + argv[i + 2:]
        if a == "--env=doom":
            return argv[:i] + argv[i + 1:]
    return None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    doom = _doom_argv(argv)
    if doom is not None:
        if not doom or doom[0] not in DOOM_COMMANDS:
            print(__doc__.strip())
            print("\ndoom commands: " + ", ".join(DOOM_COMMANDS))
            if doom and doom[0] not in ("-h", "--help"):
                raise SystemExit(f"wmkit worldmodels doom: unknown command {doom[0]!r}")
            raise SystemExit(0 if doom else 2)
        cls, fn = DOOM_COMMANDS[doom[0]]
        fn(parse_config(cls, doom[1:], prog=f"wmkit worldmodels doom {doom[0]}"))
        return
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(COMMANDS) + ", doom <step>")
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"wmkit worldmodels: unknown command {argv[0]!r}")
        raise SystemExit(0 if argv else 2)
    cls, fn = COMMANDS[argv[0]]
    cfg = parse_config(cls, argv[1:], prog=f"wmkit worldmodels {argv[0]}")
    fn(cfg)


if __name__ == "__main__":
    main()
