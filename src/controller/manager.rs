//! Runs the controllers: one kube-runtime `Controller` per kind, with the watches that wake a
//! resource when what it depends on changes, readiness once every watch has synced, and the
//! `sluice_resources` gauge.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self},
        predicates,
        reflector::{self, ObjectRef, Store},
        utils::{Predicate, PredicateConfig},
        watcher,
    },
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use k8s_openapi::api::apps::v1::Deployment;

use super::{Context, Reconciled, api_version_policy, conditions, error_policy, event_topic, subscription, webhook};
use crate::{
    api::{ApiVersionPolicy, EventTopic, Subscription, Webhook},
    broker::BrokerKey,
    telemetry::{health::Health, metrics::ControllerMetrics},
    workload::dispatcher,
};

/// Runs every controller until `stop` fires. `health` learns when all watches have synced.
pub async fn run(ctx: Arc<Context>, health: Arc<Health>, stop: CancellationToken) {
    let client = ctx.client.clone();
    wait_for_crd(&Api::<EventTopic>::all(client.clone()), &stop).await;
    if stop.is_cancelled() {
        return;
    }
    let config = controller::Config::default().concurrency(ctx.settings.concurrency);
    // Nothing was watched while this process did not lead.
    ctx.webhooks.clear();

    let (changes, topic_store) = reconcile_worthy(Api::<EventTopic>::all(client.clone()), |_| None);
    let topics = Controller::for_stream(changes, topic_store.clone()).with_config(config.clone());
    let topics = topics
        .reconcile_on(objects_on_broker(ctx.brokers.subscribe(), topic_store.clone(), topic_broker))
        .graceful_shutdown_on(stop.clone().cancelled_owned());

    let (changes, sub_store) = reconcile_worthy(Api::<Subscription>::all(client.clone()), |_| None);
    let subs = Controller::for_stream(changes, sub_store.clone()).with_config(config.clone());
    let (by_topic, by_webhook) = (sub_store.clone(), sub_store.clone());
    let subs = subs
        // A topic that appears, turns Ready or is re-created wakes its Subscriptions.
        .watches(Api::<EventTopic>::all(client.clone()), watcher::Config::default(), move |topic| {
            referring(&by_topic, &topic, |s| &s.spec.topic_ref.name)
        })
        // A Webhook appearing or going matters to a Subscription, and the broker conflicts it
        // reports, not its delivery reports.
        .watches_stream(changes_of(Api::<Webhook>::all(client.clone()), conflicts_digest), move |webhook| {
            referring(&by_webhook, &webhook, |s| s.spec.webhook_ref.as_ref().map_or("", |w| w.name.as_str()))
        })
        // A policy that appears, changes or turns Ready (or not) changes the version they resolve.
        .watches_stream(changes_of(Api::<ApiVersionPolicy>::all(client.clone()), readiness_digest), {
            let subs = sub_store.clone();
            move |policy| {
                naming(&subs, policy.namespace().as_deref(), &policy.spec.topic_ref.name, |s| &s.spec.topic_ref.name)
            }
        })
        .reconcile_all_on(broker_changes(ctx.brokers.subscribe()))
        .graceful_shutdown_on(stop.clone().cancelled_owned());

    // A policy is woken by its topic (the catalog's examples), the Subscriptions on that topic
    // (their pins make the board) and the other policies naming the same topic (conflicts).
    let (changes, policy_store) = reconcile_worthy(Api::<ApiVersionPolicy>::all(client.clone()), |_| None);
    let (by_topic, by_sub, by_sibling) = (policy_store.clone(), policy_store.clone(), policy_store.clone());
    let policies = Controller::for_stream(changes, policy_store.clone())
        .with_config(config.clone())
        .watches_stream(created_or_deleted(Api::<EventTopic>::all(client.clone())), move |topic| {
            naming(&by_topic, topic.namespace().as_deref(), &topic.name_any(), |p| &p.spec.topic_ref.name)
        })
        .watches_stream(created_or_deleted(Api::<Subscription>::all(client.clone())), move |sub| {
            naming(&by_sub, sub.namespace().as_deref(), &sub.spec.topic_ref.name, |p| &p.spec.topic_ref.name)
        })
        .watches_stream(created_or_deleted(Api::<ApiVersionPolicy>::all(client.clone())), move |policy| {
            naming(&by_sibling, policy.namespace().as_deref(), &policy.spec.topic_ref.name, |p| &p.spec.topic_ref.name)
        })
        .graceful_shutdown_on(stop.clone().cancelled_owned());

    // A Webhook is also woken by its dispatchers' reports (to summarize them within seconds),
    // its Deployment (ready replicas) and the Subscriptions that target it.
    let (changes, hook_store) = reconcile_worthy(Api::<Webhook>::all(client.clone()), reports_digest);
    let dispatchers = watcher::Config::default().labels(&format!("app.kubernetes.io/name={}", dispatcher::APP_NAME));
    // Either change makes the Webhook's next reconcile a full one (see webhook::Fresh).
    let (by_deployment, by_subscription) = (ctx.clone(), ctx.clone());
    let hooks = Controller::for_stream(changes, hook_store.clone())
        .with_config(config)
        .watches(Api::<Deployment>::all(client.clone()), dispatchers, move |deployment| {
            let namespace = deployment.namespace()?;
            let owner =
                deployment.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Webhook")?;
            by_deployment.webhooks.invalidate(webhook::fresh_key(&namespace, &owner.name));
            Some(ObjectRef::<Webhook>::new(&owner.name).within(&namespace))
        })
        // A topic's catalog or policy changing changes how its Subscriptions' events are rendered;
        // a catalog is used once the topic is Ready for it.
        .watches_stream(changes_of(Api::<EventTopic>::all(client.clone()), readiness_digest), {
            let (ctx, subs) = (ctx.clone(), sub_store.clone());
            move |topic| webhooks_rendering(&ctx, &subs, topic.namespace(), &topic.name_any())
        })
        .watches_stream(changes_of(Api::<ApiVersionPolicy>::all(client.clone()), readiness_digest), {
            let (ctx, subs) = (ctx.clone(), sub_store.clone());
            move |policy| webhooks_rendering(&ctx, &subs, policy.namespace(), &policy.spec.topic_ref.name)
        })
        .watches(Api::<Subscription>::all(client), watcher::Config::default(), {
            let targets = Targets::default();
            move |sub| {
                let namespace = sub.namespace().unwrap_or_default();
                let hooks = targets.seen(&sub);
                for hook in &hooks {
                    by_subscription.webhooks.invalidate(webhook::fresh_key(&namespace, hook));
                }
                hooks.into_iter().map(move |hook| ObjectRef::<Webhook>::new(&hook).within(&namespace))
            }
        })
        .graceful_shutdown_on(stop.clone().cancelled_owned());

    for kind in [event_topic::KIND, subscription::KIND] {
        ctx.metrics.drift_repaired(kind, 0);
    }
    let (t, s, h, p) = (topic_store.clone(), sub_store.clone(), hook_store.clone(), policy_store.clone());
    tokio::spawn(async move {
        tokio::join!(synced(t), synced(s), synced(h), synced(p));
        info!("Initial watch sync done.");
        health.set_synced(true);
    });
    tokio::spawn(count_resources(event_topic::KIND, topic_store, ctx.metrics.clone(), stop.clone()));
    tokio::spawn(count_resources(subscription::KIND, sub_store, ctx.metrics.clone(), stop.clone()));
    tokio::spawn(count_resources(webhook::KIND, hook_store, ctx.metrics.clone(), stop.clone()));
    tokio::spawn(count_resources(api_version_policy::KIND, policy_store.clone(), ctx.metrics.clone(), stop.clone()));
    tokio::spawn(export_versions(policy_store, ctx.metrics.clone(), stop.clone()));
    info!("Controllers started.");
    tokio::join!(
        drain(topics.run(event_topic::reconcile, error_policy, ctx.clone())),
        drain(subs.run(subscription::reconcile, error_policy, ctx.clone())),
        drain(hooks.run(webhook::reconcile, error_policy, ctx.clone())),
        drain(policies.run(api_version_policy::reconcile, error_policy, ctx)),
    );
    info!("Controllers stopped.");
}

