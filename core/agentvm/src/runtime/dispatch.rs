//! The one dispatcher: every command, from every caller — in-process, the Channel, REST — passes
//! through [`AgentVm::dispatch`] once.
//!
//! What happens here, and nowhere else: the caller's hook (which may veto), the deadline, the
//! per-command metrics and the scope (handed to the handlers, which treat a record outside it
//! as one that does not exist). Front ends only turn their input into a [`Command`] and the
//! result into their output; the error → HTTP status table lives with the HTTP front end.

mod sandbox_route;
pub(crate) use sandbox_route::TerminalRoutes;

use super::bus::Scope;
use super::local::AgentVm;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    Command, CommandKind, Response, SandboxExecRequest, SandboxTerminalOpenRequest,
};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Who is asking, as the dispatcher sees it.
#[derive(Clone, Default)]
pub struct Caller {
    /// The containers the caller may see and touch.
    pub scope: Scope,
    /// The access token it presented, if any (for hooks and logs).
    pub token_id: Option<String>,
    /// Longest a request may take; past it the caller gets `Unavailable` (the work may still
    /// complete). `None`: no deadline (in-process callers).
    pub deadline: Option<Duration>,
    /// Called before each command; an error vetoes it.
    pub hook: Option<Arc<dyn RequestHook>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("scope", &self.scope)
            .field("token_id", &self.token_id)
            .field("deadline", &self.deadline)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Caller {
    /// A caller with `scope` and nothing else.
    pub fn scoped(scope: Scope) -> Self {
        Caller {
            scope,
            ..Default::default()
        }
    }
}

/// Where an admitted command runs.
enum Admitted {
    Here,
    Forward {
        container_id: String,
        to: Arc<dyn super::Runtime>,
    },
}

/// Sees every command of a caller before it runs (log, meter, veto).
pub trait RequestHook: Send + Sync + 'static {
    /// An error vetoes the command; the caller receives it as the command's error.
    fn on_request(&self, caller: &Caller, command: &Command) -> Result<()>;
}

/// Decides, before a command runs, whether this process may serve the container the command
/// touches: a cluster's lease manager takes the container's lease here, sends the command to
/// the owner, or refuses with the owner's address. Installed with
/// [`AgentVm::set_container_gate`]; without one every container is served.
#[async_trait::async_trait]
pub trait ContainerGate: Send + Sync + 'static {
    /// Where a command for `container_id` runs now; an error is the command's.
    async fn admit(&self, container_id: &str) -> Result<Admission>;
}

/// What a [`ContainerGate`] decided for a command's container.
#[derive(Clone)]
pub enum Admission {
    /// This process serves the container: the command runs here.
    Serve,
    /// Another process serves it: the command is sent there through this runtime (a client
    /// of that process), after the caller's scope was checked here.
    Forward(Arc<dyn super::Runtime>),
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Admission::Serve => f.write_str("Serve"),
            Admission::Forward(_) => f.write_str("Forward"),
        }
    }
}

/// Latency buckets of [`RequestMetrics`], seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Outcomes counted per command: `ok`, each error kind, and `invalid` (refused before it
/// could be parsed into a command).
const OUTCOMES: [&str; 13] = [
    "ok",
    "not_found",
    "already_exists",
    "invalid_input",
    "conflict",
    "unavailable",
    "storage",
    "storage_full",
    "protocol",
    "cancelled",
    "unauthorized",
    "internal",
    "invalid",
];

fn outcome_index(result: std::result::Result<(), ErrorKind>) -> usize {
    match result {
        Ok(()) => 0,
        Err(kind) => OUTCOMES
            .iter()
            .position(|o| *o == kind.as_str())
            .unwrap_or(10),
    }
}

