#!/usr/bin/env bash
# Single-node benchmark: starts a release sluice-broker on a temporary data dir
# and runs the loads of issue 2 with sluice-perf (librdkafka), printing each
# RESULT line plus the broker's CPU time and peak RSS. Figures are recorded in
# docs/benchmarks.md. Not part of the test suite: numbers are measured, never
# asserted.
#
#   ./scripts/bench.sh            # all loads
#   MESSAGES=1000000 ./scripts/bench.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGES="${MESSAGES:-3000000}"
PORT="${PORT:-19392}"
cargo build --release -q -p sluice-broker -p sluice-tests --bin sluice-broker --bin sluice-perf --bin sluice-group-bench
TARGET="${CARGO_TARGET_DIR:-target}/release"
PERF="$TARGET/sluice-perf"

run_broker() { # extra env as arguments
    local dir
    dir=$(mktemp -d)
    env "$@" "$TARGET/sluice-broker" --listen "127.0.0.1:$PORT" --data-dir "$dir" >"$dir.out" 2>"$dir.err" &
    BROKER=$!
    for _ in $(seq 100); do grep -q "listening on" "$dir.out" 2>/dev/null && return; sleep 0.1; done
    echo "broker did not start" >&2; cat "$dir.err" >&2; exit 1
}

stop_broker() {
    local cpu
    cpu=$(awk '{printf "%.2f", ($14+$15)/100}' "/proc/$BROKER/stat")
    echo "BROKER cpu_secs=$cpu $(grep VmHWM "/proc/$BROKER/status" | tr -s ' \t' ' ')"
    kill "$BROKER"; wait "$BROKER" || true
}

B="127.0.0.1:$PORT"
echo "== acks=1, 100-byte messages, 6 partitions"
run_broker
"$PERF" produce --bootstrap "$B" --topic acks1 --messages "$MESSAGES" --size 100 --acks 1 --partitions 6 | grep RESULT
echo "== consume the same topic"
"$PERF" consume --bootstrap "$B" --topic acks1 --messages "$MESSAGES" | grep RESULT
stop_broker

echo "== acks=all, 1 KiB messages, fsync on every acks=all produce (default)"
run_broker
"$PERF" produce --bootstrap "$B" --topic all1k --messages $((MESSAGES / 3)) --size 1024 --acks all --partitions 6 | grep RESULT
stop_broker

echo "== acks=all, 1 KiB messages, log.flush.acks.all=false (Kafka's behaviour)"
run_broker SLUICE_LOG_FLUSH_ACKS_ALL=false
"$PERF" produce --bootstrap "$B" --topic all1k --messages $((MESSAGES / 3)) --size 1024 --acks all --partitions 6 | grep RESULT
stop_broker

echo "== latency: acks=all at a fixed 20k msgs/s, 100-byte messages"
run_broker
"$PERF" produce --bootstrap "$B" --topic lat --messages 400000 --size 100 --acks all --partitions 6 --rate 20000 | grep RESULT
stop_broker

echo "== consumer groups: rebalance of a 10-member group, failover after a member dies"
run_broker SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS=0
"$TARGET/sluice-group-bench" --bootstrap "$B" --members 10 --partitions 12 | grep RESULT
stop_broker
