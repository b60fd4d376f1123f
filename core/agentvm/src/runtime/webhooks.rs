//! Webhooks: the scheduler's sandbox events POSTed to registered URLs, signed with
//! HMAC-SHA256, retried with backoff, without ever holding up the scheduler.
//!
//! A listener reads the bus (its own bounded subscription: the bus never waits for it) and
//! puts one job per (event, matching webhook) on a bounded queue of [`QUEUE`] jobs; when the
//! queue is full the job is not queued and its delivery is recorded `failed` with the reason
//! (and counted). A worker sends up to [`PARALLEL`] deliveries at once; each is tried up to
//! [`MAX_ATTEMPTS`] times, 0.5 s after the first failure and doubling. If the listener falls
//! behind the bus itself, the bus drops it; it subscribes again and the events in between
//! are not delivered (counted as `missed`). The last [`KEPT`] deliveries are kept in memory
//! for `webhook_deliveries_request`; registrations are in the scheduler's store.

use super::bus::{Bus, BusItem, EventFilter, WeakBus};
use crate::error::Result;
use crate::model::scheduler::webhook::{retry_delay_ms, SIGNATURE_HEADER};
use crate::model::scheduler::{Delivery, DeliveryStatus, Webhook};
use crate::model::{new_id, now_ms, Event, EventPayload};
use crate::scheduler::SchedulerStore;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Jobs waiting to be sent, at most.
pub const QUEUE: usize = 1024;
/// Deliveries in flight at once.
pub const PARALLEL: usize = 16;
/// Attempts per delivery.
pub const MAX_ATTEMPTS: u32 = 6;
/// Deliveries kept for `webhook_deliveries_request`, newest last.
pub const KEPT: usize = 1000;
/// Bound on one attempt (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// `HMAC-SHA256(key, message)` (RFC 2104), as lowercase hex.
pub fn sign(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// One event for one webhook.
struct Job {
    webhook: Webhook,
    delivery_id: String,
    event_type: &'static str,
    body: Vec<u8>,
}

/// The registrations (cached from the store), the delivery log and the queue.
pub(crate) struct Webhooks {
    store: Arc<dyn SchedulerStore>,
    hooks: Mutex<Vec<Webhook>>,
    log: Mutex<VecDeque<Delivery>>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    /// Dropped with the runtime: the listener's subscription keeps the bus alive, so the
    /// listener waits on this too and ends when it closes.
    stop: tokio::sync::watch::Sender<()>,
    /// Jobs refused because the queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
    /// Times the listener fell behind the bus and lost events.
    pub missed: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Webhooks {
    /// Loads the registrations; nothing runs until [`Webhooks::start`].
    pub(crate) fn open(store: Arc<dyn SchedulerStore>) -> Result<Arc<Self>> {
        let hooks = store.list_webhooks()?;
        Ok(Arc::new(Webhooks {
            store,
            hooks: Mutex::new(hooks),
            log: Mutex::new(VecDeque::new()),
            queue: Mutex::new(None),
            stop: tokio::sync::watch::channel(()).0,
            dropped: Default::default(),
            missed: Default::default(),
        }))
    }

    /// Starts the listener and the worker once (on the first registration, or at open when
    /// some are stored). They end when the bus does.
    pub(crate) fn start(self: &Arc<Self>, bus: &Bus) -> Result<()> {
        let mut queue = lock(&self.queue);
        if queue.is_some() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let sub = bus.subscribe(EventFilter::everything())?;
        *queue = Some(tx.clone());
        drop(queue);
        let stop = self.stop.subscribe();
        tokio::spawn(listen(Arc::downgrade(self), bus.downgrade(), sub, tx, stop));
        tokio::spawn(work(Arc::downgrade(self), rx));
        Ok(())
    }

    /// Registers a webhook (validated, persisted).
    pub(crate) fn register(self: &Arc<Self>, bus: &Bus, webhook: Webhook) -> Result<Webhook> {
        webhook.validate()?;
        self.store.put_webhook(&webhook)?;
        lock(&self.hooks).push(webhook.clone());
        self.start(bus)?;
        Ok(webhook)
    }

    /// Every registration, secrets left out.
    pub(crate) fn list(&self) -> Vec<Webhook> {
        let mut hooks: Vec<Webhook> = lock(&self.hooks)
            .iter()
            .cloned()
            .map(Webhook::redacted)
            .collect();
        hooks.sort_by(|a, b| a.id.cmp(&b.id));
        hooks
    }

    /// Removes a registration; whether it existed.
    pub(crate) fn remove(&self, id: &str) -> Result<bool> {
        let existed = self.store.delete_webhook(id)?;
        lock(&self.hooks).retain(|h| h.id != id);
        Ok(existed)
    }

    /// The deliveries kept, oldest first, of one webhook or all.
    pub(crate) fn deliveries(&self, webhook_id: Option<&str>) -> Vec<Delivery> {
        lock(&self.log)
            .iter()
            .filter(|d| webhook_id.is_none_or(|w| d.webhook_id == w))
            .cloned()
            .collect()
    }

    /// Records (or updates) a delivery in the log.
    fn record(&self, delivery: Delivery) {
        let mut log = lock(&self.log);
        if let Some(d) = log.iter_mut().rev().find(|d| d.id == delivery.id) {
            *d = delivery;
            return;
        }
        if log.len() == KEPT {
            log.pop_front();
        }
        log.push_back(delivery);
    }

    /// Queues one job per matching webhook; never waits.
    fn dispatch(&self, event: &Event, template_id: Option<&str>, tx: &mpsc::Sender<Job>) {
        let event_type = event.type_name();
        let hooks: Vec<Webhook> = lock(&self.hooks)
            .iter()
            .filter(|h| h.wants(event_type, template_id))
            .cloned()
            .collect();
        for webhook in hooks {
            let delivery_id = new_id("dlv");
            let body = serde_json::json!({
                "deliveryId": delivery_id,
                "webhookId": webhook.id,
                "event": event,
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let mut delivery = Delivery {
                id: delivery_id.clone(),
                webhook_id: webhook.id.clone(),
                event_type: event_type.to_string(),
                sandbox_id: sandbox_of(&event.payload).map(str::to_string),
                status: DeliveryStatus::Retrying,
                attempts: 0,
                last_status: None,
                last_error: None,
                created_at: now_ms(),
                last_attempt_at: None,
            };
            let job = Job {
                webhook,
                delivery_id,
                event_type,
                body,
            };
            match tx.try_send(job) {
                Ok(()) => self.record(delivery),
                Err(_) => {
                    self.dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    delivery.status = DeliveryStatus::Failed;
                    delivery.last_error = Some(format!(
                        "not sent: the webhook queue was full ({QUEUE} deliveries waiting)"
                    ));
                    tracing::warn!(webhook = %delivery.webhook_id, "webhook queue full: a delivery is dropped");
                    self.record(delivery);
                }
            }
        }
    }
}

/// The sandbox a webhook event is about.
fn sandbox_of(payload: &EventPayload) -> Option<&str> {
    match payload {
        EventPayload::SandboxCreated { sandbox_id, .. }
        | EventPayload::SandboxReady { sandbox_id, .. }
        | EventPayload::SandboxClaimed { sandbox_id, .. }
        | EventPayload::SandboxAdopted { sandbox_id, .. }
        | EventPayload::SandboxTerminated { sandbox_id, .. }
        | EventPayload::SandboxPaused { sandbox_id, .. }
        | EventPayload::SandboxResumed { sandbox_id, .. }
        | EventPayload::SandboxSnapshotted { sandbox_id, .. }
        | EventPayload::SandboxRemoved { sandbox_id }
        | EventPayload::SandboxExecStarted { sandbox_id, .. }
        | EventPayload::SandboxExecFinished { sandbox_id, .. } => Some(sandbox_id),
        _ => None,
    }
}

/// Reads the bus and queues jobs, subscribing again when it fell behind. Holds neither the
/// bus nor the webhooks: it ends with the runtime.
async fn listen(
    state: std::sync::Weak<Webhooks>,
    bus: WeakBus,
    mut sub: super::bus::Subscription,
    tx: mpsc::Sender<Job>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let item = tokio::select! {
            item = sub.recv() => item,
            _ = stop.changed() => return,
        };
        let Some(webhooks) = state.upgrade() else {
            return;
        };
        match item {
            None => return,
            Some(BusItem::Overflowed { .. }) => {
                webhooks
                    .missed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    "the webhook listener fell behind the bus; events in between are not delivered"
                );
                match bus
                    .upgrade()
                    .map(|b| b.subscribe(EventFilter::everything()))
                {
                    Some(Ok(s)) => sub = s,
                    _ => return,
                }
            }
            Some(BusItem::Event(p)) => {
                let Some(sandbox_id) = sandbox_of(&p.event.payload) else {
                    continue;
                };
                let store = webhooks.store.clone();
                let id = sandbox_id.to_string();
                let template = tokio::task::spawn_blocking(move || store.get_sandbox(&id))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .flatten()
                    .map(|s| s.template_id);
                webhooks.dispatch(&p.event, template.as_deref(), &tx);
            }
        }
    }
}

/// Takes jobs off the queue and sends up to [`PARALLEL`] at once.
async fn work(state: std::sync::Weak<Webhooks>, mut rx: mpsc::Receiver<Job>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for webhooks");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(PARALLEL));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let state = state.clone();
        let client = client.clone();
        tokio::spawn(async move {
            deliver(&state, &client, job).await;
            drop(permit);
        });
    }
}

/// Sends one job until it is answered with 2xx or the attempts run out.
async fn deliver(state: &std::sync::Weak<Webhooks>, client: &reqwest::Client, job: Job) {
    let signature = format!("sha256={}", sign(job.webhook.secret.as_bytes(), &job.body));
    for attempt in 1..=MAX_ATTEMPTS {
        let sent = client
            .post(&job.webhook.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header("X-Agentvm-Delivery", &job.delivery_id)
            .header("X-Agentvm-Event", job.event_type)
            .body(job.body.clone())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (
                Some(r.status().as_u16()),
                Some(format!("answered {}", r.status())),
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        let Some(webhooks) = state.upgrade() else {
            return;
        };
        let done = error.is_none();
        let last = attempt == MAX_ATTEMPTS;
        let mut d = webhooks
            .deliveries(Some(&job.webhook.id))
            .into_iter()
            .rev()
            .find(|d| d.id == job.delivery_id);
        if let Some(d) = d.as_mut() {
            d.attempts = attempt;
            d.last_status = status;
            d.last_error = error;
            d.last_attempt_at = Some(now_ms());
            d.status = match (done, last) {
                (true, _) => DeliveryStatus::Delivered,
                (false, true) => DeliveryStatus::Failed,
                (false, false) => DeliveryStatus::Retrying,
            };
            webhooks.record(d.clone());
        }
        drop(webhooks);
        if done || last {
            return;
        }
        tokio::time::sleep(Duration::from_millis(retry_delay_ms(attempt))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentvm_scheduler::MemorySchedulerStore;
    use std::sync::atomic::Ordering;

    /// A full queue costs the bus nothing: `dispatch` returns at once, the delivery that did
    /// not fit is logged `failed` saying why, and it is counted.
    #[tokio::test]
    async fn a_full_queue_drops_the_delivery_visibly_and_never_waits() {
        let hooks = Webhooks::open(Arc::new(MemorySchedulerStore::new())).unwrap();
        let webhook = Webhook {
            id: "whk_full".into(),
            url: "http://127.0.0.1:9/hook".into(),
            template_id: None,
            events: Vec::new(),
            secret: "s".into(),
            created_at: 0,
        };
        lock(&hooks.hooks).push(webhook);
        // Room for one job, and no worker taking it.
        let (tx, mut rx) = mpsc::channel(1);
        let removed = |id: &str| {
            Event::new(
                EventPayload::SandboxRemoved {
                    sandbox_id: id.into(),
                },
                None,
            )
        };
        hooks.dispatch(&removed("sbx_1"), None, &tx);
        let started = std::time::Instant::now();
        hooks.dispatch(&removed("sbx_2"), None, &tx);
        hooks.dispatch(&removed("sbx_3"), None, &tx);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(hooks.dropped.load(Ordering::Relaxed), 2);
        let log = hooks.deliveries(Some("whk_full"));
        let states: Vec<(Option<&str>, DeliveryStatus)> = log
            .iter()
            .map(|d| (d.sandbox_id.as_deref(), d.status))
            .collect();
        assert_eq!(
            states,
            [
                (Some("sbx_1"), DeliveryStatus::Retrying),
                (Some("sbx_2"), DeliveryStatus::Failed),
                (Some("sbx_3"), DeliveryStatus::Failed),
            ]
        );
        assert!(
            log[1]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("webhook queue was full")),
            "{log:?}"
        );
        // The job that fit is the first event's.
        let job = rx.try_recv().unwrap();
        assert_eq!(job.event_type, "sandbox_removed");
        assert!(String::from_utf8_lossy(&job.body).contains("sbx_1"));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            sign(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
