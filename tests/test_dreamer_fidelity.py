"""DreamerV3 against the official code (danijar/dreamerv3: the 2023 v1 ``nets.py``/``behaviors.py`` and the
current ``rssm.py``/``agent.py``): block-GRU wiring, action clipping, the v1 continuous actor, the learned
initial state, sampling in evaluation, gradient routing checked by autograd, a hand-computed actor loss,
and the current recipe's switches. Tiny sizes: about a second each."""

import numpy as np
import pytest
import torch

from wmkit.dreamer import Agent, DreamerConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

IMG = {"image": ((64, 64, 3), np.uint8)}
VEC = {"vector": ((6,), np.float32)}


def agent_for(obs=VEC, discrete=True, recipe="2023", seed=0, **kw):
    cfg = DreamerConfig(recipe=recipe, size="tiny", **kw)
    return Agent(obs, {"n": 4, "discrete": discrete}, cfg, device="cpu", seed=seed)


def vec_batch(B=3, T=6, n=4, discrete=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    if discrete:
        act = torch.nn.functional.one_hot(torch.randint(0, n, (B, T), generator=g), n).float()
    else:
        act = torch.rand(B, T, n, generator=g) * 2 - 1
    b = {"action": act, "reward": torch.randn(B, T, generator=g),
         "is_first": torch.zeros(B, T, dtype=torch.bool), "is_terminal": torch.zeros(B, T, dtype=torch.bool),
         "vector": torch.randn(B, T, 6, generator=g)}
    b["is_first"][:, 0] = True
    b["action"][:, 0] = 0
    return b


def grad_sum(loss, params):
    gs = torch.autograd.grad(loss, list(params), allow_unused=True, retain_graph=True)
    return sum(0.0 if g is None else float(g.abs().sum()) for g in gs)


# ---- item 1: every GRU block sees the whole input ----------------------------------------------------
@pytest.mark.parametrize("recipe", ["2023", "2025"])
def test_every_gru_block_feels_the_stochastic_state_and_the_action(recipe):
    torch.manual_seed(0)
    cfg = DreamerConfig(recipe=recipe, size="tiny", deter=128, hidden=16, stoch=4, classes=4, blocks=8)
    from wmkit.dreamer.rssm import RSSM
    rssm = RSSM(cfg, embed_dim=8, act_dim=3)
    deter, stoch = torch.randn(64, 128), torch.randn(64, 16)
    act = torch.randn(64, 3)
    base = rssm.core(deter, stoch, rssm.action_input(act))
    for name, moved in (("z", rssm.core(deter, stoch + torch.randn_like(stoch), rssm.action_input(act))),
                        ("a", rssm.core(deter, stoch, rssm.action_input(act + torch.randn_like(act))))):
        per_block = (moved - base).detach().reshape(64, 8, 16).norm(dim=-1).mean(0)          # (8,)
        # before the fix (2023): blocks 1-7 moved ~100x less than block 0 (only the shared norm reached them)
        assert float(per_block.min() / per_block.max()) > 0.3, (name, per_block)


# ---- item 2: the action clip in observe AND imagine, both recipes ---------------------------------------
@pytest.mark.parametrize("recipe", ["2023", "2025"])
def test_actions_are_clipped_before_the_rssm_with_a_scaled_gradient(recipe):
    agent = agent_for(discrete=False, recipe=recipe)
    rssm = agent.wm.rssm
    a = torch.tensor([[3.0, -0.5, -2.0, 1.0]], requires_grad=True)
    clipped = torch.tensor([[1.0, -0.5, -1.0, 1.0]])
    assert torch.allclose(rssm.action_input(a), rssm.action_input(clipped))
    # a * sg(1 / max(1, |a|)): d/da = 1 / max(1, |a|) = (1/3, 1, 1/2, 1), checked through a linear probe
    w = rssm.in_act.weight if recipe == "2023" else rssm.in_act[0].weight                 # (Hd, A)
    (rssm.action_input(a) if recipe == "2023" else rssm.in_act[0](a * (1 / a.abs().clamp(min=1)).detach())
     ).sum().backward()
    assert torch.allclose(a.grad, w.sum(0) * torch.tensor([1 / 3, 1.0, 0.5, 1.0]), atol=1e-6)
    # imagination: an unbounded Gaussian action (tanh(mean) + std * noise) enters the dynamics clipped
    d, s = rssm.initial(1, "cpu")
    big = rssm.img_step(d, s, torch.tensor([[9.0, -9.0, 0.2, 4.0]]), rssm.noise((1,), None, "cpu"))[0]
    ok = rssm.img_step(d, s, torch.tensor([[1.0, -1.0, 0.2, 1.0]]), rssm.noise((1,), None, "cpu"))[0]
    assert torch.allclose(big, ok)


# ---- item 3: the v1 continuous actor ------------------------------------------------------------------
def test_actor_reads_a_stopped_state_in_imagination():
    agent = agent_for(discrete=False, recipe="2023")
    seen = []
    hook = agent.actor.register_forward_pre_hook(lambda m, args: seen.append(args[0].requires_grad))
    B, T = 2, 4
    start = (torch.randn(B * T, agent.cfg.deter), torch.randn(B * T, agent.wm.feat_dim - agent.cfg.deter))
    agent._actor_critic_loss(start, torch.ones(B * T))
    hook.remove()
    # H calls inside the rollout + 1 batched call for the log-probs: none sees a differentiable state
    assert len(seen) == agent.cfg.imag_horizon + 1 and not any(seen)


def test_v1_backprop_baseline_is_not_detached_hand_computed_gradient():
    agent = agent_for(discrete=False, recipe="2023", imag_horizon=2)
    with torch.no_grad():   # a critic that does not output zeros
        agent.critic.out.weight.normal_(0, 0.5)
    vals = []
    pred = agent.critic.pred
    agent.critic.pred = lambda logits: vals.append(pred(logits)) or vals[-1]
    N = 5
    start = (torch.randn(N, agent.cfg.deter), torch.randn(N, agent.wm.feat_dim - agent.cfg.deter))
    actor_loss, _, _, mets = agent._actor_critic_loss(start, torch.ones(N))
    val = vals[0]                                                                     # (H+1, N)
    g = torch.autograd.grad(actor_loss, val, retain_graph=True)[0]
    # loss = mean_t,n -(R_t - v_t) / scale * w_t: R_0 does not depend on v_0, so dL/dv_0 = w_0 / (H N scale)
    # with w_0 = 1 (the start is not terminal). A detached baseline would give 0 here.
    expected = 1.0 / (2 * N * float(mets["return_scale"]))
    assert torch.allclose(g[0], torch.full((N,), expected), rtol=1e-5)


# ---- item 5: evaluation samples ----------------------------------------------------------------------
def test_eval_mode_samples_and_greedy_is_the_labelled_argmax():
    agent = agent_for()
    obs = {"vector": np.ones((256, 6), np.float32), "is_first": np.ones(256, bool)}
    def actions_and_argmax(mode):
        a, st = agent.policy(obs, agent.initial_state(256), mode=mode)
        logp, _ = agent.actor(torch.cat([st["deter"], st["stoch"]], -1))
        return a.argmax(-1), logp.argmax(-1).numpy(), 1 - logp.exp().amax(-1).detach().numpy()

    a_greedy, best, _ = actions_and_argmax("greedy")
    assert (a_greedy == best).all()
    # a sample differs from the argmax with probability 1 - p(argmax) (~1/2 for this untrained policy):
    # the observed rate over 256 states matches that mean within 4 binomial standard errors
    a_eval, best, p_other = actions_and_argmax("eval")
    rate, expect = (a_eval != best).mean(), p_other.mean()
    assert expect > 0.2 and abs(rate - expect) < 4 * (expect * (1 - expect) / 256) ** 0.5, (rate, expect)
    from wmkit.dreamer.train import TrainConfig
    assert TrainConfig().eval_policy == "sample"


# ---- item 6: the learned initial state (2023) vs zeros (current code) ------------------------------------
def test_learned_initial_state_2023_and_zeros_2025():
    a23, a25 = agent_for(recipe="2023"), agent_for(recipe="2025")
    r = a23.wm.rssm
    with torch.no_grad():
        r.initial_deter.copy_(torch.linspace(-2, 2, r.deter))
    d, s = r.initial(3, "cpu")
    assert torch.allclose(d, torch.tanh(torch.linspace(-2, 2, r.deter)).expand(3, -1))
    mode = r.prior_logits(d[:1]).argmax(-1)                                            # (1, S)
    assert torch.equal(s[:1].reshape(1, r.stoch, r.classes).argmax(-1), mode)
    assert torch.equal(s.reshape(3, r.stoch, r.classes).sum(-1), torch.ones(3, r.stoch))   # one-hot
    assert not hasattr(a25.wm.rssm, "initial_deter")
    d25, s25 = a25.wm.rssm.initial(2, "cpu")
    assert d25.abs().sum() == 0 and s25.abs().sum() == 0
    # the world-model loss trains w (every replayed chunk starts from the initial state) ...
    b = vec_batch()
    loss = a23.wm.loss({k: v for k, v in b.items()}, a23.cfg, None)[0]
    assert grad_sum(loss, [r.initial_deter]) > 0
    # ... and a mid-sequence is_first resets to it: the state after the reset does not depend on the past
    b2 = {k: v.clone() for k, v in b.items()}
    b2["is_first"][:, 3] = True
    b3 = {k: v.clone() for k, v in b2.items()}
    b3["vector"][:, :3] += 5.0
    emb2, emb3 = a23.wm.encoder(b2), a23.wm.encoder(b3)
    o2 = r.observe(emb2, b2["action"], b2["is_first"], r.initial(3, "cpu"), torch.Generator().manual_seed(0))
    o3 = r.observe(emb3, b3["action"], b3["is_first"], r.initial(3, "cpu"), torch.Generator().manual_seed(0))
    assert torch.allclose(o2["deter"][:, 3:], o3["deter"][:, 3:])
    assert not torch.allclose(o2["deter"][:, :3], o3["deter"][:, :3])


# ---- gradient routing of the actor-critic losses, by autograd -------------------------------------------
@pytest.mark.parametrize("recipe,discrete", [("2023", True), ("2025", True), ("2025", False)])
def test_reinforce_losses_route_gradients_only_to_their_own_network(recipe, discrete):
    agent = agent_for(discrete=discrete, recipe=recipe)
    N = 6
    start = (torch.randn(N, agent.cfg.deter), torch.randn(N, agent.wm.feat_dim - agent.cfg.deter))
    actor_loss, critic_loss, _, _ = agent._actor_critic_loss(start, torch.ones(N))
    wm, actor, critic = (list(m.parameters()) for m in (agent.wm, agent.actor, agent.critic))
    assert grad_sum(actor_loss, actor) > 0
    assert grad_sum(actor_loss, wm + critic) == 0.0
    assert grad_sum(critic_loss, critic) > 0
    assert grad_sum(critic_loss, wm + actor) == 0.0


def test_v1_continuous_actor_gradient_flows_through_the_dynamics_but_not_into_them():
    agent = agent_for(discrete=False, recipe="2023")
    with torch.no_grad():   # non-zero reward and value heads, so returns depend on the imagined states
        agent.wm.reward.out.weight.normal_(0, 0.5)
        agent.critic.out.weight.normal_(0, 0.5)
    N = 6
    start = (torch.randn(N, agent.cfg.deter), torch.randn(N, agent.wm.feat_dim - agent.cfg.deter))
    actor_loss, critic_loss, _, _ = agent._actor_critic_loss(start, torch.ones(N))
    assert actor_loss.requires_grad
    wm, actor, critic = (list(m.parameters()) for m in (agent.wm, agent.actor, agent.critic))
    # the actor's gradient: through the mean of its actions into the dynamics (its entropy term alone
    # gives a gradient to the std head only) -- check the mean head gets one
    g_out = torch.autograd.grad(actor_loss, agent.actor.out.weight, retain_graph=True)[0]    # (2n, units)
    assert float(g_out[:4].abs().sum()) > 0
    assert grad_sum(actor_loss, wm + critic) == 0.0    # frozen: the model and critic are not updated by it
    assert grad_sum(critic_loss, critic) > 0 and grad_sum(critic_loss, wm + actor) == 0.0
    # and the world model and critic parameters can be trained again afterwards (not left frozen)
    assert all(p.requires_grad for p in wm + critic)


# ---- hand-computed losses -------------------------------------------------------------------------------
def test_actor_loss_hand_computed_h2():
    from wmkit.dreamer.agent import actor_loss_terms, imagination_weight
    from wmkit.dreamer.math import lambda_return
    rew = torch.tensor([[0.0], [1.0], [2.0]])      # rew[0] unused
    val = torch.tensor([[0.5], [1.0], [2.0]], requires_grad=True)
    con = torch.tensor([[1.0], [1.0], [0.5]])
    disc, lam = 0.9, 0.5
    ret = lambda_return(rew, val, con, disc, lam)
    # R1 = 2 + .9 * .5 * (.5 * 2 + .5 * 2) = 2.9 ; R0 = 1 + .9 * 1 * (.5 * 1 + .5 * 2.9) = 2.755
    assert torch.allclose(ret, torch.tensor([[2.755], [2.9]]))
    weight = imagination_weight(con, disc)
    assert torch.allclose(weight, torch.tensor([[1.0], [0.9]]))   # cumprod(.9, .9, .45) / .9 -> 1, .9
    logp = torch.tensor([[-1.2], [-0.7]], requires_grad=True)
    ent = torch.tensor([[1.3], [1.1]], requires_grad=True)
    loss = actor_loss_terms(ret, val[:-1].detach(), logp, ent, weight, 2.0, 0.1, "reinforce")
    # adv = (2.755 - .5) / 2 = 1.1275, (2.9 - 1) / 2 = .95
    # t0: -(-1.2 * 1.1275 + .1 * 1.3) * 1 = 1.223 ; t1: -(-.7 * .95 + .1 * 1.1) * .9 = .4995
    assert torch.allclose(loss, torch.tensor([[1.223], [0.4995]]))
    loss.mean().backward()
    # minimising the loss RAISES the entropy and the log-probability of positive-advantage actions
    assert torch.allclose(ent.grad, torch.tensor([[-0.05], [-0.045]]))
    assert torch.allclose(logp.grad, torch.tensor([[-1.1275 / 2], [-0.95 * 0.9 / 2]]))
    assert val.grad is None or float(val.grad.abs().sum()) == 0   # REINFORCE: no gradient into values
    bp = actor_loss_terms(ret, val[:-1], logp.detach(), ent.detach(), weight, 2.0, 0.1, "backprop")
    # backprop: -(adv + eta H) w = -(1.1275 + .13), -(.95 + .11) .9
    assert torch.allclose(bp.detach(), torch.tensor([[-1.2575], [-0.954]]))


def test_twohot_loss_at_the_target_is_the_target_entropy():
    from wmkit.dreamer.math import twohot
    from wmkit.dreamer.networks import TwoHotHead
    head = TwoHotHead(4, 8, 1, "layer", 5, "symlog")           # bins -20, -10, 0, 10, 20 (symlog space)
    y = torch.tensor([np.expm1(2.5), 0.0, -np.expm1(15.0)], dtype=torch.float32)   # symlog: 2.5, 0, -15
    target = twohot(torch.tensor([2.5, 0.0, -15.0]), head.bins)
    assert torch.allclose(target, torch.tensor([[0, 0, .75, .25, 0], [0, 0, 1, 0, 0], [.5, .5, 0, 0, 0]]))
    loss = head.loss(torch.log(target + 1e-30), y)
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))                        # noqa: E731
    assert torch.allclose(loss, torch.tensor([h(0.75), 0.0, np.log(2)], dtype=torch.float32), atol=1e-5)
    # uniform logits: cross-entropy log(5) whatever the target
    assert torch.allclose(head.loss(torch.zeros(3, 5), y), torch.full((3,), float(np.log(5))), atol=1e-6)


