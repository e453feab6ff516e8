#!/usr/bin/env bash
# Toolchain pieces the build needs beyond a plain rustup install: rustfmt, clippy, the wasm32-wasip1 target.
# Idempotent: does nothing when everything is present.
set -euo pipefail
command -v rustup >/dev/null 2>&1 || { echo "setup: rustup is required (https://rustup.rs)" >&2; exit 1; }
installed_components=$(rustup component list --installed 2>/dev/null || true)
for c in rustfmt clippy; do
    grep -q "^$c" <<<"$installed_components" || rustup component add "$c"
done
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
