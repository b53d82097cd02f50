#!/usr/bin/env bash
# Replay throughput on one release sluice-broker (a temporary data dir):
# sluice-perf (librdkafka, acks=1) writes MESSAGES records of SIZE bytes to a
# 6-partition topic, then `sluice replay` copies all of it into another
# 6-partition topic on the same broker (idempotent producer, acks=all,
# read_committed fetch), and the script prints the replay's RESULT line:
# payload MB/s (10^6 bytes of key + value + headers per second) from the
# replay's own summary and from the wall time of the whole command. Not part
# of the test suite: numbers are measured, never asserted.
#
#   ./scripts/bench-replay.sh                      # ~500 MB: 500000 x 1 KiB
#   MESSAGES=100000 ./scripts/bench-replay.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGES="${MESSAGES:-500000}"
SIZE="${SIZE:-1024}"
PARTITIONS="${PARTITIONS:-6}"
PORT="${PORT:-19492}"
# Two builds, so the broker and `sluice` get the same features as in
# scripts/test.sh's release build and are not rebuilt with the test crate's.
cargo build --release -q -p sluice-broker -p sluice-tui --bin sluice-broker --bin sluice
cargo build --release -q -p sluice-tests --bin sluice-perf
TARGET="${CARGO_TARGET_DIR:-target}/release"

DIR=$(mktemp -d)
"$TARGET/sluice-broker" --listen "127.0.0.1:$PORT" --data-dir "$DIR/data" >"$DIR/out" 2>"$DIR/err" &
BROKER=$!
trap 'kill "$BROKER" 2>/dev/null; wait "$BROKER" 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 300); do grep -q "listening on" "$DIR/out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$DIR/out" || { echo "broker did not start" >&2; cat "$DIR/err" >&2; exit 1; }
B="127.0.0.1:$PORT"

echo "== writing $MESSAGES records of $SIZE bytes to $PARTITIONS partitions"
"$TARGET/sluice-perf" produce --bootstrap "$B" --topic replay-src --messages "$MESSAGES" \
    --size "$SIZE" --acks 1 --partitions "$PARTITIONS" | grep RESULT
"$TARGET/sluice" --bootstrap "$B" topics create replay-dst --partitions "$PARTITIONS"

echo "== sluice replay --from replay-src --to replay-dst"
START=$(date +%s.%N)
"$TARGET/sluice" --bootstrap "$B" replay --from replay-src --to replay-dst --output json >"$DIR/summary.json"
END=$(date +%s.%N)
python3 - "$DIR/summary.json" "$START" "$END" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
print("RESULT replay records=%d bytes=%d secs=%.3f mb_per_sec=%.1f wall_secs=%.3f wall_mb_per_sec=%.1f"
      % (s["records"], s["bytes"], s["elapsed_ms"] / 1000, s["mb_per_s"], wall, s["bytes"] / 1e6 / wall))
PY
echo "BROKER cpu_secs=$(awk '{printf "%.2f", ($14+$15)/100}' "/proc/$BROKER/stat") $(grep VmHWM "/proc/$BROKER/status" | tr -s ' \t' ' ')"
