//! The desired topology of a Subscription: a quorum work queue bound to its topic's exchange,
//! one retry queue per step of the ladder (each dead-lettering back to the work queue when
//! its TTL expires), a dead-letter queue, and the policies carrying the queue's limits.
//!
//! What RabbitMQ cannot change and Sluice never needs to change is a queue argument: the
//! queue type, where a queue dead-letters to (fixed by the naming scheme), single active
//! consumer, and each retry step's TTL (a changed step is drained and re-created). What users
//! tune over time (length, TTL, delivery limit, overflow) is a policy, so it changes live.
//! RabbitMQ 3.10 re-matches every queue against every policy on each policy change, so
//! subscriptions with the default limits share one policy; only those that set their own
//! get a policy of their own.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Map, Value};

use super::{Arguments, Binding, Queue, names};
use crate::api::{
    ExchangeType,
    subscription::{DeadLetterLimits, HeaderMatch, Ordering, Overflow, QueueLimits, SubscriptionSpec},
};

/// Priority of the shared policies (work queues with default limits; dead-letter and
/// unroutable queues).
pub const DEFAULT_POLICY_PRIORITY: i64 = 100;
/// The delivery limit of queues that have nowhere to dead-letter to (dead-letter and
/// unroutable queues). RabbitMQ 4 gives every quorum queue a default limit of 20 and drops a
/// message past it when no dead-letter target is set, so a DLQ whose readers crashed 20
/// times would lose the message for good. 3.10 refuses 4's `-1` ("no limit"); both accept
/// this, the largest value the limit takes.
pub const UNLIMITED_DELIVERIES: i64 = 2_147_483_647;
/// Priority of a subscription's own policies; above the shared one, so they replace it.
pub const OWN_POLICY_PRIORITY: i64 = 110;

/// An operator-owned RabbitMQ policy applying to queues.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub pattern: String,
    pub priority: i64,
    pub definition: Map<String, Value>,
}

/// The topic a Subscription binds to, as far as the topology cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicBinding {
    pub exchange: String,
    pub kind: ExchangeType,
}

/// Everything one Subscription owns on the broker.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionTopology {
    pub work_queue: Queue,
    /// Step `i + 1` of the ladder is `retry_queues[i]`.
    pub retry_queues: Vec<Queue>,
    pub dead_letter_queue: Queue,
    /// Bindings from the topic's exchange to the work queue.
    pub bindings: Vec<Binding>,
    /// The subscription's own policies: for the work queue when its limits differ from the
    /// defaults, for the dead-letter queue when it has limits.
    pub policies: Vec<Policy>,
    /// Names of policies this subscription could own but does not need right now.
    pub unused_policies: Vec<String>,
}

/// Why the filter does not fit the topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("topic {topic} is a {kind} exchange, which ignores routing keys: remove spec.filter.routingKeys{hint}")]
    RoutingKeysNotApplicable { topic: String, kind: &'static str, hint: &'static str },
    #[error("topic {topic} is a {kind} exchange, which does not match headers: use spec.filter.routingKeys instead")]
    HeadersNotApplicable { topic: String, kind: &'static str },
    #[error(
        "topic {topic} is a direct exchange, which delivers by exact routing key: list the event types in spec.filter.routingKeys"
    )]
    RoutingKeysRequired { topic: String },
    #[error(
        "topic {topic} is a direct exchange, which matches routing keys exactly and does not expand * or #: list the event types in spec.filter.routingKeys ({key:?} would match nothing), or use a topic of type topic"
    )]
    WildcardOnDirect { topic: String, key: String },
    #[error("spec.retry.schedule[{step}] is not a valid duration")]
    InvalidStep { step: usize },
    #[error("spec.{field} is not a valid duration")]
    InvalidDuration { field: &'static str },
}

