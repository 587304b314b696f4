"""nuScenes (Caesar et al. 2020) front-camera keyframe clips with ego motion, read straight from the tables.

The on-disk format (nutonomy/nuscenes-devkit, ``nuscenes/nuscenes.py`` and the schema page): a folder
``<dataroot>/<version>/`` with 13 JSON tables, each a list of records keyed by ``token`` and linked by
``*_token`` fields and ``prev``/``next`` chains; images under ``samples/<CHANNEL>/*.jpg`` (keyframes, 2 Hz)
and ``sweeps/`` (the frames in between). A scene is a chain of samples (``first_sample_token`` ->
``next`` ...); a sample's camera image is the ``sample_data`` record whose ``sample_token`` is the sample,
whose calibrated sensor's sensor has the channel (``CAM_FRONT``) and ``is_key_frame`` is true; its
``ego_pose_token`` gives the car's pose (``translation`` x, y, z in metres in the global frame,
``rotation`` a w, x, y, z quaternion) at the image's ``timestamp`` (microseconds).

:func:`load_nuscenes` returns one clip per scene: the keyframes, and as action the ego motion from each
keyframe to the next: speed = |Delta (x, y)| / Delta t (m/s) and yaw rate = wrapped Delta yaw / Delta t
(rad/s), from consecutive ego poses -- the same definition the CarRacing stand-in uses. (Steering is in
the separate CAN-bus expansion, not in these tables.) "Predict the next 3 s" = 6 keyframes ahead.

Every reference is checked: a missing table, a record without ``token``, a dangling ``*_token``, a broken
``next`` chain or a missing image raises :class:`~wmkit.data.clip.ClipFormatError` naming the table file and
the token. ``strict=False`` skips a bad scene and reports it. The devkit itself is not needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from wmkit.data.clip import ActionSpace, Clip, ClipFormatError, report_skipped
from wmkit.data.dataset import resize_frames

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
LINKS = {  # table -> (field, target table) references that must resolve ("" = none)
    "instance": (("category_token", "category"),),
    "calibrated_sensor": (("sensor_token", "sensor"),),
    "scene": (("log_token", "log"), ("first_sample_token", "sample"), ("last_sample_token", "sample")),
    "sample": (("scene_token", "scene"),),
    "sample_data": (("sample_token", "sample"), ("ego_pose_token", "ego_pose"),
                    ("calibrated_sensor_token", "calibrated_sensor")),
    "sample_annotation": (("sample_token", "sample"), ("instance_token", "instance")),
}
NUSCENES_SPACE = ActionSpace("continuous", dim=2, names=("speed", "yaw_rate"), units=("m/s", "rad/s"))
KEYFRAME_HZ = 2.0


def yaw_from_quaternion(q) -> float:
    """Heading (rotation about z) of a w, x, y, z quaternion, in radians."""
    w, x, y, z = (float(v) for v in q)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def load_tables(dataroot: str | os.PathLike, version: str = "v1.0-mini") -> dict[str, dict[str, dict]]:
    """All 13 tables as {table: {token: record}}, with every reference checked (see module docstring)."""
    folder = Path(dataroot) / version
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no nuScenes table folder (expected {dataroot}/{version}/*.json)")
    tables: dict[str, dict[str, dict]] = {}
    for name in TABLES:
        path = folder / f"{name}.json"
        if not path.exists():
            raise ClipFormatError(f"{path}: missing table {name!r} (nuScenes has 13: {', '.join(TABLES)})")
        try:
            records = json.loads(path.read_text())
        except ValueError as e:
            raise ClipFormatError(f"{path}: invalid JSON ({e})") from e
        if not isinstance(records, list):
            raise ClipFormatError(f"{path}: expected a list of records, got {type(records).__name__}")
        by_token = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or "token" not in rec:
                raise ClipFormatError(f"{path}: record {i} has no 'token'")
            by_token[rec["token"]] = rec
        tables[name] = by_token
    for name, links in LINKS.items():
        for rec in tables[name].values():
            for field, target in links:
                if rec.get(field) not in tables[target]:
                    raise ClipFormatError(f"{folder / (name + '.json')}: record {rec['token']} has dangling "
                                          f"{field} {rec.get(field)!r} (no such token in {target}.json)")
            for field in ("prev", "next"):
                if field in rec and rec[field] != "" and rec[field] not in tables[name]:
                    raise ClipFormatError(f"{folder / (name + '.json')}: record {rec['token']} has dangling "
                                          f"{field} {rec[field]!r}")
    return tables


def keyframe_index(tables: dict, channel: str = "CAM_FRONT") -> dict[str, dict]:
    """sample token -> its ``channel`` keyframe sample_data record (one pass over sample_data)."""
    by_sample = {}
    for sd in tables["sample_data"].values():
        sensor = tables["sensor"][tables["calibrated_sensor"][sd["calibrated_sensor_token"]]["sensor_token"]]
        if sensor["channel"] == channel and sd.get("is_key_frame"):
            by_sample[sd["sample_token"]] = sd
    return by_sample


def scene_keyframes(tables: dict, scene: dict, channel: str = "CAM_FRONT", index: dict | None = None) -> list[dict]:
    """The ``channel`` keyframe sample_data records of a scene, in time order (checked chain)."""
    by_sample = keyframe_index(tables, channel) if index is None else index
    out, token, seen = [], scene["first_sample_token"], set()
    while token:
        if token in seen:
            raise ClipFormatError(f"sample.json: the next chain of scene {scene['name']} loops at sample {token}")
        seen.add(token)
        sample = tables["sample"][token]
        if sample["scene_token"] != scene["token"]:
            raise ClipFormatError(f"sample.json: sample {token} in the chain of scene {scene['name']} belongs to "
                                  f"scene {sample['scene_token']}")
        if token not in by_sample:
            raise ClipFormatError(f"sample_data.json: sample {token} of scene {scene['name']} has no {channel} "
                                  f"keyframe")
        out.append(by_sample[token])
        token = sample["next"]
    if out and out[-1]["sample_token"] != scene["last_sample_token"]:
        raise ClipFormatError(f"scene.json: scene {scene['name']} ends at {out[-1]['sample_token']}, but its "
                              f"last_sample_token is {scene['last_sample_token']}")
    if "nbr_samples" in scene and scene["nbr_samples"] != len(out):
        raise ClipFormatError(f"scene.json: scene {scene['name']} says nbr_samples={scene['nbr_samples']} but its "
                              f"chain has {len(out)}")
    return out


def _scene_clip(dataroot: Path, tables: dict, scene: dict, channel: str, size, index: dict) -> Clip:
    keys = scene_keyframes(tables, scene, channel, index)
    frames, poses, stamps = [], [], []
    for sd in keys:
        path = dataroot / sd["filename"]
        if not path.exists():
            raise ClipFormatError(f"sample_data.json: {sd['token']} points to missing image {path}")
        try:
            img = np.asarray(Image.open(path).convert("RGB"))
        except OSError as e:
            raise ClipFormatError(f"{path}: unreadable image ({e})") from e
        frames.append(resize_frames(img[None], size)[0] if size is not None else img)
        pose = tables["ego_pose"][sd["ego_pose_token"]]
        poses.append((*pose["translation"][:2], yaw_from_quaternion(pose["rotation"])))
        stamps.append(int(sd["timestamp"]))
    poses_a, t = np.asarray(poses, np.float64), np.asarray(stamps, np.int64)
    # [eq:ego]
    dt = np.diff(t) / 1e6  # seconds
    if (dt <= 0).any():
        i = int(np.flatnonzero(dt <= 0)[0])
        raise ClipFormatError(f"sample_data.json: timestamps of scene {scene['name']} do not increase at keyframe "
                              f"{i} ({keys[i]['token']} -> {keys[i + 1]['token']})")
    speed = np.hypot(*(poses_a[1:, :2] - poses_a[:-1, :2]).T) / dt
    dyaw = (poses_a[1:, 2] - poses_a[:-1, 2] + np.pi) % (2 * np.pi) - np.pi
    actions = np.zeros((len(keys), 2), np.float32)
    actions[:-1] = np.stack([speed, dyaw / dt], 1)
    # [/eq:ego]
    log = tables["log"][scene["log_token"]]
    meta = dict(source=f"{dataroot}:{scene['name']}", fps=KEYFRAME_HZ, episode=scene["name"], dataset="nuscenes",
                channel=channel, location=log.get("location", ""), description=scene.get("description", ""),
                last_action_known=False)
    return Clip(np.stack(frames), actions, NUSCENES_SPACE, meta=meta,
                extras={"pose": poses_a.astype(np.float32), "timestamp": t})


def load_nuscenes(dataroot: str | os.PathLike, version: str = "v1.0-mini", channel: str = "CAM_FRONT",
                  size: int | tuple[int, int] | None = 64, strict: bool = True,
                  errors: list[str] | None = None) -> list[Clip]:
    """One clip per scene (sorted by scene name): ``channel`` keyframes at 2 Hz with ego motion as action."""
    dataroot = Path(dataroot)
    tables = load_tables(dataroot, version)
    index = keyframe_index(tables, channel)
    clips, bad = [], []
    for scene in sorted(tables["scene"].values(), key=lambda s: s["name"]):
        try:
            clips.append(_scene_clip(dataroot, tables, scene, channel, size, index))
        except ClipFormatError as e:
            if strict:
                raise
            bad.append(f"scene {scene['name']}: {e}")
    report_skipped("load_nuscenes", bad, errors, total=len(tables["scene"]), unit="scenes")
    return clips
