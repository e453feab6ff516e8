#!/usr/bin/env bash
# Builds c-envelope.wasm with clang and wasi-libc (Debian: clang, wasi-libc, libclang-rt-14-dev-wasm32).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
out=${1:-c_envelope.wasm}
clang --target=wasm32-wasi -O2 -Wall -Wextra -Werror -mexec-model=reactor \
    -Wl,--strip-debug -Wl,-z,stack-size=65536 -o "$out" envelope.c
