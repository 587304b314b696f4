"""Tests of wmkit.genie: known answers, causality by perturbation, MaskGIT bookkeeping, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from einops import rearrange

from wmkit.genie.dynamics import DynamicsConfig, DynamicsModel
from wmkit.genie.lam import LAMConfig, LatentActionModel, code_usage, confusion, recalibrate_out_norm
from wmkit.genie.st_transformer import STTransformer, attention_cost
from wmkit.genie.tokenizer import FSQ, TokenizerConfig, VectorQuantizer, VideoTokenizer, psnr, usage_stats
from wmkit.nn import patchify as patchify_frames


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------- ST transformer
def test_st_transformer_shape_and_parameter_count():
    D, depth = 32, 2
    m = STTransformer(D, depth, heads=4, grid=(2, 3), max_frames=8)
    y = m(torch.randn(2, 5, 6, D))
    assert y.shape == (2, 5, 6, D)
    # per ST block: 3 LayerNorms (6D), 2 attentions (qkv 3D^2 no bias, proj D^2 + D), MLP (8D^2 + 5D); final norm 2D
    assert sum(p.numel() for p in m.parameters()) == depth * (16 * D * D + 13 * D) + 2 * D


def test_st_transformer_is_causal_in_time():
    m = STTransformer(16, 2, 2, grid=(2, 2), max_frames=8).eval()
    x = torch.randn(1, 6, 4, 16)
    y = m(x)
    x2 = x.clone()
    x2[:, 3] += torch.randn(4, 16)  # perturb frame 3 (not by a constant: LayerNorm would remove it)
    y2 = m(x2)
    assert torch.allclose(y[:, :3], y2[:, :3], atol=1e-6)  # frames before it: unchanged
    assert (y[:, 3:] - y2[:, 3:]).abs().amax(dim=(0, 2, 3)).min() > 1e-3  # frame 3 and every later frame: changed


def test_st_transformer_rejects_clip_beyond_context():
    m = STTransformer(16, 1, 2, grid=(2, 2), max_frames=4)
    with pytest.raises(ValueError, match="max_frames=4"):
        m(torch.randn(1, 5, 4, 16))


@pytest.mark.slow
def test_attention_cost_quadratic_terms_match_the_formula():
    """Forward FLOPs f(T) = a T + b T^2; QK^T and AV cost 2 L^2 D each, L = sequence length, per layer.
    Full attention: L = T N, so b = 4 N^2 D depth.
    ST: the temporal attention has L = T, for B*N sequences: b = 4 N D depth."""
    N, D, depth = 16, 32, 2
    for kind, b_expected in (("full", 4 * N * N * D * depth), ("st", 4 * N * D * depth)):
        f = {T: attention_cost(kind, T, N, dim=D, depth=depth, heads=4, backward=False)["flops"] for T in (2, 4)}
        b = (f[4] - 2 * f[2]) / (2 * 2**2)
        assert b == pytest.approx(b_expected), kind
    big = attention_cost("full", 32, 64, dim=32, depth=1, heads=4)  # 2048 tokens: counted on meta, nothing allocated
    assert big["saved_bytes"] > 2048 * 2048 * 4  # holds at least one (L, L) fp32 score matrix


# ---------------------------------------------------------------------------------------- quantizers
def test_fsq_round_trip_and_codebook():
    q = FSQ((8, 5, 5, 5))
    assert q.num_codes == 1000
    ids = torch.arange(1000)
    codes = q.indices_to_codes(ids)  # (1000, 4)
    assert torch.equal(q.codes_to_indices(codes), ids)  # bijection
    assert len({tuple(c.tolist()) for c in codes}) == 1000
    zq, idx = q(torch.zeros(3, 4))
    assert torch.allclose(zq, torch.zeros(3, 4))  # 0 is a level, also for the even L = 8 (offset + tan shift)
    zq, _ = q(torch.full((1, 4), 50.0))
    assert torch.allclose(zq, torch.tensor([[0.75, 1.0, 1.0, 1.0]]))  # top level of L=8 is 3/4 (range -1..3/4)
    z = torch.randn(5, 4, requires_grad=True)
    q(z)[0].sum().backward()
    assert z.grad is not None and (z.grad != 0).all()  # straight-through: gradient reaches the encoder
    with pytest.raises(ValueError, match="last dim 4"):
        q(torch.zeros(2, 3))


def test_vq_nearest_code_straight_through_and_restarts():
    vq = VectorQuantizer(4, 4, cosine=True, restart_after=3)
    with torch.no_grad():
        vq.codebook.copy_(torch.eye(4))
    z = torch.tensor([[0.1, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.2]], requires_grad=True)
    zq, idx, loss = vq(z)
    assert idx.tolist() == [1, 0, 2] or idx.tolist()[0] == 1 and idx.tolist()[2] == 2
    (zq * torch.arange(4.0)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through
    # code 3 (and whatever -e4 picked) stay unused; after restart_after steps a dead code is re-drawn from the batch
    vq2 = VectorQuantizer(4, 4, cosine=True, restart_after=3)
    with torch.no_grad():
        vq2.codebook.copy_(torch.eye(4))
    batch = torch.tensor([[1.0, 0.1, 0.0, 0.0]] * 8)
    for _ in range(3):
        vq2(batch)
    assert int(vq2.restarts) == 3  # codes 1, 2, 3 unused for 3 steps -> restarted
    after = torch.nn.functional.normalize(vq2.codebook.data, dim=-1)
    assert torch.allclose(after[1:], torch.nn.functional.normalize(batch[:3], dim=-1), atol=1e-2)


def test_usage_statistic_on_known_distributions():
    assert usage_stats(torch.arange(8).repeat(5), 8)["perplexity"] == pytest.approx(8.0)
    one = usage_stats(torch.zeros(100, dtype=torch.long), 8)
    assert one["live"] == 1 and one["perplexity"] == pytest.approx(1.0)
    s = usage_stats(torch.tensor([0, 0, 1, 2]), 4)  # p = (1/2, 1/4, 1/4): H = 1.5 bits -> exp(H) = 2^1.5
    assert s["perplexity"] == pytest.approx(2**1.5) and s["live"] == 3
    u = code_usage(np.array([3, 3, 3, 5]), 8)
    assert u["fraction"][3] == pytest.approx(0.75) and u["live"] == 2
    with pytest.raises(ValueError, match="ids in"):
        usage_stats(torch.tensor([9]), 8)


def test_confusion_table_counts():
    t = confusion(np.array([0, 0, 1, 2, 2, 2]), np.array([1, 1, 0, 3, 3, 0]), 3, 4)
    assert t.tolist() == [[0, 2, 0, 0], [1, 0, 0, 0], [1, 0, 0, 2]]
    with pytest.raises(ValueError, match="true_actions"):
        confusion(np.array([0]), np.array([7]), 3, 4)


def test_psnr_known_value():
    x = torch.zeros(1, 3, 4, 4)
    assert float(psnr(x, x + 0.1)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 -> 20 dB


# ---------------------------------------------------------------------------------------- tokenizer and LAM
def _tiny_tokenizer(quantizer="fsq"):
    return VideoTokenizer(TokenizerConfig(frame_size=16, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2,
                                          quantizer=quantizer, fsq_levels=(5, 5), vq_codes=16, vq_dim=8, max_frames=4))


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_tokenizer_round_trip_shapes_and_bad_input(quantizer):
    tok = _tiny_tokenizer(quantizer)
    x = torch.rand(2, 3, 3, 16, 16)
    out = tok(x)
    assert out["recon"].shape == x.shape and out["tokens"].shape == (2, 3, 16)
    ids = tok.encode(x)
    assert int(ids.max()) < tok.vocab
    assert torch.allclose(tok.decode(ids), out["recon"], atol=1e-5)  # decode(encode(x)) == the forward pass
    with pytest.raises(ValueError, match=r"\(B, T, 3, 16, 16\)"):
        tok(torch.rand(2, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="max_frames=4"):
        tok(torch.rand(1, 5, 3, 16, 16))


def test_tokenizer_encoder_is_causal():
    tok = _tiny_tokenizer("fsq").eval()
    x = torch.rand(1, 4, 3, 16, 16)
    from wmkit.nn import patchify
    e1 = tok.encoder(patchify(x, 4))
    x2 = x.clone()
    x2[:, 2] = torch.rand(3, 16, 16)
    e2 = tok.encoder(patchify(x2, 4))
    assert torch.allclose(e1[:, :2], e2[:, :2], atol=1e-6) and not torch.allclose(e1[:, 2:], e2[:, 2:])


def test_lam_shapes_gradient_routing_and_bad_input():
    lam = LatentActionModel(LAMConfig(frame_size=16, patch=8, dim=16, enc_depth=1, dec_depth=1, heads=2,
                                      num_actions=8, code_dim=4, max_frames=4, predict_delta=False))
    x = torch.rand(3, 4, 3, 16, 16)
    out = lam(x)
    assert out["pred"].shape == (3, 3, 3, 16, 16) and out["actions"].shape == (3, 3)
    out["mse"].backward()  # the reconstruction alone must train the encoder, through the straight-through VQ
    assert lam.encoder.inp.weight.grad is not None and lam.encoder.inp.weight.grad.abs().sum() > 0
    assert lam.decoder.inp.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="T >= 2"):
        lam(torch.rand(1, 1, 3, 16, 16))


def test_lam_action_depends_only_on_its_transition_and_the_past():
    lam = LatentActionModel(LAMConfig(frame_size=16, patch=8, dim=16, enc_depth=2, dec_depth=1, heads=2,
                                      code_dim=4, max_frames=6)).eval()
    x = torch.rand(1, 5, 3, 16, 16)
    a1 = lam.encode(x)[0]
    x2 = x.clone()
    x2[:, 3] = torch.rand(3, 16, 16)  # frame 4 of 5: transitions 1->2, 2->3 must not change; 3->4 and 4->5 do
    a2 = lam.encode(x2)[0]
    assert torch.allclose(a1[:, :2], a2[:, :2], atol=1e-6) and not torch.allclose(a1[:, 2], a2[:, 2])


def test_lam_decoder_applies_code_t_to_predict_frame_t_plus_1():
    """Alignment: pred[:, t] is frame t+1; it must change with code t and with no later code or frame."""
    torch.manual_seed(0)
    lam = LatentActionModel(LAMConfig(frame_size=16, patch=8, dim=16, enc_depth=1, dec_depth=2, heads=2,
                                      code_dim=4, max_frames=6, predict_delta=False)).eval()
    x = torch.rand(1, 5, 3, 16, 16)
    ids = torch.tensor([[0, 1, 2, 3]])
    p1 = lam.decode(x, lam.code(ids))  # (1, 4, 3, 16, 16): frames 2..5
    ids2 = ids.clone()
    ids2[:, 2] = 5  # the code of transition 3 -> 4
    p2 = lam.decode(x, lam.code(ids2))
    assert torch.allclose(p1[:, :2], p2[:, :2], atol=1e-6)  # frames 2, 3 do not see code 2
    assert not torch.allclose(p1[:, 2], p2[:, 2])  # frame 4 = x_hat_{t+1} for t = 3 uses it
    x2 = x.clone()
    x2[:, 3] = torch.rand(3, 16, 16)  # frame 4 is a target at index 2: only predictions of frames 5.. may change
    p3 = lam.decode(x2, lam.code(ids))
    assert torch.allclose(p1[:, :3], p3[:, :3], atol=1e-6) and not torch.allclose(p1[:, 3], p3[:, 3])


def test_lam_patch_context_tokens_hold_the_neighbouring_patches():
    from wmkit.nn import patchify

    lam = LatentActionModel(LAMConfig(frame_size=12, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4,
                                      max_frames=2, patch_context=3))
    x = torch.rand(1, 2, 3, 12, 12)
    win = lam.tokens(x).reshape(1, 2, 9, 3, 12, 12)  # 3 x 3 grid of tokens, each a 12 x 12 window
    own = patchify(x, 4).reshape(1, 2, 9, 3, 4, 4)
    assert torch.equal(win[..., 4:8, 4:8], own)  # the centre of each window is the token's own patch
    assert torch.equal(win[:, :, 4, :, 4:8, 0:4], own[:, :, 3])  # centre token: its left neighbour (token 3)
    assert torch.equal(win[:, :, 4, :, 0:4, 4:8], own[:, :, 1])  # ... and the one above (token 1)
    assert float(win[:, :, 0, :, 0:4].abs().sum()) == 0.0  # token 0 (top-left corner): zeros above it
    assert lam(x)["pred"].shape == (1, 1, 3, 12, 12)  # the decoder still draws each token's own 4 x 4 patch
    with pytest.raises(ValueError, match="patch_context"):
        LatentActionModel(LAMConfig(frame_size=12, patch=4, patch_context=2))


def test_lam_continuous_warmup_feeds_the_unit_norm_encoder_output():
    import torch.nn.functional as F

    lam = LatentActionModel(LAMConfig(frame_size=16, patch=8, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4,
                                      max_frames=3, predict_delta=False)).eval()
    x = torch.rand(2, 3, 3, 16, 16)
    a_e = lam.encode(x)[0]
    cont = lam(x, continuous=True)["pred"]
    assert torch.allclose(cont, lam.decode(x, F.normalize(a_e, dim=-1)), atol=1e-6)
    assert torch.allclose(lam(x)["pred"], lam.decode(x, lam.code(lam.infer_actions(x))), atol=1e-6)  # quantized
    assert not torch.allclose(cont, lam(x)["pred"])


def test_lam_correlation_peaks_at_the_offset_the_view_moved():
    lam = LatentActionModel(LAMConfig(frame_size=12, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4,
                                      max_frames=2, enc_correlation=True))
    big = torch.rand(1, 3, 20, 20)
    x0 = big[:, :, 4:16, 4:16]
    for (dy, dx), k in (((0, -4), 3), ((0, 4), 5), ((-4, 0), 1), ((4, 0), 7), ((0, 0), 4)):
        x1 = big[:, :, 4 + dy:16 + dy, 4 + dx:16 + dx]  # the view moved by (dy, dx): patch j of x1 = x0 at j + offset
        c = lam.correlation(torch.stack([x0, x1], 1))  # (1, 2, 9, 9)
        assert c.shape == (1, 2, 9, 9) and float(c[:, 0].abs().sum()) == 0.0  # frame 1 has no previous frame
        assert int(c[0, 1, 4].argmax()) == k and float(c[0, 1, 4, k]) == 0.0  # centre token: exact match at k
    assert lam.encode(torch.stack([x0, x1], 1))[0].shape == (1, 1, 4)


def test_lam_softmax_cost_volume_says_which_neighbour_matches():
    big = torch.rand(1, 3, 20, 20)
    x = torch.stack([big[:, :, 4:16, 4:16], big[:, :, 4:16, 0:12]], 1)  # the view moved 4 pixels (one patch) left
    kw = dict(frame_size=12, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4, max_frames=2,
              enc_correlation=True)
    raw = LatentActionModel(LAMConfig(**kw)).correlation(x)  # (1, 2, 9, 9)
    soft = LatentActionModel(LAMConfig(**kw, corr_temperature=0.002)).correlation(x)
    assert torch.allclose(soft[:, 1], torch.softmax(raw[:, 1] / 0.002, -1), atol=1e-6)  # per token, over 9 offsets
    assert torch.allclose(soft[:, 1].sum(-1), torch.ones(1, 9)) and float(soft[:, 0].abs().sum()) == 0.0
    assert int(soft[0, 1, 4].argmax()) == 3 and float(soft[0, 1, 4, 3]) > 0.99  # centre token: one-hot on "left"
    # the raw volume peaks at the same offset; the softmax only makes the peak a probability
    assert int(raw[0, 1, 4].argmax()) == 3
    with pytest.raises(ValueError, match="corr_temperature"):
        LatentActionModel(LAMConfig(**kw, corr_temperature=-1.0))


def test_lam_encoder_on_the_cost_volume_alone_sees_motion_not_colour():
    """enc_patches=False: the encoder reads the frames only through the 3 x 3 cost volume, which is unchanged when
    the colour channels of both frames are permuted (a mean squared difference over channels): the latent action is
    then the same, while the pixel-reading encoder (Genie's) gives a different one."""
    x = torch.rand(2, 2, 3, 12, 12)
    xc = x[:, :, [2, 0, 1]]  # same motion, other colours
    for patches, invariant in ((False, True), (True, False)):
        lam = LatentActionModel(LAMConfig(frame_size=12, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2,
                                          code_dim=4, max_frames=2, enc_correlation=True, enc_patches=patches)).eval()
        assert torch.allclose(lam.correlation(x), lam.correlation(xc), atol=1e-6)
        assert torch.allclose(lam.encode(x)[0], lam.encode(xc)[0], atol=1e-5) == invariant
    assert lam.encoder.inp.in_features == 3 * 4 * 4 + 9
    lam = LatentActionModel(LAMConfig(frame_size=12, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4,
                                      max_frames=2, enc_correlation=True, enc_patches=False))
    assert lam.encoder.inp.in_features == 9
    out = lam(x)
    out["loss"].backward()  # the encoder still learns: the decoder's loss reaches it through the straight-through code
    assert lam.encoder.inp.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="enc_correlation"):
        LatentActionModel(LAMConfig(frame_size=12, patch=4, enc_patches=False))


