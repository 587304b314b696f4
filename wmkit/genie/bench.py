"""``wmkit bench genie``: speed of stage 3a and the cost of ST vs full attention (one JSON line per figure).

Speed (synthetic inputs at a profile's sizes; ``--profiles cpu,gpu``, default: the active profile):
  tokenizer_train   tokens/s   tokenizer forward + backward + AdamW, batch x clip x N tokens
  lam_train         frames/s   LAM forward + backward + AdamW
  dynamics_train    tokens/s   dynamics masked-token loss + backward + AdamW
  generate          frames/s   MaskGIT decoding of one frame (maskgit_steps passes) + tokenizer decoding, batch 1

ST vs full attention (``cost_T`` clip lengths, ``cost_N`` tokens per frame, width ``cost_dim``, ``cost_depth``
layers, batch 1, one training step): FLOPs from ``torch.utils.flop_counter`` and the bytes autograd saves for the
backward pass, counted on the meta device (nothing allocated, so T can exceed memory), both models, and the ratio
full / ST; for T in ``cost_run_T`` also the measured seconds of a real training step on this device, and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from wmkit.bench import emit, interleaved, timeit
from wmkit.genie import train as T
from wmkit.genie.dynamics import DynamicsModel
from wmkit.genie.lam import LatentActionModel
from wmkit.genie.st_transformer import FullTransformer, STTransformer, attention_cost
from wmkit.genie.tokenizer import VideoTokenizer
from wmkit.profiles import profile
from wmkit.utils import pick_device

B = "genie"


def _cfg(name: str) -> T.GenieConfig:
    P = profile(name).genie
    import dataclasses

    fields = {f.name for f in dataclasses.fields(T.GenieConfig)}
    return T.GenieConfig(**{k: v for k, v in vars(P).items() if k in fields}, run_dir="unused")


def speed(name: str, device: torch.device, batch: int | None, repeat: int) -> None:
    cfg = _cfg(name)
    P = profile(name).genie
    b = batch or P.bench_batch
    s = cfg.frame_size
    tok = VideoTokenizer(T.tokenizer_config(cfg)).to(device)
    lam = LatentActionModel(T.lam_config(cfg)).to(device)
    dyn = DynamicsModel(T.dynamics_config(cfg, tok.vocab, tok.grid)).to(device)
    N = tok.num_tokens
    tag = dict(profile=name, device=str(device), batch=b)

    def step_fn(model, loss):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def f():
            opt.zero_grad(set_to_none=True)
            loss().backward()
            opt.step()
        return f

    x_tok = torch.rand(b, cfg.tok_clip_len, 3, s, s, device=device)
    x_lam = torch.rand(b, cfg.lam_clip_len, 3, s, s, device=device)
    z = torch.randint(0, tok.vocab, (b, cfg.dyn_clip_len, N), device=device)
    a = torch.randint(0, cfg.lam_actions, (b, cfg.dyn_clip_len - 1), device=device)
    for metric, fn, units in (
            ("tokenizer_train", step_fn(tok, lambda: tok(x_tok)["loss"]), b * cfg.tok_clip_len * N),
            ("lam_train", step_fn(lam, lambda: lam(x_lam)["loss"]), b * (cfg.lam_clip_len - 1)),
            ("dynamics_train", step_fn(dyn, lambda: dyn.loss(z, a)["loss"]), b * cfg.dyn_clip_len * N)):
        c0 = time.process_time()
        t = timeit(fn, warmup=1, repeat=repeat, sync=device)["median"]
        cpu = (time.process_time() - c0) / (repeat + 1)  # CPU seconds per step: less sensitive to a loaded machine
        emit(B, metric, units / t, "tokens/s" if metric != "lam_train" else "frames/s", seconds_per_step=t,
             cpu_seconds_per_step=cpu, **tag)
    tok.eval()
    dyn.eval()
    ctx = z[:1, : cfg.dyn_clip_len - 1]
    acts = a[:1, : cfg.dyn_clip_len - 1]

    @torch.no_grad()
    def gen():
        nxt = dyn.generate_next(ctx, acts)
        return tok.decode(nxt[:, None])

    t = timeit(gen, warmup=1, repeat=repeat, sync=device)["median"]
    emit(B, "generate", 1.0 / t, "frames/s", maskgit_steps=dyn.cfg.maskgit_steps, context=ctx.shape[1],
         **{**tag, "batch": 1})


def cost(name: str, device: torch.device, repeat: int) -> None:
    P = profile(name).genie
    N, D, L = P.cost_N, P.cost_dim, P.cost_depth
    for T_ in P.cost_T:
        st = attention_cost("st", T_, N, dim=D, depth=L, heads=4)
        full = attention_cost("full", T_, N, dim=D, depth=L, heads=4)
        tag = dict(profile=name, T=T_, N=N, dim=D, depth=L, counted_on="meta")
        for kind, c in (("st", st), ("full", full)):
            emit(B, f"{kind}_flops", c["flops"], "FLOP", **tag)
            emit(B, f"{kind}_saved_bytes", c["saved_bytes"], "bytes", **tag)
        emit(B, "full_over_st_flops", full["flops"] / st["flops"], "ratio", **tag)
        emit(B, "full_over_st_saved_bytes", full["saved_bytes"] / st["saved_bytes"], "ratio", **tag)
    for T_ in P.cost_run_T:
        models = {"st": STTransformer(D, L, 4, max_frames=T_).to(device),
                  "full": FullTransformer(D, L, 4, max_frames=T_).to(device)}
        x = torch.randn(1, T_, N, D, device=device)

        def fb(m, x=x):
            return lambda: m(x).sum().backward()
        ms = interleaved({k: fb(m) for k, m in models.items()}, warmup=1, repeat=repeat, sync=device)
        med = {k: sorted(v)[len(v) // 2] for k, v in ms.items()}
        tag = dict(profile=name, T=T_, N=N, dim=D, depth=L, device=str(device))
        emit(B, "st_step_ms", med["st"], "ms", **tag)
        emit(B, "full_step_ms", med["full"], "ms", **tag)
        emit(B, "full_over_st_time", med["full"] / med["st"], "ratio", **tag)


def run(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="wmkit bench genie", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", default=None, help="comma-separated profiles to size the speed figures "
                    "(default: the active one)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: best available)")
    ap.add_argument("--batch", type=int, default=None, help="override the profile's bench_batch")
    ap.add_argument("--repeat", type=int, default=None, help="timed repeats (default: the profile's bench_steps)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args(argv)
    device = torch.device(args.device or pick_device())
    names = args.profiles.split(",") if args.profiles else [profile().name]
    for name in names:
        rep = args.repeat or profile(name).genie.bench_steps
        if not args.skip_speed:
            speed(name, device, args.batch, rep)
        if not args.skip_cost:
            cost(name, device, rep)
    print("done", file=sys.stderr)
