"""V-JEPA: masks (official statistics), EMA arithmetic, stop-gradient, L1 only on masked positions, bad inputs."""

import math

import pytest
import torch

from wmkit.jepa.masks import VJEPA_MASKS, MaskSpec, MultiBlock3D, sample_block_size
from wmkit.jepa.vjepa import (
    VJEPA,
    VJEPAConfig,
    apply_masks,
    collapse_stats,
    effective_rank,
    ema_update,
    lr_at,
    momentum_at,
)

GRID = (8, 14, 14)  # the official 16 x 224 x 224 clip with tubelet 2 and patch 16


def test_block_size_follows_the_official_formula():
    g = torch.Generator().manual_seed(0)
    for spec in VJEPA_MASKS:
        for _ in range(50):
            t, h, w = sample_block_size(GRID, spec, g)
            assert t == 8  # temporal scale 1.0: every block is a tube over all time steps
            keep = int(14 * 14 * spec.spatial_scale[0])
            ar = h / w
            assert 0.75 * 0.7 < ar < 1.5 / 0.7  # aspect ratio in [0.75, 1.5] up to rounding
            assert abs(h * w - keep) <= h + w  # area k up to rounding of h and w
    # hand-computed: scale 0.15 on 14x14 -> k = int(29.4) = 29; ar = 1 gives h = w = round(sqrt(29)) = 5
    spec = MaskSpec(1, (0.15, 0.15), aspect_ratio=(1.0, 1.0))
    assert sample_block_size(GRID, spec, g) == (8, 5, 5)
    spec = MaskSpec(1, (0.7, 0.7), aspect_ratio=(1.0, 1.0))  # k = int(137.2) = 137 -> 12 x 12
    assert sample_block_size(GRID, spec, g) == (8, 12, 12)


def test_masks_are_tubes_and_cover_the_expected_fraction():
    for spec, lo, hi in ((VJEPA_MASKS[0], 0.55, 0.85), (VJEPA_MASKS[1], 0.6, 0.95)):
        gen = MultiBlock3D(GRID, spec, seed=1)
        fracs = []
        for _ in range(20):
            keep, pred = gen(4)
            assert keep.shape[0] == pred.shape[0] == 4
            for b in range(4):
                assert set(keep[b].tolist()).isdisjoint(pred[b].tolist())
            fracs.append(pred.shape[1] / math.prod(GRID))
            # tubes: the keep-map of one sample is identical in every time step
            k = gen.sample_keep(sample_block_size(GRID, spec, torch.Generator().manual_seed(3)))
            assert torch.equal(k, k[:1].expand_as(k))
        mean = sum(fracs) / len(fracs)
        assert lo < mean < hi, (spec, mean)  # V-JEPA masks ~75-90 % of the tokens


def test_masks_are_deterministic_and_resumable():
    a, b = MultiBlock3D(GRID, VJEPA_MASKS[0], seed=5), MultiBlock3D(GRID, VJEPA_MASKS[0], seed=5)
    a(2)
    state = a.state_dict()
    b.load_state_dict(state)
    x, y = a(3), b(3)
    assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_mask_bad_inputs():
    with pytest.raises(ValueError, match="spatial_scale"):
        MaskSpec(2, (0.0, 0.5))
    with pytest.raises(ValueError, match="num_blocks"):
        MaskSpec(0, (0.1, 0.1))
    with pytest.raises(ValueError, match="grid"):
        MultiBlock3D((0, 4, 4), VJEPA_MASKS[0])
    with pytest.raises(ValueError, match="batch_size"):
        MultiBlock3D(GRID, VJEPA_MASKS[0])(0)


