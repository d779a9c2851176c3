//! A Subscription as the dispatcher runs it: its queues, how its events are rendered (the
//! topic's catalog and policy compiled once per configuration, the version it pinned), from
//! when its version's sunset blocks delivery, its metric labels built once, and the publish times
//! of its messages being delivered (the oldest one's age is a metric).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use bytes::Bytes;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use super::{
    config::{DispatchConfig, SubscriptionRoute},
    envelope::Envelope,
    metrics::{AttemptLabels, DispatcherMetrics, SubscriptionLabels},
};
use crate::versions::{Message, RenderError, Renderer, Target, headers::Notice, render::is_json};

/// The content type of a passed-through body whose message named none (RFC 9110 §8.3).
const UNKNOWN_CONTENT_TYPE: &str = "application/octet-stream";

/// One Subscription, ready to consume.
#[derive(Debug)]
pub struct Route {
    pub config: SubscriptionRoute,
    pub labels: SubscriptionLabels,
    /// Its metric series, looked up once rather than per delivery.
    pub metrics: RouteMetrics,
    /// How its events are rendered; none: bodies pass through untouched.
    rendering: Option<(Arc<Renderer>, Target)>,
    /// From when nothing is delivered: the pinned version's sunset, under enforcement Block.
    blocked_from: Option<SystemTime>,
    /// Why the route cannot be consumed at all (its rendering does not compile).
    pub unusable: Option<String>,
    /// Its messages being delivered (or waiting to be), for the oldest-message age.
    pub held: Held,
}

/// Publish times (unix seconds) of the messages held, as a multiset.
#[derive(Debug, Default)]
pub struct Held {
    times: Mutex<BTreeMap<u64, u32>>,
}

/// Releases its message from [`Held`] when dropped (delivery settled, or abandoned).
pub struct HeldGuard<'a> {
    held: &'a Held,
    published: u64,
}

impl Held {
    /// Records a message published at `published` as held until the guard drops.
    pub fn hold(&self, published: u64) -> HeldGuard<'_> {
        *self.times.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(published).or_default() += 1;
        HeldGuard { held: self, published }
    }

    /// Seconds since the oldest held message was published, at `now`; 0 when none is held.
    pub fn oldest_age(&self, now: u64) -> u64 {
        let times = self.times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        times.keys().next().map_or(0, |oldest| now.saturating_sub(*oldest))
    }
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        let mut times = self.held.times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = times.get_mut(&self.published) {
            *n -= 1;
            if *n == 0 {
                times.remove(&self.published);
            }
        }
    }
}

/// A Subscription's per-delivery metric series.
#[derive(Debug)]
pub struct RouteMetrics {
    pub attempt_duration: Histogram,
    pub latency: Histogram,
    /// `sluice_delivery_attempts_total` by (outcome, status class), as they first occur.
    attempts: Mutex<Vec<(&'static str, &'static str, Counter)>>,
}

impl RouteMetrics {
    fn new(metrics: &DispatcherMetrics, labels: &SubscriptionLabels) -> Self {
        Self {
            attempt_duration: metrics.attempt_duration.get_or_create(labels).clone(),
            latency: metrics.latency.get_or_create(labels).clone(),
            attempts: Mutex::default(),
        }
    }

    /// The attempts counter of `outcome` and `status_class`.
    pub fn attempts(
        &self,
        metrics: &DispatcherMetrics,
        labels: &SubscriptionLabels,
        outcome: &'static str,
        status_class: &'static str,
    ) -> Counter {
        let mut known = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, counter)) = known.iter().find(|(o, c, _)| *o == outcome && *c == status_class) {
            return counter.clone();
        }
        let labels = AttemptLabels { route: labels.clone(), outcome, status_class };
        let counter = metrics.attempts.get_or_create(&labels).clone();
        known.push((outcome, status_class, counter.clone()));
        counter
    }
}

/// What one delivery sends: the body, its content type and the version headers.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: Bytes,
    pub content_type: String,
    /// The `event-version` header.
    pub version: Option<String>,
    /// `Deprecation`, `Sunset` and `Link`, when the version is deprecated.
    pub notice: Option<Notice>,
}

