//! Webhook: an HTTP endpoint with its signing secret, timeouts, rate limit and circuit
//! breaker, delivered to by a dispatcher Deployment.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{GoDuration, SecretKeySelector, conditions_schema};

/// Desired state of a Webhook: the endpoint, how requests are signed, and the limits and
/// guards the dispatcher applies when delivering to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Webhook",
    plural = "webhooks",
    singular = "webhook",
    namespaced,
    status = "WebhookStatus",
    shortname = "wh",
    shortname = "hook",
    category = "sluice",
    doc = "Webhook declares an HTTP endpoint that receives events, signed with Standard Webhooks signatures, with timeouts, a rate limit and a circuit breaker; the operator runs a dispatcher Deployment that delivers every Subscription targeting it.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Circuit", type_ = "string", json_path = ".status.circuit"),
    printcolumn(name = "Delivered", type_ = "integer", json_path = ".status.delivered"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend", priority = 1),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(super::common::NAME_RULE).message(super::common::NAME_RULE_MESSAGE),
)]
#[x_kube(validation = Rule::new("duration(self.connectTimeout) <= duration(self.timeout)").message("spec.connectTimeout must not be longer than spec.timeout"))]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The endpoint events are POSTed to: an absolute http:// or https:// URL without
    /// credentials. Redirects are not followed.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("spec.url must be an absolute http:// or https:// URL with a host, e.g. https://billing.example.com/hooks"))]
    #[x_kube(validation = Rule::new("!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')").message("spec.url must not contain credentials (user:password@host): receivers authenticate Sluice by the webhook-signature header"))]
    pub url: String,

    /// Where the signing secret comes from. Omit it and the operator generates a `whsec_`
    /// secret into a Secret it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,

    /// Extra HTTP headers sent with every request (at most 32): names are HTTP tokens, values
    /// printable ASCII. Sluice sets Content-Type, Content-Length, Host, User-Agent, the Standard
    /// Webhooks headers (webhook-id, webhook-timestamp, webhook-signature) and the version
    /// headers (event-version, Deprecation, Sunset, Link); these cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "headers_schema")]
    #[x_kube(validation = Rule::new(r"self.all(k, k.matches('^[A-Za-z0-9!#$%&*+.^_|~-]+$'))").message("spec.headers: header names may contain only letters, digits and !#$%&*+.^_|~-"))]
    #[x_kube(validation = Rule::new("self.all(k, !(k.lowerAscii() in ['content-type', 'content-length', 'host', 'user-agent', 'webhook-id', 'webhook-timestamp', 'webhook-signature', 'event-version', 'deprecation', 'sunset', 'link']))").message("spec.headers: Content-Type, Content-Length, Host, User-Agent, webhook-id, webhook-timestamp, webhook-signature, event-version, Deprecation, Sunset and Link are set by Sluice and cannot be overridden"))]
    pub headers: BTreeMap<String, String>,

    /// Total time allowed for one attempt, from connecting to reading the response
    /// (at most 5m). Defaults to 15s.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1ms') && duration(self) <= duration('5m')").message("spec.timeout must be between 1ms and 5m"))]
    pub timeout: GoDuration,

    /// Time allowed to establish the connection (at most spec.timeout). Defaults to 5s.
    #[serde(default = "default_connect_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1ms') && duration(self) <= duration('5m')").message("spec.connectTimeout must be between 1ms and 5m"))]
    pub connect_timeout: GoDuration,

    /// Maximum number of requests in flight to this endpoint per dispatcher replica, shared by
    /// all the Subscriptions it delivers (it is also each Subscription's consumer prefetch).
    #[serde(default = "default_max_in_flight")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_in_flight: i32,

    /// Token-bucket rate limit for this endpoint, per dispatcher replica. Omit for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// When to stop sending to a failing endpoint for a while.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,

    /// Disable the Webhook after it has failed continuously for this long (messages are
    /// kept). Any change to the spec re-enables it. Defaults to 120h.
    #[serde(default = "default_auto_disable_after")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("spec.autoDisableAfter must be at least 1m"))]
    pub auto_disable_after: GoDuration,

    /// Pause delivery: messages accumulate in the queues until this is false again.
    #[serde(default)]
    pub suspend: bool,

    /// Number of dispatcher replicas (competing consumers).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 50))]
    pub replicas: i32,
}

/// At most 32 headers, each value at most 4096 characters of printable ASCII, spaces and tabs:
/// a CR or LF would let a header value inject other headers.
fn headers_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {
            "type": "string",
            "maxLength": 4096,
            "x-kubernetes-validations": [{
                "rule": "self.matches('^[\\t\\x20-\\x7e]*$')",
                "message": "spec.headers: header values may contain only printable ASCII, spaces and tabs (no CR, LF or other control characters)"
            }]
        }
    })
}