def test_lam_encoder_without_positions_cannot_know_where_a_patch_is():
    """With no spatial positions (the limit of the std-0.02 'learned' table at its start) the encoder's latent action
    is unchanged when the patches of both frames are permuted the same way -- it cannot see *where* the picture
    moved, only which patches pair up in time; the fixed sincos table breaks this symmetry from step 0."""
    torch.manual_seed(0)
    x = torch.rand(1, 2, 3, 24, 24)
    perm = torch.randperm(9)
    tiles = rearrange(x, "b t c (h p) (w q) -> b t (h w) c p q", p=8, q=8)[:, :, perm]  # same shuffle both frames
    xp = rearrange(tiles, "b t (h w) c p q -> b t c (h p) (w q)", h=3)
    for pos, invariant in (("learned", True), ("sincos", False)):
        lam = LatentActionModel(LAMConfig(frame_size=24, patch=8, dim=16, enc_depth=2, dec_depth=1, heads=2,
                                          code_dim=4, max_frames=2, enc_positions=pos)).eval()
        if pos == "learned":
            torch.nn.init.zeros_(lam.enc_pos)
        assert torch.allclose(lam.encode(x)[0], lam.encode(xp)[0], atol=1e-5) == invariant
    with pytest.raises(ValueError, match="enc_positions"):
        LatentActionModel(LAMConfig(frame_size=16, patch=8, enc_positions="rope"))


