"""wmkit.dreamer.envs: one obs/action contract for every env, the Crafter score, Atari settings."""

import math
import os

import numpy as np
import pytest

from wmkit.dreamer.envs import (
    ATARI100K,
    ATARI200M,
    CRAFTER_ACHIEVEMENTS,
    Reach,
    check_obs,
    crafter_score,
    crafter_success_rates,
    make_env,
    random_returns,
)

KEYS = {"reward": np.float32, "is_first": bool, "is_last": bool, "is_terminal": bool}


def _check_contract(env, obs, first):
    check_obs(obs, env.obs_space)
    for k, t in KEYS.items():
        assert k in obs and isinstance(obs[k], (t, np.bool_)), k
    assert obs["is_first"] is first
    if "image" in env.obs_space:
        assert env.obs_space["image"] == ((64, 64, 3), np.uint8)


def _random_action(env, rng):
    n = env.act_space["n"]
    return int(rng.integers(n)) if env.act_space["discrete"] else rng.uniform(-1, 1, n).astype(np.float32)


@pytest.mark.parametrize("name", ["reach", "reach-continuous", "cartpole", "pendulum", "atari100k:pong",
                                  "crafter"])
def test_obs_contract_every_env(name):
    env = make_env(name, seed=0)
    rng = np.random.default_rng(0)
    obs = env.reset()
    _check_contract(env, obs, True)
    assert obs["reward"] == 0.0
    for _ in range(3):
        obs = env.step(_random_action(env, rng))
        _check_contract(env, obs, False)
    env.close()


def test_space_shapes():
    assert make_env("crafter").act_space == {"n": 17, "discrete": True}
    assert make_env("pendulum").act_space == {"n": 1, "discrete": False}
    assert make_env("cartpole").obs_space == {"vector": ((4,), np.float32)}
    assert make_env("atari100k:pong").act_space == {"n": 6, "discrete": True}  # minimal action set
    assert make_env("atari:pong").act_space == {"n": 18, "discrete": True}  # full action set
    assert len(CRAFTER_ACHIEVEMENTS) == 22


def test_atari_settings_are_the_papers():
    assert ATARI100K["repeat"] == 4 and ATARI100K["size"] == (64, 64) and not ATARI100K["gray"]
    assert ATARI100K["sticky"] == 0.0 and ATARI100K["noops"] == 30 and ATARI100K["lives"] == "unused"
    assert ATARI200M["sticky"] == 0.25  # Machado et al. (2018)
    env = make_env("atari100k:pong", seed=0)
    env.reset()
    env.step(0)
    assert env._frames_done == 4  # one agent step = 4 frames, so 100k agent steps = 400k frames


def test_same_seed_same_frames_and_episode_rebuild():
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for name in ("reach", "atari100k:breakout", "pendulum"):
        a, b = make_env(name, seed=3), make_env(name, seed=3)
        oa, ob = a.reset(), b.reset()
        for _ in range(5):
            act = _random_action(a, rng_a)
            _random_action(b, rng_b)
            oa, ob = a.step(act), b.step(act)
            assert np.array_equal(oa["image"], ob["image"]), name
    # Episode k can be rebuilt from its index alone (exact resume relies on this).
    env = make_env("reach", seed=5)
    env.reset()
    env.reset()
    frame = env.reset()["image"]  # episode 2
    env2 = make_env("reach", seed=5)
    env2.episode = 1
    assert np.array_equal(env2.reset()["image"], frame)


def test_reach_reward_known_values():
    env = Reach(seed=0)
    env.reset()
    env.pos, env.target = np.array([0.0, 0.0], np.float32), np.array([0.0, 2.0], np.float32)
    assert env.step(4)["reward"] == pytest.approx(1 - 1 / 14)  # right: distance 2 -> 1
    assert env.step(4)["reward"] == pytest.approx(1.0)  # on target
    assert env.step(3)["reward"] == pytest.approx(1 - 1 / 14)
    for _ in range(47):
        obs = env.step(0)
    assert obs["is_last"] and not obs["is_terminal"] and env.episode_info["length"] == 50


def test_random_policy_return_on_reach():
    r = random_returns("reach", 20, seed=0)
    assert 20 < np.mean(r) < 40  # random ~31 of at most 50


