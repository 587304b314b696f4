"""V-JEPA pretraining at scale: ``torchrun`` + DDP (or FSDP2), mixed precision, checkpoint/resume.

    torchrun --nproc_per_node=2 -m wmkit.jepa.pretrain --backend gloo --steps 3                 # CPU, smoke sizes
    torchrun --nproc_per_node=8 -m wmkit.jepa.pretrain --data opendv:/data/OpenDV --precision bf16 --size gpu
    torchrun --nnodes=4 --node_rank=$R --rdzv_endpoint=$HOST:29500 --nproc_per_node=8 -m wmkit.jepa.pretrain ...

No home-made distribution: ``torch.distributed`` with the backend asked for (gloo on CPU, nccl on GPUs), the
encoder and predictor wrapped in ``DistributedDataParallel`` (``--dist ddp``, gradients all-reduced, parameters
identical on every rank after each step) or sharded with FSDP2's ``fully_shard`` (``--dist fsdp2``). The EMA
target encoder is updated identically on every rank from the (identical) online weights, as in the official
``app/vjepa/train.py``. Every rank draws its own windows and masks from generators seeded by (seed, step, rank),
so a run resumed from a checkpoint continues with exactly the numbers of an uninterrupted run, under DDP and under
FSDP2 (whose shards are gathered and re-sharded by ``torch.distributed.checkpoint.state_dict``).

Data (``--data``): ``tworooms`` (the Two-Rooms random-walk recordings, in memory), ``crafter`` (wmkit.data's
Crafter stand-in through ``ClipDataset``), ``opendv:ROOT`` (OpenDV-YouTube frame folders through
``wmkit.data.load_opendv``), ``shards:DIR`` (WebDataset shards through ``wmkit.data.ShardDataset``, split over
ranks by the dataset itself, mixed in a ``--shuffle-buffer`` of samples, a random window of ``frames`` from each;
a sample of the wrong size or length is an error naming its shard; a resumed shard stream restarts its epoch, so
resume is exact only for the other sources).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from wmkit.checkpoint import checkpoint_exists, load_state, save_state
from wmkit.config import parse_config, to_dict
from wmkit.jepa.masks import VJEPA_MASKS, MultiBlock3D
from wmkit.jepa.vjepa import VJEPA, VJEPAConfig, lr_at, momentum_at
from wmkit.precision import autocast, prepare_model

__all__ = ["PretrainConfig", "main", "make_source", "param_digest"]

# FSDP2 checkpoints through torch.distributed.checkpoint's state-dict API: full (unsharded) tensors, gathered on save
# and re-sharded on load, written as safetensors by wmkit.checkpoint (no pickle). At ViT-L scale one would rather
# write the shards themselves with torch.distributed.checkpoint.save; at these sizes the full tensors fit easily.
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass
class PretrainConfig:
    """Distributed V-JEPA pretraining (launch with torchrun; also runs as a single process)."""

    steps: int = 3
    """optimiser steps in total (a resumed run continues up to this step)"""
    batch: int = 2
    """clips per rank and step"""
    backend: str = "gloo"
    """torch.distributed backend: gloo (CPU) or nccl (GPU)"""
    dist: str = "ddp"
    """ddp (DistributedDataParallel) or fsdp2 (torch.distributed.fsdp.fully_shard)"""
    size: str = "smoke"
    """model sizes from this profile's jepa block (smoke | cpu | gpu)"""
    data: str = "tworooms"
    """tworooms | crafter | opendv:ROOT | shards:DIR"""
    shuffle_buffer: int = 256
    """shards:DIR only: samples mixed in a WebDataset-style buffer before batching (0 = each shard's order, so a
    batch holds neighbouring windows of one episode)"""
    precision: str = "fp32"
    """fp32 | bf16 | fp8 (wmkit.precision)"""
    lr: float = 6.25e-4
    """peak learning rate (official ViT-L)"""
    warmup: int = 1
    """warm-up steps"""
    ema: list[float] = field(default_factory=lambda: [0.998, 1.0])
    """EMA momentum start and end"""
    seed: int = 0
    """seed of the weights (the same on every rank), windows and masks (different on every rank)"""
    run_dir: str = "runs/jepa/pretrain"
    """checkpoint, metrics and per-rank parameter digests go here"""
    resume: bool = False
    """continue from run_dir/ckpt/latest if it exists"""
    stop_at: int = -1
    """stop after this step (>= 0) as if interrupted, e.g. to test resume"""


