#!/usr/bin/env bash
# `make plugins`: builds the guest plugins for wasm32-wasip1 (Rust, release) and the C example, and puts
# every module in plugins/dist/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../plugins"
mkdir -p dist
cargo build --release --target wasm32-wasip1 --workspace --exclude bench-native
for m in seed_router seed_compat acme_iot hostile; do
    cp "target/wasm32-wasip1/release/$m.wasm" "dist/$m.wasm"
done
examples/c-envelope/build.sh "$PWD/dist/c_envelope.wasm"
wat2wasm examples/noop/noop.wat -o dist/noop.wasm
ls -l dist/*.wasm >&2
