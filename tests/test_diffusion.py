"""wmkit.diffusion: EDM preconditioning by its formulas, samplers with oracle denoisers, shortcut self-consistency
by hand, context-noise conditioning, determinism, DIAMOND's parameter count, bad inputs, training on real clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wmkit.diffusion import (
    EDM,
    ContextNoise,
    Denoiser,
    DiffusionConfig,
    Shortcut,
    VPrediction,
    ddim_timesteps,
    dyadic_steps,
    edm_precond,
    karras_sigmas,
    quantize_8bit,
    sd_alphas_cumprod,
)
from wmkit.diffusion.evaluate import drift, psnr
from wmkit.diffusion.play import DreamGame, record_session, write_video
from wmkit.utils import count_parameters

K, H = 2, 8
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a shared machine


def tiny_net(**kw) -> Denoiser:
    torch.manual_seed(0)
    net = Denoiser(5, K, 3, (8, 8), (1, 1), None, 16, **kw)
    # conv_out and every block's conv2 start at zero (DIAMOND): give them weights so the output depends on the inputs
    for name, p in net.named_parameters():
        if name.endswith(("conv_out.weight", "conv2.weight")):
            torch.nn.init.normal_(p, std=0.1)
    return net


def batch(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.rand(B, K, 3, H, H, generator=g) * 2 - 1
    return ctx, torch.randint(0, 5, (B, K), generator=g), torch.rand(B, 3, H, H, generator=g) * 2 - 1


def test_edm_precond_by_hand():
    c_skip, c_out, c_in, c_noise = edm_precond(torch.tensor([0.5, 2.0]), sigma_data=0.5)
    # sigma = 0.5: sigma^2 + sd^2 = 0.5 -> c_skip 0.5, c_out 0.25/sqrt(.5), c_in 1/sqrt(.5), c_noise ln(.5)/4
    assert torch.allclose(c_skip, torch.tensor([0.5, 0.25 / 4.25]))
    assert torch.allclose(c_out, torch.tensor([0.25 / math.sqrt(0.5), 1.0 / math.sqrt(4.25)]))
    assert torch.allclose(c_in, torch.tensor([1 / math.sqrt(0.5), 1 / math.sqrt(4.25)]))
    assert torch.allclose(c_noise, torch.tensor([math.log(0.5) / 4, math.log(2.0) / 4]))
    # limits: at tiny sigma D(x) ~ x (skip everything); unit variance of the network input and of its target
    cs, co, _, _ = edm_precond(1e-6)
    assert abs(float(cs) - 1) < 1e-9 and float(co) < 1e-5
    s = torch.tensor(3.0)
    cs, co, ci, _ = edm_precond(s)
    assert torch.isclose(ci**2 * (s**2 + 0.25), torch.tensor(1.0))  # Var(c_in (y + n)) = 1 for Var(y) = sd^2
    assert torch.isclose((cs**2 * s**2 + (1 - cs) ** 2 * 0.25) / co**2, torch.tensor(1.0))  # EDM eq. 8 target var
    with pytest.raises(ValueError, match="sigma must be > 0"):
        edm_precond(torch.tensor([0.1, 0.0]))


def test_schedules_by_hand():
    s = karras_sigmas(3)
    assert s.shape == (4,) and s[-1] == 0 and math.isclose(float(s[0]), 5.0, rel_tol=1e-6)
    assert math.isclose(float(s[2]), 2e-3, rel_tol=1e-5)
    mid = ((5 ** (1 / 7) + 2e-3 ** (1 / 7)) / 2) ** 7
    assert math.isclose(float(s[1]), mid, rel_tol=1e-5)
    assert np.allclose(karras_sigmas(1).tolist(), [5.0, 0.0])
    assert ddim_timesteps(4) == [999, 749, 499, 249] and ddim_timesteps(1) == [999]
    abar = sd_alphas_cumprod()
    assert math.isclose(float(abar[0]), 1 - 0.00085, rel_tol=1e-12) and math.isclose(
        float(abar[1]), (1 - 0.00085) * (1 - ((0.00085**0.5) + (0.012**0.5 - 0.00085**0.5) / 999) ** 2), rel_tol=1e-12)
    assert dyadic_steps(1, 64) == [1.0] and dyadic_steps(3, 64) == [0.5, 0.25, 0.25]
    ten = dyadic_steps(10, 64)
    assert ten == [1 / 8] * 6 + [1 / 16] * 4 and sum(ten) == 1.0
    for n in range(1, 65):
        d = dyadic_steps(n, 64)
        assert len(d) == n and sum(d) == 1.0 and all(math.log2(1 / x).is_integer() for x in d)
        taus = np.cumsum([0] + d[:-1])  # every step starts on the grid of its own size
        assert all((t / x).is_integer() for t, x in zip(taus, d))
    with pytest.raises(ValueError, match="k_max"):
        dyadic_steps(65, 64)


def test_diamond_atari_parameter_count():
    # DIAMOND's Atari denoiser: channels [64]*4, depths [2]*4, cond 256, 4 frames (paper: 4.4M parameters)
    net = Denoiser(18, 4, 3, (64, 64, 64, 64), (2, 2, 2, 2), None, 256)
    assert count_parameters(net) == 4_406_851
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64), torch.zeros(1), torch.randn(1, 4, 3, 64, 64),
                  torch.zeros(1, 4, dtype=torch.long))
    # conv_out's weight starts at zero (DIAMOND), so the untrained output is its bias, whatever the input
    assert torch.equal(out, net.conv_out.bias.view(1, 3, 1, 1).expand_as(out))


def test_samplers_return_the_oracle_frame_in_any_number_of_steps():
    ctx, act, clean = batch()
    clean = quantize_8bit(clean)
    edm = EDM(tiny_net())
    edm.denoise = lambda x, sigma, *a, **k: clean  # a perfect denoiser D(x; sigma) = x*
    sc = Shortcut(tiny_net(step_levels=7), k_max=64)
    sc.predict = lambda x, tau, e, *a: clean  # perfect x-prediction
    vp = VPrediction(tiny_net())

    class OracleV(torch.nn.Module):  # v such that a x - s v = x*
        context = K

        def forward(self, x, c_noise, *a, **k):
            t = (c_noise * 1000).round().long()
            ab = vp.abar[t].view(-1, 1, 1, 1)
            return (ab.sqrt() * x - clean) / (1 - ab).sqrt()

    vp.net = OracleV()
    for steps in (1, 3, 10):
        for m in (edm, sc, vp):
            out = m.sample(ctx, act, steps, generator=torch.Generator().manual_seed(1))
            assert torch.allclose(out, clean, atol=1e-4), (m.name, steps)
    edm.order = 2
    assert torch.allclose(edm.sample(ctx, act, 3), clean, atol=1e-4)


def test_shortcut_self_consistency_target_by_hand():
    sc = Shortcut(tiny_net(step_levels=7), k_max=64)
    sc.predict = lambda x, tau, e, *a: 2 * x  # x1_hat = 2 x whatever tau and d
    x = torch.randn(2, 3, H, H)
    # tau = 0, d = 1 (e = 0): b' = (2x - x)/1 = x; x' = x + x/2 = 1.5x at tau 0.5; b'' = (3x - 1.5x)/0.5 = 3x
    tgt = sc.self_consistency_target(x, torch.zeros(2), torch.zeros(2, dtype=torch.long), None, None, None)
    assert torch.allclose(tgt, 2 * x)
    # tau = 0.5, d = 1/2 (e = 1): b' = (2x - x)/0.5 = 2x; x' = x + 2x/4 = 1.5x at 0.75; b'' = 1.5x/0.25 = 6x -> 4x
    tgt = sc.self_consistency_target(x, torch.full((2,), 0.5), torch.ones(2, dtype=torch.long), None, None, None)
    assert torch.allclose(tgt, 4 * x)


def test_shortcut_gradient_reaches_only_the_full_step():
    torch.manual_seed(0)
    sc = Shortcut(tiny_net(step_levels=7), k_max=64, self_fraction=0.5)
    calls = []
    real = sc.predict

    def spy(x, tau, e, *a):
        out = real(x, tau, e, *a)
        calls.append((e.tolist(), out.requires_grad))
        return out

    sc.predict = spy
    ctx, act, tgt = batch(B=4)
    loss, logs = sc.loss(ctx, act, tgt)
    assert len(calls) == 3  # the full-batch forward, then two half steps for the self-consistency rows
    assert calls[0][1] and not calls[1][1] and not calls[2][1]  # targets carry no gradient (stop-gradient)
    assert calls[0][0][:2] == [6, 6] and all(0 <= e < 6 for e in calls[0][0][2:])  # flow rows at d_min = 1/64
    assert calls[1][0] == [e + 1 for e in calls[0][0][2:]]  # half steps use the next finer step index
    loss.backward()
    assert logs["bootstrap_mse"] > 0 and sc.net.step_emb.weight.grad is not None


def test_context_noise_conditioning_changes_the_output():
    cn = ContextNoise(0.7, 10, 0.1)
    assert cn.bucket(torch.tensor([0.0, 0.069, 0.07, 0.385, 0.7])).tolist() == [0, 0, 1, 5, 9]
    net = tiny_net(ctx_noise_buckets=10)
    torch.nn.init.normal_(net.ctx_noise_emb.weight)
    ctx, act, x = batch()
    out = [net(x, torch.zeros(3), ctx, act, ctx_bucket=torch.full((3,), b)) for b in (0, 5)]
    assert (out[0] - out[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="ctx_bucket"):
        net(x, torch.zeros(3), ctx, act)
    noisy, bucket = cn.train(ctx, torch.Generator().manual_seed(0))
    assert bucket.shape == (3,) and not torch.equal(noisy, ctx)
    clean, b = ContextNoise().train(ctx)
    assert clean is ctx and b is None
    with pytest.raises(ValueError, match="outside the trained range"):
        cn.infer(ctx, level=0.8)
    with pytest.raises(ValueError, match="ctx_noise_emb"):
        VPrediction(tiny_net(), ContextNoise(0.7))


def test_sampling_is_deterministic_with_a_seed():
    ctx, act, _ = batch()
    for m in (EDM(tiny_net()), VPrediction(tiny_net()), Shortcut(tiny_net(step_levels=7))):
        a = m.sample(ctx, act, 3, generator=torch.Generator().manual_seed(7))
        b = m.sample(ctx, act, 3, generator=torch.Generator().manual_seed(7))
        c = m.sample(ctx, act, 3, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c), m.name


def test_bad_inputs_raise_clear_errors():
    ctx, act, tgt = batch()
    m = EDM(tiny_net())
    with pytest.raises(ValueError, match="steps must be"):
        m.sample(ctx, act, 0)
    with pytest.raises(ValueError, match="context"):
        m.sample(ctx[:, :1], act, 3)
    with pytest.raises(ValueError, match="target"):
        m.loss(ctx, act, tgt[:, :, :4])
    with pytest.raises(TypeError, match="int64"):
        m.net(tgt, torch.zeros(3), ctx, act.float())
    with pytest.raises(ValueError, match="order"):
        EDM(tiny_net(), order=3)
    with pytest.raises(ValueError, match="step_levels"):
        Shortcut(tiny_net(), k_max=64)
    with pytest.raises(ValueError, match="power of two"):
        Shortcut(tiny_net(step_levels=7), k_max=48)
    with pytest.raises(ValueError, match="recipe"):
        from wmkit.diffusion import build_recipe
        build_recipe(DiffusionConfig(recipe="ddpm"), 5)  # type: ignore[arg-type]


def test_psnr_drift_and_play(tmp_path):
    a = torch.zeros(2, 3, H, H)
    assert torch.allclose(psnr(a, a + 0.2), torch.full((2,), 10 * math.log10(4 / 0.04)))
    m = EDM(tiny_net())
    frames = torch.rand(2, K + 3, 3, H, H) * 2 - 1
    acts = torch.randint(0, 5, (2, K + 3))
    d = drift(m, frames, acts, steps=1)
    assert d["psnr"].shape == (3,) and d["generated"].shape == (2, 3, 3, H, H) and d["mse"].shape == (2, 3)
    # per episode and step: the MSE of that episode's generated frame against its real one; "psnr" averages the MSE
    np.testing.assert_allclose(d["mse"][1, 2], ((d["generated"][1, 2] - frames[1, K + 2]) ** 2).mean().item(),
                               rtol=1e-5)
    np.testing.assert_allclose(d["psnr"], 10 * np.log10(4 / d["mse"].mean(0)), rtol=1e-5)
    game = DreamGame(m, frames[0, :K], acts[0, :K], steps=1)
    video = record_session(game, [0, 1, 4])
    assert video.shape == (K + 3, H, H, 3) and video.dtype == np.uint8 and game.fps > 0
    with pytest.raises(ValueError, match="action"):
        game.step(5)
    import av

    path = write_video(tmp_path / "s.mp4", video, fps=10)
    with av.open(str(path)) as f:
        assert sum(1 for _ in f.decode(video=0)) == K + 3
    assert write_video(tmp_path / "s.gif", video).stat().st_size > 0
    with pytest.raises(ValueError, match="mp4 or .gif"):
        write_video(tmp_path / "s.avi", video)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["edm", "vpred", "shortcut"])
def test_loss_falls_on_real_crafter_clips(recipe, tmp_path):
    from wmkit.data import crafter_clips
    from wmkit.diffusion import load_model, train

    clips = crafter_clips(episodes=2, steps=40, seed=0, progress=False)
    cfg = DiffusionConfig(recipe=recipe, episodes=2, episode_steps=40, size=16, context=2, channels=(16, 16),
                          depths=(1, 1), cond_channels=32, batch_size=16, train_steps=60, lr=1e-3, warmup_steps=5,
                          log_every=5, ctx_noise_max=0.7 if recipe == "vpred" else 0.0, k_max=8,
                          run_dir=str(tmp_path / recipe))
    r = train(cfg, clips, progress=False)
    losses = [h["loss"] for h in r["history"]]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses
    again = load_model(tmp_path / recipe)
    ctx = torch.zeros(1, 2, 3, 16, 16)
    act = torch.zeros(1, 2, dtype=torch.long)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(again.sample(ctx, act, 2, generator=g1), r["model"].sample(ctx, act, 2, generator=g2))


@pytest.mark.slow
def test_cli_train_then_play_writes_a_video(tmp_path, monkeypatch, capsys):
    import json

    from wmkit.diffusion.cli import main

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    monkeypatch.setenv("WMKIT_RUNS_DIR", str(tmp_path / "runs"))
    run = tmp_path / "edm"
    main(["train", "--recipe", "edm", "--train-steps", "5", "--run-dir", str(run), "--device", "cpu"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["config"]["size"] == 16 and out["config"]["train_steps"] == 5  # profile sizes, then the flags
    main(["play", "--run-dir", str(run), "--record", str(tmp_path / "s.gif"), "--frames", "4", "--steps", "1"])
    played = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert played["frames"] == 4 + 4 and (tmp_path / "s.gif").stat().st_size > 0
    with pytest.raises(SystemExit, match="unknown command"):
        main(["dance"])


def test_continuous_actions_condition_the_denoiser():
    torch.manual_seed(0)
    net = Denoiser(None, K, 3, (8, 8), (1, 1), None, 16, action_dim=3)
    for name, p in net.named_parameters():
        if name.endswith(("conv_out.weight", "conv2.weight")):
            torch.nn.init.normal_(p, std=0.1)
    ctx, _, x = batch()
    a = torch.zeros(3, K, 3)
    out0 = net(x, torch.zeros(3), ctx, a)
    out1 = net(x, torch.zeros(3), ctx, a + torch.tensor([0.0, 1.0, 0.0]))  # steer
    assert out0.shape == x.shape and (out0 - out1).abs().max() > 1e-4
    with pytest.raises(ValueError, match="exactly one"):
        Denoiser(5, K, action_dim=3)


def test_classifier_free_guidance_by_hand():
    net = tiny_net(cfg_drop=0.1).eval()
    ctx, act, x = batch()
    c = torch.full((3,), 0.2)
    cond = net(x, c, ctx, act)
    uncond = net(x, c, torch.zeros_like(ctx), act)
    assert not torch.allclose(cond, uncond)
    net.guidance = 1.5  # GameNGen's weight: uncond + 1.5 (cond - uncond)
    assert torch.allclose(net(x, c, ctx, act), uncond + 1.5 * (cond - uncond), atol=1e-5)
    net.guidance = 1.0
    assert torch.equal(net(x, c, ctx, act), cond)
    # training: a dropped row sees zero frames; cfg_drop close to 1 drops (almost) every row
    drop_all = tiny_net(cfg_drop=0.999999).train()
    torch.manual_seed(0)
    assert torch.allclose(drop_all(x, c, ctx, act), drop_all(x, c, torch.zeros_like(ctx), act))
    plain = tiny_net().eval()
    plain.guidance = 1.5
    with pytest.raises(ValueError, match="cfg_drop"):
        plain(x, c, ctx, act)
    with pytest.raises(ValueError, match="cfg_drop"):
        tiny_net(cfg_drop=1.0)


def test_fp8_checkpoint_reloads_through_load_model(tmp_path):
    from wmkit.diffusion import load_model, train
    from wmkit.diffusion.rl import record_episodes
    from wmkit.precision import Fp8Linear

    clips = record_episodes("reach", 3, seed=0)
    cfg = DiffusionConfig(env="reach", size=16, context=K, channels=(8, 8), depths=(1, 1), cond_channels=16,
                          batch_size=4, train_steps=2, precision="fp8", cfg_drop=0.1, guidance=1.5,
                          run_dir=str(tmp_path))
    r = train(cfg, clips=clips, progress=False)
    again = load_model(tmp_path)
    assert isinstance(again.net.cond_proj[0], Fp8Linear) and again.net.guidance == 1.5
    ctx, act = torch.zeros(1, K, 3, 16, 16), torch.zeros(1, K, dtype=torch.long)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(again.sample(ctx, act, 2, generator=g1), r["model"].sample(ctx, act, 2, generator=g2))
    plain = load_model(tmp_path, precision="fp32")  # the same weights in plain layers
    assert type(plain.net.cond_proj[0]) is torch.nn.Linear
    assert torch.equal(plain.net.cond_proj[0].weight, again.net.cond_proj[0].weight)


def test_changed_pixel_psnr_of_a_copying_model_equals_the_copy_baseline():
    from wmkit.diffusion import Recipe
    from wmkit.diffusion.evaluate import next_frame_quality

    class CopyLast(Recipe):  # a "model" that repeats the last context frame
        def sample(self, context, actions, steps, generator=None, **kw):
            return context[:, -1]

    ctx, act, _ = batch(B=4)
    frames = torch.cat([ctx, ctx[:, -1:] * 0.5], 1)  # the next frame: the last one, dimmed
    q = next_frame_quality(CopyLast(tiny_net()), {"frames": frames, "actions": torch.cat([act, act[:, :1]], 1)},
                           steps_list=(1,))
    assert q["psnr"][0] == pytest.approx(q["copy_last_psnr"]) and q["changed_psnr"][0] == pytest.approx(
        q["copy_last_changed_psnr"])
    assert q["changed_psnr"][0] < q["psnr"][0] and 0 < q["changed_fraction"] < 1  # the error sits on the changes
