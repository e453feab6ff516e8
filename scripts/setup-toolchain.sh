#!/usr/bin/env bash
# Toolchain pieces the build needs beyond a plain rustup install: rustfmt, clippy, the wasm32-wasip1 target,
# and for the C example plugin clang, wasm-ld and wasi-libc (Debian), plus wabt for inspecting modules and
# binaryen (wasm-opt): `make plugins` optimises the Rust examples with it.
# Idempotent: does nothing when everything is present.
set -euo pipefail
# shellcheck source=scripts/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/stack/lib.sh"
mkdir -p "$STACK_DIR"
command -v rustup >/dev/null 2>&1 || die "rustup is required (https://rustup.rs)"
installed_components=$(rustup component list --installed 2>/dev/null || true)
for c in rustfmt clippy; do
    grep -q "^$c" <<<"$installed_components" || rustup component add "$c"
done
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
apt_ensure clang lld-14 wasi-libc libclang-rt-14-dev-wasm32 wabt binaryen