# ---------------------------------------------------------------------------------------- dynamics / MaskGIT
def _tiny_dynamics(**kw):
    cfg = DynamicsConfig(vocab=12, grid=(3, 3), num_actions=4, dim=16, depth=2, heads=2, max_frames=5, **kw)
    return DynamicsModel(cfg).eval()


def test_dynamics_causal_in_frames_and_actions():
    m = _tiny_dynamics()
    tok = torch.randint(0, 12, (1, 5, 9))
    act = torch.randint(0, 4, (1, 4))
    y = m(tok, act)
    assert y.shape == (1, 5, 9, 12)
    tok2 = tok.clone()
    tok2[:, 3] = (tok2[:, 3] + 1) % 12
    y2 = m(tok2, act)
    assert torch.allclose(y[:, :3], y2[:, :3], atol=1e-6) and not torch.allclose(y[:, 3:], y2[:, 3:])
    act2 = act.clone()
    act2[:, 1] = (act2[:, 1] + 1) % 4  # action 1 drives frame 2
    y3 = m(tok, act2)
    assert torch.allclose(y[:, :2], y3[:, :2], atol=1e-6) and not torch.allclose(y[:, 2], y3[:, 2])
    y3 = m(tok, act2)
    assert torch.allclose(y[:, :2], y3[:, :2], atol=1e-6) and not torch.allclose(y[:, 2], y3[:, 2])


