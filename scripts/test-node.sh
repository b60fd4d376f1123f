#!/usr/bin/env bash
# Builds the Node package (node/build.sh: cargo build -p agentvm-node, agentvm.node, native.d.ts)
# and runs its tests with `node --test`. Idempotent. Needs node >= 20; no npm dependencies.
# The Docker test of the scheduler needs scripts/setup-docker.sh first (or AGENTVM_SKIP_DOCKER=1).
# Fails when a test fails and when no test ran.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/node"

command -v node >/dev/null || { echo "test-node: node is not installed (need >= 20)" >&2; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || { echo "test-node: node $(node --version) is too old (need >= 20)" >&2; exit 1; }
# The package has no npm dependencies; install only if some appear in package.json.
if node -e 'const p=require("./package.json");process.exit(Object.keys({...p.dependencies,...p.devDependencies}).length?0:1)'; then
    [ -d node_modules ] || npm install --no-audit --no-fund
fi

bash build.sh

shopt -s nullglob
tests=(test/*.test.mjs)
[ "${#tests[@]}" -gt 0 ] || { echo "test-node: no test files in node/test" >&2; exit 1; }
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
node --test --test-reporter=spec "${tests[@]}" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
passed="$(sed -n 's/^ℹ pass \([0-9]*\).*/\1/p' "$log" | tail -1)"
failed="$(sed -n 's/^ℹ fail \([0-9]*\).*/\1/p' "$log" | tail -1)"
if [ "$status" -ne 0 ]; then
    echo "test-node: node --test failed (exit $status)" >&2
    exit "$status"
fi
if [ -z "$passed" ] || [ "$passed" -eq 0 ]; then
    echo "test-node: no test ran" >&2
    exit 1
fi
echo "node: ${passed} passed, ${failed:-0} failed"
