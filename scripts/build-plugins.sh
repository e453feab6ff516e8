#!/usr/bin/env bash
# `make plugins`: builds the example plugins for wasm32-wasip1 into plugins/dist/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../plugins"
cargo build --release --target wasm32-wasip1 --workspace
