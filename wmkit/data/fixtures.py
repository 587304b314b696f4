"""Tiny datasets written in the *exact* on-disk formats of VPT, MineRL 0.x, nuScenes and OpenDV-YouTube.

The real datasets cannot be downloaded here, so the tests and the data notebook write miniature copies:
real H.264 mp4 files (PyAV), real JPEGs (Pillow), jsonl lines with VPT's real keys, an npz with MineRL's
``action$`` / ``observation$`` keys, the 13 nuScenes tables linked by tokens (openable by the official
devkit), OpenDV's 9-digit JPEG folders and annotation records. Frame content is a moving synthetic pattern
whose motion follows the recorded actions (so a loader that shifts actions by one frame is caught).
Every writer returns the paths it wrote and is deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from wmkit.data.video import write_mp4


def pattern_frames(T: int, h: int, w: int, shift: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """(T, h, w, 3) uint8 stripes whose phase moves by ``shift[t]`` pixels between frame t and t+1."""
    rng = np.random.default_rng(seed)
    shift = np.ones(T) * 2 if shift is None else np.asarray(shift, float)
    phase = np.concatenate([[0.0], np.cumsum(shift[:-1])])
    x = np.arange(w)[None, :] + phase[:, None]  # (T, w)
    base = rng.uniform(40, 200, 3)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * x / 32.0)  # (T, w)
    ramp = np.linspace(0.6, 1.0, h)[None, :, None]  # (1, h, 1)
    img = stripes[:, None, :, None] * ramp[..., None] * base  # (T, h, w, 3)
    return np.clip(img + 20, 0, 255).astype(np.uint8)


def _token(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ VPT
def vpt_line(t: int, keys=(), buttons=(), new_buttons=(), dx=0.0, dy=0.0, hotbar=0, gui=False) -> dict:
    """One VPT jsonl action record with the recorder's real keys."""
    return {"mouse": {"x": 640.0, "y": 360.0, "dx": float(dx), "dy": float(dy), "scaledX": 0.0, "scaledY": 0.0,
                      "dwheel": 0.0, "buttons": list(buttons), "newButtons": list(new_buttons)},
            "keyboard": {"keys": list(keys), "newKeys": [], "chars": ""},
            "isGuiOpen": bool(gui), "isGuiInventory": bool(gui), "hotbar": int(hotbar), "yaw": 0.0, "pitch": 0.0,
            "xpos": 0.5, "ypos": 64.0, "zpos": 0.5, "tick": t, "milli": 1_650_000_000_000 + 50 * t,
            "inventory": [], "serverTick": t, "serverTickDurationMs": 50.0, "stats": {}}