/// Requests by command and outcome, and their latency: fixed-size atomics, so counting costs
/// no allocation and no lock, and a client cannot grow the label set.
pub struct RequestMetrics {
    counts: Box<[[AtomicU64; OUTCOMES.len()]]>,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            counts: CommandKind::ALL
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

/// A snapshot of the request latency histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`].
    pub buckets: Vec<u64>,
    /// Requests measured.
    pub count: u64,
    /// Their total time, seconds.
    pub sum_seconds: f64,
}

impl RequestMetrics {
    fn record(&self, kind: CommandKind, outcome: usize, latency: Option<Duration>) {
        self.counts[kind.index()][outcome].fetch_add(1, Ordering::Relaxed);
        if let Some(l) = latency {
            // One increment in the request's own bucket (the snapshot makes them cumulative):
            // a request costs the same few atomics however slow it was.
            let secs = l.as_secs_f64();
            if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            self.latency_sum_us
                .fetch_add(l.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Counts a request of `kind` refused before it could be parsed (its data was invalid).
    pub fn record_invalid(&self, kind: CommandKind) {
        self.record(kind, OUTCOMES.len() - 1, None);
    }

    /// Every non-zero count as `(command, outcome, n)`, command as in `image_get`.
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for kind in CommandKind::ALL {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let n = self.counts[kind.index()][i].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((kind.type_name().trim_end_matches("_request"), *outcome, n));
                }
            }
        }
        out
    }