def _model_config(size: str) -> VJEPAConfig:
    from wmkit.profiles import profile

    return VJEPAConfig(**profile(size).jepa.pretrain_model)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one rank's windows at one step: a function of (seed, step, rank) alone, so a resumed run draws
    the numbers of an uninterrupted one and every rank draws its own."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7919 + rank)


def make_source(spec: str, cfg: VJEPAConfig, rank: int, world: int, seed: int, shuffle_buffer: int = 256):
    """A function (step, batch) -> clips (B, T, 3, H, W) in [0, 1] for this rank. ``shuffle_buffer`` (``shards:``
    only): samples mixed in a buffer of this size before they are batched (0 = each shard's order)."""
    from wmkit.jepa.train import to_video

    if spec == "tworooms":
        from wmkit.jepa.tworooms import collect

        video = to_video(collect(8, 3 * cfg.frames, cfg.size, seed=seed)["frames"])  # (E, T, 3, H, W)

        def from_video(step, batch):
            g = step_generator(seed, step, rank)
            e = torch.randint(0, video.shape[0], (batch,), generator=g)
            s = torch.randint(0, video.shape[1] - cfg.frames + 1, (batch,), generator=g)
            return torch.stack([video[i, j:j + cfg.frames] for i, j in zip(e.tolist(), s.tolist(), strict=True)])
        return from_video
    if spec == "crafter" or spec.startswith("opendv:"):
        from wmkit.data import ClipDataset, crafter_clips, load_opendv

        clips = (crafter_clips(episodes=2, steps=max(40, 2 * cfg.frames), size=cfg.size, progress=False)
                 if spec == "crafter" else load_opendv(spec.split(":", 1)[1], size=cfg.size))
        ds = ClipDataset(clips, context=cfg.frames, future=0, size=cfg.size, split="all")

        def from_dataset(step, batch):
            g = step_generator(seed, step, rank)
            idx = torch.randint(0, len(ds), (batch,), generator=g)
            return torch.stack([ds[i]["frames"] for i in idx.tolist()])
        return from_dataset
    if spec.startswith("shards:"):
        from wmkit.data import ShardDataset
        from wmkit.data.dataset import to_float

        stream = ShardDataset(spec.split(":", 1)[1], shuffle_buffer=shuffle_buffer, seed=seed, rank=rank,
                              world_size=world, as_tensors=False)
        it = iter(stream)

        def next_clip():
            nonlocal it
            for _ in range(2):  # at most one epoch boundary per clip
                try:
                    return next(it)
                except StopIteration:
                    stream.set_epoch(stream.epoch + 1)  # a new shard order and shuffle
                    it = iter(stream)
            raise ValueError(f"--data {spec}: rank {rank} of {world} received no samples in a whole epoch "
                             f"({len(stream.paths)} shard(s))")

        def from_shards(step, batch):
            g = step_generator(seed, step, rank)
            out = []
            for _ in range(batch):
                clip = next_clip()
                t, h, w = clip.frames.shape[:3]  # (T, H, W, 3) uint8
                where = f"{clip.meta.get('shard')}: episode {clip.episode!r}, frame {clip.meta.get('frame_index', 0)}"
                if (h, w) != (cfg.size, cfg.size):
                    raise ValueError(f"{where}: {h}x{w} frames, but --size {cfg.size!r} models {cfg.size}x{cfg.size} "
                                     f"(write the shards with `wmkit data shard --size {cfg.size}`)")
                if t < cfg.frames:
                    raise ValueError(f"{where}: {t} frames, but the model reads {cfg.frames} "
                                     f"(write the shards with `wmkit data shard --clip-len {cfg.frames}` or more)")
                s = int(torch.randint(0, t - cfg.frames + 1, (), generator=g))  # a random window of a longer sample
                out.append(torch.from_numpy(to_float(clip.frames[s:s + cfg.frames])))  # (T, 3, H, W)
            return torch.stack(out)  # (B, T, 3, H, W)
        return from_shards
    raise ValueError(f"--data: expected tworooms | crafter | opendv:ROOT | shards:DIR, got {spec!r}")


