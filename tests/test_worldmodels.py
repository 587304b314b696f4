"""Stage 1 (World Models): known answers for V, M, C, the dream env and the episode format."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal

from wmkit.utils import count_parameters
from wmkit.worldmodels import (
    MDNRNN,
    Controller,
    ConvVAE,
    DreamVectorEnv,
    Episode,
    EpisodeFormatError,
    FrameDataset,
    LatentSequenceDataset,
    ShuffledFrames,
    brownian_actions,
    cma_search,
    collect_episode,
    dream_from_episode,
    dream_returns,
    frames_to_tensor,
    load_episode,
    make_dream_env,
    mdn_nll,
    mdn_sample,
    save_episode,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _episode(T=12, seed=0) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(obs=rng.integers(0, 256, (T + 1, 64, 64, 3), dtype=np.uint8),
                   actions=brownian_actions(T, rng), rewards=rng.normal(size=T).astype(np.float32),
                   terminated=np.eye(1, T, T - 1, dtype=bool)[0], truncated=np.zeros(T, bool), seed=seed)


# ------------------------------------------------------------------------------------ parameter counts
def test_parameter_counts_match_the_paper():
    assert count_parameters(ConvVAE()) == 4_348_547
    m = MDNRNN(reward_done_heads=False)
    assert count_parameters(m) == 423_392
    # TensorFlow's LSTM has one bias per gate; PyTorch has b_ih and b_hh: 4 * 256 extra numbers.
    assert count_parameters(m) - m.lstm.bias_hh_l0.numel() == 422_368
    assert count_parameters(MDNRNN()) == 423_392 + 2 * 257  # + reward and done heads (beyond the paper)
    assert Controller().num_params == 867 == count_parameters(Controller())


def test_vae_shapes_and_bad_input():
    vae = ConvVAE()
    x = torch.rand(2, 3, 64, 64)
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 32)
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        vae.encode(torch.rand(2, 3, 96, 96))
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        vae.encode(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))


def test_vae_kl_floor_is_free_bits():
    vae = ConvVAE(kl_tolerance=0.5)
    out = vae.loss(torch.rand(4, 3, 64, 64))
    # A fresh encoder has KL far below the floor of 0.5 * 32 = 16 nats: the loss uses the floor.
    assert float(out["kl"]) < 16
    assert float(out["loss"]) == pytest.approx(float(out["recon"]) + 16.0, rel=1e-6)


# ------------------------------------------------------------------------------------ mixture density
def test_mdn_nll_equals_torch_mixture_same_family():
    g = torch.Generator().manual_seed(0)
    logit = torch.randn(4, 7, 32, 5, generator=g) * 3
    mu = torch.randn(4, 7, 32, 5, generator=g)
    log_sigma = torch.randn(4, 7, 32, 5, generator=g)
    x = torch.randn(4, 7, 32, generator=g) * 2
    ref = -MixtureSameFamily(Categorical(logits=logit), Normal(mu, log_sigma.exp())).log_prob(x)
    torch.testing.assert_close(mdn_nll(logit, mu, log_sigma, x), ref, rtol=1e-5, atol=1e-5)


def test_mdn_nll_is_stable_far_in_the_tails():
    logit = torch.tensor([[0.0, 50.0, -50.0]])
    mu = torch.zeros(1, 3)
    log_sigma = torch.tensor([[-8.0, -8.0, 3.0]])
    x = torch.tensor([40.0])  # 40 / exp(-8) ~ 1e5 sigmas away for two components: naive exp underflows
    nll = mdn_nll(logit, mu, log_sigma, x)
    dens = Normal(mu, log_sigma.exp()).log_prob(x[:, None]).exp()
    naive = -torch.log((torch.softmax(logit, -1) * dens).sum(-1))
    assert torch.isfinite(nll).all() and not torch.isfinite(naive).all()
    # only the wide component (log weight -100 after log-softmax) explains x: its log-density wins
    expected = -(torch.log_softmax(logit, -1)[0, 2] + Normal(0.0, math.exp(3.0)).log_prob(x)[0])
    assert float(nll) == pytest.approx(float(expected), rel=1e-5)


def test_mdnrnn_fits_a_known_three_component_mixture():
    torch.manual_seed(0)
    weights, means, stds = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([-3.0, 0.0, 2.5]), torch.tensor(
        [0.3, 0.5, 0.2])
    true = MixtureSameFamily(Categorical(probs=weights), Normal(means, stds))
    m = MDNRNN(z_dim=1, action_dim=1, hidden=16, n_mix=3, reward_done_heads=False)
    opt = torch.optim.Adam(m.parameters(), lr=3e-2)
    for _ in range(300):
        z = torch.cat([torch.zeros(64, 1, 1), true.sample((64, 8, 1)).view(64, 8, 1)], 1)  # (B, 9, 1)
        loss = m.loss(z, torch.zeros(64, 8, 1))["nll"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = true.sample((20_000,))
    entropy = float(-true.log_prob(x).mean())  # the best achievable NLL
    z = torch.cat([torch.zeros(1, 1, 1), x[:8].view(1, 8, 1)], 1)
    out = m(z[:, :1], torch.zeros(1, 1, 1))
    fitted_nll = float(mdn_nll(out.logit_pi[0, 0, 0].expand(len(x), 3), out.mu[0, 0, 0].expand(len(x), 3),
                               out.log_sigma[0, 0, 0].expand(len(x), 3), x).mean())
    assert fitted_nll == pytest.approx(entropy, abs=0.05)
    order = out.mu[0, 0, 0].argsort()
    torch.testing.assert_close(out.mu[0, 0, 0][order], means, atol=0.15, rtol=0)
    torch.testing.assert_close(torch.softmax(out.logit_pi[0, 0, 0], -1)[order], weights, atol=0.05, rtol=0)


def test_temperature_follows_the_paper_and_concentrates():
    g = torch.Generator().manual_seed(0)
    n = 40_000
    logit = torch.log(torch.tensor([0.3, 0.7])).expand(n, 2)
    mu, log_sigma = torch.tensor([-2.0, 2.0]).expand(n, 2), torch.log(torch.tensor([0.5, 0.5])).expand(n, 2)
    s1 = mdn_sample(logit, mu, log_sigma, 1.0, g)
    assert float((s1 > 0).float().mean()) == pytest.approx(0.7, abs=0.01)     # pi at tau = 1
    s_half = mdn_sample(logit, mu, log_sigma, 0.5, g)
    p_half = 0.7**2 / (0.7**2 + 0.3**2)                                       # softmax(logit / 0.5)
    assert float((s_half > 0).float().mean()) == pytest.approx(p_half, abs=0.01)
    right = s_half[s_half > 0]
    assert float(right.std()) == pytest.approx(0.5 * math.sqrt(0.5), rel=0.03)  # sigma * sqrt(tau)
    s_cold = mdn_sample(logit, mu, log_sigma, 0.01, g)
    assert float((s_cold > 0).float().mean()) == 1.0
    assert float(s_cold.std()) < 0.06 < float(s1.std())
    torch.testing.assert_close(mdn_sample(logit, mu, log_sigma, 0.0), torch.full((n,), 2.0))
    with pytest.raises(ValueError, match="tau"):
        mdn_sample(logit, mu, log_sigma, -1.0)


# ------------------------------------------------------------------------------------ dreams
def test_dream_env_passes_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    torch.manual_seed(0)
    env = make_dream_env(MDNRNN(), ConvVAE(), initial_z=torch.randn(10, 32), render_mode="rgb_array",
                         max_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (288,) and obs.dtype == np.float32
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8


def test_dream_vector_env_is_batched_and_seeded():
    torch.manual_seed(0)
    m = MDNRNN()
    venv = DreamVectorEnv(m, num_envs=6, max_steps=4)
    acts = np.tile(np.array([0.0, 0.5, 0.0], np.float32), (6, 1))
    runs = []
    for _ in range(2):
        obs, _ = venv.reset(seed=3)
        traj = [obs]
        for _ in range(5):
            obs, r, term, trunc, _ = venv.step(acts)
            assert obs.shape == (6, 288) and r.shape == term.shape == trunc.shape == (6,)
            traj.append(obs)
        runs.append(np.stack(traj))
    np.testing.assert_array_equal(runs[0], runs[1])
    with pytest.raises(ValueError, match=r"\(6, 3\)"):
        venv.step(acts[:2])


def test_dream_returns_use_common_random_numbers():
    torch.manual_seed(0)
    m = MDNRNN()
    p = np.random.default_rng(0).normal(size=(1, 867)) * 0.1
    r = dream_returns(np.repeat(p, 3, 0), m, None, rollouts=4, horizon=10, seed=5)
    assert r.shape == (3,) and np.allclose(r, r[0])  # same controller, same dreams -> same fitness
    np.testing.assert_allclose(dream_returns(p, m, None, 4, 10, seed=5), r[:1], rtol=1e-5)


def test_cold_dream_is_deterministic_and_hot_dreams_differ():
    torch.manual_seed(0)
    vae, m, ep = ConvVAE(), MDNRNN(), _episode(T=30)
    cold = [dream_from_episode(vae, m, ep, 2, 10, 4, tau=0.0, seed=s)["dream"] for s in (0, 1)]
    hot = [dream_from_episode(vae, m, ep, 2, 10, 4, tau=1.0, seed=s)["dream"] for s in (0, 1)]
    np.testing.assert_array_equal(cold[0], cold[1])
    assert not np.array_equal(hot[0], hot[1])
    d = dream_from_episode(vae, m, ep, 2, 10, 4, tau=1.0, seed=0)
    assert d["real"].shape == d["dream"].shape == (10, 64, 64, 3) and d["dream_reward"].shape == (10,)
    np.testing.assert_array_equal(d["real"], ep.obs[6:16])
    with pytest.raises(ValueError, match="too long"):
        dream_from_episode(vae, m, ep, 20, 10, 4)


# ------------------------------------------------------------------------------------ controller
def test_controller_bounds_flat_roundtrip_and_batched_act():
    c = Controller()
    obs = torch.randn(5, 288) * 10
    a = c(obs)
    assert (a[:, 0].abs() <= 1).all() and ((a[:, 1:] >= 0) & (a[:, 1:] <= 1)).all()
    flat = np.random.default_rng(0).normal(size=867)
    c.set_flat(flat)
    np.testing.assert_allclose(c.get_flat(), flat, rtol=1e-6)
    batched = Controller.batched_act(torch.tensor(flat, dtype=torch.float32)[None], obs[None])[0]
    torch.testing.assert_close(batched, c(obs))
    with pytest.raises(ValueError, match="867"):
        c.set_flat(np.zeros(10))


def test_cma_es_improves_a_simple_objective():
    """CMA-ES (the `cma` package) through the controller: learn to steer towards the sign of z_0."""
    obs = torch.randn(64, 288, generator=torch.Generator().manual_seed(0))
    target = torch.stack([torch.tanh(2 * obs[:, 0]), torch.full((64,), 0.8), torch.zeros(64)], -1)

    def fitness(pop, gen):
        acts = Controller.batched_act(torch.tensor(pop, dtype=torch.float32), obs.expand(len(pop), 64, 288))
        return -(acts - target).pow(2).mean(dim=(1, 2)).numpy()

    mean_x, history, _ = cma_search(fitness, 867, popsize=12, generations=40, sigma0=0.05, seed=0,
                                    progress=False)
    first = history[0]["mean"]
    deployed = float(fitness(mean_x[None], 0)[0])  # cma_search returns the distribution mean
    assert deployed > first + 0.5 * abs(first), (first, deployed)


# ------------------------------------------------------------------------------------ data
def test_brownian_actions_are_smooth_and_in_bounds():
    a = brownian_actions(500, np.random.default_rng(0), dt=0.01)
    assert a.shape == (500, 3) and a.dtype == np.float32
    assert (a[:, 0] >= -1).all() and (a >= 0)[:, 1:].all() and (a <= 1).all()
    steps = np.abs(np.diff(a, axis=0))
    assert steps.max() < 0.5 and steps.mean() < 0.1  # smooth, unlike i.i.d. uniform actions (mean ~0.4)


def test_episode_roundtrip(tmp_path):
    ep = _episode()
    path = save_episode(tmp_path / "episode_000000.npz", ep)
    back = load_episode(path)
    for k in ("obs", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ep, k))
    assert back.seed == ep.seed and back.obs.dtype == np.uint8 and len(back) == 12
    ds = FrameDataset([path])
    assert len(ds) == 13 and ds[0].shape == (3, 64, 64) and float(ds[0].max()) <= 1.0
    mus = [np.random.default_rng(0).normal(size=(13, 32)).astype(np.float32)]
    seqs = LatentSequenceDataset(mus, [np.zeros_like(mus[0])], [ep], seq_len=5, sample=False)
    item = seqs[1]
    assert len(seqs) == 2 and item["z"].shape == (6, 32) and item["actions"].shape == (5, 3)
    np.testing.assert_allclose(item["z"].numpy(), mus[0][5:11])


def test_shuffled_frames_visit_every_frame_once_per_epoch(tmp_path):
    paths = [save_episode(tmp_path / f"episode_{i:06d}.npz", _episode(T=9 + i, seed=i)) for i in range(3)]
    ds = ShuffledFrames(paths, batch_size=4, chunk_episodes=2, seed=0, drop_last=False)
    seen = torch.cat(list(ds))                                   # (33, 3, 64, 64)
    every = torch.cat([frames_to_tensor(load_episode(p).obs) for p in paths])
    assert seen.shape == every.shape == (33, 3, 64, 64)
    key = lambda x: sorted(x.flatten(1)[:, :16].numpy().round(4).tolist())  # noqa: E731
    assert key(seen) == key(every)
    ds.set_epoch(1)
    assert not torch.equal(torch.cat(list(ds)), seen)            # a new order every epoch


def test_corrupt_or_truncated_episode_names_the_file(tmp_path):
    path = save_episode(tmp_path / "episode_000001.npz", _episode())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError, match="episode_000001.npz"):
        load_episode(path)
    bad = tmp_path / "episode_000002.npz"
    np.savez(bad, obs=np.zeros((3, 64, 64, 3), np.uint8))
    with pytest.raises(EpisodeFormatError, match=r"episode_000002.npz: missing arrays"):
        load_episode(bad)


def test_wrong_frame_shape_or_dtype_raises(tmp_path):
    ep = _episode()
    wrong_dtype = Episode(**{**ep.__dict__, "obs": ep.obs.astype(np.float32) / 255})
    with pytest.raises(EpisodeFormatError, match="uint8"):
        save_episode(tmp_path / "a.npz", wrong_dtype)
    wrong_shape = Episode(**{**ep.__dict__, "obs": np.zeros((13, 96, 96, 3), np.uint8)})
    with pytest.raises(EpisodeFormatError, match=r"\(N, 64, 64, 3\)"):
        save_episode(tmp_path / "b.npz", wrong_shape)
    wrong_len = Episode(**{**ep.__dict__, "actions": ep.actions[:-1]})
    with pytest.raises(EpisodeFormatError, match="actions has shape"):
        save_episode(tmp_path / "c.npz", wrong_len)
    with pytest.raises(EpisodeFormatError, match="uint8"):
        frames_to_tensor(np.zeros((2, 64, 64, 3), np.float32))


def test_collect_episode_is_seeded_and_well_formed():
    a, b = collect_episode(7, max_steps=30), collect_episode(7, max_steps=30)
    np.testing.assert_array_equal(a.obs, b.obs)
    assert a.obs.shape == (31, 64, 64, 3) and a.obs.dtype == np.uint8 and a.seed == 7
    assert a.truncated[-1] and not a.terminated.any()


@pytest.mark.slow
def test_vae_loss_falls_on_real_carracing_frames():
    torch.manual_seed(0)
    frames = np.concatenate([collect_episode(s, max_steps=150).obs[50:] for s in (0, 1, 2)])  # ~300 frames
    assert len(frames) >= 300
    x = frames_to_tensor(frames)
    vae = ConvVAE()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    mses = []
    for _ in range(60):
        batch = x[torch.randint(0, len(x), (32,), generator=g)]
        out = vae.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        mses.append(float(out["mse"]))
    assert np.mean(mses[-10:]) < 0.5 * np.mean(mses[:5]), (mses[:5], mses[-10:])
    assert float(vae.loss(x[:64])["mse"]) < 0.02


def test_reward_head_fit_known_answers():
    from wmkit.worldmodels.bench import reward_head_fit
    from wmkit.worldmodels.data import Episode

    m = MDNRNN(z_dim=4, action_dim=3, hidden=8)
    T = 20
    rewards = np.where(np.isin(np.arange(T), [0, 3, 4, 11, 17]), 3.0, -0.1).astype(np.float32)  # tiles at random
    ep = Episode(obs=np.zeros((T + 1, 64, 64, 3), np.uint8), actions=np.zeros((T, 3), np.float32),
                 rewards=rewards, terminated=np.zeros(T, bool), truncated=np.zeros(T, bool), seed=0)
    z = [np.random.default_rng(0).normal(size=(T + 1, 4)).astype(np.float32)]
    with torch.no_grad():
        m.reward_head.weight.zero_()
        m.reward_head.bias.fill_(0.52)                     # predicts the constant itself: no better, no worse
    rows = reward_head_fit(m, z, [ep], constant=0.52, windows=(1, 5))
    assert [r["window"] for r in rows] == [1, 5] and [r["n"] for r in rows] == [T, T - 4]
    assert all(abs(r["r2"]) < 1e-5 for r in rows), rows
    with torch.no_grad():
        m.reward_head.bias.fill_(0.0)                      # by hand: MSE of 0 vs MSE of 0.52, per frame
    r1 = reward_head_fit(m, z, [ep], constant=0.52, windows=(1,))[0]
    expect = 1 - (rewards ** 2).mean() / ((0.52 - rewards) ** 2).mean()
    assert np.isclose(r1["r2"], expect, atol=1e-5)


def test_sample_next_on_a_subset_of_rows_draws_the_whole_batchs_noise():
    from wmkit.worldmodels.mdnrnn import MDNRNN

    torch.manual_seed(0)
    m = MDNRNN(4, 1, 8, 2).eval()
    z, a = torch.randn(6, 1, 4), torch.randn(6, 1, 1)
    z[4], a[4] = z[1], a[1]  # rows 1 and 4 (= 1 mod 3) share their noise: same input, same sample
    with torch.no_grad():
        full = m.sample_next(m(z, a), 1.0, torch.Generator().manual_seed(3), noise_period=3)      # (6, 4)
        rows = torch.tensor([1, 4, 5])
        sub = m.sample_next(m(z[rows], a[rows]), 1.0, torch.Generator().manual_seed(3), noise_period=3, rows=rows)
    torch.testing.assert_close(sub, full[rows], rtol=0, atol=0)
    torch.testing.assert_close(full[1], full[4], rtol=0, atol=0)
    assert not torch.equal(full[0], full[3])  # different inputs
    with pytest.raises(ValueError, match="noise_period"):
        m.sample_next(m(z, a), 1.0, rows=rows)
