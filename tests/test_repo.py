"""Repository hygiene: notebooks without outputs, environment.yml == pyproject.toml, lint, TOC, CI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_are_stored_without_outputs():
    bad = []
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count")):
                bad.append(f"{path.name} cell {i}")
    assert not bad, f"notebooks must be committed without outputs (nbconvert --clear-output): {bad}"


def test_notebooks_print_the_profile_first():
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        src = "".join(first_code["source"])
        assert "profile(" in src and "print(" in src, f"{path.name}: first code cell must print the profile"


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(map(_norm, project["dependencies"]))
    for extra in project["optional-dependencies"].values():
        wanted |= set(map(_norm, extra))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert have == wanted, (f"only in environment.yml: {sorted(have - wanted)}; "
                            f"only in pyproject: {sorted(wanted - have)}")
    assert "-e ." in pip_section, "environment.yml must install wmkit itself (-e .)"


def test_torch_is_never_pulled_unpinned_by_setup():
    setup = (ROOT / "tools" / "setup.sh").read_text()
    assert '"torch==2.13.0"' in setup and "import torch" in setup


def test_toc_entries_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    missing = [f for f in files if not any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    notebooks = {p.with_suffix("").relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks <= set(files), f"notebooks missing from _toc.yml: {sorted(notebooks - set(files))}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test    # 2." in readme
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call `make test`, the README's test command"


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (pip install -e '.[dev]')"
    out = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_gpu_book_build_lifts_the_cell_timeout():
    """`make book` in the gpu profile rewrites the timeout line of _config.yml; the pattern must match."""
    config = (ROOT / "_config.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    sed = re.search(r"sed '(s/[^']+)' _config.yml", makefile)
    assert sed, "the Makefile's book target no longer rewrites _config.yml for the gpu profile"
    out = subprocess.run(["sed", sed.group(1).replace("$$", "$")], input=config, capture_output=True, text=True,
                         check=True).stdout
    assert "\n  timeout: -1\n" in out and "timeout: 1800" not in out
    assert out.replace("timeout: -1", "timeout: 1800") == config  # nothing else changes
