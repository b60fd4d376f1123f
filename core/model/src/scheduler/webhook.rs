//! Webhooks: sandbox events POSTed, signed, to an operator's URL, globally or for one
//! template's sandboxes, and the record of each delivery attempt.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The header carrying the signature: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Agentvm-Signature";

/// The sandbox events a webhook may ask for (`events` empty: all of them).
pub const WEBHOOK_EVENTS: [&str; 10] = [
    "sandbox_created",
    "sandbox_ready",
    "sandbox_paused",
    "sandbox_resumed",
    "sandbox_snapshotted",
    "sandbox_terminated",
    "sandbox_removed",
    "sandbox_adopted",
    "sandbox_exec_started",
    "sandbox_exec_finished",
];

/// A registered webhook. Its secret is stored but never listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// `whk_…`.
    pub id: String,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// Only sandboxes of this template; every sandbox when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Event types delivered (from [`WEBHOOK_EVENTS`]); all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// The HMAC-SHA256 key; left out of every response but the create's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// When registered, ms.
    pub created_at: i64,
}

impl Webhook {
    /// Refuses URLs that are not http(s) and event names that are not webhook events.
    pub fn validate(&self) -> Result<()> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || self.url.len() > 2048 || self.url.chars().any(char::is_whitespace) {
            return Err(Error::invalid(format!(
                "webhook url {:?} must be an http:// or https:// URL without spaces, at most 2048 bytes",
                self.url
            )));
        }
        for e in &self.events {
            if !WEBHOOK_EVENTS.contains(&e.as_str()) {
                return Err(Error::invalid(format!(
                    "{e:?} is not a webhook event; use one of {}",
                    WEBHOOK_EVENTS.join(", ")
                )));
            }
        }
        if self.secret.len() < 16 {
            return Err(Error::invalid("a webhook secret must be at least 16 bytes"));
        }
        Ok(())
    }

    /// Whether this webhook wants `event` about a sandbox of `template_id`.
    pub fn wants(&self, event: &str, template_id: Option<&str>) -> bool {
        let event_ok = if self.events.is_empty() {
            WEBHOOK_EVENTS.contains(&event)
        } else {
            self.events.iter().any(|e| e == event)
        };
        let template_ok = match &self.template_id {
            None => true,
            Some(t) => template_id == Some(t.as_str()),
        };
        event_ok && template_ok
    }

    /// The record without its secret, as lists show it.
    pub fn redacted(mut self) -> Self {
        self.secret.clear();
        self
    }
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not answered with 2xx yet; another attempt is scheduled.
    Retrying,
    /// Answered with 2xx.
    Delivered,
    /// Every attempt failed; given up.
    Failed,
}

/// One event's delivery to one webhook, with its attempts so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `dlv_…`; also the `X-Agentvm-Delivery` header, the same on every attempt.
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// The event type.
    pub event_type: String,
    /// The sandbox the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The last HTTP status received, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// The last failure (connection refused, a non-2xx status, a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the event was queued, ms.
    pub created_at: i64,
    /// When last attempted, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<i64>,
}

/// Wait before attempt `n + 1` after `n` failed attempts: 0.5 s doubling, at most 60 s.
pub fn retry_delay_ms(failed_attempts: u32) -> u64 {
    500u64
        .saturating_mul(1u64 << failed_attempts.saturating_sub(1).min(7))
        .min(60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Webhook {
        Webhook {
            id: "whk_1".into(),
            url: "http://127.0.0.1:9/hook".into(),
            template_id: Some("py".into()),
            events: vec!["sandbox_paused".into()],
            secret: "0123456789abcdef".into(),
            created_at: 0,
        }
    }

    #[test]
    fn webhooks_filter_by_event_and_template() {
        let h = hook();
        h.validate().unwrap();
        assert!(h.wants("sandbox_paused", Some("py")));
        assert!(!h.wants("sandbox_paused", Some("node")));
        assert!(!h.wants("sandbox_resumed", Some("py")));
        let all = Webhook {
            template_id: None,
            events: vec![],
            ..hook()
        };
        assert!(all.wants("sandbox_exec_finished", None));
        assert!(
            !all.wants("sandbox_exec_output", None),
            "output is never sent"
        );
    }

    #[test]
    fn bad_registrations_are_refused_clearly() {
        for (h, want) in [
            (
                Webhook {
                    url: "ftp://x".into(),
                    ..hook()
                },
                "http:// or https://",
            ),
            (
                Webhook {
                    events: vec!["nope".into()],
                    ..hook()
                },
                "not a webhook event",
            ),
            (
                Webhook {
                    secret: "short".into(),
                    ..hook()
                },
                "at least 16 bytes",
            ),
        ] {
            let e = h.validate().unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        assert_eq!(hook().redacted().secret, "");
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        assert_eq!(retry_delay_ms(1), 500);
        assert_eq!(retry_delay_ms(2), 1000);
        assert_eq!(retry_delay_ms(3), 2000);
        assert_eq!(retry_delay_ms(30), 60_000);
    }
}
