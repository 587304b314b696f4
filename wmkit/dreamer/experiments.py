"""The one-config-everywhere experiment and its ablations (Hafner et al. 2023, Sec. 3 and the ablation
figure), as used by ``notebooks/02c_dreamer_one_config.ipynb``.

:func:`run_variant` trains one ``(env, reward_scale, ablation)`` combination with the SAME
``DreamerConfig`` and returns its returns plus :func:`diagnose`'s numbers. The diagnosis measures the
mechanisms that symlog/two-hot and return normalisation protect, so that a short run already shows what
breaks without them, before the returns have had time to separate:

* ``reward_rel_err`` -- mean |predicted - real| reward on replayed sequences (posterior states), divided
  by the mean |real reward|. Scale-free: 0 is perfect, 1 is no better than predicting zero.
* ``obs_rel_err`` -- mean |decoded - real| observation (raw space, posterior states) / mean |real|:
  how well the representation describes the input. If the reward loss swamps the world-model
  gradient, this stays high. (``dec_loss`` is reported too, but it lives in symlog space for vectors
  and so cannot be compared with the ablation, whose decoder regresses raw vectors.)
* ``wm_grad_norm`` -- the world model's gradient norm before clipping.
* ``entropy_vs_advantage`` -- actor_entropy / mean |normalised advantage|: how much the fixed entropy
  bonus (3e-4) weighs against the policy-gradient signal. Return normalisation keeps it the same for
  every reward scale above 1; without it the bonus is negligible for large rewards.
"""

from __future__ import annotations

import numpy as np
import torch

from wmkit.dreamer.envs import random_returns
from wmkit.dreamer.train import TrainConfig, Trainer, train


@torch.no_grad()
def diagnose(trainer: Trainer, batch_size: int = 16) -> dict:
    """Scale-free health numbers of a trained agent (see the module docstring)."""
    rows = [r for r in trainer.logger.history if "train/wm_loss" in r]
    if not rows:
        raise ValueError("diagnose() needs a run that logged at least one update; raise steps or log_every")
    last = rows[-1]
    T = trainer.cfg.batch_length
    batch = trainer.replay.sample(batch_size, T, trainer.device, train=False)
    rep = trainer.agent.imagine_report(batch, context=T, horizon=0)   # posterior states only
    real, pred = rep["real_reward"][:, 1:], rep["reward"][:, 1:]        # (B, T-1); step 0 has no reward
    err = float(np.abs(pred - real).mean() / max(np.abs(real).mean(), 1e-12))
    if "real" in rep:   # images: uint8 frames
        obs_real, obs_pred = rep["real"].astype(np.float32), rep["imagined"].astype(np.float32)
    else:               # vectors, decoded back to raw space (so that ablations compare fairly)
        obs_real, obs_pred = rep["real_vector"], rep["imagined_vector"]
    obs_err = float(np.abs(obs_pred - obs_real).mean() / max(np.abs(obs_real).mean(), 1e-12))
    return {"reward_rel_err": err, "obs_rel_err": obs_err, "dec_loss": last["train/dec_loss"],
            "wm_grad_norm": last["train/wm_grad_norm"],
            "reward_loss": last["train/reward_loss"], "return_scale": last["train/return_scale"],
            "advantage_abs": last["train/advantage_abs"], "actor_entropy": last["train/actor_entropy"],
            "entropy_vs_advantage": trainer.agent.cfg.actor_entropy / max(last["train/advantage_abs"], 1e-12)}


