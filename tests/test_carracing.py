"""wmkit.carracing: the vectorised road renderer draws exactly gymnasium's CarRacing-v3 frames."""
import math

import numpy as np
import pygame
import pytest

from wmkit.carracing import FAST_ID, FastCarRacing, make_car_racing, rotate


def test_rotate_matches_pygame_vector2_bit_for_bit():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-300, 300, (500, 2))
    # random angles, and angles at and within pygame's 1e-6 of the exact quarter turns it special-cases
    angles = list(rng.uniform(-20, 20, 40)) + [k * math.pi / 2 + d for k in range(-5, 6) for d in (0, 4e-7, -4e-7)]
    for a in angles:
        ours = rotate(pts, float(a))
        ref = np.array([tuple(pygame.math.Vector2(tuple(p)).rotate_rad(float(a))) for p in pts])
        assert np.array_equal(ours, ref), a


def _episode(fast: bool, seeds: tuple[int, ...], steps: int) -> list[np.ndarray]:
    env = make_car_racing(fast=fast, max_episode_steps=steps + 1)
    frames = []
    for seed in seeds:  # several resets: the polygon cache must follow each new track
        obs, _ = env.reset(seed=seed)
        frames.append(obs)
        rng = np.random.default_rng(seed)
        for t in range(steps):
            # coast through the zoom-in, then drive: the car reaches (and recolours) road tiles
            a = np.array([0, 0, 0] if t < 40 else [rng.uniform(-0.5, 0.5), 0.6, 0], np.float32)
            obs, *_ = env.step(a)
            frames.append(obs)
    env.close()
    return frames


def test_fast_renderer_frames_are_byte_identical_to_gymnasium():
    official, fast = _episode(False, (0, 3), 90), _episode(True, (0, 3), 90)
    assert len(official) == len(fast) == 2 * 91
    for t, (a, b) in enumerate(zip(official, fast)):
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (96, 96, 3)
        assert np.array_equal(a, b), f"frame {t} differs"


def test_make_car_racing_switch(monkeypatch):
    assert isinstance(make_car_racing().unwrapped, FastCarRacing)
    assert make_car_racing().spec.id == FAST_ID
    assert make_car_racing().spec.max_episode_steps == 1000  # the official registration's limit
    monkeypatch.setenv("WMKIT_CARRACING", "official")
    assert type(make_car_racing().unwrapped) is not FastCarRacing
    monkeypatch.setenv("WMKIT_CARRACING", "fastest")
    with pytest.raises(ValueError, match="WMKIT_CARRACING"):
        make_car_racing()
