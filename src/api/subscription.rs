//! Subscription: a durable quorum queue bound to a topic's exchange, its retry ladder, its
//! dead-letter queue, and the Webhook that receives its events.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, GoDuration, LocalObjectReference, conditions_schema};

/// Desired state of a Subscription: which topic's events it receives (and which of them),
/// where they are delivered, how failures are retried, and the queue's limits.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Subscription",
    plural = "subscriptions",
    singular = "subscription",
    namespaced,
    status = "SubscriptionStatus",
    shortname = "esub",
    category = "sluice",
    doc = "Subscription declares a durable quorum queue bound to an EventTopic's exchange by routing-key patterns or header matches, a retry queue per backoff step, a dead-letter queue, and the Webhook its events are delivered to.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".spec.topicRef.name"),
    printcolumn(name = "Webhook", type_ = "string", json_path = ".spec.webhookRef.name"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version.name", description = "The event version deliveries are rendered in"),
    printcolumn(name = "Messages", type_ = "integer", json_path = ".status.messages.ready", description = "Messages ready in the work queue"),
    printcolumn(name = "DLQ", type_ = "integer", json_path = ".status.messages.deadLettered", description = "Messages in the dead-letter queue"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(super::common::NAME_RULE).message(super::common::NAME_RULE_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// The EventTopic (same namespace) whose events this Subscription receives. Immutable:
    /// the queue lives on that topic's broker.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.topicRef is immutable: the queue lives on that topic's broker; create a new Subscription for the other topic and delete this one once its queue has drained"))]
    pub topic_ref: LocalObjectReference,

    /// Which of the topic's events to receive. Omit it to receive every event of a topic,
    /// fanout or headers topic; a direct topic delivers by exact routing key, so it needs
    /// routingKeys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<SubscriptionFilter>,

    /// The Webhook (same namespace) that receives this Subscription's events. Omit it to
    /// consume the queue with your own AMQP consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_ref: Option<LocalObjectReference>,

    /// The event version deliveries are rendered in: one of the versions of the topic's
    /// ApiVersionPolicy. Defaults to the policy's current version. Changing it re-renders the
    /// messages still waiting in the queue too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::VERSION_NAME_PATTERN))]
    pub event_version: Option<String>,

    /// Unordered (the default) delivers concurrently with competing consumers. Ordered
    /// delivers one message at a time through a single active consumer, retrying in place so
    /// the head of the queue blocks. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.ordering is immutable: ordered delivery needs a single-active-consumer queue, which RabbitMQ cannot switch on an existing queue; create a new Subscription"))]
    pub ordering: Ordering,

    /// How failed deliveries are retried.
    #[serde(default)]
    pub retry: RetryPolicy,

    /// Limits of the work queue. Every field can be changed on a live queue without losing
    /// messages (they are applied as RabbitMQ policies, not queue arguments).
    #[serde(default)]
    pub queue: QueueLimits,

    /// Limits of the dead-letter queue, changeable live like spec.queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterLimits>,

    /// What happens to the queues when this Subscription is deleted: Retain (the default)
    /// keeps them and their messages; Delete removes the work, retry and dead-letter queues.
    #[serde(default = "default_deletion_policy")]
    pub deletion_policy: DeletionPolicy,
}

fn default_deletion_policy() -> DeletionPolicy {
    DeletionPolicy::Retain
}

/// Which events of the topic a Subscription receives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.routingKeys) != has(self.headers)").message("spec.filter: set either routingKeys (topic and direct topics) or headers (headers topics), not both; omit spec.filter to receive every event of a topic, fanout or headers topic"))]
#[x_kube(validation = Rule::new("!has(self.match) || has(self.headers)").message("spec.filter.match applies to header matches only: remove it or add spec.filter.headers"))]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionFilter {
    /// Routing keys to receive: patterns on topic topics, e.g. `order.*` or `order.#`, where
    /// a word `*` matches exactly one word and `#` zero or more; exact event types on direct
    /// topics (a direct exchange does not expand `*` or `#`, so the operator refuses them there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(r"self.all(k, k.matches('^([A-Za-z0-9_-]+|[*]|#)([.]([A-Za-z0-9_-]+|[*]|#))*$'))").message("each routing key is dot-separated words of letters, digits, '_' or '-', where a whole word may be '*' (exactly one word) or '#' (zero or more words), at most 255 characters"))]
    pub routing_keys: Vec<String>,

    /// Header values to match for headers topics, e.g. `{region: eu}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(min = 1, max = 32), inner(length(max = 255)))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('x-'))").message("spec.filter.headers: names starting with 'x-' are ignored by RabbitMQ's headers exchange; choose another header name"))]
    pub headers: BTreeMap<String, String>,

    /// With headers: All (the default) needs every header to match, Any needs one.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<HeaderMatch>,
}

/// How header matches combine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum HeaderMatch {
    #[default]
    All,
    Any,
}

/// Delivery ordering of a Subscription.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Ordering {
    #[default]
    Unordered,
    Ordered,
}

