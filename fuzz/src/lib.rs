//! agentvm's in-process fuzz harness. No nightly toolchain is needed: each parser's fuzz test
//! (in the crate that owns the parser, so it reaches crate-private ones too) calls [`run`] with
//! its target's name and a check.
//!
//! [`run`] first replays every file of the target's corpus (`fuzz/corpus/<target>/`: real
//! frames, commands, SSE streams, configs, and every input that ever crashed a target), then
//! feeds the check inputs mutated from that corpus by a seeded, deterministic mutator (byte
//! flips, insertions of tokens that matter to JSON, TOML and SSE, deletions, duplications,
//! splices of two seeds). A check fails by panicking; the harness then prints the input (and
//! writes it to `$CARGO_TARGET_TMPDIR`-like `target/fuzz-crashes/`), so it can be added to the
//! corpus as a regression test.
//!
//! The short run in `cargo test` is [`DEFAULT_ITERATIONS`] inputs per target. A long run:
//! `AGENTVM_FUZZ_ITERS=1000000 AGENTVM_FUZZ_SEED=<n> cargo test --release fuzz_` (or
//! `scripts/fuzz.sh`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Mutated inputs per target in a plain `cargo test` (a few seconds at most in a debug build).
pub const DEFAULT_ITERATIONS: u64 = 2_000;

/// Tokens whose insertion is likelier to reach a parser's interesting paths than random bytes.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    ":",
    ",",
    "null",
    "true",
    "-1",
    "0",
    "1e999",
    "18446744073709551616",
    "\\u0000",
    "\\ud800",
    "\u{fffd}",
    "\u{1F600}",
    "\"__ack\":",
    "\"__msgId\":",
    "\"__payload\":",
    "\"type\":",
    "\"data\":",
    "\"requestId\":",
    "_request",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "data: ",
    "event: ",
    "id: ",
    ": ",
    "=",
    "[llm]",
    "\"\"\"",
    "'",
    "#",
    "\u{feff}",
];

/// How many mutated inputs to run: `AGENTVM_FUZZ_ITERS`, else [`DEFAULT_ITERATIONS`].
pub fn iterations() -> u64 {
    std::env::var("AGENTVM_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

/// The mutator's seed: `AGENTVM_FUZZ_SEED`, else a fixed one (runs are reproducible).
pub fn seed() -> u64 {
    std::env::var("AGENTVM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_a6e7_7a11_0001)
}

/// `fuzz/corpus/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// The target's seed inputs, in file-name order. Panics when there are none: a target without
/// a corpus would fuzz nothing.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let seeds: Vec<_> = entries
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&p)
                .unwrap_or_else(|e| panic!("reading the corpus file {}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    assert!(!seeds.is_empty(), "the corpus {} is empty", dir.display());
    seeds
}

/// A small deterministic PRNG (xorshift64*): enough to pick mutations, and the same sequence
/// on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// `input` with one to eight mutations, some of them splicing in part of `other`.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let piece: Vec<u8> = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            4 if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            5 => out.insert(at, rng.next_u64() as u8),
            _ => out.truncate(at),
        }
    }
    out
}

/// Where a crashing input is written, so it can become a corpus file.
fn crash_path(target: &str, input: &[u8]) -> PathBuf {
    // FNV-1a: a stable name for the same input.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    std::env::temp_dir()
        .join("agentvm-fuzz-crashes")
        .join(format!("{target}-{hash:016x}"))
}

/// Runs `check` on `input`; on a panic, reports the input and panics naming it.
fn run_one(target: &str, what: &str, input: &[u8], check: &mut impl FnMut(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
        let path = crash_path(target, input);
        let saved = path
            .parent()
            .map(std::fs::create_dir_all)
            .and_then(|r| r.ok())
            .and_then(|()| std::fs::write(&path, input).ok())
            .is_some();
        panic!(
            "fuzz target {target}: {what} failed its check; input ({} bytes, {}): {:?}",
            input.len(),
            if saved {
                format!("saved to {}", path.display())
            } else {
                "not saved".into()
            },
            String::from_utf8_lossy(input),
        );
    }
}

/// Replays the target's corpus through `check`, then [`iterations`] inputs mutated from it.
/// Returns how many inputs were checked.
pub fn run(target: &str, mut check: impl FnMut(&[u8])) -> u64 {
    let seeds = corpus(target);
    for (name, input) in &seeds {
        run_one(target, &format!("corpus file {name}"), input, &mut check);
    }
    let mut rng = Rng::new(
        seed()
            ^ target
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    let n = iterations();
    for i in 0..n {
        let (_, a) = &seeds[rng.below(seeds.len())];
        let (_, b) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, a, b);
        run_one(target, &format!("mutated input {i}"), &input, &mut check);
    }
    seeds.len() as u64 + n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mutator_is_deterministic() {
        let a = mutate(
            &mut Rng::new(7),
            b"{\"__ack\":\"conn_1_1\"}",
            b"data: x\n\n",
        );
        let b = mutate(
            &mut Rng::new(7),
            b"{\"__ack\":\"conn_1_1\"}",
            b"data: x\n\n",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn a_panicking_check_is_reported_with_its_input() {
        let r = catch_unwind(|| {
            run_one("selftest", "input", b"boom", &mut |i: &[u8]| {
                assert!(i != b"boom", "crash")
            })
        });
        let message = r
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(message.contains("\"boom\""), "{message}");
        let _ = std::fs::remove_file(crash_path("selftest", b"boom"));
    }
}
