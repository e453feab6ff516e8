#!/usr/bin/env bash
# `make test`: toolchain, servers, lint, unit and end-to-end tests against the real stack.
# Servers this run started are stopped on exit, also when a step fails; servers that were already up are
# left running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STACK=scripts/stack/stack.sh
step() { printf '\n==> %s\n' "$*" >&2; }
started=()

cleanup() {
    local rc=$?
    if [ ${#started[@]} -gt 0 ]; then
        step "stopping the servers this run started: ${started[*]}"
        "$STACK" down "${started[@]}" || true
    fi
    if [ $rc -ne 0 ]; then
        printf '\nmake test: FAILED (exit %s)\n' "$rc" >&2
    else
        printf '\nmake test: all passed in %ss\n' "$SECONDS" >&2
    fi
    exit $rc
}
trap cleanup EXIT

step "toolchain"
scripts/setup-toolchain.sh
step "servers: install"
"$STACK" install
mapfile -t started < <("$STACK" status | awk '$2 == "down" {print $1}')
step "servers: start"
"$STACK" up
"$STACK" status
# The tests find the servers through these variables (or .stack/*.addr when run by hand).
set -a
# shellcheck disable=SC1091
source "${MILLRACE_STACK_DIR:-.stack}/stack.env"
set +a

step "rustfmt --check"
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
step "clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
(cd plugins && cargo clippy --workspace --all-targets -- -D warnings)
(cd plugins && cargo clippy --target wasm32-wasip1 --workspace --exclude bench-native -- -D warnings)
step "guest plugins (wasm32-wasip1)"
scripts/build-plugins.sh
step "guest SDK and plugin logic, natively on the host"
(cd plugins && cargo test --workspace)
step "Go SDK and Go plugins' logic, natively (gofmt, go vet, go test)"
scripts/test-go.sh
step "host unit and end-to-end tests"
cargo test --workspace
if docker info >/dev/null 2>&1; then
    step "container image (a Docker engine is present)"
    docker build -t millrace:test .
else
    step "container image: no Docker engine here; checking the Dockerfile's build context instead"
    scripts/check-dockerfile.sh
fi
step "Helm chart: lint, render, kubernetes-validate --strict, invariants"
"${MILLRACE_VENV:-.venv}/bin/python" scripts/test-chart.py
