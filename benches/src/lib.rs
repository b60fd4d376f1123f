//! Shared fixtures for the agentvm benches: runtimes, records, events and memory readings.
//!
//! Every bench builds its world from these so the numbers measure the same things: a
//! multi-thread tokio runtime sized to the machine, an [`AgentVm`] with the [`MockDriver`]
//! (in memory or on a temporary data dir), and the records and events an agent produces.

pub mod postgres;
pub mod sse_server;
pub mod wire;

use agentvm::{
    new_id, now_ms, AgentVm, Event, EventContext, EventPayload, ImageRecord, Message, MockDriver,
    SessionRecord,
};
use std::path::Path;
use std::sync::Arc;

/// The file name the runtime uses for its store inside a data dir.
pub const DATABASE_FILE: &str = "agentvm.redb";

/// The container id bench fixtures use.
pub const CONTAINER_ID: &str = "bench-container";

/// A multi-thread tokio runtime, the kind an embedding server runs agentvm on.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

/// An [`AgentVm`] with the mock driver: in memory without `data_dir`, on disk with one.
/// Must run inside a tokio runtime.
pub async fn mock_vm(data_dir: Option<&Path>) -> AgentVm {
    let builder = AgentVm::builder().llm(Arc::new(MockDriver::default()));
    let builder = match data_dir {
        Some(dir) => builder.data_dir(dir),
        None => builder,
    };
    builder.open().await.expect("opening the AgentVm")
}

/// A new image of `container_id` and its first session, as the runtime would store them.
pub fn image_and_session(container_id: &str) -> (ImageRecord, SessionRecord) {
    let now = now_ms();
    let image_id = new_id("img");
    let session_id = new_id("sess");
    (
        ImageRecord {
            image_id: image_id.clone(),
            container_id: container_id.into(),
            session_id: session_id.clone(),
            name: "bench".into(),
            description: None,
            definition_name: None,
            definition: Default::default(),
            created_at: now,
            updated_at: now,
        },
        SessionRecord {
            session_id,
            image_id,
            container_id: container_id.into(),
            title: None,
            created_at: now,
            updated_at: now,
        },
    )
}

/// A user message of typical chat size (a sentence or two).
pub fn user_message() -> Message {
    Message::user(
        new_id("msg"),
        "Summarise the last three commits and tell me which tests they touched, please.".into(),
        now_ms(),
    )
}

/// A `text_delta` on `session_id`'s topic, with the ids an agent's deltas carry.
pub fn text_delta(session_id: &str, text: &str) -> Event {
    Event::new(
        EventPayload::TextDelta { text: text.into() },
        Some(EventContext {
            container_id: Some(CONTAINER_ID.into()),
            image_id: Some("img_bench".into()),
            agent_id: Some("agent_bench".into()),
            session_id: Some(session_id.into()),
            turn_id: Some("turn_bench".into()),
        }),
    )
}

/// This process's resident set size in KiB (`VmRSS` of `/proc/self/status`), `None` where
/// there is no procfs.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