def param_digest(module: torch.nn.Module) -> dict[str, float]:
    """Sum and sum of squares of all parameters (float64): equal on all ranks iff replicas agree (to rounding)."""
    s = s2 = 0.0
    for p in module.parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP2 DTensor -> the whole tensor
        s += float(full.detach().double().sum())
        s2 += float(full.detach().double().square().sum())
    return {"sum": s, "sumsq": s2}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(PretrainConfig, argv, prog="python -m wmkit.jepa.pretrain")
    if cfg.dist not in ("ddp", "fsdp2"):
        raise SystemExit(f"--dist: expected ddp or fsdp2, got {cfg.dist!r}")
    if cfg.shuffle_buffer < 0:
        raise SystemExit(f"--shuffle-buffer: expected >= 0 samples (0 = no shuffling), got {cfg.shuffle_buffer}")
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group(cfg.backend)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cfg.backend == "nccl" else "cpu")
    torch.set_num_threads(1) if device.type == "cpu" else None
    mcfg = _model_config(cfg.size)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = prepare_model(VJEPA(mcfg), cfg.precision).to(device)
    if distributed and cfg.dist == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model)  # forward = VJEPA.loss; gradients of encoder + predictor are all-reduced
    elif distributed:
        from torch.distributed.fsdp import fully_shard

        for blk in [*model.encoder.blocks, *model.predictor.blocks, *model.target_encoder.blocks]:
            fully_shard(blk)
        wrapped = fully_shard(model)  # every parameter sharded on dim 0 over the ranks
    else:
        wrapped = model
    online = torch.nn.ModuleDict({"encoder": model.encoder, "predictor": model.predictor})
    opt = torch.optim.AdamW([p for p in online.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.04)
    run = Path(cfg.run_dir)
    ckpt = run / "ckpt" / "latest"
    start = 0
    sharded = cfg.dist == "fsdp2" and distributed
    if cfg.resume and checkpoint_exists(ckpt):
        state = load_state(ckpt)
        if sharded:  # every rank reads the full tensors and keeps its own shard of them
            set_model_state_dict(model, state["model"], options=FULL)
            set_optimizer_state_dict(online, opt, state["opt"], options=FULL)
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
        start = int(state["step"])
    source = make_source(cfg.data, mcfg, rank, world, cfg.seed, cfg.shuffle_buffer)
    gens = [MultiBlock3D(mcfg.grid, spec, seed=cfg.seed + 17 * i) for i, spec in enumerate(VJEPA_MASKS)]
    losses = []
    for step in range(start, cfg.steps):
        for gi, gen in enumerate(gens):  # stateless: masks depend only on (seed, step, rank)
            gen.step = step - 1
            gen._pos.manual_seed(cfg.seed + 1_000_003 * (gi + 1) + 7919 * step + rank)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.warmup, cfg.lr, cfg.lr / 3, 1e-6)
        clips = source(step, cfg.batch).to(device)
        masks = [tuple(t.to(device) for t in gen(cfg.batch)) for gen in gens]
        with autocast(cfg.precision, device):
            out = wrapped(clips, masks)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        model.ema_update(momentum_at(step, cfg.steps, tuple(cfg.ema)))
        loss = out["loss"].detach()
        if distributed:
            dist.all_reduce(loss)
            loss /= world
        losses.append(float(loss))
        if rank == 0:
            print(json.dumps({"step": step, "loss": float(loss), "world": world}), flush=True)
        if step == cfg.stop_at:
            break
    last = start + len(losses)
    digest = {"rank": rank, "world": world, "start": start, "end": last, "losses": losses,
              "online": param_digest(online), "target": param_digest(model.target_encoder), "dist": cfg.dist}
    run.mkdir(parents=True, exist_ok=True)
    (run / f"rank{rank}.json").write_text(json.dumps(digest))
    if sharded:  # gather the shards into full tensors (collective: every rank takes part), rank 0 writes them
        model_sd = get_model_state_dict(model, options=FULL)
        opt_sd = get_optimizer_state_dict(online, opt, options=FULL)
    elif rank == 0:
        model_sd, opt_sd = model.state_dict(), opt.state_dict()
    if rank == 0:
        save_state(ckpt, {"model": model_sd, "opt": opt_sd, "step": last},
                   {"config": to_dict(cfg), "model": to_dict(mcfg), "world": world})
    del wrapped
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