/// Compiles the routes of `config`: each topic's rendering once, shared by its Subscriptions.
pub fn compile(config: &DispatchConfig, metrics: &DispatcherMetrics) -> Vec<Route> {
    let renderers: HashMap<&str, Result<Arc<Renderer>, String>> = config
        .topics
        .iter()
        .map(|(topic, versions)| {
            let compiled = Renderer::compile(versions).map(Arc::new).map_err(|e| format!("topic {topic}: {e}"));
            (topic.as_str(), compiled)
        })
        .collect();
    config
        .subscriptions
        .iter()
        .map(|route| {
            let labels = SubscriptionLabels {
                namespace: config.namespace.clone(),
                webhook: config.webhook.clone(),
                subscription: route.name.clone(),
            };
            let mut compiled = Route {
                config: route.clone(),
                metrics: RouteMetrics::new(metrics, &labels),
                labels,
                rendering: None,
                blocked_from: None,
                unusable: None,
                held: Held::default(),
            };
            let Some(topic) = &route.topic else { return compiled };
            match renderers.get(topic.as_str()) {
                Some(Ok(renderer)) => match renderer.target(route.version.as_deref()) {
                    Ok(target) => {
                        compiled.blocked_from = renderer.blocked_from(target).map(SystemTime::from);
                        compiled.rendering = Some((renderer.clone(), target));
                    }
                    Err(known) => {
                        compiled.unusable = Some(format!(
                            "version {} is not one of topic {topic}'s versions ({})",
                            route.version.as_deref().unwrap_or_default(),
                            known.join(", ")
                        ));
                    }
                },
                Some(Err(e)) => compiled.unusable = Some(e.clone()),
                None => compiled.unusable = Some(format!("topic {topic} has no rendering")),
            }
            compiled
        })
        .collect()
}

impl Route {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// From when this route delivers nothing (its version's sunset under Block).
    pub fn blocked_from(&self) -> Option<SystemTime> {
        self.blocked_from
    }

    /// Whether delivery is blocked at `now`.
    pub fn blocked(&self, now: SystemTime) -> bool {
        self.blocked_from.is_some_and(|from| now >= from)
    }

