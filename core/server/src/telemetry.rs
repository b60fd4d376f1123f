//! The process's log and trace output: log lines on stderr (filtered by `AGENTVM_LOG`) and, when
//! an OTLP endpoint is configured, OpenTelemetry traces exported over OTLP/HTTP (protobuf).
//!
//! The runtime opens its spans under the target [`agentvm::TRACE_TARGET`]: a request, an agent's
//! turn with its model calls and tool calls (GenAI semantic conventions), a sandbox exec. Only
//! the exporter sees those spans; log lines stay as they are. Without an endpoint nothing is
//! subscribed to them, so they cost a disabled callsite check.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The environment variables that turn tracing on (the OpenTelemetry SDK's own names).
pub const OTLP_ENV: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Where traces go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtlpEndpoint {
    /// No endpoint anywhere: no traces.
    Off,
    /// An endpoint from the standard `OTEL_EXPORTER_OTLP_*` variables, which the exporter reads
    /// itself (with their rules: `/v1/traces` appended to the general one, not to the per-signal
    /// one).
    FromEnvironment,
    /// A collector's base URL from the flag or the config file, e.g. `http://127.0.0.1:4318`;
    /// traces go to its `/v1/traces`.
    Base(String),
}

impl OtlpEndpoint {
    /// The endpoint in force: the flag or config file's base URL first, then the environment.
    pub fn resolve(configured: Option<String>) -> Self {
        match configured.filter(|s| !s.trim().is_empty()) {
            Some(base) => Self::Base(base),
            None if OTLP_ENV
                .iter()
                .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty())) =>
            {
                Self::FromEnvironment
            }
            None => Self::Off,
        }
    }

    /// The URL spans are posted to, when it is known here (`Base`).
    pub fn traces_url(&self) -> Option<String> {
        match self {
            Self::Base(base) => Some(format!("{}/v1/traces", base.trim_end_matches('/'))),
            _ => None,
        }
    }
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans still queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter, waiting at most `within`.
    pub async fn shutdown(self, within: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks until its exporter task, which runs on this runtime, is
        // done: give it a blocking thread.
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(within, done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("flushing traces at exit failed: {e}"),
            Ok(Err(e)) => tracing::warn!("flushing traces at exit failed: {e}"),
            Err(_) => tracing::warn!(
                "flushing traces at exit took over {} ms; the rest are dropped",
                within.as_millis()
            ),
        }
    }
}

/// Installs the process's subscriber: log lines on stderr, filtered by `AGENTVM_LOG` (default
/// `info`), coloured only on a terminal; and the OTLP exporter when `otlp` names an endpoint.
/// Must run inside the tokio runtime (the exporter's batch task lives on it).
pub fn init(otlp: &OtlpEndpoint) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_env("AGENTVM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // The trace spans are for the exporter; log lines never carry them.
    let filter = filter.add_directive(
        format!("{}=off", agentvm::TRACE_TARGET)
            .parse()
            .map_err(|e| format!("log filter: {e}"))?,
    );
    // Colours only for a person at a terminal, never in a log file or a journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(logs);
    if *otlp == OtlpEndpoint::Off {
        registry
            .try_init()
            .map_err(|e| format!("installing the log subscriber: {e}"))?;
        return Ok(Telemetry::default());
    }
    let provider = provider(otlp)?;
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("agentvm"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(agentvm::TRACE_TARGET, tracing::Level::INFO),
        );
    registry
        .with(traces)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The tracer provider: the OTLP/HTTP exporter behind a batch processor on this runtime, with
/// the SDK's `OTEL_BSP_*` settings and the service's name and version.
fn provider(otlp: &OtlpEndpoint) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(url) = otlp.traces_url() {
        exporter = exporter.with_endpoint(url);
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("the OTLP trace exporter: {e}"))?;
    let batch =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("agentvm-server");
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(resource.build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::OtlpEndpoint;

    #[test]
    fn a_configured_base_gets_the_traces_path_once() {
        for base in ["http://127.0.0.1:4318", "http://127.0.0.1:4318/"] {
            assert_eq!(
                OtlpEndpoint::resolve(Some(base.into()))
                    .traces_url()
                    .as_deref(),
                Some("http://127.0.0.1:4318/v1/traces")
            );
        }
        assert_eq!(
            OtlpEndpoint::Base("http://c:4318/prefix".into())
                .traces_url()
                .as_deref(),
            Some("http://c:4318/prefix/v1/traces")
        );
        assert_eq!(OtlpEndpoint::FromEnvironment.traces_url(), None);
    }
}
