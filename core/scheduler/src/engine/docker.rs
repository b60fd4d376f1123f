//! The Docker engine: a node's Docker daemon through bollard, one client per node, connected
//! to that node's own `api_endpoint` (a unix socket, or TCP with TLS). Errors are mapped here,
//! once: a daemon that does not answer is [`Error::Unavailable`] naming the node and the
//! endpoint (and turns the node offline); a daemon that answers with an error keeps its kind
//! (404, 409, 400, ...).

use super::{
    Address, ByteStream, Chunk, ChunkStream, Commit, Connector, ContainerSpec, Created, Engine,
    EngineRef, ExecIo, ExecSpec, ExecState, ImageConfig, Inspected, Listed, Machine, NetworkInfo,
    NetworkSpec, RunState, Stats,
};
use crate::error::{Error, ErrorKind, Result};
use crate::model::scheduler::TlsFiles;
pub use agentvm_model::scheduler::node::Endpoint;
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerConfig, ContainerSummaryStateEnum, NetworkCreateRequest};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    InspectContainerOptions, InspectNetworkOptions, ListContainersOptionsBuilder,
    ListImagesOptions, RemoveContainerOptionsBuilder, StartContainerOptions, StatsOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

mod agent;
use agent::{Agents, Claim, Started};

/// Connects every node to its Docker daemon: the scheduler's default [`Connector`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DockerConnector;

#[async_trait]
impl Connector for DockerConnector {
    async fn connect(&self, a: Address<'_>) -> Result<EngineRef> {
        let docker = connect(a.node_id, a.api_endpoint, a.tls, a.timeout).await?;
        Ok(Arc::new(DockerEngine {
            docker,
            node_id: a.node_id.to_string(),
            endpoint: a.api_endpoint.to_string(),
            agents: Arc::default(),
        }))
    }
}

/// One node's Docker daemon.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    node_id: String,
    endpoint: String,
    /// The sandboxes' exec agents (see `docker/agent.rs`).
    agents: Arc<Agents>,
}

impl DockerEngine {
    fn err(&self, doing: &str, e: DockerError) -> Error {
        map_err(&self.node_id, &self.endpoint, doing, e)
    }

    /// Copies the exec agent into `container` and starts it as `user`; the agent once it
    /// said hello, `None` when it could not be started (execs then use Docker exec).
    async fn start_agent(&self, container: &str, user: &str) -> Option<Arc<agent::Session>> {
        let started = async {
            if !self.agents.take_bound(container) {
                // Where a bind put it (a container created before a restart), the copy fails
                // and the agent is there anyway: only the exec below decides.
                if let Err(e) = self.upload(container, "/", Agents::archive()?).await {
                    tracing::debug!(container, error = %e, "copying the exec agent in");
                }
            }
            let io = self
                .docker_exec(
                    container,
                    ExecSpec {
                        argv: vec![agent::PATH.to_string()],
                        user: user.to_string(),
                        stdin: true,
                        what: "the exec agent",
                        ..Default::default()
                    },
                )
                .await?;
            Ok(Started {
                output: io.output,
                input: io.input,
            })
        }
        .await;
        self.agents.attach(container, user, started).await.ok()
    }

    /// A command through Docker's own exec: create, start attached.
    async fn docker_exec(&self, container: &str, spec: ExecSpec) -> Result<ExecIo> {
        let what = spec.what;
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions::<String> {
                    attach_stdin: Some(spec.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(spec.tty),
                    env: (!spec.env.is_empty()).then_some(spec.env),
                    cmd: Some(spec.argv),
                    user: Some(spec.user),
                    working_dir: spec.workdir,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err(&format!("creating {what}"), e))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: spec.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| self.err(&format!("starting {what}"), e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(Error::Internal("Docker detached an attached exec".into()));
        };
        let this = self.clone();
        let output: ChunkStream = Box::pin(output.filter_map(move |chunk| {
            let chunk = match chunk {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    Some(Ok(Chunk::Stdout(message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok(Chunk::Stderr(message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(this.err(&format!("reading {what}"), e))),
            };
            std::future::ready(chunk)
        }));
        Ok(ExecIo {
            id: created.id,
            output,
            input,
        })
    }
}

#[async_trait]
impl Engine for DockerEngine {
    async fn machine(&self) -> Result<Machine> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.err("reading the machine's info", e))?;
        Ok(Machine {
            cpu_cores: info.ncpu.map(|n| n as f64),
            memory_mb: info.mem_total.map(|b| (b.max(0) as u64) / (1024 * 1024)),
        })
    }

    async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.err("pinging", e))
    }

    async fn images(&self) -> Result<Vec<String>> {
        let images = self
            .docker
            .list_images(None::<ListImagesOptions>)
            .await
            .map_err(|e| self.err("listing images", e))?;
        Ok(images
            .into_iter()
            .flat_map(|i| i.repo_tags.into_iter())
            .filter(|t| t != "<none>:<none>")
            .collect())
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageConfig>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => {
                let config = i.config.unwrap_or_default();
                Ok(Some(ImageConfig {
                    user: config.user.filter(|u| !u.is_empty()),
                    labels: config.labels.unwrap_or_default(),
                }))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("inspecting the image", e)),
        }
    }

