//! Everything that talks to RabbitMQ: connection settings from Secrets, the management API
//! client, the pool of brokers with their health, and applying a desired topology.

pub mod config;
pub mod management;
pub mod mover;
pub mod pool;
pub mod sync;

pub use config::{BrokerConfig, ConfigError};
pub use management::ManagementClient;
pub use pool::{Broker, BrokerKey, Brokers};
pub use sync::{SyncReport, delete_topology, sync_topology};

/// A failed broker operation. `category()` is the bounded label used for metrics, Event
/// reasons and condition reasons.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker management API at {endpoint} is unreachable: {source}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "broker refused the credentials of user {user:?} (HTTP {status}); fix the username/password in the broker Secret"
    )]
    Unauthorized { user: String, status: u16 },
    #[error("broker failed to {operation} {object:?} (HTTP {status})")]
    ServerError { operation: &'static str, object: String, status: u16 },
    #[error("broker refused to {operation} {object:?} (HTTP {status}): {reason}")]
    Refused { operation: &'static str, object: String, status: u16, reason: String },
    #[error(
        "{object} already exists on the broker with other settings ({detail}); delete it on the broker or choose another name"
    )]
    Conflict { object: String, detail: String },
    #[error("failed to decode the broker's answer to {operation}: {source}")]
    Decode {
        operation: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("AMQP on broker {endpoint} failed: {reason}")]
    Amqp { endpoint: String, reason: String },
    #[error("failed to move messages from {from} to {to}: {reason}")]
    Move { from: String, to: String, reason: String },
    #[error("failed to build the HTTP client: {source}")]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

impl BrokerError {
    /// Bounded reason, PascalCase.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unreachable { .. }
            | Self::ServerError { .. }
            | Self::Decode { .. }
            | Self::Client { .. }
            | Self::Amqp { .. } => "BrokerUnavailable",
            Self::Move { .. } => "MoveFailed",
            Self::Unauthorized { .. } => "BrokerAuthFailed",
            Self::Refused { .. } => "BrokerRefused",
            Self::Conflict { .. } => "BrokerConflict",
        }
    }

    /// Whether a human has to act before this can succeed (kstatus `Stalled`).
    pub fn needs_human(&self) -> bool {
        matches!(self, Self::Unauthorized { .. } | Self::Refused { .. } | Self::Conflict { .. })
    }
}
