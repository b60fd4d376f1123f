//! The node's egress CA and the TLS both sides of an intercepted tunnel speak.
//!
//! For a `CONNECT` to a host that has credentials, the proxy answers the sandbox's TLS itself
//! with a leaf certificate for that host signed by the node's CA (installed in the sandbox's
//! trust store at creation), reads the request, adds the credentials, and sends it on over its
//! own TLS connection to the host, verified against the webpki roots plus any extra CA the
//! configuration names. Tunnels to other hosts are never opened.
//!
//! The CA's key is kept in `egress-ca.key` (mode 0600) beside its certificate
//! `egress-ca.pem` in the data dir, made on first use; without a data dir, in memory.

use crate::error::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Leaf configurations kept at most; beyond, the cache starts over.
const MAX_LEAVES: usize = 1024;

/// The per-node CA that signs the proxy's leaf certificates.
pub(crate) struct NodeCa {
    /// The CA certificate, PEM: what sandboxes trust.
    pem: String,
    /// Signs leaves.
    issuer: Issuer<'static, KeyPair>,
    /// A TLS server configuration per host, made on first use.
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

fn tls_err(doing: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("egress TLS: {doing}: {e}"))
}

fn storage(message: String) -> Error {
    Error::Storage {
        message,
        source: None,
    }
}

/// The CA's fixed parameters: rebuilt identically from the kept key, so the issuer of new
/// leaves is the certificate sandboxes already trust.
fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "agentvm egress CA");
    dn.push(DnType::OrganizationName, "agentvm");
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

impl NodeCa {
    /// The CA kept in `dir` (made there on first use), or a fresh one in memory.
    pub(crate) fn load(dir: Option<&Path>) -> Result<NodeCa> {
        let Some(dir) = dir else {
            return Self::generate().map(|(ca, _)| ca);
        };
        let key_path = dir.join("egress-ca.key");
        let pem_path = dir.join("egress-ca.pem");
        match (
            std::fs::read_to_string(&key_path),
            std::fs::read_to_string(&pem_path),
        ) {
            (Ok(key), Ok(pem)) => {
                let key = KeyPair::from_pem(&key).map_err(|e| {
                    storage(format!("the egress CA key {}: {e}", key_path.display()))
                })?;
                Ok(NodeCa {
                    pem,
                    issuer: Issuer::new(ca_params()?, key),
                    leaves: Mutex::new(HashMap::new()),
                })
            }
            _ => {
                let (ca, key_pem) = Self::generate()?;
                std::fs::create_dir_all(dir)
                    .map_err(|e| storage(format!("creating {}: {e}", dir.display())))?;
                super::secrets::write_private(&key_path, &key_pem)?;
                std::fs::write(&pem_path, &ca.pem)
                    .map_err(|e| storage(format!("writing {}: {e}", pem_path.display())))?;
                Ok(ca)
            }
        }
    }

    fn generate() -> Result<(NodeCa, String)> {
        let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
        let params = ca_params()?;
        let cert = params.self_signed(&key).map_err(|e| tls_err("CA", e))?;
        let key_pem = key.serialize_pem();
        Ok((
            NodeCa {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
                leaves: Mutex::new(HashMap::new()),
            },
            key_pem,
        ))
    }

    /// The CA certificate, PEM.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// The TLS server configuration presenting a leaf for `host` (HTTP/1.1 only).
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>> {
        let mut leaves = crate::lock(&self.leaves);
        if let Some(c) = leaves.get(host) {
            return Ok(c.clone());
        }
        let mut params =
            CertificateParams::new(vec![host.to_string()]).map_err(|e| tls_err("leaf", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, host.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        let key = KeyPair::generate().map_err(|e| tls_err("leaf key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_err("signing a leaf", e))?;
        let chain = vec![cert.der().clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("server", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| tls_err("server", e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        leaves.insert(host.to_string(), config.clone());
        Ok(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS client configuration upstream: the webpki roots plus `extra_pem` (certificates,
/// PEM), HTTP/1.1.
pub(crate) fn client_config(extra_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_pem {
        for der in pem_certificates(pem)? {
            roots
                .add(der)
                .map_err(|e| Error::invalid(format!("an egress upstream CA: {e}")))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("client", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates in a PEM text.
fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid(format!("egress upstream CA certificates: {e:?}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "egress upstream CA certificates: no certificate in the PEM text",
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_kept_and_signs_leaves_the_same_way_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeCa::load(Some(dir.path())).unwrap();
        let again = NodeCa::load(Some(dir.path())).unwrap();
        assert_eq!(first.pem(), again.pem());
        assert!(first.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("egress-ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let a = again.server_config("api.example.com").unwrap();
        let b = again.server_config("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "cached per host");
        assert!(client_config(Some(first.pem())).is_ok());
        assert!(client_config(Some("not pem")).is_err());
    }
}
