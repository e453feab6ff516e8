#!/usr/bin/env bash
# Pipeline throughput of two `millrace` binaries in ONE run, against the same broker and a blackhole store,
# alternating A B A B so that drift of the machine hits both: for "no worse than before" checks of a change.
#   scripts/bench/compare-workers.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   MILLRACE_BENCH_RECORDS  records per run (default 200000)
# Needs the stack up (make stack-up), plugins built (make plugins) and the bench tool
# (cargo build --release -p millrace-tests --example bench_pipeline). Prints one JSON line per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OLD=$1 NEW=$2 ROUNDS=${3:-2}
N=${MILLRACE_BENCH_RECORDS:-200000}
OUT=target/bench/compare
mkdir -p "$OUT"
BP=target/release/examples/bench_pipeline
STATE=${MILLRACE_STACK_DIR:-.stack}
KAFKA=$(cat "$STATE/kafka.addr"); REGISTRY=$(cat "$STATE/registry.addr")
VENV_PY=${MILLRACE_VENV:-.venv}/bin/python
RUN=cmp$(date +%s)
python3 scripts/bench/corpus.py seed "$N" >"$OUT/corpus.ndjson"
DIGEST=$("$VENV_PY" scripts/oras-push.py "$REGISTRY/bench/router:v1" plugins/dist/seed_router.wasm --media-type application/wasm --insecure)
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
BH_PORT=$(free_port)
"$BP" blackhole "$BH_PORT" &
BH=$!
trap 'kill $BH 2>/dev/null || true' EXIT
sleep 0.5
run() { # label binary round
    local topic="$RUN-$1-$3" port; port=$(free_port)
    "$BP" produce "$KAFKA" "$topic" "$OUT/corpus.ndjson" >/dev/null
    worker_config "$topic" "$topic" "http://127.0.0.1:$BH_PORT" "http://127.0.0.1:$BH_PORT" "$port" >"$OUT/$1-$3.toml"
    RUST_LOG=warn "$2" worker --config "$OUT/$1-$3.toml" 2>"$OUT/$1-$3.log" &
    local pid=$!
    printf '{"run":"%s","round":%s,"r":%s}\n' "$1" "$3" "$("$BP" wait "$KAFKA" "$topic" "$topic" "$N" "$pid" "127.0.0.1:$port")"
    kill -TERM "$pid"; wait "$pid" || true
}
printf '{"run":"raw","r":%s}\n' "$("$BP" produce "$KAFKA" "$RUN-raw" "$OUT/corpus.ndjson" >/dev/null; "$BP" raw "$KAFKA" "$RUN-raw" "$N")"
for round in $(seq 1 "$ROUNDS"); do
    run old "$OLD" "$round"
    run new "$NEW" "$round"
done
