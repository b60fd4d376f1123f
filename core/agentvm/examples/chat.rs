//! One program, two runtimes: the same code talks to an in-process runtime or, given a URL,
//! to an agentvm-server over the WebSocket Channel.
//!
//! ```sh
//! cargo run -p agentvm --example chat                              # local, mock LLM
//! cargo run -p agentvm --example chat -- ws://127.0.0.1:8080/ws    # remote
//! ```

use agentvm::{AgentVm, BusItem, ConnectOptions, EventPayload, MockDriver, Runtime, RuntimeExt};
use std::sync::Arc;

/// Creates an image in `container`, sends `text` and prints the streamed reply.
async fn chat<R: Runtime>(rt: &R, container: &str, text: &str) -> agentvm::Result<String> {
    let image = rt.images().create(container, Default::default()).await?;
    let mut events = rt.sessions().events(&image.record.session_id).await?;
    rt.agents()
        .send_to_image(&image.record.image_id, text)
        .await?;
    let mut reply = String::new();
    while let Some(item) = events.recv().await {
        let BusItem::Event(e) = item else { continue };
        match &e.event.payload {
            EventPayload::TextDelta { text } => reply.push_str(text),
            EventPayload::ConversationEnd { .. } => break,
            _ => {}
        }
    }
    Ok(reply)
}

#[tokio::main]
async fn main() -> agentvm::Result<()> {
    let reply = match std::env::args().nth(1) {
        Some(url) => {
            let token = std::env::var("AGENTVM_TOKEN").ok();
            let rt = agentvm::connect(
                &url,
                ConnectOptions {
                    token,
                    ..Default::default()
                },
            )
            .await?;
            chat(&rt, "example", "Hello!").await?
        }
        None => {
            let rt = AgentVm::builder()
                .llm(Arc::new(MockDriver::default()))
                .open()
                .await?;
            chat(&rt, "example", "Hello!").await?
        }
    };
    println!("{reply}");
    Ok(())
}