def test_dynamics_loss_masks_only_later_frames():
    m = _tiny_dynamics()
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, 12, (64, 3, 9))
    out = m.loss(tok, torch.randint(0, 4, (64, 2)), generator=g)
    assert 0.5 <= float(out["mask_frac"]) <= 1.0 and math.isfinite(out["loss"].item())
    assert float(out["mask_frac"]) == pytest.approx(0.75, abs=0.05)  # E[U(0.5, 1)] = 0.75


def test_dynamics_mask_min_sets_the_training_masking_rate():
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, 12, (256, 3, 9))
    out = _tiny_dynamics(mask_min=0.9).loss(tok, torch.randint(0, 4, (256, 2)), generator=g)
    assert float(out["mask_frac"]) == pytest.approx(0.95, abs=0.02)  # E[U(0.9, 1)] = 0.95
    with pytest.raises(ValueError, match="mask_min"):
        _tiny_dynamics(mask_min=1.0)


@pytest.mark.parametrize("steps", [1, 4, pytest.param(25, marks=pytest.mark.slow)])
def test_maskgit_fills_every_token_in_exactly_the_configured_steps(steps):
    m = _tiny_dynamics()
    ctx = torch.randint(0, 12, (2, 2, 9))
    hist: list = []
    out = m.generate_next(ctx, torch.randint(0, 4, (2, 2)), steps=steps, generator=torch.Generator().manual_seed(1),
                          history=hist)
    assert len(hist) == steps and out.shape == (2, 9)
    assert int(out.max()) < 12  # no [MASK] left
    still = [h[1].sum(1) for h in hist]
    assert all(int(s.min()) >= 1 for s in still[:-1]) and int(still[-1].max()) == 0
    for s in range(1, steps):  # a token fixed at step s-1 keeps its value at every later step
        fixed = ~hist[s - 1][1]
        assert torch.equal(hist[s][0][fixed], hist[s - 1][0][fixed])
        # every step fixes at least one token, until one is left: MaskGIT keeps >= 1 masked before the last step
        assert ((still[s] < still[s - 1]) | (still[s - 1] == 1)).all()
    if steps == 25:  # cosine schedule: after step s, floor(N cos(pi/2 s/S)) masked (clamped to [1, unknown-1])
        assert int(still[0][0]) == 8  # floor(9 cos(pi/50)) = 8


