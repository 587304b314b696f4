"""``wmkit data crafter | driving | atari | convert | shard | info``: record, convert, shard and inspect clips.

    wmkit data crafter --episodes 100 --steps 1000 --out runs/data      # Crafter stand-in (resumes)
    wmkit data driving --episodes 20 --steps 1500 --out runs/data       # CarRacing driving stand-in
    wmkit data atari --game breakout --episodes 20 --out runs/data      # Atari (ale-py ROMs)
    wmkit data convert --format nuscenes --input /data/nuscenes --out runs/data/nuscenes
    wmkit data shard --clips runs/data/crafter --out runs/data/shards/crafter --clip-len 16
    wmkit data info runs/data/shards/crafter

Recording and sharding write one file at a time (temporary name, then rename) and skip files that are
already complete, so an interrupted command picks up where it stopped. Every option is in ``--help``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from wmkit.config import parse_config

COMMANDS = ("crafter", "driving", "atari", "convert", "shard", "info")


@dataclass
class CrafterConfig:
    """Record Crafter episodes (mixed random + scripted explorer policy) as clips in <out>/crafter/."""

    episodes: int = 8
    """Number of episodes (episode i uses world seed seed * 100003 + i)."""
    steps: int = 200
    """Frames per episode (fewer if the player dies)."""
    seed: int = 0
    """Base seed."""
    random_prob: float = 0.3
    """Probability of a uniformly random action at each step (else the scripted explorer acts)."""
    size: int = 64
    """Frame size in pixels."""
    out: str = "runs/data"
    """Output folder (clips go to <out>/crafter/)."""


@dataclass
class DrivingConfig:
    """Record CarRacing-v3 drives (road follower + noise; ego motion as action) as clips in <out>/driving/."""

    episodes: int = 2
    """Number of drives (track seed seed * 100003 + i)."""
    steps: int = 500
    """Frames per drive at 50 Hz (500 = 10 s = 20 keyframes at 2 Hz)."""
    seed: int = 0
    """Base seed."""
    noise: float = 0.3
    """Scale of the Ornstein-Uhlenbeck noise on steering (and half of it on gas)."""
    size: int = 64
    """Frame size in pixels."""
    out: str = "runs/data"
    """Output folder (clips go to <out>/driving/)."""


@dataclass
class AtariConfig:
    """Record Atari episodes (Atari 100k settings, random policy) as clips in <out>/atari/."""

    game: str = "pong"
    """ale-py ROM id (pong, breakout, ms_pacman, ...)."""
    episodes: int = 2
    """Number of episodes."""
    steps: int = 500
    """Agent steps per episode (4 frames each)."""
    seed: int = 0
    """Base seed."""
    out: str = "runs/data"
    """Output folder (clips go to <out>/atari/)."""


@dataclass
class ConvertConfig:
    """Convert a real dataset (or a folder of mp4) into clip files (<out>/<episode>.npz) for sharding."""

    format: str = "mp4"
    """One of vpt, minerl, nuscenes, opendv, mp4."""
    input: str = ""
    """vpt: an index JSON or a folder of <name>.mp4 + <name>.jsonl; minerl: a folder of demo folders;
    nuscenes: the dataroot (with v1.0-mini/); opendv: the frames root; mp4: a folder of .mp4 files."""
    annotations: str = ""
    """opendv only: annotation JSON file(s), comma-separated (empty: one action-free clip per video folder)."""
    version: str = "v1.0-mini"
    """nuscenes only: table folder name."""
    size: int = 64
    """Frame size in pixels."""
    strict: bool = True
    """Stop at the first bad item (False: skip bad items, report how many and which)."""
    out: str = "runs/data/converted"
    """Output folder."""


@dataclass
class ShardConfig:
    """Cut clip files into fixed-length pieces and write WebDataset tar shards (resumes)."""

    clips: str = "runs/data/crafter"
    """Folder of clip .npz files (searched recursively)."""
    out: str = "runs/data/shards"
    """Output folder for shard-NNNNNN.tar and manifest.json."""
    clip_len: int = 16
    """Frames per sample."""
    shard_size: int = 64
    """Samples per shard."""
    size: int = 64
    """Frame size in pixels (0 keeps the clips' size)."""


def _clip_files(folder: str) -> list[Path]:
    paths = sorted(p for p in Path(folder).rglob("*.npz") if not p.name.endswith(".tmp.npz"))
    if not paths:
        raise SystemExit(f"wmkit data: no clip .npz files under {folder}")
    return paths


def _summary(clips) -> str:
    frames = sum(len(c) for c in clips)
    return f"{len(clips)} clips, {frames} frames, {len({c.episode for c in clips})} episodes"


def convert(cfg: ConvertConfig) -> list[Path]:
    from tqdm.auto import tqdm

    from wmkit.data import clip as C
    from wmkit.data import minecraft, nuscenes, opendv, video

    errors: list[str] = []
    src = Path(cfg.input)
    if cfg.format == "vpt":
        pairs = minecraft.vpt_index(src) if src.suffix == ".json" else [(p, "") for p in sorted(src.glob("*.mp4"))]
        clips = []
        for mp4, ver in tqdm(pairs, desc="vpt", unit="video"):
            try:
                clips.append(minecraft.load_vpt(mp4, size=cfg.size, version=ver or None, strict=cfg.strict,
                                                errors=errors))
            except (C.ClipFormatError, FileNotFoundError) as e:
                if cfg.strict:
                    raise
                errors.append(str(e))
    elif cfg.format == "minerl":
        clips = []
        for d in tqdm(sorted(p.parent for p in src.rglob("rendered.npz")), desc="minerl", unit="demo"):
            try:
                clips.append(minecraft.load_minerl(d, size=cfg.size, strict=cfg.strict, errors=errors))
            except (C.ClipFormatError, FileNotFoundError) as e:
                if cfg.strict:
                    raise
                errors.append(str(e))
    elif cfg.format == "nuscenes":
        clips = nuscenes.load_nuscenes(src, cfg.version, size=cfg.size, strict=cfg.strict, errors=errors)
    elif cfg.format == "opendv":
        ann = [a for a in cfg.annotations.split(",") if a] or None
        clips = opendv.load_opendv(src, ann, size=cfg.size, strict=cfg.strict, errors=errors)
    elif cfg.format == "mp4":
        clips = video.mp4_clips(src, size=cfg.size, strict=cfg.strict, errors=errors)
    else:
        raise SystemExit(f"wmkit data convert: unknown --format {cfg.format!r}; expected vpt, minerl, nuscenes, "
                         f"opendv or mp4")
    out = []
    for i, c in enumerate(clips):
        name = f"{i:06d}-{c.episode}".replace("/", "_")
        out.append(C.save_clip(Path(cfg.out) / f"{name}.npz", c))
    print(f"converted {_summary(clips)} -> {cfg.out}")
    if errors:
        print(f"skipped {len(errors)} bad item(s):", *errors[:20], sep="\n  ", file=sys.stderr)
    return out


def info(path: str) -> None:
    from wmkit.data.clip import load_clip

    p = Path(path)
    if (p / "manifest.json").exists():
        m = json.loads((p / "manifest.json").read_text())
        print(f"{p}: {len(m['shards'])} shards, {m['samples']} samples of {m['clip_len']} frames at size "
              f"{m['size']}, {len(m['episodes'])} episodes, complete={m['complete']}, too short: {len(m['too_short'])}")
        return
    clips = [load_clip(f) for f in ([p] if p.is_file() else _clip_files(path))]
    print(f"{p}: {_summary(clips)}; action space {clips[0].action_space}")
    for c in clips[:10]:
        print(f"  {c.episode}: {len(c)} frames {c.frames.shape[1:]}, fps {c.fps}, reward "
              f"{'-' if c.reward is None else f'{c.reward.sum():.2f}'}, source {c.meta.get('source')}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"wmkit data: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}")
        return
    cmd, rest = argv[0], argv[1:]
    prog = f"wmkit data {cmd}"
    from wmkit.data import standins

    if cmd == "crafter":
        c = parse_config(CrafterConfig, rest, prog=prog)
        clips = standins.crafter_clips(c.episodes, c.steps, c.seed, c.random_prob, c.size, cache=c.out)
        print(f"crafter: {_summary(clips)} in {Path(c.out) / 'crafter'}")
    elif cmd == "driving":
        c = parse_config(DrivingConfig, rest, prog=prog)
        clips = standins.driving_clips(c.episodes, c.steps, c.seed, c.size, c.noise, cache=c.out)
        print(f"driving: {_summary(clips)} in {Path(c.out) / 'driving'}")
    elif cmd == "atari":
        c = parse_config(AtariConfig, rest, prog=prog)
        clips = standins.atari_clips(c.game, c.episodes, c.steps, c.seed, cache=c.out)
        print(f"atari {c.game}: {_summary(clips)} in {Path(c.out) / 'atari'}")
    elif cmd == "convert":
        convert(parse_config(ConvertConfig, rest, prog=prog))
    elif cmd == "shard":
        from wmkit.data.clip import load_clip
        from wmkit.data.shards import write_shards

        c = parse_config(ShardConfig, rest, prog=prog)
        clips = [load_clip(f) for f in _clip_files(c.clips)]
        m = write_shards(clips, c.out, c.clip_len, c.shard_size, c.size or None)
        print(f"shards: {m['samples']} samples in {len(m['shards'])} shards ({m['written']} written, "
              f"{m['resumed']} already complete) -> {c.out}; clips too short: {len(m['too_short'])}")
    elif cmd == "info":
        if len(rest) != 1:
            raise SystemExit("usage: wmkit data info PATH (a clip .npz, a folder of them, or a shard folder)")
        info(rest[0])