/// Builds the desired topology of Subscription `name` in `namespace`.
pub fn desired(
    namespace: &str,
    name: &str,
    spec: &SubscriptionSpec,
    topic: &TopicBinding,
) -> Result<SubscriptionTopology, FilterError> {
    let work = names::work_queue(namespace, name);
    let dlq = names::dead_letter_queue(namespace, name);

    let mut work_args = super::quorum_queue_arguments();
    work_args.insert("x-dead-letter-exchange".into(), Value::from(""));
    work_args.insert("x-dead-letter-routing-key".into(), Value::from(dlq.clone()));
    // Dead-letter (to the DLQ) only once the DLQ has the message: no loss on the way.
    work_args.insert("x-dead-letter-strategy".into(), Value::from("at-least-once"));
    if spec.ordering == Ordering::Ordered {
        work_args.insert("x-single-active-consumer".into(), Value::from(true));
    }

    let retry_queues = spec
        .retry
        .schedule
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let ttl = step.duration().map_err(|_| FilterError::InvalidStep { step: i })?;
            Ok(retry_queue(namespace, name, i + 1, ttl, &work))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut policies = Vec::new();
    let mut unused_policies = Vec::new();
    match work_queue_policy(&work, &spec.queue)? {
        Some(p) => policies.push(p),
        None => unused_policies.push(work.clone()),
    }
    match dead_letter_policy(&dlq, spec.dead_letter.as_ref())? {
        Some(p) => policies.push(p),
        None => unused_policies.push(dlq.clone()),
    }

    Ok(SubscriptionTopology {
        bindings: bindings(spec, topic, &work)?,
        work_queue: Queue { name: work, arguments: work_args },
        retry_queues,
        dead_letter_queue: Queue { name: dlq, arguments: super::quorum_queue_arguments() },
        policies,
        unused_policies,
    })
}

