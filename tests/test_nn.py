"""wmkit.nn: known answers for patches and position tables, attention against its plain math, and the
wiring of the spatio-temporal block checked by perturbation (causal in time, spatial within a frame)."""

from __future__ import annotations

import math

import pytest
import torch

from wmkit.nn import (
    MLP,
    Attention,
    RMSNorm,
    STBlock,
    TransformerBlock,
    attention_reference,
    block_causal_mask,
    patchify,
    patchify_tubelets,
    sincos_1d,
    sincos_2d,
    unpatchify,
)


def test_patchify_known_layout():
    # one 1-channel 4x4 frame holding 0..15 row-major; patch 2 -> 4 tokens of 4 pixels
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    tok = patchify(x, 2)
    assert tok.shape == (1, 4, 4)
    assert tok[0, 0].tolist() == [0, 1, 4, 5]  # top-left patch, row-major inside
    assert tok[0, 1].tolist() == [2, 3, 6, 7]  # top-right
    assert tok[0, 2].tolist() == [8, 9, 12, 13]  # bottom-left
    # channels vary slowest inside a token
    x2 = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[None]  # (1, 2, 4, 4)
    assert patchify(x2, 2)[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("shape", [(2, 3, 3, 8, 12), (2, 3, 8, 12)])
def test_patchify_round_trip(shape):
    x = torch.randn(*shape)
    tok = patchify(x, 4)
    assert tok.shape[-2:] == (6, 48)
    assert torch.equal(unpatchify(tok, 4, 8, 12), x)


def test_patch_errors():
    with pytest.raises(ValueError, match="not divisible by patch=3"):
        patchify(torch.zeros(1, 3, 8, 8), 3)
    with pytest.raises(ValueError, match="expected"):
        unpatchify(torch.zeros(1, 5, 48), 4, 8, 12)
    with pytest.raises(ValueError, match="tubelet=2"):
        patchify_tubelets(torch.zeros(1, 3, 3, 8, 8), 4, 2)


def test_tubelets_known_layout():
    # 2 frames of 1x2x2: frame 0 holds 0..3, frame 1 holds 10..13; tubelet 2, patch 2 -> one token
    x = torch.stack([torch.arange(4.0), torch.arange(4.0) + 10]).reshape(1, 2, 1, 2, 2)
    tok = patchify_tubelets(x, 2, 2)
    assert tok.shape == (1, 1, 8)
    assert tok[0, 0].tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    assert patchify_tubelets(torch.zeros(2, 4, 3, 8, 8), 4, 2).shape == (2, 2 * 4, 3 * 2 * 16)


def test_sincos_known_values():
    t = sincos_1d(3, 4)
    # w = [1, 10000^-0.5 = 0.01]; row p = [sin p, sin 0.01p, cos p, cos 0.01p]
    expected = torch.tensor([[math.sin(p), math.sin(0.01 * p), math.cos(p), math.cos(0.01 * p)] for p in range(3)])
    assert torch.allclose(t, expected, atol=1e-6)
    t2 = sincos_2d(2, 3, 8)
    assert t2.shape == (6, 8)
    # token (row 1, column 2) = [rows table at 1, columns table at 2]
    assert torch.allclose(t2[1 * 3 + 2], torch.cat([sincos_1d(2, 4)[1], sincos_1d(3, 4)[2]]))


def test_block_causal_mask_known():
    m = block_causal_mask(2, 2)
    assert m.tolist() == [[True, True, False, False], [True, True, False, False],
                          [True, True, True, True], [True, True, True, True]]


def test_attention_matches_reference_and_causal_mask():
    torch.manual_seed(0)
    attn = Attention(16, 4)
    x = torch.randn(2, 6, 16)
    mask = block_causal_mask(3, 2)
    for kwargs in ({}, {"causal": True}, {"mask": mask}, {"causal": True, "mask": mask}):
        fast = attn(x, **kwargs)
        attn.reference = True
        slow = attn(x, **kwargs)
        attn.reference = False
        assert torch.allclose(fast, slow, atol=1e-5), kwargs


def test_attention_reference_hand_computed():
    # one head, two tokens, d = 1: q = k = [1, 2], v = [10, 20]; causal -> token 0 sees only itself
    q = torch.tensor([1.0, 2.0]).reshape(1, 1, 2, 1)
    v = torch.tensor([10.0, 20.0]).reshape(1, 1, 2, 1)
    out = attention_reference(q, q, v, causal=True)[0, 0, :, 0]
    p = torch.softmax(torch.tensor([2.0 * 1, 2.0 * 2]), 0)  # token 1: scores q1*k = [2, 4]
    assert torch.allclose(out, torch.tensor([10.0, float(p[0] * 10 + p[1] * 20)]))


def test_attention_bad_mask():
    attn = Attention(8, 2)
    with pytest.raises(TypeError, match="bool"):
        attn(torch.zeros(1, 4, 8), mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 4\)"):
        attn(torch.zeros(1, 4, 8), mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="not divisible"):
        Attention(10, 3)


def test_st_block_is_causal_in_time_and_spatial_within_frame():
    torch.manual_seed(0)
    B, T, N, D = 2, 5, 4, 16
    block = STBlock(D, 2, causal_time=True).eval()
    x = torch.randn(B, T, N, D)
    y = block(x)
    x2 = x.clone()
    x2[:, 3, 1] += torch.randn(D)  # change one token of frame 3 (not by a constant: LayerNorm removes those)
    y2 = block(x2)
    diff = (y2 - y).abs().amax(dim=(0, 3))  # (T, N)
    assert diff[:3].max() == 0  # frames before 3 do not change at all
    assert diff[3].min() > 0  # spatial attention spreads it over frame 3
    assert diff[4:].max() > 0  # and temporal attention carries it forward
    # non-causal: the past changes too
    bi = STBlock(D, 2, causal_time=False).eval()
    assert (bi(x2) - bi(x))[:, :3].abs().max() > 0


def test_st_block_spatial_attention_stays_within_its_frame():
    # silence the temporal layer (zero output projection): a change in frame 3 then reaches every token of
    # frame 3 through spatial attention and nothing in any other frame
    torch.manual_seed(1)
    block = STBlock(8, 2, causal_time=False).eval()
    with torch.no_grad():
        block.temporal.proj.weight.zero_()
        block.temporal.proj.bias.zero_()
    x = torch.randn(1, 5, 4, 8)
    x2 = x.clone()
    x2[0, 3, 1] += torch.randn(8)
    d = (block(x2) - block(x)).abs().amax(-1)[0]  # (T, N)
    assert d[3].min() > 0
    assert d[[0, 1, 2, 4]].max() == 0


def test_transformer_block_and_norms():
    torch.manual_seed(0)
    blk = TransformerBlock(16, 4)
    x = torch.randn(3, 7, 16)
    assert blk(x).shape == (3, 7, 16)
    y = blk(x, causal=True)
    x2 = x.clone()
    x2[:, 5] += torch.randn(16)
    assert torch.equal(blk(x2, causal=True)[:, :5], y[:, :5])
    n = RMSNorm(4)
    v = torch.tensor([[3.0, 4.0, 0.0, 0.0]])  # mean square = 25/4 -> rms 2.5
    assert torch.allclose(n(v), v / 2.5, atol=1e-5)
    assert MLP(8, 2.0).fc1.out_features == 16
    with pytest.raises(ValueError, match=r"\(B, T, N, D\)"):
        STBlock(8, 2)(torch.zeros(2, 3, 8))
