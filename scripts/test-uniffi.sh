#!/usr/bin/env bash
# The uniffi bindings (bindings/uniffi): installs what the tests need when missing (Debian ruby
# and ruby-ffi), builds libagentvm_uniffi and the crate's uniffi-bindgen, generates Kotlin,
# Swift, Python and Ruby from the built library into bindings/uniffi/generated/ (gitignored),
# then runs the Ruby (minitest) and Python (unittest) flows against it. Kotlin and Swift are
# generated but not compiled here (see bindings/README.md). Idempotent; called by
# scripts/test-all.sh, runnable alone. AGENTVM_SKIP_DOCKER=1 skips the sandbox parts.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

need=()
command -v ruby >/dev/null || need+=(ruby)
{ command -v ruby >/dev/null && ruby -e 'require "ffi"' 2>/dev/null; } || need+=(ruby-ffi)
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

step "build libagentvm_uniffi (bindings/uniffi) and uniffi-bindgen (bindings/uniffi/bindgen)"
# Together, as `cargo test --workspace` builds them: nothing but the two is compiled again.
cargo build --locked -p agentvm-uniffi -p agentvm-uniffi-bindgen
target="${CARGO_TARGET_DIR:-target}"
lib_dir="$(cd "$target/debug" && pwd)"
lib="$lib_dir/libagentvm_uniffi.so"

step "generate Kotlin, Swift, Python and Ruby (library mode) into bindings/uniffi/generated"
out=bindings/uniffi/generated
rm -rf "$out"
for language in kotlin swift python ruby; do
    "$lib_dir/uniffi-bindgen" generate --library "$lib" --language "$language" \
        --no-format --out-dir "$out/$language"
done
# The generated Python loads the library from its own directory; Ruby's ffi searches
# LD_LIBRARY_PATH.
cp "$lib" "$out/python/"
for generated in kotlin/uniffi/agentvm_uniffi/agentvm_uniffi.kt swift/agentvm_uniffi.swift \
    python/agentvm_uniffi.py ruby/agentvm_uniffi.rb; do
    grep -q 'AgentVm' "$out/$generated" || { echo "missing or empty: $out/$generated" >&2; exit 1; }
done
# uniffi.toml is read (library mode finds it through cargo metadata): Kotlin's close is renamed.
grep -q 'suspend fun `shutdown`' "$out/kotlin/uniffi/agentvm_uniffi/agentvm_uniffi.kt" \
    || { echo "Kotlin: AgentVm.close was not renamed to shutdown (bindings/uniffi/uniffi.toml)" >&2; exit 1; }
ls -R "$out" | sed 's/^/  /'

step "ruby flow (minitest, bindings/uniffi/tests/ruby)"
LD_LIBRARY_PATH="$lib_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    ruby -I "$out/ruby" bindings/uniffi/tests/ruby/flow_test.rb --verbose

step "python flow (unittest, bindings/uniffi/tests/python)"
PYTHONPATH="$out/python" python3 bindings/uniffi/tests/python/test_flow.py -v