# ---- item 4: the current official agent behind recipe="2025" -------------------------------------------
def _constant_cont_head(agent, logit):
    with torch.no_grad():
        out = agent.wm.cont[-1]
        out.weight.zero_()
        out.bias.fill_(logit)


def test_contdisc_continue_target_and_imagination_weights():
    p = 0.997
    logit = float(np.log(p / (1 - p)))
    b = vec_batch()
    for recipe, expected in (("2023", -np.log(p)),                                  # target 1
                             ("2025", -(p * np.log(p) + (1 - p) * np.log(1 - p)))):  # target .997
        agent = agent_for(recipe=recipe)
        _constant_cont_head(agent, logit)
        mets = agent.wm.loss(b, agent.cfg, None)[3]
        assert abs(float(mets["cont_loss"].detach()) - expected) < 5e-5, recipe
    # imagination, H = 2, continue head constant: 2025 uses its probability (0.5) at every state including
    # the start and discount 1 -> weights 0.5, 0.25; 2023 uses 1 - terminal at the start, then the mode
    N = 4
    for recipe, logit, expected in (("2025", 0.0, 0.375), ("2023", 1.0, (1 + 0.997) / 2),
                                    ("2023", -1.0, 0.5)):
        agent = agent_for(recipe=recipe, imag_horizon=2)
        _constant_cont_head(agent, logit)
        start = (torch.randn(N, agent.cfg.deter), torch.randn(N, agent.wm.feat_dim - agent.cfg.deter))
        mets = agent._actor_critic_loss(start, torch.ones(N))[3]
        assert abs(float(mets["imag_weight"]) - expected) < 1e-5, (recipe, logit)


