#!/usr/bin/env bash
# The long fuzz run (not in CI): every fuzz target with many more mutated inputs than the short
# run `cargo test` does (2,000 per target), in a release build.
#
#   scripts/fuzz.sh                 # 1,000,000 inputs per target, seed 1
#   ITERS=100000 SEED=7 scripts/fuzz.sh
#
# A crash prints the input and saves it under $TMPDIR/agentvm-fuzz-crashes/<target>-<hash>:
# copy it into fuzz/corpus/<target>/ (the corpus is replayed by every run, so it stays a
# regression test), then fix the parser.
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENTVM_FUZZ_ITERS="${ITERS:-1000000}"
export AGENTVM_FUZZ_SEED="${SEED:-1}"
echo "fuzz: $AGENTVM_FUZZ_ITERS inputs per target, seed $AGENTVM_FUZZ_SEED"
cargo test --release -p agentvm --test fuzz -- fuzz_
cargo test --release -p agentvm-embed --lib -- fuzz_
cargo test --release -p agentvm-server --lib --bins -- fuzz_
