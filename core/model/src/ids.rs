//! Id generation and validation.
//!
//! Generated ids look like AgentX's (`img_…`, `sess_…`, `agent_…`, `msg_…`): a prefix, the
//! creation time in base 36 and random base-36 characters, so they sort by creation. Within one
//! millisecond the random part of each id is the previous one's plus one (as monotonic ULIDs
//! do), so ids made one after another in a process sort in that order even when their records'
//! `createdAt` is equal: listings ordered by `(createdAt, id)` are creation order.
//! Caller-chosen ids (container ids) are validated, never trusted.

use crate::error::{Error, Result};
use rand::Rng;
use std::sync::Mutex;

/// Longest id accepted anywhere, in bytes.
pub const MAX_ID_LEN: usize = 256;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Base-36 characters of the random part.
const RANDOM_CHARS: u32 = 10;

/// The last id's millisecond and random part, for the next id of the same millisecond.
static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));

fn base36(mut n: u64, out: &mut String) {
    let mut buf = [0u8; 13];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = BASE36[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|&b| b as char));
}

/// A new unique id with `prefix` (`"img"`, `"sess"`, `"agent"`, `"msg"`, ...).
pub fn new_id(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 22);
    out.push_str(prefix);
    out.push('_');
    let space = 36u64.pow(RANDOM_CHARS);
    let (ms, random) = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock, and never behind the last id (a clock stepping back), so the
        // ids of every thread are in one order.
        let ms = (super::now_ms().max(0) as u64).max(last.0);
        // A new millisecond (or the rare overflow) starts from a fresh random number.
        let next = match *last {
            (at, r) if at == ms && r + 1 < space => r + 1,
            _ => rand::rng().random_range(0..space),
        };
        *last = (ms, next);
        (ms, next)
    };
    base36(ms, &mut out);
    out.push('_');
    let mut digits = [b'0'; RANDOM_CHARS as usize];
    let mut n = random;
    for d in digits.iter_mut().rev() {
        *d = BASE36[(n % 36) as usize];
        n /= 36;
    }
    out.extend(digits.iter().map(|&b| b as char));
    out
}

/// Checks a caller-supplied id: non-empty, at most [`MAX_ID_LEN`] bytes, no control
/// characters, no `/` or `\` (ids name directories on disk) and not `.` or `..`.
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_LEN}",
            id.len()
        )));
    }
    if id == "." || id == ".." || id.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(Error::invalid(format!(
            "{what} {id:?} contains a character that is not allowed (control characters, '/', '\\', or is '.'/'..')"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_unique() {
        let a = new_id("img");
        let b = new_id("img");
        assert!(a.starts_with("img_"));
        assert_ne!(a, b);
        assert_eq!(a.rsplit('_').next().map(str::len), Some(10));
    }

    #[test]
    fn ids_made_one_after_another_sort_in_that_order() {
        let ids: Vec<String> = (0..2000).map(|_| new_id("img")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn validation_refuses_bad_ids() {
        assert!(validate_id("containerId", "user-alice").is_ok());
        assert_eq!(
            validate_id("containerId", "").unwrap_err().to_string(),
            "containerId must not be empty"
        );
        assert!(validate_id("containerId", &"x".repeat(257)).is_err());
        assert!(validate_id("containerId", "../etc").is_err());
        assert!(validate_id("containerId", "..").is_err());
        assert!(validate_id("containerId", "a\nb").is_err());
    }
}