def test_current_recipe_defaults_are_the_official_ones():
    c23, c25 = DreamerConfig(recipe="2023"), DreamerConfig(recipe="2025")
    assert (c23.initial, c25.initial) == ("learned", "zeros")
    assert (c23.actor_grad_cont, c25.actor_grad_cont) == ("backprop", "reinforce")   # ac_grads: False
    assert (c23.contdisc, c25.contdisc) == (False, True)
    assert (c23.repval_grad, c25.repval_grad) == (False, True) and c25.joint_update
    assert (c23.actor_unimix, c25.actor_unimix) == (0.01, 0.0)
    a23, a25 = agent_for(recipe="2023"), agent_for(recipe="2025")
    n_linear = lambda m: sum(isinstance(x, torch.nn.Linear) for x in m.modules())    # noqa: E731
    assert n_linear(a23.wm.rssm.prior) == 2 and n_linear(a25.wm.rssm.prior) == 3      # imglayers 1 / 2
    with pytest.raises(ValueError, match="repval_grad"):
        DreamerConfig(recipe="2025", joint_update=False)
    # the current discrete actor is a plain categorical: no 1% floor
    with torch.no_grad():   # extreme logits
        for a in (a23, a25):
            a.actor.out.weight.normal_(0, 100.0)
    logp23, _ = a23.actor(torch.randn(7, a23.wm.feat_dim))
    logp25, _ = a25.actor(torch.randn(7, a25.wm.feat_dim))
    assert logp23.exp().min() >= 0.01 / 4 * (1 - 1e-5) and logp25.exp().min() < 1e-4
    assert torch.allclose(logp25.exp().sum(-1), torch.ones(7))


