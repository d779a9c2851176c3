//! What the last full reconcile of each Webhook applied, so that a reconcile woken only by the
//! dispatcher pods' reports (every few seconds per pod while deliveries flow) summarizes them
//! into status without listing Subscriptions, reading Secrets and re-applying six objects.
//!
//! A full reconcile happens instead when: the spec (generation), labels, annotations or uid
//! changed; the Webhook's Deployment or a Subscription targeting it (before or after a change)
//! changed (their watches [`Fresh::invalidate`] it); a report comes from a pod that was not
//! running at the last full reconcile (a new pod, or one terminating, whose report must be
//! folded once it is gone); the reports change whether the Webhook is disabled; the last full
//! reconcile failed, or ran before this process last became leader; and at least every half
//! resync. What is only read, not watched — Secrets, the broker, edits to the other owned
//! objects — is therefore picked up within half a resync instead of at the next report.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::ResourceExt;

use crate::api::Webhook;

/// The last full reconcile's result per Webhook (`namespace/name`).
pub struct Fresh<T> {
    applied: Mutex<HashMap<String, Entry<T>>>,
    stale: Mutex<HashSet<String>>,
}

impl<T> Default for Fresh<T> {
    fn default() -> Self {
        Self { applied: Mutex::default(), stale: Mutex::default() }
    }
}

struct Entry<T> {
    uid: Option<String>,
    generation: Option<i64>,
    metadata: u64,
    at: Instant,
    value: T,
}

pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Labels and annotations, digested: a change of either calls for a full reconcile.
fn metadata_digest(webhook: &Webhook) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    webhook.labels().hash(&mut hasher);
    webhook.annotations().hash(&mut hasher);
    hasher.finish()
}

impl<T: Clone> Fresh<T> {
    /// The last full reconcile's result, when it is younger than `max_age` and nothing it
    /// depends on changed since.
    pub fn get(&self, key: &str, webhook: &Webhook, max_age: Duration) -> Option<T> {
        if self.stale.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key) {
            self.forget(key);
            return None;
        }
        let applied = self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = applied.get(key)?;
        let fresh = entry.uid == webhook.metadata.uid
            && entry.generation == webhook.metadata.generation
            && entry.metadata == metadata_digest(webhook)
            && entry.at.elapsed() < max_age;
        fresh.then(|| entry.value.clone())
    }

    /// Records a full reconcile's result.
    pub fn put(&self, key: String, webhook: &Webhook, value: T) {
        let entry = Entry {
            uid: webhook.metadata.uid.clone(),
            generation: webhook.metadata.generation,
            metadata: metadata_digest(webhook),
            at: Instant::now(),
            value,
        };
        self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, entry);
    }

    pub fn forget(&self, key: &str) {
        self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
        self.stale.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    /// Forgets everything: a process that (again) became leader saw no watch events meanwhile.
    pub fn clear(&self) {
        self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        self.stale.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// Something the Webhook's full reconcile reads changed: the next reconcile is a full one.
    pub fn invalidate(&self, key: String) {
        self.stale.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(generation: i64, annotation: &str) -> Webhook {
        let mut w: Webhook = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook",
            "metadata": {"name": "hook", "namespace": "shop", "generation": generation,
                         "annotations": {"example.com/note": annotation}},
            "spec": {"url": "https://example.com/hook"}
        }))
        .expect("webhook");
        w.metadata.generation = Some(generation);
        w
    }

    #[test]
    fn only_an_unchanged_recent_webhook_reuses_the_last_full_reconcile() {
        let fresh = Fresh::<u32>::default();
        let (hook, hour) = (webhook(1, "a"), Duration::from_secs(3600));
        assert_eq!(fresh.get("shop/hook", &hook, hour), None, "never reconciled");
        fresh.put("shop/hook".into(), &hook, 7);
        assert_eq!(fresh.get("shop/hook", &hook, hour), Some(7));
        assert_eq!(fresh.get("shop/hook", &webhook(2, "a"), hour), None, "a spec change");
        assert_eq!(fresh.get("shop/hook", &webhook(1, "b"), hour), None, "an annotation change");
        assert_eq!(fresh.get("shop/hook", &hook, Duration::ZERO), None, "too old");
        fresh.invalidate("shop/hook".into());
        assert_eq!(fresh.get("shop/hook", &hook, hour), None, "a Subscription or the Deployment changed");
        assert_eq!(fresh.get("shop/hook", &hook, hour), None, "forgotten until the next full reconcile");
        fresh.put("shop/hook".into(), &hook, 8);
        assert_eq!(fresh.get("shop/hook", &hook, hour), Some(8));
        let mut recreated = hook.clone();
        recreated.metadata.uid = Some("another".into());
        assert_eq!(fresh.get("shop/hook", &recreated, hour), None, "deleted and created again under the same name");
        fresh.clear();
        assert_eq!(fresh.get("shop/hook", &hook, hour), None, "leadership regained");
    }
}