    async fn network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) => Ok(Some(NetworkInfo {
                internal: n.internal == Some(true),
                gateway: n
                    .ipam
                    .and_then(|i| i.config)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.gateway)
                    .find_map(|g| g.parse::<IpAddr>().ok()),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("inspecting the network", e)),
        }
    }

    async fn create_network(&self, spec: &NetworkSpec<'_>) -> Result<()> {
        let req = NetworkCreateRequest {
            name: spec.name.to_string(),
            driver: Some("bridge".into()),
            internal: Some(spec.internal),
            labels: Some(spec.labels.clone()),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(()),
            // Someone else created it meanwhile.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.err("creating the network", e)),
        }
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.err("removing the network", e)),
        }
    }

    async fn list_networks(&self, labels: &[(&str, &str)]) -> Result<Vec<String>> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| self.err("listing networks", e))?;
        Ok(listed.into_iter().filter_map(|n| n.name).collect())
    }

    async fn create(&self, spec: &ContainerSpec<'_>) -> Result<Created> {
        let body = crate::hardening::container_body(spec.sandbox, spec.template, spec.instance);
        let opts = CreateContainerOptionsBuilder::new()
            .name(&spec.sandbox.docker_container_name)
            .build();
        // A daemon on this machine gets the exec agent bind-mounted.
        let bind = match self.endpoint.starts_with("unix://") {
            true => self.agents.bind(),
            false => None,
        };
        let created = match bind {
            Some(bind) => {
                let mut bound = body.clone();
                if let Some(h) = bound.host_config.as_mut() {
                    h.binds.get_or_insert_with(Vec::new).push(bind);
                }
                match self.docker.create_container(Some(opts.clone()), bound).await {
                    Ok(c) => {
                        self.agents.created_with_bind(Some(&c.id));
                        Ok(c)
                    }
                    // The name is taken, or no such image: the same answer without the bind.
                    Err(e) if matches!(status_of(&e), Some(404 | 409)) => Err(e),
                    // Perhaps the bind (a daemon that cannot see this machine's files): the
                    // bind is given up for good only if the same create works without it.
                    Err(e) => {
                        let plain = self.docker.create_container(Some(opts), body).await;
                        if plain.is_ok() {
                            tracing::warn!(node = %self.node_id, error = %e, "the daemon refused the exec agent's bind mount; it is copied into sandboxes instead");
                            self.agents.created_with_bind(None);
                        }
                        plain
                    }
                }
            }
            None => self.docker.create_container(Some(opts), body).await,
        }
        .map_err(|e| self.err("creating the container", e))?;
        Ok(Created {
            id: created.id,
            warnings: created.warnings,
        })
    }

    async fn start(&self, container: &str) -> Result<()> {
        self.docker
            .start_container(container, None::<StartContainerOptions>)
            .await
            .map_err(|e| self.err("starting the container", e))
    }

    async fn remove(&self, container: &str) -> Result<bool> {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(container, Some(opts)).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err("removing the container", e)),
        }
    }

    async fn list(&self, instance: &str) -> Result<Vec<Listed>> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!(
                "{}={}",
                crate::hardening::labels::INSTANCE,
                instance
            )],
        );
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.err("listing containers", e))?;
        Ok(listed
            .into_iter()
            .filter_map(|c| {
                Some(Listed {
                    id: c.id?,
                    labels: c.labels.unwrap_or_default(),
                    state: match c.state {
                        Some(ContainerSummaryStateEnum::RUNNING) => RunState::Running,
                        Some(ContainerSummaryStateEnum::PAUSED) => RunState::Paused,
                        _ => RunState::Stopped,
                    },
                    status: c.status.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn inspect(&self, container: &str) -> Result<Option<Inspected>> {
        let info = match self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.err("inspecting the container", e)),
        };
        let state = info.state.unwrap_or_default();
        let addresses = info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, n)| {
                let ip = n
                    .ip_address
                    .filter(|a| !a.is_empty())
                    .or(n.global_ipv6_address.filter(|a| !a.is_empty()))?
                    .parse::<IpAddr>()
                    .ok()?;
                Some((name, ip))
            })
            .collect();
        Ok(Some(Inspected {
            // Unknown counts as running: never end a sandbox on a guess.
            running: state.running.unwrap_or(true),
            paused: state.paused.unwrap_or(false),
            addresses,
        }))
    }

    async fn pause(&self, container: &str) -> Result<()> {
        self.docker
            .pause_container(container)
            .await
            .map_err(|e| self.err("pausing the container", e))
    }

    async fn unpause(&self, container: &str) -> Result<()> {
        self.docker
            .unpause_container(container)
            .await
            .map_err(|e| self.err("resuming the container", e))
    }

    async fn commit(&self, c: &Commit<'_>) -> Result<()> {
        self.docker
            .commit_container(
                CommitContainerOptions {
                    container: Some(c.container.to_string()),
                    repo: Some(c.repo.to_string()),
                    tag: Some(c.tag.to_string()),
                    comment: Some(c.comment.clone()),
                    pause: c.pause,
                    ..Default::default()
                },
                ContainerConfig {
                    labels: Some(c.labels.clone()),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| self.err("committing the snapshot", e))
    }

    async fn stats(&self, container: &str) -> Result<Stats> {
        let opts = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(container, Some(opts));
        let stats = match stream.next().await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(self.err("reading the container's stats", e)),
            None => {
                return Err(Error::unavailable(format!(
                    "Docker on node {} sent no stats for container {container}",
                    self.node_id
                )))
            }
        };
        let memory = stats.memory_stats.as_ref();
        let usage = memory.and_then(|m| m.usage).unwrap_or(0);
        // What `docker stats` shows: usage less the inactive file cache (cgroup v2 names it
        // inactive_file, v1 total_inactive_file).
        let cache = memory
            .and_then(|m| m.stats.as_ref())
            .and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        let (rx, tx) = stats
            .networks
            .as_ref()
            .map(|n| {
                n.values().fold((0u64, 0u64), |(rx, tx), i| {
                    (
                        rx.saturating_add(i.rx_bytes.unwrap_or(0)),
                        tx.saturating_add(i.tx_bytes.unwrap_or(0)),
                    )
                })
            })
            .unwrap_or((0, 0));
        Ok(Stats {
            cpu_total_ns: stats
                .cpu_stats
                .as_ref()
                .and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0),
            memory_bytes: usage.saturating_sub(cache),
            memory_limit_bytes: memory.and_then(|m| m.limit).unwrap_or(0),
            pids: stats.pids_stats.and_then(|p| p.current).unwrap_or(0),
            net_rx_bytes: rx,
            net_tx_bytes: tx,
        })
    }

    async fn upload(&self, container: &str, dir: &str, tar: Vec<u8>) -> Result<()> {
        let opts = UploadToContainerOptionsBuilder::new().path(dir).build();
        self.docker
            .upload_to_container(container, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(|e| self.err("uploading", e))
    }

    fn download(&self, container: &str, path: &str) -> ByteStream {
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let this = self.clone();
        Box::pin(
            self.docker
                .download_from_container(container, Some(opts))
                .map(move |chunk| chunk.map_err(|e| this.err("downloading", e))),
        )
    }

    async fn exec(&self, container: &str, spec: ExecSpec) -> Result<ExecIo> {
        // Non-interactive commands go through the sandbox's exec agent; the first one
        // starts it.
        if !spec.tty && !spec.stdin && Agents::enabled() {
            let session = match self.agents.claim(container, &spec.user) {
                Claim::Use(session) => Some(session),
                Claim::Start => self.start_agent(container, &spec.user).await,
                Claim::Docker => None,
            };
            if let Some(session) = session {
                if let Ok(io) = self.agents.exec(&session, &spec).await {
                    return Ok(io);
                }
            }
        }
        self.docker_exec(container, spec).await
    }

    async fn exec_state(&self, exec_id: &str) -> Result<ExecState> {
        if let Some(state) = self.agents.state(exec_id) {
            return Ok(state);
        }
        let i = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| self.err("inspecting an exec", e))?;
        Ok(ExecState {
            running: i.running == Some(true),
            exit_code: i.exit_code,
        })
    }

    async fn resize(&self, exec_id: &str, cols: u16, rows: u16) -> Result<()> {
        self.docker
            .resize_exec(
                exec_id,
                ResizeExecOptions {
                    height: rows,
                    width: cols,
                },
            )
            .await
            .map_err(|e| self.err("resizing a terminal", e))
    }
}

