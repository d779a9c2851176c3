//! Which Subscriptions a Webhook's dispatcher delivers, from which broker, and how each one's
//! events are rendered.
//!
//! - A Subscription that is Ready for its current spec (or held only by its version's sunset,
//!   which the dispatcher enforces by the clock) gets a fresh route, rendered from its topic's
//!   catalog and policy when both are Ready for their current specs.
//! - Any other Subscription keeps the route and rendering it had in the current configuration,
//!   if any: a change that is not in place yet, or is refused, never takes effect half-way.
//! - One dispatcher connects to one broker: the broker of the oldest Subscription wins, and the
//!   Subscriptions whose topics live elsewhere are left out and named in the Webhook's status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt, api::ListParams};

use super::super::{
    Context, Error,
    conditions::ready_condition,
    status::{Reconciled, ready_for_spec},
    topic_broker,
};
use crate::{
    api::{ApiVersionPolicy, EventTopic, Subscription, Webhook},
    broker::BrokerKey,
    dispatch::config::{DispatchConfig, SubscriptionRoute},
    versions::{TopicVersions, lifecycle::governing},
    workload::dispatcher as render,
};

/// The Ready reason under which a Subscription is still routed: its dispatcher holds its
/// messages back by itself from the sunset instant on.
const ROUTED_WHILE_NOT_READY: &[&str] = &["VersionSunset"];

/// What a Webhook's dispatcher delivers.
#[derive(Debug, Default)]
pub struct Delivering {
    pub subscriptions: Vec<SubscriptionRoute>,
    pub topics: BTreeMap<String, TopicVersions>,
    pub broker: BrokerKey,
    /// Subscriptions targeting the Webhook whose topics live on another broker.
    pub other_broker: Vec<String>,
}

/// Gathers the routes of the Subscriptions delivering to `webhook`.
pub async fn routes(webhook: &Webhook, ctx: &Context, namespace: &str) -> Result<Delivering, Error> {
    let name = webhook.name_any();
    let list = ListParams::default();
    let subs = Api::<Subscription>::namespaced(ctx.client.clone(), namespace)
        .list(&list)
        .await
        .map_err(Error::kube("list Subscriptions"))?;
    let topics = Api::<EventTopic>::namespaced(ctx.client.clone(), namespace)
        .list(&list)
        .await
        .map_err(Error::kube("list EventTopics"))?;
    let policies = Api::<ApiVersionPolicy>::namespaced(ctx.client.clone(), namespace)
        .list(&list)
        .await
        .map_err(Error::kube("list ApiVersionPolicies"))?;
    let current = current_config(ctx, namespace, &render::name(&name)).await?;
    let mut targeting: Vec<&Subscription> =
        subs.items.iter().filter(|s| s.spec.webhook_ref.as_ref().is_some_and(|w| w.name == name)).collect();
    targeting.sort_by_key(|s| (s.metadata.creation_timestamp.as_ref().map(|t| t.0), s.name_any()));

    let topic_of = |sub: &Subscription| topics.items.iter().find(|t| t.name_any() == sub.spec.topic_ref.name);
    let broker = targeting.iter().find_map(|s| topic_of(s)).map(topic_broker).unwrap_or_default();
    let mut out = Delivering { broker: broker.clone(), ..Delivering::default() };
    let mut kept_topics = Vec::new();
    for sub in targeting {
        let topic = topic_of(sub);
        if topic.is_some_and(|t| topic_broker(t) != broker) {
            out.other_broker.push(sub.name_any());
            continue;
        }
        let fresh = if routable(sub) { fresh(namespace, sub, topic, &policies.items)? } else { None };
        if let Some(fresh) = fresh {
            if let Some((topic, versions)) = fresh.rendering {
                out.topics.insert(topic, versions);
            }
            out.subscriptions.push(fresh.route);
            continue;
        }
        let kept = current.iter().flat_map(|c| &c.subscriptions).find(|r| r.name == sub.name_any());
        let Some(kept) = kept else { continue };
        let kept = kept.clone();
        if let Some(key) = &kept.topic
            && let Some(versions) = current.as_ref().and_then(|c| c.topics.get(key))
        {
            kept_topics.push((kept.name.clone(), key.clone(), versions.clone()));
        }
        out.subscriptions.push(kept);
    }
    // A kept route keeps the rendering it had: under its topic's name when that is what the
    // fresh routes use too, else under a name of its own, so a fresh rendering never replaces it.
    for (sub, key, versions) in kept_topics {
        let key = match out.topics.get(&key) {
            Some(fresh) if *fresh != versions => kept_key(&key, &versions),
            _ => key,
        };
        out.topics.entry(key.clone()).or_insert(versions);
        if let Some(route) = out.subscriptions.iter_mut().find(|r| r.name == sub) {
            route.topic = Some(key);
        }
    }
    out.subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The key of a kept rendering that differs from its topic's fresh one: the topic's name and a
/// digest of the rendering (`orders@3f2a…`).
fn kept_key(topic: &str, versions: &TopicVersions) -> String {
    let text = serde_json::to_string(versions).unwrap_or_default();
    let digest = crate::dispatch::config::checksum(text.as_bytes());
    let topic = topic.split('@').next().unwrap_or(topic);
    format!("{topic}@{}", &digest[..12])
}

/// Whether `sub` is in place for its current spec, so its route is built afresh.
fn routable(sub: &Subscription) -> bool {
    ready_condition(sub.conditions()).is_some_and(|c| {
        c.observed_generation == sub.metadata.generation
            && (c.status == "True" || ROUTED_WHILE_NOT_READY.contains(&c.reason.as_str()))
    })
}

/// `sub`'s route built afresh, with its topic's rendering; `None` while its topic or the
/// topic's policy is not Ready for its current spec (the route it had is kept meanwhile).
fn fresh(
    namespace: &str,
    sub: &Subscription,
    topic: Option<&EventTopic>,
    policies: &[ApiVersionPolicy],
) -> Result<Option<render::RenderedRoute>, Error> {
    let route = render::route(namespace, sub).map_err(Error::InvalidSpec)?;
    let Some(topic) = topic.filter(|t| ready_for_spec(*t)) else { return Ok(None) };
    let policy = governing(policies, &topic.name_any());
    if policy.is_some_and(|p| !ready_for_spec(p)) {
        return Ok(None);
    }
    // A pin that does not resolve leaves the Subscription not Ready; this is a race with it.
    Ok(render::rendering(route, sub, topic, policy).ok())
}

async fn current_config(ctx: &Context, namespace: &str, name: &str) -> Result<Option<DispatchConfig>, Error> {
    let map = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::kube("read the dispatcher ConfigMap"))?;
    Ok(map
        .and_then(|m| m.data)
        .and_then(|d| d.get(render::CONFIG_KEY).cloned())
        .and_then(|text| serde_json::from_str(&text).ok()))
}
