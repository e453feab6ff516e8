#!/usr/bin/env bash
# `make demo`: the main job end to end on 127.0.0.1.
#
# Builds millrace and the example plugins, starts the real servers, pushes two plugins with the ORAS SDK,
# binds two client topics to them (ABI v1 and the seed contract), produces a few thousand client records
# (metrics, logs, some bad ones), runs two workers in one consumer group, and shows what landed where.
#   MILLRACE_DEMO_RECORDS   records per client topic (default 3000)
#   MILLRACE_DEMO_PICTURE   a PNG path: afterwards, run 90 s of steady traffic with a plugin rollout and a refused
#                           one, and draw the chart's Grafana dashboard from Prometheus (scripts/dashboard-picture.py)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${MILLRACE_DEMO_RECORDS:-3000}
STACK=scripts/stack/stack.sh
say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

say "toolchain, servers, build"
scripts/setup-toolchain.sh
$STACK up
scripts/build-plugins.sh >/dev/null 2>&1 || scripts/build-plugins.sh
cargo build -p millrace-worker --bin millrace
cargo build -p millrace-tests --example demo_client
MILLRACE=target/debug/millrace
CLIENT=target/debug/examples/demo_client
STATE=${MILLRACE_STACK_DIR:-.stack}
KAFKA=$(cat "$STATE/kafka.addr")
REGISTRY=$(cat "$STATE/registry.addr")
INFLUX=$(cat "$STATE/influxdb.addr")
VM=$(cat "$STATE/victoriametrics.addr")
ES=$(cat "$STATE/elasticsearch.addr")
PROM=$(cat "$STATE/prometheus.addr")
PY=${MILLRACE_VENV:-.venv}/bin/python
RUN=demo$(date +%s)
DEMO=$STATE/demo
mkdir -p "$DEMO"

say "pushing the plugins with the ORAS SDK to $REGISTRY"
ROUTER=$("$PY" scripts/oras-push.py "$REGISTRY/demo/seed-router:v1" plugins/dist/seed_router.wasm \
    --media-type application/wasm --insecure)
COMPAT=$("$PY" scripts/oras-push.py "$REGISTRY/demo/seed-compat:v1" plugins/dist/seed_compat.wasm --insecure)
echo "  seed-router (ABI v1)    $REGISTRY/demo/seed-router@$ROUTER" >&2
echo "  seed-compat (seed)      $REGISTRY/demo/seed-compat@$COMPAT  (pushed with ORAS defaults)" >&2

curl -fsS -XPOST "http://$INFLUX/query" --data-urlencode "q=CREATE DATABASE millrace_demo" >/dev/null
write_bindings() { # the live bindings: $1 is acme's plugin reference, $2 globex's
    cat >"$DEMO/bindings.toml.new" <<EOF
# Written by scripts/demo.sh. The workers apply a change to this file without a restart.
[[bindings]]
name = "acme"
topic = "$RUN-acme"
plugin = "$1"
allowed_measurements = ["env_"]
allowed_indices = ["acme-"]

[[bindings]]
name = "globex"
topic = "$RUN-globex"
plugin = "$2"
allowed_measurements = ["env_"]
allowed_indices = ["globex-"]
EOF
    mv "$DEMO/bindings.toml.new" "$DEMO/bindings.toml"
}
write_bindings "$REGISTRY/demo/seed-router@$ROUTER" "$REGISTRY/demo/seed-compat@$COMPAT"
cat >"$DEMO/worker.toml" <<EOF
# Written by scripts/demo.sh: two client topics, two plugins, three stores.
bindings_file = "$DEMO/bindings.toml"

[kafka]
brokers = "$KAFKA"
group_id = "millrace-$RUN"
session_timeout = "6s"
statistics_interval = "2s"

[sinks.influxdb]
url = "http://$INFLUX"
database = "millrace_demo"

[sinks.influxdb_v2]
url = "http://$VM"
org = "demo"
bucket = "demo"
token = "demo-token"

