#!/usr/bin/env bash
# `make plugins`: builds the guest plugins for wasm32-wasip1 (Rust, release), the C example and the Go
# plugins (GOOS=wasip1, toolchain installed into the virtualenv if missing), and puts every module in
# plugins/dist/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../plugins"
mkdir -p dist
cargo build --release --target wasm32-wasip1 --workspace --exclude bench-native
for m in seed_router seed_compat acme_iot hostile; do
    cp "target/wasm32-wasip1/release/$m.wasm" "dist/$m.wasm"
done
examples/c-envelope/build.sh "$PWD/dist/c_envelope.wasm"
wat2wasm examples/noop/noop.wat -o dist/noop.wasm
# shellcheck source=scripts/go-env.sh
source ../scripts/go-env.sh
go_ensure
for entry in "${GO_PLUGINS[@]}"; do
    go_build_plugin "${entry%%:*}" "$PWD/dist/${entry##*:}.wasm"
done
ls -l dist/*.wasm >&2
