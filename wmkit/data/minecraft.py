"""Minecraft demonstrations: OpenAI VPT contractor data and MineRL 0.x demos, as clips with one action space.

**VPT** (Baker et al. 2022; format from openai/Video-Pre-Training ``data_loader.py`` and
``run_inverse_dynamics_model.py``): ``<name>.mp4`` (640x360, 20 Hz) with ``<name>.jsonl``, one JSON action
per frame with ``mouse {x, y, dx, dy, buttons, newButtons}``, ``keyboard {keys, newKeys, chars}``,
``hotbar``, ``tick``, ``isGuiOpen`` (and more). An index file ``{"basedir": ..., "relpaths": [...]}`` lists
the recordings; the relpath's folder is the recorder version (``data/6.13/<name>.mp4``). Conversion, as the
official loader does it:

* keys -> buttons via the official key table (``key.keyboard.w`` -> forward, ...); mouse buttons 0/1/2 ->
  attack/use/pickItem;
* camera = (dy, dx) * 360/2400 degrees (pitch, yaw) (``CAMERA_SCALER``);
* "attack stuck down": when the first line's ``newButtons`` is ``[0]``, attack is removed until the player
  presses it again;
* a hotbar change (scroll wheel, not recorded as a key) sets ``hotbar.<n+1>``;
* while a GUI is open, dx/dy are multiplied by the recorder version's scaler (5.7/5.8: 0.5, 6.7-6.9: 2.0,
  else 1). The official loader declares this table but does not apply it; wmkit applies it when
  ``gui_scaling=True`` (default False, the official behaviour).

Differences from the official loader (deliberate): null actions are kept (the paper drops them for
behavioural cloning; a world model needs every frame) and flagged in ``extras["null_action"]``
(``drop_null=True`` drops them as VPT does); the mouse cursor is not drawn on GUI frames (its x, y scaled
to the frame are kept in ``extras["cursor"]``).

**MineRL 0.x** (Guss et al. 2019; format from minerllabs/minerl ``data/data_pipeline.py``): one folder per
demo with ``recording.mp4``, ``rendered.npz`` (``reward`` (N,), ``action$<name>`` (N, ...),
``observation$<name>`` (N+1, ...): one more state than rewards) and ``metadata.json`` whose
``true_video_frame_count`` says how many video frames there are; the first ``true_video_frame_count -
(N + 1)`` frames precede the experiment and are skipped, as the official pipeline does. Object
(pickled) arrays are refused (never unpickle a downloaded file): such a key raises in strict mode and is
skipped and reported otherwise.

Both map to :data:`MINECRAFT_SPACE`: 23 binary buttons + camera (pitch, yaw) in degrees. MineRL's
``place`` (an enum, "none" or an item) counts as ``use`` (placing is the use button); its other enums
(equip, craft, nearbyCraft, nearbySmelt) are kept raw in ``extras``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from wmkit.data.clip import ActionSpace, Clip, ClipFormatError, report_skipped
from wmkit.data.video import probe_mp4, read_mp4

KEYBOARD_BUTTONS = {  # official KEYBOARD_BUTTON_MAPPING
    "key.keyboard.escape": "ESC", "key.keyboard.s": "back", "key.keyboard.q": "drop", "key.keyboard.w": "forward",
    **{f"key.keyboard.{i}": f"hotbar.{i}" for i in range(1, 10)},
    "key.keyboard.e": "inventory", "key.keyboard.space": "jump", "key.keyboard.a": "left", "key.keyboard.d": "right",
    "key.keyboard.left.shift": "sneak", "key.keyboard.left.control": "sprint", "key.keyboard.f": "swapHands",
}
MOUSE_BUTTONS = {0: "attack", 1: "use", 2: "pickItem"}
BUTTONS = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack", "use", "drop", "inventory",
           *(f"hotbar.{i}" for i in range(1, 10)), "ESC", "swapHands", "pickItem")
MINECRAFT_SPACE = ActionSpace("continuous", dim=len(BUTTONS) + 2, names=(*BUTTONS, "camera_pitch", "camera_yaw"),
                              units=("pressed",) * len(BUTTONS) + ("degrees", "degrees"))
CAMERA_SCALER = 360.0 / 2400.0  # official: matches MineRL's mouse sensitivity
MINEREC_ORIGINAL_HEIGHT_PX = 720
MINEREC_VERSION_SPECIFIC_SCALERS = {"5.7": 0.5, "5.8": 0.5, "6.7": 2.0, "6.8": 2.0, "6.9": 2.0}
VPT_FPS = 20.0
_BUTTON_INDEX = {b: i for i, b in enumerate(BUTTONS)}
_REQUIRED = {"mouse": ("dx", "dy", "buttons", "newButtons"), "keyboard": ("keys",)}


# ------------------------------------------------------------------------------------------ VPT
def read_jsonl(path: str | os.PathLike, strict: bool = True, errors: list[str] | None = None) -> list[dict | None]:
    """Parse a VPT .jsonl; a malformed line or a line without the required keys raises naming file:line.
    ``strict=False`` returns None for such lines (and reports them)."""
    path = Path(path)
    out, bad = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                msg = f"{path}:{n}: empty line (one JSON action per frame expected)"
                rec = None
            else:
                try:
                    rec = json.loads(line)
                    msg = None
                    if not isinstance(rec, dict):
                        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
                    for key, sub in _REQUIRED.items():
                        if not isinstance(rec.get(key), dict) or any(s not in rec[key] for s in sub):
                            raise ValueError(f"missing {key}.{{{', '.join(sub)}}}")
                    if "hotbar" not in rec or "isGuiOpen" not in rec:
                        raise ValueError("missing hotbar or isGuiOpen")
                except ValueError as e:
                    msg, rec = f"{path}:{n}: malformed VPT action line ({e})", None
            if msg:
                if strict:
                    raise ClipFormatError(msg)
                bad.append(msg)
            out.append(rec)
    report_skipped(f"read_jsonl({path})", bad, errors)
    return out


def vpt_actions(lines: list[dict | None], version: str | None = None, gui_scaling: bool = False,
                frame_height: int = 360) -> dict[str, np.ndarray]:
    """Convert parsed jsonl lines to MINECRAFT_SPACE vectors (T, 25) plus null/cursor/valid arrays."""
    T = len(lines)
    actions = np.zeros((T, MINECRAFT_SPACE.dim), np.float32)
    null = np.ones(T, bool)
    cursor = np.zeros((T, 2), np.float32)
    valid = np.array([rec is not None for rec in lines])
    attack_stuck, last_hotbar = False, 0
    gui_scale = MINEREC_VERSION_SPECIFIC_SCALERS.get(str(version), 1.0) if gui_scaling else 1.0
    for t, rec in enumerate(lines):
        if rec is None:
            continue
        mouse = rec["mouse"]
        buttons = list(mouse["buttons"])
        if t == 0:
            attack_stuck = list(mouse["newButtons"]) == [0]
        elif attack_stuck and 0 in mouse["newButtons"]:
            attack_stuck = False
        if attack_stuck:
            buttons = [b for b in buttons if b != 0]
        for key in rec["keyboard"]["keys"]:
            if key in KEYBOARD_BUTTONS:
                actions[t, _BUTTON_INDEX[KEYBOARD_BUTTONS[key]]] = 1.0
        for b in buttons:
            if b in MOUSE_BUTTONS:
                actions[t, _BUTTON_INDEX[MOUSE_BUTTONS[b]]] = 1.0
        # [eq:camera]
        dx, dy = float(mouse["dx"]), float(mouse["dy"])
        if rec["isGuiOpen"]:
            dx, dy = dx * gui_scale, dy * gui_scale
            s = frame_height / MINEREC_ORIGINAL_HEIGHT_PX
            cursor[t] = (float(mouse.get("x", 0)) * s, float(mouse.get("y", 0)) * s)
        actions[t, -2:] = (dy * CAMERA_SCALER, dx * CAMERA_SCALER)  # (pitch, yaw) degrees
        # [/eq:camera]
        null[t] = not (actions[t, :-2].any() or dx != 0 or dy != 0)  # null = no key, no button, no mouse move
        hotbar = int(rec["hotbar"])
        if hotbar != last_hotbar:
            actions[t, _BUTTON_INDEX[f"hotbar.{hotbar + 1}"]] = 1.0
        last_hotbar = hotbar
    return {"actions": actions, "null_action": null, "cursor": cursor, "valid": valid}


def load_vpt(mp4_path: str | os.PathLike, jsonl_path: str | os.PathLike | None = None,
             size: int | tuple[int, int] | None = 64, version: str | None = None, gui_scaling: bool = False,
             drop_null: bool = False, strict: bool = True, errors: list[str] | None = None) -> Clip:
    """One VPT recording as a clip in :data:`MINECRAFT_SPACE` (frames resized to ``size``).

    The video must have as many frames as the jsonl has lines, or one more (the frame after the last
    action; its action is then the pad and ``meta["last_action_known"]`` is False); anything else raises
    naming both counts. ``strict=False``: malformed lines become pad actions flagged in
    ``extras["bad_line"]`` and are reported.
    """
    mp4_path = Path(mp4_path)
    jsonl_path = Path(jsonl_path) if jsonl_path is not None else mp4_path.with_suffix(".jsonl")
    if not jsonl_path.exists():
        raise FileNotFoundError(f"{jsonl_path}: the action file for {mp4_path} is missing")
    lines = read_jsonl(jsonl_path, strict, errors)
    info = probe_mp4(mp4_path)
    frames = read_mp4(mp4_path, size)
    T, A = len(frames), len(lines)
    if T not in (A, A + 1):
        raise ClipFormatError(f"{mp4_path}: {T} video frames but {jsonl_path} has {A} action lines "
                              f"(expected {A} or {A + 1} frames)")
    conv = vpt_actions(lines, version, gui_scaling, info["height"])
    extra = T - A
    pad = lambda x, v: np.concatenate([x, np.full((extra, *x.shape[1:]), v, x.dtype)]) if extra else x  # noqa: E731
    actions, null = pad(conv["actions"], 0), pad(conv["null_action"], True)
    extras = {"null_action": null, "cursor": pad(conv["cursor"], 0), "bad_line": pad(~conv["valid"], False)}
    meta = dict(source=str(mp4_path), fps=info["fps"] or VPT_FPS, episode=mp4_path.stem, dataset="vpt",
                version=version, gui_scaling=gui_scaling, width=info["width"], height=info["height"],
                last_action_known=extra == 0, bad_lines=int((~conv["valid"]).sum()))
    if drop_null:
        keep = ~null
        frames, actions = frames[keep], actions[keep]
        extras = {k: v[keep] for k, v in extras.items()}
        meta["dropped_null"] = int(null.sum())
    return Clip(frames, actions, MINECRAFT_SPACE, meta=meta, extras=extras)


def vpt_index(index_json: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """(mp4 path, recorder version) for each relpath of a VPT index file (``{"basedir", "relpaths"}``).
    Files are looked up under ``root`` (default: the index file's folder)."""
    index_json = Path(index_json)
    try:
        index = json.loads(index_json.read_text())
        relpaths = index["relpaths"]
    except (ValueError, KeyError, TypeError) as e:
        raise ClipFormatError(f"{index_json}: not a VPT index (expected {{'basedir': ..., 'relpaths': [...]}}): "
                              f"{e}") from e
    root = Path(root) if root is not None else index_json.parent
    return [(root / rel, Path(rel).parent.name) for rel in relpaths]


# ------------------------------------------------------------------------------------------ MineRL
def load_minerl(folder: str | os.PathLike, size: int | tuple[int, int] | None = 64, strict: bool = True,
                errors: list[str] | None = None) -> Clip:
    """One MineRL 0.x demonstration folder as a clip in :data:`MINECRAFT_SPACE` (see module docstring).

    The clip has N + 1 frames (the N states before each action and the final one); the final frame's
    action is the pad (``meta["last_action_known"] = False``), its reward 0, and ``done`` is True at the last
    action, as the official pipeline marks it.
    """
    folder = Path(folder)
    paths = {n: folder / n for n in ("recording.mp4", "rendered.npz", "metadata.json")}
    for name, p in paths.items():
        if not p.exists():
            raise FileNotFoundError(f"{folder}: missing {name} (a MineRL demo folder has recording.mp4, "
                                    f"rendered.npz, metadata.json)")
    try:
        meta_in = json.loads(paths["metadata.json"].read_text())
    except ValueError as e:
        raise ClipFormatError(f"{paths['metadata.json']}: invalid JSON ({e})") from e
    bad, arrays = [], {}
    try:
        with np.load(paths["rendered.npz"], allow_pickle=False) as z:
            for key in z.files:
                try:
                    arrays[key] = z[key]
                except ValueError as e:  # object arrays need pickle: refused
                    msg = f"{paths['rendered.npz']}: array {key!r} is a pickled object array; refused ({e})"
                    if strict:
                        raise ClipFormatError(msg) from e
                    bad.append(msg)
    except ClipFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read the archive names the file
        raise ClipFormatError(f"{paths['rendered.npz']}: unreadable npz ({type(e).__name__}: {e})") from e
    report_skipped(f"load_minerl({folder})", bad, errors)
    if "reward" not in arrays:
        raise ClipFormatError(f"{paths['rendered.npz']}: missing 'reward'")
    reward = arrays["reward"].astype(np.float32)
    N = len(reward)
    for key, arr in arrays.items():
        want = N if key.startswith("action$") else N + 1 if key.startswith("observation$") else None
        if want is not None and len(arr) != want:
            raise ClipFormatError(f"{paths['rendered.npz']}: {key} has {len(arr)} rows, expected {want} "
                                  f"({'one per reward' if want == N else 'one more than rewards'}; N = {N})")
    total = int(meta_in.get("true_video_frame_count", N + 1))
    frames = read_mp4(paths["recording.mp4"], size)
    if len(frames) != total:
        raise ClipFormatError(f"{paths['recording.mp4']}: decoded {len(frames)} frames but metadata.json says "
                              f"true_video_frame_count = {total}")
    if total < N + 1:
        raise ClipFormatError(f"{folder}: {total} video frames for {N} rewards (need at least {N + 1})")
    frames = frames[total - (N + 1):]  # the frames before the experiment starts are skipped (official)
    actions = np.zeros((N + 1, MINECRAFT_SPACE.dim), np.float32)
    extras = {}
    for key, arr in arrays.items():
        if not key.startswith("action$"):
            continue
        name = key.split("$", 1)[1]
        if name == "camera":
            actions[:N, -2:] = arr.astype(np.float32)  # MineRL camera is already (pitch, yaw) in degrees
        elif name in _BUTTON_INDEX and arr.dtype.kind in "biuf":
            actions[:N, _BUTTON_INDEX[name]] = arr.astype(np.float32)
        elif name == "place":
            actions[:N, _BUTTON_INDEX["use"]] = (arr.astype(str) != "none") if arr.dtype.kind == "U" else arr != 0
            extras["place"] = np.concatenate([arr, arr[-1:]])
        else:
            extras[name] = np.concatenate([arr, arr[-1:]])  # raw enum / other actions, last row repeated as pad
    done = np.zeros(N + 1, bool)
    done[N - 1] = N > 0
    meta = dict(source=str(folder), fps=VPT_FPS, episode=str(meta_in.get("stream_name", folder.name)),
                dataset="minerl", last_action_known=False, skipped_video_frames=total - (N + 1),
                refused_arrays=len(bad))
    return Clip(frames, actions, MINECRAFT_SPACE, np.concatenate([reward, [0.0]]).astype(np.float32), done, meta,
                extras)
