# shellcheck shell=bash
# binaryen's optimiser settings for the Rust example plugins: `make plugins` (scripts/build-plugins.sh) and
# `make bench` (scripts/bench.sh) use the same. Measured in interleaved rounds (BENCHMARKS.md, issue 16):
# -O3 alone took 0-7% off the time per record; binaryen's larger inlining limits on top another 2-6%
# (seed-router, acme-iot). Every call between wasm functions costs the sandbox a fuel hand-over and a
# deadline check, so inlining buys more here than natively. `--inline-functions-with-loops` was measured
# too and made seed-router slower; it is left out. `-g` keeps function names for trap backtraces.
WASM_OPT_FLAGS=(-O3 -g --always-inline-max-function-size=40 --flexible-inline-max-function-size=300 --partial-inlining-ifs=4)