    /// What to send for a message with `envelope` and `body`.
    pub fn outgoing(&self, envelope: &Envelope, body: &Bytes) -> Result<Outgoing, RenderError> {
        let Some((compiled, target)) = &self.rendering else {
            return Ok(Outgoing {
                body: body.clone(),
                content_type: envelope.content_type.clone().unwrap_or_else(|| UNKNOWN_CONTENT_TYPE.to_owned()),
                version: envelope.version.clone(),
                notice: None,
            });
        };
        let message = Message {
            event_type: &envelope.event_type,
            version: envelope.version.as_deref(),
            content_type: envelope.content_type.as_deref(),
            body,
        };
        let rendered = compiled.render(*target, &message)?;
        let content_type = match envelope.content_type.as_deref() {
            Some(json) if is_json(json) && matches!(rendered.body, std::borrow::Cow::Borrowed(_)) => json.to_owned(),
            _ => "application/json".to_owned(),
        };
        Ok(Outgoing {
            body: match rendered.body {
                // Unchanged: the very bytes of the message, without a copy.
                std::borrow::Cow::Borrowed(_) => body.clone(),
                std::borrow::Cow::Owned(changed) => Bytes::from(changed),
            },
            content_type,
            version: rendered.version.map(str::to_owned),
            notice: rendered.notice.cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use serde_json::json;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::dispatch::config::{CircuitBreakerConfig, EgressConfig};

    fn compile(config: &DispatchConfig) -> Vec<Route> {
        super::compile(config, &DispatcherMetrics::register(&mut Registry::default()))
    }

    #[test]
    fn the_oldest_held_message_sets_the_age_until_it_is_released() {
        let held = Held::default();
        assert_eq!(held.oldest_age(1_000), 0, "nothing held");
        let newer = held.hold(990);
        let older = held.hold(900);
        let twin = held.hold(900);
        assert_eq!(held.oldest_age(1_000), 100);
        drop(older);
        assert_eq!(held.oldest_age(1_000), 100, "a second message with the same time is still held");
        drop(twin);
        assert_eq!(held.oldest_age(1_000), 10);
        drop(newer);
        assert_eq!(held.oldest_age(1_000), 0);
        // A clock behind the publisher's never yields a negative age.
        let _future = held.hold(2_000);
        assert_eq!(held.oldest_age(1_000), 0);
    }

    fn config(routes: serde_json::Value, topics: serde_json::Value) -> DispatchConfig {
        DispatchConfig {
            namespace: "shop".into(),
            webhook: "billing".into(),
            url: "https://billing.example.com/hooks".into(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 64,
            rate_limit: None,
            circuit_breaker: CircuitBreakerConfig {
                failure_ratio: 0.7,
                min_attempts: 10,
                window: Duration::from_secs(300),
                open_for: Duration::from_secs(30),
            },
            suspend: false,
            egress: EgressConfig::default(),
            subscriptions: serde_json::from_value(routes).expect("routes"),
            topics: serde_json::from_value(topics).expect("topics"),
        }
    }

    fn route(name: &str, topic: Option<&str>, version: Option<&str>) -> serde_json::Value {
        json!({"name": name, "queue": format!("q.{name}"), "retryQueues": [], "schedule": [], "deadLetterQueue": format!("q.{name}.dlq"),
               "topic": topic, "version": version})
    }

    fn orders() -> serde_json::Value {
        json!({"orders": {"policy": {"current": "v2", "enforcement": "Block", "versions": [
            {"name": "v2"},
            {"name": "v1", "deprecatedAt": "2026-06-01T00:00:00Z", "sunsetAt": "2027-01-01T00:00:00Z", "successor": "v2",
             "documentationUrl": "https://docs.example.com/v1",
             "changes": [{"patch": [{"op": "move", "from": "/customer/id", "path": "/customerId"}, {"op": "remove", "path": "/customer"}]}]}
        ]}}})
    }

    fn envelope(content_type: Option<&str>, version: Option<&str>) -> Envelope {
        Envelope {
            id: "evt-1".into(),
            attempt: 1,
            last_step: None,
            published: 0,
            event_type: "order.created".into(),
            version: version.map(str::to_owned),
            content_type: content_type.map(str::to_owned),
        }
    }

    #[test]
    fn a_topic_without_rendering_passes_bytes_and_content_type_through() {
        let routes = compile(&config(json!([route("raw", None, None)]), json!({})));
        let body = Bytes::from_static(b"\x00\x01binary");
        let out =
            routes[0].outgoing(&envelope(Some("application/octet-stream"), Some("v9")), &body).expect("passthrough");
        assert_eq!(
            (out.body, out.content_type.as_str(), out.version.as_deref()),
            (body.clone(), "application/octet-stream", Some("v9"))
        );
        let untyped = routes[0].outgoing(&envelope(None, None), &body).expect("passthrough");
        assert_eq!(untyped.content_type, "application/octet-stream", "what HTTP assumes of a body without a type");
        assert!(untyped.notice.is_none());
    }

    #[test]
    fn a_pinned_route_renders_its_version_with_the_deprecation_headers() {
        let routes = compile(&config(
            json!([route("new", Some("orders"), Some("v2")), route("old", Some("orders"), Some("v1"))]),
            orders(),
        ));
        let body = Bytes::from_static(br#"{"id":"o-1","customer":{"id":"c-1"}}"#);
        let json = envelope(Some("application/json; charset=utf-8"), None);
        let new = routes[0].outgoing(&json, &body).expect("v2");
        assert_eq!((new.body.as_ref(), new.content_type.as_str()), (body.as_ref(), "application/json; charset=utf-8"));
        assert_eq!((new.version.as_deref(), new.notice.is_none()), (Some("v2"), true));
        let old = routes[1].outgoing(&json, &body).expect("v1");
        assert_eq!(old.body.as_ref(), br#"{"customerId":"c-1","id":"o-1"}"#);
        assert_eq!((old.content_type.as_str(), old.version.as_deref()), ("application/json", Some("v1")));
        let notice = old.notice.expect("deprecated");
        assert_eq!(notice.headers().count(), 3);
        assert!(!routes[0].blocked(SystemTime::now()));
        let sunset = SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_600); // 2027-01-01
        assert_eq!(routes[1].blocked_from(), Some(sunset));
        assert!(!routes[1].blocked(sunset - Duration::from_secs(1)) && routes[1].blocked(sunset));
    }

    #[test]
    fn a_route_whose_rendering_cannot_be_used_is_marked_so() {
        let routes =
            compile(&config(json!([route("lost", Some("orders"), Some("v7")), route("ok", None, None)]), orders()));
        assert_eq!(routes[0].unusable.as_deref(), Some("version v7 is not one of topic orders's versions (v2, v1)"));
        assert!(routes[1].unusable.is_none());
    }
}
