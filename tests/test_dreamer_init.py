"""Official initialisation and hidden-layer biases of DreamerV3 (wmkit/dreamer/init.py, ``hidden_bias``).

Known answers: the std and bound of every initialiser from its formula (v1 ``nets.Initializer``:
TN(-2, 2) sqrt(1/fan_avg) / 0.8796 and U(+-sqrt(3/fan_avg)); current ``nets.Initializer('trunc_normal',
'in')``: TN(-2, 2) 1.1368 sqrt(1/fan_in)), the output scales, and bias counts added up by hand.
"""

import math

import numpy as np
import pytest
import torch

from wmkit.dreamer.agent import Agent
from wmkit.dreamer.config import DreamerConfig
from wmkit.dreamer.init import TN_STD, draw_

IMG = {"image": ((64, 64, 3), np.uint8)}
VEC = {"vector": ((6,), np.float32)}


def agent(recipe: str, obs=IMG, discrete: bool = True, **kw) -> Agent:
    return Agent(obs, {"n": 4, "discrete": discrete}, DreamerConfig(recipe=recipe, size="tiny", **kw), seed=0)


def check_tn(w: torch.Tensor, std: float, tol: float = 0.03, share_tol: float = 0.02, reach: float = 0.97) -> None:
    """w is a truncated normal (cut at +-2 of the underlying normal) whose std is ``std``."""
    bound = 2 * std / TN_STD
    assert abs(w.std().item() / std - 1) < tol, (w.std().item(), std)
    assert w.abs().max().item() <= bound * (1 + 1e-6)
    assert w.abs().max().item() > reach * bound         # the tails reach the cut
    assert abs(w.mean().item()) < 4 * std / math.sqrt(w.numel())
    # the share within one underlying sigma (|x| < std / 0.8796) of a normal cut at 2: 0.6827 / 0.9545
    inside = (w.abs() < std / TN_STD).float().mean().item()
    assert abs(inside - 0.6827 / 0.9545) < share_tol, inside


def check_uniform(w: torch.Tensor, limit: float, tol: float = 0.03) -> None:
    assert w.abs().max().item() <= limit and w.abs().max().item() > 0.97 * limit
    assert abs(w.std().item() / (limit / math.sqrt(3)) - 1) < tol


def test_draw_formulas():
    torch.manual_seed(0)
    w = torch.empty(200, 300)
    draw_(w, "2025", fan_in=300, fan_out=200)
    check_tn(w, 1.1368 * TN_STD / math.sqrt(300))              # = 0.99995 / sqrt(fan_in)
    draw_(w, "2023", fan_in=300, fan_out=200)
    check_tn(w, math.sqrt(1 / 250))                            # sqrt(1 / fan_avg), fan_avg = 250
    draw_(w, "2023", fan_in=300, fan_out=200, dist="uniform")
    check_uniform(w, math.sqrt(3 / 250))
    draw_(w, "2025", fan_in=300, fan_out=200, scale=0.01)
    check_tn(w, 0.01 * 1.1368 * TN_STD / math.sqrt(300))
    draw_(w, "2023", 300, 200, "uniform", scale=0.0)
    assert torch.all(w == 0)
    with pytest.raises(ValueError, match="dist"):
        draw_(w, "2023", 300, 200, dist="xavier")
    with pytest.raises(ValueError, match="init"):
        DreamerConfig(init="xavier")


def test_official_init_2025():
    a = agent("2025")
    rssm, D, Hd, E = a.wm.rssm, a.cfg.deter, a.cfg.hidden, a.wm.encoder.out_dim
    c = 1.1368 * TN_STD
    check_tn(rssm.gru.weight, c / math.sqrt(D))                          # BlockLinear (1, 128, 384)
    check_tn(rssm.hid.weight, c / math.sqrt(D + 3 * Hd))                 # fan_in = whole input
    check_tn(a.wm.encoder.cnn[4].weight, c / math.sqrt(16 * 25))         # conv 16 -> 24, kernel 5
    check_tn(rssm.post_deter.weight, c / math.sqrt(D + E))               # one official Linear on [h, e]
    check_tn(rssm.post_embed.weight, c / math.sqrt(D + E))
    check_tn(a.actor.mlp.net[0].weight, c / math.sqrt(a.wm.feat_dim))
    check_tn(a.actor.out.weight, 0.01 * c / math.sqrt(a.cfg.units), 0.1, 0.1, 0.9)  # policy outscale 0.01 (256 w)
    check_tn(rssm.post_out.weight, c / math.sqrt(Hd))                    # logits: outscale 1
    assert torch.all(a.wm.reward.out.weight == 0) and torch.all(a.critic.out.weight == 0)  # outscale 0
    for m in (a.wm, a.actor, a.critic):
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                assert torch.all(p == 0), name
            if "norm" in name and name.endswith("weight"):
                assert torch.all(p == 1), name
    # zero heads predict exactly 0; the policy starts almost uniform
    feat = torch.randn(5, a.wm.feat_dim)
    assert torch.all(a.critic.pred(a.critic(feat)) == 0)
    logp, _ = a.actor(feat)
    assert (logp.exp() - 0.25).abs().max() < 0.02
    # continuous policy: mean and std layers both at outscale 0.01 -> mean ~ tanh(0) = 0, std ~ the
    # std head's start: (max - min) sigmoid(0 + 2) + min = 0.9 * 0.8808 + 0.1
    c = agent("2025", obs=VEC, discrete=False)
    mean, std = c.actor(torch.randn(5, c.wm.feat_dim))
    assert mean.abs().max() < 0.05 and (std - (0.9 * 0.8807971 + 0.1)).abs().max() < 0.01