/// Step `step` (1-based) of the ladder: waits `ttl`, then dead-letters back to the work queue.
fn retry_queue(namespace: &str, name: &str, step: usize, ttl: Duration, work: &str) -> Queue {
    let mut args = super::quorum_queue_arguments();
    args.insert("x-message-ttl".into(), Value::from(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
    args.insert("x-dead-letter-exchange".into(), Value::from(""));
    args.insert("x-dead-letter-routing-key".into(), Value::from(work));
    // At-least-once dead-lettering needs reject-publish overflow.
    args.insert("x-dead-letter-strategy".into(), Value::from("at-least-once"));
    args.insert("x-overflow".into(), Value::from("reject-publish"));
    Queue { name: names::retry_queue(namespace, name, step), arguments: args }
}

fn bindings(spec: &SubscriptionSpec, topic: &TopicBinding, work: &str) -> Result<Vec<Binding>, FilterError> {
    let filter = spec.filter.as_ref();
    let keys = filter.map(|f| f.routing_keys.as_slice()).unwrap_or_default();
    let headers = filter.map(|f| &f.headers).filter(|h| !h.is_empty());
    let topic_name = topic.exchange.clone();
    let binding = |routing_key: &str, arguments: BTreeMap<String, String>| Binding {
        source: topic.exchange.clone(),
        queue: work.to_owned(),
        routing_key: routing_key.to_owned(),
        arguments,
    };
    match topic.kind {
        ExchangeType::Topic | ExchangeType::Direct => {
            if headers.is_some() {
                return Err(FilterError::HeadersNotApplicable { topic: topic_name, kind: topic.kind.as_str() });
            }
            if keys.is_empty() {
                return match topic.kind {
                    ExchangeType::Direct => Err(FilterError::RoutingKeysRequired { topic: topic_name }),
                    _ => Ok(vec![binding("#", BTreeMap::new())]),
                };
            }
            if topic.kind == ExchangeType::Direct
                && let Some(key) = keys.iter().find(|k| k.split('.').any(|word| word == "*" || word == "#"))
            {
                return Err(FilterError::WildcardOnDirect { topic: topic_name, key: key.clone() });
            }
            let mut keys = keys.to_vec();
            keys.sort();
            keys.dedup();
            Ok(keys.iter().map(|k| binding(k, BTreeMap::new())).collect())
        }
        ExchangeType::Fanout => {
            if !keys.is_empty() || headers.is_some() {
                let kind = topic.kind.as_str();
                return Err(FilterError::RoutingKeysNotApplicable { topic: topic_name, kind, hint: " and headers" });
            }
            Ok(vec![binding("", BTreeMap::new())])
        }
        ExchangeType::Headers => {
            if !keys.is_empty() {
                let kind = topic.kind.as_str();
                return Err(FilterError::RoutingKeysNotApplicable {
                    topic: topic_name,
                    kind,
                    hint: "; match with spec.filter.headers",
                });
            }
            let mode = match filter.and_then(|f| f.match_).unwrap_or_default() {
                HeaderMatch::All => "all",
                HeaderMatch::Any => "any",
            };
            let mut args: BTreeMap<String, String> = headers.cloned().unwrap_or_default();
            args.insert("x-match".into(), mode.into());
            Ok(vec![binding("", args)])
        }
    }
}

/// The policy every work queue with default limits gets. Its pattern matches names with
/// exactly two dots, `sluice.<namespace>.<subscription>`: namespaces and Subscription names
/// are DNS labels, so retry, dead-letter and unroutable queues never match.
pub fn default_work_queue_policy() -> Policy {
    Policy {
        name: "sluice.work-queue-defaults".into(),
        pattern: r"^sluice\.[a-z0-9-]+\.[a-z0-9-]+$".into(),
        priority: DEFAULT_POLICY_PRIORITY,
        definition: limits_definition(&QueueLimits::default()).unwrap_or_default(),
    }
}

/// The policy every dead-letter and unroutable queue gets: no delivery limit (see
/// [`UNLIMITED_DELIVERIES`]). Its pattern matches only names ending in `.dlq` or
/// `.unroutable` after exactly two DNS labels, so no work or retry queue matches it.
pub fn default_dead_letter_policy() -> Policy {
    let mut definition = Map::new();
    definition.insert("delivery-limit".into(), Value::from(UNLIMITED_DELIVERIES));
    Policy {
        name: "sluice.dead-letter-defaults".into(),
        pattern: r"^sluice\.[a-z0-9-]+\.[a-z0-9-]+\.(dlq|unroutable)$".into(),
        priority: DEFAULT_POLICY_PRIORITY,
        definition,
    }
}

/// The policies every broker Sluice uses holds, whatever its resources.
pub fn shared_policies() -> [Policy; 2] {
    [default_work_queue_policy(), default_dead_letter_policy()]
}

fn work_queue_policy(work: &str, limits: &QueueLimits) -> Result<Option<Policy>, FilterError> {
    let definition = limits_definition(limits)?;
    if definition == default_work_queue_policy().definition {
        return Ok(None);
    }
    Ok(Some(exact_policy(work, definition)))
}

fn limits_definition(limits: &QueueLimits) -> Result<Map<String, Value>, FilterError> {
    let mut d = Map::new();
    d.insert("delivery-limit".into(), Value::from(limits.delivery_limit));
    // Reject-publish keeps dead-lettering at-least-once; drop-head falls back to at-most-once.
    let overflow = match limits.overflow.unwrap_or(Overflow::RejectPublish) {
        Overflow::RejectPublish => "reject-publish",
        Overflow::DropHead => "drop-head",
    };
    d.insert("overflow".into(), Value::from(overflow));
    if let Some(n) = limits.max_length {
        d.insert("max-length".into(), Value::from(n));
    }
    if let Some(n) = limits.max_length_bytes {
        d.insert("max-length-bytes".into(), Value::from(n));
    }
    if let Some(ttl) = &limits.message_ttl {
        let ttl = ttl.duration().map_err(|_| FilterError::InvalidDuration { field: "queue.messageTtl" })?;
        d.insert("message-ttl".into(), Value::from(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
    }
    Ok(d)
}

fn dead_letter_policy(dlq: &str, limits: Option<&DeadLetterLimits>) -> Result<Option<Policy>, FilterError> {
    let Some(limits) = limits.filter(|l| l.max_length.is_some() || l.message_ttl.is_some()) else {
        return Ok(None);
    };
    // A queue takes one policy only, so this one replaces the shared one and keeps its limit.
    let mut d = default_dead_letter_policy().definition;
    if let Some(n) = limits.max_length {
        d.insert("max-length".into(), Value::from(n));
    }
    if let Some(ttl) = &limits.message_ttl {
        let ttl = ttl.duration().map_err(|_| FilterError::InvalidDuration { field: "deadLetter.messageTtl" })?;
        d.insert("message-ttl".into(), Value::from(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
    }
    Ok(Some(exact_policy(dlq, d)))
}

/// A policy named after, and matching exactly, one queue.
fn exact_policy(queue: &str, definition: Map<String, Value>) -> Policy {
    Policy {
        name: queue.to_owned(),
        pattern: format!("^{}$", queue.replace('.', r"\.")),
        priority: OWN_POLICY_PRIORITY,
        definition,
    }
}

/// The step number of a retry queue name of this subscription, if it is one.
pub fn retry_step(namespace: &str, name: &str, queue: &str) -> Option<usize> {
    let prefix = format!("{}.retry.", names::work_queue(namespace, name));
    queue.strip_prefix(&prefix)?.parse().ok()
}

/// Whether `have` (a queue's arguments on the broker) is what `want` declares.
pub fn same_arguments(want: &Arguments, have: &Arguments) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

#[cfg(test)]
#[allow(clippy::needless_pass_by_value)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::subscription::SubscriptionSpec;

    fn spec(value: serde_json::Value) -> SubscriptionSpec {
        let mut base = json!({"topicRef": {"name": "orders"}});
        base.as_object_mut().unwrap().extend(value.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())));
        serde_json::from_value(base).unwrap()
    }

    fn topic(kind: ExchangeType) -> TopicBinding {
        TopicBinding { exchange: "sluice.shop.orders".into(), kind }
    }

    #[test]
    fn the_default_subscription_gets_the_documented_names_and_ladder() {
        let t = desired("shop", "billing", &spec(json!({})), &topic(ExchangeType::Topic)).unwrap();
        assert_eq!(t.work_queue.name, "sluice.shop.billing");
        assert_eq!(t.dead_letter_queue.name, "sluice.shop.billing.dlq");
        assert_eq!(t.work_queue.arguments["x-queue-type"], "quorum");
        assert_eq!(t.work_queue.arguments["x-dead-letter-exchange"], "");
        assert_eq!(t.work_queue.arguments["x-dead-letter-routing-key"], "sluice.shop.billing.dlq");
        assert!(!t.work_queue.arguments.contains_key("x-single-active-consumer"));
        let ttls: Vec<u64> = t.retry_queues.iter().map(|q| q.arguments["x-message-ttl"].as_u64().unwrap()).collect();
        assert_eq!(
            ttls,
            [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000, 86_400_000]
        );
        assert_eq!(t.retry_queues[0].name, "sluice.shop.billing.retry.1");
        assert_eq!(t.retry_queues[8].name, "sluice.shop.billing.retry.9");
        for q in &t.retry_queues {
            assert_eq!(q.arguments["x-dead-letter-routing-key"], "sluice.shop.billing");
            assert_eq!(q.arguments["x-dead-letter-strategy"], "at-least-once");
        }
        // Default limits: no policy of its own, the shared one applies.
        assert!(t.policies.is_empty());
        assert_eq!(t.unused_policies, ["sluice.shop.billing", "sluice.shop.billing.dlq"]);
        assert_eq!(t.bindings.len(), 1);
        assert_eq!(t.bindings[0].routing_key, "#");
    }

    #[test]
    fn routing_keys_become_one_binding_each() {
        let s = spec(json!({"filter": {"routingKeys": ["order.*", "order.cancelled", "order.*"]}}));
        let t = desired("shop", "billing", &s, &topic(ExchangeType::Topic)).unwrap();
        let keys: Vec<_> = t.bindings.iter().map(|b| b.routing_key.as_str()).collect();
        assert_eq!(keys, ["order.*", "order.cancelled"]);
        assert!(t.bindings.iter().all(|b| b.source == "sluice.shop.orders" && b.queue == "sluice.shop.billing"));
    }

    #[test]
    fn a_headers_topic_binds_with_x_match() {
        let s = spec(json!({"filter": {"headers": {"region": "eu"}, "match": "Any"}}));
        let t = desired("shop", "eu", &s, &topic(ExchangeType::Headers)).unwrap();
        assert_eq!(
            t.bindings[0].arguments,
            BTreeMap::from([("region".into(), "eu".into()), ("x-match".into(), "any".into())])
        );
        let everything = desired("shop", "all", &spec(json!({})), &topic(ExchangeType::Headers)).unwrap();
        assert_eq!(everything.bindings[0].arguments, BTreeMap::from([("x-match".into(), "all".into())]));
    }

    #[test]
    fn filters_that_do_not_fit_the_topic_say_what_to_change() {
        let keys = spec(json!({"filter": {"routingKeys": ["a"]}}));
        let err = desired("shop", "x", &keys, &topic(ExchangeType::Fanout)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topic sluice.shop.orders is a fanout exchange, which ignores routing keys: remove spec.filter.routingKeys and headers"
        );
        let headers = spec(json!({"filter": {"headers": {"a": "b"}}}));
        assert!(matches!(
            desired("shop", "x", &headers, &topic(ExchangeType::Topic)),
            Err(FilterError::HeadersNotApplicable { .. })
        ));
        assert!(matches!(
            desired("shop", "x", &spec(json!({})), &topic(ExchangeType::Direct)),
            Err(FilterError::RoutingKeysRequired { .. })
        ));
        let wildcard = spec(json!({"filter": {"routingKeys": ["order.created", "order.*"]}}));
        let err = desired("shop", "x", &wildcard, &topic(ExchangeType::Direct)).unwrap_err();
        assert_eq!(err, FilterError::WildcardOnDirect { topic: "sluice.shop.orders".into(), key: "order.*".into() });
        let exact = spec(json!({"filter": {"routingKeys": ["order.created", "order.paid"]}}));
        assert_eq!(desired("shop", "x", &exact, &topic(ExchangeType::Direct)).expect("exact keys").bindings.len(), 2);
    }

    #[test]
    fn custom_limits_get_an_exact_policy_and_ordered_gets_a_single_active_consumer() {
        let s = spec(json!({
            "ordering": "Ordered",
            "queue": {"maxLength": 1000, "messageTtl": "168h", "deliveryLimit": 5, "overflow": "DropHead"},
            "deadLetter": {"maxLength": 50}
        }));
        let t = desired("shop", "billing", &s, &topic(ExchangeType::Topic)).unwrap();
        assert_eq!(t.work_queue.arguments["x-single-active-consumer"], true);
        assert_eq!(t.policies.len(), 2);
        let work = &t.policies[0];
        assert_eq!(
            (work.name.as_str(), work.pattern.as_str(), work.priority),
            ("sluice.shop.billing", r"^sluice\.shop\.billing$", 110)
        );
        assert_eq!(
            Value::Object(work.definition.clone()),
            json!({"delivery-limit": 5, "max-length": 1000, "message-ttl": 604_800_000u64, "overflow": "drop-head"})
        );
        assert_eq!(
            Value::Object(t.policies[1].definition.clone()),
            json!({"delivery-limit": UNLIMITED_DELIVERIES, "max-length": 50})
        );
        assert!(t.unused_policies.is_empty());
    }

    #[test]
    fn the_shared_policy_matches_work_queues_only() {
        let p = default_work_queue_policy();
        assert_eq!(Value::Object(p.definition), json!({"delivery-limit": 20, "overflow": "reject-publish"}));
        let re = regex::Regex::new(&p.pattern).unwrap();
        assert!(re.is_match("sluice.shop.billing"));
        assert!(!re.is_match("sluice.shop.billing.dlq"));
        assert!(!re.is_match("sluice.shop.billing.retry.1"));
        assert!(!re.is_match("sluice.shop.orders.unroutable"));
        let own = exact_policy("sluice.shop.billing", Map::new());
        let own = regex::Regex::new(&own.pattern).unwrap();
        assert!(own.is_match("sluice.shop.billing") && !own.is_match("sluice.shop.billingx"));
    }

    #[test]
    fn dead_letter_and_unroutable_queues_share_a_policy_without_a_delivery_limit() {
        let p = default_dead_letter_policy();
        assert_eq!(Value::Object(p.definition.clone()), json!({"delivery-limit": 2_147_483_647}));
        let re = regex::Regex::new(&p.pattern).unwrap();
        assert!(re.is_match("sluice.shop.billing.dlq"));
        assert!(re.is_match("sluice.shop.orders.unroutable"));
        assert!(!re.is_match("sluice.shop.billing"));
        assert!(!re.is_match("sluice.shop.billing.retry.1"));
        assert!(!re.is_match("sluice.shop.billing.dlq.x"));
        let names: Vec<String> = shared_policies().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["sluice.work-queue-defaults", "sluice.dead-letter-defaults"]);
    }

    #[test]
    fn retry_steps_are_recognised_by_name() {
        assert_eq!(retry_step("shop", "billing", "sluice.shop.billing.retry.12"), Some(12));
        assert_eq!(retry_step("shop", "billing", "sluice.shop.billing.dlq"), None);
        assert_eq!(retry_step("shop", "billing", "sluice.shop.billing-2.retry.1"), None);
    }
}
