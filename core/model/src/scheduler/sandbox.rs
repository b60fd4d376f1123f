//! Sandboxes (the seed's "sessions"): the record, its lifecycle state machine and the reasons a
//! sandbox ends. Pure: no I/O here, so every transition is unit-tested.
//!
//! ```text
//! creating ──> running ──> completed | failed | timeout | terminated
//!     │         │  ^
//!     │         v  │ (resume: a request, or the next exec or file operation)
//!     │        paused ──> failed | timeout | terminated
//!     └──────────────────> failed | timeout | terminated
//! ```
//! Terminal states never change again; every move into one carries a [`TerminationReason`].

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    /// Placed; the container is being created, started and checked.
    Creating,
    /// An exec works: ready for commands and files.
    Running,
    /// Its processes are frozen (Docker pause): it holds its memory but no cpu. The next exec
    /// or file operation resumes it.
    Paused,
    /// Its main process ended successfully.
    Completed,
    /// Creation failed, the container died, or its node was lost.
    Failed,
    /// It outlived its lifetime.
    Timeout,
    /// Stopped on purpose (a request, idleness, reconciliation).
    Terminated,
}

impl SandboxStatus {
    /// The snake_case name (`creating`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStatus::Creating => "creating",
            SandboxStatus::Running => "running",
            SandboxStatus::Paused => "paused",
            SandboxStatus::Completed => "completed",
            SandboxStatus::Failed => "failed",
            SandboxStatus::Timeout => "timeout",
            SandboxStatus::Terminated => "terminated",
        }
    }

    /// Whether the sandbox has ended for good.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            SandboxStatus::Creating | SandboxStatus::Running | SandboxStatus::Paused
        )
    }
}

impl std::fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a sandbox ended. Every termination has one; nothing is reaped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TerminationReason {
    /// A caller asked (terminate or delete).
    Requested,
    /// Its lifetime ran out.
    Expired,
    /// Nothing used it for its idle timeout.
    Idle,
    /// It stayed `creating` longer than allowed (for example across a crash).
    StuckCreating,
    /// Docker refused or failed to create, start or ready it.
    CreateFailed,
    /// Its container's main process exited (reported by the executor or seen by the sweep).
    ContainerExited,
    /// Its container disappeared from Docker.
    ContainerLost,
    /// Reconciliation at start-up removed it (configured to remove orphans).
    Reconciled,
    /// A warm-pool sandbox was removed (pool shrunk, template changed or deleted).
    PoolDrained,
    /// Its owner no longer needs it (the agentvm container was deleted).
    OwnerReleased,
}

impl TerminationReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationReason::Requested => "requested",
            TerminationReason::Expired => "expired",
            TerminationReason::Idle => "idle",
            TerminationReason::StuckCreating => "stuck_creating",
            TerminationReason::CreateFailed => "create_failed",
            TerminationReason::ContainerExited => "container_exited",
            TerminationReason::ContainerLost => "container_lost",
            TerminationReason::Reconciled => "reconciled",
            TerminationReason::PoolDrained => "pool_drained",
            TerminationReason::OwnerReleased => "owner_released",
        }
    }

    /// The terminal status this reason leads to. `exit_code` matters for `ContainerExited`:
    /// 0 is `completed`, anything else `failed`.
    pub fn final_status(self, exit_code: Option<i64>) -> SandboxStatus {
        match self {
            TerminationReason::Expired => SandboxStatus::Timeout,
            TerminationReason::StuckCreating
            | TerminationReason::CreateFailed
            | TerminationReason::ContainerLost => SandboxStatus::Failed,
            TerminationReason::ContainerExited => match exit_code {
                Some(0) => SandboxStatus::Completed,
                _ => SandboxStatus::Failed,
            },
            TerminationReason::Requested
            | TerminationReason::Idle
            | TerminationReason::Reconciled
            | TerminationReason::PoolDrained
            | TerminationReason::OwnerReleased => SandboxStatus::Terminated,
        }
    }
}

/// What the idle sweep does with a sandbox nobody used for its idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum IdleAction {
    /// End it (reason `idle`): its container is removed.
    #[default]
    Terminate,
    /// Pause it: it keeps its files and processes, and the next exec or file operation
    /// resumes it.
    Pause,
}

impl IdleAction {
    /// Whether this is the default (`terminate`), which records leave out.
    pub fn is_terminate(&self) -> bool {
        *self == IdleAction::Terminate
    }
}

