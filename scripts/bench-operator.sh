#!/usr/bin/env bash
# `sluice-operator apply` convergence on one release sluice-broker (a
# temporary data dir): TOPICS Topic manifests (3 partitions, 1 replica, two
# configs each) in one folder are applied to the empty broker, then applied
# again (nothing to do), then `diff` is run. Prints each command's wall time
# and the line apply printed. Not part of the test suite: numbers are
# measured, never asserted.
#
#   ./scripts/bench-operator.sh               # 1000 topics
#   TOPICS=200 ./scripts/bench-operator.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOPICS="${TOPICS:-1000}"
PORT="${PORT:-19592}"
cargo build --release -q -p sluice-broker -p sluice-operator --bin sluice-broker --bin sluice-operator
TARGET="${CARGO_TARGET_DIR:-target}/release"

DIR=$(mktemp -d)
"$TARGET/sluice-broker" --listen "127.0.0.1:$PORT" --data-dir "$DIR/data" >"$DIR/out" 2>"$DIR/err" &
BROKER=$!
trap 'kill "$BROKER" 2>/dev/null; wait "$BROKER" 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 300); do grep -q "listening on" "$DIR/out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$DIR/out" || { echo "broker did not start" >&2; cat "$DIR/err" >&2; exit 1; }
B="127.0.0.1:$PORT"

mkdir -p "$DIR/topics"
for i in $(seq -w 1 "$TOPICS"); do
  cat > "$DIR/topics/topic-$i.yaml" <<YAML
apiVersion: sluice.dev/v1alpha1
kind: Topic
metadata:
  name: bench-$i
spec:
  partitions: 3
  replicas: 1
  config:
    retention.ms: 86400000
    cleanup.policy: delete
YAML
done

timed() {
  local label=$1; shift
  local start end rc=0
  start=$(date +%s.%N)
  "$@" > "$DIR/last" || rc=$?
  end=$(date +%s.%N)
  printf 'RESULT %-28s %8.2f s  exit %d  %s\n' "$label" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$rc" "$(tail -1 "$DIR/last")"
}

echo "== $TOPICS Topic manifests, broker $B, $(nproc) cores"
timed "apply (empty broker)" "$TARGET/sluice-operator" apply -f "$DIR/topics" --bootstrap "$B"
timed "apply again (no-op)" "$TARGET/sluice-operator" apply -f "$DIR/topics" --bootstrap "$B"
timed "diff (in sync)" "$TARGET/sluice-operator" diff -f "$DIR/topics" --bootstrap "$B"
