#!/usr/bin/env bash
# `make plugins`: builds the guest plugins for wasm32-wasip1 (Rust, release), the C example and the Go
# plugins (GOOS=wasip1, toolchain installed into the virtualenv if missing), and puts every module in
# plugins/dist/. The Rust examples then go through binaryen's optimiser, as wasm-pack does by default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../plugins"
mkdir -p dist
cargo build --release --target wasm32-wasip1 --workspace --exclude bench-native
cp target/wasm32-wasip1/release/hostile.wasm dist/hostile.wasm
# binaryen's optimiser (Debian binaryen), with the flags in scripts/wasm-opt-flags.sh. The hostile plugin
# stays as rustc built it: its point is what it does as written.
# shellcheck source=scripts/wasm-opt-flags.sh
source ../scripts/wasm-opt-flags.sh
for m in seed_router seed_compat acme_iot; do
    wasm-opt "${WASM_OPT_FLAGS[@]}" "target/wasm32-wasip1/release/$m.wasm" -o "dist/$m.wasm"
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