def test_maskgit_is_deterministic_with_a_seed_and_checks_input():
    m = _tiny_dynamics()
    ctx = torch.randint(0, 12, (1, 2, 9))
    act = torch.tensor([[1, 2, 3]])
    a = m.rollout(ctx, act, steps=3, generator=torch.Generator().manual_seed(5))
    b = m.rollout(ctx, act, steps=3, generator=torch.Generator().manual_seed(5))
    assert a.shape == (1, 4, 9) and torch.equal(a, b)
    with pytest.raises(ValueError, match=r"latent action ids must be in \[0, 4\)"):
        m(torch.randint(0, 12, (1, 2, 9)), torch.tensor([[4]]))
    with pytest.raises(ValueError, match="beyond the trained context"):
        m(torch.randint(0, 12, (1, 6, 9)), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="9 tokens per frame"):
        m(torch.randint(0, 12, (1, 2, 8)), torch.zeros(1, 1, dtype=torch.long))


def test_lam_delta_decoder_starts_at_copy_and_lam_size_downsamples():
    cfg = LAMConfig(frame_size=16, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4, max_frames=4,
                    predict_delta=True)
    lam = LatentActionModel(cfg)
    x = torch.rand(2, 3, 3, 16, 16)
    out = lam(x)
    assert torch.allclose(out["pred"], x[:, :-1])  # zero-initialised output layer: x_hat_{t+1} = x_t at step 0
    assert float(out["mse_over_copy"]) == pytest.approx(1.0)
    small = LatentActionModel(LAMConfig(frame_size=16, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2,
                                        code_dim=4, max_frames=4, lam_size=8))
    assert small.num_patches == 4 and small(x)["pred"].shape == (2, 2, 3, 8, 8)
    assert torch.allclose(small.resize(x)[0, 0, :, 0, 0], x[0, 0, :, :2, :2].mean(dim=(1, 2)))  # area average
    with pytest.raises(ValueError, match="lam_size=6"):
        LatentActionModel(LAMConfig(frame_size=16, patch=2, lam_size=6))


def test_crop_tiles_keeps_the_7x7_tiles_around_the_player():
    from wmkit.genie.train import crop_tiles

    frames = np.zeros((1, 72, 72, 3), np.uint8)
    frames[0, 24:32, 32:40] = 255  # tile (row 3, column 4): where Crafter draws the player
    out = crop_tiles(frames)
    assert out.shape == (1, 56, 56, 3)
    assert out[0, 24:32, 24:32].min() == 255 and out.sum() == 8 * 8 * 3 * 255  # the centre tile of the crop
    with pytest.raises(ValueError, match="size 72"):
        crop_tiles(np.zeros((1, 64, 64, 3), np.uint8))


def test_lam_fsq_actions_are_the_8_sign_patterns():
    lam = LatentActionModel(LAMConfig(frame_size=16, patch=8, dim=16, enc_depth=1, dec_depth=1, heads=2,
                                      max_frames=3, quantizer="fsq"))
    a_e, a_q, ids, loss = lam.encode(torch.rand(4, 3, 3, 16, 16))
    assert a_q.shape == (4, 2, 3) and float(loss) == 0.0 and int(ids.max()) < 8
    assert lam.code(torch.arange(8)).unique(dim=0).shape == (8, 3)  # 8 distinct codes of 3 two-level channels
    with pytest.raises(ValueError, match="power of 2"):
        LatentActionModel(LAMConfig(frame_size=16, patch=8, num_actions=6, quantizer="fsq"))


@pytest.mark.parametrize("c", [1, 3])
def test_maskgit_context_cache_gives_the_full_forward_logits_and_tokens(c):
    m = _tiny_dynamics()
    ctx, act = torch.randint(0, 12, (3, c, 9)), torch.randint(0, 4, (3, c))
    cur = torch.randint(0, 13, (3, 9))  # some [MASK] (id 12)
    full = m(torch.cat([ctx, cur[:, None]], 1), act)[:, -1]  # (B, N, V): the whole clip through the model
    fast = m.next_logits(m.context_cache(ctx, act[:, :-1]), cur, act[:, -1])
    assert torch.allclose(full, fast, atol=1e-5)
    a, b = (m.generate_next(ctx, act, steps=4, generator=torch.Generator().manual_seed(2), cache=k)
            for k in (True, False))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"latent action ids must be in \[0, 4\)"):
        m.generate_next(ctx, torch.full((3, c), 4), steps=2)


def test_sample_categorical_draws_the_given_distribution():
    from wmkit.genie.dynamics import sample_categorical

    p = torch.tensor([0.5, 0.0, 0.3, 0.2])
    ids = sample_categorical(p.expand(40_000, 4), torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=4).float() / len(ids)
    assert float(freq[1]) == 0.0 and torch.allclose(freq, p, atol=0.01)  # 4 sigma of a 40k-sample frequency: 0.01
    one_hot = sample_categorical(torch.eye(5), torch.Generator().manual_seed(1))
    assert one_hot.tolist() == [0, 1, 2, 3, 4]


