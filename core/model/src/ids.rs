//! Id generation and validation.
//!
//! Generated ids look like AgentX's (`img_…`, `sess_…`, `agent_…`, `msg_…`): a prefix, the
//! creation time in base 36 and random base-36 characters, so they sort roughly by creation.
//! Caller-chosen ids (container ids) are validated, never trusted.

use crate::error::{Error, Result};
use rand::Rng;

/// Longest id accepted anywhere, in bytes.
pub const MAX_ID_LEN: usize = 256;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

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
    base36(super::now_ms().max(0) as u64, &mut out);
    out.push('_');
    let mut rng = rand::rng();
    for _ in 0..10 {
        out.push(BASE36[rng.random_range(0..36)] as char);
    }
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
