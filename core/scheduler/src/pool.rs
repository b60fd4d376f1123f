//! Warm pools: per template, sandboxes created and started ahead of demand with the template's
//! defaults, so a claim is a bookkeeping step (milliseconds), not a container start.
//!
//! A warm sandbox is an ordinary sandbox record with `warm: true` and no owner; its lifetime
//! starts at the claim. Docker labels cannot change after creation, so a warm container is
//! labelled `agentvm.warm=true` and its owner and expiry live in the record from the claim on.
//! Pools refill in the background; a claim on an empty pool starts a sandbox cold (a miss).

use super::sandbox::{Sandbox, SandboxStatus, TerminationReason};
use super::template::{resolve, SandboxPlan, SandboxRequest, Template};
use super::{lock, Scheduler};
use crate::error::Result;
use crate::model::{now_ms, EventPayload};
use std::collections::VecDeque;

/// One template's pool.
#[derive(Debug, Default)]
pub(crate) struct PoolState {
    /// Warm sandbox ids, oldest first (claimed first, so none grows stale).
    pub ready: VecDeque<String>,
    /// Warm sandboxes being created now, so refills do not overshoot.
    pub filling: u32,
    /// Refills that failed in a row (a missing image, a full cluster), for the backoff.
    pub failures: u32,
    /// No background refill before this: a broken template must not make a failed sandbox
    /// record every tick.
    pub backoff_until: Option<std::time::Instant>,
}

/// How long background refills pause after `failures` failures in a row: 1 s doubling up to
/// 256 s.
pub(crate) fn refill_backoff(failures: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1u64 << failures.min(9).saturating_sub(1))
        .min(std::time::Duration::from_secs(300))
}

impl Scheduler {
    /// Takes a warm sandbox of `template` for `request`, if one is ready.
    pub(crate) async fn claim_warm(
        &self,
        template: &Template,
        request: &SandboxRequest,
        plan: &SandboxPlan,
    ) -> Result<Option<Sandbox>> {
        let claimed = loop {
            let id = lock(&self.inner.pools)
                .get_mut(&template.id)
                .and_then(|p| p.ready.pop_front());
            let Some(id) = id else { break None };
            let now = now_ms();
            let mut live = lock(&self.inner.live);
            let Some(l) = live.get_mut(&id) else { continue };
            if !l.record.warm || l.record.status != SandboxStatus::Running {
                continue;
            }
            let r = &mut l.record;
            r.warm = false;
            r.owner = request.owner.clone();
            r.lifetime_s = plan.lifetime_s;
            r.idle_timeout_s = plan.idle_timeout_s;
            r.idle_action = plan.idle_action;
            r.expires_at = now + (plan.lifetime_s as i64).saturating_mul(1000);
            r.last_activity_at = now;
            break Some(r.clone());
        };
        self.spawn_refill(&template.id);
        let Some(sandbox) = claimed else {
            return Ok(None);
        };
        self.persist(&sandbox).await?;
        self.publish(
            EventPayload::SandboxClaimed {
                sandbox_id: sandbox.id.clone(),
                template_id: sandbox.template_id.clone(),
            },
            sandbox.owner.as_deref(),
        );
        Ok(Some(sandbox))
    }

    /// Adds a ready warm sandbox to its template's pool (after creation or adoption).
    pub(crate) fn pool_add(&self, template_id: &str, sandbox_id: &str) {
        lock(&self.inner.pools)
            .entry(template_id.to_string())
            .or_default()
            .ready
            .push_back(sandbox_id.to_string());
    }

    /// Forgets an ended sandbox in its pool.
    pub(crate) fn forget_pooled(&self, template_id: &str, sandbox_id: &str) {
        if let Some(p) = lock(&self.inner.pools).get_mut(template_id) {
            p.ready.retain(|id| id != sandbox_id);
        }
    }

    /// Ends every unclaimed warm sandbox of a template (it changed or went away).
    pub(crate) async fn drain_pool(&self, template_id: &str, why: &str) {
        let ids: Vec<String> = lock(&self.inner.pools)
            .get_mut(template_id)
            .map(|p| p.ready.drain(..).collect())
            .unwrap_or_default();
        for id in ids {
            if let Err(e) = self
                .end_sandbox(
                    &id,
                    TerminationReason::PoolDrained,
                    Some(why.to_string()),
                    None,
                )
                .await
            {
                tracing::warn!(sandbox = %id, error = %e, "draining a warm sandbox");
            }
        }
    }

    /// Fills `template_id`'s pool up to its size now, waiting for the containers; returns how
    /// many are ready. The background loop does the same on its own.
    pub async fn fill_pool(&self, template_id: &str) -> Result<usize> {
        let template = self.template(template_id).await?;
        let want = template.spec.warm_pool_size as usize;
        let plan = resolve(&template, &SandboxRequest::new(&template.id))?;
        loop {
            let start = {
                let mut pools = lock(&self.inner.pools);
                let p = pools.entry(template.id.clone()).or_default();
                let have = p.ready.len() + p.filling as usize;
                if have < want {
                    p.filling += 1;
                    true
                } else {
                    false
                }
            };
            if !start {
                break;
            }
            let made = self
                .create_container(&template, None, None, plan.clone(), true)
                .await;
            let mut pools = lock(&self.inner.pools);
            let p = pools.entry(template.id.clone()).or_default();
            p.filling = p.filling.saturating_sub(1);
            match made {
                Ok(s) => {
                    p.failures = 0;
                    p.backoff_until = None;
                    p.ready.push_back(s.id);
                }
                Err(e) => {
                    p.failures += 1;
                    p.backoff_until = Some(std::time::Instant::now() + refill_backoff(p.failures));
                    return Err(e);
                }
            }
        }
        Ok(lock(&self.inner.pools)
            .get(template_id)
            .map(|p| p.ready.len())
            .unwrap_or(0))
    }

    /// Refills one template's pool in the background.
    pub(crate) fn spawn_refill(&self, template_id: &str) {
        let this = self.clone();
        let id = template_id.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.fill_pool(&id).await {
                tracing::warn!(template = %id, error = %e, "refilling a warm pool failed; backing off");
            }
        });
    }

    /// Starts a refill for every template whose pool is short (the background loop's step).
    pub(crate) async fn refill_pools(&self) {
        // In a cluster, warm pools are kept by the server that tends unowned sandboxes.
        if !self.tends(None) {
            return;
        }
        let templates = match self.list_templates().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "listing templates for pool refills");
                return;
            }
        };
        for t in templates {
            let want = t.spec.warm_pool_size as usize;
            if want == 0 {
                continue;
            }
            let short = {
                let pools = lock(&self.inner.pools);
                let p = pools.get(&t.id);
                let have = p.map(|p| p.ready.len() + p.filling as usize).unwrap_or(0);
                let waiting = p
                    .and_then(|p| p.backoff_until)
                    .is_some_and(|t| std::time::Instant::now() < t);
                have < want && !waiting && p.map(|p| p.filling == 0).unwrap_or(true)
            };
            if short {
                self.spawn_refill(&t.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_back_off_exponentially_up_to_256_seconds() {
        assert_eq!(refill_backoff(1), Duration::from_secs(1));
        assert_eq!(refill_backoff(2), Duration::from_secs(2));
        assert_eq!(refill_backoff(5), Duration::from_secs(16));
        assert_eq!(refill_backoff(9), Duration::from_secs(256));
        assert_eq!(refill_backoff(40), Duration::from_secs(256));
    }
}