/// Connects to a node's endpoint and negotiates the API version (Debian's 20.10 speaks 1.41,
/// bollard defaults to 1.53). `timeout` bounds each request.
pub async fn connect(
    node_id: &str,
    api_endpoint: &str,
    tls: Option<&TlsFiles>,
    timeout: std::time::Duration,
) -> Result<Docker> {
    let secs = timeout.as_secs().max(1);
    let version = bollard::API_DEFAULT_VERSION;
    let client = match Endpoint::parse(api_endpoint, tls)? {
        Endpoint::Unix(path) => {
            if !std::path::Path::new(&path).exists() {
                return Err(Error::unavailable(format!(
                    "Docker on node {node_id} is unavailable: no socket at {path} ({api_endpoint}); is dockerd running?"
                )));
            }
            Docker::connect_with_unix(&path, secs, version)
        }
        Endpoint::Tls { addr, tls } => {
            Docker::connect_with_ssl(&addr, &tls.key, &tls.cert, &tls.ca, secs, version)
        }
        Endpoint::Plain(addr) => Docker::connect_with_http(&addr, secs, version),
    }
    .map_err(|e| map_err(node_id, api_endpoint, "connecting", e))?;
    client
        .negotiate_version()
        .await
        .map_err(|e| map_err(node_id, api_endpoint, "negotiating the API version", e))
}

