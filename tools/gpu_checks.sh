#!/usr/bin/env bash
# Every GPU figure the open issues ask for, in ONE prepared run (~9 minutes on an H100/H200), for a session
# that is lent a GPU (the device tool gives 15 minutes of device time per session, all calls together).
#
#   here, once:  bash tools/gpu_wheels.sh        # torchao + what the benches need, as py3.12 wheels in .whl/
#   device run:  command="bash tools/gpu_checks.sh", carry=[".whl"], timeout_s=560
#   locally:     GPU_CHECKS_DRY=1 bash tools/gpu_checks.sh   # tiny sizes on the CPU: checks the script itself
#
# Results: JSON lines (one file per bench) and a log under $OUT (the device tool's folder) or runs/gpu_checks.
# Copy the fp8 files into book/stage3/fp8_results/ (the FP8 page reads every *.jsonl there).
# Each step has its own time limit, so one that hangs or fails does not cost the others; the log says which.
set -u
OUT=${OUT:-runs/gpu_checks}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
PY=${PY:-python3}
DRY=${GPU_CHECKS_DRY:-0}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ls .whl/*.whl >/dev/null 2>&1; then  # the device image lacks torchao and the env packages
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log the outcome, never stop the script
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc after $((SECONDS - t0)) s" | tee -a "$LOG"
}

$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
from wmkit.precision import fp8_status
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
print("fp8_status", fp8_status())
EOF

if [ "$DRY" = 1 ]; then
  DEV=cpu; FP8_SIZES=64,128; FP8_TOKENS=64; DREAMER="tiny"; SHEEPRL="tiny"; GENIE_PROFILE=smoke; DIFF_PROFILE=smoke; REP=1
  COMPILED_MODEL=false  # the CPU emulation recompiles at every FP8 layer under torch.compile: minutes
  export WMKIT_PROFILE=smoke
else
  DEV=cuda; FP8_SIZES=512,1024,2048,4096,8192; FP8_TOKENS=8192; DREAMER="s size50m"; SHEEPRL="tiny size3m s"
  GENIE_PROFILE=gpu
  DIFF_PROFILE=gpu; REP=5; COMPILED_MODEL=true
  export WMKIT_PROFILE=gpu
fi

# issue 13: FP8 vs bf16 -- layer sweep (crossover), the gpu-profile transformer step, peak memory; eager and compiled
step fp8-eager 150 $PY -m wmkit.bench fp8 --device $DEV --sizes $FP8_SIZES --tokens $FP8_TOKENS \
  --repeat $REP --out "$OUT/fp8-eager.jsonl" --note "tools/gpu_checks.sh"
step fp8-compiled 150 $PY -m wmkit.bench fp8 --device $DEV --sizes $FP8_SIZES --tokens $FP8_TOKENS \
  --repeat $REP --compile true --model $COMPILED_MODEL --out "$OUT/fp8-compiled.jsonl" --note "tools/gpu_checks.sh"
# issue 8: DreamerV3 update time per size (the Atari 100k projection is printed by the bench)
step dreamer 100 sh -c "$PY -m wmkit.bench dreamer --device $DEV --sizes $DREAMER --repeat $REP --warmup 1 \
  --no-loop --bf16 > '$OUT/dreamer.jsonl'"
# issue 8: >= 3x sheeprl 0.8.4's update at equal size on a GPU (fp32, eager, both in one interleaved run); needs the
# sheeprl wheels of tools/gpu_wheels.sh (a dry run here: PYTHONPATH=/tmp/sl after tools/bench_sheeprl.sh /tmp/sl)
step sheeprl 120 sh -c "$PY tools/bench_sheeprl.py --device $DEV --sizes $SHEEPRL --repeat $REP --warmup 1 \
  > '$OUT/sheeprl.jsonl'"
# issues 11, 12: the gpu profile's training and generation speed
step genie 60 sh -c "$PY -m wmkit.bench genie --device $DEV --profiles $GENIE_PROFILE --skip-cost > '$OUT/genie.jsonl'"
step diffusion 60 sh -c "$PY -m wmkit.bench diffusion --device $DEV --profile $DIFF_PROFILE --steps 1 3 \
  > '$OUT/diffusion.jsonl'"
# the expected wall time of the gpu-profile notebooks of stages 2-4 on this card (wmkit.walltime; stage 1 mostly
# times CarRacing / VizDoom on the CPU, which this check skips)
step walltime 200 sh -c "for nb in 02b 02c 03a 03b 03d 04; do $PY -m wmkit.walltime \$nb --device $DEV --repeat 3 \
  --profile \$( [ $DRY = 1 ] && echo smoke || echo gpu ); done > '$OUT/walltime.txt'"
echo "done; files in $OUT:" | tee -a "$LOG"
ls -la "$OUT" | tee -a "$LOG"
