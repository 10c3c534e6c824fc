#!/usr/bin/env bash
# Our kernels at every instruction-set level this CPU has, for one or more builds, interleaved
# process by process (so drift of the machine hits every build and level alike):
# `SMALLTALK_CPU_ISA` caps the fused kernels; burn's matrix products keep the `gemm` crate's own
# choice at every level.
#
#   [PRESET=study-small] [CASE=train] bench/isa-compare.sh RUNS BIN [BIN ...]
#
# RUNS: processes per build and level; BIN: release `smalltalk` builds; CASE: train (tokens/s of
# the median of 3 timed steps, batch 32 x 256) or score (sequences/s of the median of 3 calls,
# 1,024 rows x 32 tokens). Prints one markdown row per build and level with every process's
# figure.
set -euo pipefail
runs=$1
shift
preset=${PRESET:-study-small} case=${CASE:-train}
levels=$(python3 - <<'EOF'
import re
flags = open("/proc/cpuinfo").read()
have = lambda *f: all(re.search(r"\b%s\b" % x, flags) for x in f)
out = ["baseline"]
if have("avx2", "fma"):
    out.append("avx2")
    if have("avx512f", "avx512bw", "avx512vl", "avx512dq"):
        out.append("avx512")
print(" ".join(reversed(out)))
EOF
)
key=$([ "$case" = train ] && echo tokens_per_s_median || echo sequences_per_s_median)
declare -A rates
for ((i = 1; i <= runs; i++)); do
  for bin in "$@"; do
    for isa in $levels; do
      rate=$(SMALLTALK_CPU_ISA=$isa "$bin" --json lm bench --preset "$preset" --cases "$case" \
        --steps 3 --score-reps 3 | python3 -c "import json,sys; print(round(json.loads(sys.stdin.readlines()[-1])['$key']))")
      rates["$(basename "$bin") $isa"]+=" $rate /"
    done
  done
done
echo "| build | $preset $case, SMALLTALK_CPU_ISA | $key, $runs processes |"
echo "|---|---|---|"
for bin in "$@"; do
  for isa in $levels; do
    r=${rates["$(basename "$bin") $isa"]}
    echo "| $(basename "$bin") | $isa |${r%/} |"
  done
done
