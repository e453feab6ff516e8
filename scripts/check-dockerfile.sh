#!/usr/bin/env bash
# Checks the Dockerfile's build stage where no Docker engine is present (part of `make test`): the files its
# COPY lines take, and only those, make a workspace that resolves with the committed Cargo.lock (`--locked`)
# and contains the `millrace` binary; the runtime stage runs it as a non-root user.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
fail() { echo "check-dockerfile: $*" >&2; exit 1; }

# COPY lines of the build stage (those without --from), e.g. `COPY runtime runtime`, `COPY a b c ./`.
while read -r _ args; do
    read -ra parts <<<"$args"
    dest=${parts[-1]}
    for src in "${parts[@]:0:${#parts[@]}-1}"; do
        [ -e "$src" ] || fail "COPY $src: no such file in the repository"
        if [ "$dest" = "./" ]; then cp -r "$src" "$ctx/"; else mkdir -p "$ctx/$(dirname "$dest")"; cp -r "$src" "$ctx/$dest"; fi
    done
done < <(grep -E '^COPY ' Dockerfile | grep -v -- '--from')

meta=$(cd "$ctx" && cargo metadata --locked --offline --format-version 1 --no-deps 2>&1) ||
    fail "the build context does not make a workspace that resolves with Cargo.lock: $meta"
echo "$meta" | python3 -c '
import json, sys
m = json.load(sys.stdin)
bins = [t["name"] for p in m["packages"] if p["name"] == "millrace-worker" for t in p["targets"] if "bin" in t["kind"]]
sys.exit(0 if "millrace" in bins else "the build context has no millrace binary target")
' || fail "millrace-worker's binary is missing from the build context"
(cd "$ctx" && cargo tree --locked --offline -p millrace-worker -e normal >/dev/null 2>&1) ||
    fail "the dependency graph of millrace-worker does not resolve from the build context with --locked"

user=$(awk '/^FROM/ {stage++} stage == 2 && /^USER/ {print $2}' Dockerfile)
[ -n "$user" ] && [ "${user%%:*}" != "0" ] && [ "${user%%:*}" != "root" ] || fail "the runtime stage must run as a non-root USER (found '$user')"
grep -q '^ENTRYPOINT \["/usr/local/bin/millrace"\]' Dockerfile || fail "the ENTRYPOINT must be the millrace binary"
echo "check-dockerfile: the build context resolves with --locked and holds the millrace binary; runtime user $user" >&2
