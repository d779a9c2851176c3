//! The controllers: one reconcile driver per kind, sharing a [`Context`] (clients, brokers,
//! metrics, Events) and one error policy (per-object exponential backoff with jitter).

pub mod api_version_policy;
pub mod conditions;
pub mod error;
pub mod event_topic;
mod manager;
mod status;
pub mod subscription;
pub mod webhook;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
    },
};
use rand::Rng;
use tracing::{debug, warn};

pub use error::Error;
pub use manager::{run, topic_broker};
pub use status::Reconciled;

use crate::{broker::Brokers, telemetry::metrics::ControllerMetrics};

/// Field manager for everything the controller applies; also the Events' reporting controller.
pub const MANAGER: &str = "sluice-controller";
/// How soon a reconcile that saw a stale cached object runs again.
const STALE_RETRY: Duration = Duration::from_millis(500);

/// Tunables of the controller process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often every object is re-checked against the broker (jittered ±10%).
    pub resync: Duration,
    /// Reconciles running at once, per kind.
    pub concurrency: u16,
    /// How Webhooks' dispatchers are run.
    pub dispatcher: crate::workload::dispatcher::Settings,
}

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<ControllerMetrics>,
    pub brokers: Arc<Brokers>,
    pub settings: Settings,
    /// The last full reconcile of each Webhook, reused while only its pods' reports change.
    pub webhooks: webhook::Fresh<webhook::Converged>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        identity: &str,
        metrics: Arc<ControllerMetrics>,
        brokers: Arc<Brokers>,
        settings: Settings,
    ) -> Arc<Self> {
        let reporter = Reporter { controller: MANAGER.to_owned(), instance: Some(identity.to_owned()) };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            brokers,
            settings,
            webhooks: webhook::Fresh::default(),
            failures: Mutex::default(),
        })
    }

    /// The requeue after a successful reconcile: the resync interval, jittered so objects
    /// created together do not all hit the broker at the same instant.
    pub fn resync(&self) -> Action {
        let factor = rand::rng().random_range(0.9..1.1);
        Action::requeue(self.settings.resync.mul_f64(factor))
    }

    /// The requeue of an object whose state follows the clock: right after `due` (when an
    /// event version next changes state) if that comes before the resync, else the resync.
    /// The margin keeps a clock read a hair early from seeing the old state.
    pub fn resync_or_at(&self, due: Option<k8s_openapi::jiff::Timestamp>) -> Action {
        const MARGIN: Duration = Duration::from_millis(250);
        let now = k8s_openapi::jiff::Timestamp::now();
        match due.map(|at| at.duration_since(now).unsigned_abs()) {
            Some(wait) if wait < self.settings.resync => Action::requeue(wait + MARGIN),
            _ => self.resync(),
        }
    }

    /// Publishes an Event about `obj`. Failing to publish is logged, never fatal.
    pub async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event =
            Event { type_, reason: reason.to_owned(), note: Some(note), action: action.to_owned(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "Failed to publish an Event.");
        }
    }

    fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    fn failed(&self, key: &str) -> u32 {
        self.failures.lock().map_or(1, |mut f| {
            let n = f.entry(key.to_owned()).or_default();
            *n = n.saturating_add(1);
            *n
        })
    }
}

/// Runs one reconcile of `obj`: timed and counted by outcome in the metrics, and the object's
/// failure streak (its backoff) cleared when it succeeds. Every kind's driver goes through it.
pub(crate) async fn measured<K, F>(kind: &'static str, obj: &K, ctx: &Context, reconcile: F) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let timer = ctx.metrics.reconcile_started(kind);
    let result = reconcile.await;
    timer.finish(result.as_ref().err().map(Error::category));
    if result.is_ok() {
        ctx.succeeded(&object_key(obj));
    }
    result
}

/// Backoff after the `n`th consecutive failure: 1s, 2s, 4s, ... capped at 2 minutes, each
/// jittered down by up to half so failing objects spread out.
pub fn backoff_delay(n: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << n.saturating_sub(1).min(7)).min(Duration::from_secs(120));
    base.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Shared error policy: an invalid spec waits for the next change; anything else is retried
/// with per-object exponential backoff.
#[allow(clippy::needless_pass_by_value, reason = "the signature kube-runtime's Controller::run expects")]
pub fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(obj.as_ref());
    if err.awaits_change() {
        ctx.succeeded(&key);
        debug!(object = %key, error = %err, "Waiting for the object to change.");
        return Action::await_change();
    }
    if matches!(err, Error::StaleObject) {
        debug!(object = %key, "The cached object was stale; retrying shortly.");
        return Action::requeue(STALE_RETRY);
    }
    let n = ctx.failed(&key);
    let delay = backoff_delay(n, rand::rng().random());
    warn!(object = %key, error = %err, attempt = n, retry_in = ?delay, "Reconcile failed.");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_two_minutes() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff_delay(n, 0.0).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
        assert_eq!(backoff_delay(3, 1.0), Duration::from_secs(2));
    }
}
