//! Egress: the way out of a sandbox whose template's network is an allowlist.
//!
//! Such a sandbox joins an internal Docker network made for its template
//! (`agentvm-egress-<instance>-<template>`, no route outside its subnet). The runtime listens on that
//! network's gateway address (the node's side of the bridge) with an HTTP proxy
//! (`egress::proxy`) that lets through requests to allowlisted hosts only, and the sandbox's
//! `HTTP_PROXY`/`HTTPS_PROXY` point there. So the proxy must run on the machine of the Docker
//! engine: nodes reached over TCP from another host are refused for these templates.
//!
//! One proxy per (node, network), started with the first sandbox and kept while the runtime
//! runs; its policy is the template's and follows template updates. Template credentials are
//! sealed at rest (`egress::secrets`) and added by the proxy to requests for their hosts; for HTTPS
//! the proxy intercepts those hosts' tunnels with a leaf from the node's CA (`egress::tls`), which
//! every allowlist sandbox trusts.

mod proxy;
pub(crate) mod secrets;
pub(crate) mod tls;

use super::engine::{EngineRef, NetworkSpec};
use super::hardening::labels;
use super::ports::is_local_endpoint;
use super::template::{NetworkPolicy, Template};
use super::{lock, Scheduler};
use crate::error::{Error, ErrorKind, Result};
use crate::model::scheduler::egress::{Allowlist, HostPattern};
use proxy::{Injection, Policy, ProxyState};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The node's egress CA alone, in a sandbox (`NODE_EXTRA_CA_CERTS`).
pub const CA_FILE: &str = "/usr/local/share/ca-certificates/agentvm-egress.crt";

/// The image's CA bundle plus the node's egress CA, in a sandbox (`SSL_CERT_FILE`,
/// `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/agentvm-egress-bundle.pem";

/// Where images keep their CA bundle (Debian, Ubuntu, Alpine).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The label on networks agentvm makes for egress.
const EGRESS_LABEL: &str = "agentvm.egress";

/// Tuning of the egress proxies.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// The port each proxy listens on, on its network's gateway address. Fixed (not
    /// ephemeral) so sandboxes adopted after a restart find their proxy where their
    /// environment says; `0` picks a free port per proxy.
    pub port: u16,
    /// Names resolved to these addresses instead of through DNS, like curl's `--resolve`
    /// (`host=addr`). The address is trusted as given, even a loopback one: this is how a
    /// node's operator (or a test) points an allowlisted name at a local service.
    pub resolve: HashMap<String, IpAddr>,
    /// Client connections open at once per proxy; beyond, `503`.
    pub max_connections: usize,
    /// A connection that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Bound on connecting upstream.
    pub connect_timeout: Duration,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// The key sealing template credentials at rest: base64 of 32 random bytes. Give the
    /// same one to every member of a cluster; it wins over `secrets_key_file`.
    pub secrets_key: Option<String>,
    /// Where the key sealing template credentials is kept when none is given: created (mode
    /// 0600, a random key) on first use. An embedded runtime with a data dir uses
    /// `<data dir>/secrets.key`; with neither, a random key lives in memory only.
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// Where the node's egress CA is kept (`egress-ca.key`, mode 0600, and `egress-ca.pem`),
    /// made on first use: the data dir of an embedded runtime. `None`: a CA in memory.
    pub ca_dir: Option<std::path::PathBuf>,
    /// Extra CA certificates (PEM) the proxy trusts for upstream TLS when it intercepts,
    /// besides the webpki roots: a private API's CA, or a test server's.
    pub upstream_ca_pem: Option<String>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            port: 3128,
            resolve: HashMap::new(),
            max_connections: 256,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            secrets_key: None,
            secrets_key_file: None,
            ca_dir: None,
            upstream_ca_pem: None,
        }
    }
}

impl EgressConfig {
    /// Parses resolve overrides given as `host=addr` (a config file's list), refusing
    /// anything else, naming it.
    pub fn parse_resolve(entries: &[String]) -> Result<HashMap<String, IpAddr>> {
        let mut out = HashMap::new();
        for e in entries {
            let bad = || {
                Error::invalid(format!(
                    "egress resolve entry {e:?} is not host=address (api.example.com=10.0.0.5)"
                ))
            };
            let (host, addr) = e.split_once('=').ok_or_else(bad)?;
            let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
            let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
            if host.is_empty() {
                return Err(bad());
            }
            out.insert(host, addr);
        }
        Ok(out)
    }
}