def run_variant(env: str, steps: int, *, run_dir: str, reward_scale: float = 1.0, ablation: str = "",
                batch_size: int = 16, batch_length: int = 16, train_ratio: float = 256, prefill: int = 500,
                eval_episodes: int = 5, random_episodes: int = 20, seed: int = 0, save_every: int = 0,
                resume: bool = False) -> dict:
    """Train one combination with the one config; return its returns, curve and diagnosis.

    ``save_every=0`` checkpoints only at the end; ``resume=True`` continues ``run_dir``'s last checkpoint
    (the gpu profile's runs take hours).
    """
    cfg = TrainConfig(env=env, steps=steps, batch_size=batch_size, batch_length=batch_length,
                      train_ratio=train_ratio, prefill=min(prefill, steps // 2), eval_every=max(1, steps // 4),
                      eval_episodes=eval_episodes, log_every=max(1, steps // 8), save_every=save_every or steps,
                      reward_scale=reward_scale, ablation=ablation, video=False, run_dir=run_dir, seed=seed,
                      resume=resume)
    t = train(cfg)
    return {"env": env, "scale": reward_scale, "ablation": ablation or "full",
            "random": float(np.mean(random_returns(env, random_episodes, seed, reward_scale))),
            "dreamer": t.evals[-1]["eval/return"], "curve": [e["eval/return"] for e in t.evals],
            "steps_per_s": t.summary["env_steps_per_s"], "trainer": t, **diagnose(t)}


def _run_detached(kwargs: dict) -> dict:
    """One :func:`run_variant` whose trainer is replaced by its logged rows (``history``): a trainer holds
    environments and cannot cross a process boundary."""
    r = run_variant(**kwargs)
    r["history"] = r.pop("trainer").logger.history
    return r


def run_variants(specs: list[dict], workers: int = 1) -> list[dict]:
    """:func:`run_variant` for each dict of keyword arguments in ``specs``; results in the order of ``specs``.

    Each result carries ``history`` (the trainer's logged rows) instead of ``trainer``. ``workers > 1`` runs
    the variants in that many processes of one torch thread each (:func:`wmkit.utils.process_pool`): the
    runs are independent, and the tiny models gain little from a second thread (about 1.1x here), so two
    processes on two cores do nearly twice the work. ``workers=1`` runs them one by one in this process with
    its thread count; with one thread the numbers are identical to the workers' (tested).
    """
    if workers < 1:
        raise ValueError(f"run_variants: workers must be >= 1, got {workers}")
    if workers == 1 or len(specs) <= 1:
        return [_run_detached(kw) for kw in specs]
    from wmkit.utils import process_pool

    with process_pool(min(workers, len(specs))) as pool:
        futures = [pool.submit(_run_detached, kw) for kw in specs]
        return [f.result() for f in futures]


def fit_heads(scales=(0.001, 1.0, 1000.0), steps: int = 400, n: int = 512, dim: int = 16, units: int = 64,
              lr: float = 1e-4, clip: float = 1000.0, seed: int = 0) -> dict:
    """The symlog/two-hot mechanism in isolation: regress the same targets, multiplied by each scale.

    A two-hot head (255 symlog-spaced bins, cross-entropy) and a plain MSE head (one output, squared
    error in raw space), both with one hidden layer, are fitted to ``y = scale * sigmoid(w . x)`` from
    random features with the world model's optimiser settings (Adam, lr 1e-4, global-norm clip 1000).
    Returns ``{(head, scale): {"rel_err": [...], "grad_norm": [...]}}`` per step (both measured before
    that step's update), where rel_err is mean |prediction - y| / mean |y| on the training points
    (1 = no better than predicting 0).
    """
    from wmkit.dreamer.ablations import MSEHead
    from wmkit.dreamer.networks import TwoHotHead

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)                                        # (n, dim)
    base = torch.sigmoid(x @ torch.randn(dim, generator=g))                     # (n,) in (0, 1)
    out = {}
    for scale in scales:
        y = scale * base                                                        # (n,)
        for name in ("two-hot", "mse"):
            torch.manual_seed(seed)
            head = TwoHotHead(dim, units, 1, "layer", 255, "symlog") if name == "two-hot" else \
                MSEHead(dim, units, 1, "layer")
            opt = torch.optim.Adam(head.parameters(), lr=lr, eps=1e-8)
            rel, norms = [], []
            for _ in range(steps):
                o = head(x)
                with torch.no_grad():   # the error of the prediction this step's gradient is taken at
                    rel.append(float((head.pred(o) - y).abs().mean() / y.abs().mean()))
                loss = head.loss(o, y).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norms.append(float(torch.nn.utils.clip_grad_norm_(head.parameters(), clip)))
                opt.step()
            out[(name, scale)] = {"rel_err": rel, "grad_norm": norms}
    return out