/// How a sandbox ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    /// Why, in one stable word; the status follows from it.
    pub reason: TerminationReason,
    /// Detail for a person (the Docker error, the exit code, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The container's exit code, when it exited on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// When, ms.
    pub at: i64,
}

/// The resources a sandbox holds on its node, as applied to its container.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Cpu quota in cores (`cpu.cfs_quota_us / cpu.cfs_period_us`), counted against the node.
    pub cpu_cores: f64,
    /// Memory limit in MiB; swap is limited to the same, so it cannot spill past it.
    pub memory_mb: u64,
    /// Disk limit in MiB, when one is enforced (tmpfs sizes, or a storage quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Process limit (`pids.max`), against fork bombs.
    pub pids_limit: u32,
}

/// A sandbox: one hardened container on one runtime node, and what agentvm knows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// `sbx_…`; also the `agentvm.sandbox` label and part of the container name.
    pub id: String,
    /// The template it was made from.
    pub template_id: String,
    /// The image it runs (the template's at creation time, kept for reconciliation).
    #[serde(rename = "image")]
    pub docker_image: String,
    /// The runtime node it was placed on.
    pub node_id: String,
    /// The Docker container id on that node, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "containerId")]
    pub docker_container_id: Option<String>,
    /// The Docker container name (`agentvm-<id>`), known before the container exists so a
    /// crash between "create" and "record the id" leaves nothing unnamed.
    #[serde(rename = "containerName")]
    pub docker_container_name: String,
    /// Where it is in its life.
    pub status: SandboxStatus,
    /// The limits applied.
    pub resources: Resources,
    /// Environment of the container (template env overlaid with the request's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The user commands run as (`uid:gid` or a name from the image's /etc/passwd).
    pub user: String,
    /// The numeric uid and gid of `user` inside the container (asked by the readiness exec):
    /// uploaded files are owned by them, so commands can change what was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_gid: Option<(u32, u32)>,
    /// The working directory of execs, and the default directory for files.
    pub workdir: String,
    /// The Docker network: `none` or a bridge's name.
    pub network: String,
    /// Whether the root filesystem is read-only.
    #[serde(default)]
    pub read_only_root: bool,
    /// The agentvm container (tenant) that owns it, when an agent uses it; events about the
    /// sandbox carry it as `context.containerId` so the owner's subscribers see them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// True while it waits, unclaimed, in its template's warm pool.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm: bool,
    /// Longest life, seconds from creation (or from the claim, for a warm sandbox).
    pub lifetime_s: u64,
    /// Ended after this many seconds without an exec or file operation; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
    /// What the idle sweep does with it: `terminate` (the default, left out) or `pause`.
    #[serde(default, skip_serializing_if = "IdleAction::is_terminate")]
    pub idle_action: IdleAction,
    /// When it expires, ms (`0` for a warm sandbox: its clock starts at the claim). Past it,
    /// the sweep stops and removes it (status `timeout`); `sandbox_extend_request` moves it.
    pub expires_at: i64,
    /// When it was last paused, ms, while it is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<i64>,
    /// When it was last resumed, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<i64>,
    /// When it was placed, ms.
    pub created_at: i64,
    /// When it became ready, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<i64>,
    /// The last exec or file operation, ms (for the idle sweep).
    pub last_activity_at: i64,
    /// Reported by the executor inside it (`/internal/runtime/containers/ready`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_url: Option<String>,
    /// How it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<Termination>,
}

impl Sandbox {
    /// Moves the record to `to`, refusing moves the state machine does not allow.
    pub fn transition(&mut self, to: SandboxStatus) -> Result<()> {
        self.status = transition(self.status, to)?;
        Ok(())
    }

    /// Ends the record for `reason` at `now`: status, termination and all.
    pub fn terminate(
        &mut self,
        reason: TerminationReason,
        message: Option<String>,
        exit_code: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let to = reason.final_status(exit_code);
        self.transition(to)?;
        self.warm = false;
        self.termination = Some(Termination {
            reason,
            message,
            exit_code,
            at: now,
        });
        Ok(())
    }

    /// Whether the lifetime has run out at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        !self.warm && self.expires_at > 0 && now >= self.expires_at
    }

    /// Whether it has been idle past its idle timeout at `now`.
    pub fn is_idle(&self, now: i64) -> bool {
        match self.idle_timeout_s {
            Some(s) if !self.warm && self.status == SandboxStatus::Running => {
                now - self.last_activity_at >= (s as i64).saturating_mul(1000)
            }
            _ => false,
        }
    }
}

