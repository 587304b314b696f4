"""Stages 3-4 data layer: one clip format, runnable stand-ins recorded here, loaders for the real datasets.

See ``book/stage3/data.md`` ("Data for neural simulators"). Entry points::

    from wmkit.data import Clip, ActionSpace, ClipDataset, crafter_clips, driving_clips, atari_clips
"""

from wmkit.data.clip import (
    NO_ACTIONS,
    ActionSpace,
    Clip,
    ClipFormatError,
    clip_from_arrays,
    clip_to_arrays,
    load_clip,
    save_clip,
)
from wmkit.data.dataset import ClipDataset, resize_frames, split_episodes
from wmkit.data.minecraft import MINECRAFT_SPACE, load_minerl, load_vpt, vpt_index
from wmkit.data.nuscenes import NUSCENES_SPACE, load_nuscenes
from wmkit.data.opendv import COMMAND_SPACE, COMMANDS, load_opendv
from wmkit.data.shards import ShardDataset, write_shards
from wmkit.data.standins import (
    CRAFTER_ACTIONS,
    CRAFTER_SPACE,
    DRIVING_SPACE,
    CrafterExplorer,
    atari_clips,
    crafter_clips,
    driving_clips,
    record_atari,
    record_crafter,
    record_driving,
    to_keyframes,
    worldmodels_clips,
)
from wmkit.data.video import load_mp4, mp4_clips, read_mp4, write_mp4

__all__ = [
    "MINECRAFT_SPACE", "load_minerl", "load_vpt", "vpt_index", "NUSCENES_SPACE", "load_nuscenes", "COMMAND_SPACE",
    "COMMANDS", "load_opendv", "ShardDataset", "write_shards", "load_mp4", "mp4_clips", "read_mp4", "write_mp4",
    "NO_ACTIONS", "ActionSpace", "Clip", "ClipFormatError", "clip_from_arrays", "clip_to_arrays", "load_clip",
    "save_clip", "ClipDataset", "resize_frames", "split_episodes", "CRAFTER_ACTIONS", "CRAFTER_SPACE",
    "DRIVING_SPACE", "CrafterExplorer", "atari_clips", "crafter_clips", "driving_clips", "record_atari",
    "record_crafter", "record_driving", "to_keyframes", "worldmodels_clips",
]
