#!/usr/bin/env bash
# Creates (idempotently) the venv the release artifacts are built with, at .venv-dist in the
# repository root, and prints its bin directory (put it first on PATH). Only PyPI is needed,
# and nothing once installed:
#   ziglang         zig, the C toolchain and linker that targets an old glibc (2.17)
#   cargo-zigbuild  `cargo zigbuild --target x86_64-unknown-linux-gnu.2.17` (a prebuilt binary)
#   maturin         the Python wheel (`maturin build --zig --compatibility manylinux2014`)
# Use it as: PATH="$(bash scripts/setup-dist.sh):$PATH"
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGLANG_VERSION="0.17.0"
CARGO_ZIGBUILD_VERSION="0.24.0"
MATURIN_VERSION="1.16.0"

venv="$PWD/.venv-dist"
python="$venv/bin/python"
log() { printf '%s\n' "$*" >&2; }

if [ ! -x "$python" ]; then
    log "creating .venv-dist"
    python3 -m venv "$venv"
fi

installed() {
    "$python" - "$ZIGLANG_VERSION" "$CARGO_ZIGBUILD_VERSION" "$MATURIN_VERSION" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
names = ["ziglang", "cargo-zigbuild", "maturin"]
try:
    ok = all(version(n) == v for n, v in zip(names, sys.argv[1:]))
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if ! installed; then
    log "installing ziglang==$ZIGLANG_VERSION cargo-zigbuild==$CARGO_ZIGBUILD_VERSION maturin==$MATURIN_VERSION"
    "$python" -m pip install --disable-pip-version-check --quiet --only-binary=:all: \
        "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" \
        "maturin==$MATURIN_VERSION" >&2
fi

# cargo-zigbuild and maturin find zig as `python -m ziglang` of the first python on PATH,
# which is this venv's once its bin directory leads PATH.
"$python" -m ziglang version >/dev/null || { log "zig does not run from $venv"; exit 1; }
echo "$venv/bin"
