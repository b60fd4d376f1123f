#!/usr/bin/env bash
# The C and Go bindings and the protocol's generated types: installs what they need (valgrind,
# Go, npm, python3-venv) when missing, checks that the committed C header and the committed
# protocol schema and types (docs/schema, python/agentvm/_protocol.py, node/protocol.d.ts) match
# the sources, type-checks the generated types with mypy --strict and tsc --strict, builds
# libagentvm, runs the C flow (also under valgrind) and `go test`. Idempotent; called by
# scripts/test-all.sh, runnable alone.
# AGENTVM_SKIP_DOCKER=1 skips the sandbox parts of the C and Go flows.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v go >/dev/null || need+=(golang-go)
command -v cc >/dev/null || need+=(build-essential)
command -v npm >/dev/null || need+=(npm)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
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

step "protocol schema and generated types are up to date (bindings/schema)"
cargo run -q --locked -p agentvm-schema -- --check
cargo test --locked -p agentvm-schema

step "generated protocol types type-check (mypy --strict, tsc --strict)"
# Pinned tools in the target dir, installed once: mypy as scripts/test-python.sh pins it, and
# typescript from npm into a scratch prefix (node/ has no npm dependencies).
MYPY_VERSION="2.4.1"
TYPESCRIPT_VERSION="5.9.3"
tools="${CARGO_TARGET_DIR:-target}/schema-check"
mkdir -p "$tools"
tools="$(cd "$tools" && pwd)"
if ! "$tools/venv/bin/python" -c "import sys, importlib.metadata as m; sys.exit(m.version('mypy') != sys.argv[1])" "$MYPY_VERSION" 2>/dev/null; then
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/python" -m pip install --disable-pip-version-check --quiet "mypy==$MYPY_VERSION"
fi
if [ "$("$tools/tsc/node_modules/.bin/tsc" --version 2>/dev/null)" != "Version $TYPESCRIPT_VERSION" ]; then
    npm install --prefix "$tools/tsc" --no-audit --no-fund --silent "typescript@$TYPESCRIPT_VERSION"
fi
"$tools/venv/bin/python" -m mypy --strict --no-incremental python/agentvm/_protocol.py
# How bindings use the types, mistakes included (they must stay errors).
MYPYPATH=python/agentvm "$tools/venv/bin/python" -m mypy --strict --no-incremental \
    bindings/schema/tests/typing/use_protocol.py
PYTHONPATH=python/agentvm "$tools/venv/bin/python" bindings/schema/tests/typing/use_protocol.py
"$tools/tsc/node_modules/.bin/tsc" --noEmit --strict --target es2022 node/protocol.d.ts \
    bindings/schema/tests/typing/use_protocol.ts
# The Node package's API over them (node/index.d.ts), used as a TypeScript caller would.
"$tools/tsc/node_modules/.bin/tsc" --noEmit --strict --target es2022 --lib esnext \
    --moduleResolution node --module commonjs node/index.d.ts node/test/typing/use_index.ts
echo "ok: python/agentvm/_protocol.py, node/protocol.d.ts and node/index.d.ts type-check"

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
