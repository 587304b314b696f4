"""wmkit.walltime: the step counts come from the profile, the arithmetic is right, a phase that does not fit is
reported, and every notebook's phases really run (smoke sizes, on the CPU)."""

import pytest
import torch

from wmkit.profiles import profile
from wmkit.walltime import PLANS, Phase, _hms, measure, plan, report


def test_step_counts_are_the_profiles_known_answers():
    P = profile("gpu")
    G, D = P.genie, P.diffusion
    assert [p.steps for p in plan("03a", P)[0]] == [G.tok_steps, G.lam_steps, G.dyn_steps] == [30_000, 30_000, 50_000]
    assert [p.steps for p in plan("03b", P)[0]] == [D.train_steps] * 4 == [20_000] * 4
    # DreamerV3: updates = (env steps - prefill) * train_ratio / (B * T). gpu 02b: Atari 100k at ratio 1024 is one
    # update per env step after the 5,000-step prefill; Crafter's 1M steps at 512 one every other step.
    assert [p.steps for p in plan("02b", P)[0]] == [95_000, 497_500]
    # gpu 02c: 5 envs (reach-vector and cartpole observed as vectors) + 2 reward scales + 2 ablations of
    # atari100k:pong (pixels), 100k steps each: 95,000 updates per run
    c = plan("02c", P)[0]
    assert [p.steps for p in c] == [2 * 95_000, 7 * 95_000] and "vector" in c[0].name and "image" in c[1].name
    s = profile("smoke")
    assert [p.steps for p in plan("03d", s)[0]] == [s.diffusion.agent_wm_steps, s.diffusion.agent_rew_end_steps,
                                                   s.diffusion.agent_ac_steps, s.diffusion.drive_train_steps]
    assert plan("04", s)[0][0].steps == s.jepa.vjepa_steps


def test_report_adds_up_and_names_what_did_not_fit():
    rows = [{"phase": "a", "steps": 1000, "seconds_per_step": 0.25, "seconds": 250.0, "error": None},
            {"phase": "b", "steps": 30_000, "seconds_per_step": 0.5, "seconds": 15_000.0, "error": None},
            {"phase": "c", "steps": 10, "seconds_per_step": None, "seconds": None, "error": "out of memory"}]
    text = report(rows, "03a", "gpu", "some card", ["recording"])
    assert "4.2 min" in text and "4.2 h" in text            # 250 s and 15,000 s
    total = [line for line in text.splitlines() if line.strip().startswith("total")][0]
    assert "4.2 h + 1 phase(s) that did not fit" in total    # 15,250 s = 4.24 h, and c is named, not dropped
    assert "out of memory" in text and "not counted: recording" in text
    assert (_hms(45), _hms(120), _hms(5400)) == ("45 s", "2.0 min", "1.5 h")


def test_measure_multiplies_and_reports_out_of_memory():
    calls = []

    def ok(device):
        return lambda: calls.append(1)

    def too_big(device):
        raise torch.OutOfMemoryError("CUDA out of memory")
    rows = measure([Phase("ok", 1234, ok), Phase("too big", 5, too_big)], "cpu", repeat=2, warmup=1)
    assert len(calls) == 3                                                      # 1 untimed + 2 timed
    assert rows[0]["seconds"] == pytest.approx(1234 * rows[0]["seconds_per_step"]) and rows[0]["error"] is None
    assert rows[1]["error"] == "out of memory" and rows[1]["seconds"] is None
    with pytest.raises(ValueError, match="repeat"):
        measure([], "cpu", repeat=0)


def test_unknown_notebook_is_refused():
    with pytest.raises(ValueError, match="03a"):
        plan("05")


@pytest.mark.parametrize("notebook", sorted(PLANS))
def test_every_phase_runs_at_smoke_sizes(notebook, one_thread):
    phases, left_out = plan(notebook, profile("smoke"))
    rows = measure(phases, "cpu", repeat=1, warmup=0)
    assert rows and left_out
    assert all(r["error"] is None and r["seconds_per_step"] > 0 for r in rows), rows
