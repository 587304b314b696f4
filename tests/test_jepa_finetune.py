"""The driving fine-tuning recipe (wmkit.jepa.finetune): gradient routing per mode, learning rates, checkpoints."""

import json

import numpy as np
import pytest
import torch

from wmkit.jepa import finetune as ft
from wmkit.jepa.vjepa import VideoViT, VJEPAConfig
from wmkit.profiles import profile

SMOKE = VJEPAConfig(**profile("smoke").jepa.pretrain_model)  # 4 frames of 32 x 32, width 32, 1 block


def fake_data(E=4, T=10, size=32, seed=0):
    """Driving data of the shapes driving_data returns, random frames, targets that depend on the frames."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (E, T, size, size, 3), dtype=np.uint8)
    y = np.stack([frames[..., 0].mean((2, 3)), frames[..., 1].mean((2, 3)), frames[..., 2].mean((2, 3))], -1)
    return {"frames": frames, "targets": y.astype(np.float32), "train": list(range(E - 1)), "heldout": [E - 1],
            "episodes": [f"carracing-{e}" for e in range(E)]}


def cfg(mode, **kw):
    return ft.FinetuneConfig(mode=mode, encoder="unused" if mode != "scratch" else None, preset="smoke",
                             **{"steps": 3, "batch": 4, **kw})


def test_frozen_mode_leaves_encoder_bitwise_unchanged_and_gives_it_no_grad(one_thread):
    torch.manual_seed(0)
    enc = VideoViT(SMOKE).requires_grad_(False)  # as a checkpoint's target encoder comes
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    out = ft.finetune(cfg("frozen"), fake_data(), encoder=enc)
    model = out["model"]
    assert model.encoder is enc
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None and not p.requires_grad for p in enc.parameters())
    # autograd: the loss depends on the probe's parameters only
    video = torch.rand(2, SMOKE.frames, 3, 32, 32)
    model.train()
    assert not model.encoder.training  # frozen evaluation keeps the encoder in eval mode
    loss = model(video).square().sum()
    grads = torch.autograd.grad(loss, [*model.probe.parameters()], allow_unused=True)
    assert all(g is not None for g in grads)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(loss, [next(enc.parameters())])


def test_finetune_encoder_rate_is_scale_times_head_rate_and_encoder_moves(one_thread):
    torch.manual_seed(0)
    enc = VideoViT(SMOKE).requires_grad_(False)
    before = [p.clone() for p in enc.parameters()]
    model = ft.DrivingHead(enc)
    opt = ft.make_optimizer(model, "finetune", lr=1e-3, weight_decay=0.01, encoder_lr_scale=0.1)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == 1e-3 and groups["encoder"]["lr"] == pytest.approx(1e-4)
    assert sum(p.numel() for p in groups["encoder"]["params"]) == sum(p.numel() for p in enc.parameters())
    scratch = ft.make_optimizer(ft.DrivingHead(VideoViT(SMOKE)), "scratch", 1e-3, 0.01, 0.1)
    assert [g["lr"] for g in scratch.param_groups] == [1e-3, 1e-3]
    assert len(ft.make_optimizer(ft.DrivingHead(VideoViT(SMOKE)), "frozen", 1e-3, 0.01, 0.1).param_groups) == 1
    out = ft.finetune(cfg("finetune", encoder_lr_scale=0.1), fake_data(), encoder=enc)
    assert any(not torch.equal(p, b) for p, b in zip(out["model"].encoder.parameters(), before, strict=True))


def test_cosine_schedule_known_values():
    assert ft.cosine_lr(0, 10, 1e-3) == pytest.approx(1e-3)
    assert ft.cosine_lr(5, 10, 1e-3) == pytest.approx(5e-4)
    assert ft.cosine_lr(10, 10, 1e-3) == pytest.approx(0.0, abs=1e-15)


def test_same_head_init_and_batches_in_every_mode(one_thread):
    """Frozen and fine-tuned runs from the same encoder start from the same head; with encoder rate 0 they are
    the same computation (an encoder in train mode = eval mode: no dropout), so their R^2 agree."""
    torch.manual_seed(0)
    enc = VideoViT(SMOKE)
    a = ft.finetune(cfg("frozen"), fake_data(), encoder=enc)
    b = ft.finetune(cfg("finetune", encoder_lr_scale=0.0, weight_decay=0.0), fake_data(), encoder=VideoViT(SMOKE))
    assert a["start_effective_rank"] > 1.0
    b2 = ft.finetune(cfg("finetune", encoder_lr_scale=0.0), fake_data(), encoder=_copy(enc))
    assert b2["r2_heldout_steer"] == pytest.approx(a["r2_heldout_steer"], abs=1e-5)
    assert b["r2_heldout_steer"] != a["r2_heldout_steer"]  # another encoder: another result


def _copy(enc):
    import copy

    return copy.deepcopy(enc)


def test_pretrain_checkpoint_round_trips(tmp_path, one_thread, monkeypatch):
    from wmkit.checkpoint import load_state
    from wmkit.jepa import pretrain

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    run = tmp_path / "pt"
    pretrain.main(["--steps", "1", "--size", "smoke", "--run-dir", str(run)])
    enc = ft.load_encoder(run / "ckpt" / "latest")
    state = load_state(run / "ckpt" / "latest")["model"]
    sd = enc.state_dict()
    assert sd and all(torch.equal(v, state[f"target_encoder.{k}"]) for k, v in sd.items())
    assert enc.cfg == SMOKE


def test_bad_checkpoint_and_wrong_image_size_raise_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ft.load_encoder(tmp_path / "nowhere")
    big = VideoViT(VJEPAConfig(**{**profile("smoke").jepa.pretrain_model, "size": 64}))
    with pytest.raises(ValueError, match="64 x 64.*32 x 32"):
        ft.finetune(cfg("frozen"), fake_data(), encoder=big)
    with pytest.raises(ValueError, match="--mode"):
        ft.FinetuneConfig(mode="linear")
    with pytest.raises(ValueError, match="needs --encoder"):
        ft.FinetuneConfig(mode="frozen")
    with pytest.raises(ValueError, match="--labeled"):
        ft.FinetuneConfig(mode="scratch", preset="smoke", labeled=9)


def test_export_opendv_is_read_back_by_the_loader(tmp_path):
    from wmkit.data import load_opendv

    data = fake_data(E=3, T=5)
    data["frames"][:] = 100  # flat frames: JPEG keeps them exactly
    ft.export_opendv(data, tmp_path / "opendv")
    clips = load_opendv(tmp_path / "opendv", size=32)
    assert sorted(c.episode for c in clips) == ["carracing-0", "carracing-1"]  # the training episodes only
    assert all(c.frames.shape == (5, 32, 32, 3) for c in clips)
    assert all(np.abs(c.frames.astype(int) - 100).max() <= 1 for c in clips)


def test_smoke_end_to_end_with_closed_loop(tmp_path, one_thread):
    """Records 4 short CarRacing drives (cached in a temp folder), trains 4 steps from scratch, drives 20 steps."""
    import os

    old = os.environ.get("WMKIT_RUNS_DIR")
    os.environ["WMKIT_RUNS_DIR"] = str(tmp_path / "runs")
    try:
        out = ft.main(["--preset", "smoke", "--mode", "scratch", "--run-dir", str(tmp_path / "ft")])
    finally:
        os.environ.pop("WMKIT_RUNS_DIR") if old is None else os.environ.__setitem__("WMKIT_RUNS_DIR", old)
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["labeled_episodes"] == 3 and set(ft.TARGETS) <= set(m["curve"][-1])
    assert len(out["drive"]) == 1 and 0 <= out["drive"][0]["tiles"] <= out["drive"][0]["track_tiles"]
    assert out["drive"][0]["steps"] == 20
    with pytest.raises(ValueError, match="model | random | data"):
        ft.drive("planner", 1, 5, 0)


def test_token_norm_statistics_are_the_encoder_token_moments(one_thread):
    """The probe reads the tokens through BatchNorm (no affine); _precise_norm sets its running statistics to the
    mean and (unbiased) variance of the current encoder's tokens over the calibration clips."""
    torch.manual_seed(0)
    data = fake_data()
    model = ft.DrivingHead(VideoViT(SMOKE))
    assert model.token_norm.affine is False
    y = torch.from_numpy(data["targets"])
    idx = ft._windows(data["frames"], data["train"], SMOKE.frames)
    ft._precise_norm(model, data["frames"], y, idx, SMOKE.frames)
    with torch.no_grad():
        tokens = model.encoder(ft._batch(data["frames"], y, idx, SMOKE.frames)[0]).flatten(1)  # (M, N*D)
    assert torch.allclose(model.token_norm.running_mean, tokens.mean(0), atol=1e-5)
    assert torch.allclose(model.token_norm.running_var, tokens.var(0), rtol=1e-3, atol=1e-7)
    assert not model.training and ft.DrivingHead(VideoViT(SMOKE), token_norm="none").token_norm.__class__.__name__ \
        == "Identity"


def test_random_frozen_is_the_scratch_encoders_initial_weights_frozen(one_thread):
    torch.manual_seed(0)
    pre = VideoViT(SMOKE)
    out = ft.finetune(cfg("random_frozen", seed=3), fake_data(), encoder=pre)
    torch.manual_seed(3 + 1)
    init = VideoViT(SMOKE)
    enc = out["model"].encoder
    assert enc is not pre and all(torch.equal(a, b) for a, b in zip(enc.parameters(), init.parameters(), strict=True))
    assert not any(p.requires_grad for p in enc.parameters())
