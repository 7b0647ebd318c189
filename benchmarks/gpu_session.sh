#!/usr/bin/env bash
# The prepared device check of issue 3, sized for one call of the lent GPU machine (<= 9.5 min of commands).
#
# Run from the repository root with the CIFAR-10 zip copied to data/ (ignored, carried):
#   mkdir -p data && cp ../shared/data/cifar10-train-jpeg.zip data/
#   device run: bash benchmarks/gpu_session.sh            (carry: ["data"], timeout_s: 600)
# Each step has its own time limit, so a slow step cannot take the later ones with it; every step's log lands
# in $OUT (the device tool brings it back). SMOKE=1 runs the same steps at toy sizes on the CPU, to check the
# script itself on a machine without a GPU.
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DATA=${DATA:-data/cifar10-train-jpeg.zip}

if [ "${SMOKE:-0}" = 1 ]; then
  DEVICE=cpu; SIZE="--images 256 --epochs 1 --eval-images 200 --width 8 --loader-workers 0"; WORKERS=2
  TESTS="DCSOD_TEST_DEVICES=cpu"; LIMITS=(400 300 300)
else
  DEVICE=cuda; SIZE="--images 25000 --epochs 20"; WORKERS=4
  TESTS="DCSOD_TEST_DEVICES=cuda"; LIMITS=(120 300 150)
fi

step() {  # step NAME LIMIT_S COMMAND...: run with a limit, log to $OUT/NAME.log, report the outcome in one line
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  tail -n 14 "$OUT/$name.log"
}

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
  | tee "$OUT/summary.txt"

# 1. correctness of the CUDA path: bf16 autocast, device-resident data, CUDA graphs, teachers online/cached
step device_tests "${LIMITS[0]}" env $TESTS $PY -m pytest -q -p no:cacheprovider tests/test_device.py

# 2. paper budget, median architecture: plain fp32 reference vs the fast path (concurrent workers, batch 512)
step speed "${LIMITS[1]}" $PY benchmarks/candidate_speed.py --data "$DATA" --device $DEVICE $SIZE --archs k6-median \
  --workers $WORKERS --repeats $WORKERS --fast-batch 512

# 3. the fast path with torch.compile + CUDA graphs, same sizes (no reference: step 2 timed it on this card)
step speed_compiled "${LIMITS[2]}" $PY benchmarks/candidate_speed.py --data "$DATA" --device $DEVICE $SIZE \
  --archs k6-median --workers $WORKERS --repeats $WORKERS --fast-batch 512 --skip-reference --compile \
  --compile-mode reduce-overhead

cat "$OUT/summary.txt"
