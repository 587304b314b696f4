"""Planning with DreamerV3's RSSM toward a goal (LEXA's latent distance), matched-FLOP step counts, the pairing of
episodes with the AC-JEPA's evaluation, and bad inputs (wmkit.jepa.plan_compare)."""

import math

import numpy as np
import pytest
import torch

from wmkit.jepa.ac import ACConfig, ACWorldModel, cem
from wmkit.jepa.compare import dreamer_batch, dreamer_world_model, step_flops, train_dreamer_wm
from wmkit.jepa.plan import evaluate_planning
from wmkit.jepa.plan_compare import (
    dreamer_embed,
    dreamer_energy,
    dreamer_energy_ranking,
    dreamer_goal_feat,
    dreamer_imagine,
    dreamer_obs_step,
    evaluate_dreamer_planning,
    latent_distance,
    matched_steps,
    plan_episode_dreamer,
)
from wmkit.jepa.tworooms import TwoRooms


@pytest.fixture(scope="module")
def wm():
    torch.manual_seed(0)
    model, _ = dreamer_world_model("tiny", seed=0)
    return model.eval()


def test_latent_distance_hand_values():
    g = torch.tensor([[1.0, 0.0]])
    # cosine: 1 - cos(angle); zero at the goal itself, 1 at 90 degrees, 2 opposite; any length along the goal is 0
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    assert latent_distance(feats, g, "cosine").tolist() == pytest.approx([0, 0, 1 - 1 / math.sqrt(2), 1, 2], abs=1e-6)
    # l2: mean squared difference over the F entries
    assert latent_distance(torch.tensor([[1.0, 0.0], [2.0, 2.0], [3.0, 0.0]]), g, "l2").tolist() == [0.0, 2.5, 2.0]
    with pytest.raises(ValueError, match="kind must be one of"):
        latent_distance(feats, g, "l1")


def test_energy_is_zero_at_the_goals_own_state_and_grows_with_distance(wm):
    torch.manual_seed(1)
    start = dreamer_obs_step(wm, None, None, torch.randn(1, wm.encoder.out_dim))
    plan = torch.rand(1, 3, 10) * 2 - 1  # 3 blocks of 5 two-dimensional actions
    goal = dreamer_imagine(wm, start, plan.reshape(1, 15, 2))[:, -1]  # (1, F): where this plan ends
    others = torch.rand(32, 3, 10) * 2 - 1
    e = dreamer_energy(wm, start, goal, torch.cat([plan, others]), block=5, mode="last")  # (33,)
    assert e[0].item() == pytest.approx(0.0, abs=1e-6)  # the plan that ends at the goal state: energy 0
    assert (e[1:] > 1e-4).all()
    # "all": the mean over the states after every block, which for the goal's own plan is its blocks' distances
    feats = dreamer_imagine(wm, start, plan.reshape(1, 15, 2))[:, 4::5]  # (1, 3, F)
    expected = latent_distance(feats, goal).mean()
    assert dreamer_energy(wm, start, goal, plan, block=5, mode="all")[0].item() == pytest.approx(expected.item(),
                                                                                                 abs=1e-6)
    # the other targets: z only, and the decoded frame against a goal image (the frame this plan decodes to)
    assert dreamer_energy(wm, start, goal, plan, block=5, target="stoch")[0].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        img = wm.decoder(goal)["image"]  # (1, 64, 64, 3)
    e_pix = dreamer_energy(wm, start, img, torch.cat([plan, others[:4]]), block=5, target="pixels")
    assert e_pix[0].item() == pytest.approx(0.0, abs=1e-10) and (e_pix[1:] > 0).all()
    with pytest.raises(ValueError, match="target must be"):
        dreamer_energy(wm, start, goal, plan, block=5, target="embed")
    # l2 grows with the distance along a straight line from the goal's state in feature space
    line = goal + torch.linspace(0, 2, 5)[:, None] * torch.randn(1, goal.shape[-1])
    d = latent_distance(line, goal, "l2")
    assert d[0] == 0 and (d.diff() > 0).all()


def test_cem_toward_a_known_latent_target_improves_the_energy(wm):
    torch.manual_seed(2)
    start = dreamer_obs_step(wm, None, None, torch.randn(1, wm.encoder.out_dim))
    target = dreamer_imagine(wm, start, torch.rand(1, 10, 2) * 2 - 1)[:, -1]  # a state some plan reaches

    def energy(a):
        return dreamer_energy(wm, start, target, a, block=5, mode="last")

    g = torch.Generator().manual_seed(0)
    out = cem(energy, 2, 10, samples=64, elites=8, iterations=5, generator=g)
    best = out["best_energy"]
    assert best[-1] < best[0]  # CEM lowers the best energy over its iterations
    random_plans = torch.rand(256, 2, 10, generator=g) * 2 - 1
    assert energy(out["plan"][None])[0] < energy(random_plans).median()  # its plan beats a typical random one


def test_obs_step_matches_observe_at_the_first_frame(wm):
    frames = np.random.default_rng(0).integers(0, 255, (1, 2, 32, 32, 3), dtype=np.uint8)
    emb = dreamer_embed(wm, frames[0])  # (2, E)
    data = dreamer_batch(frames, np.zeros((1, 1, 2), np.float32))
    with torch.no_grad():
        out = wm.rssm.observe(wm.encoder(data), data["action"], data["is_first"], wm.rssm.initial(1, "cpu"),
                              torch.Generator().manual_seed(0))
    deter, stoch = dreamer_obs_step(wm, None, None, emb[:1])
    assert torch.allclose(deter, out["deter"][:, 0], atol=1e-6)  # h_0 from the initial state and a zero action
    assert stoch.sum().item() == wm.rssm.stoch  # a one-hot per categorical: the posterior's mode
    assert torch.equal(stoch.reshape(wm.rssm.stoch, -1).argmax(-1), out["post"][0, 0].argmax(-1))
    goal = dreamer_goal_feat(wm, frames[0, 0])
    assert torch.equal(goal, torch.cat([deter, stoch], -1))  # LEXA: the goal state is one posterior step


