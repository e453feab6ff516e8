#!/usr/bin/env bash
# The "Many clients" section of `make bench` (issue 12), also runnable alone: `scripts/bench/many.sh`.
#   1. 10 / 100 / 300 / 1000 bindings on one release worker, each binding its own topic and its own plugin digest,
#      every client's records waiting in Kafka: resident memory, time to the first output, compile time and time
#      to drain, from a cold plugin cache and again from the warm one (a restart).
#   2. Fairness on one lane: a quiet client's latency alone, then beside a noisy client at its CPU budget.
# Both stores are an in-process blackhole of tests/examples/bench_many.rs, which also runs and watches the worker.
#   MILLRACE_BENCH_MANY              binding counts (default "10 100 300 1000")
#   MILLRACE_BENCH_MANY_RECORDS      records per client (default 100)
#   MILLRACE_BENCH_MANY_PARTITIONS   partitions per client topic (default 2)
#   MILLRACE_BENCH_MANY_PLUGIN       seed_router (default; one point per record) or c_envelope (smaller module)
#   MILLRACE_BENCH_MANY_WARM         1 (default): each count again from the warm cache; 0: cold only
#   MILLRACE_BENCH_FAIRNESS_RATE     the quiet client's records/s (default 200)
#   MILLRACE_BENCH_FAIRNESS_SECONDS  length of each phase, alone and beside (default 30; 0 skips fairness)
#   MILLRACE_BENCH_FAIRNESS_BACKLOG  the noisy client's records (default 8000: enough for the phase at its budget)
#   MILLRACE_BENCH_MD                the report written (default BENCHMARKS.md)
# Results: target/bench/many.jsonl; logs and configurations of each run: target/bench/many-*.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=target/bench
mkdir -p "$OUT"
SIZES=${MILLRACE_BENCH_MANY:-10 100 300 1000}
RECORDS=${MILLRACE_BENCH_MANY_RECORDS:-100}
PARTITIONS=${MILLRACE_BENCH_MANY_PARTITIONS:-2}
PLUGIN=${MILLRACE_BENCH_MANY_PLUGIN:-seed_router}
WARM=${MILLRACE_BENCH_MANY_WARM:-1}
RATE=${MILLRACE_BENCH_FAIRNESS_RATE:-200}
FAIR_SECS=${MILLRACE_BENCH_FAIRNESS_SECONDS:-30}
BACKLOG=${MILLRACE_BENCH_FAIRNESS_BACKLOG:-8000}
MD=${MILLRACE_BENCH_MD:-BENCHMARKS.md}

for p in "$PLUGIN" seed_router hostile; do
    [ -f "plugins/dist/$p.wasm" ] || scripts/build-plugins.sh
done
cargo build --release -p millrace-worker --bin millrace
cargo build --release -p millrace-tests --example bench_many
MILLRACE=target/release/millrace
BM=target/release/examples/bench_many
scripts/stack/stack.sh up kafka registry
STATE=${MILLRACE_STACK_DIR:-.stack}
KAFKA=$(cat "$STATE/kafka.addr"); REGISTRY=$(cat "$STATE/registry.addr")
RUN=many$(date +%s)
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
RESULTS="$OUT/many.jsonl"
: >"$RESULTS"

echo "== many clients: $SIZES bindings on one worker ($PLUGIN, $RECORDS records x $PARTITIONS partitions per client)" >&2
max=0
for n in $SIZES; do [ "$n" -gt "$max" ] && max=$n; done
echo "  setup: $max modules pushed, $max topics, $((max * RECORDS)) records" >&2
# shellcheck disable=SC2086 # SIZES is a list of numbers
setup=$("$BM" setup "$KAFKA" "$REGISTRY" "$RUN" "$RECORDS" "$PARTITIONS" "$PLUGIN" "$OUT/many-bindings" $SIZES)
printf '{"run":"setup","r":%s}\n' "$setup" >>"$RESULTS"
for n in $SIZES; do
    cache="$OUT/many-cache-$n" # cold: compiling is part of the figure; warm: the same cache, a restart
    rm -rf "$cache"
    for mode in cold warm; do
        if [ "$mode" = warm ] && [ "$WARM" != 1 ]; then continue; fi
        bh=$(free_port); mp=$(free_port)
        name="many-$n-$mode"
        { many_config "$RUN-$n-$mode" "$bh" "$mp" "$cache"; cat "$OUT/many-bindings-$n.toml"; } >"$OUT/$name.toml"
        echo "  $n bindings, $mode cache" >&2
        r=$("$BM" measure "$MILLRACE" "$OUT/$name.toml" "$OUT/many-bindings-$n.json" "$bh" "$mp" "$OUT/$name.log")
        printf '{"run":"bindings","mode":"%s","r":%s}\n' "$mode" "$r" >>"$RESULTS"
    done
    rm -rf "$cache"
done

if [ "$FAIR_SECS" != 0 ]; then
    echo "== many clients: fairness on one lane (quiet seed_router at $RATE/s beside hostile, cpu_budget 0.5)" >&2
    "$BM" setup-fairness "$KAFKA" "$REGISTRY" "$RUN" "$PARTITIONS" "$OUT/many-fair"
    bh=$(free_port); mp=$(free_port)
    rm -rf "$OUT/many-cache-fair"
    { many_config "$RUN-fair" "$bh" "$mp" "$OUT/many-cache-fair" 'lanes = 1' 'drain_timeout = "2s"'
      cat "$OUT/many-fair.toml"; } >"$OUT/many-fair-worker.toml"
    r=$("$BM" fairness "$MILLRACE" "$OUT/many-fair-worker.toml" "$OUT/many-fair.json" "$KAFKA" "$bh" "$mp" \
        "$OUT/many-fair.log" "$RATE" "$FAIR_SECS" "$BACKLOG")
    printf '{"run":"fairness","r":%s}\n' "$r" >>"$RESULTS"
    rm -rf "$OUT/many-cache-fair"
fi
python3 scripts/bench/report.py many "$RESULTS" "$MD"
echo "results: $RESULTS; report: $MD" >&2