/// How failed deliveries are retried.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// The wait before each retry, one entry per retry (a retry queue per step). After the
    /// last step a failing message goes to the dead-letter queue. An empty schedule sends
    /// failures straight to the dead-letter queue. Each step is between 1ms and 720h, and no
    /// shorter than the one before it.
    #[serde(default = "default_schedule")]
    #[schemars(length(max = MAX_RETRY_STEPS))]
    #[x_kube(validation = Rule::new("self.all(d, duration(d) >= duration('1ms') && duration(d) <= duration('720h'))").message("spec.retry.schedule: every step must be between 1ms and 720h"))]
    #[x_kube(validation = Rule::new("self.map(d, duration(d)).isSorted()").message("spec.retry.schedule: each step must be at least as long as the one before it, e.g. [5s, 1m, 10m]"))]
    pub schedule: Vec<GoDuration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { schedule: default_schedule() }
    }
}

/// The longest retry schedule the schema accepts (`maxItems` of spec.retry.schedule).
pub const MAX_RETRY_STEPS: usize = 25;

/// The default retry ladder: 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h.
pub fn default_schedule() -> Vec<GoDuration> {
    ["5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"].into_iter().map(GoDuration::new).collect()
}

/// Limits of a Subscription's work queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueLimits {
    /// Maximum number of messages in the work queue; see overflow for what happens beyond it.
    /// Lowering it below what the queue holds applies at once: with DropHead the oldest
    /// messages beyond it are dead-lettered, with RejectPublish new ones are refused until
    /// the queue is under it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_length: Option<i64>,

    /// Maximum total size of the message bodies in the work queue, in bytes; lowering it
    /// below what the queue holds takes effect at once, like maxLength.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_length_bytes: Option<i64>,

    /// How long a message may wait in the work queue before it is dead-lettered, e.g. `168h`.
    /// Shortening it dead-letters at once every waiting message already older than the new TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.queue.messageTtl must be at least 1s"))]
    pub message_ttl: Option<GoDuration>,

    /// How many times a message may be handed to a dispatcher that then crashes or rejects
    /// it, before RabbitMQ dead-letters it as poison. Defaults to 20.
    #[serde(default = "default_delivery_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub delivery_limit: i32,

    /// What happens when maxLength or maxLengthBytes is reached: RejectPublish (the default)
    /// refuses new messages, so publishers with confirms see a nack and nothing is dropped;
    /// DropHead dead-letters the oldest message to the dead-letter queue instead (RabbitMQ
    /// then dead-letters at-most-once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
}

fn default_delivery_limit() -> i32 {
    20
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_length: None,
            max_length_bytes: None,
            message_ttl: None,
            delivery_limit: default_delivery_limit(),
            overflow: None,
        }
    }
}

/// Queue overflow behaviour.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Overflow {
    DropHead,
    RejectPublish,
}

/// Limits of a Subscription's dead-letter queue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterLimits {
    /// Maximum number of messages kept in the dead-letter queue: beyond it the oldest are
    /// dropped, for good. Lowering it below what the queue holds drops the excess at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_length: Option<i64>,

    /// How long a dead-lettered message is kept, e.g. `336h`; older ones are dropped for good,
    /// including, at once, those already older when it is shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.deadLetter.messageTtl must be at least 1s"))]
    pub message_ttl: Option<GoDuration>,
}

/// Observed state of a Subscription.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Name of the work queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,

    /// The exchange the work queue is bound to (the topic's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,

    /// The broker the queues live on, the topic's: `default`, or the name of the topic's
    /// broker Secret (in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,

    /// Name of the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue: Option<String>,

    /// Names of the retry queues, one per step of spec.retry.schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_queues: Vec<String>,

    /// The bindings applied on the topic's exchange: routing keys, `x-match=...` header
    /// matches, or `(every event)` on a fanout topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<String>,

    /// Message counts from the broker's statistics (a few seconds behind), refreshed on every
    /// reconcile and resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageCounts>,

    /// The last dead-letter redrive handled (annotation sluice.dev/redrive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<RedriveStatus>,

    /// The event version deliveries are rendered in (spec.eventVersion, or the policy's
    /// current one) and its state; absent when the topic has no ApiVersionPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ResolvedVersion>,
}

/// The event version a Subscription receives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedVersion {
    /// The version name.
    pub name: String,
    /// Its state by the clock: Current, Supported, Deprecated or Sunset.
    pub state: super::api_version_policy::VersionState,
    /// Its sunset date, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_at: Option<Time>,
}

/// Message counts of a Subscription's queues.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageCounts {
    /// Messages waiting in the work queue.
    pub ready: i64,
    /// Messages handed to a dispatcher and not yet acknowledged.
    pub unacknowledged: i64,
    /// Messages waiting in retry queues.
    #[serde(default)]
    pub retrying: i64,
    /// Messages in the dead-letter queue.
    pub dead_lettered: i64,
}

/// The last dead-letter redrive handled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedriveStatus {
    /// The value of the sluice.dev/redrive annotation that was handled.
    pub value: String,
    /// How many messages were moved back to the work queue.
    pub moved: i64,
    /// When the redrive finished.
    pub time: Time,
}
