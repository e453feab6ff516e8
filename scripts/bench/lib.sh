# Shell helpers of the benchmarks (sourced by scripts/bench.sh, scripts/bench/many.sh and
# scripts/bench/compare-workers.sh).
# worker_config reads KAFKA, REGISTRY, DIGEST (seed-router's digest), RUN and OUT from the caller.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The worker configuration of a benchmark run: one binding of seed-router, both stores, no limits on outputs.
worker_config() { # topic group influx_url es_url metrics_port
    cat <<TOML
[kafka]
brokers = "$KAFKA"
group_id = "$2"
session_timeout = "6s"
[[bindings]]
topic = "$1"
plugin = "$REGISTRY/bench/router@$DIGEST"
allowed_measurements = ["*"]
allowed_indices = ["*"]
[sinks.influxdb]
url = "$3"
database = "$RUN"
[sinks.elasticsearch]
urls = ["$4"]
[dead_letter]
topic = "$RUN-dlq"
[metrics]
address = "127.0.0.1:$5"
[registry]
cache_dir = "$OUT/cache"
insecure = ["$REGISTRY"]
# A restart reuses the compiled plugins, as a worker with the chart's cache.compiledKeySecret does.
compiled_key = "bench: key of the compiled-plugin cache"
TOML
}

# The worker configuration of a many-clients run, without its bindings (scripts/bench/many.sh appends them): both
# stores are the run's blackhole, a 2 GiB memory budget (the default of a worker without a container limit), any
# further `[pipeline]` keys as arguments (`'lanes = 1'`). Reads KAFKA, REGISTRY and RUN.
many_config() { # group blackhole_port metrics_port cache_dir [pipeline keys...]
    cat <<TOML
[kafka]
brokers = "$KAFKA"
group_id = "$1"
session_timeout = "6s"
[sinks.influxdb]
url = "http://127.0.0.1:$2"
database = "$RUN"
[sinks.elasticsearch]
urls = ["http://127.0.0.1:$2"]
[dead_letter]
topic = "$RUN-dlq"
[metrics]
address = "127.0.0.1:$3"
[registry]
cache_dir = "$4"
insecure = ["$REGISTRY"]
# The warm run (a restart) reuses the compiled plugins, as a worker with the chart's cache.compiledKeySecret does.
compiled_key = "bench: key of the compiled-plugin cache"
[pipeline]
memory_budget = "2GiB"
TOML
    shift 4
    local kv
    for kv in "$@"; do echo "$kv"; done
}
