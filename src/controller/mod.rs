//! The controllers: one reconcile driver per kind, sharing a [`Context`] (clients, brokers,
//! metrics, Events) and one error policy (per-object exponential backoff with jitter).

pub mod conditions;
pub mod error;
pub mod event_topic;
mod status;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::{self, Action},
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use error::Error;
pub use status::HasConditions;

use crate::{
    api::EventTopic,
    broker::{BrokerKey, Brokers},
    telemetry::{health::Health, metrics::ControllerMetrics},
};

/// Field manager for everything the controller applies; also the Events' reporting controller.
pub const MANAGER: &str = "sluice-controller";

/// Tunables of the controller process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often every object is re-checked against the broker (jittered ±10%).
    pub resync: Duration,
    /// Reconciles running at once, per kind.
    pub concurrency: u16,
}

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<ControllerMetrics>,
    pub brokers: Arc<Brokers>,
    pub settings: Settings,
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
            failures: Mutex::default(),
        })
    }

    /// The requeue after a successful reconcile: the resync interval, jittered so objects
    /// created together do not all hit the broker at the same instant.
    pub fn resync(&self) -> Action {
        let factor = rand::rng().random_range(0.9..1.1);
        Action::requeue(self.settings.resync.mul_f64(factor))
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
    let n = ctx.failed(&key);
    let delay = backoff_delay(n, rand::rng().random());
    warn!(object = %key, error = %err, attempt = n, retry_in = ?delay, "Reconcile failed.");
    Action::requeue(delay)
}

/// Runs every controller until `stop` fires. `health` learns when the watches have synced.
pub async fn run(ctx: Arc<Context>, health: Arc<Health>, stop: CancellationToken) {
    let topics = Api::<EventTopic>::all(ctx.client.clone());
    wait_for_crd(&topics, &stop).await;
    if stop.is_cancelled() {
        return;
    }
    let controller = Controller::new(topics, watcher::Config::default().any_semantic())
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency));
    let store = controller.store();
    let controller = controller
        .reconcile_on(objects_on_broker(ctx.brokers.subscribe(), store.clone(), topic_broker))
        .graceful_shutdown_on(stop.clone().cancelled_owned());

    ctx.metrics.drift_repaired(event_topic::KIND, 0);
    tokio::spawn(mark_synced(store.clone(), health));
    tokio::spawn(count_resources(event_topic::KIND, store, ctx.metrics.clone(), stop.clone()));
    info!("Controllers started.");
    controller
        .run(event_topic::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "Controller event.");
            }
        })
        .await;
    info!("Controllers stopped.");
}

/// The broker an EventTopic lives on.
pub fn topic_broker(topic: &EventTopic) -> BrokerKey {
    match (&topic.spec.broker, topic.namespace()) {
        (Some(b), Some(namespace)) => BrokerKey::Secret { namespace, name: b.secret_ref.name.clone() },
        _ => BrokerKey::Default,
    }
}

/// When a broker goes down or comes back, every object on it is reconciled at once: its
/// status tells the truth, and it converges without waiting for its backoff to expire.
fn objects_on_broker<K>(
    changed: tokio::sync::broadcast::Receiver<BrokerKey>,
    store: Store<K>,
    broker_of: fn(&K) -> BrokerKey,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    tokio_stream::wrappers::BroadcastStream::new(changed).filter_map(|key| async move { key.ok() }).flat_map(
        move |key| {
            let refs: Vec<_> =
                store.state().iter().filter(|o| broker_of(o) == key).map(|o| ObjectRef::from_obj(o.as_ref())).collect();
            futures::stream::iter(refs)
        },
    )
}

async fn wait_for_crd<K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug>(
    api: &Api<K>,
    stop: &CancellationToken,
) {
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => return,
            Err(e) => {
                warn!(error = %e, "Cannot list the Sluice resources; are the CRDs installed (kubectl apply -f crds/)? Retrying.");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

async fn mark_synced<K: Resource + Clone>(store: Store<K>, health: Arc<Health>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // Re-poll on a short timer: the store's readiness signal wakes only one waiter, and the
    // controller's own runner is already waiting on it.
    loop {
        match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
            Ok(Ok(())) => {
                info!("Initial watch sync done.");
                health.set_synced(true);
                return;
            }
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
}

/// Refreshes `sluice_resources{kind,ready}` from the watch cache.
async fn count_resources<K>(
    kind: &'static str,
    store: Store<K>,
    metrics: Arc<ControllerMetrics>,
    stop: CancellationToken,
) where
    K: Resource<DynamicType = ()> + HasConditions + Clone + Send + Sync + 'static,
{
    loop {
        let (mut ready, mut not_ready, mut unknown) = (0, 0, 0);
        for obj in store.state() {
            match conditions::ready_condition(obj.conditions()).map(|c| c.status.as_str()) {
                Some("True") => ready += 1,
                Some("False") => not_ready += 1,
                _ => unknown += 1,
            }
        }
        metrics.set_resources(kind, ready, not_ready, unknown);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
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
