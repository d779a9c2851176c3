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
    printcolumn(name = "Current", type_ = "string", json_path = ".spec.current", description = "The version producers publish and unpinned Subscriptions receive"),
    printcolumn(name = "Deprecated", type_ = "integer", json_path = ".status.deprecatedInUse", description = "Subscriptions on deprecated versions"),
    printcolumn(name = "Sunset", type_ = "integer", json_path = ".status.sunsetInUse", description = "Subscriptions on versions past their sunset"),
    printcolumn(name = "Enforcement", type_ = "string", json_path = ".spec.enforcement", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(super::common::NAME_RULE).message(super::common::NAME_RULE_MESSAGE),
)]
#[x_kube(validation = Rule::new("self.versions.exists(v, v.name == self.current)").message("spec.current must be the name of one of spec.versions"))]
#[x_kube(validation = Rule::new("!self.versions.exists(v, v.name == self.current) || self.versions[0].name == self.current").message("spec.current must be the newest version, the first of spec.versions: events are published in the current version and rendered only as older ones"))]
#[x_kube(validation = Rule::new("self.versions.all(v, v.name != self.current || !has(v.deprecatedAt))").message("the current version cannot be deprecated: move spec.current to its successor first"))]
#[x_kube(validation = Rule::new("self.versions.all(v, !has(v.successor) || self.versions.exists(w, w.name == v.successor))").message("every successor must be the name of one of spec.versions"))]
// Positions by a literal list of the indexes spec.versions can have (maxItems 32): CEL's
// indexOf and lists.range cost too much for the apiserver's budget or need Kubernetes 1.34.
#[x_kube(validation = Rule::new("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31].all(i, i >= size(self.versions) || !has(self.versions[i].successor) || !self.versions.exists(w, w.name == self.versions[i].successor) || [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31].exists(j, j < i && self.versions[j].name == self.versions[i].successor))").message("a successor must be newer than its version: spec.versions lists versions newest first, so a successor comes before the version that names it"))]
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

    /// Every version of the topic's events, newest first; the first is spec.current.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub versions: Vec<ApiVersion>,
}

/// What happens after a sunset date: Block stops delivery to Subscriptions still pinned
/// there (their messages wait in their queues); Warn keeps delivering and says so.
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

    /// When the version is (or was) deprecated, RFC 3339. Once this is set, deliveries pinned
    /// to the version carry `Deprecation: @<unix seconds>` (RFC 9745, which allows a date in
    /// the future) and, with sunsetAt, `Sunset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<Time>,

    /// When the version stops being delivered under enforcement Block (RFC 3339, not before
    /// deprecatedAt): Subscriptions pinned to it then stop consuming and keep their messages
    /// until they are re-pinned. Announced in the `Sunset` header (RFC 8594).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_at: Option<Time>,

    /// The newer version Subscriptions on this one should move to (listed before it); shown
    /// in the migration board and in Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::VERSION_NAME_PATTERN))]
    pub successor: Option<String>,

    /// Where this version's migration guide lives: deliveries on a deprecated version carry
    /// `Link: <documentationUrl>; rel="deprecation"`.
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
// `value` has no type, so CEL cannot see it: `sluice crdgen` adds an anyOf that requires it for
// add, replace and test (kube's schema rewriting would flatten one declared here).
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

    /// The value: required for add, replace and test, and only used by them.
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

    /// The migration board: each version's state and the Subscriptions on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,

    /// Subscriptions on versions that are deprecated (and not yet past their sunset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_in_use: Option<i32>,

    /// Subscriptions on versions past their sunset date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_in_use: Option<i32>,

    /// When the next version changes state (a deprecation or sunset date still ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<Time>,
}

/// The state of one version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// Version name.
    pub name: String,
    /// Current, Supported, Deprecated or Sunset, by the clock.
    pub state: VersionState,
    /// Number of Subscriptions receiving this version (pinned to it, or unpinned on the
    /// current version).
    pub subscriptions: i32,
    /// Names of the Subscriptions still on this version when it is Deprecated or Sunset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
}

/// Lifecycle state of a version: Current (spec.current), Supported (listed, not deprecated),
/// Deprecated (after deprecatedAt) or Sunset (after sunsetAt).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum VersionState {
    Current,
    Supported,
    Deprecated,
    Sunset,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "Current",
            Self::Supported => "Supported",
            Self::Deprecated => "Deprecated",
            Self::Sunset => "Sunset",
        }
    }
}
