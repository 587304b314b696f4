"""The Genie pipeline end to end on tiny synthetic episodes: trainers, checkpoints, evaluation, play."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wmkit.genie import train as G
from wmkit.genie.play import GeniePlayer, action_effects, effect_table, lam_effect_table, playthrough

pytestmark = pytest.mark.slow  # trains three tiny models (~15 s on 2 cores)


def _episodes(n, T=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, (16, 16, 3))
        frames = np.stack([np.roll(base, t, axis=1) for t in range(T)]).astype(np.uint8)  # scrolls right
        out.append({"frames": frames, "actions": np.full(T, 2, np.int64), "episode": f"e{i}"})
    return out


def _cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path), crop="none", episodes=3, episode_steps=12, frame_size=16, device="cpu",
                lam_size=0, tok_patch=4, tok_dim=16, tok_depth=1, tok_clip_len=2, tok_steps=3, tok_batch=2,
                lam_patch=8, lam_dim=16,
                lam_depth=1, lam_clip_len=2, lam_steps=3, lam_batch=2, lam_var_weight=0.0, lam_move_fraction=0.0,
                dyn_dim=16, dyn_depth=1,
                dyn_clip_len=3, dyn_steps=3, dyn_batch=2, heads=2, maskgit_steps=3, log_every=1)
    base.update(kw)
    return G.GenieConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("genie")
    cfg = _cfg(tmp)
    data = {"train": _episodes(2), "heldout": _episodes(1, seed=1)}
    tok, tok_hist = G.train_tokenizer(cfg, data)
    lam, lam_hist = G.train_lam(cfg, data)
    tok_data = {k: G.tokenize_episodes(tok, lam, v) for k, v in data.items()}
    tok_data["vocab"] = tok.vocab
    dyn, dyn_hist = G.train_dynamics(cfg, tok_data)
    return dict(cfg=cfg, data=data, tok=tok, lam=lam, dyn=dyn, tok_data=tok_data,
                hist=(tok_hist, lam_hist, dyn_hist))


def test_trainers_log_every_step_and_checkpoint(trained):
    for h, keys in zip(trained["hist"], (("psnr", "codes_live"), ("codes_perplexity", "usage/0"), ("acc",))):
        assert [r["step"] for r in h] == [0, 1, 2] and all(k in h[0] for k in keys)
    tok, lam, dyn, cfg = G.load_models(trained["cfg"].run_dir, "cpu")
    x = torch.rand(1, 2, 3, 16, 16)
    assert torch.equal(tok.encode(x), trained["tok"].encode(x))  # the checkpoint restores the same weights
    assert cfg.tok_dim == 16 and dyn.cfg.maskgit_steps == 3


def test_training_is_deterministic_with_a_seed(tmp_path, trained):
    tok2, _ = G.train_tokenizer(_cfg(tmp_path), trained["data"])
    for a, b in zip(tok2.state_dict().values(), trained["tok"].state_dict().values()):
        assert torch.equal(a, b)


def test_episode_helpers_shapes(trained):
    e = trained["data"]["heldout"][0]
    toks = G.encode_episode(trained["tok"], e["frames"])
    assert toks.shape == (12, 16)
    assert G.decode_tokens(trained["tok"], toks).shape == (12, 16, 16, 3)
    assert G.infer_episode_actions(trained["lam"], e["frames"]).shape == (11,)
    t = trained["tok_data"]["heldout"][0]
    assert t["latent"].shape == (12,) and t["tokens"].shape == (12, 16)
    # the dynamics model trains on the LAM's own inferred codes, transition t -> t+1 at index t
    assert np.array_equal(t["latent"][:-1], G.infer_episode_actions(trained["lam"], e["frames"]).numpy())


def test_evaluations_return_what_the_book_plots(trained):
    e_tok = G.eval_tokenizer(trained["tok"], trained["data"]["heldout"])
    assert 0 < e_tok["psnr"] < 60 and e_tok["codes_live"] >= 1
    e_lam = G.eval_lam(trained["lam"], trained["data"]["heldout"])
    assert e_lam["confusion"].shape == (8, 17) and e_lam["confusion"].sum() == 11
    assert e_lam["confusion"][:, 2].sum() == 11  # every true action of the synthetic episode is 2
    e_dyn = G.eval_dynamics(trained["dyn"], trained["tok"], trained["tok_data"]["heldout"], horizon=2,
                            starts_per_episode=2)
    assert e_dyn["psnr_inferred"].shape == (2,) and e_dyn["samples"] == 2
    assert e_dyn["delta_psnr"] == pytest.approx(e_dyn["psnr_inferred"][-1] - e_dyn["psnr_random"][-1])


def test_player_and_playthrough(trained):
    p = GeniePlayer(trained["tok"], trained["dyn"], trained["data"]["heldout"][0]["frames"][:1])
    f = p.step(3)
    assert f.shape == (16, 16, 3) and f.dtype == np.uint8 and p.fps > 0
    with pytest.raises(ValueError, match=r"latent action id in \[0, 8\)"):
        p.step(8)
    pt = playthrough(trained["tok"], trained["lam"], trained["dyn"], trained["data"]["heldout"][0], frames=4)
    assert pt["real"].shape == pt["generated"].shape == (5, 16, 16, 3)
    assert np.array_equal(pt["generated"][0], pt["real"][0]) and np.isnan(pt["psnr"][0])
    eff = action_effects(trained["tok"], trained["dyn"], trained["data"]["heldout"][0]["frames"][:1])
    assert eff["frames"].shape == (8, 16, 16, 3) and np.allclose(np.diag(eff["pairwise_l1"]), 0)
    tab = effect_table(trained["tok"], trained["dyn"], trained["data"]["heldout"], frames=3)
    assert tab["frames"].shape == (3, 8, 16, 16, 3) and tab["context"].shape == (3, 16, 16, 3)
    assert tab["motion"].shape == (8, 5) and (tab["motion"].sum(1) == 3).all()  # one motion per (frame, action)
    assert np.allclose(np.diag(tab["pairwise"]), 0) and np.allclose(tab["pairwise"], tab["pairwise"].T)
    assert tab["resample"].shape == (8,) and (tab["resample"] >= 0).all()
    lt = lam_effect_table(trained["lam"], trained["data"]["heldout"], frames=5)
    assert lt["frames"].shape == (5, 8, 16, 16, 3) and (lt["motion"].sum(1) == 5).all()


def test_sample_windows_rejects_short_episodes():
    with pytest.raises(ValueError, match="no episode has 20 steps"):
        G.sample_windows(_episodes(1), 20, 2, np.random.default_rng(0))


def test_moving_windows_balance_gives_each_direction_an_equal_share():
    """An episode scrolling left 6 times and up twice (tile-aligned, one tile per step): uniform draws give the
    directions 6 : 2, balanced draws 1 : 1 (probabilities computed by hand)."""
    world = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    T = G.TILE
    pos = [(80, 80)]
    for dy, dx in [(0, -T)] * 6 + [(-T, 0)] * 2:  # the view (not the player) moves: observed_motion's own convention
        pos.append((pos[-1][0] + dy, pos[-1][1] + dx))
    frames = np.stack([world[r:r + 56, c:c + 56] for r, c in pos])
    m = G.observed_motion(frames)
    assert (m != 0).all() and len(set(m.tolist())) == 2
    moving, p = G.moving_windows([{"frames": frames}], 2)
    assert len(moving) == 8 and p is None
    moving, p = G.moving_windows([{"frames": frames}], 2, balance=True)
    share = {int(k): float(p[m == k].sum()) for k in set(m.tolist())}
    assert all(abs(v - 0.5) < 1e-12 for v in share.values())
    assert np.allclose(p[m == m[0]], 1 / 12) and np.allclose(p[m == m[-1]], 1 / 4)


def test_lam_beta_reaches_the_lams_quantizer():
    from wmkit.genie.train import GenieConfig, lam_config

    assert lam_config(GenieConfig()).beta == 0.25  # the VQ-VAE value, LAMConfig's default
    assert lam_config(GenieConfig(lam_beta=0.05)).beta == 0.05


def test_dyn_move_fraction_fills_its_share_with_scrolling_windows(tmp_path, monkeypatch):
    """dyn_move_fraction=0.5 at batch 4: two windows of every dynamics batch end with a scroll. An episode of 12
    static frames with one one-tile scroll (frames 6 -> 7) and tokens that number the frames: the last two windows of
    each batch are the one window of length 3 that ends with that transition (frames 5, 6, 7)."""
    world = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    frames = np.stack([world[:16, :16]] * 7 + [world[:16, G.TILE:G.TILE + 16]] * 5)  # (12, 16, 16, 3)
    assert G.observed_motion(frames).tolist() == [0] * 6 + [2] + [0] * 4
    ep = {"frames": frames, "tokens": np.repeat(np.arange(12)[:, None], 4, 1), "latent": np.zeros(12, np.int64)}
    seen = []
    orig = G.DynamicsModel.loss
    monkeypatch.setattr(G.DynamicsModel, "loss", lambda self, t, a, generator=None: (seen.append(t.clone()),
                                                                                   orig(self, t, a, generator))[1])
    cfg = _cfg(tmp_path, dyn_clip_len=3, dyn_batch=4, dyn_steps=3, dyn_move_fraction=0.5)
    G.train_dynamics(cfg, {"train": [ep], "vocab": 12})
    assert len(seen) == 3
    for t in seen:
        assert t[2:, :, 0].tolist() == [[5, 6, 7], [5, 6, 7]]
    with pytest.raises(ValueError, match="dyn_move_fraction"):
        G.train_dynamics(_cfg(tmp_path, dyn_move_fraction=1.5), {"train": [ep], "vocab": 12})
