#!/usr/bin/env bash
# The CI test command (.ci/run runs exactly this).
#
# 1. Installs what the end-to-end suite needs on a fresh Debian bookworm machine
#    (kcat, tmux, kubectl, openssl and curl from apt, kafka-python from PyPI,
#    a kube-apiserver built from Debian's sources for the operator suite);
#    steps already satisfied are skipped.
# 2. cargo fmt --check, clippy -D warnings, a release build of every binary.
# 3. The whole suite in release mode with cargo-nextest (plain `cargo test`
#    when nextest is not installed), then the doctests.
#
# Why nextest: each test runs in its own process, so one test's broker or
# librdkafka threads cannot disturb another; a hung test is killed by the
# slow-timeout in scripts/nextest.toml instead of stalling CI; failures are
# listed together at the end with their output; the heavy produce/consume
# matrix runs one test at a time. Why release: the wire tests push about a
# million messages through the broker, and the broker must be built in the
# same profile as the tests, since they start target/<profile>/sluice-broker.
#
# Works non-interactively (CI=true, no stdin); prints a summary of every step
# and exits non-zero if any failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KAFKA_PYTHON_VERSION="3.0.12"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore
# Panics print a backtrace; anyhow errors (most test failures) print their
# context chain without one, which is what explains the failure.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}"

declare -a SUMMARY=()
FAILED=0

# run_step NAME CMD...: runs CMD with no stdin, records ok/FAILED.
run_step() {
    local name="$1"
    shift
    echo
    echo "==> [$name] $*"
    local start=$SECONDS
    if "$@" </dev/null; then
        SUMMARY+=("ok      $name ($((SECONDS - start)) s)")
        return 0
    else
        local rc=$?
        echo "==> [$name] FAILED with exit code $rc"
        SUMMARY+=("FAILED  $name (exit $rc, $((SECONDS - start)) s)")
        FAILED=1
        return "$rc"
    fi
}

skip_step() {
    echo
    echo "==> [$1] skipped: $2"
    SUMMARY+=("skipped $1 ($2)")
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

apt_install() {
    # Install from the current package lists first; refresh them only if that fails
    # (a fresh container has none).
    as_root apt-get install -y -q --no-install-recommends "$@" ||
        { as_root apt-get update -q && as_root apt-get install -y -q --no-install-recommends "$@"; }
}

install_kcat() {
    if command -v kcat >/dev/null 2>&1; then
        echo "kcat already installed: $(command -v kcat)"
        return 0
    fi
    apt_install kcat
}

install_tmux() {
    # The console's end-to-end tests run the real `sluice` in tmux.
    if command -v tmux >/dev/null 2>&1; then
        echo "tmux already installed: $(command -v tmux)"
        return 0
    fi
    apt_install tmux
}

install_k8s_tools() {
    # The operator suite drives a real kube-apiserver with kubectl; the
    # harness (tests/k8s/) needs openssl and curl.
    local missing=()
    command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "kubectl, openssl and curl already installed"
        return 0
    fi
    apt_install "${missing[@]}"
}

build_kube_apiserver() {
    # Kubernetes v1.20.2's API server and etcd from Debian's packages, built
    # once (7-15 minutes) and cached in ~/.cache/sluice-kube.
    ./tests/k8s/build-kube-apiserver.sh
}

kafka_python_ok() {
    python3 - "$KAFKA_PYTHON_VERSION" <<'EOF' 2>/dev/null
import sys
import kafka
sys.exit(0 if kafka.__version__ == sys.argv[1] else 1)
EOF
}

install_kafka_python() {
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-pip || return 1
    fi
    if kafka_python_ok; then
        echo "kafka-python $KAFKA_PYTHON_VERSION already installed"
        return 0
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip || return 1
    fi
    # Debian's own python3 is "externally managed" (PEP 668); a separately
    # installed Python (pyenv, python.org) is not.
    python3 -m pip install --quiet "kafka-python==$KAFKA_PYTHON_VERSION" ||
        python3 -m pip install --quiet --break-system-packages "kafka-python==$KAFKA_PYTHON_VERSION" ||
        return 1
    kafka_python_ok
}

check_python_syntax() {
    local f
    for f in tests/python/*.py; do
        python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$f" || return 1
    done
}

run_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --release --profile ci \
            --config-file scripts/nextest.toml --no-fail-fast
    else
        echo "cargo-nextest not installed; falling back to cargo test"
        cargo test --workspace --release --no-fail-fast --lib --bins --tests
    fi
}

echo "==> Sluice test suite in $(pwd) (CI=${CI:-unset}, $(nproc) cores)"
cargo --version
rustc --version

run_step "install kcat" install_kcat
run_step "install tmux" install_tmux
run_step "install kafka-python $KAFKA_PYTHON_VERSION" install_kafka_python
run_step "install kubectl, openssl, curl" install_k8s_tools
run_step "build kube-apiserver (cached)" build_kube_apiserver
run_step "python syntax" check_python_syntax
run_step "cargo fmt" cargo fmt --all --check
# --release: shares the release profile's build-script outputs (librdkafka's C
# build) with the build and test steps below instead of building it twice.
run_step "cargo clippy" cargo clippy --workspace --all-targets --release -- -D warnings
if run_step "cargo build (release binaries)" cargo build --workspace --release --bins; then
    # Doctests first (nextest does not run them), so the suite's own summary
    # line is the last test-runner output.
    run_step "doctests" cargo test --workspace --release --doc
    run_step "tests (release)" run_tests
else
    skip_step "doctests" "the build failed"
    skip_step "tests (release)" "the build failed"
fi

echo
echo "==> SUMMARY"
for line in "${SUMMARY[@]}"; do
    echo "    $line"
done
if [ "$FAILED" -ne 0 ]; then
    echo "==> FAILED: see the steps marked FAILED above"
    exit 1
fi
echo "==> all steps passed"
