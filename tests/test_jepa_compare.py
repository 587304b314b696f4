"""Comparison helpers: FLOP counting by a hand-computed linear layer, Dreamer's data format, probes' R^2."""

import numpy as np
import pytest
import torch

from wmkit.jepa.compare import dreamer_batch, step_flops
from wmkit.jepa.probes import linear_probe, r2_score


def test_step_flops_of_a_linear_layer_by_hand():
    lin = torch.nn.Linear(4, 3, bias=False)
    x = torch.randn(2, 4)
    # forward (2x4)@(4x3): 2*2*4*3 = 48; backward: grad wrt weight 48 (input needs no grad) -> 96
    assert step_flops(lambda: lin(x).sum()) == 96
    x.requires_grad_(True)
    assert step_flops(lambda: lin(x).sum()) == 144  # + grad wrt the input


def test_dreamer_batch_aligns_actions_with_the_frames_they_led_to():
    frames = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32, 3), dtype=np.uint8)
    actions = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    b = dreamer_batch(frames, actions)
    assert b["image"].shape == (2, 3, 64, 64, 3)
    assert torch.equal(b["image"][0, 1, 2:4, 4:6], torch.from_numpy(frames[0, 1, 1:2, 2:3]).expand(2, 2, 3))
    assert torch.equal(b["action"][:, 0], torch.zeros(2, 2))  # nothing led to the first frame
    assert torch.equal(b["action"][:, 1:], torch.from_numpy(actions))  # a_t led to frame t+1
    assert b["is_first"][:, 0].all() and not b["is_first"][:, 1:].any()
    with pytest.raises(ValueError, match="divide 64"):
        dreamer_batch(np.zeros((1, 2, 48, 48, 3), np.uint8), np.zeros((1, 1, 2), np.float32))


def test_probes_known_answers():
    torch.manual_seed(0)
    x = torch.randn(400, 5)
    y = x[:, :2] * torch.tensor([2.0, -1.0]) + 0.5
    r = linear_probe(x[:300], y[:300], x[300:], y[300:], ridge=1e-6)
    assert r["r2"] == pytest.approx(1.0, abs=1e-6)
    noise = linear_probe(torch.randn(300, 5), y[:300], torch.randn(100, 5), y[300:])
    assert noise["r2"] < 0.1  # features unrelated to the target: about chance (0)
    assert r2_score(y, y) == 1.0 and r2_score(y.mean(0).expand_as(y), y) == pytest.approx(0.0)


def test_goals_energy_tool_frame_energy_known_answer_and_bad_input():
    """tools/jepa_compare_goals_energy.py: the energy of the goal frame to itself is 0, it grows with a perturbation
    of the frame (L1 on target features, as the planner), and bad sizes are refused."""
    import numpy as np
    import pytest
    import torch
    from conftest import load_tool

    from wmkit.jepa.ac import ACConfig, ACWorldModel
    from wmkit.jepa.train import to_video

    tool = load_tool("jepa_compare_goals_energy")
    torch.manual_seed(0)
    model = ACWorldModel(ACConfig(size=16, patch=8, dim=16, depth=1, heads=2, pred_dim=16, pred_depth=1, pred_heads=2,
                                  regulariser="ema", loss="l1", action_dim=3)).eval()
    rng = np.random.default_rng(0)
    goal_frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    goal = model.encode(to_video(goal_frame)[None, None], target=True)[:, 0]
    other = goal_frame.copy()
    other[:8, :8] = 255 - other[:8, :8]
    e = tool.frame_energy(model, np.stack([goal_frame, other]), goal)
    assert e[0] == pytest.approx(0.0, abs=1e-7) and e[1] > 1e-4
    with pytest.raises(SystemExit):
        tool.main(["--episodes", "1"])


def test_driving_ac_config_follows_the_profile_and_refuses_an_unknown_recipe():
    """wmkit.jepa.goals.driving_ac_config: the goal tools' AC model on the drives, from the profile's sizes."""
    import pytest

    from wmkit.jepa.goals import driving_ac_config
    from wmkit.profiles import profile

    J = profile("smoke").jepa
    ema = driving_ac_config(J)
    assert (ema.steps, ema.model.size, ema.model.action_dim) == (J.ac_steps, J.tr_size, 3)
    assert (ema.model.regulariser, ema.model.loss, ema.model.action_block) == ("ema", "l1", J.action_block)
    lewm = driving_ac_config(J, "lewm", steps=7)
    assert (lewm.steps, lewm.model.action_dim, lewm.model.size) == (7, 3, J.tr_size)
    with pytest.raises(ValueError, match="recipe"):
        driving_ac_config(J, "pixels")


def test_to_control_clips_gas_and_brake_and_can_drop_the_brake():
    import torch

    from wmkit.jepa.goals import to_control

    a = torch.tensor([[-0.5, -0.3, 0.7], [0.9, 0.4, -0.2]])
    assert torch.equal(to_control(a), torch.tensor([[-0.5, 0.0, 0.7], [0.9, 0.4, 0.0]]))
    assert torch.equal(to_control(a, brake=False), torch.tensor([[-0.5, 0.0, 0.0], [0.9, 0.4, 0.0]]))


def test_planning_comparison_tool_puts_notebook_04s_lewm_and_the_rssm_on_the_same_frames(tmp_path, monkeypatch):
    """tools/jepa_compare_planning.py --ac-recipe lewm-notebook: the AC-JEPA is notebook 04's planner (LeWM's recipe
    over ``lewm_model``, at its frame size); the RSSM trains and plans on the same frames, with LeWM's protocol,
    on the very episodes the AC-JEPA played (paired: the random policy's results agree), at matched FLOPs."""
    import json

    from conftest import load_tool

    from wmkit.profiles import profile

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    J = profile("smoke").jepa
    S = J.lewm_model["size"]
    assert S != J.tr_size  # the smoke profile, like the cpu one, gives LeWM other frames than the other models
    tool = load_tool("jepa_compare_planning")
    tool.main(["--models", "ac", "dreamer", "--ac-recipe", "lewm-notebook", "--budgets", "2", "--episodes", "2",
               "--headline", "0", "--out", str(tmp_path)])
    ac, rssm = json.loads((tmp_path / "results_ac_dreamer_lewm64.json").read_text())["rows"]
    assert ac["model"].startswith(f"AC-JEPA lewm, notebook 04's ({S} px, 1 block) ({J.lewm_receding}:")
    assert rssm["model"].endswith(f"FLOPs of LeWM, {S} px)")
    for k in ("random_success", "random_final_distance", "start_distance"):
        assert rssm[k] == ac[k]  # the same episodes
    assert abs(rssm["steps"] * rssm["flops_per_step"] - ac["flops"]) <= rssm["flops_per_step"] / 2 or rssm["steps"] == 1
    # each row keeps its per-episode outcomes, so the two models can be compared pair by pair
    assert len(ac["per_episode"]["success"]) == len(rssm["per_episode"]["final_distance"]) == 2
    d = tool.paired(ac, rssm)
    assert d["episodes"] == 2
    assert d["success"] == pytest.approx(ac["plan_success"] - rssm["plan_success"])  # a mean of differences
    assert d["distance"] == pytest.approx(ac["plan_final_distance"] - rssm["plan_final_distance"])
    assert tool.paired(ac, {**rssm, "seed": rssm["seed"] + 1}) is None  # other episodes: no pairing
    assert "AC-JEPA - RSSM, same episodes" in tool.paired_table([ac, rssm])
