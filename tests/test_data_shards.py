"""WebDataset shards: round trip, exactly-once over 2 workers x 2 ranks, shuffle, resume, corrupt shards, CLI."""

from __future__ import annotations

import collections
import json
import tarfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wmkit.data import ActionSpace, Clip, ClipFormatError, ShardDataset, load_clip, save_clip, write_shards
from wmkit.data.shards import clip_pieces


def make_clips(lengths=(20, 33, 8, 16, 40, 5), size=16):
    rng = np.random.default_rng(0)
    space = ActionSpace("continuous", dim=2, names=("a", "b"))
    return [Clip(rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8), rng.normal(size=(T, 2)).astype(np.float32),
                 space, rng.normal(size=T).astype(np.float32), np.arange(T) == T - 1,
                 dict(source=f"test:{i}", episode=f"ep{i}", fps=10.0), {"pose": np.arange(T * 3.0).reshape(T, 3)})
            for i, T in enumerate(lengths)]


def test_pieces_cover_every_frame():
    clips = make_clips()
    assert clip_pieces(clips[0], 8) == [0, 8, 12]  # the last piece ends at frame 20 (overlaps by 4)
    assert clip_pieces(clips[3], 8) == [0, 8] and clip_pieces(clips[5], 8) == []


def test_round_trip_and_exactly_once_over_workers_and_ranks(tmp_path):
    clips = make_clips()
    with pytest.warns(UserWarning, match="1 clip.* shorter than clip_len=8"):
        m = write_shards(clips, tmp_path, clip_len=8, shard_size=3, size=None, progress=False)
    assert m["samples"] == 3 + 5 + 1 + 2 + 5 and len(m["shards"]) == 6 and m["too_short"] == ["test:5"]
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:  # WebDataset layout: <key>.<field>
        names = tar.getnames()
    assert "ep0-000000000.frames.npy" in names and "ep0-000000000.info.json" in names
    got = {(c.episode, c.meta["frame_index"]): c for c in ShardDataset(tmp_path, as_tensors=False)}
    piece = got[("ep1", 25)]  # the tail piece of the 33-frame clip
    np.testing.assert_array_equal(piece.frames, clips[1].frames[25:33])
    np.testing.assert_array_equal(piece.actions, clips[1].actions[25:33])
    np.testing.assert_array_equal(piece.extras["pose"], clips[1].extras["pose"][25:33])
    assert piece.done[-1] and piece.action_space == clips[1].action_space
    for n_shards_small in (False, True):  # 6 shards >= 4 consumers: split by shard; 1 shard: split by sample
        src = tmp_path
        if n_shards_small:
            src = tmp_path / "one"
            write_shards(clips[:5], src, clip_len=8, shard_size=100, size=None, progress=False)
        seen = collections.Counter()
        for rank in range(2):
            ds = ShardDataset(src, rank=rank, world_size=2, shuffle_buffer=3, seed=1)
            for item in DataLoader(ds, batch_size=None, num_workers=2):
                assert item["frames"].shape == (8, 3, 16, 16) and item["frames"].dtype == torch.float32
                seen[(item["episode"], item["start"])] += 1
        assert len(seen) == 16 and set(seen.values()) == {1}, seen


def test_shuffle_and_epochs(tmp_path):
    write_shards(make_clips(), tmp_path, clip_len=4, shard_size=4, size=8, progress=False)
    order = lambda ds: [(c.episode, c.meta["frame_index"]) for c in ds]  # noqa: E731
    plain = order(ShardDataset(tmp_path, as_tensors=False))
    ds = ShardDataset(tmp_path, shuffle_buffer=8, seed=0, as_tensors=False)
    a = order(ds)
    assert sorted(a) == sorted(plain) and a != plain and order(ds) == a  # same epoch, same order
    ds.set_epoch(1)
    assert order(ds) != a
    assert next(iter(ShardDataset(tmp_path, as_tensors=False))).frames.shape == (4, 8, 8, 3)  # resized
    only = ShardDataset(tmp_path, as_tensors=False, episodes=["ep1"])
    assert {c.episode for c in only} == {"ep1"}


