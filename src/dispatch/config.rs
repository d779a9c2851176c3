//! The dispatch configuration: what one dispatcher delivers, to where, and under which limits.
//! The operator renders it (into the Webhook's ConfigMap) from the Webhook and the
//! Subscriptions that target it; the dispatcher reads it from a file. Secrets are not in it:
//! the broker URI and the signing secrets come from the environment (Secret references).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::versions::TopicVersions;

/// Everything a dispatcher needs besides its secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DispatchConfig {
    /// The Webhook's namespace and name (metric labels, status reports).
    pub namespace: String,
    pub webhook: String,
    /// The endpoint every event is POSTed to.
    pub url: String,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(with = "millis")]
    pub timeout: Duration,
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// Requests in flight at once per replica, across every Subscription (also each
    /// Subscription's consumer prefetch).
    pub max_in_flight: u16,
    /// Token-bucket rate limit; none when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    pub circuit_breaker: CircuitBreakerConfig,
    /// Delivery paused: consume nothing.
    #[serde(default)]
    pub suspend: bool,
    /// Addresses the dispatcher may connect to beyond the defaults (CIDRs), and whether
    /// private ranges are refused.
    #[serde(default)]
    pub egress: EgressConfig,
    /// The Subscriptions delivering to this Webhook.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionRoute>,
    /// How each topic's events are rendered (its catalog and version policy), for the topics
    /// of these Subscriptions that have either; the others pass bodies through untouched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, TopicVersions>,
}

/// One Subscription's queues as the dispatcher uses them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRoute {
    pub name: String,
    /// The work queue consumed.
    pub queue: String,
    /// The retry queues, one per step of the schedule, in order.
    pub retry_queues: Vec<String>,
    /// The retry delays, one per retry queue (for clamping `Retry-After`).
    #[serde(with = "millis_vec")]
    pub schedule: Vec<Duration>,
    pub dead_letter_queue: String,
    /// One message at a time, retried in place (single active consumer).
    #[serde(default)]
    pub ordered: bool,
    /// The topic, when its events are rendered (a key of [`DispatchConfig::topics`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The event version deliveries are rendered in (one of the topic policy's versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitConfig {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerConfig {
    pub failure_ratio: f64,
    pub min_attempts: u32,
    #[serde(with = "millis")]
    pub window: Duration,
    #[serde(with = "millis")]
    pub open_for: Duration,
}

impl From<&CircuitBreakerConfig> for super::circuit::Settings {
    fn from(c: &CircuitBreakerConfig) -> Self {
        Self { failure_ratio: c.failure_ratio, min_attempts: c.min_attempts, window: c.window, open_for: c.open_for }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EgressConfig {
    /// CIDRs allowed even when a rule would refuse them (e.g. `127.0.0.0/8` for a local test).
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub refuse_private: bool,
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid dispatch configuration: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl DispatchConfig {
    /// Reads and checks the configuration file; also returns the file's [`checksum`].
    pub fn load(path: &str) -> Result<(Self, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let config: Self =
            serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        config.check()?;
        Ok((config, checksum(text.as_bytes())))
    }

    /// The configuration as the ConfigMap carries it.
    pub fn render(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.max_in_flight == 0 {
            return Err(ConfigError::Invalid("maxInFlight must be at least 1".into()));
        }
        for s in &self.subscriptions {
            if let Some(topic) = s.topic.as_ref().filter(|t| !self.topics.contains_key(*t)) {
                return Err(ConfigError::Invalid(format!("subscription {}: topic {topic} has no rendering", s.name)));
            }
            if s.retry_queues.len() != s.schedule.len() {
                return Err(ConfigError::Invalid(format!(
                    "subscription {}: {} retry queues for {} schedule steps",
                    s.name,
                    s.retry_queues.len(),
                    s.schedule.len()
                )));
            }
        }
        Ok(())
    }
}

/// A short hex SHA-256 of `bytes`: names a configuration (the pod template's checksum
/// annotation, a dispatcher's report) without revealing anything in it.
pub fn checksum(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    digest.iter().take(16).fold(String::with_capacity(32), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod millis_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for d in v {
            seq.serialize_element(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<u64>::deserialize(d).map(|v| v.into_iter().map(Duration::from_millis).collect())
    }
}
