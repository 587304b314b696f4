#!/usr/bin/env bash
# Install sheeprl 0.8.4 (a public PyTorch port of DreamerV3) and the pure-python packages its DreamerV3
# agent and train function import, pinned, into the folder given as argument -- NOT into .venv, and never
# torch (torch comes from the interpreter that runs the benchmark). Then run the comparison with:
#
#   bash tools/bench_sheeprl.sh /tmp/sl
#   PYTHONPATH=/tmp/sl .venv/bin/python tools/bench_sheeprl.py --threads 1
#
# Everything is installed with --no-deps so that pip cannot pull in a different (multi-GB CUDA) torch.
# Already in wmkit's environment and used as they are: numpy, gymnasium, tensorboard, PyYAML, packaging,
# tqdm, fsspec, typing_extensions, markdown-it-py, pygments. opencv-python-headless stands in for sheeprl's
# opencv-python (same cv2 module, no GUI libraries); moviepy (videos) is not imported by the code used here.
set -euo pipefail
target=${1:?usage: bash tools/bench_sheeprl.sh TARGET_DIR}
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
"$python" -m pip install --quiet --no-deps --target "$target" \
  sheeprl==0.8.4 \
  lightning==2.6.6 lightning-utilities==0.15.3 torchmetrics==1.9.0 \
  hydra-core==1.3.8 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 \
  rich==15.0.0 python-dotenv==1.2.4 \
  opencv-python-headless==5.0.0.93
if [ -e "$target/torch" ]; then
  echo "error: torch was installed into $target; remove it" >&2
  exit 1
fi
PYTHONPATH="$target" "$python" -c "from sheeprl.algos.dreamer_v3.dreamer_v3 import train; print('sheeprl OK')"