/// The Webhook each Subscription targeted when last seen: a Subscription moved to another
/// Webhook (or off one) concerns the one it left as well as the one it joined.
#[derive(Default)]
struct Targets(std::sync::Mutex<std::collections::HashMap<(String, String), String>>);

impl Targets {
    /// The Webhooks `sub` concerns now: the one it targets and the one it targeted before.
    fn seen(&self, sub: &Subscription) -> Vec<String> {
        let key = (sub.namespace().unwrap_or_default(), sub.name_any());
        let now = sub.spec.webhook_ref.as_ref().map(|w| w.name.clone());
        let mut targets = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = match (&now, sub.metadata.deletion_timestamp.is_some()) {
            (Some(hook), false) => targets.insert(key, hook.clone()),
            _ => targets.remove(&key),
        };
        let mut hooks: Vec<String> = now.into_iter().chain(before).collect();
        hooks.dedup();
        hooks
    }
}

/// A watch of `api` reflected into a store, passing on only the changes a reconcile acts on:
/// the spec (generation), annotations (such as a redrive request), finalizers, deletion and
/// whatever `also` digests. The controller's own status writes do not wake the object again;
/// the resync does the rest.
fn reconcile_worthy<K>(
    api: Api<K>,
    also: fn(&K) -> Option<u64>,
) -> (impl Stream<Item = Result<K, watcher::Error>> + Send + 'static, Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let deleting = |o: &K| o.meta().deletion_timestamp.as_ref().map(|_| 1);
    let worth = predicates::generation
        .combine(predicates::annotations)
        .combine(predicates::finalizers)
        .combine(deleting)
        .combine(also);
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(worth, PredicateConfig::default());
    (stream, store)
}