def test_resume_and_corrupt_shard(tmp_path):
    clips = make_clips()[:5]
    write_shards(clips, tmp_path, clip_len=8, shard_size=3, size=None, progress=False)
    (tmp_path / "shard-000002.tar").unlink()
    m = write_shards(clips, tmp_path, clip_len=8, shard_size=3, size=None, progress=False)
    assert m["written"] == 1 and m["resumed"] == 5
    with pytest.raises(ValueError, match="written with"):
        write_shards(clips, tmp_path, clip_len=4, shard_size=3, size=None, progress=False)
    data = (tmp_path / "shard-000001.tar").read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ClipFormatError, match="shard-000001.tar"):
        list(ShardDataset(tmp_path, as_tensors=False))


def test_cli_record_shard_info(tmp_path, capsys):
    from wmkit.data.cli import main

    for i, c in enumerate(make_clips()[:3]):
        save_clip(tmp_path / "clips" / f"{i}.npz", c)
    main(["shard", "--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "sh"), "--clip-len", "8",
          "--shard-size", "2", "--size", "0"])
    assert "9 samples in 5 shards (5 written, 0 already complete)" in capsys.readouterr().out
    main(["shard", "--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "sh"), "--clip-len", "8",
          "--shard-size", "2", "--size", "0"])
    assert "(0 written, 5 already complete)" in capsys.readouterr().out
    main(["info", str(tmp_path / "sh")])
    assert "5 shards, 9 samples of 8 frames" in capsys.readouterr().out
    assert json.loads((tmp_path / "sh" / "manifest.json").read_text())["complete"]
    main(["atari", "--game", "pong", "--episodes", "1", "--steps", "12", "--out", str(tmp_path / "rec")])
    assert "atari pong: 1 clips, 12 frames" in capsys.readouterr().out
    (f,) = (tmp_path / "rec" / "atari").glob("*.npz")
    assert load_clip(f).action_space.n == 6
    with pytest.raises(SystemExit, match="unknown command"):
        main(["nope"])


def test_cli_crafter_resumes(tmp_path, capsys):
    from wmkit.data.cli import main

    main(["crafter", "--episodes", "1", "--steps", "10", "--out", str(tmp_path)])
    (first,) = (tmp_path / "crafter").glob("*.npz")
    stamp = first.stat().st_mtime_ns
    main(["crafter", "--episodes", "2", "--steps", "10", "--out", str(tmp_path)])
    assert "crafter: 2 clips, 20 frames, 2 episodes" in capsys.readouterr().out.splitlines()[-1]
    assert first.stat().st_mtime_ns == stamp and len(list((tmp_path / "crafter").glob("*.npz"))) == 2


def test_shards_open_in_the_webdataset_package(tmp_path):
    import webdataset as wds

    clips = make_clips()[:2]
    write_shards(clips, tmp_path, clip_len=8, shard_size=100, size=None, progress=False)
    samples = list(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False).decode())
    assert len(samples) == 3 + 5
    s = samples[4]  # ep1, piece starting at frame 8
    assert s["__key__"] == "ep1-000000008" and s["info.json"]["meta"]["episode"] == "ep1"
    np.testing.assert_array_equal(s["frames.npy"], clips[1].frames[8:16])
    np.testing.assert_array_equal(s["extra.pose.npy"], clips[1].extras["pose"][8:16])


def test_cli_convert_real_formats(tmp_path, capsys):
    from wmkit.data import fixtures as fx
    from wmkit.data.cli import main

    fx.write_nuscenes(tmp_path / "nusc", scenes=2, samples=4)
    main(["convert", "--format", "nuscenes", "--input", str(tmp_path / "nusc"), "--out", str(tmp_path / "out")])
    assert "converted 2 clips, 8 frames, 2 episodes" in capsys.readouterr().out
    clips = [load_clip(p) for p in sorted((tmp_path / "out").glob("*.npz"))]
    assert [c.episode for c in clips] == ["scene-0061", "scene-0062"] and clips[0].action_space.names[0] == "speed"
    odv = fx.write_opendv(tmp_path / "odv", videos=1, frames=10)
    (odv["frames_root"] / "frames" / "Driving_Channel" / "video_00_4K_drive" / "000000007.jpg").unlink()
    with pytest.raises(ClipFormatError, match="000000007.jpg is missing"):
        main(["convert", "--format", "opendv", "--input", str(odv["frames_root"]), "--annotations",
              str(odv["annotations"]), "--out", str(tmp_path / "o")])
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        main(["convert", "--format", "opendv", "--input", str(odv["frames_root"]), "--annotations",
              str(odv["annotations"]), "--strict", "false", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert "converted 1 clips, 5 frames" in captured.out and "skipped 1 bad item" in captured.err
