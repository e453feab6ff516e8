#!/usr/bin/env bash
# The Go side of `make test`: gofmt, go vet (native and GOOS=wasip1), and the native unit tests of the Go
# SDK (plugins/sdk-go) and of every Go example plugin, against the SDK's host stubs. The toolchain comes
# from the project's virtualenv (scripts/go-env.sh installs it if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../plugins"
# shellcheck source=scripts/go-env.sh
source ../scripts/go-env.sh
go_ensure
for dir in sdk-go "${GO_PLUGINS[@]%%:*}"; do
    unformatted=$(gofmt -l "$dir")
    [ -z "$unformatted" ] || die "gofmt: not formatted: $unformatted (run gofmt -w $dir)"
    # Natively for the logic and the stubs, and GOOS=wasip1 for the ABI layer (the tests are native only).
    (cd "$dir" && go vet ./... && GOOS=wasip1 GOARCH=wasm go vet ./...)
    # go-seed has no tests of its own (it is the raw seed contract): runtime/tests/go_plugins.rs runs it.
    if compgen -G "$dir/*_test.go" >/dev/null; then
        (cd "$dir" && go test -count=1 ./...)
    fi
done
