//! OpenTelemetry traces from the real binary to a real OTLP/HTTP collector on loopback: a
//! request, an agent's turn with its model calls and its tool call in the container's Docker
//! sandbox, a sandbox exec over REST, and a failed request.
#![allow(clippy::unwrap_used)]

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as the collector received it, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
    fn status(&self) -> i32 {
        self.span.status.as_ref().map(|s| s.code).unwrap_or(0)
    }
}

/// An OTLP/HTTP collector: `POST /v1/traces` with a protobuf body.
async fn collector() -> (String, Arc<Mutex<Vec<Got>>>) {
    let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                let mut sink = sink.lock().unwrap();
                for rs in request.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            AnyValue::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            sink.push(Got {
                                service: service.clone(),
                                span,
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

fn docker_skipped() -> bool {
    if std::env::var("AGENTVM_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("AGENTVM_SKIP_DOCKER=1: skipping a test that needs Docker");
        return true;
    }
    assert!(
        std::path::Path::new("/var/run/docker.sock").exists(),
        "Docker is not available: run `bash scripts/setup-docker.sh`"
    );
    false
}

async fn call(client: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {url}: {status} {v}");
    v
}

/// Waits until `ready` holds for the spans received so far.
async fn spans_until(
    spans: &Arc<Mutex<Vec<Got>>>,
    what: &str,
    ready: impl Fn(&[Got]) -> bool,
) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = spans.lock().unwrap().clone();
        if ready(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not among the spans received: {:#?}",
            now.iter().map(|g| &g.span.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn named<'a>(spans: &'a [Got], name: &str) -> Vec<&'a Got> {
    spans.iter().filter(|g| g.span.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_turns_model_and_tool_calls_and_execs_arrive_over_otlp() {
    if docker_skipped() {
        return;
    }
    let (otlp, spans) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(crate::common::BIN);
    command
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .args([
            "--docker",
            "unix:///var/run/docker.sock",
            "--otlp-endpoint",
            &otlp,
        ])
        .env("LLM_PROVIDER", "mock")
        .env("AGENTVM_LOG", "warn")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .stderr(std::process::Stdio::inherit());
    let server = crate::common::spawn(command);
    let http = server.http.clone();
    let client = reqwest::Client::new();

    // A container whose agents' tools run in its Docker sandbox, and an image whose model is
    // the mock's one-tool-call scenario.
    call(
        &client,
        "POST",
        &format!("{http}/v1/commands"),
        Some(json!({"type": "template_create_request", "data": {
            "templateId": "busybox", "name": "BusyBox", "image": "agentvm-test/busybox:latest",
            "defaultMemoryMb": 128, "workdir": "/workspace"}})),
    )
    .await;
    call(
        &client,
        "POST",
        &format!("{http}/v1/containers"),
        Some(json!({"containerId": "traced", "sandboxTemplate": "busybox"})),
    )
    .await;
    let image = call(
        &client,
        "POST",
        &format!("{http}/v1/containers/traced/images"),
        Some(json!({"config": {"name": "t", "model": "mock:with-tool", "tools": ["bash"]}})),
    )
    .await;
    let image_id = image["record"]["imageId"].as_str().unwrap().to_string();
    call(
        &client,
        "POST",
        &format!("{http}/v1/images/{image_id}/messages"),
        Some(json!({"content": "run it"})),
    )
    .await;

    // The turn: invoke_agent, under the request that sent the message, with two model calls
    // and one tool call whose exec ran in the sandbox.
    let got = spans_until(&spans, "the turn and its exec", |s| {
        !named(s, "invoke_agent agentvm").is_empty()
            && named(s, "chat mock:with-tool").len() == 2
            && !named(s, "sandbox.exec").is_empty()
    })
    .await;
    assert!(
        got.iter().all(|g| g.service == "agentvm-server"),
        "{got:#?}"
    );
    let turn = named(&got, "invoke_agent agentvm")[0];
    assert_eq!(
        turn.attr("gen_ai.operation.name").as_deref(),
        Some("invoke_agent")
    );
    assert_eq!(turn.attr("agentvm.container.id").as_deref(), Some("traced"));
    let parent = got
        .iter()
        .find(|g| g.span.span_id == turn.span.parent_span_id)
        .expect("the turn's parent span was exported");
    assert_eq!(
        parent.attr("agentvm.command").as_deref(),
        Some("message_send_request"),
        "{parent:#?}"
    );
    assert_eq!(parent.span.kind, SpanKind::Server as i32);
    for chat in named(&got, "chat mock:with-tool") {
        assert_eq!(chat.span.parent_span_id, turn.span.span_id, "{chat:#?}");
        assert_eq!(chat.span.trace_id, turn.span.trace_id);
        assert_eq!(chat.span.kind, SpanKind::Client as i32);
        assert_eq!(chat.attr("gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(chat.attr("gen_ai.provider.name").as_deref(), Some("mock"));
        assert_eq!(
            chat.attr("gen_ai.request.model").as_deref(),
            Some("mock:with-tool")
        );
        assert!(
            chat.attr("gen_ai.response.finish_reasons").is_some(),
            "{chat:#?}"
        );
    }
    let tool = named(&got, "execute_tool bash");
    assert_eq!(tool.len(), 1, "{got:#?}");
    let tool = tool[0];
    assert_eq!(tool.span.parent_span_id, turn.span.span_id);
    assert_eq!(tool.attr("gen_ai.tool.name").as_deref(), Some("bash"));
    assert!(tool.attr("gen_ai.tool.call.id").is_some());
    assert_ne!(tool.status(), StatusCode::Error as i32, "{tool:#?}");
    let exec = named(&got, "sandbox.exec")[0];
    assert_eq!(
        exec.span.parent_span_id, tool.span.span_id,
        "the tool's exec is its child"
    );
    assert_eq!(exec.attr("process.exit.code").as_deref(), Some("0"));
    assert_eq!(
        exec.attr("agentvm.exec.status").as_deref(),
        Some("completed")
    );
    assert!(exec.attr("agentvm.sandbox.id").is_some());

    // An exec over REST: a child of its request.
    let sandboxes = call(&client, "GET", &format!("{http}/v1/sandboxes"), None).await;
    let sandbox_id = sandboxes[0]["id"].as_str().unwrap().to_string();
    let out = client
        .post(format!("{http}/v1/sandboxes/{sandbox_id}/exec"))
        .json(&json!({"command": "exit 3"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(out.contains('3'), "{out}");
    let got = spans_until(&spans, "the REST exec", |s| {
        named(s, "sandbox.exec")
            .iter()
            .any(|g| g.attr("process.exit.code").as_deref() == Some("3"))
    })
    .await;
    let exec = named(&got, "sandbox.exec")
        .into_iter()
        .find(|g| g.attr("process.exit.code").as_deref() == Some("3"))
        .unwrap();
    let parent = got
        .iter()
        .find(|g| g.span.span_id == exec.span.parent_span_id)
        .expect("the exec's request span was exported");
    assert_eq!(
        parent.attr("agentvm.command").as_deref(),
        Some("sandbox_exec_request")
    );

    // A failed request: an error status with the error's kind.
    let resp = client
        .post(format!("{http}/v1/images/img_nope/messages"))
        .json(&json!({"content": "anyone?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let failed_send = |g: &&Got| {
        g.attr("agentvm.command").as_deref() == Some("message_send_request")
            && g.status() == StatusCode::Error as i32
    };
    let got = spans_until(&spans, "the failed request", |s| {
        s.iter().any(|g| failed_send(&g))
    })
    .await;
    let failed = got.iter().find(failed_send).unwrap();
    assert_eq!(failed.attr("error.type").as_deref(), Some("not_found"));
    assert!(
        failed
            .span
            .status
            .as_ref()
            .unwrap()
            .message
            .contains("img_nope"),
        "{failed:#?}"
    );

    // Nothing left behind on the daemon.
    call(
        &client,
        "DELETE",
        &format!("{http}/v1/sandboxes/{sandbox_id}"),
        None,
    )
    .await;
    drop(server);
}
