#!/usr/bin/env bash
# Builds the native module and its type definitions, without @napi-rs/cli:
#   cargo build -p agentvm-node  ->  node/agentvm.node  (+ node/native.d.ts from napi-derive)
# Idempotent and incremental. AGENTVM_NODE_RELEASE=1 builds with --release (for benches).
# CARGO_TARGET_DIR is honoured (default: <repo>/target).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
profile=debug
flags=()
if [ "${AGENTVM_NODE_RELEASE:-0}" = 1 ]; then
    profile=release
    flags+=(--release)
fi

# napi-derive appends the TypeScript of every #[napi] item to this folder while it compiles
# the crate. Cargo does not track the variable: when the sources are newer than the raw file
# (built without it, e.g. by clippy), force the crate to recompile so the file is rewritten.
typedefs="$target/napi-typedefs/$profile"
raw="$typedefs/agentvm-node"
mkdir -p "$typedefs"
if [ ! -s "$raw" ] || [ -n "$(find "$here/src" -name '*.rs' -newer "$raw" -print -quit)" ]; then
    touch "$here/src/lib.rs"
fi
(cd "$root" && NAPI_TYPE_DEF_TMP_FOLDER="$typedefs" CARGO_TARGET_DIR="$target" \
    cargo build -p agentvm-node "${flags[@]}")

# Plain `node` loads only files named *.node.
lib="$target/$profile/libagentvm_node.so"
[ -f "$lib" ] || lib="$target/$profile/libagentvm_node.dylib"
cp -f "$lib" "$here/agentvm.node.tmp"
mv -f "$here/agentvm.node.tmp" "$here/agentvm.node"

node "$here/scripts/typedefs.js" "$raw" "$here/native.d.ts"
echo "built $here/agentvm.node ($profile)"
