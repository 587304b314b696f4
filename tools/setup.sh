#!/usr/bin/env bash
# Create .venv/ at the repository root and install wmkit with the book and dev extras.
#  * torch: if torch is already importable in the venv it is kept; otherwise torch==2.13.0 is installed
#    (the CPU wheel on a machine without CUDA that ships it, the normal wheel on a GPU machine).
#    pyproject.toml asks only for torch>=2.4, so pip never replaces an existing build.
#  * WMKIT_VENV_SYSTEM_SITE=1 makes the venv see the system's packages (e.g. a CUDA torch you installed).
#  * Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  flags=()
  [ "${WMKIT_VENV_SYSTEM_SITE:-0}" = 1 ] && flags+=(--system-site-packages)
  "$PYTHON" -m venv "${flags[@]}" .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=.venv/.wmkit-setup
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: keeping the installed torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
else
  echo "setup: installing torch==2.13.0"
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[book,dev]"
# The official nuScenes devkit, only for the test that opens our nuScenes fixture with it. Its metadata pins
# numpy<2 (pip would downgrade numpy), but it runs on numpy 2: install it without dependencies; its runtime
# imports are in the dev extra of pyproject.toml.
.venv/bin/python -m pip install -q --no-deps "nuscenes-devkit==1.2.0"
.venv/bin/python -c "import torch, wmkit; print(f'setup: wmkit {wmkit.__version__} with torch {torch.__version__}')"
echo "$want" > "$stamp"
