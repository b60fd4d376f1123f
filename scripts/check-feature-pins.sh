#!/usr/bin/env bash
# Checks that the bindings' own builds reuse what `cargo test --workspace` compiled.
#
# Cargo resolves features (and debug info of build scripts and proc-macros) per invocation
# (rust-lang/cargo#4463): a dev-dependency that turns on a feature of a shared dependency makes
# a later lone `cargo build -p agentvm-ffi` compile that dependency, and every crate above it,
# once more. scripts/test-*.sh build each binding on its own after the workspace's tests, so
# such a difference costs CI minutes. The feature pins in core/agentvm/Cargo.toml and
# [profile.dev.build-override] in Cargo.toml keep the builds identical; this script compares
# cargo's unit graphs (no compilation) and names every unit a binding's build would compile
# that the workspace's test build does not have. Fast (cargo resolution only); run by
# scripts/test-all.sh. The unit graph is a nightly cargo flag: RUSTC_BOOTSTRAP=1 allows it on
# the pinned stable toolchain, for this read-only query only.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
graph() { RUSTC_BOOTSTRAP=1 cargo "$@" --locked -Z unstable-options --unit-graph; }

# What scripts/test-all.sh runs, and what the binding scripts build after it.
# Each file is named for the crates its build asks for (those are expected to compile: a
# cdylib or a binary the tests do not link).
graph test --workspace --exclude agentvm-schema --no-run >"$tmp/workspace.json"
graph build -p agentvm-ffi >"$tmp/agentvm-ffi.json"
graph test -p agentvm-ffi --no-run >"$tmp/agentvm-ffi.test.json"
graph build -p agentvm-uniffi -p agentvm-uniffi-bindgen >"$tmp/agentvm-uniffi+agentvm-uniffi-bindgen.json"
graph build -p agentvm-node >"$tmp/agentvm-node.json"
graph build -p agentvm-server >"$tmp/agentvm-server.json"

python3 - "$tmp" <<'PY'
import json, sys, pathlib

def signatures(units):
    """A unit's identity as cargo's metadata hash sees it: package, target, features, profile
    (its name aside: `test` and `dev` units are shared), platform, mode and, recursively, its
    dependencies."""
    memo = {}
    def sig(i):
        if i not in memo:
            u = units[i]
            profile = {k: v for k, v in u["profile"].items() if k != "name"}
            deps = tuple(sorted(sig(d["index"]) for d in u["dependencies"]))
            memo[i] = hash((u["pkg_id"], u["target"]["name"], tuple(u["target"]["kind"]),
                            tuple(sorted(u["features"])), json.dumps(profile, sort_keys=True),
                            u.get("platform"), u["mode"], deps))
        return memo[i]
    return [sig(i) for i in range(len(units))]

tmp = pathlib.Path(sys.argv[1])
workspace = set(signatures(json.loads((tmp / "workspace.json").read_text())["units"]))
bad = False
for path in sorted(tmp.glob("agentvm-*.json")):
    units = json.loads(path.read_text())["units"]
    asked = {name + "@" for name in path.stem.removesuffix(".test").split("+")}
    extra = sorted({u["pkg_id"].rsplit("#", 1)[-1] for u, s in zip(units, signatures(units))
                    if s not in workspace and u["mode"] == "build"
                    and not any(u["pkg_id"].rsplit("#", 1)[-1].startswith(a) for a in asked)})
    if extra:
        bad = True
        print(f"{path.stem}: {len(extra)} crates would compile again: {' '.join(extra)}")
    else:
        print(f"{path.stem}: reuses the workspace's build ({len(units)} units)")
if bad:
    print("A dev-dependency or a binding turns on features the others lack: pin them in "
          "core/agentvm/Cargo.toml (see its \"Feature pins\"), or keep the crate out of the "
          "workspace's test build as scripts/test-all.sh does for agentvm-schema.", file=sys.stderr)
    sys.exit(1)
PY
