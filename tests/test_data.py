"""wmkit.data core: the clip format, windows and the split by episode, the recorded stand-ins."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from wmkit.data import (
    CRAFTER_SPACE,
    DRIVING_SPACE,
    ActionSpace,
    Clip,
    ClipDataset,
    ClipFormatError,
    crafter_clips,
    load_clip,
    record_atari,
    record_crafter,
    record_driving,
    resize_frames,
    save_clip,
    split_episodes,
    to_keyframes,
    worldmodels_clips,
)


def numbered_clip(T=10, episode="e0", H=8, continuous=False, reward=True):
    """Frame t is filled with the value t, so windows can be checked by their pixel values."""
    frames = np.broadcast_to(np.arange(T, dtype=np.uint8)[:, None, None, None], (T, H, H, 3)).copy()
    if continuous:
        space = ActionSpace("continuous", dim=2, names=("a", "b"))
        actions = np.stack([np.arange(T), -np.arange(T)], 1).astype(np.float32)
    else:
        space = ActionSpace("discrete", n=32, names=[f"a{i}" for i in range(32)])
        actions = np.arange(T, dtype=np.int64)
    return Clip(frames, actions, space, np.arange(T, dtype=np.float32) if reward else None,
                np.arange(T) == T - 1, dict(source=f"test:{episode}", episode=episode, fps=10.0))


# ------------------------------------------------------------------------------------------ Clip
def test_clip_validation_names_the_problem():
    c = numbered_clip()
    with pytest.raises(ClipFormatError, match="test:e0.*uint8"):
        Clip(c.frames.astype(np.float32), c.actions, c.action_space, meta=c.meta)
    bad = c.actions.copy()
    bad[7] = 32
    with pytest.raises(ClipFormatError, match=r"action 32 at frame 7 is outside \[0, 32\)"):
        Clip(c.frames, bad, c.action_space, meta=c.meta)
    with pytest.raises(ClipFormatError, match=r"shape \(10,\)"):
        Clip(c.frames, c.actions[:9], c.action_space, meta=c.meta)
    with pytest.raises(ClipFormatError, match="reward"):
        Clip(c.frames, c.actions, c.action_space, reward=np.zeros(9), meta=c.meta)
    with pytest.raises(ClipFormatError, match="non-finite action at frame 3"):
        a = numbered_clip(continuous=True).actions.copy()
        a[3, 1] = np.nan
        Clip(c.frames, a, ActionSpace("continuous", dim=2), meta=c.meta)
    with pytest.raises(ClipFormatError, match=r"action\[2\]\[0\] = 5.0 is above high 1.0"):
        Clip(c.frames[:3], np.array([[0.0], [1.0], [5.0]], np.float32),
             ActionSpace("continuous", dim=1, low=(-1.0,), high=(1.0,)), meta=c.meta)
    with pytest.raises(ValueError, match="kind"):
        ActionSpace("mixed")


def test_clip_save_load_round_trip(tmp_path):
    c = numbered_clip(continuous=True)
    c.extras["pose"] = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    back = load_clip(save_clip(tmp_path / "c.npz", c))
    np.testing.assert_array_equal(back.frames, c.frames)
    np.testing.assert_array_equal(back.actions, c.actions)
    np.testing.assert_array_equal(back.reward, c.reward)
    np.testing.assert_array_equal(back.done, c.done)
    np.testing.assert_array_equal(back.extras["pose"], c.extras["pose"])
    assert back.action_space == c.action_space and back.meta == c.meta
    (tmp_path / "bad.npz").write_bytes((tmp_path / "c.npz").read_bytes()[:100])
    with pytest.raises(ClipFormatError, match="bad.npz"):
        load_clip(tmp_path / "bad.npz")


def test_subsample_averages_actions_sums_rewards():
    c = numbered_clip(T=5, continuous=True).subsample(2)
    np.testing.assert_array_equal(c.frames[:, 0, 0, 0], [0, 2, 4])
    np.testing.assert_allclose(c.actions[:, 0], [0.5, 2.5, 4.0])  # mean over (0,1), (2,3), (4)
    np.testing.assert_allclose(c.reward, [1.0, 5.0, 4.0])  # 0+1, 2+3, 4
    np.testing.assert_array_equal(c.done, [False, False, True])
    assert c.fps == 5.0 and c.meta["frame_stride"] == 2
    with pytest.raises(ValueError, match="discrete"):
        numbered_clip().subsample(2)


# ------------------------------------------------------------------------------------------ split + windows
def test_split_is_by_episode_deterministic_and_order_free():
    eps = [f"ep{i}" for i in range(10)]
    train, held = split_episodes(eps, 0.2, seed=0)
    assert len(held) == 2 and len(train) == 8 and not set(train) & set(held)
    assert split_episodes(eps[::-1], 0.2, seed=0) == (train, held)
    assert split_episodes(["a", "b"], 0.01)[1] != []  # fraction > 0 holds out at least one of >= 2
    assert split_episodes(["a"], 0.5) == (["a"], [])
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_episodes(eps, 1.0)


def test_clip_dataset_windows_and_no_leak():
    clips = [numbered_clip(T=10 + i, episode=f"e{i % 5}") for i in range(10)]  # 5 episodes, 2 clips each
    train = ClipDataset(clips, context=3, future=2, size=None, split="train", heldout_fraction=0.4)
    held = ClipDataset(clips, context=3, future=2, size=None, split="heldout", heldout_fraction=0.4)
    assert set(train.episodes()).isdisjoint(held.episodes()) and len(held.episodes()) == 2
    assert {item["episode"] for item in (held[i] for i in range(len(held)))} == set(held.episodes())
    assert len(train) + len(held) == sum(len(c) - 5 + 1 for c in clips)
    item = train[7]
    k, s = train.index[7]
    assert item["frames"].shape == (5, 3, 8, 8) and item["frames"].dtype == torch.float32
    np.testing.assert_allclose(item["frames"][:, 0, 0, 0].numpy() * 255, np.arange(s, s + 5), atol=1e-4)
    assert item["actions"].tolist() == list(range(s, s + 5)) and item["start"] == s
    assert item["reward"].tolist() == list(range(s, s + 5))
    skip = ClipDataset(clips, context=2, future=1, size=None, split="all", frame_skip=3)
    assert skip[0]["actions"].tolist() == [0, 3, 6]


def test_clip_dataset_resize_and_errors():
    clips = [numbered_clip(T=6, episode=f"e{i}", H=16) for i in range(3)]
    ds = ClipDataset(clips, context=2, future=1, size=8, split="all")
    x = ds[0]["frames"]
    assert x.shape == (3, 3, 8, 8)
    np.testing.assert_allclose(x[:, 0, 0, 0].numpy() * 255, [0, 1, 2], atol=1e-4)  # constant frames stay
    with pytest.raises(ValueError, match="no window of 20 frames"), pytest.warns(UserWarning, match="3 clip"):
        ClipDataset(clips, context=19, future=1, split="all")
    with pytest.raises(ValueError, match="action space"):
        ClipDataset([clips[0], numbered_clip(continuous=True)], context=1)


def test_resize_frames_area_average():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    small = resize_frames(f, 8)
    assert small.shape == (2, 8, 8, 3) and small.dtype == np.uint8
    assert abs(small.astype(float).mean() - f.astype(float).mean()) < 2.0  # antialiasing keeps the mean
    assert small.std() < f.std() / 2  # and averages the noise
    assert resize_frames(f, 32) is f


# ------------------------------------------------------------------------------------------ stand-ins
@pytest.mark.slow
def test_crafter_recording_walks_mines_places_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("WMKIT_RUNS_DIR", str(tmp_path))
    c = record_crafter(seed=1, steps=200)
    assert c.action_space == CRAFTER_SPACE and c.frames.shape[1:] == (64, 64, 3)
    assert {"collect_wood", "place_table", "make_wood_pickaxe"} <= set(c.meta["achievements"])
    counts = np.bincount(c.actions, minlength=17)
    assert (counts[1:5] > 5).all() and counts[5] > 10  # walks in every direction and uses "do"
    assert len(np.unique(c.frames.reshape(len(c), -1), axis=0)) > len(c) // 2  # the view changes
    np.testing.assert_array_equal(record_crafter(seed=1, steps=30).frames, c.frames[:30])  # deterministic
    a = crafter_clips(episodes=1, steps=20, seed=3, progress=False)
    assert list((tmp_path / "data" / "crafter").glob("*.npz"))
    b = crafter_clips(episodes=1, steps=20, seed=3, progress=False)
    np.testing.assert_array_equal(a[0].frames, b[0].frames)
    assert a[0].episode == "crafter-300009"


def test_driving_ego_motion_matches_poses_and_keyframes():
    c = record_driving(seed=0, steps=60, skip_zoom=50)
    assert c.action_space == DRIVING_SPACE and c.actions.shape == (60, 3) and c.fps == 50.0
    pose = c.extras["pose"].astype(np.float64)
    speed = np.hypot(*(pose[1:, :2] - pose[:-1, :2]).T) * 50
    np.testing.assert_allclose(c.actions[:-1, 0], speed, rtol=1e-3, atol=1e-3)
    dyaw = (pose[1:, 2] - pose[:-1, 2] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(c.actions[:-1, 2], dyaw * 50, rtol=1e-3, atol=1e-2)
    np.testing.assert_array_equal(c.actions[:, 1], c.extras["control"][:, 0])
    assert c.actions[:, 0].max() > 5  # the car moves
    k = to_keyframes(c, 2.0)
    assert len(k) == 3 and k.fps == 2.0
    np.testing.assert_allclose(k.actions[1], c.actions[25:50].mean(0), rtol=1e-5)
    np.testing.assert_array_equal(k.frames[1], c.frames[25])


def test_atari_clip():
    c = record_atari("pong", seed=0, steps=40)
    assert c.frames.shape == (40, 64, 64, 3) and c.action_space.n == 6 and c.action_space.names[0] == "NOOP"
    assert c.meta["frame_skip"] == 4


def test_worldmodels_episode_adapter(tmp_path):
    from wmkit.worldmodels.data import Episode, save_episode

    rng = np.random.default_rng(0)
    T = 7
    ep = Episode(obs=rng.integers(0, 256, (T + 1, 64, 64, 3), dtype=np.uint8),
                 actions=rng.uniform(0, 1, (T, 3)).astype(np.float32), rewards=np.arange(T, dtype=np.float32),
                 terminated=np.arange(T) == T - 1, truncated=np.zeros(T, bool), seed=5)
    save_episode(tmp_path / "episode_000005.npz", ep)
    (c,) = worldmodels_clips(tmp_path)
    assert len(c) == T + 1 and c.meta["last_action_known"] is False and c.meta["seed"] == 5
    np.testing.assert_array_equal(c.frames, ep.obs)
    np.testing.assert_array_equal(c.actions[:T], ep.actions)
    assert c.action_space.names == ("steer", "gas", "brake") and c.actions[T].tolist() == [0, 0, 0]
    assert c.done.tolist() == [False] * (T - 1) + [True, False]
    assert c.slice(0, T).meta["last_action_known"] and not c.slice(2, T + 1).meta["last_action_known"]
    doom = Episode(obs=ep.obs, actions=rng.uniform(-1, 1, (T, 1)).astype(np.float32), rewards=ep.rewards,
                   terminated=ep.terminated, truncated=ep.truncated, seed=6)
    (tmp_path / "doom").mkdir()
    np.savez(tmp_path / "doom" / "episode_000006.npz", obs=doom.obs, actions=doom.actions, rewards=doom.rewards,
             terminated=doom.terminated, truncated=doom.truncated, seed=np.int64(6))
    (d,) = worldmodels_clips(tmp_path / "doom")
    assert d.action_space.names == ("strafe",) and d.meta["env"] == "VizdoomTakeCover-v1" and d.fps == 0.0
    (tmp_path / "episode_000006.npz").write_bytes(b"not a zip")
    with pytest.raises(ClipFormatError, match="episode_000006.npz"):
        worldmodels_clips(tmp_path)


def test_crafter_episode_is_the_same_in_every_process():
    """The same seed gives the same Crafter episode in two processes with different string-hash seeds. Before
    ``crafter_reproducible`` it did not: Crafter despawns a creature picked from a set of objects hashed by memory
    address (world seed 0, random policy: 186 frames in one process, 143 in another)."""
    import subprocess
    import sys

    code = ("import hashlib; from wmkit.data.standins import record_crafter; "
            "c = record_crafter(0, 200, 1.0, 64); print(len(c.frames), hashlib.md5(c.frames.tobytes()).hexdigest())")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 3)]
    assert outs[0] == outs[1] and outs[0].strip()
