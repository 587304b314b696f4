"""Every notebook executes top to bottom in the smoke profile, each within its budget.

Budget: 240 s of wall time per notebook on the 2-core CI machine (BUDGET_S below; a notebook may have
its own entry in BUDGETS with a reason). On an idle machine the smoke notebooks take 5-50 s; the margin
is for a machine that is busy with something else (measured: 02b took 186 s while a cpu-profile book
build trained beside it). The smoke profile exists so that this holds: it runs every code path with
tiny sizes. Notebooks run live (no WMKIT_RENDER), as a reader's kernel would; the book
build runs them again in static mode (tests/test_book_browser.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BUDGET_S = 240
BUDGETS: dict[str, int] = {}

pytestmark = pytest.mark.slow


def test_there_are_notebooks():
    assert any(p.name.startswith("00_tour") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_in_smoke_profile(path: Path, monkeypatch, tmp_path):
    monkeypatch.setenv("WMKIT_PROFILE", "smoke")
    monkeypatch.delenv("WMKIT_RENDER", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # runs/ and data written by a notebook go to a scratch folder, not the repository
    monkeypatch.setenv("WMKIT_RUNS_DIR", str(tmp_path / "runs"))
    nb = nbformat.read(path, as_version=4)
    budget = BUDGETS.get(path.stem, BUDGET_S)
    client = NotebookClient(nb, timeout=budget, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    assert elapsed < budget, f"{path.name} took {elapsed:.0f} s in the smoke profile (budget {budget} s)"
    assert os.environ["WMKIT_PROFILE"] == "smoke"