[sinks.elasticsearch]
urls = ["http://$ES"]

[dead_letter]
topic = "$RUN-dead-letters"

[registry]
cache_dir = "$DEMO/cache"
insecure = ["$REGISTRY"]

[batching]
linger = "100ms"

[reload]
interval = "1s"
EOF
"$MILLRACE" config check "$DEMO/worker.toml" >/dev/null

say "producing $N records to each client topic ($RUN-acme, $RUN-globex)"
"$CLIENT" produce "$KAFKA" "$RUN-acme" "$N" acme- | tee "$DEMO/acme.json" >&2
"$CLIENT" produce "$KAFKA" "$RUN-globex" "$N" globex- | tee "$DEMO/globex.json" >&2

say "starting two workers in consumer group millrace-$RUN"
T0=$(date +%s)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$STATE/prometheus-targets/demo.json"
}
trap cleanup EXIT
PORTS=()
for i in 1 2; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    PORTS+=("$port")
    MILLRACE__METRICS__ADDRESS="127.0.0.1:$port" "$MILLRACE" worker --config "$DEMO/worker.toml" \
        >"$DEMO/worker-$i.log" 2>&1 &
    pids+=($!)
    echo "  worker $i: pid $!, metrics http://127.0.0.1:$port/metrics, log $DEMO/worker-$i.log" >&2
done
printf '[{"targets":["127.0.0.1:%s","127.0.0.1:%s"],"labels":{"job":"millrace-demo"}}]\n' "${PORTS[0]}" "${PORTS[1]}" \
    >"$STATE/prometheus-targets/demo.json"

count_influx() {
    curl -fsS -G "http://$INFLUX/query" --data-urlencode "db=millrace_demo" \
        --data-urlencode "q=SELECT count(value) FROM env_metrics" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["results"][0].get("series"); print(s[0]["values"][0][1] if s else 0)'
}
count_es() {
    curl -fsS "http://$ES/$1/_count" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count",0))' 2>/dev/null || echo 0
}
metric() { { curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } | awk -v m="$2" '$1==m {print $2}'; }

say "waiting for every record to land or be dead-lettered"
expected_points=$(python3 -c "import json; print(json.load(open('$DEMO/acme.json'))['metrics'] + json.load(open('$DEMO/globex.json'))['metrics'])")
deadline=$((SECONDS + 180))
while :; do
    in_flight=0
    for p in "${PORTS[@]}"; do
        v=$(metric "$p" millrace_in_flight_records); in_flight=$((in_flight + ${v:-1}))
    done
    points=$(count_influx)
    docs=$(( $(count_es 'acme-*') + $(count_es 'globex-*') ))
    echo "  points $points/$expected_points, documents $docs, in flight $in_flight" >&2
    if [ "$points" -ge "$expected_points" ] && [ "$in_flight" -eq 0 ]; then break; fi
    if [ $SECONDS -ge $deadline ]; then echo "demo: timed out; see $DEMO/worker-*.log" >&2; exit 1; fi
    sleep 2
done
sleep 3 # let the last offsets and dead letters settle

say "what landed"
echo "InfluxDB 1.x (http://$INFLUX, database millrace_demo): $(count_influx) points"
curl -fsS -G "http://$INFLUX/query" --data-urlencode "db=millrace_demo" \
    --data-urlencode "q=SELECT * FROM env_metrics ORDER BY time DESC LIMIT 3" |
    python3 -c 'import json,sys; s=json.load(sys.stdin)["results"][0]["series"][0]; print("  columns", s["columns"]); [print("  ", v) for v in s["values"]]'
vm=$(curl -fsS "http://$VM/api/v1/export" -d 'match[]={__name__="env_metrics_value"}' | wc -l)
echo "VictoriaMetrics (http://$VM, InfluxDB v2 write API): $vm series of env_metrics_value"
for idx in acme-checkout-logs-daily acme-billing-logs-daily acme-search-logs-daily globex-checkout-logs-daily globex-billing-logs-daily globex-search-logs-daily; do
    echo "Elasticsearch API (http://$ES) index $idx: $(count_es "$idx") documents"
