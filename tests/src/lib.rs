//! Shared fixtures for agentvm's end-to-end tests.

pub mod docker;
pub mod llm;
pub mod replay_server;
pub mod wire;

use agentvm::{AgentVm, BusItem, Event, EventPayload, MockDriver, Subscription};
use std::sync::Arc;
use std::time::Duration;

/// An in-memory runtime answering with the mock driver.
pub async fn mock_vm() -> AgentVm {
    AgentVm::builder()
        .llm(Arc::new(
            MockDriver::default().with_delay(Duration::from_millis(20)),
        ))
        .open()
        .await
        .expect("open an in-memory runtime")
}

/// A runtime on `dir` answering with the mock driver.
pub async fn mock_vm_at(dir: &std::path::Path) -> AgentVm {
    AgentVm::builder()
        .data_dir(dir)
        .llm(Arc::new(
            MockDriver::default().with_delay(Duration::from_millis(20)),
        ))
        .open()
        .await
        .expect("open a runtime on disk")
}

/// Receives events until (and including) the turn's `conversation_end`. Panics after 10 s or
/// on an overflow.
pub async fn collect_turn(sub: &mut Subscription) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("the turn ended within 10 s")
            .expect("the subscription is open");
        match item {
            BusItem::Event(p) => {
                let end = matches!(p.event.payload, EventPayload::ConversationEnd { .. });
                out.push(p.event.clone());
                if end {
                    return out;
                }
            }
            BusItem::Overflowed { .. } => panic!("the subscription overflowed"),
        }
    }
}

/// The wire types of `events`.
pub fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.type_name()).collect()
}

/// The concatenated text of the `text_delta`s in `events`.
pub fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}
