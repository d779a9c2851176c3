//! EventTopic: a durable RabbitMQ exchange, an alternate exchange that captures unroutable
//! events, and an optional catalog of the event types published to it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, SecretReference, any_object_schema, conditions_schema};

/// Desired state of an EventTopic: the exchange type, the broker it lives on, what happens on
/// deletion, and the catalog of event types published to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "EventTopic",
    plural = "eventtopics",
    singular = "eventtopic",
    namespaced,
    status = "EventTopicStatus",
    shortname = "et",
    shortname = "topic",
    category = "sluice",
    doc = "EventTopic declares a durable RabbitMQ exchange that producers publish events to, an alternate exchange with a queue that keeps events no Subscription matched, and an optional catalog of event types with a JSON Schema per version.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type", description = "RabbitMQ exchange type"),
    printcolumn(name = "Exchange", type_ = "string", json_path = ".status.exchange", description = "Name of the RabbitMQ exchange"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(super::common::NAME_RULE).message(super::common::NAME_RULE_MESSAGE),
)]
#[x_kube(validation = Rule::new("has(self.broker) == has(oldSelf.broker) && (!has(self.broker) || self.broker.secretRef.name == oldSelf.broker.secretRef.name)").message("spec.broker is immutable: the exchange lives on that broker; create a new EventTopic to use another broker"))]
#[serde(rename_all = "camelCase")]
pub struct EventTopicSpec {
    /// RabbitMQ exchange type: topic (routing-key patterns, the default), direct (exact
    /// routing keys), fanout (every Subscription gets every event) or headers (match on
    /// message headers). Immutable: RabbitMQ cannot change the type of an exchange.
    #[serde(default, rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.type is immutable: RabbitMQ cannot change an exchange's type; create a new EventTopic with the new type and move its Subscriptions"))]
    pub exchange_type: ExchangeType,

    /// The RabbitMQ broker to use. Omit it to use the operator's default broker.
    /// Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerReference>,

    /// What happens to the exchange when this EventTopic is deleted: Delete (the default)
    /// removes the exchange, the alternate exchange and its queue; Retain keeps them.
    #[serde(default = "default_deletion_policy")]
    pub deletion_policy: DeletionPolicy,

    /// Optional catalog of the event types published on this topic, each with a JSON Schema
    /// per version. A topic with a catalog takes JSON payloads only: dispatchers check each
    /// payload against its version's schema before delivery and dead-letter the ones that fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub events: Vec<EventType>,
}

fn default_deletion_policy() -> DeletionPolicy {
    DeletionPolicy::Delete
}

/// RabbitMQ exchange types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    #[default]
    Topic,
    Direct,
    Fanout,
    Headers,
}

impl ExchangeType {
    /// The name RabbitMQ uses for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Headers => "headers",
        }
    }
}

/// Which RabbitMQ broker a topic lives on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerReference {
    /// A Secret in this namespace with the broker connection: key `uri` (AMQP URI),
    /// key `managementUri` (HTTP management API base URL), and optionally `username` and
    /// `password` when the URIs carry no credentials. Not named `default`, which status uses
    /// for the operator's own broker.
    #[x_kube(validation = Rule::new("self.name != 'default'").message("spec.broker.secretRef.name: 'default' is how status names the operator's own broker; give the Secret another name, or omit spec.broker to use the operator's broker"))]
    pub secret_ref: SecretReference,
}

/// One event type of the topic's catalog.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventType {
    /// The event type, which is also the routing key producers publish with, e.g. `order.created`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"))]
    pub event_type: String,

    /// A sentence for humans describing when this event is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// The versions of this event's payload, newest first.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub versions: Vec<EventVersionSchema>,
}

/// The payload schema of one version of an event type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventVersionSchema {
    /// Version name, e.g. `v2` or `2026-06-01`; matches the `event-version` message header.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::VERSION_NAME_PATTERN))]
    pub name: String,

    /// JSON Schema (draft 2020-12 unless it names another with `$schema`) that payloads of
    /// this version must satisfy. Dispatchers check every payload of this version against it,
    /// and every payload rendered as this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object_schema")]
    pub schema: Option<serde_json::Value>,

    /// Example payloads of this version. Each must satisfy the schema; the ApiVersionPolicy
    /// controller renders each down the version chain and checks every result against the
    /// older versions' schemas (a dry run of the conversion, before any event is delivered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "examples_schema")]
    pub examples: Vec<serde_json::Value>,
}

/// A list of free-form JSON example payloads.
fn examples_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 16,
        "items": {"x-kubernetes-preserve-unknown-fields": true},
    })
}

/// Observed state of an EventTopic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTopicStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Name of the RabbitMQ exchange producers publish to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,

    /// Name of the alternate exchange that receives events no binding matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate_exchange: Option<String>,

    /// Name of the queue that keeps unroutable events for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unroutable_queue: Option<String>,

    /// The broker the topic lives on: `default`, or the name of the Secret in spec.broker
    /// (in this namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,

    /// Number of event types in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<i32>,
}
