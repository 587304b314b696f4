"""wmkit.dreamer.experiments: the numbers notebook 02c reads its conclusions from."""

from __future__ import annotations

import numpy as np
import pytest

from wmkit.dreamer.experiments import fit_heads, run_variant, run_variants


def test_mse_head_gradient_scales_with_the_reward_and_two_hot_does_not(one_thread):
    out = fit_heads(scales=(1.0, 1000.0), steps=3)
    # At step 0 the MSE head outputs exactly 0, so d/dθ ½(0 - y)² = -y dθ: the norm is linear in the scale.
    mse = out[("mse", 1000.0)]["grad_norm"][0] / out[("mse", 1.0)]["grad_norm"][0]
    assert mse == pytest.approx(1000.0, rel=1e-4)
    # The two-hot cross-entropy is bounded whatever the target: the same order at both scales.
    th = out[("two-hot", 1000.0)]["grad_norm"][0] / out[("two-hot", 1.0)]["grad_norm"][0]
    assert 0.1 < th < 10
    # Before any step the zero-initialised output layers make both heads predict ~0: relative error ~1
    # (the definition's "no better than predicting zero").
    assert out[("two-hot", 1.0)]["rel_err"][0] == pytest.approx(1, abs=0.02)
    assert out[("mse", 1.0)]["rel_err"][0] == pytest.approx(1)


def test_run_variant_reports_scale_free_diagnostics(tmp_path, one_thread):
    r = run_variant("reach-vector", 60, run_dir=str(tmp_path / "x1000"), reward_scale=1000.0,
                    batch_size=2, batch_length=8, train_ratio=16, prefill=30, eval_episodes=1, random_episodes=1)
    for key in ("reward_rel_err", "obs_rel_err", "wm_grad_norm", "return_scale", "entropy_vs_advantage"):
        assert np.isfinite(r[key]), key
    assert 0.8 < r["reward_rel_err"] < 1.2     # barely trained: about as good as predicting 0
    assert r["random"] > 1000                   # the random baseline is measured at the same reward scale
    assert r["entropy_vs_advantage"] == pytest.approx(3e-4 / r["advantage_abs"])
    a = run_variant("reach-vector", 60, run_dir=str(tmp_path / "abl"), reward_scale=1000.0,
                    ablation="no_symlog_twohot", batch_size=2, batch_length=8, train_ratio=16, prefill=30,
                    eval_episodes=1, random_episodes=1)
    assert a["wm_grad_norm"] > 100 * r["wm_grad_norm"]   # the raw squared reward error dominates


def test_run_variants_in_two_processes_gives_the_same_numbers(tmp_path, one_thread):
    small = dict(batch_size=2, batch_length=8, train_ratio=16, prefill=20, eval_episodes=1, random_episodes=1)
    specs = [dict(env="reach-vector", steps=40, reward_scale=s, **small) for s in (1.0, 1000.0)]
    here = run_variants([dict(kw, run_dir=str(tmp_path / f"a{i}")) for i, kw in enumerate(specs)], workers=1)
    there = run_variants([dict(kw, run_dir=str(tmp_path / f"b{i}")) for i, kw in enumerate(specs)], workers=2)
    for a, b, kw in zip(here, there, specs):
        assert "trainer" not in a and "trainer" not in b
        assert a["scale"] == b["scale"] == kw["reward_scale"]          # results come back in the order of specs
        assert a["dreamer"] == b["dreamer"] and a["wm_grad_norm"] == b["wm_grad_norm"]
        assert [r.get("train/wm_loss") for r in a["history"]] == [r.get("train/wm_loss") for r in b["history"]]
        assert any("train/wm_loss" in r for r in a["history"])
    with pytest.raises(ValueError, match="workers"):
        run_variants(specs, workers=0)


def test_human_normalised_scores_known_answers():
    from wmkit.dreamer import ATARI100K_GAMES, human_normalized, human_normalized_mean

    assert len(ATARI100K_GAMES) == 26
    assert human_normalized("atari100k:pong", 14.6) == pytest.approx(1.0)
    assert human_normalized("pong", -20.7) == pytest.approx(0.0)
    assert human_normalized("breakout", 1.7 + (30.5 - 1.7) / 2) == pytest.approx(0.5)
    assert human_normalized_mean({"pong": 14.6, "boxing": 0.1}) == pytest.approx(0.5)
    # the game must be one of the 26 that have reference scores, and all 26 must exist in ale-py
    with pytest.raises(ValueError, match="montezuma_revenge"):
        human_normalized("montezuma_revenge", 0.0)
    import ale_py.roms

    roms = {p.stem for p in __import__("pathlib").Path(ale_py.roms.__file__).parent.glob("*.bin")}
    assert set(ATARI100K_GAMES) <= roms, set(ATARI100K_GAMES) - roms