def test_lam_batched_inference_matches_one_window_at_a_time():
    from wmkit.genie.train import infer_episode_actions, to_tensor

    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 255, (9, 16, 16, 3)).astype(np.uint8)
    for L in (2, 3):
        lam = LatentActionModel(LAMConfig(frame_size=16, patch=4, dim=16, enc_depth=1, dec_depth=1, code_dim=4,
                                          max_frames=L)).eval()
        x = to_tensor(frames)
        one = [int(lam.infer_actions(x[max(0, t + 1 - L):t + 1][None])[0, -1]) for t in range(1, 9)]
        assert infer_episode_actions(lam, frames, batch=3).tolist() == one


def test_observed_motion_labels_one_tile_scrolls():
    from wmkit.genie.train import observed_motion

    rng = np.random.default_rng(0)
    world = rng.integers(0, 255, (120, 120, 3)).astype(np.uint8)
    view = [world[40:96, 40:96]]  # (56, 56, 3) around the player
    for dy, dx in ((0, -8), (0, 8), (-8, 0), (8, 0), (0, 0)):  # player moves left, right, up, down, stays
        view.append(world[40 + dy:96 + dy, 40 + dx:96 + dx])
        view.append(world[40:96, 40:96])  # back to the start
    m = observed_motion(np.stack(view))
    assert m[0::2].tolist() == [1, 2, 3, 4, 0]  # left, right, up, down, none


def test_distinct_effects_counts_groups_of_similar_actions():
    from wmkit.genie.play import distinct_effects

    d = np.array([[0, .01, .2, .2], [.01, 0, .2, .2], [.2, .2, 0, .05], [.2, .2, .05, 0]])
    assert distinct_effects(d, 0.02) == 3  # {0, 1} same effect; 2 and 3 differ by 0.05 > 0.02
    assert distinct_effects(d, 0.1) == 2 and distinct_effects(d, 0.5) == 1 and distinct_effects(d, 0.001) == 4
    chain = np.array([[0, .01, .3], [.01, 0, .01], [.3, .01, 0]])  # 0~1 and 1~2: one group though 0 and 2 differ
    assert distinct_effects(chain, 0.02) == 1
    with pytest.raises(ValueError, match="square"):
        distinct_effects(np.zeros((2, 3)), 0.1)



def test_lam_flow_token_reads_the_patch_averaged_cost_volume():
    """enc_flow_token: the action token's input is its learned vector plus the cost volume averaged over patches
    (a known answer read at the encoder's input layer); off (Genie) it is the learned vector alone."""
    big = torch.rand(2, 3, 20, 20)
    x = torch.stack([big[:, :, 4:16, 4:16], big[:, :, 8:20, 4:16]], 1)  # the view moved one patch down
    kw = dict(frame_size=12, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4, max_frames=2,
              enc_correlation=True, corr_temperature=0.002, enc_patches=False)
    for flow in (False, True):
        lam = LatentActionModel(LAMConfig(**kw, enc_flow_token=flow)).eval()
        seen = {}
        lam.encoder.inp.register_forward_hook(lambda m, i, o, seen=seen: seen.update(x=i[0]))
        lam.encode(x)
        corr = lam.correlation(x)  # (2, 2, 9, 9)
        want = lam.action_in + (corr.mean(2) if flow else 0.0)  # (2, 2, 9)
        assert torch.allclose(seen["x"][:, :, 0], want, atol=1e-6)
        if flow:  # frame 2's token holds the displacement: most mass on the offset "the view moved down" (row below)
            assert int(corr.mean(2)[0, 1].argmax()) == 7
    with pytest.raises(ValueError, match="enc_flow_token"):
        LatentActionModel(LAMConfig(frame_size=12, patch=4, enc_flow_token=True))


def test_lam_out_norm_standardises_a_e_and_recalibration_averages_the_batches():
    """out_norm='batch': in training mode every dimension of a_e has mean 0 and variance 1 over the batch (known
    answer); recalibrate_out_norm sets the evaluation statistics to the plain average of the given batches' means
    and variances (computed here by hand from the encoder's output before the norm), and leaves the quantizer's
    codebook and usage counters untouched. A bad value raises."""
    kw = dict(frame_size=12, patch=4, dim=16, enc_depth=1, dec_depth=1, heads=2, code_dim=4, max_frames=2,
              enc_correlation=True, corr_temperature=0.002, enc_patches=False)
    lam = LatentActionModel(LAMConfig(**kw, out_norm="batch")).train()
    raw = []
    lam.out_norm.register_forward_hook(lambda m, i, o: raw.append(i[0].detach().clone()))
    a_e = lam.encode(torch.rand(32, 2, 3, 12, 12))[0].reshape(-1, 4)  # (32, 4)
    v = raw[0].var(0, unbiased=False)  # before the norm: small (a shared constant dominates a_e at initialisation)
    assert torch.allclose(a_e.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(a_e.var(0, unbiased=False), v / (v + lam.out_norm.eps), atol=1e-4)  # = 1 up to eps

    batches = [torch.rand(8, 2, 3, 12, 12) for _ in range(3)]
    raw.clear()
    codebook, unused = lam.vq.codebook.detach().clone(), lam.vq.steps_unused.clone()
    recalibrate_out_norm(lam, batches)
    assert len(raw) == 3 and lam.training and lam.out_norm.momentum == 0.1
    assert torch.allclose(lam.out_norm.running_mean, torch.stack([r.mean(0) for r in raw]).mean(0), atol=1e-6)
    assert torch.allclose(lam.out_norm.running_var, torch.stack([r.var(0) for r in raw]).mean(0), atol=1e-6)
    assert torch.equal(lam.vq.codebook, codebook) and torch.equal(lam.vq.steps_unused, unused)
    lam.eval()  # evaluation: (a - running mean) / sqrt(running var + eps)
    x = torch.rand(5, 2, 3, 12, 12)
    raw.clear()
    got = lam.encode(x)[0].reshape(-1, 4)
    want = (raw[0] - lam.out_norm.running_mean) / torch.sqrt(lam.out_norm.running_var + lam.out_norm.eps)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="out_norm"):
        LatentActionModel(LAMConfig(**kw, out_norm="layer"))


