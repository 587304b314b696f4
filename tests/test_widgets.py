"""The rollout scrubber: alignment, lazy frames, HTML content, series at the cursor, live widget."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from wmkit.exercises import ExerciseError, check
from wmkit.widgets import Scrubber, abs_error, is_static, to_uint8_frame


def _frames(t=6, h=8, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _decode_pngs(page: str) -> list[np.ndarray]:
    blob = re.search(r'<script type="application/json" class="wmk-data">(.*?)</script>', page, re.S).group(1)
    import json

    data = json.loads(blob.replace("<\\/", "</"))
    return [[np.array(Image.open(io.BytesIO(base64.b64decode(s)))) for s in seq] for seq in data["frames"]]


def test_frame_count_names_and_frames():
    real, dream = _frames(seed=1), _frames(seed=2)
    s = Scrubber({"real": real, "dream": dream})
    assert s.num_frames == 6 and s.names == ["real", "dream"]
    f = s.frame(3)
    assert np.array_equal(f["real"], real[3]) and np.array_equal(f["dream"], dream[3])
    with pytest.raises(IndexError, match="frame index 6 out of range"):
        s.frame(6)


def test_alignment_errors_are_clear():
    with pytest.raises(ValueError, match=r"not aligned.*'a': 6.*'b': 5"):
        Scrubber({"a": _frames(6), "b": _frames(5)})
    with pytest.raises(ValueError, match="series 'reward' has 4 values but the sequences have 6 frames"):
        Scrubber({"a": _frames(6)}, series={"reward": np.zeros(4)})
    with pytest.raises(ValueError, match="num_frames"):
        Scrubber({"lazy": lambda t: np.zeros((4, 4, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"'num_frames': 3"):
        Scrubber({"a": _frames(6)}, num_frames=3)
    with pytest.raises(ValueError, match="non-empty mapping"):
        Scrubber({})


def test_bad_frames_raise_instead_of_clipping():
    with pytest.raises(ValueError, match=r"float frames must be finite and in \[0, 1\]"):
        Scrubber({"a": np.full((2, 4, 4, 3), 1.5)}).frame(0)
    with pytest.raises(TypeError, match="uint8 or float"):
        Scrubber({"a": np.zeros((2, 4, 4, 3), dtype=np.int32)})
    with pytest.raises(ValueError, match=r"expected \(T,H,W\)"):
        Scrubber({"a": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="expected a frame of shape"):
        to_uint8_frame(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="contains inf"):
        Scrubber({"a": _frames()}, series={"v": np.array([0, 1, np.inf, 0, 0, 0])})


def test_float_and_grey_frames_convert_exactly():
    grey = np.linspace(0, 1, 16).reshape(1, 4, 4)  # (T=1, H, W) float
    f = Scrubber({"g": grey}).frame(0)["g"]
    assert f.shape == (4, 4, 3) and f.dtype == np.uint8
    assert f[0, 0, 0] == 0 and f[-1, -1, 2] == 255 and f[0, 1, 1] == round(255 / 15)


def test_lazy_frames_are_computed_on_demand_and_cached():
    calls = []

    def make(t):
        calls.append(t)
        return np.full((4, 4, 3), t, dtype=np.uint8)

    s = Scrubber({"lazy": make}, num_frames=50)
    assert calls == []  # nothing computed at construction
    assert s.frame(7)["lazy"][0, 0, 0] == 7
    s.frame(7)
    assert calls == [7]  # cached
    s.update(sequences={"lazy": lambda t: np.full((4, 4, 3), 100 + t, np.uint8)}, num_frames=10)
    assert s.num_frames == 10 and s.frame(7)["lazy"][0, 0, 0] == 107  # cache cleared by update


def test_html_contains_every_frame_exactly():
    real, dream = _frames(5, seed=3), _frames(5, seed=4)
    s = Scrubber({"real": real, "dream": dream}, series={"reward": np.arange(5.0)}, title="T<est>")
    page = s.to_html()
    decoded = _decode_pngs(page)
    assert len(decoded) == 2 and all(len(seq) == 5 for seq in decoded)
    for t in range(5):
        assert np.array_equal(decoded[0][t], real[t]) and np.array_equal(decoded[1][t], dream[t])
    assert "T&lt;est&gt;" in page  # title escaped
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing external
    assert 'max="4"' in page and "reward = 0" in page


def test_series_values_at_cursor():
    r = np.array([0.5, 1.0, np.nan, -2.0])
    s = Scrubber({"a": _frames(4)}, series={"reward": r, "value": r * 2})
    assert s.values_at(1) == {"reward": 1.0, "value": 2.0}
    assert np.isnan(s.values_at(2)["reward"])
    s.cursor = 3
    assert s.cursor == 3 and s.values_at(s.cursor)["value"] == -4.0


def test_live_widget_follows_slider():
    a = _frames(4, seed=5)
    s = Scrubber({"a": a}, series={"reward": np.array([1.0, 2.0, 3.0, 4.0])})
    w = s.widget()
    assert s.widget() is w
    s._slider.value = 2
    img = np.array(Image.open(io.BytesIO(s._images["a"].value)))
    assert np.array_equal(img, a[2])
    assert "reward = 3" in s._values.value and s.cursor == 2
    # the plot cursor moves: x of t=2 in a 4-step plot
    assert 'class="wmk-cursor" x1="' in s._plot.value
    s.update(series={"reward": np.array([9.0, 9.0, 9.0, 9.0])})
    assert "reward = 9" in s._values.value


def test_mimebundle_static_vs_live(monkeypatch):
    s = Scrubber({"a": _frames(2)})
    monkeypatch.setenv("WMKIT_RENDER", "static")
    assert is_static()
    bundle = s._repr_mimebundle_()
    assert "text/html" in bundle and "wmk-scrubber" in bundle["text/html"]
    monkeypatch.delenv("WMKIT_RENDER")
    bundle = s._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_abs_error_known_values():
    a = np.zeros((1, 2, 2, 3), np.uint8)
    b = np.full((1, 2, 2, 3), 10, np.uint8)
    assert (abs_error(a, b) == 10).all() and (abs_error(b, a, gain=4) == 40).all()
    assert (abs_error(a, np.full_like(b, 200), gain=4) == 255).all()  # saturates, documented
    with pytest.raises(ValueError, match="same shape"):
        abs_error(a, np.zeros((2, 2, 2, 3), np.uint8))


def test_exercise_check(capsys):
    assert check(None, 3, "ex", hint="try") is None and "not attempted" in capsys.readouterr().out
    assert check(3, 3, "ex") is True
    assert check(np.array([1.0, 2.0]), [1.0, 2.0000001], "ex") is True
    assert check(5, lambda v: v > 4, "ex") is True
    with pytest.raises(ExerciseError, match=r"\[ex\] 4 is not right; expected 3"):
        check(4, 3, "ex")
