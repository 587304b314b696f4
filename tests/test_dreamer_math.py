"""Known answers for DreamerV3's math functions (values computed by hand from the formulas)."""

import math

import numpy as np
import pytest
import torch

from wmkit.dreamer import ReturnNormalizer, lambda_return, symexp, symlog, twohot, twohot_bins
from wmkit.dreamer.optim import LaProp, clip_agc_

E = math.e


def test_symlog_symexp_known_values():
    x = torch.tensor([0.0, E - 1, -(E - 1), E**2 - 1])
    assert torch.allclose(symlog(x), torch.tensor([0.0, 1.0, -1.0, 2.0]))
    assert torch.allclose(symexp(torch.tensor([0.0, 1.0, -1.0, 2.0])), x)
    y = torch.tensor([-1e4, -0.01, 0.0, 0.01, 1e4])
    assert torch.allclose(symexp(symlog(y)), y, rtol=1e-5)
    # close to identity near 0, logarithmic far away: 10,000 becomes ~9.21
    assert abs(float(symlog(torch.tensor(1e4))) - math.log(10001)) < 1e-5


def test_twohot_known_weights():
    bins = torch.tensor([0.0, 1.0, 2.0])
    y = torch.tensor([0.25, 1.0, 1.5, -5.0, 7.0, 2.0])
    expected = torch.tensor([[0.75, 0.25, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5],
                             [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(twohot(y, bins), expected)
    assert torch.isnan(twohot(torch.tensor([float("nan")]), bins)).any()   # NaN is not hidden


def test_twohot_mean_recovers_value_and_shapes():
    bins = twohot_bins("2023")
    y = torch.linspace(-19.9, 19.9, 37).reshape(37, 1).expand(37, 2)   # (37, 2)
    w = twohot(y, bins)
    assert w.shape == (37, 2, 255)
    assert torch.allclose(w.sum(-1), torch.ones(37, 2))
    assert torch.allclose((w * bins).sum(-1), y, atol=1e-5)
    assert (w > 0).sum(-1).max() <= 2


def test_bins_of_both_recipes():
    b23 = twohot_bins("2023")
    assert b23.shape == (255,) and float(b23[0]) == -20 and float(b23[-1]) == 20 and float(b23[127]) == 0
    assert abs(float(b23[1] - b23[0]) - 40 / 254) < 1e-6
    b25 = twohot_bins("2025")
    assert b25.shape == (255,) and float(b25[127]) == 0.0
    assert torch.all(b25[1:] > b25[:-1])
    assert torch.allclose(b25, -b25.flip(0))                          # exactly symmetric
    assert abs(float(b25[-1]) / math.expm1(20) - 1) < 1e-6           # raw space: up to ~4.85e8
    assert torch.allclose(b25, symexp(b23), rtol=1e-4)
    with pytest.raises(ValueError, match="recipe"):
        twohot_bins("2024")


def test_lambda_return_hand_computed():
    # H = 2; disc = 0.5, lam = 0.5. R[2] = val[2] = 4
    # R[1] = 2 + 0.5 * 1 * (0.5 * 4 + 0.5 * 4) = 4
    # R[0] = 1 + 0.5 * 1 * (0.5 * 3 + 0.5 * 4) = 2.75
    rew = torch.tensor([99.0, 1.0, 2.0])
    val = torch.tensor([99.0, 3.0, 4.0])
    con = torch.tensor([0.0, 1.0, 1.0])            # con[0] unused
    assert torch.allclose(lambda_return(rew, val, con, 0.5, 0.5), torch.tensor([2.75, 4.0]))
    # episode ends on arrival at step 2: R[1] = 2, R[0] = 1 + 0.5 * (0.5 * 3 + 0.5 * 2) = 2.25
    con = torch.tensor([1.0, 1.0, 0.0])
    assert torch.allclose(lambda_return(rew, val, con, 0.5, 0.5), torch.tensor([2.25, 2.0]))


def test_lambda_return_limits_td0_and_monte_carlo():
    rew = torch.tensor([0.0, 1.0, 2.0, 3.0])
    val = torch.tensor([0.0, 10.0, 20.0, 30.0])
    con = torch.ones(4)
    g = 0.9
    td0 = lambda_return(rew, val, con, g, 0.0)                  # R[t] = r[t+1] + g v[t+1]
    assert torch.allclose(td0, torch.tensor([1 + g * 10, 2 + g * 20, 3 + g * 30]))
    mc = lambda_return(rew, val, con, g, 1.0)                   # discounted sum + g^H v[H]
    assert abs(float(mc[0]) - (1 + g * 2 + g**2 * 3 + g**3 * 30)) < 1e-5
    batched = lambda_return(rew[:, None].repeat(1, 3), val[:, None].repeat(1, 3), con[:, None].repeat(1, 3),
                            g, 0.95)                            # time first, any trailing shape
    assert batched.shape == (3, 3)


def test_return_normalizer_known_values():
    returns = torch.arange(101.0)                    # P5 = 5, P95 = 95
    norm = ReturnNormalizer(rate=0.5)
    offset, scale = norm.update(returns)             # lo = 2.5, hi = 47.5
    assert float(offset) == pytest.approx(2.5) and float(scale) == pytest.approx(45.0)
    offset, scale = norm.update(returns)             # lo = 3.75, hi = 71.25
    assert float(offset) == pytest.approx(3.75) and float(scale) == pytest.approx(67.5)
    default = ReturnNormalizer()                      # rate 0.01 from zero: hi - lo = 0.9 < 1
    offset, scale = default.update(np.arange(101.0))
    assert float(offset) == pytest.approx(0.05) and float(scale) == 1.0
    small = ReturnNormalizer(rate=1.0)                # tiny returns are NOT scaled up (floor 1)
    assert float(small.update(torch.tensor([0.0, 0.01]))[1]) == 1.0


def test_laprop_and_agc_known_answers():
    # LaProp's first step moves each weight by exactly lr * sign(g) (debiased RMS and momentum)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = LaProp([p], lr=0.1, eps=1e-20, warmup=0)
    p.grad = torch.tensor([0.5, -3.0, 0.0001])
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.9, -1.9, 2.9]))
    # warm-up: step 1 of 10 uses lr / 10
    q = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LaProp([q], lr=0.1, warmup=10)
    q.grad = torch.tensor([2.0])
    opt.step()
    assert torch.allclose(q.detach(), torch.tensor([0.99]))
    # AGC: |w| = 2, |g| = 10, clip 0.3 -> |g| becomes 0.6; small gradients are untouched
    w = torch.nn.Parameter(torch.tensor([2.0, 0.0]))
    w.grad = torch.tensor([6.0, 8.0])
    v = torch.nn.Parameter(torch.tensor([1.0]))
    v.grad = torch.tensor([0.1])
    norm = clip_agc_([w, v], 0.3)
    assert torch.allclose(w.grad, torch.tensor([0.36, 0.48]))
    assert torch.allclose(v.grad, torch.tensor([0.1]))
    assert float(norm) == pytest.approx(math.sqrt(100 + 0.01))
