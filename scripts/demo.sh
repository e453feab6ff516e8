#!/usr/bin/env bash
# `make demo`: the main job end to end on loopback. Until the worker lands, it brings the stack up and says
# what runs where.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-toolchain.sh
scripts/stack/stack.sh up
echo
echo "millrace demo: the local stack is up on 127.0.0.1"
scripts/stack/stack.sh status
cat <<'TXT'

  kafka            Kafka-protocol broker (tansu) - client topics and the dead-letter topic
  registry         OCI registry (CNCF distribution) - plugins pushed with `oras push`
  influxdb         InfluxDB 1.x - metrics via /write
  victoriametrics  InfluxDB v2 write API (/api/v2/write)
  elasticsearch    Elasticsearch/OpenSearch API (osmem-server) - events via _bulk
  prometheus       scrapes every target listed in .stack/prometheus-targets/

The worker is not built yet (issue 5); stop the servers with `make stack-down`.
TXT
