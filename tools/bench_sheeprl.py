"""wmkit's DreamerV3 update against sheeprl's, at the same model size, in the same process.

sheeprl (https://github.com/Eclectic-Sheep/sheeprl, PyPI ``sheeprl==0.8.4``) is a public PyTorch port of
DreamerV3 (Hafner et al., 2023). This script is an EXTERNAL baseline: it imports sheeprl's own
``build_agent`` and its own one-update function ``sheeprl.algos.dreamer_v3.dreamer_v3.train`` (world model,
then actor and critic in imagination, each with backward, gradient clipping and an Adam step) plus the
slow-critic EMA that sheeprl's main loop does before each ``train``; no sheeprl code is copied into wmkit.

For each wmkit size preset it configures sheeprl's model with the same dimensions (GRU units = ``deter``,
RSSM hidden layers and GRU input layer = ``hidden``, ``stoch`` x ``classes`` categorical latents, MLP
``units`` x ``mlp_layers`` for reward/continue/actor/critic, CNN multiplier = ``cnn_depth`` with 4 stride-2
stages on 64x64x3 images, 255 two-hot bins, 17 discrete actions, horizon 15, the paper's Adam settings),
prints both parameter counts part by part, then times both updates on the same synthetic batch (B=16, T=64
by default), interleaved (one call of each per round, so load on a shared machine hits both alike), same
thread count, warm-up rounds excluded. sheeprl's distributions run without argument validation, as
sheeprl's cli sets before every run (``--validated`` also times them with it: ~2 % at ``tiny``). ``--bf16``
also times both in bf16 autocast (sheeprl: ``fabric.precision=bf16-mixed``).
It prints JSON lines (``wmkit.bench.emit``) with the dimensions.

Setup (sheeprl and the few pure-python packages it imports, pinned, into a folder; torch is never
installed, the one of .venv is used)::

    bash tools/bench_sheeprl.sh /tmp/sl
    PYTHONPATH=/tmp/sl .venv/bin/python tools/bench_sheeprl.py --threads 1            # CPU
    PYTHONPATH=/tmp/sl .venv/bin/python tools/bench_sheeprl.py --device cuda --compile  # GPU
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch.distributions import Distribution

from wmkit.bench import emit, interleaved
from wmkit.dreamer.agent import Agent
from wmkit.dreamer.bench import image_path, synthetic_batch
from wmkit.dreamer.config import DreamerConfig
from wmkit.malloc import applied as keeps_freed_memory
from wmkit.utils import pick_device

N_ACT = 17


def cv2_placeholder() -> bool:
    """Let sheeprl import without OpenCV; True if a placeholder was installed.

    ``sheeprl.utils.env`` imports ``cv2`` at module level for its frame-resizing environment wrappers, which one update
    never calls. On a machine without OpenCV (the lent GPU's image: the 61 MB wheel does not fit the device tool's
    carry) a module that raises on any attribute stands in, so a call would fail loudly instead of timing something
    else. With OpenCV installed (tools/bench_sheeprl.sh) nothing changes."""
    import importlib.util
    import types

    if importlib.util.find_spec("cv2") is not None:
        return False
    mod = types.ModuleType("cv2", "placeholder: OpenCV is not installed (tools/bench_sheeprl.py)")

    def __getattr__(name):  # AttributeError, so that hasattr() and inspect work; any real use fails with this text
        raise AttributeError(f"cv2.{name}: OpenCV is not installed here; tools/bench_sheeprl.py times sheeprl's "
                             "update, which does not use it (install opencv-python-headless for anything else)")

    mod.__getattr__ = __getattr__
    sys.modules["cv2"] = mod
    return True


def sheeprl_config(cfg: DreamerConfig, B: int, T: int, device: torch.device, compile_: bool,
                   precision: str = "32-true"):
    """sheeprl's own DreamerV3 config (exp=dreamer_v3, Atari-style 64x64 rgb) resized to ``cfg``'s dims."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from sheeprl.utils.utils import dotdict

    over = [
        "exp=dreamer_v3", "algo.cnn_keys.encoder=[rgb]", "algo.mlp_keys.encoder=[]", "env.screen_size=64",
        f"algo.per_rank_batch_size={B}", f"algo.per_rank_sequence_length={T}",
        f"algo.horizon={cfg.imag_horizon}", f"algo.gamma={cfg.discount}", f"algo.lmbda={cfg.lam}",
        f"algo.dense_units={cfg.units}", f"algo.mlp_layers={cfg.mlp_layers}",
        f"algo.world_model.stochastic_size={cfg.stoch}", f"algo.world_model.discrete_size={cfg.classes}",
        f"algo.world_model.recurrent_model.recurrent_state_size={cfg.deter}",
        f"algo.world_model.recurrent_model.dense_units={cfg.hidden}",
        f"algo.world_model.transition_model.hidden_size={cfg.hidden}",
        f"algo.world_model.representation_model.hidden_size={cfg.hidden}",
        f"algo.world_model.encoder.cnn_channels_multiplier={cfg.cnn_depth}",
        f"algo.world_model.optimizer.lr={cfg.model_lr}", f"algo.world_model.optimizer.eps={cfg.model_eps}",
        f"algo.world_model.clip_gradients={cfg.model_clip}",
        f"algo.actor.optimizer.lr={cfg.actor_lr}", f"algo.actor.optimizer.eps={cfg.ac_eps}",
        f"algo.critic.optimizer.lr={cfg.critic_lr}", f"algo.critic.optimizer.eps={cfg.ac_eps}",
        f"algo.actor.clip_gradients={cfg.ac_clip}", f"algo.critic.clip_gradients={cfg.ac_clip}",
        f"algo.actor.ent_coef={cfg.actor_entropy}", f"algo.critic.tau={cfg.slow_critic_fraction}",
        f"algo.world_model.kl_dynamic={cfg.dyn_scale}", f"algo.world_model.kl_representation={cfg.rep_scale}",
        f"algo.world_model.kl_free_nats={cfg.free_nats}", f"algo.unimix={cfg.unimix}",
        f"fabric.accelerator={device.type}", f"fabric.precision={precision}",
        f"algo.compile.enabled={compile_}", "metric.log_level=0",
    ]
    with initialize_config_module("sheeprl.configs", version_base="1.3"):
        cfg = compose("config", overrides=over)
    return dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))   # as sheeprl's cli does