def test_matched_steps_known_cases():
    a, b = torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(8, 3, bias=False)
    x4, x8 = torch.randn(2, 4), torch.randn(2, 8)
    fa, fb = step_flops(lambda: a(x4).sum()), step_flops(lambda: b(x8).sum())
    assert (fa, fb) == (96, 192)  # forward 2*B*in*out, backward the weight's gradient as much again
    assert matched_steps(10 * fa, fb) == 5  # 10 steps of the small layer buy 5 of the one twice its cost
    assert matched_steps(11, 4) == 3 and matched_steps(1, 100) == 1  # nearest step, at least one
    for bad in ((0, 1), (1, 0), (-5, 1), (float("nan"), 1), (1, float("inf"))):
        with pytest.raises(ValueError, match="matched_steps"):
            matched_steps(*bad)


def test_dreamer_snapshots_are_the_shorter_runs():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 5, 32, 32, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (2, 4, 2)).astype(np.float32)
    _, _, hist, _, _ = train_dreamer_wm(frames, actions, 2, 2, 3, progress=False, snapshots=(1,))
    one, *_ = train_dreamer_wm(frames, actions, 1, 2, 3, progress=False)
    snap = hist[-1]["snapshots"][1][0]
    assert all(torch.equal(snap[k], v) for k, v in one.state_dict().items())
    with pytest.raises(ValueError, match="snapshots in"):
        train_dreamer_wm(frames, actions, 2, 2, 3, progress=False, snapshots=(3,))


def test_dreamer_evaluation_is_paired_with_the_ac_evaluation(wm):
    torch.manual_seed(0)
    ac = ACWorldModel(ACConfig(size=32, patch=8, dim=32, depth=1, heads=2, pred_dim=32, pred_depth=1, pred_heads=2,
                               action_block=5))
    kw = dict(episodes=2, budget=5, horizon=1, samples=4, elites=2, iterations=1, render_size=32, seed=7,
              goal_offset=5, progress=False)
    r_ac = evaluate_planning(ac, **kw)
    r_d = evaluate_dreamer_planning(wm, **kw, block=5)
    for key in ("start_distance", "random_final_distance", "random_success"):
        assert [e[key] for e in r_ac["episodes"]] == [e[key] for e in r_d["episodes"]]  # same episodes, same moves
    assert r_d["plan_final_distance"] > 0 and 0 <= r_d["plan_success"] <= 1


def test_bad_inputs_raise(wm):
    with pytest.raises(ValueError, match="uint8 frames"):
        dreamer_embed(wm, np.zeros((1, 48, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 frames"):
        dreamer_embed(wm, np.zeros((1, 32, 32, 3), np.float32))
    start = dreamer_obs_step(wm, None, None, torch.zeros(1, wm.encoder.out_dim))
    goal = torch.cat(start, -1)
    with pytest.raises(ValueError, match="mode must be"):
        dreamer_energy(wm, start, goal, torch.zeros(2, 1, 10), block=5, mode="first")
    with pytest.raises(ValueError, match="block"):
        dreamer_energy(wm, start, goal, torch.zeros(2, 1, 7), block=5)
    env = TwoRooms(render_size=32)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="receding"):
        plan_episode_dreamer(wm, env, 5, 2, 4, 2, 1, torch.Generator(), receding=3)
    with pytest.raises(ValueError, match="episodes >= 2"):
        evaluate_dreamer_planning(wm, 1, 5, 1, 4, 2, 1, 32)


def test_carracing_goal_task_replays_its_start_and_maps_controls():
    from wmkit.jepa.goals import GoalTask, frame_of, to_control

    a = torch.tensor([[-0.5, -0.3, 0.7], [1.0, 0.4, -1.0]])
    assert torch.equal(to_control(a), torch.tensor([[-0.5, 0.0, 0.7], [1.0, 0.4, 0.0]]))  # gas, brake in [0, 1]
    task = GoalTask(size=32, warmup=3, offset=4, budget=2, radius=1e-3, skip_zoom=2)
    g = task.goal(0)
    assert g["frame"].shape == (32, 32, 3) and len(g["warmup_actions"]) == 3
    task.start(0)
    assert np.array_equal(task.position(), g["start_position"])  # Box2D replays the same start exactly
    stay = task.run(task.start(0), lambda _o, _t: np.array([0.0, 0.0, 1.0]), 0)  # full brake, radius ~0
    assert not stay["success"] and stay["min_distance"] <= np.linalg.norm(g["start_position"] - g["position"]) + 1e-9
    assert frame_of(np.zeros((96, 96, 3), np.uint8), 16).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="radius > 0"):
        GoalTask(radius=0)


def test_dreamer_energy_ranking_shape_and_bad_input(wm):
    r = dreamer_energy_ranking(wm, 32, episodes=2, futures=4, goal_offset=5, block=5, horizon=1)
    assert len(r["rho"]) == 2 and all(-1 <= x <= 1 for x in r["rho"]) and r["mean"] == pytest.approx(np.mean(r["rho"]))
    with pytest.raises(ValueError, match="episodes >= 2 and futures >= 3"):
        dreamer_energy_ranking(wm, 32, episodes=1)