def test_crafter_score_known_answers():
    assert crafter_score([0.0] * 22) == 0.0
    assert crafter_score([100.0] * 22) == pytest.approx(100.0)
    # one achievement always, the rest never: (101)^(1/22) - 1
    assert crafter_score([100.0] + [0.0] * 21) == pytest.approx(101 ** (1 / 22) - 1)
    # [1, 3]: exp((ln 2 + ln 4) / 2) - 1 = sqrt(8) - 1
    assert crafter_score([1.0, 3.0]) == pytest.approx(math.sqrt(8) - 1)
    with pytest.raises(ValueError, match="percent"):
        crafter_score([150.0])
    rates = crafter_success_rates([["wake_up", "collect_wood"], ["wake_up"]])
    assert rates["wake_up"] == 100.0 and rates["collect_wood"] == 50.0 and rates["collect_diamond"] == 0.0


def test_crafter_episode_info_lists_achievements():
    env = make_env("crafter", seed=0)
    env.length = 30
    env.reset()
    rng = np.random.default_rng(0)
    obs = env.reset()
    while not obs["is_last"]:
        obs = env.step(int(rng.integers(17)))
    assert set(env.episode_info["achievements"]) <= set(CRAFTER_ACHIEVEMENTS)
    assert env.episode_info["length"] == 30 and not obs["is_terminal"]  # time limit, not death


def test_bad_actions_raise_clear_errors():
    env = make_env("reach")
    env.reset()
    with pytest.raises(ValueError, match=r"out of range \[0, 5\)"):
        env.step(7)
    with pytest.raises(ValueError, match="one-hot"):
        env.step(np.array([0.5, 0.5, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    cont = make_env("reach-continuous")
    cont.reset()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        cont.step(np.array([2.0, 0.0], np.float32))
    with pytest.raises(ValueError, match="unknown environment"):
        make_env("doom")
    with pytest.raises(ValueError, match="unknown Atari game"):
        make_env("atari100k:notagame")
    with pytest.raises(ValueError, match="seed"):
        make_env("reach", seed=-1)
    done = Reach(0)
    obs = done.reset()
    while not obs["is_last"]:
        obs = done.step(0)
    with pytest.raises(RuntimeError, match="reset"):
        done.step(0)


def test_bad_observations_raise_clear_errors():
    space = {"image": ((64, 64, 3), np.uint8)}
    with pytest.raises(ValueError, match="'image' must have shape \\(64, 64, 3\\) and dtype uint8"):
        check_obs({"image": np.zeros((64, 64, 3), np.float32)}, space)
    with pytest.raises(ValueError, match="shape"):
        check_obs({"image": np.zeros((96, 96, 3), np.uint8)}, space)
    with pytest.raises(ValueError, match="missing key 'image'"):
        check_obs({"vector": np.zeros(4, np.float32)}, space)


def test_reward_scale_wrapper():
    a, b = make_env("reach", seed=0), make_env("reach", seed=0, reward_scale=1000.0)
    a.reset(), b.reset()
    ra, rb = a.step(1)["reward"], b.step(1)["reward"]
    assert rb == pytest.approx(1000.0 * ra)


def test_reach_vector_is_the_same_task_and_renders():
    px, vec = make_env("reach", seed=2), make_env("reach-vector", seed=2)
    o_px, o_vec = px.reset(), vec.reset()
    assert vec.obs_space == {"vector": ((4,), np.float32)} and o_vec["vector"].dtype == np.float32
    assert np.array_equal(Reach.render_vector(o_vec["vector"]), o_px["image"])  # same state, same frame
    for a in (1, 4, 4, 2):
        assert px.step(a)["reward"] == vec.step(a)["reward"]
    assert Reach.render_vector(np.zeros((3, 4))).shape == (3, 64, 64, 3)
    with pytest.raises(ValueError, match="shape"):
        Reach.render_vector(np.zeros(5))


def test_dreamer_crafter_episode_is_the_same_in_every_process():
    """DreamerV3's Crafter env gives the same episode for the same seed in processes with different string-hash
    seeds. Before it called ``wmkit.crafter_seeding.crafter_reproducible`` it did not (seed 0, a seeded random
    policy: 190, 123 and 142 steps in three processes), so a gpu-profile Crafter run could not be rebuilt."""
    import subprocess
    import sys

    code = ("import hashlib, numpy as np; from wmkit.dreamer.envs import make_env\n"
            "env, rng, h, n = make_env('crafter', seed=0), np.random.default_rng(0), hashlib.md5(), 0\n"
            "o = env.reset(); h.update(o['image'].tobytes())\n"
            "while not o['is_last'] and n < 300:\n"
            "    o = env.step(int(rng.integers(17))); h.update(o['image'].tobytes()); n += 1\n"
            "print(n, h.hexdigest())")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(s)}).stdout for s in (1, 3)]
    assert outs[0] == outs[1] and int(outs[0].split()[0]) > 0