def test_ema_arithmetic_and_schedule():
    online, target = torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 3.0]]))
        target.weight.copy_(torch.tensor([[0.0, 1.0]]))
    ema_update(target, online, 0.75)  # 0.75 * [0, 1] + 0.25 * [1, 3] = [0.25, 1.5]
    assert torch.allclose(target.weight, torch.tensor([[0.25, 1.5]]))
    assert momentum_at(0, 100) == 0.998
    assert momentum_at(100, 100) == pytest.approx(0.998 + 0.002 / 1.25)  # ipe_scale: never reaches 1.0
    assert momentum_at(50, 100, ema=(0.99925, 0.99925)) == 0.99925  # V-JEPA 2: constant
    with pytest.raises(ValueError, match="momentum"):
        ema_update(target, online, 1.5)
    assert lr_at(0, 100, 10, 1e-3, 1e-4, 1e-6) == pytest.approx(1e-4 + 0.1 * 9e-4)
    assert lr_at(10, 100, 10, 1e-3, 1e-4, 1e-6) == pytest.approx(1e-3)


def tiny():
    torch.manual_seed(0)
    cfg = VJEPAConfig(frames=4, size=16, patch=4, tubelet=2, dim=32, depth=1, heads=2, pred_dim=16,
                      pred_depth=1, pred_heads=2)
    return cfg, VJEPA(cfg)


def test_target_branch_gets_no_gradient_and_loss_only_reads_masked_positions():
    cfg, model = tiny()
    video = torch.rand(2, 4, 3, 16, 16)
    masks = [g(2) for g in (MultiBlock3D(cfg.grid, s, seed=0) for s in VJEPA_MASKS)]
    out = model.loss(video, masks)
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert not out["target"].requires_grad
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert model.predictor.mask_tokens.grad is not None

    # perturbation: the target encoder's output at a context (unmasked) position must not change the loss
    keep, pred = masks[0]
    h = model.targets(video)
    is_pred = torch.zeros(h.shape[:2], dtype=torch.bool)  # (B, N): positions the loss reads, per sample
    is_pred.scatter_(1, pred, True)
    assert (~is_pred).any()
    with torch.no_grad():
        base = model.loss(video, [masks[0]])["loss"]
        orig = model.targets
        model.targets = lambda v: orig(v) + 100.0 * (~is_pred)[..., None].float()
        moved = model.loss(video, [masks[0]])["loss"]
        model.targets = lambda v: orig(v) + 100.0 * is_pred[..., None].float()
        moved_pred = model.loss(video, [masks[0]])["loss"]
    assert float(moved) == pytest.approx(float(base), abs=1e-6)
    assert float(moved_pred) > float(base) + 1.0


def test_loss_is_l1_and_targets_are_layer_normalised():
    cfg, model = tiny()
    video = torch.rand(2, 4, 3, 16, 16)
    h = model.targets(video)
    assert torch.allclose(h.mean(-1), torch.zeros(h.shape[:2]), atol=1e-5)
    keep, pred = MultiBlock3D(cfg.grid, VJEPA_MASKS[1], seed=2)(2)
    out = model.loss(video, [(keep, pred)])
    assert float(out["loss"]) == pytest.approx(float((out["prediction"] - apply_masks(h, pred)).abs().mean()),
                                               rel=1e-5)


def test_vjepa_bad_inputs_and_sizes():
    with pytest.raises(ValueError, match="tubelet"):
        VJEPAConfig(frames=3, tubelet=2)
    cfg, model = tiny()
    with pytest.raises(ValueError, match="expected video"):
        model.encoder(torch.rand(2, 4, 3, 8, 8))
    with pytest.raises(ValueError, match="indices"):
        apply_masks(torch.rand(1, 4, 2), torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match="masks is empty"):
        model.loss(torch.rand(1, 4, 3, 16, 16), [])
    # parameter count of the encoder, by hand: embed (3*2*4*4=96 -> 32) + 1 block + final norm
    block = 2 * 2 * 32 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32
    assert sum(p.numel() for p in model.encoder.parameters()) == 96 * 32 + 32 + block + 64


def test_collapse_stats_detect_collapse():
    torch.manual_seed(0)
    healthy = torch.randn(256, 16)
    collapsed = torch.randn(256, 1) * torch.ones(1, 16)  # every sample on one direction
    assert effective_rank(healthy) > 14
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=0.01)
    assert collapse_stats(torch.zeros(8, 3, 16))["feature_std"] == 0.0
