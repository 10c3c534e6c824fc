#!/usr/bin/env bash
# Seconds of the partition and eval stages of a finished pipeline run, for one or more builds of
# `smalltalk`, interleaved run by run (so drift of the machine hits every build alike).
#
#   bench/stage-seconds.sh RUN RUNS BIN [BIN ...]
#
# A BIN may carry environment settings after a colon, `BIN:VAR=VALUE[,VAR=VALUE]`, to time one
# build two ways (e.g. `target/release/smalltalk:SMALLTALK_STACK_MODELS=on`).
# RUN: a finished `cargo xtask pipeline` run folder (data, routers, experts); RUNS: repetitions.
# Partition: `smalltalk partition` of the training split into a fresh folder with
# configs/pipeline-cpu.toml; eval: `smalltalk eval` of the validation split with the pipeline's
# prefix sweep. Prints one markdown row per build and stage (wall seconds of each repetition, and
# the sequences/s of the fastest: rows partitioned from partition.json, held-out rows from
# eval.json), and checks that every build writes the same partition and the same headline
# perplexities.
set -euo pipefail
run=$1 runs=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A part evals
# `BIN[:VAR=VALUE,...]` → the key naming it in the tables (the file name and its settings).
key_of() { local spec=$1; echo "$(basename "${spec%%:*}")${spec#"${spec%%:*}"}"; }
# Runs the binary of a spec with the spec's environment settings.
run_spec() {
  local spec=$1
  shift
  local settings=()
  [[ $spec == *:* ]] && IFS=, read -ra settings <<< "${spec#*:}"
  env "${settings[@]}" "${spec%%:*}" "$@"
}
for ((i = 1; i <= runs; i++)); do
  for bin in "$@"; do
    key=$(key_of "$bin")
    out="$tmp/$key-partition-$i"
    t0=$(date +%s.%N)
    run_spec "$bin" --json partition --data "$run/data" --routers "$run/routers" --out "$out" \
      --config "$root/configs/pipeline-cpu.toml" > /dev/null
    t1=$(date +%s.%N)
    run_spec "$bin" --json eval --data "$run/data" --mixture "$run" \
      --split validation --prefix 32 --prefix-sweep 8,16,32,64,128,256 \
      --out "$tmp/$key-eval-$i.json" > /dev/null
    t2=$(date +%s.%N)
    part[$key]+=" $(echo "$t1 - $t0" | bc)"
    evals[$key]+=" $(echo "$t2 - $t1" | bc)"
    cmp -s <(cat "$out"/expert-*.rows 2>/dev/null || true) \
      <(cat "$tmp/$(key_of "$1")-partition-1"/expert-*.rows 2>/dev/null || true) ||
      echo "note: $key wrote another partition than $(key_of "$1")" >&2
  done
done
# Sequences per second of the fastest repetition: `rows / min(seconds)`.
rate() { python3 -c "import sys; print(round(int(sys.argv[1]) / min(map(float, sys.argv[2:]))))" "$@"; }
echo "| build | stage | seconds per run | sequences/s (fastest run) |"
echo "|---|---|---|---|"
for bin in "$@"; do
  key=$(key_of "$bin")
  rows=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rows'])" "$tmp/$key-partition-1/partition.json")
  held=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sequences'])" "$tmp/$key-eval-1.json")
  echo "| $key | partition ($rows rows) |${part[$key]} | $(rate "$rows" ${part[$key]}) |"
  echo "| $key | eval (validation, $held rows) |${evals[$key]} | $(rate "$held" ${evals[$key]}) |"
done
for bin in "$@"; do
  key=$(key_of "$bin")
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], 'mixture', r['mixture_ppl'], 'dense', r['dense_ppl'], 'purity', r['routing_purity'])" \
    "$tmp/$key-eval-1.json" "$key"
done