def test_official_init_2023():
    a = agent("2023")
    rssm, D, Hd = a.wm.rssm, a.cfg.deter, a.cfg.hidden
    SK = a.cfg.stoch * a.cfg.classes
    check_tn(rssm.gru.weight, math.sqrt(2 / ((D + Hd) + 3 * D)))          # v1 gru Linear on [h, x]
    check_tn(rssm.in_stoch.weight, math.sqrt(2 / ((SK + 4) + Hd)))        # v1 img_in on [z, a]
    check_tn(a.actor.mlp.net[0].weight, math.sqrt(2 / (a.wm.feat_dim + a.cfg.units)))
    check_tn(a.wm.encoder.cnn[3].weight, math.sqrt(2 / (8 * 16 + 16 * 16)))   # conv 8 -> 16, kernel 4
    # layers v1 builds without the config's winit: uniform fan-avg
    check_uniform(rssm.post_out.weight, math.sqrt(3 / ((Hd + SK) / 2)))
    check_uniform(a.actor.out.weight, math.sqrt(3 / ((a.cfg.units + 4) / 2)), tol=0.1)   # 256 weights
    check_uniform(a.wm.decoder.img_in.weight, math.sqrt(3 / ((a.wm.feat_dim + 8 * 8 * 16) / 2)))
    assert torch.all(a.wm.reward.out.weight == 0) and torch.all(a.critic.out.weight == 0)
    assert torch.all(rssm.initial_deter == 0)
    # continuous actor: mean and std drawn as two official (units -> n) layers
    c = agent("2023", obs=VEC, discrete=False)
    w = c.actor.out.weight
    check_uniform(w[:4], math.sqrt(3 / ((c.cfg.units + 4) / 2)), tol=0.1)
    check_uniform(w[4:], math.sqrt(3 / ((c.cfg.units + 4) / 2)), tol=0.1)


def test_torch_init_switch_keeps_pytorch_defaults():
    a = agent("2023", init="torch")
    w = a.actor.mlp.net[0].weight              # Kaiming-uniform: U(+-1/sqrt(fan_in))
    check_uniform(w, 1 / math.sqrt(a.wm.feat_dim))
    assert torch.all(a.wm.reward.out.weight == 0)   # the two-hot heads start at 0 either way


def test_hidden_bias_switch_counts():
    n = lambda a: a.param_counts()["total"]  # noqa: E731
    # 2023 (v1: no bias before a norm) -> with biases: every layer that a norm follows gains its width.
    # tiny, image, 4 actions: encoder convs 8+16+32+64, RSSM in [z, a] 64 + GRU 3*128 + posterior 64 +
    # prior 64, decoder transposed convs 32+16+8, MLP layers of reward, continue, actor, critic 4*64
    assert n(agent("2023", hidden_bias=True)) - n(agent("2023")) == 120 + 64 + 384 + 64 + 64 + 56 + 256
    # 2025 (current code: a bias everywhere) -> without: encoder convs 16+24+32+32, RSSM inputs 3*64 +
    # block hidden 128 + posterior 64 + 2 prior layers 2*64, decoder sp0 512 + sp1 2*64 + 512 + convs
    # 32+24+16, reward and continue (1 layer) 2*64, actor and critic (1 layer at tiny) 2*64
    assert n(agent("2025")) - n(agent("2025", hidden_bias=False)) == \
        104 + 192 + 128 + 64 + 128 + 512 + 128 + 512 + 72 + 128 + 128
    assert agent("2025").wm.rssm.post_deter.bias is not None
    assert agent("2023").wm.rssm.post_deter.bias is None


def test_levers_bench_and_layouts_agree(capsys):
    """``wmkit bench dreamer --levers`` reports every lever; NCHW and channels-last give the same gradients."""
    import json
    from types import SimpleNamespace

    from wmkit.dreamer.bench import image_path, levers, synthetic_batch

    a = agent("2023")
    img = synthetic_batch(2, 3, 4, "cpu")["image"]
    grads = []
    for nchw in (False, True):
        a.wm.zero_grad()
        torch.manual_seed(0)
        image_path(a.wm, img, nchw=nchw)
        grads.append([p.grad.clone() for p in a.wm.encoder.cnn.parameters()])
    for g0, g1 in zip(*grads):
        assert torch.allclose(g0, g1, rtol=1e-4, atol=1e-6)
    args = SimpleNamespace(batch=2, length=4, recipe="2023", obs="image", compile=False, warmup=0, repeat=1)
    levers(args, "tiny", IMG, torch.device("cpu"))
    rows = {r["metric"]: r for r in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    for k in ("update_ms", "fused_adam_update_ms", "forloop_adam_update_ms", "image_path_ms", "image_path_nchw_ms",
              "observe_ms", "imagine_ms", "policy_no_grad_ms", "policy_inference_mode_ms"):
        assert rows[f"lever_{k}"]["value"] > 0, k
    for k in ("share_image_path", "share_observe", "share_imagine", "speedup_channels_last", "speedup_fused_adam"):
        assert rows[f"lever_{k}"]["value"] > 0, k