/// The lifecycle state machine: `Ok(to)` when `from -> to` is allowed.
pub fn transition(from: SandboxStatus, to: SandboxStatus) -> Result<SandboxStatus> {
    use SandboxStatus::*;
    let ok = matches!(
        (from, to),
        (Creating, Running | Failed | Timeout | Terminated)
            | (Running, Paused | Completed | Failed | Timeout | Terminated)
            | (Paused, Running | Failed | Timeout | Terminated)
    );
    if ok {
        Ok(to)
    } else if from.is_terminal() {
        Err(Error::Conflict(format!(
            "the sandbox has already ended ({from}); it cannot become {to}"
        )))
    } else {
        Err(Error::Conflict(format!(
            "a sandbox cannot go from {from} to {to}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SandboxStatus::*;

    const ALL: [SandboxStatus; 7] = [
        Creating, Running, Paused, Completed, Failed, Timeout, Terminated,
    ];

    #[test]
    fn the_state_machine_allows_exactly_the_documented_moves() {
        let allowed = [
            (Creating, Running),
            (Creating, Failed),
            (Creating, Timeout),
            (Creating, Terminated),
            (Running, Completed),
            (Running, Failed),
            (Running, Timeout),
            (Running, Terminated),
            (Running, Paused),
            (Paused, Running),
            (Paused, Failed),
            (Paused, Timeout),
            (Paused, Terminated),
        ];
        for from in ALL {
            for to in ALL {
                let want = allowed.contains(&(from, to));
                assert_eq!(transition(from, to).is_ok(), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_say_the_sandbox_ended() {
        let e = transition(Timeout, Running).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        assert!(e.to_string().contains("already ended (timeout)"), "{e}");
    }

    #[test]
    fn reasons_map_to_statuses() {
        use TerminationReason::*;
        assert_eq!(Expired.final_status(None), Timeout);
        assert_eq!(ContainerExited.final_status(Some(0)), Completed);
        assert_eq!(ContainerExited.final_status(Some(137)), Failed);
        assert_eq!(ContainerExited.final_status(None), Failed);
        assert_eq!(CreateFailed.final_status(None), Failed);
        assert_eq!(Idle.final_status(None), Terminated);
        assert_eq!(Requested.final_status(None), Terminated);
    }

    fn record() -> Sandbox {
        Sandbox {
            id: "sbx_1".into(),
            template_id: "t".into(),
            docker_image: "i".into(),
            node_id: "n".into(),
            docker_container_id: None,
            docker_container_name: "agentvm-sbx_1".into(),
            status: Creating,
            resources: Resources {
                cpu_cores: 1.0,
                memory_mb: 256,
                disk_mb: None,
                pids_limit: 64,
            },
            env: BTreeMap::new(),
            user: "1000:1000".into(),
            uid_gid: None,
            workdir: "/tmp".into(),
            network: "none".into(),
            read_only_root: false,
            owner: None,
            warm: false,
            lifetime_s: 60,
            idle_timeout_s: Some(10),
            idle_action: IdleAction::Terminate,
            expires_at: 60_000,
            paused_at: None,
            resumed_at: None,
            created_at: 0,
            ready_at: None,
            last_activity_at: 0,
            executor_url: None,
            termination: None,
        }
    }

    #[test]
    fn expiry_and_idleness() {
        let mut s = record();
        assert!(!s.is_expired(59_999));
        assert!(s.is_expired(60_000));
        assert!(!s.is_idle(20_000), "a creating sandbox is never idle");
        s.transition(Running).unwrap();
        assert!(!s.is_idle(9_999));
        assert!(s.is_idle(10_000));
        s.transition(Paused).unwrap();
        assert!(!s.is_idle(10_000), "a paused sandbox is not idle again");
        assert!(s.is_expired(60_000), "a paused sandbox still expires");
        s.transition(Running).unwrap();
        s.warm = true;
        assert!(
            !s.is_idle(10_000) && !s.is_expired(60_000),
            "warm sandboxes wait"
        );
    }

    #[test]
    fn terminate_records_the_reason_once() {
        let mut s = record();
        s.terminate(
            TerminationReason::CreateFailed,
            Some("boom".into()),
            None,
            5,
        )
        .unwrap();
        assert_eq!(s.status, Failed);
        assert_eq!(
            s.termination.as_ref().unwrap().reason,
            TerminationReason::CreateFailed
        );
        assert!(s
            .terminate(TerminationReason::Requested, None, None, 6)
            .is_err());
        assert_eq!(s.termination.unwrap().at, 5);
    }
}