fn default_timeout() -> GoDuration {
    GoDuration::new("15s")
}
fn default_connect_timeout() -> GoDuration {
    GoDuration::new("5s")
}
fn default_max_in_flight() -> i32 {
    64
}
fn default_auto_disable_after() -> GoDuration {
    GoDuration::new("120h")
}
fn default_replicas() -> i32 {
    1
}

/// Where a Webhook's signing secret comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signing {
    /// The Secret key holding the signing secret (`whsec_` followed by base64, as Standard
    /// Webhooks defines). Changing it keeps signing with the previous secret as well for 24h.
    pub secret_ref: SecretKeySelector,
}

/// A token-bucket rate limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.burst) || self.burst >= self.perSecond").message("spec.rateLimit.burst must be at least spec.rateLimit.perSecond"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second.
    #[schemars(range(min = 1, max = 100_000))]
    pub per_second: i32,

    /// Requests allowed in a burst. Defaults to perSecond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<i32>,
}

/// Circuit breaker settings. While the circuit is open the dispatcher stops consuming and
/// messages wait in the broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Open the circuit when at least this share of attempts in the window failed (0.01-1).
    #[serde(default = "default_failure_ratio")]
    #[schemars(range(min = 0.01, max = 1.0))]
    pub failure_ratio: f64,

    /// Attempts needed in the window before the ratio is considered.
    #[serde(default = "default_min_attempts")]
    #[schemars(range(min = 1, max = 100_000))]
    pub min_attempts: i32,

    /// The sliding window the failure ratio is computed over.
    #[serde(default = "default_window")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')").message("spec.circuitBreaker.window must be between 1s and 24h"))]
    pub window: GoDuration,

    /// How long the circuit stays open before a probe request is let through.
    #[serde(default = "default_open_for")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')").message("spec.circuitBreaker.openFor must be between 1s and 24h"))]
    pub open_for: GoDuration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failure_ratio: default_failure_ratio(),
            min_attempts: default_min_attempts(),
            window: default_window(),
            open_for: default_open_for(),
        }
    }
}

fn default_failure_ratio() -> f64 {
    0.7
}
fn default_min_attempts() -> i32 {
    10
}
fn default_window() -> GoDuration {
    GoDuration::new("5m")
}
fn default_open_for() -> GoDuration {
    GoDuration::new("30s")
}

/// State of a Webhook's circuit breaker.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum CircuitState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// Observed state of a Webhook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Stalled, CircuitOpen and Disabled.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Name of the dispatcher Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,

    /// Dispatcher replicas that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Name of the Secret the signing secret is read from (generated when spec.signing is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,

    /// When a delivery last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,

    /// When a delivery attempt last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,

    /// HTTP status code of the last attempt (absent when it got no response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<i32>,

    /// Failed attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i64>,

    /// Circuit breaker state: Closed, Open or HalfOpen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<CircuitState>,

    /// Events delivered successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<i64>,

    /// Delivery attempts that failed (each retry counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,

    /// Events sent to a dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<i64>,

    /// The generation at which the Webhook was disabled (after 410 Gone or failing for
    /// spec.autoDisableAfter). Any change to the spec re-enables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_generation: Option<i64>,

    /// Subscriptions targeting this Webhook that it does not deliver, because their topics live
    /// on another broker than its dispatcher's (the broker of its oldest Subscription): one
    /// dispatcher connects to one broker. Point them at a Webhook of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broker_conflicts: Vec<String>,

    /// Counts of dispatcher pods that no longer exist, kept so the totals never go back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<DeliveryCounts>,

    /// What each dispatcher pod reports about its deliveries, written by that pod (the
    /// summary fields above are computed from these by the operator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pod"]))]
    pub dispatchers: Vec<DispatcherReport>,
}

/// Delivery counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounts {
    /// Events delivered successfully.
    #[serde(default)]
    pub delivered: i64,
    /// Delivery attempts that failed.
    #[serde(default)]
    pub failed: i64,
    /// Events sent to a dead-letter queue.
    #[serde(default)]
    pub dead_lettered: i64,
}

/// One dispatcher pod's report on its deliveries since the pod started.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatcherReport {
    /// The pod's name.
    pub pod: String,

    /// Events this pod delivered.
    #[serde(default)]
    pub delivered: i64,

    /// Attempts of this pod that failed.
    #[serde(default)]
    pub failed: i64,

    /// Events this pod sent to a dead-letter queue.
    #[serde(default)]
    pub dead_lettered: i64,

    /// When a delivery from this pod last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,

    /// When an attempt from this pod last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,

    /// HTTP status code of this pod's last attempt (absent when it got no response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<i32>,

    /// Failed attempts since this pod's last success.
    #[serde(default)]
    pub consecutive_failures: i64,

    /// Since when every attempt of this pod has failed (absent after a success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,

    /// This pod's circuit breaker state.
    #[serde(default)]
    pub circuit: CircuitState,

    /// The endpoint answered 410 Gone to this pod.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,

    /// Checksum of the dispatch configuration this pod runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
}