/// Why the proxy refused a request: the `reason` label of `agentvm_egress_refusals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The host is not on the allowlist.
    NotAllowed,
    /// A literal address the allowlist does not name.
    DirectIp,
    /// The destination is the node itself or another local address.
    LocalAddress,
    /// Not an HTTP proxy request (another protocol, a malformed or oversized head, a
    /// non-`http` URL).
    BadRequest,
    /// Too many connections through the proxy.
    Busy,
    /// The allowed host could not be resolved or reached.
    UpstreamFailed,
}

impl Reason {
    const ALL: [Reason; 6] = [
        Reason::NotAllowed,
        Reason::DirectIp,
        Reason::LocalAddress,
        Reason::BadRequest,
        Reason::Busy,
        Reason::UpstreamFailed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::NotAllowed => "not_allowed",
            Reason::DirectIp => "direct_ip",
            Reason::LocalAddress => "local_address",
            Reason::BadRequest => "bad_request",
            Reason::Busy => "busy",
            Reason::UpstreamFailed => "upstream_failed",
        }
    }
}

/// Refusals by reason, shared by every proxy of a scheduler.
#[derive(Debug, Default)]
pub(crate) struct EgressCounters {
    refused: [AtomicU64; 6],
}

impl EgressCounters {
    pub(crate) fn count(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every reason with its count (zeros included, so the series exist from the start).
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        Reason::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (r.as_str().to_string(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A running proxy; dropping it stops it and its connections.
pub(crate) struct EgressProxy {
    /// Where it listens (the network's gateway address).
    addr: SocketAddr,
    /// Its policy and tuning.
    state: Arc<ProxyState>,
    /// The accept loop (owning the connections).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Docker network of an allowlist template's sandboxes. The scheduler's instance is in
/// the name: two schedulers sharing an engine must not share a network (nor race to create
/// two of the same name, which Docker allows and then refuses to resolve).
pub(crate) fn network_name(instance: &str, template_id: &str) -> String {
    format!("agentvm-egress-{instance}-{template_id}")
}

/// Refuses a node whose Docker engine is on another host: its sandboxes could not reach a
/// proxy that listens on this host.
fn require_local(template_id: &str, node_id: &str, endpoint: &str) -> Result<()> {
    if is_local_endpoint(endpoint) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "template {template_id} has an allowlist network, whose egress proxy runs in this \
         runtime on the Docker host; node {node_id} ({endpoint}) is a Docker engine on another \
         host, so its sandboxes could not reach the proxy: place the sandbox on a local node (a \
         unix socket or a loopback endpoint)"
    )))
}

/// The name of a template's network, or `none`.
pub(crate) fn network_of(instance: &str, template: &Template) -> String {
    match &template.spec.network {
        NetworkPolicy::Bridge { name, .. } => name.clone(),
        NetworkPolicy::Allowlist { .. } => network_name(instance, &template.id),
        NetworkPolicy::None => "none".into(),
    }
}

/// The credentials a template's proxy adds: each opened with the node's key.
fn credentials_of(template: &Template, sealer: &secrets::Sealer) -> Result<Vec<Injection>> {
    template
        .spec
        .credentials
        .iter()
        .map(|c| {
            Ok(Injection {
                host: HostPattern::parse(&c.host)?,
                header: c.header.clone(),
                value: sealer.open(&c.value)?,
            })
        })
        .collect()
}

impl Scheduler {
    /// What a template's proxy enforces and adds.
    fn policy_of(&self, template: &Template) -> Result<Policy> {
        match &template.spec.network {
            NetworkPolicy::Allowlist { hosts } => Ok(Policy {
                allow: Allowlist::parse(hosts)?,
                credentials: credentials_of(template, &self.inner.sealer)?,
            }),
            _ => Ok(Policy::default()),
        }
    }

    /// Seals the credential values of a spec about to be stored (values sealed already, as a
    /// snapshot copies them, stay as they are). A value left empty keeps
    /// the one `previous` holds for the same host and header (an update of a template whose
    /// values clients never see); `InvalidInput` when there is none.
    pub(crate) fn seal_credentials(
        &self,
        spec: &mut crate::TemplateSpec,
        previous: Option<&Template>,
    ) -> Result<()> {
        for c in &mut spec.credentials {
            if c.value.is_empty() {
                let kept = previous.and_then(|p| {
                    p.spec.credentials.iter().find(|o| {
                        o.host.eq_ignore_ascii_case(&c.host)
                            && o.header.eq_ignore_ascii_case(&c.header)
                    })
                });
                match kept {
                    Some(o) => c.value = o.value.clone(),
                    None => {
                        return Err(Error::invalid(format!(
                            "the credential for {} {} has no value (an empty value keeps the stored one, and there is none)",
                            c.host, c.header
                        )))
                    }
                }
            } else if secrets::Sealer::is_sealed(&c.value) {
                // Sealed already (a snapshot copies its template's): kept when this node's
                // key opens it.
                if self.inner.sealer.open(&c.value).is_err() {
                    return Err(Error::invalid(format!(
                        "the credential for {} {} must be given as its plain value",
                        c.host, c.header
                    )));
                }
            } else {
                c.value = self.inner.sealer.seal(&c.value)?;
            }
        }
        Ok(())
    }

    /// Makes the way out for a sandbox of an allowlist template on `node_id`: its internal
    /// network and the proxy on that network's gateway. Returns the environment that sends
    /// the sandbox's HTTP clients through the proxy.
    pub(crate) async fn prepare_egress(
        &self,
        d: &EngineRef,
        node_id: &str,
        template: &Template,
    ) -> Result<Vec<(String, String)>> {
        require_local(&template.id, node_id, &self.endpoint_of(node_id))?;
        let network = network_name(&self.inner.instance, &template.id);
        let gateway = self.egress_network(d, node_id, &network).await?;
        let policy = Arc::new(self.policy_of(template)?);
        let key = (node_id.to_string(), network.clone());
        let existing = lock(&self.inner.egress).get(&key).map(|p| p.addr);
        let addr = match existing {
            Some(addr) if addr.ip() == gateway => {
                self.refresh_egress(template);
                addr
            }
            _ => {
                let config = self.inner.config.egress.clone();
                let listener = tokio::net::TcpListener::bind((gateway, config.port))
                    .await
                    .map_err(|e| {
                        Error::unavailable(format!(
                            "the egress proxy of template {} could not listen on {gateway}:{} \
                             (network {network} on node {node_id}): {e}",
                            template.id, config.port
                        ))
                    })?;
                let addr = listener.local_addr().map_err(|e| {
                    Error::Internal(format!("the egress proxy's address is unknown: {e}"))
                })?;
                let state = Arc::new(ProxyState {
                    policy: RwLock::new(policy),
                    ca: self.inner.ca.clone(),
                    upstream_tls: self.inner.upstream_tls.clone(),
                    config,
                    counters: self.inner.counters.egress.clone(),
                    own_address: gateway,
                });
                let task = tokio::spawn(proxy::serve(listener, state.clone()));
                tracing::info!(node = node_id, network = %network, %addr, "egress proxy listening");
                lock(&self.inner.egress).insert(key, Arc::new(EgressProxy { addr, state, task }));
                addr
            }
        };
        let url = format!("http://{addr}");
        let none = "localhost,127.0.0.1,::1".to_string();
        let mut env = Vec::new();
        if !template.spec.security.read_only_root {
            for var in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
                env.push((var.to_string(), CA_BUNDLE.to_string()));
            }
            env.push(("NODE_EXTRA_CA_CERTS".to_string(), CA_FILE.to_string()));
        } else if !template.spec.credentials.is_empty() {
            return Err(Error::invalid(format!(
                "template {} has credentials and a read-only root: the egress CA that HTTPS \
                 credentials need cannot be installed in a read-only root",
                template.id
            )));
        }
        env.extend([
            ("HTTP_PROXY".into(), url.clone()),
            ("HTTPS_PROXY".into(), url.clone()),
            ("http_proxy".into(), url.clone()),
            ("https_proxy".into(), url),
            ("NO_PROXY".into(), none.clone()),
            ("no_proxy".into(), none),
        ]);
        Ok(env)
    }

    /// The node's egress CA certificate (PEM): what allowlist sandboxes trust, so the proxy
    /// can add credentials to their HTTPS requests.
    pub fn egress_ca_pem(&self) -> &str {
        self.inner.ca.pem()
    }

    /// Installs the node's egress CA in a created (not yet started) sandbox container: alone
    /// in [`CA_FILE`], and appended to the image's bundle (when it has one) in [`CA_BUNDLE`].
    pub(crate) async fn install_egress_ca(&self, d: &EngineRef, container: &str) -> Result<()> {
        use futures::StreamExt;
        let mut stream = d.download(container, SYSTEM_BUNDLE);
        let mut tarball = Vec::new();
        let mut found = true;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => tarball.extend_from_slice(&c),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    found = false;
                    break;
                }
                Err(e) => return Err(e),
            }
            if tarball.len() > 16 * 1024 * 1024 {
                found = false;
                break;
            }
        }
        let mut bundle = Vec::new();
        if found {
            let mut archive = tar::Archive::new(std::io::Cursor::new(tarball));
            if let Some(Ok(mut entry)) = archive.entries().ok().and_then(|mut e| e.next()) {
                use std::io::Read;
                let _ = entry.read_to_end(&mut bundle);
            }
            if !bundle.is_empty() && !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        let pem = self.inner.ca.pem().as_bytes();
        bundle.extend_from_slice(pem);
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], dir: bool| {
            let mut h = tar::Header::new_gnu();
            h.set_size(if dir { 0 } else { data.len() as u64 });
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            builder.append_data(&mut h, path, data)
        };
        let built = (|| {
            for dir in [
                "usr/",
                "usr/local/",
                "usr/local/share/",
                "usr/local/share/ca-certificates/",
                "etc/",
                "etc/ssl/",
                "etc/ssl/certs/",
            ] {
                add(dir, &[], true)?;
            }
            add(CA_FILE.trim_start_matches('/'), pem, false)?;
            add(CA_BUNDLE.trim_start_matches('/'), &bundle, false)?;
            Ok::<_, std::io::Error>(())
        })();
        built.map_err(|e| Error::Internal(format!("building the CA archive: {e}")))?;
        let tarball = builder
            .into_inner()
            .map_err(|e| Error::Internal(format!("building the CA archive: {e}")))?;
        d.upload(container, "/", tarball).await
    }

    pub(crate) async fn resume_egress(&self, sandbox: &crate::Sandbox) {
        let Ok(Some(template)) = self.get_template(&sandbox.template_id).await else {
            return;
        };
        if !matches!(template.spec.network, NetworkPolicy::Allowlist { .. })
            || sandbox.network != network_name(&self.inner.instance, &template.id)
        {
            return;
        }
        let restarted = match self.engine(&sandbox.node_id).await {
            Ok(d) => self.prepare_egress(&d, &sandbox.node_id, &template).await,
            Err(e) => Err(e),
        };
        match restarted {
            Ok(env) => {
                let now = env.iter().find(|(k, _)| k == "HTTP_PROXY").map(|(_, v)| v);
                if now != sandbox.env.get("HTTP_PROXY") {
                    tracing::warn!(sandbox = %sandbox.id, proxy = ?now, "an adopted sandbox's egress proxy moved (egress port 0?): its HTTP_PROXY no longer reaches it");
                }
            }
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.id, error = %e.chain(), "the egress proxy of an adopted sandbox could not be started: it has no way out until it is");
            }
        }
    }

    /// Puts a template's current allowlist in force in its running proxies.
    pub(crate) fn refresh_egress(&self, template: &Template) {
        let network = network_name(&self.inner.instance, &template.id);
        let policy = match self.policy_of(template) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(template = %template.id, error = %e, "the egress policy of a template could not be applied; its proxies keep the previous one");
                return;
            }
        };
        let policy = Arc::new(policy);
        for ((_, n), p) in lock(&self.inner.egress).iter() {
            if *n == network {
                *p.state.policy.write().unwrap_or_else(|e| e.into_inner()) = policy.clone();
            }
        }
    }

    /// Stops the egress proxies of a deleted template and removes its networks, on every
    /// node where no live sandbox of it runs any more (sandboxes outlive their template: the
    /// sweep retires the rest once they ended). Returns the nodes it retired.
    pub(crate) async fn retire_egress(&self, template_id: &str) -> Vec<String> {
        let network = network_name(&self.inner.instance, template_id);
        let in_use: std::collections::HashSet<String> = lock(&self.inner.live)
            .values()
            .filter(|l| l.record.template_id == template_id && !l.record.status.is_terminal())
            .map(|l| l.record.node_id.clone())
            .collect();
        let nodes: Vec<String> = {
            let mut proxies = lock(&self.inner.egress);
            let keys: Vec<(String, String)> = proxies
                .keys()
                .filter(|(node, n)| *n == network && !in_use.contains(node))
                .cloned()
                .collect();
            // Dropping a proxy aborts its accept loop and the connections it owns.
            for k in &keys {
                proxies.remove(k);
            }
            keys.into_iter().map(|(node, _)| node).collect()
        };
        for node in &nodes {
            let removed = match self.engine(node).await {
                Ok(d) => d.remove_network(&network).await,
                Err(e) => Err(e),
            };
            match removed {
                Ok(()) => {
                    tracing::info!(node = %node, network = %network, "egress proxy stopped and network removed: its template is gone")
                }
                Err(e) => {
                    tracing::warn!(node = %node, network = %network, error = %e, "the network of a deleted template could not be removed")
                }
            }
        }
        nodes
    }

    /// Removes the egress networks on a node whose template is gone and which no proxy of
    /// this process and no live sandbox here uses: those of templates deleted while this
    /// process did not run their proxy (before a restart, or through another server).
    /// Docker refuses a network containers are still on (`Conflict`): it is left for later.
    /// Returns the networks removed.
    pub(crate) async fn remove_stale_egress_networks(
        &self,
        node_id: &str,
        d: &EngineRef,
    ) -> Result<Vec<String>> {
        let instance = self.inner.instance.clone();
        let names = d
            .list_networks(&[(labels::INSTANCE, &instance), (EGRESS_LABEL, "true")])
            .await?;
        let prefix = network_name(&instance, "");
        let mut removed = Vec::new();
        for name in names {
            let Some(template_id) = name.strip_prefix(&prefix) else {
                continue;
            };
            if lock(&self.inner.egress).contains_key(&(node_id.to_string(), name.clone())) {
                continue;
            }
            let in_use = lock(&self.inner.live).values().any(|l| {
                l.record.template_id == template_id
                    && l.record.node_id == node_id
                    && !l.record.status.is_terminal()
            });
            if in_use {
                continue;
            }
            let store = self.inner.store.clone();
            let key = template_id.to_string();
            if super::blocking(move || store.get_template(&key))
                .await?
                .is_some()
            {
                continue;
            }
            match d.remove_network(&name).await {
                Ok(()) => {
                    tracing::info!(node = node_id, network = %name, "removed the network of a deleted template");
                    removed.push(name);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                Err(e) => {
                    tracing::warn!(node = node_id, network = %name, error = %e, "the network of a deleted template could not be removed")
                }
            }
        }
        Ok(removed)
    }

    /// The templates whose egress proxies still run here: what the sweep checks for ones
    /// deleted (by this or another server) while sandboxes of them were live.
    pub(crate) fn egress_templates(&self) -> Vec<String> {
        let prefix = network_name(&self.inner.instance, "");
        let mut ids: Vec<String> = lock(&self.inner.egress)
            .keys()
            .filter_map(|(_, n)| n.strip_prefix(&prefix).map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Ensures the internal network `name` on the node and returns its gateway address.
    async fn egress_network(&self, d: &EngineRef, node_id: &str, name: &str) -> Result<IpAddr> {
        let info = match d.network(name).await? {
            Some(i) => i,
            None => {
                let mut l = HashMap::new();
                l.insert(labels::INSTANCE.to_string(), self.inner.instance.clone());
                l.insert(EGRESS_LABEL.to_string(), "true".to_string());
                d.create_network(&NetworkSpec {
                    name,
                    internal: true,
                    labels: l,
                })
                .await?;
                d.network(name).await?.ok_or_else(|| {
                    Error::unavailable(format!(
                        "network {name} on node {node_id} was made but cannot be found"
                    ))
                })?
            }
        };
        if !info.internal {
            return Err(Error::Conflict(format!(
                "network {name} on node {node_id} exists but is not internal, so sandboxes on it \
                 could bypass the egress proxy: remove it (docker network rm {name}) and retry"
            )));
        }
        info.gateway.ok_or_else(|| {
            Error::unavailable(format!(
                "network {name} on node {node_id} has no gateway address for the egress proxy"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_overrides_parse_like_curl_resolve() {
        let r = EgressConfig::parse_resolve(&["API.example.com.=127.0.0.1".into(), "b=::1".into()])
            .unwrap();
        assert_eq!(r["api.example.com"], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(r["b"], "::1".parse::<IpAddr>().unwrap());
        for bad in ["x", "x=", "=1.2.3.4", "x=host"] {
            assert!(EgressConfig::parse_resolve(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_engines_on_this_host_can_run_allowlist_sandboxes() {
        for ok in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2376",
            "tcp://localhost:2375",
        ] {
            assert!(require_local("t", "n", ok).is_ok(), "{ok}");
        }
        let e = require_local("t", "far", "tcp://10.0.0.5:2376").unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .contains("node far (tcp://10.0.0.5:2376) is a Docker engine on another host"),
            "{e}"
        );
    }

    #[test]
    fn counters_keep_every_reason() {
        let c = EgressCounters::default();
        c.count(Reason::DirectIp);
        c.count(Reason::DirectIp);
        let s = c.snapshot();
        assert_eq!(s.len(), 6);
        assert_eq!(s["direct_ip"], 2);
        assert_eq!(s["not_allowed"], 0);
    }
}