/// Whether `e` means the daemon did not answer at all (as opposed to answering with an error).
pub fn is_unreachable(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::HyperLegacyError { .. }
            | DockerError::IOError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
            | DockerError::HttpClientError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::NoNativeCertsError { .. }
            | DockerError::LoadNativeCertsErrors { .. }
            | DockerError::CertPathError { .. }
            | DockerError::CertParseError { .. }
            | DockerError::CertMultipleKeys { .. }
    )
}

/// Maps a bollard error met while `doing` something on `node_id`.
pub fn map_err(node_id: &str, api_endpoint: &str, doing: &str, e: DockerError) -> Error {
    if is_unreachable(&e) {
        return Error::Unavailable {
            message: format!(
                "Docker on node {node_id} ({api_endpoint}) does not answer while {doing}: {e}"
            ),
            source: Some(Box::new(e)),
        };
    }
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = match status_code {
                400 => ErrorKind::InvalidInput,
                401 | 403 => ErrorKind::Conflict,
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                _ => ErrorKind::Unavailable,
            };
            Error::Remote {
                kind,
                message: format!("Docker on node {node_id} refused {doing}: {message}"),
            }
        }
        other => Error::Remote {
            kind: ErrorKind::Unavailable,
            message: format!("Docker on node {node_id} failed while {doing}: {other}"),
        },
    }
}

/// The HTTP status of a Docker error, when the daemon answered.
pub fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_by_scheme() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock", None).unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375", None).unwrap(),
            Endpoint::Plain("127.0.0.1:2375".into())
        );
        let tls = TlsFiles {
            ca: "ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        };
        assert!(matches!(
            Endpoint::parse("tcp://h:2376", Some(&tls)).unwrap(),
            Endpoint::Tls { .. }
        ));
        assert!(Endpoint::parse("tcp://h:2376", None).is_err());
        assert!(Endpoint::parse("https://h:2376", None).is_err());
        assert!(Endpoint::parse("unix://relative.sock", None).is_err());
        assert!(Endpoint::parse("ssh://h", None).is_err());
        assert!(Endpoint::parse("nonsense", None).is_err());
    }

    #[test]
    fn server_errors_keep_their_kind_and_unreachable_is_unavailable() {
        let e = map_err(
            "n1",
            "unix:///x",
            "creating a container",
            DockerError::DockerResponseServerError {
                status_code: 404,
                message: "No such image: nope:1".into(),
            },
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(!super::super::node_is_down(&e));
        assert!(e.to_string().contains("node n1"), "{e}");
        let e = map_err(
            "n1",
            "unix:///x",
            "pinging",
            DockerError::SocketNotFoundError("/x".into()),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(super::super::node_is_down(&e));
        assert!(e.to_string().contains("does not answer"), "{e}");
    }
}
