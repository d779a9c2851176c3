//! ApiVersionPolicy: the version lifecycle of a topic's events and the JSON Patch "version
//! changes" that render a newer payload as an older version.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{LocalObjectReference, any_value_schema, conditions_schema};

/// Desired state of an ApiVersionPolicy: the versions of a topic's events, which one is
/// current, their deprecation and sunset dates, and how to render older versions.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ApiVersionPolicy",
    plural = "apiversionpolicies",
    singular = "apiversionpolicy",
    namespaced,
    status = "ApiVersionPolicyStatus",
    shortname = "avp",
    category = "sluice",
    doc = "ApiVersionPolicy declares the version lifecycle of an EventTopic's events: the current version, deprecated and sunset versions with their dates and successors, and the JSON Patch changes that turn a newer payload into each older version.",
    printcolumn(name = "Topic", type_ = "string", json_path = ".spec.topicRef.name"),
    printcolumn(name = "Current", type_ = "string", json_path = ".spec.current"),
    printcolumn(name = "Enforcement", type_ = "string", json_path = ".spec.enforcement"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.versions.exists(v, v.name == self.current)").message("spec.current must be the name of one of spec.versions"))]
#[x_kube(validation = Rule::new("self.versions.all(v, v.name != self.current || !has(v.deprecatedAt))").message("the current version cannot be deprecated: move spec.current to its successor first"))]
#[x_kube(validation = Rule::new("self.versions.all(v, !has(v.successor) || self.versions.exists(w, w.name == v.successor))").message("every successor must be the name of one of spec.versions"))]
#[serde(rename_all = "camelCase")]
pub struct ApiVersionPolicySpec {
    /// The EventTopic (same namespace) whose event versions this policy governs. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.topicRef is immutable: create a new ApiVersionPolicy for the other topic"))]
    pub topic_ref: LocalObjectReference,

    /// The version producers publish and unpinned Subscriptions receive.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::VERSION_NAME_PATTERN))]
    pub current: String,

    /// What happens after a version's sunset date to Subscriptions still pinned to it:
    /// Block (the default) stops their delivery (messages are kept); Warn keeps delivering.
    #[serde(default)]
    pub enforcement: Enforcement,

    /// Every version of the topic's events, newest first.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub versions: Vec<ApiVersion>,
}

/// What happens after a sunset date.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Enforcement {
    #[default]
    Block,
    Warn,
}

/// One version of a topic's events.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.sunsetAt) || has(self.deprecatedAt)").message("a version with sunsetAt must also have deprecatedAt"))]
#[x_kube(validation = Rule::new("!has(self.sunsetAt) || !has(self.deprecatedAt) || self.sunsetAt >= self.deprecatedAt").message("sunsetAt must not be earlier than deprecatedAt"))]
#[x_kube(validation = Rule::new("!has(self.deprecatedAt) || has(self.successor)").message("a deprecated version must name its successor"))]
#[x_kube(validation = Rule::new("!has(self.successor) || self.successor != self.name").message("a version cannot be its own successor"))]
#[serde(rename_all = "camelCase")]
pub struct ApiVersion {
    /// Version name, e.g. `v1` or `2026-06-01`; matches the `event-version` message header.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::VERSION_NAME_PATTERN))]
    pub name: String,

    /// When the version was deprecated (RFC 3339). Deliveries pinned to it then carry a
    /// `Deprecation` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<Time>,

    /// When the version stops being delivered under enforcement Block (RFC 3339, not before
    /// deprecatedAt). Announced in the `Sunset` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_at: Option<Time>,

    /// The version subscribers should move to; announced in a `Link: <...>;
    /// rel="successor-version"` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub successor: Option<String>,

    /// Where this version's migration guide lives; used as the Link header target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("documentationUrl must be an absolute http:// or https:// URL"))]
    pub documentation_url: Option<String>,

    /// How to turn a payload of the next newer version into this version. Empty for the
    /// newest version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub changes: Vec<VersionChange>,
}

/// A JSON Patch applied to payloads of some (or all) event types when rendering the
/// newer version as this one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionChange {
    /// Event types the patch applies to. Omit to apply it to every event type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub event_types: Vec<String>,

    /// What changed, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// RFC 6902 JSON Patch operations, applied in order.
    #[schemars(length(min = 1, max = 64))]
    pub patch: Vec<PatchOperation>,
}

/// One RFC 6902 JSON Patch operation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("(self.op == 'move' || self.op == 'copy') == has(self.from)").message("patch: 'from' is required for move and copy operations, and only for them"))]
#[serde(rename_all = "camelCase")]
pub struct PatchOperation {
    /// The operation: add, remove, replace, move, copy or test.
    pub op: PatchOp,

    /// JSON Pointer (RFC 6901) to the target location, e.g. `/customer/id`: empty, or
    /// segments each starting with `/`, with `~` written as `~0` and `/` inside a key as `~1`.
    #[schemars(length(max = 512), regex(pattern = JSON_POINTER_PATTERN))]
    pub path: String,

    /// JSON Pointer to the source location, for move and copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = JSON_POINTER_PATTERN))]
    pub from: Option<String>,

    /// The value, required for add, replace and test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value_schema")]
    pub value: Option<serde_json::Value>,
}

/// An RFC 6901 JSON Pointer. A schema pattern rather than a CEL rule: CEL's cost budget
/// cannot afford a regex on every operation of every change of every version.
const JSON_POINTER_PATTERN: &str = "^(/([^/~]|~[01])*)*$";

/// JSON Patch operation names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchOp {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

/// Observed state of an ApiVersionPolicy: a migration board.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiVersionPolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Each version's state and the Subscriptions pinned to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
}

/// The state of one version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// Version name.
    pub name: String,
    /// Current, Deprecated or Sunset.
    pub state: VersionState,
    /// Number of Subscriptions receiving this version.
    pub subscriptions: i32,
    /// Names of the Subscriptions still on this version when it is Deprecated or Sunset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
}

/// Lifecycle state of a version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum VersionState {
    Current,
    Supported,
    Deprecated,
    Sunset,
}