def write_vpt(root: str | os.PathLike, name: str = "cheeky-cornflower-setter-f153ac423f61-20220707-202524",
              version: str = "6.13", T: int = 24, size: tuple[int, int] = (360, 640), extra_frame: bool = False,
              seed: int = 0) -> dict[str, Path]:
    """``root/data/<version>/<name>.{mp4,jsonl}`` + ``root/index.json``; yaw follows the mouse dx."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "data" / version
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for t in range(T):
        keys = ["key.keyboard.w"] if t % 3 else ["key.keyboard.w", "key.keyboard.space"]
        dx = float(rng.integers(-20, 21)) if t % 4 else 0.0
        lines.append(vpt_line(t, keys=keys, buttons=[0] if t % 5 == 0 else [], dx=dx, dy=float(t % 2),
                              hotbar=(t // 8) % 9))
    dxs = np.array([ln["mouse"]["dx"] for ln in lines])
    n = T + int(extra_frame)
    frames = pattern_frames(n, *size, shift=np.concatenate([dxs, [0.0]])[:n] * 0.5, seed=seed)
    mp4 = write_mp4(folder / f"{name}.mp4", frames, fps=20)
    jsonl = folder / f"{name}.jsonl"
    jsonl.write_text("\n".join(json.dumps(ln) for ln in lines) + "\n")
    index = Path(root) / "index.json"
    index.write_text(json.dumps({"basedir": "https://openaipublic.blob.core.windows.net/minecraft-mlp/",
                                 "relpaths": [f"data/{version}/{name}.mp4"]}))
    return {"mp4": mp4, "jsonl": jsonl, "index": index}


# ------------------------------------------------------------------------------------------ MineRL
def write_minerl(root: str | os.PathLike, name: str = "v3_absolute_grape_changeling-6_37339-46767",
                 N: int = 20, pre_frames: int = 2, seed: int = 0) -> Path:
    """A MineRL 0.x demo folder: recording.mp4 (64x64, 20 Hz), rendered.npz, metadata.json."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "MineRLTreechop-v0" / name
    folder.mkdir(parents=True, exist_ok=True)
    camera = np.stack([rng.uniform(-5, 5, N), rng.uniform(-10, 10, N)], 1).astype(np.float32)  # pitch, yaw
    total = pre_frames + N + 1
    shift = np.concatenate([np.zeros(pre_frames), camera[:, 1], [0.0]])
    write_mp4(folder / "recording.mp4", pattern_frames(total, 64, 64, shift=shift, seed=seed), fps=20)
    arrays = {"reward": (rng.random(N) < 0.2).astype(np.float32), "action$camera": camera}
    for key in ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack"):
        arrays[f"action${key}"] = (rng.random(N) < 0.3).astype(np.int64)
    arrays["action$place"] = np.array(["none", "dirt"] * (N // 2) + ["none"] * (N % 2))
    arrays["action$craft"] = np.array(["none"] * N)
    arrays["observation$inventory$log"] = np.cumsum(np.concatenate([[0], arrays["reward"]])).astype(np.int64)
    arrays["observation$equipped_items$mainhand$type"] = np.array(["none"] * (N + 1))
    np.savez_compressed(folder / "rendered.npz", **arrays)
    (folder / "metadata.json").write_text(json.dumps({
        "duration_ms": 50 * N, "duration_steps": N, "success": True, "total_reward": float(arrays["reward"].sum()),
        "true_video_frame_count": total, "stream_name": name}))
    return folder


# ------------------------------------------------------------------------------------------ nuScenes
def write_nuscenes(dataroot: str | os.PathLike, version: str = "v1.0-mini", scenes: int = 2, samples: int = 8,
                   speed: float = 5.0, yaw_rate: float = 0.1, image_size: tuple[int, int] = (90, 160),
                   seed: int = 0) -> Path:
    """``dataroot/<version>/*.json`` (13 tables) + ``samples/CAM_FRONT`` keyframes + ``sweeps/CAM_FRONT``.

    Scene s drives at ``speed * (1 + s/2)`` m/s with ``yaw_rate`` rad/s, keyframes every 0.5 s and one sweep
    between keyframes, so the expected ego motion is known exactly.
    """
    root = Path(dataroot)
    (root / version).mkdir(parents=True, exist_ok=True)
    T = {name: [] for name in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                               "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    T["category"].append({"token": _token("cat"), "name": "vehicle.car", "description": "Vehicle designed for "
                          "primarily personal use.", "index": 17})
    T["attribute"].append({"token": _token("attr"), "name": "vehicle.moving", "description": "Vehicle is moving."})
    T["visibility"].append({"token": "4", "level": "v80-100", "description": "visibility of whole object is "
                            "between 80 and 100%"})
    sensor = {"token": _token("sensor", "CAM_FRONT"), "channel": "CAM_FRONT", "modality": "camera"}
    T["sensor"].append(sensor)
    calib = {"token": _token("calib"), "sensor_token": sensor["token"], "translation": [1.70, 0.016, 1.51],
             "rotation": [0.4998, -0.5030, 0.4997, -0.4975],
             "camera_intrinsic": [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]}
    T["calibrated_sensor"].append(calib)
    log = {"token": _token("log"), "logfile": "n015-2018-07-24-11-22-45+0800", "vehicle": "n015",
           "date_captured": "2018-07-24", "location": "singapore-onenorth"}
    T["log"].append(log)
    T["map"].append({"token": _token("map"), "log_tokens": [log["token"]], "category": "semantic_prior",
                     "filename": "maps/53992ee3023e5494b90c316c183be829.png"})
    inst = {"token": _token("inst"), "category_token": T["category"][0]["token"], "nbr_annotations": 0,
            "first_annotation_token": "", "last_annotation_token": ""}
    T["instance"].append(inst)
    anns = []
    for s in range(scenes):
        v = speed * (1 + s / 2)
        t0 = 1_532_402_927_000_000 + s * 100_000_000
        sample_tokens = [_token("sample", s, k) for k in range(samples)]
        sd_chain = []  # all CAM_FRONT sample_data of the scene in time order (keyframes and sweeps)
        for k in range(samples):
            for sub in (0, 1):  # keyframe, then a sweep 0.25 s later (none after the last keyframe)
                if sub and k == samples - 1:
                    continue
                ts = t0 + k * 500_000 + sub * 250_000
                tsec = (ts - t0) / 1e6
                yaw = yaw_rate * tsec
                x = v / yaw_rate * np.sin(yaw) if yaw_rate else v * tsec  # a circle arc at constant speed
                y = v / yaw_rate * (1 - np.cos(yaw)) if yaw_rate else 0.0
                pose = {"token": _token("pose", s, k, sub), "timestamp": ts, "translation": [float(x), float(y), 0.0],
                        "rotation": [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]}
                T["ego_pose"].append(pose)
                folder = "samples" if sub == 0 else "sweeps"
                fname = f"{folder}/CAM_FRONT/{log['logfile']}__CAM_FRONT__{ts}.jpg"
                sd_chain.append({"token": _token("sd", s, k, sub), "sample_token": sample_tokens[k],
                                 "ego_pose_token": pose["token"], "calibrated_sensor_token": calib["token"],
                                 "timestamp": ts, "fileformat": "jpg", "is_key_frame": sub == 0,
                                 "height": image_size[0], "width": image_size[1], "filename": fname,
                                 "prev": "", "next": ""})
                img = pattern_frames(1, *image_size, seed=seed + 100 * s + k)[0]
                (root / fname).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / fname, quality=90)
            ann = {"token": _token("ann", s, k), "sample_token": sample_tokens[k], "instance_token": inst["token"],
                   "visibility_token": "4", "attribute_tokens": [T["attribute"][0]["token"]],
                   "translation": [10.0 + k, 2.0, 0.5], "size": [1.9, 4.5, 1.6], "rotation": [1.0, 0.0, 0.0, 0.0],
                   "prev": "", "next": "", "num_lidar_pts": 5, "num_radar_pts": 0}
            anns.append(ann)
            T["sample"].append({"token": sample_tokens[k], "timestamp": t0 + k * 500_000,
                                "prev": sample_tokens[k - 1] if k else "",
                                "next": sample_tokens[k + 1] if k < samples - 1 else "",
                                "scene_token": _token("scene", s)})
        for a, b in zip(sd_chain[:-1], sd_chain[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
        T["sample_data"] += sd_chain
        T["scene"].append({"token": _token("scene", s), "log_token": log["token"], "nbr_samples": samples,
                           "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                           "name": f"scene-{61 + s:04d}", "description": f"Fixture drive {s}, {v:.1f} m/s"})
    for a, b in zip(anns[:-1], anns[1:]):
        a["next"], b["prev"] = b["token"], a["token"]
    inst.update(nbr_annotations=len(anns), first_annotation_token=anns[0]["token"],
                last_annotation_token=anns[-1]["token"])
    T["sample_annotation"] = anns
    for name, records in T.items():
        (root / version / f"{name}.json").write_text(json.dumps(records, indent=0))
    (root / "maps").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "maps" / "53992ee3023e5494b90c316c183be829.png")
    return root


# ------------------------------------------------------------------------------------------ OpenDV
def write_opendv(root: str | os.PathLike, videos: int = 2, frames: int = 30, image_size: tuple[int, int] = (72, 128),
                 seed: int = 0) -> dict[str, Path]:
    """``root/frames/<channel>/<video>/000000000.jpg ...`` (10 Hz) and ``root/10hz_YouTube_val.json`` with two
    annotated clips per video."""
    root = Path(root)
    records = []
    for v in range(videos):
        rel = Path("frames") / "Driving_Channel" / f"video_{v:02d}_4K_drive"
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(pattern_frames(frames, *image_size, seed=seed + v)):
            Image.fromarray(img).save(folder / f"{i:09d}.jpg", quality=90)
        half = frames // 2
        records += [{"cmd": (2 * v) % 14, "blip": "a car driving down a street next to tall buildings",
                     "folder": str(rel), "first_frame": f"{0:09d}.jpg", "last_frame": f"{half - 1:09d}.jpg"},
                    {"cmd": (2 * v + 1) % 14, "blip": "a city street with cars parked on the side",
                     "folder": str(rel), "first_frame": f"{half:09d}.jpg", "last_frame": f"{frames - 1:09d}.jpg"}]
    ann = root / "10hz_YouTube_val.json"
    ann.write_text(json.dumps(records, indent=1))
    return {"frames_root": root, "annotations": ann}


def tree(root: str | os.PathLike, max_per_dir: int = 4) -> str:
    """A ``tree``-like listing of a fixture (at most ``max_per_dir`` entries per folder, then a count)."""
    root = Path(root)
    lines = [root.name + "/"]

    def walk(d: Path, prefix: str):
        entries = sorted(d.iterdir(), key=lambda p: (p.is_file(), p.name))
        shown = entries[:max_per_dir]
        for i, p in enumerate(shown):
            last = i == len(shown) - 1 and len(entries) <= max_per_dir
            lines.append(f"{prefix}{'└── ' if last else '├── '}{p.name}{'/' if p.is_dir() else ''}"
                         + ("" if p.is_dir() else f"  ({p.stat().st_size:,} B)"))
            if p.is_dir():
                walk(p, prefix + ("    " if last else "│   "))
        if len(entries) > max_per_dir:
            lines.append(f"{prefix}└── ... {len(entries) - max_per_dir} more")

    walk(root, "")
    return "\n".join(lines)
