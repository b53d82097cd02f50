#!/usr/bin/env bash
# Replication benchmarks on one machine: acks=all throughput and p99 latency
# with replication factor 3 on three brokers against one broker (same
# harness, same machine), and failover time (kill -9 of a partition leader to
# the first acknowledged produce). Prints RESULT lines; figures are recorded
# in docs/benchmarks.md, never asserted.
#
#   ./scripts/bench-cluster.sh
#   MESSAGES=300000 ./scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGES="${MESSAGES:-300000}"
ROUNDS="${ROUNDS:-5}"
cargo build --release -q -p sluice-broker -p sluice-tests --bin sluice-broker --bin sluice-perf --bin sluice-cluster-bench
BENCH="${CARGO_TARGET_DIR:-target}/release/sluice-cluster-bench"

for nodes_rf in "1 1" "3 3"; do
    set -- $nodes_rf
    echo "== acks=all, 1 KiB messages, 6 partitions: $1 broker(s), replication factor $2"
    "$BENCH" throughput --nodes "$1" --rf "$2" -- --messages "$MESSAGES" --size 1024 --acks all --partitions 6 | grep RESULT
    echo "== latency: acks=all at a fixed 20k msgs/s, 100-byte messages: $1 broker(s), replication factor $2"
    "$BENCH" throughput --nodes "$1" --rf "$2" -- --messages 400000 --size 100 --acks all --partitions 6 --rate 20000 | grep RESULT
done

for timeout in 9000 2000; do
    echo "== failover: kill -9 the leader, time to the first acknowledged produce (broker.session.timeout.ms=$timeout)"
    "$BENCH" failover --rounds "$ROUNDS" --session-timeout-ms "$timeout" | grep RESULT
done
