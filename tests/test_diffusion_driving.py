"""wmkit.diffusion.driving: the 3-second keyframe rollout (6 keyframes at 2 Hz) -- masks and masked PSNR by hand,
the copy-last baseline exact, causality of the rollout in the ego motion, and the nuScenes-format path end to end."""

from __future__ import annotations

import math

import pytest
import torch

from wmkit.diffusion import EDM, Denoiser, DiffusionConfig
from wmkit.diffusion.driving import changed_mask, driving_experiment, masked_psnr, rollout_keyframes, window_gain

pytestmark = pytest.mark.usefixtures("one_thread")


def test_changed_mask_and_masked_psnr_by_hand():
    last = torch.zeros(1, 3, 2, 2)
    real = torch.zeros(1, 3, 2, 2)
    real[..., 0, 0] = 0.5  # one pixel changes by 0.5 in every channel
    mask = changed_mask(last, real, 0.1)
    assert mask.shape == (1, 1, 2, 2) and mask.sum() == 1 and mask[0, 0, 0, 0] == 1
    # copying the last frame: error 0.5 on the changed pixel -> MSE 0.25 -> PSNR 10 log10(4 / 0.25)
    p = masked_psnr(last, real, mask, (0, 1, 2, 3))
    assert float(p) == pytest.approx(10 * math.log10(16))
    assert math.isnan(float(masked_psnr(last, real, torch.zeros_like(mask), (0, 1, 2, 3))))
    with pytest.raises(ValueError, match="shapes differ"):
        changed_mask(last, real[..., :1])


def test_window_gain_by_hand():
    real = torch.zeros(2, 1, 3, 2, 2)  # 2 windows, 1 keyframe
    base = torch.full_like(real, 0.2)  # copy error 0.2 everywhere -> MSE 0.04 in both windows
    pred = real.clone()
    pred[0] += 0.1  # window 0: MSE 0.01 -> gain 10 log10(4) dB
    pred[1] += 0.02  # window 1: MSE 0.0004 -> gain 20 dB
    mean, sem = window_gain(pred, base, real)
    g = torch.tensor([10 * math.log10(4), 20.0])
    assert mean.shape == (1,) and float(mean) == pytest.approx(float(g.mean()), rel=1e-5)
    assert float(sem) == pytest.approx(float(g.std() / math.sqrt(2)), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        window_gain(pred[:1], base[:1], real[:1])
    with pytest.raises(ValueError, match="one shape"):
        window_gain(pred, base[:, :, :1], real)


def tiny_driving_model(K=2, A=3):
    torch.manual_seed(0)
    net = Denoiser(None, K, 3, (8, 8), (1, 1), None, 16, action_dim=A)
    for name, p in net.named_parameters():
        if name.endswith(("conv_out.weight", "conv2.weight")):
            torch.nn.init.normal_(p, std=0.1)
    return EDM(net).eval()


def test_rollout_keyframes_baseline_and_causality():
    model = tiny_driving_model()
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 2 + 6, 3, 8, 8, generator=g) * 2 - 1
    actions = torch.randn(3, 8, 3, generator=g)
    out = rollout_keyframes(model, {"frames": frames, "actions": actions}, horizon=6, steps=2)
    assert out["seconds_ahead"] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0] and len(out["psnr"]) == 6
    copy = [10 * math.log10(4 / float((frames[:, 1] - frames[:, 2 + k]).pow(2).mean())) for k in range(6)]
    assert out["copy_last_psnr"] == pytest.approx(copy, rel=1e-5)
    assert len(out["gain_over_copy"]) == 6 and all(v > 0 for v in out["gain_over_copy_sem"])
    # the ego motion of keyframe-interval k only affects keyframes after it
    a2 = actions.clone()
    a2[:, 4] += 3.0  # the motion after keyframe 4 (the 3rd generated keyframe's conditioning starts at 3)
    out2 = rollout_keyframes(model, {"frames": frames, "actions": a2}, horizon=6, steps=2)
    assert torch.equal(out["generated"][:, :3], out2["generated"][:, :3])
    assert not torch.equal(out["generated"][:, 3:], out2["generated"][:, 3:])
    with pytest.raises(ValueError, match="keyframes"):
        rollout_keyframes(model, {"frames": frames[:, :5], "actions": actions[:, :5]}, horizon=6)


def test_driving_experiment_through_the_nuscenes_loader(tmp_path):
    from wmkit.data import load_nuscenes
    from wmkit.data.fixtures import write_nuscenes

    write_nuscenes(tmp_path / "nus", scenes=5, samples=12)
    clips = load_nuscenes(tmp_path / "nus", size=16)
    cfg = DiffusionConfig(size=16, context=2, channels=(8, 8), depths=(1, 1), cond_channels=16, batch_size=4,
                          train_steps=3, run_dir=str(tmp_path / "run"))
    r = driving_experiment(clips, cfg, horizon=6, steps=1)
    assert len(r["heldout_episodes"]) == 1 and r["eval"]["windows"] == 12 - (2 + 6) + 1
    assert r["eval"]["generated"].shape == (5, 6, 3, 16, 16)
    with pytest.raises(ValueError, match="2 Hz"):
        driving_experiment([c.subsample(1) for c in clips[:1]] + [clips[1].subsample(2)], cfg)
