//! Prometheus metrics of the server, exposed through the `prometheus-client` library in the
//! OpenMetrics text format: connections, events sent, agents running, the runtime's request
//! counters and latency (kept by the dispatcher, for every caller), model request latency by
//! provider, and the scheduler's counters and its execution and pool-claim latency.
//!
//! Every label value comes from a fixed set (command names, outcomes, providers, the crate
//! version), never from a client, and goes through [`label_value`] all the same. docs/metrics.md
//! lists every family.

use agentvm::llm::LlmLatency;
use agentvm::runtime::dispatch::LATENCY_BUCKETS;
use agentvm::runtime::RequestMetrics;
use agentvm::scheduler::{HistogramSnapshot, NodeUsage, SchedulerLatency, SchedulerMetrics};
use prometheus_client::encoding::{
    EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Write;

/// The `Content-Type` of `/metrics`: what the library writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label value as the text exposition format wants it: `\`, `"` and newlines escaped.
/// Every label value goes through here, though all of them come from fixed sets (command
/// names, outcomes, providers, the crate version), never from a client.
pub fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A label value written through [`label_value`] (the library writes values as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Escaped(&'static str);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&label_value(self.0))
    }
}

/// An owned label value from a bounded set: a node id (operators name nodes, never a
/// client's input per request) or an egress refusal reason (the scheduler's fixed set),
/// escaped through [`label_value`] like every other value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct NodeLabel(String);

impl EncodeLabelValue for NodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&label_value(&self.0))
    }
}

/// One gauge per node (`node` label): what its live sandboxes use together.
#[derive(Debug)]
struct NodeGauges(Vec<(String, f64)>);

