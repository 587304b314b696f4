"""Stage 1 fidelity to the paper's code (hardmaru/WorldModelsExperiments): each test fails on the old code.

* V's free-bits floor is per frame, before the batch mean (gradient routing by autograd).
* CMA-ES deploys the distribution mean (``es.result.xfavorite``), with estool's weight decay.
* The paper's data policy: a random-Cauchy-weight V+M+C agent per episode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wmkit.worldmodels import ConvVAE, cma_search, random_weight_policy
from wmkit.worldmodels.data import collect

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_kl_floor_is_per_frame_by_gradient(monkeypatch):
    """Frame 0 has KL 0.16 nats (below the 16-nat floor), frame 1 has 1600: only frame 1 gets KL gradient.

    With the floor on the batch mean (800 > 16), frame 0 would get d/dmu (0.5 mu^2 / B) = mu / 2 = 0.05.
    """
    vae = ConvVAE(z_dim=32, kl_tolerance=0.5)
    mu = torch.stack([torch.full((32,), 0.1), torch.full((32,), 10.0)]).requires_grad_()  # (2, 32)
    logvar = torch.zeros(2, 32, requires_grad=True)
    monkeypatch.setattr(vae, "encode", lambda x: (mu, logvar))
    out = vae.loss(torch.rand(2, 3, 64, 64))
    # known values: KL = 0.5 * sum(mu^2) per frame -> 0.16 and 1600; floored 16 and 1600; mean 808
    assert float(out["kl"].detach()) == pytest.approx((0.16 + 1600) / 2, rel=1e-5)
    assert float(out["kl_loss"].detach()) == pytest.approx((16 + 1600) / 2, rel=1e-5)
    g_mu, g_lv = torch.autograd.grad(out["kl_loss"], [mu, logvar])
    assert torch.equal(g_mu[0], torch.zeros(32)) and torch.equal(g_lv[0], torch.zeros(32))
    torch.testing.assert_close(g_mu[1], torch.full((32,), 10.0 / 2))       # mu / B
    torch.testing.assert_close(g_lv[1], torch.zeros(32))                   # -0.5 (1 - e^0) / B = 0


def test_cma_search_returns_the_distribution_mean_not_the_luckiest_candidate():
    """Noisy fitness: the best single candidate is mostly luck; the paper's code deploys es.result.xfavorite."""
    rng = np.random.default_rng(0)
    seen, noisy = [], []
    true = lambda pop: -np.sum((pop - 1.0) ** 2, axis=1)  # noqa: E731

    def fitness(pop, gen):
        f = true(pop) + rng.normal(0, 2.0, len(pop))
        seen.append(pop.copy())
        noisy.append(f)
        return f

    x, history, es = cma_search(fitness, 5, popsize=10, generations=60, sigma0=0.3, seed=0, progress=False,
                                weight_decay=0.0)
    np.testing.assert_array_equal(x, es.result.xfavorite)
    pop, f = np.concatenate(seen), np.concatenate(noisy)
    assert not any(np.array_equal(x, p) for p in pop)  # the mean is never itself a candidate
    assert history[-1]["best_so_far"] == pytest.approx(f.max())
    luckiest = pop[f.argmax()]
    assert true(x[None])[0] > true(luckiest[None])[0] + 0.5, (true(x[None]), true(luckiest[None]))


def test_cma_weight_decay_is_estools_l2_penalty():
    """fitness 0 everywhere: CMA-ES ranks only -wd * mean(x^2), so the mean shrinks from x0 = 1 to ~0;
    wd = -0.01 (estool's CMAES sign) makes the weights grow instead."""
    flat = lambda pop, gen: np.zeros(len(pop))  # noqa: E731
    shrink, _, _ = cma_search(flat, 4, 8, 40, sigma0=0.2, seed=0, x0=np.ones(4), progress=False,
                              weight_decay=0.01)
    grow, _, _ = cma_search(flat, 4, 8, 40, sigma0=0.2, seed=0, x0=np.ones(4), progress=False,
                            weight_decay=-0.01)
    assert np.abs(shrink).max() < 0.3 and np.abs(grow).min() > 1.5, (shrink, grow)


def test_random_weight_policy_is_the_papers_random_agent():
    f = np.full((64, 64, 3), 128, np.uint8)
    run = [random_weight_policy(7) for _ in range(2)]
    acts = [np.stack([p(f, t) for t in range(20)]) for p in run]
    np.testing.assert_array_equal(acts[0], acts[1])                 # deterministic given the seed
    assert acts[0].shape == (20, 3) and acts[0].dtype == np.float32
    agents = [random_weight_policy(s) for s in range(12)]
    per_agent = np.stack([np.stack([p(f, t) for t in range(5)]) for p in agents])  # (12, 5, 3)
    allacts = per_agent.reshape(-1, 3)
    low, high = np.array([-1, 0, 0]), np.array([1, 1, 1])
    assert np.isfinite(allacts).all() and (allacts >= low).all() and (allacts <= high).all()
    # gas = (tanh + 1) / 2 is centred on 0.5 across agents; brake = clip(tanh, 0, 1) is 0 about half the time
    assert abs(np.median(allacts[:, 1]) - 0.5) < 0.15
    assert 0.2 < np.mean(allacts[:, 2] == 0) < 0.8
    # agents differ (a fresh scale s ~ U(0, 0.01) and fresh Cauchy weights per episode), and an agent's
    # actions vary step to step (z is N(0, I) noise from the near-zero random V)
    assert np.std(per_agent[:, 0, 0]) > 1e-4 and np.std(per_agent[:, :, 0], axis=1).max() > 1e-4


def test_collect_rejects_an_unknown_policy(tmp_path):
    with pytest.raises(ValueError, match="policy must be one of"):
        collect(tmp_path, 1, 10, policy="uniform")