/// A digest of the dispatcher pods' reports in a Webhook's status.
fn reports_digest(webhook: &Webhook) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let reports = &webhook.status.as_ref()?.dispatchers;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(reports).ok()?.hash(&mut hasher);
    Some(hasher.finish())
}

/// The objects of `api` when they are created, change their spec or are deleted; status
/// updates are left out.
fn created_or_deleted<K>(api: Api<K>) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    changes_of(api, |o| o.meta().generation.map(i64::cast_unsigned).unwrap_or_default())
}

/// A Webhook's spec and the Subscriptions it leaves out for living on another broker.
fn conflicts_digest(webhook: &Webhook) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    webhook.metadata.generation.hash(&mut hasher);
    webhook.status.as_ref().map(|s| &s.broker_conflicts).hash(&mut hasher);
    hasher.finish()
}

/// An object's spec and whether it is Ready for it: what the Subscriptions and Webhooks of a
/// topic act on (not, say, the board a policy keeps in status).
fn readiness_digest<K: Reconciled>(obj: &K) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut hasher);
    if let Some(ready) = conditions::ready_condition(obj.conditions()) {
        (&ready.status, &ready.reason, ready.observed_generation).hash(&mut hasher);
    }
    hasher.finish()
}

/// The objects of `api` when they are created, when `digest` changes, or when they are deleted.
fn changes_of<K>(api: Api<K>, digest: fn(&K) -> u64) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let mut seen: std::collections::HashMap<ObjectRef<K>, u64> = std::collections::HashMap::new();
    watcher(api, watcher::Config::default()).default_backoff().filter_map(move |event| {
        let passed = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let now = digest(&o);
                let before = seen.insert(ObjectRef::from_obj(&o), now);
                (before != Some(now)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&ObjectRef::from_obj(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(passed)
    })
}

async fn drain<T, E: std::fmt::Display>(results: impl Stream<Item = Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "Controller event.");
            }
        })
        .await;
}

/// The Subscriptions in `other`'s namespace whose reference (picked by `by`) names it.
fn referring<K: Resource>(
    subs: &Store<Subscription>,
    other: &K,
    by: impl Fn(&Subscription) -> &str,
) -> Vec<ObjectRef<Subscription>> {
    naming(subs, other.namespace().as_deref(), &other.name_any(), by)
}

/// The objects of `store` in `namespace` whose reference (picked by `by`) is `name`.
fn naming<K>(store: &Store<K>, namespace: Option<&str>, name: &str, by: impl Fn(&K) -> &str) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    named_by(store, namespace, name, by).iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// The objects themselves, for [`naming`].
fn named_by<K>(store: &Store<K>, namespace: Option<&str>, name: &str, by: impl Fn(&K) -> &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().into_iter().filter(|o| o.namespace().as_deref() == namespace && by(o) == name).collect()
}

/// The Webhooks delivering a Subscription of `topic` in `namespace`; their next reconcile is a
/// full one, since the topic's rendering changed.
fn webhooks_rendering(
    ctx: &Context,
    subs: &Store<Subscription>,
    namespace: Option<String>,
    topic: &str,
) -> Vec<ObjectRef<Webhook>> {
    let namespace = namespace.unwrap_or_default();
    let mut hooks: Vec<String> = named_by(subs, Some(&namespace), topic, |s| &s.spec.topic_ref.name)
        .iter()
        .filter_map(|s| s.spec.webhook_ref.as_ref().map(|w| w.name.clone()))
        .collect();
    hooks.sort();
    hooks.dedup();
    for hook in &hooks {
        ctx.webhooks.invalidate(webhook::fresh_key(&namespace, hook));
    }
    hooks.into_iter().map(|hook| ObjectRef::<Webhook>::new(&hook).within(&namespace)).collect()
}