class SheeprlUpdate:
    """sheeprl's agent, optimisers and return normaliser, built as its ``main`` builds them."""

    def __init__(self, cfg: DreamerConfig, B: int, T: int, device: torch.device, compile_: bool,
                 precision: str = "32-true"):
        import gymnasium as gym
        import hydra
        from lightning.fabric import Fabric
        from sheeprl.algos.dreamer_v3.agent import build_agent
        from sheeprl.algos.dreamer_v3.utils import Moments
        from sheeprl.utils.metric import MetricAggregator

        # no metric aggregation (as with metric.log_level=0): sheeprl then skips its entropy metrics, the
        # cheaper path, so the baseline is not slowed down by logging
        MetricAggregator.disabled = True
        self.c = c = sheeprl_config(cfg, B, T, device, compile_, precision)
        # as sheeprl's cli does before every run (its default: no argument validation of distributions)
        Distribution.set_default_validate_args(c.distribution.validate_args)
        self.fabric = Fabric(accelerator=device.type, devices=1, precision=precision)
        obs_space = gym.spaces.Dict({"rgb": gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)})
        torch.manual_seed(0)
        self.wm, self.actor, self.critic, self.target_critic, _ = build_agent(
            self.fabric, (N_ACT,), False, c, obs_space)
        inst = lambda oc, params: hydra.utils.instantiate(oc, params=params, _convert_="all")  # noqa: E731
        opts = (inst(c.algo.world_model.optimizer, self.wm.parameters()),
                inst(c.algo.actor.optimizer, self.actor.parameters()),
                inst(c.algo.critic.optimizer, self.critic.parameters()))
        self.opts = self.fabric.setup_optimizers(*opts)
        m = c.algo.actor.moments
        self.moments = Moments(m.decay, m.max, m.percentile.low, m.percentile.high)
        self.steps = 0

    def param_counts(self) -> dict[str, int]:
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        wm = self.wm
        counts = {"encoder": n(wm.encoder), "rssm": n(wm.rssm), "decoder": n(wm.observation_model),
                  "reward": n(wm.reward_model), "cont": n(wm.continue_model), "actor": n(self.actor),
                  "critic": n(self.critic)}
        counts["world_model"] = n(wm)
        counts["total"] = counts["world_model"] + counts["actor"] + counts["critic"]
        return counts

    def batch(self, wb: dict) -> dict:
        """The same synthetic batch in sheeprl's layout: time first (T, B, ...), CHW float images, (T,B,1)."""
        t = lambda x: x.transpose(0, 1)  # noqa: E731
        return {"rgb": t(wb["image"]).permute(0, 1, 4, 2, 3).float().contiguous(),
                "actions": t(wb["action"]).contiguous(),
                "rewards": t(wb["reward"])[..., None].contiguous(),
                "terminated": t(wb["is_terminal"]).float()[..., None].contiguous(),
                "truncated": torch.zeros_like(t(wb["reward"]))[..., None],
                "is_first": t(wb["is_first"]).float()[..., None].contiguous()}

    def update(self, data: dict) -> None:
        """One gradient step exactly as sheeprl's main loop does it: slow-critic EMA, then ``train``."""
        from sheeprl.algos.dreamer_v3.dreamer_v3 import train

        c = self.c
        if self.steps % c.algo.critic.per_rank_target_network_update_freq == 0:
            tau = 1 if self.steps == 0 else c.algo.critic.tau
            for cp, tcp in zip(self.critic.module.parameters(), self.target_critic.parameters()):
                tcp.data.copy_(tau * cp.data + (1 - tau) * tcp.data)
        train(self.fabric, self.wm, self.actor, self.critic, self.target_critic, *self.opts,
              {k: v.clone() if k == "is_first" else v for k, v in data.items()}, None, c, False, (N_ACT,),
              self.moments)
        self.steps += 1


