#!/usr/bin/env bash
# Peak memory of one training step at the router shape (router-4.4m: d 96, 12 layers, 12 heads)
# against sequence length and vocabulary size, with the backend's fused ops (`--kernel auto`: the CubeCL kernels on wgpu and cuda)
# and with burn's reference ops (`--kernel reference`: full `[tokens, vocab]` logits and
# `[batch, heads, seq, seq]` scores). Each point is a fresh process; the figures are the memory
# its device's pools reserved (`device_reserved_bytes` of `lm bench --json`: the pools grow to
# the step's peak and keep it) and the process's peak resident set (`peak_rss_bytes`; on
# lavapipe, Vulkan on the CPU, it also holds the ≈ 700 MiB of the Vulkan runtime).
#
#   bash bench/peak-memory.sh > peak-memory.md     # the table on stdout, progress on stderr
# Environment: SMALLTALK_BIN (default target/release/smalltalk, built with --features wgpu),
# (a debug build measures the same device memory, only slower)
# BACKEND (default wgpu), BATCH (default 1), SEQS (default "128 512"), VOCABS (default
# "32000 8000"; the sequence sweep runs at the last one, the vocabulary sweep at VOCAB_SEQ,
# default 128). Each point is a minute or more on lavapipe.
set -euo pipefail
BIN=${SMALLTALK_BIN:-target/release/smalltalk}
BACKEND=${BACKEND:-wgpu}
BATCH=${BATCH:-1}
SEQS=${SEQS:-128 512}
VOCABS=${VOCABS:-32000 8000}
VOCAB_SEQ=${VOCAB_SEQ:-128}
LAST_VOCAB=${VOCABS##* }

# point SEQ VOCAB KERNEL: "device MiB / resident MiB" after one measured training step (and
# one warm-up step).
point() {
  echo "== seq $1, vocab $2, kernel $3" >&2
  "$BIN" --backend "$BACKEND" --json lm bench --preset router-4.4m --cases train --steps 1 \
    --batch "$BATCH" --seq "$1" --vocab "$2" --kernel "$3" |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); mib=lambda b: "-" if b is None else round(b/2**20); print(mib(r["device_reserved_bytes"]), "/", mib(r["peak_rss_bytes"]))'
}

echo "Memory after one training step of \`lm bench --preset router-4.4m --cases train --steps 1 --batch $BATCH\` on \`$BACKEND\`, device pools / process resident set, MiB:"
echo
echo "| seq | vocab | fused ops (MiB) | reference ops (MiB) |"
echo "|---|---|---|---|"
for seq in $SEQS; do
  echo "| $seq | $LAST_VOCAB | $(point "$seq" "$LAST_VOCAB" auto) | $(point "$seq" "$LAST_VOCAB" reference) |"
done
for vocab in $VOCABS; do
  [ "$vocab" = "$LAST_VOCAB" ] && continue
  echo "| $VOCAB_SEQ | $vocab | $(point "$VOCAB_SEQ" "$vocab" auto) | $(point "$VOCAB_SEQ" "$vocab" reference) |"
done
