#!/usr/bin/env bash
# Decoder-LM throughput on one CUDA GPU: `smalltalk --backend cuda lm bench` next to PyTorch
# (bench/lm_torch.py --device cuda) on identical shapes, router-4.4m and expert-335m.
#
# Builds nothing. Build the binary beforehand on a machine with the toolchain and carry it:
#   cargo build --release -p smalltalk-cli --features cuda     # -> target/release/smalltalk
# then, from the repository root on the device machine:
#   bash bench/gpu.sh
# Environment: OUT (output folder, default ./gpu-out), SMALLTALK_BIN (default
# target/release/smalltalk), SMALLTALK_BENCH_PYTHON (interpreter with torch, default python3),
# PRECISION (bf16 or full, default bf16: mixed precision on both sides, f32 parameters and optimizer
# state with bf16 matrix products; torch.autocast on the PyTorch side), STEP_TIMEOUT (seconds per command, default 150;
# four commands, so the worst case stays within a 15-minute device budget with start-up).
#
# Writes under $OUT: one <case>.json per command (JSON lines from the tool), <case>.err (its
# stderr), status.jsonl (exit code and seconds of every command; 124 = timed out) and
# nvidia-smi.txt. One failing or timed-out command does not stop the others.
set -uo pipefail

BIN=${SMALLTALK_BIN:-target/release/smalltalk}
PY=${SMALLTALK_BENCH_PYTHON:-python3}
OUT=${OUT:-gpu-out}
PRECISION=${PRECISION:-bf16}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
mkdir -p "$OUT"

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >> "$OUT/nvidia-smi.txt"

# step NAME CMD...: run CMD with a timeout, stdout to NAME.json, stderr to NAME.err.
step() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  local start=$SECONDS
  timeout --kill-after=10 "$STEP_TIMEOUT" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  local rc=$?
  printf '{"step":"%s","rc":%d,"seconds":%d}\n' "$name" "$rc" "$((SECONDS - start))" >> "$OUT/status.jsonl"
  [ "$rc" -eq 0 ] || { echo "   $name failed (rc $rc); last stderr:" >&2; tail -n 5 "$OUT/$name.err" >&2; }
  return 0
}

if [ ! -x "$BIN" ]; then
  echo "no executable $BIN: build it with 'cargo build --release -p smalltalk-cli --features cuda' and carry it" >&2
  printf '{"step":"binary","rc":127,"seconds":0}\n' >> "$OUT/status.jsonl"
else
  step backends "$BIN" --json --backend cuda backends
fi

HAVE_TORCH=0
if timeout 60 "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> "$OUT/torch-import.err"; then
  HAVE_TORCH=1
else
  echo "$PY cannot import torch with CUDA: the PyTorch side is skipped (see $OUT/torch-import.err)" >&2
fi

# case NAME PRESET D_MODEL LAYERS HEADS D_FF TRAIN_BATCH SEQ STEPS
# (shapes as in LmConfig::preset: SwiGLU width 8d/3 rounded up to a multiple of 64; vocab 32000)
bench_case() {
  local name=$1 preset=$2 d=$3 layers=$4 heads=$5 dff=$6 batch=$7 seq=$8 steps=$9
  if [ -x "$BIN" ]; then
    step "$name-ours" "$BIN" --json --backend cuda lm bench --preset "$preset" --precision "$PRECISION" \
      --batch "$batch" --seq "$seq" --steps "$steps" --score-batch 1024 --score-prefix 32 --score-reps 5
  fi
  if [ "$HAVE_TORCH" -eq 1 ]; then
    step "$name-torch" "$PY" bench/lm_torch.py --device cuda --precision "$PRECISION" --vocab 32000 \
      --d-model "$d" --layers "$layers" --heads "$heads" --d-ff "$dff" \
      --batch "$batch" --seq "$seq" --steps "$steps" --score-batch 1024 --score-prefix 32 --score-reps 5
  fi
}

#          name    preset       d    layers heads d_ff batch seq  steps
bench_case router  router-4.4m  96   12     12    256  32    256  10
bench_case expert  expert-335m  1024 24     16    2752 8     1024 5

echo "done; results in $OUT" >&2
cat "$OUT/status.jsonl" >&2