/// Exports every policy's board (from its status) and sunset dates (from its spec) as the
/// version metrics, every few seconds; a deleted policy's series go with it.
async fn export_versions(store: Store<ApiVersionPolicy>, metrics: Arc<ControllerMetrics>, stop: CancellationToken) {
    use crate::telemetry::metrics::{TopicVersionLabels, VersionStateLabels};
    loop {
        let (mut board, mut sunsets) = (Vec::new(), Vec::new());
        for policy in store.state() {
            // A policy in conflict governs nothing; its board is empty.
            let Some(status) = policy.status.as_ref() else { continue };
            let (namespace, topic) = (policy.namespace().unwrap_or_default(), policy.spec.topic_ref.name.clone());
            for v in &status.versions {
                let version =
                    TopicVersionLabels { namespace: namespace.clone(), topic: topic.clone(), version: v.name.clone() };
                board.push((VersionStateLabels { version, state: v.state.as_str() }, i64::from(v.subscriptions)));
            }
            if status.versions.is_empty() {
                continue;
            }
            for v in policy.spec.versions.iter().filter(|v| v.sunset_at.is_some()) {
                let at = v.sunset_at.as_ref().map_or(0, |t| t.0.as_second());
                sunsets.push((
                    TopicVersionLabels { namespace: namespace.clone(), topic: topic.clone(), version: v.name.clone() },
                    at,
                ));
            }
        }
        metrics.set_versions(board, sunsets);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
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
    broker_changes_of(changed).flat_map(move |key| {
        let refs: Vec<_> =
            store.state().iter().filter(|o| broker_of(o) == key).map(|o| ObjectRef::from_obj(o.as_ref())).collect();
        futures::stream::iter(refs)
    })
}

/// Any broker's health change. Subscriptions live on their topic's broker, which only the
/// topic knows, so all of them are woken.
fn broker_changes(changed: tokio::sync::broadcast::Receiver<BrokerKey>) -> impl Stream<Item = ()> + Send + 'static {
    broker_changes_of(changed).map(|_| ())
}

fn broker_changes_of(
    changed: tokio::sync::broadcast::Receiver<BrokerKey>,
) -> impl Stream<Item = BrokerKey> + Send + 'static {
    tokio_stream::wrappers::BroadcastStream::new(changed).filter_map(|key| async move { key.ok() })
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

/// Returns once the store has its initial list.
async fn synced<K: Resource + Clone>(store: Store<K>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // Re-poll on a short timer: the store's readiness signal wakes only one waiter, and the
    // controller's own runner is already waiting on it.
    loop {
        if let Ok(result) = tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
            if result.is_err() {
                std::future::pending::<()>().await;
            }
            return;
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
    K: Resource<DynamicType = ()> + Reconciled + Clone + Send + Sync + 'static,
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

    fn subscription(webhook: Option<&str>, deleting: bool) -> Subscription {
        let mut sub: Subscription = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "billing", "namespace": "shop"},
            "spec": {"topicRef": {"name": "orders"}, "webhookRef": webhook.map(|w| serde_json::json!({"name": w}))}
        }))
        .expect("subscription");
        if deleting {
            sub.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        sub
    }

    #[test]
    fn a_retargeted_subscription_concerns_the_webhook_it_left_too() {
        let targets = Targets::default();
        assert_eq!(targets.seen(&subscription(Some("a"), false)), ["a"]);
        assert_eq!(targets.seen(&subscription(Some("a"), false)), ["a"], "unchanged");
        assert_eq!(targets.seen(&subscription(Some("b"), false)), ["b", "a"], "moved from a to b");
        assert_eq!(targets.seen(&subscription(None, false)), ["b"], "taken off b");
        assert!(targets.seen(&subscription(None, false)).is_empty());
        assert_eq!(targets.seen(&subscription(Some("c"), false)), ["c"]);
        assert_eq!(targets.seen(&subscription(Some("c"), true)), ["c"], "deleted");
        assert_eq!(targets.seen(&subscription(Some("d"), false)), ["d"], "c forgotten after the deletion");
    }
}
