#!/usr/bin/env bash
# Producer throughput with 1 KiB values and acks=all: plain
# (enable.idempotence=false), idempotent, and transactional committing every
# 100 ms, each on one broker and on three brokers with replication factor 3
# (same harness, same machine). Prints RESULT lines; figures are recorded in
# docs/benchmarks.md, never asserted.
#
#   ./scripts/bench-txn.sh
#   MESSAGES=500000 COMMIT_INTERVAL_MS=1000 ./scripts/bench-txn.sh
#   BOOTSTRAP=host:9092 RF=3 ./scripts/bench-txn.sh     # an existing cluster
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGES="${MESSAGES:-200000}"
COMMIT_INTERVAL_MS="${COMMIT_INTERVAL_MS:-100}"
cargo build --release -q -p sluice-broker -p sluice-tests --bin sluice-broker --bin sluice-txn-bench
BENCH="${CARGO_TARGET_DIR:-target}/release/sluice-txn-bench"
COMMON=(--messages "$MESSAGES" --size 1024 --partitions 6 --commit-interval-ms "$COMMIT_INTERVAL_MS")

if [ -n "${BOOTSTRAP:-}" ]; then
    echo "== acks=all, 1 KiB messages, 6 partitions, against $BOOTSTRAP (replication factor ${RF:-3})"
    "$BENCH" --bootstrap "$BOOTSTRAP" --rf "${RF:-3}" "${COMMON[@]}" | grep RESULT
    exit 0
fi

for nodes_rf in "1 1" "3 3"; do
    set -- $nodes_rf
    echo "== acks=all, 1 KiB messages, 6 partitions: $1 broker(s), replication factor $2"
    "$BENCH" --nodes "$1" --rf "$2" "${COMMON[@]}" | grep RESULT
done
