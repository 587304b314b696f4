"""Stage 1, VizDoom TakeCover: the env wrapper, M's done head and loss, the dream ending on death, C, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wmkit.utils import count_parameters
from wmkit.worldmodels import MDNRNN, load_episode, save_episode
from wmkit.worldmodels.doom import (
    FIXED_POLICIES,
    LEFT,
    NOOP,
    RIGHT,
    collect_doom_episode,
    discrete_action,
    doom_act,
    doom_controller_dim,
    dream_survival,
    fixed_policy_actions,
    make_doom_env,
    mean_and_se,
    policy_table,
    preprocess_doom_frame,
    random_repeat_actions,
    spearman,
)
from wmkit.worldmodels.doom_train import episode_batches, pad_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------ env wrapper
def test_frame_preprocessing_crops_resizes_and_inverts():
    screen = np.zeros((240, 320, 3), np.uint8)
    out = preprocess_doom_frame(screen)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out == 255).all()                          # inverted: black -> white (the paper's (1 - x) * 255)
    screen[200:] = 200                                 # the bottom 1/6 is cropped away
    np.testing.assert_array_equal(preprocess_doom_frame(screen), out)
    screen[:100] = 255                                 # the top half of the kept rows -> top half of the frame
    out = preprocess_doom_frame(screen, invert=False)
    assert (out[:31] == 255).all() and (out[33:] == 0).all()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        preprocess_doom_frame(np.zeros((240, 320), np.uint8))


def test_action_mapping_follows_the_papers_threshold():
    a = np.array([-1.0, -0.34, -0.3333, 0.0, 0.3333, 0.34, 1.0])
    np.testing.assert_array_equal(discrete_action(a), [LEFT, LEFT, NOOP, NOOP, NOOP, RIGHT, RIGHT])
    with pytest.raises(ValueError, match="non-finite"):
        discrete_action(np.nan)
    env = make_doom_env().unwrapped  # the wheel's button order and map: index -> (MOVE_LEFT, MOVE_RIGHT)
    assert [b.name for b in env.game.get_available_buttons()] == ["MOVE_LEFT", "MOVE_RIGHT"]
    assert [list(env.button_map[i]) for i in (NOOP, RIGHT, LEFT)] == [[0, 0], [0, 1], [1, 0]]
    env.close()


def test_random_repeat_actions_hold_1_to_10_frames():
    a = random_repeat_actions(5000, np.random.default_rng(0))
    assert a.shape == (5000, 1) and a.dtype == np.float32 and a.min() >= -1 and a.max() <= 1
    change = np.flatnonzero(np.diff(a[:, 0]) != 0)
    runs = np.diff(np.concatenate([[-1], change]))
    assert runs.min() >= 1 and runs.max() <= 10
    assert abs(runs.mean() - 5.5) < 0.3  # k ~ U{1..10}


def test_collected_episode_is_seeded_and_uses_the_episode_format(tmp_path):
    ep = collect_doom_episode(3, max_steps=25)
    assert ep.obs.shape == (26, 64, 64, 3) and ep.obs.dtype == np.uint8
    assert ep.actions.shape == (25, 1) and ep.actions.dtype == np.float32
    np.testing.assert_array_equal(ep.rewards, np.ones(25, np.float32))  # living reward 1 per frame
    assert not ep.terminated.any() and ep.truncated[-1]                  # stopped by the cap
    again = collect_doom_episode(3, max_steps=25)
    np.testing.assert_array_equal(ep.obs, again.obs)
    back = load_episode(save_episode(tmp_path / "episode_000003.npz", ep))
    np.testing.assert_array_equal(back.actions, ep.actions)


def _start_game(_):
    env = make_doom_env()
    env.reset(seed=0)
    env.close()
    return True


def test_game_settings_folder_exists_before_vizdoom_starts(tmp_path, monkeypatch):
    """ViZDoom creates ./_vizdoom/ on first use; workers starting together in a fresh directory (a fresh clone's
    first `make book`) can race to create it, and the loser exits ("Failed to create ./_vizdoom/ directory: File
    exists"; seen once as a BrokenProcessPool in notebook 01b, not reproduced in 35 tries). make_doom_env creates
    the folder before the game starts, so ViZDoom never has to; checked at the moment the game is made."""
    import gymnasium as gym

    from wmkit.utils import process_pool

    monkeypatch.chdir(tmp_path)
    seen = []
    real_make = gym.make

    def make(*a, **k):
        seen.append((tmp_path / "_vizdoom").is_dir())
        return real_make(*a, **k)

    monkeypatch.setattr(gym, "make", make)
    make_doom_env().close()
    assert seen == [True]
    monkeypatch.setattr(gym, "make", real_make)
    fresh = tmp_path / "fresh"                   # and four games starting at once in a fresh directory all run
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    with process_pool(4) as pool:
        assert list(pool.map(_start_game, range(4))) == [True] * 4


# ------------------------------------------------------------------------------------ M and C
def test_doom_m_and_c_have_the_papers_sizes():
    m = MDNRNN(64, 1, 512, 5, reward_done_heads=True, reward_head=False)
    assert m.reward_head is None and m.done_head is not None
    lstm = 4 * 512 * (65 + 512) + 2 * 4 * 512          # PyTorch: b_ih and b_hh
    assert count_parameters(m) == lstm + 512 * 64 * 15 + 64 * 15 + 513
    assert doom_controller_dim(64, 512) == 1088       # doomrnn/config.py: input_size 576 + 512, no bias
    obs = torch.randn(2, 3, 1088)
    w = torch.randn(2, 1088) * 0.01
    torch.testing.assert_close(doom_act(w, obs), torch.tanh((obs * w[:, None]).sum(-1)))
    with pytest.raises(ValueError, match="do not fit"):
        doom_act(w, torch.randn(2, 3, 100))


def test_done_loss_weights_deaths_by_restart_factor_and_masks_padding():
    m = MDNRNN(2, 1, 8, 2, reward_head=False)
    with torch.no_grad():
        m.done_head.weight.zero_()
        m.done_head.bias.zero_()                       # logit 0: BCE = log 2 for either label
    z, a = torch.randn(1, 3, 2), torch.randn(1, 2, 1)
    d = torch.tensor([[0.0, 1.0]])
    out = m.loss(z, a, dones=d, done_pos_weight=10.0)
    assert out["done"].item() == pytest.approx((math.log(2) + 10 * math.log(2)) / 2, rel=1e-6)
    # padding: extra garbage steps with mask 0 change nothing
    zp = torch.cat([z, torch.randn(1, 2, 2) * 100], 1)
    ap = torch.cat([a, torch.randn(1, 2, 1)], 1)
    dp = torch.cat([d, torch.ones(1, 2)], 1)
    padded = m.loss(zp, ap, dones=dp, done_pos_weight=10.0, mask=torch.tensor([[1.0, 1, 0, 0]]))
    for k in ("nll", "done", "loss"):
        assert padded[k].item() == pytest.approx(out[k].item(), rel=1e-6)


def test_carried_state_equals_one_long_sequence():
    """Truncated BPTT with carried state sees the same forward pass as the whole episode at once."""
    torch.manual_seed(0)
    m = MDNRNN(3, 1, 16, 2, reward_head=False)
    z, a, d = torch.randn(2, 11, 3), torch.randn(2, 10, 1), torch.zeros(2, 10)
    full = m.loss(z, a, dones=d)
    first = m.loss(z[:, :7], a[:, :6], dones=d[:, :6], return_state=True)
    second = m.loss(z[:, 6:], a[:, 6:], dones=d[:, 6:], state=first["state"])
    assert full["nll"].item() == pytest.approx((6 * first["nll"].item() + 4 * second["nll"].item()) / 10, rel=1e-5)
    cold = m.loss(z[:, 6:], a[:, 6:], dones=d[:, 6:])  # from a zero state: a different (wrong) answer
    assert abs(cold["nll"].item() - second["nll"].item()) > 1e-4


def test_episode_batches_cover_every_episode_once_and_pad_with_a_mask():
    lengths = [5, 9, 3, 7, 6]
    batches = episode_batches(lengths, 2, np.random.default_rng(0))
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]

    class E:
        def __init__(self, n):
            self.actions = np.full((n, 1), 0.5, np.float32)
            self.terminated = np.eye(1, n, n - 1, dtype=bool)[0]

        def __len__(self):
            return len(self.actions)

    eps = [E(n) for n in lengths]
    mus = [np.zeros((n + 1, 4), np.float32) for n in lengths]
    lvs = [np.full((n + 1, 4), -50.0, np.float32) for n in lengths]  # sigma ~ 0: z = mu
    b = pad_batch(mus, lvs, eps, [2, 1], torch.Generator().manual_seed(0))
    assert b["z"].shape == (2, 10, 4) and b["actions"].shape == (2, 9, 1)
    np.testing.assert_array_equal(b["mask"].sum(1).numpy(), [3, 9])
    assert b["dones"][0, 2] == 1 and b["dones"][0].sum() == 1 and b["dones"][1, 8] == 1


# ------------------------------------------------------------------------------------ the dream
def _m_with_done_bias(bias: float) -> MDNRNN:
    m = MDNRNN(4, 1, 8, 2, reward_head=False)
    with torch.no_grad():
        m.done_head.weight.zero_()
        m.done_head.bias.fill_(bias)
    return m.eval()


def test_dream_ends_on_death_and_pays_one_per_frame():
    mu, lv = torch.zeros(5, 4), torch.zeros(5, 4)
    params = np.zeros((3, doom_controller_dim(4, 8)))
    dead = dream_survival(params, _m_with_done_bias(+10.0), mu, lv, rollouts=4, max_steps=50)
    np.testing.assert_array_equal(dead, np.ones((3, 4)))        # logit > 0 on the first frame: 1 frame
    alive = dream_survival(params, _m_with_done_bias(-10.0), mu, lv, rollouts=4, max_steps=50)
    np.testing.assert_array_equal(alive, np.full((3, 4), 50.0))  # never dies: the cap


def _m_dies_when_action_positive() -> MDNRNN:
    m = MDNRNN(4, 1, 8, 2, reward_head=False)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.lstm.weight_ih_l0[16:24, 4] = 5.0            # cell input g = tanh(5 a): c, h follow the action
        m.lstm.bias_ih_l0[:8] = 10.0                   # input gate open
        m.lstm.bias_ih_l0[24:] = 10.0                  # output gate open
        m.done_head.weight[0] = 10.0                   # done logit = 10 * sum(h) - 1: dies when a > 0
        m.done_head.bias.fill_(-1.0)
    return m.eval()


def test_dream_death_depends_on_the_controller():
    """A done head that reads the action input (through the LSTM) makes survival depend on C."""
    m = _m_dies_when_action_positive()
    D = doom_controller_dim(4, 8)
    zero = np.zeros(D)                                 # a = tanh(0) = 0: never dies
    obs_is_z = np.zeros(D)
    obs_is_z[:4] = -20.0                               # a = tanh(-20 sum z): depends on the dream's z
    surv = dream_survival(np.stack([zero, obs_is_z]), m, torch.full((3, 4), -1.0), torch.full((3, 4), -50.0),
                          rollouts=3, max_steps=20)
    np.testing.assert_array_equal(surv[0], np.full(3, 20.0))
    assert (surv[1] < 20).all()                         # z = -1 -> a = +1 -> h > 0 -> dies


def test_common_random_numbers_and_mean_se():
    m = MDNRNN(4, 1, 8, 2, reward_head=False).eval()
    with torch.no_grad():
        m.done_head.bias.fill_(-2.0)
    p = np.random.default_rng(0).normal(0, 0.1, (1, doom_controller_dim(4, 8)))
    s = dream_survival(np.repeat(p, 2, 0), m, torch.zeros(4, 4), torch.zeros(4, 4), rollouts=5, max_steps=40, seed=3)
    np.testing.assert_array_equal(s[0], s[1])
    mean, se = mean_and_se(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


# ------------------------------------------------------------------------------------ the whole pipeline
@pytest.mark.slow
def test_doom_cli_pipeline_smoke_profile(tmp_path, monkeypatch, capsys):
    from wmkit.checkpoint import load_state
    from wmkit.worldmodels import cli

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    r = tmp_path / "doom"
    ep, vae, mdn, ctrl = r / "episodes", r / "vae", r / "mdnrnn", r / "controller"
    cli.main(["doom", "collect", "--out-dir", str(ep), "--n-rollouts", "2", "--max-steps", "30", "--workers", "1"])
    assert len(load_episode(ep / "episode_000001.npz")) == 30
    cli.main(["train-vae", "--env", "doom", "--data-dir", str(ep), "--run-dir", str(vae)])  # --env form
    assert load_state(vae / "ckpt" / "latest")["model"]["fc_mu.weight"].shape == (64, 1024)
    cli.main(["doom", "train-mdnrnn", "--data-dir", str(ep), "--vae-dir", str(vae), "--run-dir", str(mdn),
              "--seq-len", "8"])
    st = load_state(mdn / "ckpt" / "latest")
    assert st["init_mu"].shape == (2, 64) and st["step"] == 4  # 1 batch of 2 episodes x 30 steps / 8
    capsys.readouterr()
    cli.main(["doom", "train-controller", "--vae-dir", str(vae), "--mdnrnn-dir", str(mdn), "--run-dir", str(ctrl),
              "--eval-max-steps", "20"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["tau"] == 1.15 and 1 <= res["dream_mean"] <= 30 and 1 <= res["real_mean"] <= 20
    assert load_state(ctrl / "ckpt" / "latest")["params"].shape == (64 + 2 * 32,)
    cli.main(["doom", "evaluate", "--controller-dir", str(ctrl), "--vae-dir", str(vae), "--mdnrnn-dir", str(mdn),
              "--episodes", "2", "--max-steps", "20"])
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["random_every_frame_mean"] == ev["random_mean"] == 20  # nobody dies in 20 frames
    cli.main(["doom", "policies", "--mdnrnn-dir", str(mdn), "--episodes", "2", "--dreams", "2",
              "--dream-max-steps", "10", "--max-steps", "20"])
    pol = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(pol["rows"]) == 5 and all(r["real"] == 20 and 1 <= r["dreamed"] <= 10 for r in pol["rows"])
    with pytest.raises(SystemExit, match="unknown command"):
        cli.main(["doom", "fly"])


def test_dream_frames_stop_where_m_says_dead():
    from wmkit.worldmodels import ConvVAE
    from wmkit.worldmodels.doom import dream_frames

    m, vae = _m_with_done_bias(+10.0), ConvVAE(4).eval()
    d = dream_frames(np.zeros(doom_controller_dim(4, 8)), m, vae, torch.zeros(2, 4), torch.zeros(2, 4), max_steps=9)
    assert d["frames"].shape == (1, 64, 64, 3) and d["frames"].dtype == np.uint8
    assert d["p_done"][0] == pytest.approx(1 / (1 + math.exp(-10)))
    d = dream_frames(np.zeros(doom_controller_dim(4, 8)), _m_with_done_bias(-10.0), vae, torch.zeros(2, 4),
                     torch.zeros(2, 4), max_steps=9)
    assert len(d["frames"]) == 9 and (d["action"] == 0).all()  # zero weights: a = tanh(0) = 0


def test_nll_by_time_bins_every_step_and_matches_the_whole_episode_nll():
    from wmkit.worldmodels.bench import nll_by_time
    from wmkit.worldmodels.mdnrnn import mdn_nll

    torch.manual_seed(0)
    m = MDNRNN(3, 1, 8, 2, reward_head=False).eval()
    zs = [np.random.default_rng(i).normal(size=(n + 1, 3)).astype(np.float32) for i, n in enumerate((20, 7))]
    acts = [np.zeros((n, 1), np.float32) for n in (20, 7)]
    rows = nll_by_time(m, zs, acts, edges=(0, 5, 10, 100))
    assert [r["n"] for r in rows] == [10, 7, 10] and [r["t"] for r in rows] == ["0-4", "5-9", "10-99"]
    tot = 0.0
    with torch.no_grad():  # the count-weighted mean of the bins is the NLL over all steps
        for z, a in zip(zs, acts):
            zt = torch.from_numpy(z)[None]
            out = m(zt[:, :-1], torch.from_numpy(a)[None])
            tot += float(mdn_nll(out.logit_pi, out.mu, out.log_sigma, zt[:, 1:]).mean(-1).sum())
    assert sum(r["nll"] * r["n"] for r in rows) / 27 == pytest.approx(tot / 27, rel=1e-5)


def test_dream_survival_of_the_random_policy():
    s = dream_survival(None, _m_with_done_bias(-10.0), torch.zeros(2, 4), torch.zeros(2, 4), rollouts=3, max_steps=12)
    np.testing.assert_array_equal(s, np.full((1, 3), 12.0))
    s = dream_survival(None, _m_with_done_bias(10.0), torch.zeros(2, 4), torch.zeros(2, 4), rollouts=3, max_steps=12)
    np.testing.assert_array_equal(s, np.ones((1, 3)))


def test_dream_survival_of_fixed_action_sequences():
    """``actions`` plays given sequences: with an M that kills when a > 0, 'hold left' (a = -1) lives to the cap,
    'hold right' dies on the first frame, and a switch to the right at frame 6 dies there."""
    m = _m_dies_when_action_positive()
    acts = np.full((20, 3), -1.0, np.float32)
    acts[:, 1] = 1.0
    acts[5:, 2] = 1.0
    s = dream_survival(None, m, torch.zeros(2, 4), torch.full((2, 4), -50.0), rollouts=3, max_steps=20, actions=acts)
    np.testing.assert_array_equal(s, [[20.0, 1.0, 6.0]])
    with pytest.raises(ValueError, match="actions must have shape"):
        dream_survival(None, m, torch.zeros(2, 4), torch.zeros(2, 4), rollouts=3, max_steps=20, actions=acts[:10])
    with pytest.raises(ValueError, match="not both"):
        dream_survival(np.zeros((1, doom_controller_dim(4, 8))), m, torch.zeros(2, 4), torch.zeros(2, 4),
                       rollouts=3, max_steps=20, actions=acts)


def test_fixed_policies_and_spearman_known_values():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(fixed_policy_actions("hold left", 4, rng), [-1, -1, -1, -1])
    np.testing.assert_array_equal(fixed_policy_actions("stand still", 3, rng), [0, 0, 0])
    np.testing.assert_array_equal(fixed_policy_actions(FIXED_POLICIES[0], 50, np.random.default_rng(3)),
                                  random_repeat_actions(50, np.random.default_rng(3))[:, 0])  # the data policy
    every = fixed_policy_actions("random every frame", 1000, rng)
    assert (np.diff(every) != 0).all() and abs(every.mean()) < 0.1 and every.min() >= -1 and every.max() <= 1
    with pytest.raises(ValueError, match="unknown policy"):
        fixed_policy_actions("jump", 3, rng)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)       # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3))  # tie: average rank


def test_policy_table_plays_each_policy_in_the_dream_and_the_game():
    rows, rho = policy_table(_m_dies_when_action_positive(), torch.zeros(2, 4), torch.full((2, 4), -50.0),
                             seeds=[5, 6], dreams=3, dream_max_steps=20, max_steps=25,
                             policies=("hold left", "hold right", "stand still"))
    assert [r["policy"] for r in rows] == ["hold left", "hold right", "stand still"]
    assert [r["dreamed"] for r in rows] == [20.0, 1.0, 20.0]          # this M kills only when a > 0
    assert [r["real"] for r in rows] == [25.0, 25.0, 25.0]            # no fireball lands in the first 25 frames
    assert math.isnan(rho)                                             # a constant score has no order
    assert spearman([3, 3, 3], [1, 2, 3]) != spearman([3, 3, 3], [1, 2, 3])  # NaN


def test_real_survival_in_two_processes_plays_the_same_games():
    from wmkit.worldmodels.doom import real_survival
    from wmkit.worldmodels.vae import ConvVAE

    torch.manual_seed(0)
    vae, m = ConvVAE(z_dim=8), MDNRNN(8, 1, 16, 2, reward_done_heads=True, reward_head=False)
    params = np.random.default_rng(0).normal(0, 1.0, doom_controller_dim(8, 16))
    seeds = [3, 4, 5]  # batches [3, 4] and [5]: the second process plays the last one
    one = real_survival(params, seeds, vae, m, max_steps=40, batch=2, record=2)
    two = real_survival(params, seeds, vae, m, max_steps=40, batch=2, record=2, workers=2)
    assert one["steps"].tolist() == two["steps"].tolist() and one["steps"].min() > 0
    assert np.array_equal(one["frames"], two["frames"]) and len(one["frames"]) == one["steps"][2]
    rand1 = real_survival(None, seeds, max_steps=40, batch=2, policy="random every frame")["steps"]
    rand2 = real_survival(None, seeds, max_steps=40, batch=2, policy="random every frame", workers=2)["steps"]
    assert rand1.tolist() == rand2.tolist()
    with pytest.raises(ValueError, match="workers"):
        real_survival(None, seeds, workers=0)


def test_dream_fitness_split_over_candidates_is_the_same_as_in_one_batch():
    # CMA-ES's dreams run in several processes, each with a slice of the population: the common random numbers
    # are drawn per rollout, so a slice of candidates sees exactly the dreams it would see in the whole batch
    torch.manual_seed(0)
    m = MDNRNN(4, 1, 8, 2, reward_done_heads=True, reward_head=False)
    with torch.no_grad():  # a done head that reacts to the state, so controllers die at different frames
        m.done_head.weight.normal_(0, 3.0)
        m.done_head.bias.fill_(-1.0)
    pop = np.random.default_rng(1).normal(0, 2.0, (5, doom_controller_dim(4, 8)))
    mu, lv = torch.randn(3, 4), torch.zeros(3, 4)
    whole = dream_survival(pop, m, mu, lv, rollouts=4, tau=1.15, max_steps=60, seed=7)
    parts = [dream_survival(q, m, mu, lv, rollouts=4, tau=1.15, max_steps=60, seed=7) for q in np.array_split(pop, 2)]
    assert np.array_equal(whole, np.concatenate(parts)) and len(np.unique(whole)) > 3


def test_skipping_dead_dreams_gives_the_plain_loops_survival():
    # the fast path steps M only on the dreams still running, with the batch's random numbers: same result
    torch.manual_seed(0)
    m = MDNRNN(4, 1, 8, 2, reward_done_heads=True, reward_head=False)
    with torch.no_grad():
        m.done_head.weight.normal_(0, 3.0)
        m.done_head.bias.fill_(-1.0)
    pop = np.random.default_rng(1).normal(0, 2.0, (5, doom_controller_dim(4, 8)))
    mu, lv = torch.randn(3, 4), torch.zeros(3, 4)
    for tau in (0.0, 1.15):
        fast = dream_survival(pop, m, mu, lv, rollouts=4, tau=tau, max_steps=60, seed=7)
        plain = dream_survival(pop, m, mu, lv, rollouts=4, tau=tau, max_steps=60, seed=7, skip_dead=False)
        assert np.array_equal(fast, plain)
    assert len(np.unique(fast)) > 3  # at tau 1.15 the dreams end at many different frames
    rand = dream_survival(None, m, mu, lv, rollouts=6, max_steps=60, seed=2)
    assert np.array_equal(rand, dream_survival(None, m, mu, lv, rollouts=6, max_steps=60, seed=2, skip_dead=False))


def test_skipping_finished_games_gives_the_plain_loops_survival():
    from wmkit.worldmodels.doom import real_survival
    from wmkit.worldmodels.vae import ConvVAE

    torch.manual_seed(0)
    vae, m = ConvVAE(z_dim=8), MDNRNN(8, 1, 16, 2, reward_done_heads=True, reward_head=False)
    params = np.random.default_rng(0).normal(0, 1.0, doom_controller_dim(8, 16))
    seeds = [3, 4, 5, 6]  # one batch of 4 games that end at different frames
    fast = real_survival(params, seeds, vae, m, max_steps=400, batch=4, record=1)
    plain = real_survival(params, seeds, vae, m, max_steps=400, batch=4, record=1, skip_dead=False)
    assert fast["steps"].tolist() == plain["steps"].tolist() and len(set(fast["steps"].tolist())) > 1
    assert np.array_equal(fast["frames"], plain["frames"]) and len(fast["frames"]) == fast["steps"][1]


def test_cma_es_in_two_processes_finds_the_same_controller(tmp_path, monkeypatch):
    from wmkit.worldmodels.doom_train import DoomControllerConfig, train_doom_controller

    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    torch.manual_seed(0)
    m = MDNRNN(8, 1, 16, 2, reward_done_heads=True, reward_head=False)
    with torch.no_grad():  # deaths that depend on the state, so candidates differ
        m.done_head.weight.normal_(0, 3.0)
        m.done_head.bias.fill_(-1.0)
    mu, lv = torch.randn(3, 8), torch.zeros(3, 8)
    out = []
    for w in (1, 2):
        cfg = DoomControllerConfig(run_dir=str(tmp_path / f"w{w}"), workers=w, eval_episodes=0, generations=3,
                                   popsize=6, rollouts=4, dream_max_steps=50)
        params, res = train_doom_controller(cfg, mdnrnn=(m, mu, lv), progress=False)
        out.append((params, [h["mean"] for h in res["history"]]))
    assert np.array_equal(out[0][0], out[1][0]) and out[0][1] == out[1][1]
    assert len(set(out[0][1])) > 1  # the fitness moved: the comparison is not between constants