@pytest.mark.parametrize("k", [1, 3])
def test_dynamics_token_context_embeds_exactly_the_neighbourhood(k):
    """token_context=k: changing one token changes the input embedding of the tokens whose k x k window holds it --
    its k x k neighbourhood on the grid, clipped at the border -- and of no other token or frame; the projection
    reads the window in (row, column) order with zeros past the border (a known answer at a corner)."""
    cfg = DynamicsConfig(vocab=11, grid=(4, 5), num_actions=3, dim=8, depth=1, heads=2, max_frames=3, token_context=k)
    dyn = DynamicsModel(cfg)
    tok = torch.randint(0, 11, (2, 3, 20))
    for r, c in [(0, 0), (2, 3), (3, 4)]:
        t2 = tok.clone()
        t2[1, 1, r * 5 + c] = (tok[1, 1, r * 5 + c] + 1) % 11
        changed = (dyn.embed(t2) - dyn.embed(tok)).abs().sum(-1) > 0  # (2, 3, 20)
        want = torch.zeros(2, 3, 4, 5, dtype=torch.bool)
        want[1, 1, max(r - k // 2, 0): r + k // 2 + 1, max(c - k // 2, 0): c + k // 2 + 1] = True
        assert torch.equal(changed, want.reshape(2, 3, 20)), (r, c)
    if k == 3:  # the corner token (0, 0): window rows/columns -1..1, the 4 inside at window slots 4, 5, 7, 8
        e = dyn.token_embed(tok[0, 0])  # (20, D)
        win = torch.zeros(9, 8)
        win[4], win[5], win[7], win[8] = e[0], e[1], e[5], e[6]
        assert torch.allclose(dyn.embed(tok[0, 0])[0], dyn.context_proj(win.reshape(-1)), atol=1e-6)
    with pytest.raises(ValueError, match="token_context"):
        DynamicsModel(DynamicsConfig(vocab=11, grid=(4, 5), token_context=2))


def test_dynamics_token_context_keeps_the_cached_generation_equal_to_the_plain_loop():
    """With token_context=3 the context cache still gives the logits of the whole-clip forward."""
    cfg = DynamicsConfig(vocab=11, grid=(3, 3), num_actions=3, dim=8, depth=2, heads=2, max_frames=4, token_context=3)
    dyn = DynamicsModel(cfg).eval()
    ctx, cur = torch.randint(0, 11, (2, 2, 9)), torch.randint(0, 12, (2, 9))
    acts = torch.randint(0, 3, (2, 2))
    full = dyn(torch.cat([ctx, cur[:, None]], 1), acts)[:, -1]
    fast = dyn.next_logits(dyn.context_cache(ctx, acts[:, :-1]), cur, acts[:, -1])
    assert torch.allclose(full, fast, atol=1e-5)


@pytest.mark.parametrize("token_context", [1, 3])
def test_dynamics_prev_window_reads_exactly_the_previous_frames_window(token_context):
    """prev_window=3: changing token q of frame t changes what frame t+1 reads (``read_previous``) at exactly the
    positions whose 3 x 3 window holds q (with token_context=1; token_context=3 widens it to 5 x 5 because q's own
    embedding already moved its neighbours'), at frame t only the queries whose own input moved, and nothing at
    frame t+2 or earlier than t;
    prev_window=1 reads nothing (Genie)."""
    cfg = DynamicsConfig(vocab=11, grid=(4, 5), num_actions=3, dim=8, depth=1, heads=2, max_frames=4,
                         token_context=token_context, prev_window=3)
    dyn = DynamicsModel(cfg)
    tok, act = torch.randint(0, 11, (2, 4, 20)), torch.randint(0, 3, (2, 3))

    def read(t):  # what read_previous adds, (2, 4, 20)-shaped per-token change
        e = dyn.embed(t)
        x = torch.cat([e[:, :1], e[:, 1:] + dyn.action_embed(act)[:, :, None]], 1)
        return dyn.read_previous(x, e) - x

    base = read(tok)
    assert torch.equal(base[:, 0], torch.zeros_like(base[:, 0]))  # frame 1 has no previous frame
    reach = 1 + token_context // 2
    for r, c in [(0, 0), (2, 3), (3, 4)]:
        t2 = tok.clone()
        t2[1, 1, r * 5 + c] = (tok[1, 1, r * 5 + c] + 1) % 11
        changed = (read(t2) - base).abs().sum(-1) > 0  # (2, 4, 20)
        want = torch.zeros(2, 4, 4, 5, dtype=torch.bool)
        want[1, 2, max(r - reach, 0): r + reach + 1, max(c - reach, 0): c + reach + 1] = True
        q = reach - 1  # frame t's own queries move where its input embeddings moved
        want[1, 1, max(r - q, 0): r + q + 1, max(c - q, 0): c + q + 1] = True
        assert torch.equal(changed, want.reshape(2, 4, 20)), (r, c)
    off = DynamicsModel(DynamicsConfig(vocab=11, grid=(4, 5), num_actions=3, dim=8, depth=1, heads=2, max_frames=4))
    assert off.prev_read is None
    e = off.embed(tok)
    assert torch.equal(off.read_previous(e, e), e)
    with pytest.raises(ValueError, match="prev_window"):
        DynamicsModel(DynamicsConfig(vocab=11, grid=(4, 5), prev_window=2))


def test_token_windows_equal_unfold():
    """The index-gathered windows are F.unfold's k x k patches with zero padding, token by token."""
    from einops import rearrange

    from wmkit.genie.dynamics import token_windows
    x = torch.randn(3, 4 * 5, 6)
    for k in (1, 3, 5):
        ref = torch.nn.functional.unfold(rearrange(x, "m (h w) d -> m d h w", h=4), kernel_size=k, padding=k // 2)
        ref = rearrange(ref, "m (d kk) n -> m n kk d", kk=k * k)  # (M, N, kk, D)
        assert torch.equal(token_windows(x, (4, 5), k), ref)


def test_dynamics_prev_window_action_picks_the_neighbour():
    """The mechanism prev_window exists for, as a known answer: with the query equal to the embedding of offset d
    (scaled up) and the values reading only the offset, the read returns offset d's value -- an action can select
    "the token one to the left" without spatial attention."""
    from wmkit.genie.dynamics import PrevFrameWindow
    torch.manual_seed(0)
    m = PrevFrameWindow(dim=16, heads=1, grid=(3, 3), k=3)
    with torch.no_grad():
        m.offset.copy_(torch.eye(9, 16) * 30)  # offset j is the basis vector j
        m.kv.weight.zero_()
        m.kv.weight[:16] = torch.eye(16)  # keys = the window's (normed) content + offset
        m.kv.weight[16:] = torch.eye(16)  # values = the same
        m.q.weight.copy_(torch.eye(16))
        m.norm_q.weight.fill_(0)  # query = LayerNorm's bias, set below
        m.proj.weight.copy_(torch.eye(16))
        m.proj.bias.zero_()
    prev = torch.zeros(1, 9, 16)  # empty content: every key is its offset alone
    for d in range(9):
        with torch.no_grad():
            m.norm_q.bias.copy_(torch.eye(16)[d] * 30)
        out = m(torch.randn(1, 9, 16), prev)  # (1, 9, 16)
        assert torch.allclose(out[0, 4], torch.eye(16)[d] * 30, atol=1e-3)  # the centre token reads offset d


def test_dynamics_prev_window_keeps_the_cached_generation_equal_to_the_plain_loop():
    """With prev_window=3 (and token_context 1 or 3) the context cache gives the logits of the whole-clip forward:
    the new frame reads the last context frame's embeddings, which the cache keeps."""
    for tc in (1, 3):
        cfg = DynamicsConfig(vocab=11, grid=(3, 4), num_actions=3, dim=16, depth=2, heads=2, max_frames=4,
                             token_context=tc, prev_window=3)
        dyn = DynamicsModel(cfg).eval()
        ctx, cur, acts = torch.randint(0, 11, (2, 3, 12)), torch.randint(0, 12, (2, 12)), torch.randint(0, 3, (2, 3))
        full = dyn(torch.cat([ctx, cur[:, None]], 1), acts)[:, -1]
        fast = dyn.next_logits(dyn.context_cache(ctx, acts[:, :-1]), cur, acts[:, -1])
        assert torch.allclose(full, fast, atol=1e-5)


def test_tokenizer_patch_encoder_gives_equal_tiles_equal_tokens():
    """encoder='patch': a token depends on its own patch alone -- changing one patch changes only its token, and a
    frame scrolled by one patch gets the scrolled token grid (exact shift equivariance on tile-aligned frames); the
    ST encoder (Genie) mixes patches, so one changed patch moves other tokens' encoder outputs too."""
    kw = dict(frame_size=16, patch=4, dim=16, enc_depth=2, dec_depth=1, heads=2, fsq_levels=(5, 5, 5), max_frames=2)
    tok = VideoTokenizer(TokenizerConfig(**kw, encoder="patch")).eval()
    big = torch.rand(1, 1, 3, 16, 20)
    x = torch.cat([big[..., :16], big[..., 4:]], 1)  # (1, 2, 3, 16, 16): frame 2 = frame 1 scrolled by one patch
    ids = tok.encode(x).reshape(2, 4, 4)
    assert torch.equal(ids[1, :, :3], ids[0, :, 1:])
    y = x.clone()
    y[0, 0, :, 4:8, 8:12] = torch.rand(3, 4, 4)  # patch (1, 2) of frame 1
    z_x, z_y = tok.encoder(patchify_frames(x, 4)), tok.encoder(patchify_frames(y, 4))
    moved = (z_x - z_y).abs().sum(-1) > 0  # (1, 2, 16)
    want = torch.zeros(1, 2, 16, dtype=torch.bool)
    want[0, 0, 1 * 4 + 2] = True
    assert torch.equal(moved, want)
    st = VideoTokenizer(TokenizerConfig(**kw)).eval()
    assert ((st.encoder(patchify_frames(x, 4)) - st.encoder(patchify_frames(y, 4))).abs().sum(-1) > 0).sum() > 1
    with pytest.raises(ValueError, match="encoder"):
        VideoTokenizer(TokenizerConfig(**kw, encoder="conv"))
