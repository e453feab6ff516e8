# millrace: entry points. `make demo` runs the main job end to end on loopback; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
STACK := scripts/stack/stack.sh

.PHONY: help setup toolchain stack-install stack-up stack-status stack-down stack-env \
        build plugins fmt lint test test-unit test-plugins chart-test demo bench clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

toolchain: ## Rust components and the wasm32-wasip1 target
	@scripts/setup-toolchain.sh

stack-install: ## install the stack's servers (Debian packages, project virtualenv); idempotent
	@$(STACK) install

setup: toolchain stack-install ## everything a fresh machine needs

stack-up: ## start the real servers on 127.0.0.1 (no-op for those already up)
	@$(STACK) up

stack-status: ## one line per server: up/down and address
	@$(STACK) status

stack-down: ## stop the servers by PID and remove their temp data
	@$(STACK) down

build: toolchain ## build the host workspace (worker, registry, runtime, tests)
	$(CARGO) build --workspace --all-targets

plugins: toolchain ## build the guest SDK and example plugins for wasm32-wasip1
	@scripts/build-plugins.sh

fmt: ## format all Rust code
	$(CARGO) fmt --all
	cd plugins && $(CARGO) fmt --all

lint: toolchain ## rustfmt --check and clippy -D warnings on host and guest workspaces
	$(CARGO) fmt --all --check
	cd plugins && $(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd plugins && $(CARGO) clippy --workspace --all-targets -- -D warnings
	cd plugins && $(CARGO) clippy --target wasm32-wasip1 --workspace --exclude bench-native -- -D warnings

test: ## all tests against real servers (installs, starts and stops the stack)
	@scripts/test.sh

chart-test: stack-install build ## lint, render and validate the Helm chart
	@.venv/bin/python scripts/test-chart.py

demo: ## the main job end to end on loopback
	@scripts/demo.sh

bench: ## benchmarks; figures go to BENCHMARKS.md
	@scripts/bench.sh

clean: stack-down
	$(CARGO) clean
	cd plugins && $(CARGO) clean