impl EncodeMetric for NodeGauges {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (node, v) in &self.0 {
            let labels = [("node", NodeLabel(node.clone()))];
            encoder.encode_family(&labels)?.encode_gauge(v)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Registers the per-node usage gauges of the live sandboxes.
fn register_usage(r: &mut Registry, usage: &[NodeUsage]) {
    type Pick = fn(&NodeUsage) -> f64;
    let families: [(&str, &str, Pick); 7] = [
        (
            "agentvm_node_sandboxes",
            "Live sandboxes on the node (running or paused, warm ones included).",
            |u| u.sandboxes as f64,
        ),
        (
            "agentvm_node_sandboxes_paused",
            "Paused sandboxes on the node.",
            |u| u.paused as f64,
        ),
        (
            "agentvm_node_sandbox_cpu_seconds",
            "Cpu time used by the node's live sandboxes since each started (falls when one ends).",
            |u| u.cpu_total_ns as f64 / 1e9,
        ),
        (
            "agentvm_node_sandbox_memory_bytes",
            "Memory used by the node's live sandboxes (less inactive file cache).",
            |u| u.memory_bytes as f64,
        ),
        (
            "agentvm_node_sandbox_pids",
            "Processes and threads in the node's live sandboxes.",
            |u| u.pids as f64,
        ),
        (
            "agentvm_node_sandbox_network_receive_bytes",
            "Bytes received by the node's live sandboxes.",
            |u| u.net_rx_bytes as f64,
        ),
        (
            "agentvm_node_sandbox_network_transmit_bytes",
            "Bytes sent by the node's live sandboxes.",
            |u| u.net_tx_bytes as f64,
        ),
    ];
    for (name, help, pick) in families {
        let values = usage.iter().map(|u| (u.node_id.clone(), pick(u))).collect();
        r.register(name, help, NodeGauges(values));
    }
    r.register(
        "agentvm_node_sandboxes_unsampled",
        "Live sandboxes whose stats did not come within 2 s at this scrape.",
        NodeGauges(
            usage
                .iter()
                .map(|u| (u.node_id.clone(), u.unsampled as f64))
                .collect(),
        ),
    );
}

/// Counters the server keeps. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    connections_open: Gauge,
    connections_total: Counter,
    events_sent: Counter,
    event_writes: Counter,
    frames_refused: Counter,
    overflows: Counter,
    over_budget: Counter,
    refused: Counter,
    unknown_requests: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A histogram read from one of the runtime's [`HistogramSnapshot`]s.
#[derive(Debug)]
struct SnapshotHistogram(HistogramSnapshot);

/// `(upper bound, count)` pairs as the library's encoder takes them: not cumulative, the
/// `+Inf` bucket last with the bound `f64::MAX`.
fn buckets(s: &HistogramSnapshot) -> Vec<(f64, u64)> {
    s.bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::MAX))
        .zip(s.buckets.iter().copied())
        .collect()
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        encoder.encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &buckets(s), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Model request latency, one histogram per provider (`provider` from a fixed set).
#[derive(Debug)]
struct ProviderHistograms(Vec<(&'static str, HistogramSnapshot)>);

impl EncodeMetric for ProviderHistograms {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (provider, s) in &self.0 {
            let labels = [("provider", Escaped(provider))];
            encoder
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &buckets(s), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Requests by type and outcome: the runtime's counts (every command and outcome, a fixed
/// set) and the requests of a type the server does not know, as `type="unknown"`.
#[derive(Debug)]
struct RequestCounts {
    counts: Vec<(&'static str, &'static str, u64)>,
    unknown: u64,
}

impl EncodeMetric for RequestCounts {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let unknown = (self.unknown > 0).then_some(("unknown", "invalid", self.unknown));
        for (kind, outcome, n) in self.counts.iter().copied().chain(unknown) {
            let labels = [("type", Escaped(kind)), ("outcome", Escaped(outcome))];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Counts by `reason`: the egress proxies' refusals (reasons from the scheduler's fixed set,
/// never a host).
#[derive(Debug)]
struct ReasonCounts(Vec<(String, u64)>);

impl EncodeMetric for ReasonCounts {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (reason, n) in &self.0 {
            let labels = [("reason", NodeLabel(reason.clone()))];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// What `/metrics` shows besides the server's own counters, read at each scrape.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The runtime's requests (every caller's, by command and outcome) and their latency.
    pub requests: &'a RequestMetrics,
    /// Model request latency by provider.
    pub llm: &'a LlmLatency,
    /// Agents running now.
    pub agents_running: usize,
    /// The scheduler's counters and latency, when the runtime has one.
    pub scheduler: Option<(&'a SchedulerMetrics, &'a SchedulerLatency)>,
    /// What the live sandboxes use, per node (empty without a scheduler).
    pub sandbox_usage: &'a [NodeUsage],
}

/// Registers the scheduler's counters, gauges and histograms.
fn register_scheduler(r: &mut Registry, m: &SchedulerMetrics, l: &SchedulerLatency) {
    // Counter names without `_total`: the library appends it to the samples.
    let counters: [(&str, &str, u64); 13] = [
        (
            "agentvm_sandbox_pauses",
            "Sandboxes paused (requested or idle).",
            m.pauses,
        ),
        (
            "agentvm_sandbox_resumes",
            "Paused sandboxes resumed (requested, or by an exec or file operation).",
            m.resumes,
        ),
        (
            "agentvm_sandbox_snapshots",
            "Sandbox snapshots committed into templates.",
            m.snapshots,
        ),
        (
            "agentvm_pool_hits",
            "Sandboxes claimed from a warm pool.",
            m.pool_hits,
        ),
        (
            "agentvm_pool_misses",
            "Sandbox requests that found their warm pool empty.",
            m.pool_misses,
        ),
        (
            "agentvm_sandbox_cold_starts",
            "Sandboxes created cold.",
            m.cold_starts,
        ),
        (
            "agentvm_sandbox_create_failures",
            "Sandbox creations that failed.",
            m.create_failures,
        ),
        (
            "agentvm_sandbox_busy_refusals",
            "Creations refused because a node's start queue was full.",
            m.busy_refusals,
        ),
        (
            "agentvm_executions",
            "Commands executed in sandboxes.",
            m.executions,
        ),
        (
            "agentvm_execution_timeouts",
            "Executions killed by their timeout.",
            m.exec_timeouts,
        ),
        (
            "agentvm_sandboxes_terminated",
            "Sandboxes ended.",
            m.terminated,
        ),
        (
            "agentvm_sandboxes_adopted",
            "Sandboxes adopted at start-up.",
            m.adopted,
        ),
        (
            "agentvm_orphans_removed",
            "Orphan containers removed at start-up.",
            m.orphans_removed,
        ),
    ];
    for (name, help, v) in counters {
        r.register(name, help, ConstCounter::new(v));
    }
    let gauges: [(&str, &str, u64); 4] = [
        (
            "agentvm_sandboxes_paused",
            "Sandboxes paused now.",
            m.paused_sandboxes,
        ),
        (
            "agentvm_pool_ready",
            "Warm sandboxes ready to be claimed.",
            m.pool_ready,
        ),
        (
            "agentvm_sandboxes_live",
            "Sandboxes not yet ended.",
            m.live_sandboxes,
        ),
        (
            "agentvm_nodes_online",
            "Runtime nodes online.",
            m.nodes_online,
        ),
    ];
    for (name, help, v) in gauges {
        r.register(name, help, ConstGauge::new(gauge_value(v)));
    }
    r.register(
        "agentvm_egress_refusals",
        "Requests the egress proxies of allowlist sandboxes refused, by reason.",
        ReasonCounts(
            m.egress_refusals
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        ),
    );
    r.register(
        "agentvm_sandbox_exec_duration_seconds",
        "Commands executed in sandboxes, start to end (timeouts and cancels included).",
        SnapshotHistogram(l.exec.clone()),
    );
    r.register(
        "agentvm_pool_claim_duration_seconds",
        "Claims of a warm sandbox from a pool, until the claim is recorded.",
        SnapshotHistogram(l.pool_claim.clone()),
    );
    r.register(
        "agentvm_placement_duration_seconds",
        "Sandbox placements: the choice of a node and the reservation on it.",
        SnapshotHistogram(l.placement.clone()),
    );
}

/// A count as a gauge's value (saturating: a gauge is an `i64`).
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The request latency histogram from the dispatcher's cumulative buckets.
fn request_latency(requests: &RequestMetrics) -> HistogramSnapshot {
    let l = requests.latency();
    let mut per_bucket = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
    let mut below = 0;
    for cumulative in &l.buckets {
        per_bucket.push(cumulative.saturating_sub(below));
        below = *cumulative;
    }
    per_bucket.push(l.count.saturating_sub(below));
    HistogramSnapshot {
        bounds: &LATENCY_BUCKETS,
        buckets: per_bucket,
        count: l.count,
        sum_seconds: l.sum_seconds,
    }
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
        self.connections_total.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        u64::try_from(self.connections_open.get()).unwrap_or(0)
    }

    /// Counts `n` events sent at once (a batch written with one flush).
    /// `n` events went out to one client in one write.
    pub(crate) fn events_sent(&self, n: u64) {
        if n > 0 {
            self.events_sent.inc_by(n);
            self.event_writes.inc();
        }
    }

    pub(crate) fn frame_refused(&self) {
        self.frames_refused.inc();
    }

    pub(crate) fn unknown_request(&self) {
        self.unknown_requests.inc();
    }

    pub(crate) fn connection_refused(&self) {
        self.refused.inc();
    }

    pub(crate) fn over_budget(&self) {
        self.over_budget.inc();
    }

    /// WebSocket connections closed for going over one of their budgets.
    pub fn over_budget_closes(&self) -> u64 {
        self.over_budget.get()
    }

    pub(crate) fn overflowed(&self) {
        self.overflows.inc();
    }

    /// The registry of one scrape: the server's counters (shared handles, so they read live)
    /// and `sources` as read now.
    fn registry(&self, sources: &Sources<'_>) -> Registry {
        let mut r = Registry::default();
        r.register(
            "agentvm_build",
            "The server's version.",
            Info::new([("version", Escaped(env!("CARGO_PKG_VERSION")))]),
        );
        r.register(
            "agentvm_connections",
            "WebSocket connections open.",
            self.connections_open.clone(),
        );
        // Counters are registered without `_total`: the library appends it to the samples.
        // The accepted-connections counter is `agentvm_connections_accepted_total`: as
        // `agentvm_connections_total` its family would be `agentvm_connections`, the gauge's,
        // and a scrape with one family twice is refused by OpenMetrics parsers.
        let counters: [(&str, &str, &Counter); 7] = [
            (
                "agentvm_connections_accepted",
                "WebSocket connections accepted.",
                &self.connections_total,
            ),
            (
                "agentvm_events_sent",
                "Events sent to clients.",
                &self.events_sent,
            ),
            (
                "agentvm_event_writes",
                "Writes that carried events to a client (events sent / writes = events per write).",
                &self.event_writes,
            ),
            (
                "agentvm_frames_refused",
                "Client frames refused (malformed, unknown, binary, oversized).",
                &self.frames_refused,
            ),
            (
                "agentvm_send_queue_overflows",
                "Connections that fell behind and were resumed from their cursor.",
                &self.overflows,
            ),
            (
                "agentvm_connections_over_budget",
                "WebSocket connections closed for going over a budget (close code 4008).",
                &self.over_budget,
            ),
            (
                "agentvm_connections_refused",
                "Sockets closed at accept because max_connections sockets were open.",
                &self.refused,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register(
            "agentvm_agents_running",
            "Agents running.",
            ConstGauge::new(gauge_value(sources.agents_running as u64)),
        );
        r.register(
            "agentvm_requests",
            "Requests by type and outcome (type `unknown`: a request type the server does not know).",
            RequestCounts {
                counts: sources.requests.counts(),
                unknown: self.unknown_requests.get(),
            },
        );
        r.register(
            "agentvm_request_duration_seconds",
            "Request latency.",
            SnapshotHistogram(request_latency(sources.requests)),
        );
        r.register(
            "agentvm_llm_request_duration_seconds",
            "Model requests by provider, from the request to the end of its reply (failed and cancelled ones included).",
            ProviderHistograms(sources.llm.snapshots()),
        );
        if let Some((m, l)) = sources.scheduler {
            register_scheduler(&mut r, m, l);
            register_usage(&mut r, sources.sandbox_usage);
        }
        r
    }

    /// The OpenMetrics text exposition of the server's counters and `sources`, then `extra`
    /// (text an embedder added), then the closing `# EOF`.
    pub fn render(&self, sources: &Sources<'_>, extra: &str) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail; an encoder error would be a bug in a metric above.
        if let Err(e) =
            prometheus_client::encoding::text::encode_registry(&mut out, &self.registry(sources))
        {
            tracing::error!(error = %e, "encoding /metrics");
        }
        out.push_str(extra);
        if !extra.is_empty() && !extra.ends_with('\n') {
            out.push('\n');
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(m: &Metrics) -> String {
        let requests = RequestMetrics::default();
        let llm = LlmLatency::default();
        m.render(
            &Sources {
                requests: &requests,
                llm: &llm,
                agents_running: 0,
                scheduler: None,
                sandbox_usage: &[],
            },
            "",
        )
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label_value("image_get"), "image_get");
    }

    #[test]
    fn build_info_is_rendered() {
        let text = render(&Metrics::default());
        assert!(text.contains(&format!(
            "agentvm_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn every_family_is_declared_once() {
        let m = Metrics::default();
        m.connection_opened();
        let text = render(&m);
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let family = line
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string();
            assert!(seen.insert(family), "declared twice: {line}\n{text}");
        }
        assert!(seen.len() > 10, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counters_keep_their_names_and_histograms_have_every_provider() {
        let m = Metrics::default();
        m.connection_opened();
        m.events_sent(3);
        let text = render(&m);
        for line in [
            "agentvm_connections 1\n",
            "agentvm_connections_accepted_total 1\n",
            "agentvm_events_sent_total 3\n",
            "agentvm_event_writes_total 1\n",
            "agentvm_request_duration_seconds_bucket{le=\"+Inf\"} 0\n",
            "agentvm_request_duration_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        for provider in agentvm::llm::PROVIDERS {
            let line = format!(
                "agentvm_llm_request_duration_seconds_count{{provider=\"{provider}\"}} 0\n"
            );
            assert!(text.contains(&line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn snapshot_buckets_are_written_cumulative() {
        let s = HistogramSnapshot {
            bounds: &[0.1, 1.0],
            buckets: vec![2, 1, 4],
            count: 7,
            sum_seconds: 20.5,
        };
        let mut r = Registry::default();
        r.register("t_seconds", "T.", SnapshotHistogram(s));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encoding");
        assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"1.0\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 7\n"), "{text}");
        assert!(text.contains("t_seconds_count 7\n"), "{text}");
    }
}
