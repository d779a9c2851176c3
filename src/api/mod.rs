//! The `sluice.dev/v1alpha1` API: one module per kind, plus the shared types.

pub mod api_version_policy;
pub mod common;
pub mod event_topic;
pub mod subscription;
pub mod webhook;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use api_version_policy::{ApiVersionPolicy, ApiVersionPolicySpec, ApiVersionPolicyStatus};
pub use common::{DeletionPolicy, GoDuration, LocalObjectReference, SecretKeySelector, SecretReference};
pub use event_topic::{EventTopic, EventTopicSpec, EventTopicStatus, ExchangeType};
pub use subscription::{Subscription, SubscriptionSpec, SubscriptionStatus};
pub use webhook::{Webhook, WebhookSpec, WebhookStatus};

/// API group of every Sluice resource.
pub const GROUP: &str = "sluice.dev";

/// Pattern of an event version name: `v2`, `v1beta1`, `2026-06-01`, `1.2.0`: letters and digits,
/// with single `.`, `_` or `-` between them (so not `1.0.0..` or `v1-`).
pub const VERSION_NAME_PATTERN: &str = r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$";

/// The CustomResourceDefinitions of every kind, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![EventTopic::crd(), Subscription::crd(), Webhook::crd(), ApiVersionPolicy::crd()]
}