def _nonzero_critic(agent):
    with torch.no_grad():   # the zero-initialised output layer would pass no gradient to the features
        torch.manual_seed(5)
        agent.critic.out.weight.normal_(0, 0.5)
        agent.slow_critic.load_state_dict(agent.critic.state_dict())


def test_repval_grad_trains_the_world_model():
    b = vec_batch()
    grads = {}
    for flag in (True, False):
        agent = agent_for(recipe="2025", seed=3, repval_grad=flag, warmup=0)
        _nonzero_critic(agent)
        agent.update(b)
        grads[flag] = torch.cat([p.grad.flatten() for p in agent.wm.encoder.parameters()])
    # the only difference between the two runs is the replay value loss's gradient into the model
    assert float((grads[True] - grads[False]).abs().sum()) > 0
    b2 = {k: v for k, v in b.items()}
    same = []
    for flag in (True, False):
        agent = agent_for(recipe="2025", seed=3, repval_grad=flag, repval_scale=0.0, warmup=0)
        _nonzero_critic(agent)
        agent.update(b2)
        same.append(torch.cat([p.grad.flatten() for p in agent.wm.encoder.parameters()]))
    assert torch.equal(same[0], same[1])


@pytest.mark.parametrize("recipe", ["2023", "2025"])
def test_bf16_losses_stay_close_to_fp32_on_a_fixed_batch(recipe):
    b = vec_batch(B=4, T=8)
    out = {}
    for prec in ("fp32", "bf16"):
        agent = agent_for(recipe=recipe, seed=1, precision=prec)
        out[prec] = agent.update(b)
    for k in ("wm_loss", "dec_loss", "reward_loss", "cont_loss", "dyn_loss", "rep_loss", "critic_loss"):
        a, c = out["fp32"][k], out["bf16"][k]
        assert abs(a - c) <= 0.03 * abs(a) + 1e-3, (k, a, c)
    assert out["fp32"] != out["bf16"]    # bf16 really ran


