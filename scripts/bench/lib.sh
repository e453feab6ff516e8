# Shell helpers of the benchmarks (sourced by scripts/bench.sh and scripts/bench/compare-workers.sh).
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
TOML
}
