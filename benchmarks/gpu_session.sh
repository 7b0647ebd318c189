#!/usr/bin/env bash
# The prepared device check of issues 20 and 18, sized for ONE call of the lent GPU machine: <= 7 minutes of
# commands (the steps' limits add up to 415 s), short tables at the end ($OUT/summary.md, $OUT/text_vae.log).
#
# Run from the repository root with the CIFAR-10 zip and PTB copied to data/ (ignored by .gitignore's /data/,
# carried):
#   mkdir -p data && cp ../shared/data/cifar10-train-jpeg.zip data/ && cp -r ../shared/data/ptb data/
#   device run: bash benchmarks/gpu_session.sh            (carry: ["data"], timeout_s: 480)
# Steps, each under its own `timeout` so a slow one cannot eat the rest; every step's log lands in $OUT:
#   1. tests/test_device.py on CUDA (bf16, device-resident data, the captured step against eager steps, teachers
#      online and cached inside the graph, one capture per candidate), without the torch.compile test (slow).
#   2. the plain fp32 loop (DataLoader + torchvision transforms, batch 128) at the paper's per-candidate budget
#      (25,000 images), 3 epochs, extrapolated to 20.
#   3. the fast path (bf16, channels_last, device-resident uint8 data, on-device augmentation, batch 512, CUDA
#      graph) at 1, 2, 4 and 8 concurrent worker processes on the card, same budget and extrapolation.
#   4. the fast path without the CUDA graph (eager) at 1 worker: what the graph itself buys.
#   5. the table: images/s, seconds per candidate at 20 epochs (extrapolated), ratio to the plain loop, where
#      throughput stops rising, the goal (<= 10 s and >= 10x).
#   6. issue 18: text-VAE training tokens/s on PTB at the ptb-paper size, one epoch per posterior
#      (benchmarks/text_vae_tokens.py; skipped when data/ptb is missing).
# SMOKE=1 runs the same steps at toy sizes on the CPU (CUDA graph off there: it needs CUDA), to check the script
# on a machine without a GPU.
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
rm -f "$OUT/rows.jsonl" "$OUT/summary.txt"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DATA=${DATA:-data/cifar10-train-jpeg.zip}
WORKERS="1 2 4 8"

if [ "${SMOKE:-0}" = 1 ]; then
  export OMP_NUM_THREADS=1  # one thread per process: a small, shared CPU slows badly with more
  DEVICE=cpu; TESTS=cpu; GRAPH=--no-cuda-graph; TEST_FILTER="graph or precision"
  SIZE="--images 256 --epochs 2 --eval-images 200 --width 8 --loader-workers 0 --fast-batch 64 --threads 1"
  LIMITS=(120 120 400 120 20 120); WAIT="--start-timeout 250 --phase-timeout 100"; TV="--cpu-preset"
else
  DEVICE=cuda; TESTS=cuda; GRAPH=--cuda-graph; TEST_FILTER="not compiled"
  SIZE="--images 25000 --epochs 3 --fast-batch 512"
  LIMITS=(90 60 150 45 10 60); WAIT="--start-timeout 75 --phase-timeout 60"; TV=""
fi
SPEED=("$PY" benchmarks/candidate_speed.py --data "$DATA" --device $DEVICE $SIZE --archs k6-median
       --jsonl "$OUT/rows.jsonl")

step() {  # step NAME LIMIT_S COMMAND...: run with a limit, log to $OUT/NAME.log, report the outcome in one line
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  tail -n 4 "$OUT/$name.log"
}

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
  | tee -a "$OUT/summary.txt"

step device_tests "${LIMITS[0]}" env DCSOD_TEST_DEVICES=$TESTS $PY -m pytest -q -x -p no:cacheprovider \
  tests/test_device.py -k "$TEST_FILTER"
step plain_fp32 "${LIMITS[1]}" "${SPEED[@]}" --skip-fast
step fast_graph "${LIMITS[2]}" "${SPEED[@]}" --skip-reference $GRAPH --workers $WORKERS $WAIT
step fast_eager "${LIMITS[3]}" "${SPEED[@]}" --skip-reference --no-cuda-graph --workers 1
step summary "${LIMITS[4]}" "$PY" benchmarks/candidate_speed.py --summary "$OUT/rows.jsonl"
cp "$OUT/summary.log" "$OUT/summary.md" 2>/dev/null
if [ -d data/ptb ]; then
  step text_vae "${LIMITS[5]}" "$PY" benchmarks/text_vae_tokens.py --data-dir data --device $DEVICE $TV \
    --jsonl "$OUT/text_vae.jsonl"
else
  echo "== text_vae: skipped (no data/ptb)" | tee -a "$OUT/summary.txt"
fi
echo
cat "$OUT/summary.txt"
echo
cat "$OUT/summary.md" 2>/dev/null || echo "no rows measured"
