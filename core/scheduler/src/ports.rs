//! Sandbox ports: where a TCP port of a live sandbox is reached from the runtime's host.
//!
//! Nothing is published on the host: a sandbox on a bridge network has an address on that
//! network (from `docker inspect`), and a runtime whose node is the Docker daemon of its own
//! machine can route to it. agentvm-server's port proxy connects there. The address is kept
//! per sandbox for as long as it lives (a container keeps its address while it runs), so a
//! lookup after the first costs no Docker request.

use super::{lock, Scheduler};
use crate::error::{Error, Result};
use std::net::{IpAddr, SocketAddr};

/// Whether a node's containers can be reached from this host: its daemon is on this machine
/// (a unix socket, or TCP on a loopback address). The bridge networks of a remote daemon live
/// on its own host.
pub(crate) fn is_local_endpoint(api_endpoint: &str) -> bool {
    if api_endpoint.starts_with("unix://") {
        return true;
    }
    let Some((_, addr)) = api_endpoint.split_once("://") else {
        return false;
    };
    let addr = addr.trim_end_matches('/');
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A port number as given (`1..=65535`), or `InvalidInput` naming it.
pub fn checked_port(port: u32) -> Result<u16> {
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::invalid(format!(
            "port must be 1 to 65535, not {port}"
        ))),
    }
}

impl Scheduler {
    /// Where `port` of a live sandbox is reached from this host: its address on its Docker
    /// network. A paused sandbox is resumed first, one being created is waited for, and the
    /// call counts as activity (like an exec). `InvalidInput` for port 0; `NotFound`;
    /// `Conflict` when the sandbox has ended, has no network (its template's is `none`), or
    /// runs on a node whose container networks this host cannot route to.
    pub async fn port_address(&self, sandbox_id: &str, port: u16) -> Result<SocketAddr> {
        checked_port(u32::from(port))?;
        let sandbox = self.ready_sandbox(sandbox_id).await?;
        if let Some(ip) = lock(&self.inner.addresses).get(sandbox_id) {
            return Ok(SocketAddr::new(*ip, port));
        }
        if sandbox.network == "none" {
            return Err(Error::Conflict(format!(
                "sandbox {sandbox_id} has no network (its template's network is \"none\"), so \
                 none of its ports can be reached: give the template a bridge network \
                 ({{\"mode\": \"bridge\", \"name\": \"...\"}})"
            )));
        }
        let endpoint = self.endpoint_of(&sandbox.node_id);
        if !is_local_endpoint(&endpoint) {
            return Err(Error::Conflict(format!(
                "sandbox {sandbox_id} runs on node {} ({endpoint}), a Docker daemon on another \
                 host: its container networks cannot be reached from this runtime, so its ports \
                 cannot either (only sandboxes on a local node, a unix socket or a loopback \
                 endpoint, have reachable ports)",
                sandbox.node_id
            )));
        }
        let engine = self.engine(&sandbox.node_id).await?;
        let container = sandbox
            .docker_container_id
            .clone()
            .unwrap_or_else(|| sandbox.docker_container_name.clone());
        let info = engine
            .inspect(&container)
            .await
            .map_err(|e| self.engine_error(&sandbox.node_id, e))?
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "sandbox {sandbox_id} has no container on node {}",
                    sandbox.node_id
                ))
            })?;
        // Its own network first; any other it was connected to after that.
        let ip = info
            .addresses
            .iter()
            .find(|(name, _)| *name == sandbox.network)
            .or(info.addresses.first())
            .map(|(_, ip)| *ip)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "sandbox {sandbox_id} has no address on its network {:?}: its engine \
                     reports none for its container",
                    sandbox.network
                ))
            })?;
        // Only while it lives: `finish` forgets it, and a sandbox that ended in between is
        // not remembered.
        let live = lock(&self.inner.live);
        if live.contains_key(sandbox_id) {
            lock(&self.inner.addresses).insert(sandbox_id.to_string(), ip);
        }
        drop(live);
        Ok(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_1_to_65535() {
        assert!(checked_port(0).is_err());
        assert_eq!(checked_port(1).unwrap(), 1);
        assert_eq!(checked_port(65535).unwrap(), 65535);
        let e = checked_port(70000).unwrap_err();
        assert!(e.to_string().contains("70000"), "{e}");
    }

    #[test]
    fn local_endpoints_are_a_socket_or_loopback() {
        assert!(is_local_endpoint("unix:///var/run/docker.sock"));
        assert!(is_local_endpoint("tcp://127.0.0.1:2375"));
        assert!(is_local_endpoint("tcp://localhost:2376"));
        assert!(is_local_endpoint("https://[::1]:2376"));
        assert!(!is_local_endpoint("tcp://10.0.0.7:2376"));
        assert!(!is_local_endpoint("https://docker.example.com:2376"));
        assert!(!is_local_endpoint("nonsense"));
    }
}
