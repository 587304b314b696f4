"""wmkit.data loaders on fixtures written in the real on-disk formats: round trips, known answers, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wmkit.data import (
    COMMAND_SPACE,
    MINECRAFT_SPACE,
    NUSCENES_SPACE,
    ClipFormatError,
    load_minerl,
    load_mp4,
    load_nuscenes,
    load_opendv,
    load_vpt,
    mp4_clips,
    read_mp4,
    vpt_index,
    write_mp4,
)
from wmkit.data import fixtures as fx
from wmkit.data.minecraft import CAMERA_SCALER, vpt_actions
from wmkit.data.nuscenes import yaw_from_quaternion

B = {name: i for i, name in enumerate(MINECRAFT_SPACE.names)}


# ------------------------------------------------------------------------------------------ mp4
def test_mp4_round_trip_and_truncation(tmp_path):
    frames = fx.pattern_frames(12, 48, 64)
    write_mp4(tmp_path / "a.mp4", frames, fps=20)
    back = read_mp4(tmp_path / "a.mp4")
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 3  # H.264 at crf 18 is close to lossless here
    c = load_mp4(tmp_path / "a.mp4", size=32)
    assert c.frames.shape == (12, 32, 32, 3) and c.fps == 20.0 and c.action_space.kind == "none"
    assert c.actions.shape == (12, 0)
    data = (tmp_path / "a.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(ClipFormatError, match="cut.mp4"):
        read_mp4(tmp_path / "cut.mp4")
    errors = []
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        clips = mp4_clips(tmp_path, strict=False, errors=errors)
    assert [c.episode for c in clips] == ["a"] and "cut.mp4" in errors[0]
    with pytest.raises(ClipFormatError, match="cut.mp4"):
        mp4_clips(tmp_path)


# ------------------------------------------------------------------------------------------ VPT
def test_vpt_action_conversion_known_answers():
    lines = [fx.vpt_line(0, keys=["key.keyboard.w", "key.keyboard.left.shift"], buttons=[0], new_buttons=[0],
                         dx=24, dy=-12),
             fx.vpt_line(1, buttons=[0, 1]),  # attack still stuck (no new press): removed; use kept
             fx.vpt_line(2, buttons=[0], new_buttons=[0]),  # attack pressed again: unstuck
             fx.vpt_line(3, hotbar=4),  # scroll wheel: hotbar 0 -> 4 sets hotbar.5
             fx.vpt_line(4, keys=["key.keyboard.unknown"]),  # unmapped key only: a null action
             fx.vpt_line(5, dx=10, gui=True)]
    lines[5]["mouse"].update(x=720.0, y=360.0)
    out = vpt_actions(lines, version="6.7", gui_scaling=True, frame_height=360)
    a = out["actions"]
    assert a[0, B["forward"]] == 1 and a[0, B["sneak"]] == 1 and a[0, B["attack"]] == 0  # stuck from line 0
    np.testing.assert_allclose(a[0, -2:], [-12 * CAMERA_SCALER, 24 * CAMERA_SCALER])  # (pitch, yaw) degrees
    assert a[1, B["attack"]] == 0 and a[1, B["use"]] == 1
    assert a[2, B["attack"]] == 1
    assert a[3, B["hotbar.5"]] == 1 and a[3].sum() == 1
    # as in the official loader, null is decided before the hotbar fix-up: a scroll-only frame counts as null
    assert out["null_action"].tolist() == [False, False, False, True, True, False]
    np.testing.assert_allclose(a[5, -1], 10 * 2.0 * CAMERA_SCALER)  # GUI open, recorder 6.7: dx x 2
    np.testing.assert_allclose(out["cursor"][5], [360.0, 180.0])  # 720 x 360/720, 360 x 360/720
    plain = vpt_actions(lines, version="6.7")  # official default: the version scaler is not applied
    np.testing.assert_allclose(plain["actions"][5, -1], 10 * CAMERA_SCALER)


def test_vpt_fixture_round_trip_and_bad_input(tmp_path):
    p = fx.write_vpt(tmp_path, T=16, size=(360, 640))
    (mp4, version), = vpt_index(p["index"])
    assert mp4 == p["mp4"] and version == "6.13"
    c = load_vpt(mp4, size=64, version=version)
    assert c.frames.shape == (16, 64, 64, 3) and c.action_space == MINECRAFT_SPACE and c.fps == 20.0
    assert c.meta["width"] == 640 and c.meta["height"] == 360 and c.meta["last_action_known"]
    lines = [json.loads(x) for x in p["jsonl"].read_text().splitlines()]
    np.testing.assert_allclose(c.actions[:, -1], [x["mouse"]["dx"] * CAMERA_SCALER for x in lines], rtol=1e-6)
    assert c.actions[:, B["forward"]].tolist() == [1.0] * 16
    # a malformed line names file:line; strict=False keeps the frame, pads the action, reports it
    bad = json.loads(json.dumps(lines))  # deep copy
    text = [json.dumps(x) for x in bad]
    text[6] = '{"mouse": {"dx": 1'
    p["jsonl"].write_text("\n".join(text) + "\n")
    with pytest.raises(ClipFormatError, match=r"\.jsonl:7: malformed"):
        load_vpt(mp4)
    errors = []
    with pytest.warns(UserWarning, match="skipped 1"):
        c = load_vpt(mp4, strict=False, errors=errors)
    assert c.extras["bad_line"].tolist() == [i == 6 for i in range(16)] and c.actions[6].sum() == 0
    assert c.meta["bad_lines"] == 1 and ":7:" in errors[0]
    # a line without the real keys
    del bad[3]["keyboard"]
    p["jsonl"].write_text("\n".join(json.dumps(x) for x in bad) + "\n")
    with pytest.raises(ClipFormatError, match=r":4: .*keyboard"):
        load_vpt(mp4)
    # frame/action count mismatch names both counts
    p["jsonl"].write_text("\n".join(json.dumps(x) for x in lines[:10]) + "\n")
    with pytest.raises(ClipFormatError, match="16 video frames but .* has 10 action lines"):
        load_vpt(mp4)
    # one more frame than lines is the documented VPT layout: last action padded
    p["jsonl"].write_text("\n".join(json.dumps(x) for x in lines[:15]) + "\n")
    c = load_vpt(mp4)
    assert len(c) == 16 and c.meta["last_action_known"] is False and c.extras["null_action"][-1]
    dropped = load_vpt(mp4, drop_null=True)
    assert len(dropped) == 16 - int(c.extras["null_action"].sum())


# ------------------------------------------------------------------------------------------ MineRL
def test_minerl_fixture_and_bad_input(tmp_path):
    folder = fx.write_minerl(tmp_path, N=20, pre_frames=2)
    c = load_minerl(folder, size=None)
    assert len(c) == 21 and c.meta["skipped_video_frames"] == 2 and c.meta["last_action_known"] is False
    with np.load(folder / "rendered.npz") as z:
        np.testing.assert_allclose(c.actions[:20, -2:], z["action$camera"])
        assert c.actions[:20, B["forward"]].tolist() == z["action$forward"].astype(float).tolist()
        assert c.actions[:20, B["use"]].tolist() == (z["action$place"] != "none").astype(float).tolist()
        np.testing.assert_array_equal(c.reward[:20], z["reward"])
    assert c.reward[20] == 0 and c.done.tolist() == [False] * 19 + [True, False]
    assert list(c.extras["craft"][:2]) == ["none", "none"]
    # skipped pre-experiment frames: frame 0 of the clip is video frame 2 (the stripes have moved)
    video = read_mp4(folder / "recording.mp4")
    np.testing.assert_array_equal(c.frames[0], video[2])
    # wrong row count names the key; a pickled object array is refused
    with np.load(folder / "rendered.npz") as z:
        arrays = dict(z)
    np.savez(folder / "rendered.npz", **dict(arrays, **{"observation$inventory$log": np.zeros(5)}))
    with pytest.raises(ClipFormatError, match=r"observation\$inventory\$log has 5 rows, expected 21"):
        load_minerl(folder)
    np.savez(folder / "rendered.npz", **dict(arrays, **{"action$equip": np.array([{"a": 1}] * 20, dtype=object)}))
    with pytest.raises(ClipFormatError, match=r"action\$equip.*pickled"):
        load_minerl(folder)
    with pytest.warns(UserWarning, match="skipped 1"):
        c = load_minerl(folder, strict=False)
    assert c.meta["refused_arrays"] == 1
    (folder / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        load_minerl(folder)


# ------------------------------------------------------------------------------------------ nuScenes
def test_nuscenes_ego_motion_known_answer(tmp_path):
    root = fx.write_nuscenes(tmp_path, scenes=2, samples=8, speed=5.0, yaw_rate=0.1)
    clips = load_nuscenes(root, size=32)
    assert [c.episode for c in clips] == ["scene-0061", "scene-0062"] and clips[0].action_space == NUSCENES_SPACE
    c = clips[0]
    assert c.frames.shape == (8, 32, 32, 3) and c.fps == 2.0 and c.meta["location"] == "singapore-onenorth"
    # constant 5 m/s on a circle of radius 50 m: chord/dt = 2 R sin(w dt / 2) / dt
    np.testing.assert_allclose(c.actions[:-1, 0], 2 * 50 * np.sin(0.1 * 0.5 / 2) / 0.5, rtol=1e-5)
    np.testing.assert_allclose(c.actions[:-1, 1], 0.1, rtol=1e-5)
    np.testing.assert_allclose(clips[1].actions[:-1, 0], 7.5, rtol=1e-3)
    assert np.diff(c.extras["timestamp"]).tolist() == [500_000] * 7  # keyframes only (sweeps skipped)
    assert yaw_from_quaternion([np.cos(0.3), 0, 0, np.sin(0.3)]) == pytest.approx(0.6)


def test_nuscenes_bad_tables(tmp_path):
    root = fx.write_nuscenes(tmp_path, scenes=2, samples=4)
    tables = root / "v1.0-mini"
    sd = json.loads((tables / "sample_data.json").read_text())
    sd[3]["ego_pose_token"] = "deadbeef"
    (tables / "sample_data.json").write_text(json.dumps(sd))
    with pytest.raises(ClipFormatError, match="sample_data.json: record .* dangling ego_pose_token 'deadbeef'"):
        load_nuscenes(root)
    sd[3]["ego_pose_token"] = json.loads((tables / "ego_pose.json").read_text())[3]["token"]
    (tables / "sample_data.json").write_text(json.dumps(sd))
    first_key = next(x for x in sd if x["is_key_frame"])
    (root / first_key["filename"]).unlink()
    with pytest.raises(ClipFormatError, match="missing image"):
        load_nuscenes(root)
    errors = []
    with pytest.warns(UserWarning, match="skipped 1 of 2 scenes"):
        clips = load_nuscenes(root, strict=False, errors=errors)
    assert [c.episode for c in clips] == ["scene-0062"] and "scene-0061" in errors[0]
    (tables / "visibility.json").unlink()
    with pytest.raises(ClipFormatError, match="missing table 'visibility'"):
        load_nuscenes(root)


def _devkit_python() -> str | None:
    try:
        import nuscenes  # noqa: F401

        return sys.executable
    except ImportError:
        return os.environ.get("WMKIT_NUSCENES_PYTHON")


@pytest.mark.skipif(_devkit_python() is None, reason="nuscenes-devkit is not installed (tools/setup.sh installs it "
                    "with --no-deps: its metadata pins numpy<2); or set WMKIT_NUSCENES_PYTHON to a Python that has it")
def test_nuscenes_fixture_opens_in_official_devkit(tmp_path):
    root = fx.write_nuscenes(tmp_path, scenes=2, samples=5)
    code = ("from nuscenes.nuscenes import NuScenes\n"
            f"n = NuScenes(version='v1.0-mini', dataroot={str(root)!r}, verbose=False)\n"
            "s = n.get('sample', n.scene[0]['first_sample_token'])\n"
            "sd = n.get('sample_data', s['data']['CAM_FRONT'])\n"
            "print(len(n.scene), len(n.sample), sd['channel'], n.get_sample_data_path(sd['token']))\n")
    out = subprocess.run([_devkit_python(), "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n_scene, n_sample, channel, path = out.stdout.split()
    assert (n_scene, n_sample, channel) == ("2", "10", "CAM_FRONT") and os.path.exists(path)


# ------------------------------------------------------------------------------------------ OpenDV
def test_opendv_annotations_commands_and_gaps(tmp_path):
    p = fx.write_opendv(tmp_path, videos=2, frames=20)
    clips = load_opendv(p["frames_root"], p["annotations"], size=32)
    assert len(clips) == 4 and clips[0].action_space == COMMAND_SPACE
    assert [c.meta["command"] for c in clips] == ["Go straight.", "Pass the intersection.", "Turn left.",
                                                  "Turn right."]
    assert clips[1].actions.tolist() == [1] * 10 and clips[1].meta["frame_index"] == 10 and clips[1].fps == 10.0
    assert clips[0].episode == clips[1].episode != clips[2].episode  # split by video, not by annotated clip
    whole = load_opendv(p["frames_root"], size=32)
    assert [len(c) for c in whole] == [20, 20]
    np.testing.assert_array_equal(whole[0].frames[10:], clips[1].frames)
    recs = json.loads(p["annotations"].read_text())
    recs[2]["cmd"] = 14
    p["annotations"].write_text(json.dumps(recs))
    with pytest.raises(ClipFormatError, match=r"10hz_YouTube_val.json\[2\]: cmd 14"):
        load_opendv(p["frames_root"], p["annotations"])
    recs[2]["cmd"] = 2
    p["annotations"].write_text(json.dumps(recs))
    gap = p["frames_root"] / recs[0]["folder"] / "000000004.jpg"
    gap.unlink()
    with pytest.raises(ClipFormatError, match="frame 000000004.jpg is missing"):
        load_opendv(p["frames_root"], p["annotations"])
    errors = []
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        assert len(load_opendv(p["frames_root"], p["annotations"], strict=False, errors=errors)) == 3
    with pytest.raises(ClipFormatError, match="missing"):
        load_opendv(p["frames_root"])
    del recs[0]["blip"]
    p["annotations"].write_text(json.dumps(recs))
    with pytest.raises(ClipFormatError, match=r"\[0\]: record misses \['blip'\]"):
        load_opendv(p["frames_root"], p["annotations"], strict=True)
