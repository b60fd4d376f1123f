//! Template credentials at rest: each value is sealed with ChaCha20-Poly1305 under the
//! node's secrets key before a template is stored (redb or PostgreSQL alike: the store only
//! ever sees `sealed:v1:<base64 nonce+ciphertext>`), and opened only by the egress proxy.
//!
//! The key is, in order: the one given in the configuration (base64 of 32 bytes; what a
//! cluster's members share), the file `secrets.key` in the data dir (created mode 0600 with a
//! random key on first use), or a random key held in memory (for in-memory stores, whose
//! templates do not outlive the process either).

use crate::error::{Error, Result};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// What a sealed value starts with.
const PREFIX: &str = "sealed:v1:";

/// Bound into every seal, so a sealed value cannot be passed off as another kind of secret.
const AAD: &[u8] = b"agentvm template credential";

/// Seals and opens credential values with one key.
pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

fn storage(message: String) -> Error {
    Error::Storage {
        message,
        source: None,
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Decodes a key given as base64 of 32 bytes.
fn decode_key(text: &str, whence: &str) -> Result<[u8; 32]> {
    let bytes = b64().decode(text.trim()).map_err(|_| {
        Error::invalid(format!(
            "the secrets key in {whence} is not base64 (32 random bytes, base64-encoded)"
        ))
    })?;
    bytes.try_into().map_err(|_| {
        Error::invalid(format!(
            "the secrets key in {whence} is not 32 bytes (base64 of 32 random bytes)"
        ))
    })
}

impl Sealer {
    /// A sealer over `key`.
    pub(crate) fn new(key: [u8; 32]) -> Result<Sealer> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
            .map_err(|_| Error::Internal("the secrets key was refused".into()))?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// The sealer of the configuration: the given key, else the key file (made on first use),
    /// else a random key in memory.
    pub(crate) fn load(key: Option<&str>, key_file: Option<&Path>) -> Result<Sealer> {
        if let Some(k) = key {
            return Sealer::new(decode_key(k, "the configuration")?);
        }
        let Some(path) = key_file else {
            let mut k = [0u8; 32];
            SystemRandom::new()
                .fill(&mut k)
                .map_err(|_| Error::Internal("no randomness for the secrets key".into()))?;
            return Sealer::new(k);
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Sealer::new(decode_key(&text, &path.display().to_string())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut k)
                    .map_err(|_| Error::Internal("no randomness for the secrets key".into()))?;
                write_new_key(path, &b64().encode(k))?;
                // Another process may have won the race: use whatever the file holds now.
                let text = std::fs::read_to_string(path).map_err(|e| {
                    storage(format!("reading the secrets key {}: {e}", path.display()))
                })?;
                Sealer::new(decode_key(&text, &path.display().to_string())?)
            }
            Err(e) => Err(storage(format!(
                "reading the secrets key {}: {e}",
                path.display()
            ))),
        }
    }

    /// Seals `value` under a fresh random nonce.
    pub(crate) fn seal(&self, value: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Internal("no randomness for a nonce".into()))?;
        let mut buf = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| Error::Internal("sealing a credential failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", b64().encode(out)))
    }

    /// Opens a value [`seal`](Self::seal) made; `Storage` when it is not one or another key
    /// sealed it.
    pub(crate) fn open(&self, sealed: &str) -> Result<String> {
        let bad = || {
            storage(
                "a stored credential cannot be opened with this node's secrets key (was the key \
                 changed, or the template stored by a runtime with another key?)"
                    .to_string(),
            )
        };
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| b64().decode(b).ok())
            .ok_or_else(bad)?;
        if raw.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut buf)
            .map_err(|_| bad())?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad())
    }

    /// Whether `value` is a sealed one (as stored), not a plain one (as given).
    pub(crate) fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }
}

/// Writes `text` to `path` readable by its owner only (mode 0600), replacing what was there.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .map_err(|e| storage(format!("writing {}: {e}", path.display())))
}

/// Creates `path` with mode 0600 holding `text`; an existing file is left alone.
fn write_new_key(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            storage(format!(
                "creating {} for the secrets key: {e}",
                dir.display()
            ))
        })?;
    }
    match opts.open(path) {
        Ok(mut f) => f
            .write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| storage(format!("writing the secrets key {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(storage(format!(
            "creating the secrets key {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_nothing_else_opens() {
        let s = Sealer::new([7; 32]).unwrap();
        let a = s.seal("Bearer sk-secret").unwrap();
        let b = s.seal("Bearer sk-secret").unwrap();
        assert!(Sealer::is_sealed(&a));
        assert!(!a.contains("sk-secret"));
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(s.open(&a).unwrap(), "Bearer sk-secret");
        let other = Sealer::new([8; 32]).unwrap();
        assert!(other.open(&a).is_err(), "another key");
        let mut tampered = a.clone();
        tampered.pop();
        tampered.push('A');
        assert!(s.open(&tampered).is_err() || tampered == a);
        assert!(s.open("Bearer sk-secret").is_err());
        assert!(s.open("sealed:v1:AAAA").is_err());
    }

    #[test]
    fn the_key_file_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let first = Sealer::load(None, Some(&path)).unwrap();
        let sealed = first.seal("v").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Sealer::load(None, Some(&path)).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "v");
        let given = b64().encode([9u8; 32]);
        let configured = Sealer::load(Some(&given), Some(&path)).unwrap();
        assert!(configured.open(&sealed).is_err(), "the given key wins");
        assert!(Sealer::load(Some("short"), None).is_err());
        std::fs::write(&path, "garbage").unwrap();
        assert!(Sealer::load(None, Some(&path)).is_err());
    }
}