done
echo "  sample:"
curl -fsS "http://$ES/acme-checkout-logs-daily/_search?size=1" | python3 -c 'import json,sys; h=json.load(sys.stdin)["hits"]["hits"][0]; print("   _id", h["_id"], h["_source"])'
produced=$(python3 -c "import json; print(json.load(open('$DEMO/acme.json'))['records'] + json.load(open('$DEMO/globex.json'))['records'])")
echo "Dead-letter topic $RUN-dead-letters, by reason:"
"$CLIENT" dead-letters "$KAFKA" "$RUN-dead-letters" "$produced" | python3 -c '
import json,sys
d=json.load(sys.stdin)
print("  total", d["total"])
for k,v in d["by_kind"].items(): print("  %-20s %6d   e.g. %s" % (k, v, d["sample"][k][:90]))'
echo "(globex uses the seed contract, which cannot reject: its bad records are logged and produce nothing.)"

say "an excerpt of worker 1's /metrics (http://127.0.0.1:${PORTS[0]}/metrics)"
curl -fsS "http://127.0.0.1:${PORTS[0]}/metrics" |
    grep -E '^millrace_(records_processed_total|dead_letters_total|sink_items_total|plugin_info|assigned_partitions|plugin_cache_hits_total|in_flight_records)' | head -30

if [ -n "${MILLRACE_DEMO_PICTURE:-}" ]; then
    say "steady traffic for the dashboard picture: 90 s at 300 records/s per topic, a rollout, a refused one"
    "$PY" -m pip install --quiet --disable-pip-version-check 'matplotlib==3.11.2' >>"$STATE/pip.log" 2>&1 ||
        { echo "demo: cannot install matplotlib (see $STATE/pip.log)" >&2; exit 1; }
    DEMO_CLIENT_RATE=300 "$CLIENT" produce "$KAFKA" "$RUN-acme" 27000 acme- >"$DEMO/acme-steady.json" &
    p1=$!
    DEMO_CLIENT_RATE=300 "$CLIENT" produce "$KAFKA" "$RUN-globex" 27000 globex- >"$DEMO/globex-steady.json" &
    p2=$!
    sleep 30
    # The same module pushed again with ORAS defaults: a new manifest digest, rolled out live.
    ROUTER2=$("$PY" scripts/oras-push.py "$REGISTRY/demo/seed-router:v2" plugins/dist/seed_router.wasm --insecure)
    echo "  acme -> seed-router@$ROUTER2 (live rollout)" >&2
    write_bindings "$REGISTRY/demo/seed-router@$ROUTER2" "$REGISTRY/demo/seed-compat@$COMPAT"
    sleep 20
    # Not a WebAssembly module: refused, globex keeps its version.
    head -c 4096 /dev/urandom >"$DEMO/broken.wasm"
    BROKEN=$("$PY" scripts/oras-push.py "$REGISTRY/demo/seed-compat:broken" "$DEMO/broken.wasm" \
        --media-type application/wasm --insecure)
    echo "  globex -> seed-compat@$BROKEN (not wasm: refused)" >&2
    write_bindings "$REGISTRY/demo/seed-router@$ROUTER2" "$REGISTRY/demo/seed-compat@$BROKEN"
    wait "$p1" "$p2"
    sleep 15
    "$PY" scripts/dashboard-picture.py --prometheus "$PROM" --job millrace-demo --start "$T0" --end "$(date +%s)" \
        --out "$MILLRACE_DEMO_PICTURE" \
        --subtitle "make demo (MILLRACE_DEMO_PICTURE): 2 workers, bindings acme (ABI v1) and globex (seed contract), $(date -u +%Y-%m-%d)"
fi
echo
echo "Prometheus at http://$PROM scrapes both workers (job millrace-demo) while they run."
echo "The servers keep running: explore them, then stop them with \`make stack-down\`."
