//! Types shared by the four resources: references, deletion policy, durations and the
//! schema helpers that make conditions and free-form JSON structural.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Pattern of a Go/Kubernetes duration string without sign, e.g. `90s`, `5m`, `1h30m`, `250ms`.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// Pattern of a DNS-1123 label: the object names Sluice builds RabbitMQ names from.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A rule for the root of every kind whose name becomes part of a RabbitMQ name.
pub const NAME_RULE: &str =
    "size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
/// The message of [`NAME_RULE`].
pub const NAME_RULE_MESSAGE: &str = "metadata.name must be a DNS label (at most 63 lowercase letters, digits and '-', no dots): Sluice builds RabbitMQ names as sluice.<namespace>.<name>, where a dot would be ambiguous";

/// What happens to the broker objects when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    // Remove the broker objects together with the resource.
    Delete,
    // Keep the broker objects (and any messages) after the resource is gone.
    Retain,
}

/// A reference to another Sluice resource in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret that holds the value.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "secret".to_owned()
}

// === GoDuration ===

/// A duration written the way Go and Kubernetes write them (`90s`, `5m`, `168h`, `1h30m`).
///
/// The text is kept as written so the object round-trips unchanged; [`GoDuration::duration`]
/// parses it. The schema pattern rejects anything that does not parse at admission.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct GoDuration(String);

impl GoDuration {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed duration. Fails only for objects that bypassed admission validation.
    pub fn duration(&self) -> Result<Duration, InvalidDuration> {
        let parsed = kube::core::Duration::from_str(&self.0).map_err(|_| InvalidDuration(self.0.clone()))?;
        if parsed.is_negative() {
            return Err(InvalidDuration(self.0.clone()));
        }
        Ok(parsed.into())
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: use a Go duration such as 90s, 5m or 1h30m")]
pub struct InvalidDuration(pub String);

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": DURATION_PATTERN,
        })
    }
}

// === schema helpers ===

/// Conditions as a map keyed by `type`, so server-side apply merges them per condition.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "description": "Conditions of the resource: Ready, plus Reconciling while converging and Stalled when a human must act (kstatus conventions).",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": item,
    })
}

/// A free-form JSON object (a JSON Schema document, a JSON Patch value).
pub fn any_object_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Any JSON value (a JSON Patch `value` may be a string, number, object, ...).
pub fn any_value_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(GoDuration::new("90s").duration(), Ok(Duration::from_secs(90)));
        assert_eq!(GoDuration::new("1h30m").duration(), Ok(Duration::from_secs(5400)));
        assert_eq!(GoDuration::new("250ms").duration(), Ok(Duration::from_millis(250)));
        assert_eq!(GoDuration::new("168h").duration(), Ok(Duration::from_secs(168 * 3600)));
        assert!(GoDuration::new("5 minutes").duration().is_err());
        assert!(GoDuration::new("-5s").duration().is_err());
    }
}
