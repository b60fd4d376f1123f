#!/usr/bin/env bash
# The C and Go bindings: installs what they need (valgrind, Go) when missing, checks that the
# committed C header matches the sources, builds libagentvm, runs the C flow (also under
# valgrind) and `go test`. Idempotent; called by scripts/test-all.sh, runnable alone.
# AGENTVM_SKIP_DOCKER=1 skips the sandbox parts of the C and Go flows.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v go >/dev/null || need+=(golang-go)
command -v cc >/dev/null || need+=(build-essential)
if [ "${#need[@]}" -gt 0 ]; then
    step "apt-get install ${need[*]}"
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" \
            || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"; }
    else
        echo "not root: install ${need[*]} (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

step "C header is up to date (cbindgen 0.29.4)"
cargo run -q --locked -p agentvm-ffi-header -- --check

step "build libagentvm (bindings/c)"
cargo build --locked -p agentvm-ffi
target="${CARGO_TARGET_DIR:-target}"
lib_dir="$(cd "$target/debug" && pwd)"

step "C flow, and again under valgrind (bindings/c/tests)"
AGENTVM_REQUIRE_VALGRIND=1 cargo test --locked -p agentvm-ffi

step "go test (bindings/go)"
(
    cd bindings/go
    CGO_LDFLAGS="-L$lib_dir" GOPROXY=off go vet ./...
    # Standard library only: no module downloads (GOPROXY=off).
    CGO_LDFLAGS="-L$lib_dir -Wl,-rpath,$lib_dir" GOPROXY=off go test -count=1 -v ./...
)
