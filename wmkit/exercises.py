"""Exercises that check themselves.

A notebook exercise leaves ``answer = None`` for the learner and ends with
``check(answer, expected, "name", hint="...")``:

* not attempted yet (``None``) -> prints the hint, so the book still builds;
* right -> prints a tick;
* wrong -> raises :class:`ExerciseError` with what was expected, so a wrong answer is never silent.

``expected`` may be a value (compared with ``rtol``/``atol`` for numbers and arrays) or a predicate
``callable(answer) -> bool``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class ExerciseError(AssertionError):
    """A wrong answer to an exercise."""


def check(answer: Any, expected: Any | Callable[[Any], bool], name: str, hint: str = "",
          rtol: float = 1e-3, atol: float = 1e-6) -> bool | None:
    """Check ``answer``; returns True when right, None when not attempted, raises when wrong."""
    if answer is None:
        print(f"[{name}] not attempted yet. {hint}".rstrip())
        return None
    if callable(expected):
        ok = bool(expected(answer))
        shown = "an answer satisfying the exercise's condition"
    else:
        a, e = np.asarray(answer), np.asarray(expected)
        if a.dtype.kind in "biuf" and e.dtype.kind in "biuf":
            ok = a.shape == e.shape and bool(np.allclose(a, e, rtol=rtol, atol=atol))
        else:
            ok = bool(np.array_equal(a, e))
        shown = repr(expected)
    if not ok:
        raise ExerciseError(f"[{name}] {answer!r} is not right; expected {shown}. {hint}".rstrip())
    print(f"[{name}] \u2713 correct")
    return True