def changed_fraction(mods: dict, fn) -> dict[str, float]:
    """Fraction of parameter tensors of each module that ``fn`` changes (checks that all three parts step)."""
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in mods.items()}
    fn()
    return {k: float(np.mean([not torch.equal(a, p) for a, p in zip(before[k], m.parameters())]))
            for k, m in mods.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "size3m"], help="wmkit size presets")
    ap.add_argument("--batch", type=int, default=16, help="B, sequences per update")
    ap.add_argument("--length", type=int, default=64, help="T, steps per sequence")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (one update of each per round)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    ap.add_argument("--compile", action="store_true",
                    help="also time both with torch.compile (sheeprl algo.compile.enabled=True, its default "
                         "mode reduce-overhead = CUDA graphs; wmkit DreamerConfig(compile=True))")
    ap.add_argument("--bf16", action="store_true",
                    help="also time both in bf16 autocast (wmkit DreamerConfig(precision='bf16'); sheeprl "
                         "fabric.precision=bf16-mixed, Lightning's autocast), in the same interleaved run")
    ap.add_argument("--validated", action="store_true",
                    help="also time sheeprl with torch.distributions argument validation on (what this script "
                         "did before it set sheeprl's own default, validate_args=False), in the same run")
    ap.add_argument("--params", action="store_true", help="only print the parameter counts")
    args = ap.parse_args(argv)
    if cv2_placeholder():
        print("note: OpenCV is not installed; sheeprl's env module imports it, the update never calls it",
              file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    B, T = args.batch, args.length
    obs_space = {"image": ((64, 64, 3), np.uint8)}
    for size in args.sizes:
        cfg = DreamerConfig(size=size)   # recipe 2023: the paper, which sheeprl 0.8.4 follows
        agent = Agent(obs_space, {"n": N_ACT, "discrete": True}, cfg, device=device, seed=0)
        sl = SheeprlUpdate(cfg, B, T, device, compile_=False)
        ours, theirs = agent.param_counts(), sl.param_counts()
        dims = dict(size=size, deter=cfg.deter, hidden=cfg.hidden, stoch=f"{cfg.stoch}x{cfg.classes}",
                    units=cfg.units, mlp_layers=cfg.mlp_layers, cnn_depth=cfg.cnn_depth, B=B, T=T,
                    horizon=cfg.imag_horizon, device=str(device),
                    # one process, so both ports run under the same glibc setting (wmkit.malloc; set
                    # WMKIT_KEEP_FREED_MEMORY=0 for glibc's default)
                    allocator="keep_freed" if keeps_freed_memory() else "glibc_default")
        emit("dreamer_vs_sheeprl", "params", ours["total"], "parameters", impl="wmkit", parts=ours, **dims)
        emit("dreamer_vs_sheeprl", "params", theirs["total"], "parameters", impl="sheeprl 0.8.4", parts=theirs,
             **dims)
        print(f"{size}: parameters  " + "  ".join(f"{k} {ours[k]:,}/{theirs[k]:,}" for k in ours)
              + "  (wmkit/sheeprl)", file=sys.stderr)
        if args.params:
            continue
        wb = synthetic_batch(B, T, N_ACT, device)
        sb = sl.batch(wb)
        dims.update(params_wmkit=ours["total"], params_sheeprl=theirs["total"])
        fns = {"wmkit_update_ms": lambda agent=agent, wb=wb: agent.update(wb),
               "sheeprl_update_ms": lambda sl=sl, sb=sb: sl.update(sb),
               # the image part alone (encoder + decoder CNN forward and backward): the same convolutions,
               # norms and activations in both ports, so no implementation can be faster than this
               "wmkit_image_path_ms": lambda agent=agent, wb=wb: image_path(agent.wm, wb["image"])}
        if args.compile:
            ccfg = DreamerConfig(size=size, compile=True)
            cagent = Agent(obs_space, {"n": N_ACT, "discrete": True}, ccfg, device=device, seed=0)
            csl = SheeprlUpdate(cfg, B, T, device, compile_=True)
            fns["wmkit_compiled_update_ms"] = lambda cagent=cagent, wb=wb: cagent.update(wb)
            fns["sheeprl_compiled_update_ms"] = lambda csl=csl, sb=sb: csl.update(sb)
        if args.bf16:
            bcfg = DreamerConfig(size=size, precision="bf16")
            bagent = Agent(obs_space, {"n": N_ACT, "discrete": True}, bcfg, device=device, seed=0)
            bsl = SheeprlUpdate(cfg, B, T, device, compile_=False, precision="bf16-mixed")
            fns["wmkit_bf16_update_ms"] = lambda bagent=bagent, wb=wb: bagent.update(wb)
            fns["sheeprl_bf16_update_ms"] = lambda bsl=bsl, sb=sb: bsl.update(sb)
        if args.validated:
            def validated(sl=sl, sb=sb):
                Distribution.set_default_validate_args(True)
                try:
                    sl.update(sb)
                finally:
                    Distribution.set_default_validate_args(sl.c.distribution.validate_args)
            fns["sheeprl_validated_update_ms"] = validated
        t0 = time.perf_counter()
        samples = interleaved(fns, warmup=args.warmup, repeat=args.repeat, sync=device)
        best = {k: min(v) for k, v in samples.items()}
        # sanity, after the warm-up (at the very first step the zero-initialised output layers of the critic and
        # reward heads block the gradients of the layers below): one more update of sheeprl moves every
        # parameter tensor of the world model, the actor and the critic
        frac = changed_fraction({"world_model": sl.wm, "actor": sl.actor, "critic": sl.critic},
                                fns["sheeprl_update_ms"])
        emit("dreamer_vs_sheeprl", "sheeprl_params_changed_by_one_update", min(frac.values()), "fraction",
             parts=frac, **dims)
        for k, v in best.items():
            emit("dreamer_vs_sheeprl", k, v, "ms", median_ms=float(np.median(samples[k])),
                 samples_ms=[round(s, 2) for s in samples[k]], **dims)
        emit("dreamer_vs_sheeprl", "sheeprl_over_wmkit", best["sheeprl_update_ms"] / best["wmkit_update_ms"], "x",
             median_ratio=float(np.median(samples["sheeprl_update_ms"]) / np.median(samples["wmkit_update_ms"])),
             **dims)
        # the best ratio any port could reach if everything but the image path were free (same run)
        img_ms = best["wmkit_image_path_ms"]
        emit("dreamer_vs_sheeprl", "image_path_share_of_wmkit", img_ms / best["wmkit_update_ms"], "fraction", **dims)
        emit("dreamer_vs_sheeprl", "sheeprl_over_image_path_bound", best["sheeprl_update_ms"] / img_ms, "x",
             note="upper bound of sheeprl/wmkit if all but the conv encoder/decoder cost nothing", **dims)
        if args.compile:
            emit("dreamer_vs_sheeprl", "sheeprl_compiled_over_wmkit_compiled",
                 best["sheeprl_compiled_update_ms"] / best["wmkit_compiled_update_ms"], "x", **dims)
        if args.validated:
            emit("dreamer_vs_sheeprl", "sheeprl_validated_over_sheeprl",
                 best["sheeprl_validated_update_ms"] / best["sheeprl_update_ms"], "x",
                 note="cost of torch.distributions argument checks, which sheeprl's cli turns off", **dims)
        if args.bf16:
            emit("dreamer_vs_sheeprl", "sheeprl_bf16_over_wmkit_bf16",
                 best["sheeprl_bf16_update_ms"] / best["wmkit_bf16_update_ms"], "x", note="both in bf16 autocast",
                 **dims)
            emit("dreamer_vs_sheeprl", "sheeprl_over_wmkit_bf16",
                 best["sheeprl_update_ms"] / best["wmkit_bf16_update_ms"], "x",
                 note="sheeprl's default fp32 (32-true) against wmkit's bf16 switch", **dims)
        print(f"{size}: " + "  ".join(f"{k}={v:.1f}" for k, v in best.items())
              + f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