def test_current_encoder_decoder_and_head_depths():
    a25 = Agent(IMG, {"n": 4, "discrete": True}, DreamerConfig(recipe="2025", size="tiny"), seed=0)
    # depth 8 -> channels 16, 24, 32, 32, kernel 5 with bias: 3*16*25+16 + 16*24*25+24 + 24*32*25+32 + 32*32*25+32
    # = 55,704; RMSNorm scales 16+24+32+32 = 104; output 4*4*32
    assert a25.param_counts()["encoder"] == 55_808 and a25.wm.encoder.out_dim == 512
    img = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    assert a25.wm.encoder({"image": img}).shape == (2, 3, 512)
    feat = torch.randn(2, 3, a25.wm.feat_dim)
    rec = a25.wm.decoder(feat)["image"]
    assert rec.shape == (2, 3, 64, 64, 3) and rec.min() >= -0.5 and rec.max() <= 0.5   # sigmoid - 1/2
    # h reaches the image through the block-linear map, z through its own 2-layer map
    f2 = feat.clone()
    f2[..., :a25.cfg.deter] += 1.0
    assert not torch.allclose(a25.wm.decoder(f2)["image"], rec)
    n_linear = lambda m: sum(isinstance(x, torch.nn.Linear) for x in m.modules())    # noqa: E731
    assert n_linear(a25.wm.reward) == 2 and n_linear(a25.wm.cont) == 2               # rewhead/conhead: 1 layer
    from wmkit.dreamer.agent import WorldModel
    with torch.device("meta"):
        wm23 = WorldModel(IMG, 4, DreamerConfig(recipe="2023", size="s"))
    assert n_linear(wm23.reward) == 3                                                 # 2023: like every MLP


def test_size_table_against_the_official_presets():
    from wmkit.dreamer.agent import size_table
    t23, t25 = size_table("2023"), size_table("2025")
    # the 2023 paper's sizes (its appendix table): XS 8M, S 18M, M 37M, L 77M, XL 200M -- within 5%
    for name, nominal in (("xs", 8e6), ("s", 18e6), ("m", 37e6), ("l", 77e6), ("xl", 200e6)):
        assert abs(t23[name] / nominal - 1) < 0.05, (name, t23[name])
    # the current presets are named by a round figure; wmkit's count for a 64x64 image and 17 actions is
    # 0.83-0.94 of it, with the official biases in every layer (hidden_bias=True; they add only ~0.1 %)
    for name, nominal in (("size12m", 12e6), ("size25m", 25e6), ("size50m", 50e6), ("size100m", 100e6),
                          ("size200m", 200e6), ("size400m", 400e6)):
        assert 0.8 < t25[name] / nominal < 1.0, (name, t25[name])
