#!/usr/bin/env bash
# Wheels for tools/gpu_checks.sh on the device machine (Python 3.12, PyTorch already there, no network):
# torchao for the fp8 backend. Nothing else is needed: `import wmkit` and the benches import no environment
# package (gymnasium, crafter, vizdoom) at module level. Writes .whl/ (git-ignored through .git/info/exclude).
set -eu
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "torchao${TORCHAO_VERSION:+==$TORCHAO_VERSION}"
ls -la .whl
