#!/usr/bin/env bash
# `make bench`: benchmarks. Each section measures a baseline in the same run and reports ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "no benchmarks yet" >&2
