#!/usr/bin/env bash
# `make bench`: benchmarks, each with a baseline measured in the same run; figures go to BENCHMARKS.md.
#   MILLRACE_BENCH_SECONDS   measurement time per run (default 3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${MILLRACE_BENCH_SECONDS:-3}
OUT=target/bench
mkdir -p "$OUT"

scripts/setup-toolchain.sh
scripts/build-plugins.sh
cargo build --release -p millrace-worker --bin millrace
(cd plugins && cargo build --release -p bench-native)
MILLRACE=target/release/millrace
NATIVE=plugins/target/release/bench-native

python3 scripts/bench/corpus.py seed 10000 >"$OUT/seed.ndjson"
python3 scripts/bench/corpus.py iot 10000 >"$OUT/iot.ndjson"

echo "== runtime: wasm plugins vs the same transforms compiled natively (${SECS}s each)" >&2
run() { echo "  $1" >&2; shift; "$@"; }
{
    run "native seed-router" "$NATIVE" seed-router "$OUT/seed.ndjson" "$SECS" | sed 's/^/{"run":"native-seed-router","r":/; s/$/}/'
    run "wasm seed-router" "$MILLRACE" plugin bench plugins/dist/seed_router.wasm -i "$OUT/seed.ndjson" --seconds "$SECS" | sed 's/^/{"run":"wasm-seed-router","r":/; s/$/}/'
    run "wasm seed-router without fuel metering" "$MILLRACE" plugin bench plugins/dist/seed_router.wasm -i "$OUT/seed.ndjson" --seconds "$SECS" --no-fuel | sed 's/^/{"run":"wasm-seed-router-nofuel","r":/; s/$/}/'
    run "wasm seed-compat (seed contract)" "$MILLRACE" plugin bench plugins/dist/seed_compat.wasm -i "$OUT/seed.ndjson" --seconds "$SECS" | sed 's/^/{"run":"wasm-seed-compat","r":/; s/$/}/'
    run "native acme-iot" "$NATIVE" acme-iot "$OUT/iot.ndjson" "$SECS" | sed 's/^/{"run":"native-acme-iot","r":/; s/$/}/'
    run "wasm acme-iot" "$MILLRACE" plugin bench plugins/dist/acme_iot.wasm -i "$OUT/iot.ndjson" --seconds "$SECS" | sed 's/^/{"run":"wasm-acme-iot","r":/; s/$/}/'
    run "wasm noop (boundary only)" "$MILLRACE" plugin bench plugins/dist/noop.wasm -i "$OUT/seed.ndjson" --seconds "$SECS" | sed 's/^/{"run":"wasm-noop","r":/; s/$/}/'
} >"$OUT/runtime.jsonl"
python3 scripts/bench/report.py runtime "$OUT/runtime.jsonl" BENCHMARKS.md
echo "results: $OUT/runtime.jsonl; report: BENCHMARKS.md" >&2

echo "== plugin registry: cold (pull + verify + compile -> ready) and warm (cache hit -> ready)" >&2
scripts/stack/stack.sh up registry
REGISTRY=$(cat "${MILLRACE_STACK_DIR:-.stack}/registry.addr")
VENV_PY=${MILLRACE_VENV:-.venv}/bin/python
: >"$OUT/registry.jsonl"
for p in seed_router seed_compat acme_iot c_envelope; do
    repo="bench/$p-$(date +%s%N)"
    digest=$("$VENV_PY" scripts/oras-push.py "$REGISTRY/$repo:v1" "plugins/dist/$p.wasm" --media-type application/wasm --insecure)
    ref="$REGISTRY/$repo@$digest"
    for i in 1 2 3; do
        cache=$(mktemp -d)
        cold=$("$MILLRACE" plugin pull "$ref" --insecure --json --cache-dir "$cache")
        warm=$("$MILLRACE" plugin pull "$ref" --insecure --json --cache-dir "$cache" --repeat 200)
        printf '{"plugin":"%s","cold":%s,"warm":%s}\n' "$p" "$cold" "$warm" >>"$OUT/registry.jsonl"
        rm -rf "$cache"
    done
    echo "  $p" >&2
done
python3 scripts/bench/report.py registry "$OUT/registry.jsonl" BENCHMARKS.md
