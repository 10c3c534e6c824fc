#!/usr/bin/env bash
# Peak memory of one training step at the router shape (router-4.4m: d 256, 8 layers, 4 heads)
# against sequence length and vocabulary size, with the backend's tiled ops (`--kernel auto`)
# and with burn's reference ops (`--kernel reference`: full `[tokens, vocab]` logits and
# `[batch, heads, seq, seq]` scores). Each point is a fresh process; the figure is its peak
# resident set (`peak_rss_bytes` of `lm bench --json`). On wgpu over lavapipe (Vulkan on the
# CPU) device memory is host memory, so the resident set holds every device buffer.
#
#   bash bench/peak-memory.sh > peak-memory.md     # the table on stdout, progress on stderr
# Environment: SMALLTALK_BIN (default target/release/smalltalk, built with --features wgpu),
# BACKEND (default wgpu), BATCH (default 2), SEQS (default "128 256 512 1024"), VOCABS
# (default "8000 32000"; the sequence sweep runs at the last one, the vocabulary sweep at 256).
set -euo pipefail
BIN=${SMALLTALK_BIN:-target/release/smalltalk}
BACKEND=${BACKEND:-wgpu}
BATCH=${BATCH:-2}
SEQS=${SEQS:-128 256 512 1024}
VOCABS=${VOCABS:-8000 32000}
LAST_VOCAB=${VOCABS##* }

# point SEQ VOCAB KERNEL: peak resident MiB of one measured training step (after one warm-up).
point() {
  echo "== seq $1, vocab $2, kernel $3" >&2
  "$BIN" --backend "$BACKEND" --json lm bench --preset router-4.4m --cases train --steps 1 \
    --batch "$BATCH" --seq "$1" --vocab "$2" --kernel "$3" |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); print(round(r["peak_rss_bytes"]/2**20))'
}

echo "Peak resident memory (MiB) of \`lm bench --preset router-4.4m --cases train --steps 1 --batch $BATCH\` on \`$BACKEND\`:"
echo
echo "| seq | vocab | tiled ops (MiB) | reference ops (MiB) |"
echo "|---|---|---|---|"
for seq in $SEQS; do
  echo "| $seq | $LAST_VOCAB | $(point "$seq" "$LAST_VOCAB" auto) | $(point "$seq" "$LAST_VOCAB" reference) |"
done
for vocab in $VOCABS; do
  [ "$vocab" = "$LAST_VOCAB" ] && continue
  echo "| 256 | $vocab | $(point 256 "$vocab" auto) | $(point 256 "$vocab" reference) |"
done
