"""``wmkit bench dreamer``: milliseconds per full DreamerV3 update (world model + actor + critic).

For each size preset (default: ``tiny`` and the ~3M ``size3m``) at B=16, T=64 this prints one JSON
line per figure, naming the model's dimensions (deter, hidden, stoch x classes, MLP units/layers, CNN
depth, parameter count) and B, T, so the figure can be set beside other implementations configured
the same way:

* ``update_ms``        -- ``Agent.update`` as shipped (eager; ``--compile`` adds a compiled variant);
* ``plain_update_ms``  -- OUR OWN deliberately plain port of the SAME model and math, written the way a
  first PyTorch port usually is: ``torch.distributions`` objects, prior and posterior computed inside
  the per-step loop, imagination with autograd on for everything, NCHW convolutions, ``.item()`` after
  every loss, separate backward passes, for-loop optimisers and clipping. It is a baseline we wrote,
  not a measurement of any published implementation;
* ``speedup_vs_plain`` -- the ratio of the two, measured in the same run;
* ``bf16_update_ms`` / ``bf16_speedup`` (``--bf16``) -- the same update under bf16 autocast
  (``DreamerConfig(precision="bf16")``), timed in the same interleaved run;
* ``atari100k_v1_projection_h`` -- hours of updates for one Atari 100k game in the 2023 code's
  ``atari100k`` setting (100k env steps at train ratio 1024 with B*T = 1024: one update per env step),
  update time x 100,000 (acting, replay and evaluation not included). The v1 setting uses size ``s``.

``--levers`` times, in ONE interleaved run (same load for all), the speed levers one by one as ratios to
the shipped update (``lever_*`` lines): fused and for-loop Adam instead of the shipped foreach Adam,
torch.compile of the per-step cells (with ``--compile``), and the parts of the update on their own --
the image path (encoder + decoder forward and backward) in the shipped channels-last layout and in
plain NCHW, the posterior loop (``observe``), the imagination loop, and one acting step under
``no_grad`` (shipped) and ``inference_mode``. See ``levers`` below.

The training-loop figure (environment steps per second of the whole loop) is added by
``wmkit.dreamer.train.bench_loop`` when that function exists (the engine's half of the stage).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.distributions as td

from wmkit import malloc
from wmkit.bench import emit, interleaved
from wmkit.dreamer.agent import Agent, size_table
from wmkit.dreamer.config import DreamerConfig
from wmkit.dreamer.math import lambda_return, symlog
from wmkit.utils import pick_device


def synthetic_batch(B: int, T: int, n_act: int, device, seed: int = 0, obs: str = "image") -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {"action": torch.nn.functional.one_hot(torch.randint(0, n_act, (B, T), generator=g), n_act).float(),
             "reward": (torch.rand(B, T, generator=g) < 0.1).float(),
             "is_first": torch.zeros(B, T, dtype=torch.bool), "is_terminal": torch.zeros(B, T, dtype=torch.bool)}
    batch["is_first"][:, 0] = True
    if obs == "image":
        batch["image"] = torch.randint(0, 256, (B, T, 64, 64, 3), dtype=torch.uint8, generator=g)
    else:
        batch["vector"] = torch.randn(B, T, 16, generator=g)
    return {k: v.to(device) for k, v in batch.items()}


class PlainUpdate:
    """A straightforward port of the same update on the same networks (see the module docstring)."""

    def __init__(self, agent: Agent):
        self.a = agent
        c = agent.cfg
        self.opts = {"wm": torch.optim.Adam(agent.wm.parameters(), lr=c.model_lr, eps=c.model_eps, foreach=False),
                     "actor": torch.optim.Adam(agent.actor.parameters(), lr=c.actor_lr, eps=c.ac_eps, foreach=False),
                     "critic": torch.optim.Adam(agent.critic.parameters(), lr=c.critic_lr, eps=c.ac_eps,
                                                foreach=False)}

    def _dist(self, logits):   # logits are unimix log-probs (B, S, K)
        return td.Independent(td.OneHotCategoricalStraightThrough(logits=logits), 1)

    def update(self, batch: dict) -> dict:
        a, c = self.a, self.a.cfg
        wm, rssm = a.wm, a.wm.rssm
        B, T = batch["is_first"].shape
        if "image" in batch:
            img = batch["image"].permute(0, 1, 4, 2, 3).contiguous().float() / 255.0 - 0.5  # NCHW
            embed = wm.encoder.cnn(img.reshape(B * T, 3, 64, 64)).permute(0, 2, 3, 1).reshape(B, T, -1)
        else:
            embed = wm.encoder.mlp(batch["vector"])
        deter, stoch = init = rssm.initial(B, embed.device)
        deters, stochs, kl_dyn, kl_rep = [], [], [], []
        for t in range(T):
            keep = (~batch["is_first"][:, t]).float()[:, None]
            deter, stoch = deter * keep + (1 - keep) * init[0], stoch * keep + (1 - keep) * init[1]
            deter = rssm.core(deter, stoch, rssm.action_input(batch["action"][:, t] * keep))
            prior = self._dist(rssm.prior_logits(deter))
            post_logits = rssm.post_logits(deter, rssm.post_embed(embed[:, t]))
            post = self._dist(post_logits)
            stoch = post.rsample().flatten(-2)
            kl_dyn.append(td.kl_divergence(self._dist(post_logits.detach()), prior))
            kl_rep.append(td.kl_divergence(post, self._dist(prior.base_dist.logits.detach())))
            deters.append(deter)
            stochs.append(stoch)
        feat = torch.cat([torch.stack(deters, 1), torch.stack(stochs, 1)], -1)
        if "image" in batch:
            x = wm.decoder.img_in(feat.reshape(B * T, -1)).reshape(-1, 4, 4, 8 * wm.decoder.depth)
            rec = wm.decoder.cnn(x.permute(0, 3, 1, 2).contiguous()).reshape(B, T, 3, 64, 64)
            dec = ((rec - img) ** 2).sum((-3, -2, -1))
        else:
            dec = ((wm.decoder.vec_out(wm.decoder.mlp(feat)) - symlog(batch["vector"])) ** 2).sum(-1)
        rew = wm.reward.loss(wm.reward(feat), batch["reward"])
        cont = torch.nn.functional.binary_cross_entropy_with_logits(
            wm.cont(feat).squeeze(-1), 1.0 - batch["is_terminal"].float(), reduction="none")
        dyn = torch.stack(kl_dyn, 1).clamp(min=c.free_nats)
        rep = torch.stack(kl_rep, 1).clamp(min=c.free_nats)
        loss = (dec + rew + cont + c.dyn_scale * dyn + c.rep_scale * rep).mean()
        mets = {"wm_loss": loss.item(), "dec": dec.mean().item(), "rew": rew.mean().item(),
                "cont": cont.mean().item(), "dyn": dyn.mean().item(), "rep": rep.mean().item()}
        self.opts["wm"].zero_grad()
        loss.backward()
        mets["wm_gn"] = torch.nn.utils.clip_grad_norm_(wm.parameters(), c.model_clip, foreach=False).item()
        self.opts["wm"].step()
        # imagination with autograd on everywhere, actions from torch.distributions
        deter, stoch = feat[..., :c.deter].detach().reshape(B * T, -1), feat[..., c.deter:].detach().reshape(B * T, -1)
        feats, acts, logps, ents = [torch.cat([deter, stoch], -1)], [], [], []
        for _ in range(c.imag_horizon):
            logp, _ = a.actor(feats[-1].detach())
            pi = td.OneHotCategorical(logits=logp)
            act = pi.sample()
            logps.append(pi.log_prob(act))
            ents.append(pi.entropy())
            deter = rssm.core(deter, stoch, rssm.action_input(act))
            stoch = self._dist(rssm.prior_logits(deter)).rsample().flatten(-2)
            feats.append(torch.cat([deter, stoch], -1))
            acts.append(act)
        feats = torch.stack(feats)
        rew = wm.reward.pred(wm.reward(feats[1:]))
        con = (torch.sigmoid(wm.cont(feats[1:]).squeeze(-1)) > 0.5).float()
        val = a.critic.pred(a.critic(feats))
        rew = torch.cat([torch.zeros_like(rew[:1]), rew])
        con = torch.cat([1.0 - batch["is_terminal"].float().reshape(1, -1), con])
        ret = lambda_return(rew, val, con, c.discount, c.lam)
        weight = (torch.cumprod(c.discount * con, 0) / c.discount)[:-1].detach()
        _, scale = a.retnorm.update(ret.detach())
        adv = (ret - val[:-1]) / scale
        actor_loss = (-(torch.stack(logps) * adv.detach() + c.actor_entropy * torch.stack(ents)) * weight).mean()
        slow = a.slow_critic.pred(a.slow_critic(feats[:-1].detach())).detach()
        logits = a.critic(feats[:-1].detach())
        critic_loss = ((a.critic.loss(logits, ret.detach()) + a.critic.loss(logits, slow)) * weight).mean()
        mets.update(actor=actor_loss.item(), critic=critic_loss.item(), ret=ret.mean().item(),
                    scale=float(scale.item()))
        for name, l, mod in (("actor", actor_loss, a.actor), ("critic", critic_loss, a.critic)):
            self.opts[name].zero_grad()
            l.backward(retain_graph=True)
            mets[name + "_gn"] = torch.nn.utils.clip_grad_norm_(mod.parameters(), c.ac_clip, foreach=False).item()
            self.opts[name].step()
        for p, q in zip(a.critic.parameters(), a.slow_critic.parameters()):
            q.data.mul_(1 - c.slow_critic_fraction).add_(c.slow_critic_fraction * p.data)
        return mets


def run(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="wmkit bench dreamer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "size3m"], help="size presets to measure")
    ap.add_argument("--recipe", default="2023", choices=["2023", "2025"])
    ap.add_argument("--batch", type=int, default=16, help="B, sequences per update")
    ap.add_argument("--length", type=int, default=64, help="T, steps per sequence")
    ap.add_argument("--repeat", type=int, default=3, help="timed updates per variant")
    ap.add_argument("--warmup", type=int, default=1, help="untimed updates first")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    ap.add_argument("--obs", default="image", choices=["image", "vector"],
                    help="64x64 images (the paper's setting) or 16-dim vectors (no CNN)")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-port baseline")
    ap.add_argument("--compile", action="store_true", help="also time cfg.compile=True (torch.compile)")
    ap.add_argument("--bf16", action="store_true", help="also time precision='bf16' (autocast)")
    ap.add_argument("--no-loop", action="store_true", help="skip the whole-loop env steps/s figure")
    ap.add_argument("--loop-steps", type=int, default=64, help="timed env steps of the whole-loop figure")
    ap.add_argument("--levers", action="store_true",
                    help="time the speed levers and the parts of the update in one interleaved run (ratios)")
    ap.add_argument("--params", action="store_true",
                    help="only print the parameter count of every size preset (64x64 image, 17 actions)")
    args = ap.parse_args(argv)
    if args.params:
        for size, n in size_table(args.recipe).items():
            cfg = DreamerConfig(recipe=args.recipe, size=size)
            emit("dreamer", "params", n, "parameters", size=size, recipe=args.recipe, deter=cfg.deter,
                 hidden=cfg.hidden, stoch=f"{cfg.stoch}x{cfg.classes}", units=cfg.units,
                 mlp_layers=cfg.mlp_layers, cnn_depth=cfg.cnn_depth, blocks=cfg.blocks)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    B, T, n_act = args.batch, args.length, 17
    obs_space = {"image": ((64, 64, 3), np.uint8)} if args.obs == "image" else {"vector": ((16,), np.float32)}
    if args.levers:
        for size in args.sizes:
            levers(args, size, obs_space, device)
        return
    for size in args.sizes:
        cfg = DreamerConfig(recipe=args.recipe, size=size)
        agent = Agent(obs_space, {"n": n_act, "discrete": True}, cfg, device=device, seed=0)
        batch = synthetic_batch(B, T, n_act, device, obs=args.obs)
        extra = dict(size=size, recipe=args.recipe, obs=args.obs, deter=cfg.deter, hidden=cfg.hidden,
                     stoch=f"{cfg.stoch}x{cfg.classes}", units=cfg.units, mlp_layers=cfg.mlp_layers,
                     cnn_depth=cfg.cnn_depth, params=agent.param_counts()["total"], B=B, T=T,
                     horizon=cfg.imag_horizon, device=str(device))
        fns = {"update_ms": lambda agent=agent, batch=batch: agent.update(batch)}
        if not args.no_plain and cfg.cnn != "2023":
            print("(the plain port is written for the 2023 networks; skipped for this recipe)", file=sys.stderr)
        elif not args.no_plain:
            plain = PlainUpdate(agent)
            fns["plain_update_ms"] = lambda plain=plain, batch=batch: plain.update(batch)
        if args.compile:
            ccfg = DreamerConfig(recipe=args.recipe, size=size, compile=True)
            cagent = Agent(obs_space, {"n": n_act, "discrete": True}, ccfg, device=device, seed=0)
            fns["compiled_update_ms"] = lambda cagent=cagent, batch=batch: cagent.update(batch)
        if args.bf16:
            bcfg = DreamerConfig(recipe=args.recipe, size=size, precision="bf16")
            bagent = Agent(obs_space, {"n": n_act, "discrete": True}, bcfg, device=device, seed=0)
            fns["bf16_update_ms"] = lambda bagent=bagent, batch=batch: bagent.update(batch)
        samples = interleaved(fns, warmup=args.warmup, repeat=args.repeat, sync=device)
        results = {k: min(v) for k, v in samples.items()}
        for k, v in results.items():
            kw = {"baseline": "our own plain port of the same model (wmkit/dreamer/bench.py)"} \
                if k == "plain_update_ms" else {}
            emit("dreamer", k, v, "ms", median_ms=float(np.median(samples[k])), **kw, **extra)
        if "plain_update_ms" in results:
            emit("dreamer", "speedup_vs_plain", results["plain_update_ms"] / results["update_ms"], "x", **extra)
        if "compiled_update_ms" in results:
            emit("dreamer", "compile_speedup", results["update_ms"] / results["compiled_update_ms"], "x",
                 **extra)
        if "bf16_update_ms" in results:
            emit("dreamer", "bf16_speedup", results["update_ms"] / results["bf16_update_ms"], "x", **extra)
        best = min(results.get(k, float("inf")) for k in ("update_ms", "compiled_update_ms", "bf16_update_ms"))
        updates = 100_000 * 1024 / (B * T)    # v1 atari100k: 100k env steps, train ratio 1024
        emit("dreamer", "atari100k_v1_projection_h", best * updates / 3.6e6, "h", updates=updates,
             note="updates only, fastest variant of this run; v1 atari100k uses size s", **extra)
        print(f"{size:>8}: " + "  ".join(f"{k}={v:.1f}" for k, v in results.items())
              + f"  -> Atari 100k (v1) updates alone: {best * updates / 3.6e6:.1f} h", file=sys.stderr)
    if not args.no_loop:
        try:   # the engine's half: env steps per second of the whole training loop
            from wmkit.dreamer.train import bench_loop  # type: ignore[attr-defined]
        except ImportError:
            print("(whole-loop env steps/s: wmkit.dreamer.train.bench_loop not available yet)", file=sys.stderr)
        else:
            bench_loop(args, emit)


def image_path(wm, img: torch.Tensor, nchw: bool = False) -> None:
    """The image part of one update on its own: the 2023 encoder CNN and decoder (input layer + transposed
    CNN) forward and backward on (B, T, 64, 64, 3) uint8 frames, decoder fed random features. ``nchw``:
    contiguous NCHW activations (a plain port's layout) instead of the shipped channels-last memory."""
    x = img.float().div(255.0).sub(0.5).reshape(-1, 64, 64, 3).permute(0, 3, 1, 2)       # (N, 3, 64, 64)
    x = x.contiguous() if nchw else x                              # NCHW copy vs NHWC memory seen as NCHW
    emb = wm.encoder.cnn(x)                                                                # (N, 8d, 4, 4)
    feat = torch.randn(x.shape[0], wm.feat_dim, device=x.device)
    dec = wm.decoder.img_in(feat).reshape(-1, 4, 4, 8 * wm.decoder.depth).permute(0, 3, 1, 2)
    rec = wm.decoder.cnn(dec.contiguous() if nchw else dec)                               # (N, 3, 64, 64)
    ((rec - x).square().sum() + emb.square().mean()).backward()


def levers(args, size: str, obs_space: dict, device: torch.device) -> None:
    """The speed levers of the update, each timed in the same interleaved run, printed as ratios.

    Whole updates: shipped (foreach Adam / LaProp), fused Adam, for-loop Adam, compiled cells, and compiled
    cells + compiled CNNs (both with ``--compile``). Parts, to see where the time goes: the image path
    (encoder and decoder forward + backward on the batch) channels-last as shipped and NCHW as a plain
    port has it, the posterior loop (``observe`` forward + backward), the imagination loop (no_grad, B*T
    starts), and one acting step for B environments under no_grad (shipped) and inference_mode.
    """
    B, T, n_act = args.batch, args.length, 17
    make = lambda **kw: Agent(obs_space, {"n": n_act, "discrete": True},  # noqa: E731
                              DreamerConfig(recipe=args.recipe, size=size, **kw), device=device, seed=0)
    agent = make()
    batch = synthetic_batch(B, T, n_act, device, obs=args.obs)
    fns = {"update_ms": lambda: agent.update(batch)}
    if agent.cfg.optimizer == "adam":
        for name, kw in (("fused_adam", dict(fused=True)), ("forloop_adam", dict(foreach=False))):
            other = make()
            for k, mod in (("wm", other.wm), ("actor", other.actor), ("critic", other.critic)):
                g = other.opts[k].param_groups[0]
                other.opts[k] = torch.optim.Adam(mod.parameters(), lr=g["lr"], eps=g["eps"], **kw)
            fns[f"{name}_update_ms"] = lambda other=other: other.update(batch)
    if args.compile:
        cagent = make(compile=True)
        fns["compiled_cells_update_ms"] = lambda: cagent.update(batch)
        if "image" in obs_space:   # + the encoder and decoder CNNs compiled (fuses each norm with its SiLU)
            call = make(compile=True)
            call.wm.encoder.cnn = torch.compile(call.wm.encoder.cnn)    # the same parameters, wrapped
            call.wm.decoder.cnn = torch.compile(call.wm.decoder.cnn)
            fns["compiled_cells_cnn_update_ms"] = lambda: call.update(batch)
    wm, rssm = agent.wm, agent.wm.rssm
    data = {k: v for k, v in batch.items()}
    if "image" in data and wm.decoder.kind == "2023":
        fns["image_path_ms"] = lambda: image_path(wm, data["image"])
        fns["image_path_nchw_ms"] = lambda: image_path(wm, data["image"], nchw=True)
    embed = torch.randn(B, T, wm.encoder.out_dim, device=device)

    def observe() -> None:
        first = data["is_first"].clone()
        out = rssm.observe(embed, data["action"], first, rssm.initial(B, device), agent.gen)
        (out["deter"].square().mean() + out["post"].mean()).backward()

    fns["observe_ms"] = observe
    starts = (torch.randn(B * T, rssm.deter, device=device).tanh(),
              torch.zeros(B * T, rssm.stoch * rssm.classes, device=device))

    def imagine() -> None:
        with torch.no_grad():
            agent._imagine(*starts)

    fns["imagine_ms"] = imagine
    obs = {k: v[:, 0].cpu().numpy() for k, v in batch.items() if k in obs_space}
    obs["is_first"] = np.zeros(B, bool)
    state = agent.initial_state(B)
    fns["policy_no_grad_ms"] = lambda: agent.policy(obs, state)

    def policy_inference() -> None:
        with torch.inference_mode():
            agent.policy(obs, state)

    fns["policy_inference_mode_ms"] = policy_inference
    samples = interleaved(fns, warmup=args.warmup, repeat=args.repeat, sync=device)
    best = {k: min(v) for k, v in samples.items()}
    cfg = agent.cfg
    extra = dict(size=size, recipe=args.recipe, obs=args.obs, B=B, T=T, threads=torch.get_num_threads(),
                 device=str(device), params=agent.param_counts()["total"])
    for k, v in best.items():
        emit("dreamer", f"lever_{k}", v, "ms", median_ms=float(np.median(samples[k])), **extra)
    base = best["update_ms"]
    for k in ("fused_adam_update_ms", "forloop_adam_update_ms", "compiled_cells_update_ms",
              "compiled_cells_cnn_update_ms"):
        if k in best:   # > 1: the lever makes the whole update faster
            emit("dreamer", f"lever_speedup_{k[:-len('_update_ms')]}", base / best[k], "x", **extra)
    for k in ("image_path_ms", "observe_ms", "imagine_ms"):
        if k in best:   # share of one shipped update spent in this part (parts timed on their own)
            emit("dreamer", f"lever_share_{k[:-3]}", best[k] / base, "fraction", **extra)
    if "image_path_nchw_ms" in best:
        emit("dreamer", "lever_speedup_channels_last", best["image_path_nchw_ms"] / best["image_path_ms"], "x",
             **extra)
    emit("dreamer", "lever_speedup_inference_mode", best["policy_no_grad_ms"] / best["policy_inference_mode_ms"],
         "x", **extra)
    print(f"{size} ({cfg.dims()}): " + "  ".join(f"{k}={v:.1f}" for k, v in best.items()), file=sys.stderr)


def _malloc_worker(conn, size: str, batch: int, length: int, threads: int) -> None:
    """One benchmark process: build a DreamerV3 agent, then run the job named by each message, reply with
    (ms, minor page faults) of that call; ``None`` ends it (reply: peak RSS in MiB)."""
    import resource
    import time


    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    agent = Agent({"image": ((64, 64, 3), np.uint8)}, {"n": 17, "discrete": True},
                  DreamerConfig(size=size), device=cpu, seed=0)
    data = synthetic_batch(batch, length, 17, cpu)
    jobs = {"update": lambda: agent.update(data), "image_path": lambda: image_path(agent.wm, data["image"])}
    conn.send(malloc.applied())
    while (name := conn.recv()) is not None:
        faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        jobs[name]()
        conn.send(((time.perf_counter() - t0) * 1e3, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def malloc_run(argv: list[str]) -> None:
    """``wmkit bench malloc``: glibc's default allocator settings vs :func:`keep_freed_memory`, on a DreamerV3
    update and its image path (B x T frames through encoder and decoder), in two worker processes that take
    turns (one call of each per round), so load on a shared machine hits both alike."""
    import argparse
    import multiprocessing as mp
    import statistics

    ap = argparse.ArgumentParser(prog="wmkit bench malloc", description=malloc_run.__doc__)
    ap.add_argument("--sizes", nargs="+", default=["tiny"], help="DreamerV3 size presets")
    ap.add_argument("--batch", type=int, default=16, help="B, sequences per update")
    ap.add_argument("--length", type=int, default=64, help="T, steps per sequence")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    args = ap.parse_args(argv)
    if malloc._glibc() is None:
        raise SystemExit("wmkit bench malloc: this allocator is not glibc's (Linux only); nothing to compare")
    ctx = mp.get_context("spawn")                 # a fresh interpreter, so glibc starts from its defaults
    for size in args.sizes:
        workers, before = {}, os.environ.get(malloc.ENV)
        try:
            for mode, value in (("glibc_default", "0"), ("keep_freed", "1")):
                os.environ[malloc.ENV] = value           # read by the worker's ``import wmkit``
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_malloc_worker, args=(child, size, args.batch, args.length, args.threads))
                proc.start()
                workers[mode] = (proc, parent)
        finally:                                  # give the parent its own setting back
            if before is None:
                os.environ.pop(malloc.ENV, None)
            else:
                os.environ[malloc.ENV] = before
        for mode, (_, conn) in workers.items():
            if conn.recv() != (mode == "keep_freed"):
                raise RuntimeError(f"worker {mode}: the allocator setting is not what was asked for")
        rows = {(job, mode): [] for job in ("update", "image_path") for mode in workers}
        for r in range(args.warmup + args.repeat):
            for job, mode in rows:
                workers[mode][1].send(job)
                ms, faults = workers[mode][1].recv()
                if r >= args.warmup:
                    rows[job, mode].append((ms, faults))
        rss = {}
        for mode, (proc, conn) in workers.items():
            conn.send(None)
            rss[mode] = conn.recv()
            proc.join()
        dims = dict(size=size, B=args.batch, T=args.length, threads=args.threads)
        for (job, mode), samples in rows.items():
            emit("malloc", f"{job}_ms", min(s[0] for s in samples), "ms", allocator=mode, **dims)
            emit("malloc", f"{job}_page_faults", statistics.median(s[1] for s in samples), "faults per call",
                 allocator=mode, **dims)
        for job in ("update", "image_path"):
            ratio = min(s[0] for s in rows[job, "glibc_default"]) / min(s[0] for s in rows[job, "keep_freed"])
            emit("malloc", f"{job}_speedup", ratio, "x (glibc default ms / keep_freed ms)", **dims)
        for mode, mib in rss.items():
            emit("malloc", "peak_rss", mib, "MiB", allocator=mode, **dims)
        print(f"{size}: " + "  ".join(f"{job} {mode} {min(s[0] for s in v):.0f} ms"
                                      for (job, mode), v in rows.items()), file=sys.stderr)
