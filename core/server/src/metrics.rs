//! Prometheus metrics of the server: connections, events sent, agents running, and the
//! runtime's request counters and latency (kept by the dispatcher, for every caller).

use agentvm::runtime::dispatch::LATENCY_BUCKETS;
use agentvm::runtime::RequestMetrics;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A label value as the text exposition format wants it: `\`, `"` and newlines escaped.
/// Every label value goes through here, though all of them come from fixed sets (command
/// names, outcomes, the crate version), never from a client.
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

/// Counters the server keeps. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    events_sent: AtomicU64,
    frames_refused: AtomicU64,
    overflows: AtomicU64,
    over_budget: AtomicU64,
    refused: AtomicU64,
    unknown_requests: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The scheduler's counters as Prometheus text.
pub fn scheduler_text(m: &agentvm::scheduler::SchedulerMetrics) -> String {
    let mut out = String::new();
    let rows: [(&str, &str, &str, u64); 13] = [
        (
            "agentvm_pool_hits_total",
            "Sandboxes claimed from a warm pool.",
            "counter",
            m.pool_hits,
        ),
        (
            "agentvm_pool_misses_total",
            "Sandbox requests that found their warm pool empty.",
            "counter",
            m.pool_misses,
        ),
        (
            "agentvm_sandbox_cold_starts_total",
            "Sandboxes created cold.",
            "counter",
            m.cold_starts,
        ),
        (
            "agentvm_sandbox_create_failures_total",
            "Sandbox creations that failed.",
            "counter",
            m.create_failures,
        ),
        (
            "agentvm_sandbox_busy_refusals_total",
            "Creations refused because a node's start queue was full.",
            "counter",
            m.busy_refusals,
        ),
        (
            "agentvm_executions_total",
            "Commands executed in sandboxes.",
            "counter",
            m.executions,
        ),
        (
            "agentvm_execution_timeouts_total",
            "Executions killed by their timeout.",
            "counter",
            m.exec_timeouts,
        ),
        (
            "agentvm_sandboxes_terminated_total",
            "Sandboxes ended.",
            "counter",
            m.terminated,
        ),
        (
            "agentvm_sandboxes_adopted_total",
            "Sandboxes adopted at start-up.",
            "counter",
            m.adopted,
        ),
        (
            "agentvm_orphans_removed_total",
            "Orphan containers removed at start-up.",
            "counter",
            m.orphans_removed,
        ),
        (
            "agentvm_pool_ready",
            "Warm sandboxes ready to be claimed.",
            "gauge",
            m.pool_ready,
        ),
        (
            "agentvm_sandboxes_live",
            "Sandboxes not yet ended.",
            "gauge",
            m.live_sandboxes,
        ),
        (
            "agentvm_nodes_online",
            "Runtime nodes online.",
            "gauge",
            m.nodes_online,
        ),
    ];
    for (name, help, kind, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    out
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    pub(crate) fn event_sent(&self) {
        self.events_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn frame_refused(&self) {
        self.frames_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unknown_request(&self) {
        self.unknown_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn over_budget(&self) {
        self.over_budget.fetch_add(1, Ordering::Relaxed);
    }

    /// WebSocket connections closed for going over one of their budgets.
    pub fn over_budget_closes(&self) -> u64 {
        self.over_budget.load(Ordering::Relaxed)
    }

    pub(crate) fn overflowed(&self) {
        self.overflows.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition: the server's counters, the runtime's requests (every
    /// caller's, by command and outcome) and `agents_running`, then `extra`.
    pub fn render(&self, requests: &RequestMetrics, agents_running: usize, extra: &str) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP agentvm_build_info The server's version.\n# TYPE agentvm_build_info gauge\nagentvm_build_info{{version=\"{}\"}} 1",
            label_value(env!("CARGO_PKG_VERSION"))
        );
        let g = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        g(
            &mut out,
            "agentvm_connections",
            "WebSocket connections open.",
            "gauge",
            self.connections_open(),
        );
        g(
            &mut out,
            "agentvm_connections_total",
            "WebSocket connections accepted.",
            "counter",
            self.connections_total.load(Ordering::Relaxed),
        );
        g(
            &mut out,
            "agentvm_events_sent_total",
            "Events sent to clients.",
            "counter",
            self.events_sent.load(Ordering::Relaxed),
        );
        g(
            &mut out,
            "agentvm_frames_refused_total",
            "Client frames refused (malformed, unknown, binary, oversized).",
            "counter",
            self.frames_refused.load(Ordering::Relaxed),
        );
        g(
            &mut out,
            "agentvm_send_queue_overflows_total",
            "Connections that fell behind and were resumed from their cursor.",
            "counter",
            self.overflows.load(Ordering::Relaxed),
        );
        g(
            &mut out,
            "agentvm_connections_over_budget_total",
            "WebSocket connections closed for going over a budget (close code 4008).",
            "counter",
            self.over_budget.load(Ordering::Relaxed),
        );
        g(
            &mut out,
            "agentvm_connections_refused_total",
            "Sockets closed at accept because max_connections sockets were open.",
            "counter",
            self.refused.load(Ordering::Relaxed),
        );
        g(
            &mut out,
            "agentvm_agents_running",
            "Agents running.",
            "gauge",
            agents_running as u64,
        );
        let _ = writeln!(out, "# HELP agentvm_requests_total Requests by type and outcome (type `unknown`: a request type the server does not know).\n# TYPE agentvm_requests_total counter");
        for (kind, outcome, n) in requests.counts() {
            let _ = writeln!(
                out,
                "agentvm_requests_total{{type=\"{}\",outcome=\"{}\"}} {n}",
                label_value(kind),
                label_value(outcome)
            );
        }
        let unknown = self.unknown_requests.load(Ordering::Relaxed);
        if unknown > 0 {
            let _ = writeln!(
                out,
                "agentvm_requests_total{{type=\"unknown\",outcome=\"invalid\"}} {unknown}"
            );
        }
        let _ = writeln!(out, "# HELP agentvm_request_duration_seconds Request latency.\n# TYPE agentvm_request_duration_seconds histogram");
        let latency = requests.latency();
        for (b, n) in LATENCY_BUCKETS.iter().zip(&latency.buckets) {
            let _ = writeln!(
                out,
                "agentvm_request_duration_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let count = latency.count;
        let _ = writeln!(
            out,
            "agentvm_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "agentvm_request_duration_seconds_sum {}",
            latency.sum_seconds
        );
        let _ = writeln!(out, "agentvm_request_duration_seconds_count {count}");
        out.push_str(extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label_value("image_get"), "image_get");
    }

    #[test]
    fn build_info_is_rendered() {
        let text = Metrics::default().render(&RequestMetrics::default(), 0, "");
        assert!(text.contains(&format!(
            "agentvm_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