    /// How many requests of `kind` ended with `outcome` (`ok`, an error kind or `invalid`).
    pub fn count(&self, kind: CommandKind, outcome: &str) -> u64 {
        OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map(|i| self.counts[kind.index()][i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The latency histogram now.
    pub fn latency(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: self
                .buckets
                .iter()
                .scan(0, |total, b| {
                    *total += b.load(Ordering::Relaxed);
                    Some(*total)
                })
                .collect(),
            count: self.latency_count.load(Ordering::Relaxed),
            sum_seconds: self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl AgentVm {
    /// Runs one command for `caller`: its hook, its deadline, the handler with its scope, and
    /// the metrics. Every front end calls this; [`Runtime::request`](super::Runtime::request)
    /// on the runtime or a scoped view of it does too.
    ///
    /// The returned future is small (a few hundred bytes, whatever the command): the handler
    /// is boxed at its own size before it is first polled, so no request allocates or copies
    /// room for the largest command's state.
    pub fn dispatch<'a>(
        &'a self,
        command: Command,
        caller: &'a Caller,
    ) -> impl Future<Output = Result<Response>> + Send + 'a {
        let kind = command.kind();
        let started = Instant::now();
        let span = crate::trace::request(kind.type_name());
        // In-process callers (no hook, no deadline, no cluster gate) go straight to the
        // handler; the rest take the path that checks and times them.
        let run = if caller.hook.is_none()
            && caller.deadline.is_none()
            && self.inner.gate.get().is_none()
        {
            self.handle(command, &caller.scope)
        } else {
            Box::pin(self.dispatch_inner(command, caller))
        };
        async move {
            let result = run.instrument(span.clone()).await;
            if let Err(e) = &result {
                crate::trace::failed(&span, e.kind().as_str(), e);
            }
            let outcome = outcome_index(result.as_ref().map(|_| ()).map_err(Error::kind));
            self.inner
                .metrics
                .record(kind, outcome, Some(started.elapsed()));
            result
        }
    }

    async fn dispatch_inner(&self, command: Command, caller: &Caller) -> Result<Response> {
        if let Some(hook) = &caller.hook {
            hook.on_request(caller, &command)?;
        }
        let admitted = self.admit(&command).await?;
        match caller.deadline {
            None => self.run_admitted(admitted, command, &caller.scope).await,
            Some(limit) => {
                let type_name = command.type_name();
                let run = self.run_admitted(admitted, command, &caller.scope);
                match tokio::time::timeout(limit, run).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::unavailable(format!(
                        "{type_name} timed out after {} ms (it may still complete)",
                        limit.as_millis()
                    ))),
                }
            }
        }
    }

    /// Installs the gate every command's container passes (see [`ContainerGate`]). The
    /// runtime keeps only a weak reference: the gate lives as long as its owner keeps it.
    /// Refused (`Conflict`) when one is installed already.
    pub fn set_container_gate(&self, gate: &Arc<dyn ContainerGate>) -> Result<()> {
        self.inner
            .gate
            .set(Arc::downgrade(gate))
            .map_err(|_| Error::Conflict("this runtime has a container gate already".into()))
    }

    /// Passes the command's container through the gate, if there is one and the command
    /// belongs to a container.
    async fn admit(&self, command: &Command) -> Result<Admitted> {
        let Some(gate) = self.inner.gate.get().and_then(std::sync::Weak::upgrade) else {
            return Ok(Admitted::Here);
        };
        let key = match self.sandbox_key(command).await {
            Some(key) => Some(key),
            None => self.container_of(command).await,
        };
        let Some(container_id) = key else {
            return Ok(Admitted::Here);
        };
        match gate.admit(&container_id).await? {
            Admission::Serve => Ok(Admitted::Here),
            Admission::Forward(to) => Ok(Admitted::Forward { container_id, to }),
        }
    }

    /// Runs an admitted command: here, or (after checking the caller may use the container,
    /// as the handler here would) on the container's owner.
    async fn run_admitted(
        &self,
        admitted: Admitted,
        command: Command,
        scope: &Scope,
    ) -> Result<Response> {
        match admitted {
            Admitted::Here => self.handle(command, scope).await,
            Admitted::Forward { container_id, to } => {
                if sandbox_route::is_unowned(&container_id) {
                    if !scope.allows_owner(None) {
                        return Err(Error::Unauthorized(
                            "sandboxes without an owner are an operator's: this connection's scope names containers".into(),
                        ));
                    }
                } else if !scope.allows(&container_id) {
                    return Err(Error::Unauthorized(format!(
                        "container {container_id} is outside this connection's scope"
                    )));
                }
                let opens_terminal = matches!(command, Command::SandboxTerminalOpen(_));
                let response = to.request(command).await;
                if opens_terminal {
                    self.route_terminal(&container_id, &response);
                }
                response
            }
        }
    }

    /// The container a command belongs to, from the first of its `containerId`, `imageId`,
    /// `sessionId` or `agentId` that names an existing record; `None` for commands of no
    /// container (definitions, tokens, nodes) or naming nothing that exists (the handler then
    /// reports it).
    pub async fn container_of(&self, command: &Command) -> Option<String> {
        let value = serde_json::to_value(command).ok()?;
        let data = value.get("data")?;
        let field = |name: &str| data.get(name).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(c) = field("containerId") {
            return Some(c);
        }
        let store = self.inner.store.clone();
        let (image, session) = (field("imageId"), field("sessionId"));
        if image.is_some() || session.is_some() {
            let found = tokio::task::spawn_blocking(move || {
                if let Some(i) = image.and_then(|i| store.get_image(&i).ok().flatten()) {
                    return Some(i.container_id);
                }
                session
                    .and_then(|s| store.get_session(&s).ok().flatten())
                    .map(|s| s.container_id)
            })
            .await
            .ok()
            .flatten();
            if found.is_some() {
                return found;
            }
        }
        let agent = field("agentId")?;
        self.inner
            .manager
            .get(&agent)
            .map(|a| a.container_id().to_string())
    }

    /// The topic a command will publish its results on, when the caller should be subscribed
    /// before it runs: a `message_send_request`'s session (so no delta of the reply is
    /// missed), a `sandbox_exec_request`'s or `sandbox_terminal_open_request`'s sandbox (its
    /// output).
    /// `None` when there is none or it is not visible to `scope`; the command itself then
    /// reports why.
    pub async fn topic_of(&self, command: &Command, scope: &Scope) -> Option<String> {
        let r = match command {
            Command::MessageSend(r) => r,
            Command::SandboxExec(SandboxExecRequest { sandbox_id, .. })
            | Command::SandboxTerminalOpen(SandboxTerminalOpenRequest { sandbox_id, .. }) => {
                let topic = sandbox_id.clone();
                return self.check_topic(scope, &topic).await.ok().map(|()| topic);
            }
            _ => return None,
        };
        let topic = if let Some(sid) = &r.session_id {
            Some(sid.clone())
        } else if let Some(iid) = &r.image_id {
            self.inner
                .store
                .get_image(iid)
                .ok()
                .flatten()
                .map(|i| i.session_id)
        } else if let Some(aid) = &r.agent_id {
            self.inner
                .manager
                .get(aid)
                .map(|a| a.session_id().to_string())
        } else {
            None
        }?;
        self.check_topic(scope, &topic).await.ok().map(|()| topic)
    }

    /// Requests by command and outcome, and their latency, for every caller.
    pub fn request_metrics(&self) -> &RequestMetrics {
        &self.inner.metrics
    }

    /// How long model requests take, by provider: from the request to the end of its reply.
    pub fn llm_latency(&self) -> &crate::llm::LlmLatency {
        &self.inner.llm_latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_cover_every_error_kind() {
        for k in [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::Storage,
            ErrorKind::StorageFull,
            ErrorKind::Protocol,
            ErrorKind::Cancelled,
            ErrorKind::Unauthorized,
            ErrorKind::Internal,
        ] {
            assert_eq!(OUTCOMES[outcome_index(Err(k))], k.as_str());
        }
        assert_eq!(OUTCOMES[outcome_index(Ok(()))], "ok");
    }

    #[test]
    fn counts_are_kept_per_command_and_outcome() {
        let m = RequestMetrics::default();
        m.record(CommandKind::ImageGet, 0, Some(Duration::from_micros(50)));
        m.record(CommandKind::ImageGet, 0, Some(Duration::from_millis(2)));
        m.record_invalid(CommandKind::MessageSend);
        assert_eq!(m.count(CommandKind::ImageGet, "ok"), 2);
        assert_eq!(m.count(CommandKind::MessageSend, "invalid"), 1);
        assert_eq!(
            m.counts(),
            vec![("image_get", "ok", 2), ("message_send", "invalid", 1)]
        );
        let l = m.latency();
        assert_eq!(l.count, 2);
        assert_eq!(l.buckets[0], 1, "50 µs falls in the first (100 µs) bucket");
        assert_eq!(l.buckets[LATENCY_BUCKETS.len() - 1], 2);
    }

    /// Every request's future is allocated (the `Runtime` trait boxes it) and moved: it must
    /// not carry room for the largest command's state. Boxing each handler at its own size
    /// took it from 6,296 bytes to 144.
    #[tokio::test]
    async fn a_request_future_is_small_whatever_the_command() {
        let vm = AgentVm::builder()
            .llm(Arc::new(crate::llm::MockDriver::default()))
            .open()
            .await
            .expect("opening an in-memory runtime");
        let caller = Caller::default();
        for command in [
            Command::ImageGet(crate::model::ImageGetRequest {
                image_id: "img_1".into(),
            }),
            Command::MessageSend(crate::model::MessageSendRequest {
                image_id: Some("img_1".into()),
                agent_id: None,
                session_id: None,
                content: "hello".into(),
            }),
            Command::SandboxExec(SandboxExecRequest::default()),
        ] {
            let kind = command.kind();
            let size = std::mem::size_of_val(&vm.dispatch(command, &caller));
            assert!(size <= 512, "{kind:?}: a {size}-byte future");
        }
        let deadline = Caller {
            deadline: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let command = Command::ImageGet(crate::model::ImageGetRequest {
            image_id: "img_1".into(),
        });
        assert!(std::mem::size_of_val(&vm.dispatch(command, &deadline)) <= 512);
    }
}
