#!/usr/bin/env bash
# Wheels for tools/gpu_checks.sh on the device machine (Python 3.12, PyTorch already there, no network):
# torchao for the fp8 backend, einops and safetensors (wmkit's stage 3-4 modules import them; a venv holding only
# torch and numpy lacks them), and sheeprl with its imports for the DreamerV3 comparison. wmkit's benches import no
# environment package (crafter, vizdoom) at module level. Writes .whl/ (git-ignored through .git/info/exclude).
set -eu
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "torchao${TORCHAO_VERSION:+==$TORCHAO_VERSION}"
# sheeprl 0.8.4 and what its DreamerV3 train function imports, for the >= 3x-sheeprl-on-a-GPU target of issue 8
# (tools/bench_sheeprl.py). The same pins as tools/bench_sheeprl.sh, plus the pure-python packages the device image
# may lack; found by importing sheeprl's train function and timing one update in a venv holding only torch and numpy.
# Not OpenCV (61 MB: the device tool carries 64 MiB in all): sheeprl imports cv2 only for env wrappers the update
# never calls, and tools/bench_sheeprl.py puts a placeholder that raises on use in its place.
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  sheeprl==0.8.4 lightning==2.6.6 lightning-utilities==0.15.3 torchmetrics==1.9.0 hydra-core==1.3.8 omegaconf==2.3.0 \
  rich==15.0.0 python-dotenv==1.2.4 packaging gymnasium cloudpickle \
  farama-notifications pyyaml tqdm tensorboard pygments markdown-it-py mdurl safetensors einops
# antlr4-python3-runtime 4.9.3 (omegaconf's parser) is published as a source archive only: build its pure-python wheel
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -la .whl
