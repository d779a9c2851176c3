//! Event versions, pure: a topic's catalog (a JSON Schema per event type and version) and its
//! ApiVersionPolicy (versions newest first, their dates, and the JSON Patch "version changes"
//! that turn a payload of one version into the next older one), compiled once and used by the
//! controller (migration board, conversion dry run, Subscription checks) and by the dispatcher
//! (rendering each delivery in the version its Subscription pinned).
//!
//! - [`catalog`]: compiled schemas, and schema violations a person can act on;
//! - [`chain`]: compiled version changes, and the walk from a newer version to an older one;
//! - [`render`]: one message, from its body and envelope to the body and headers delivered;
//! - [`lifecycle`]: version states by the clock, the migration board, the governing policy;
//! - [`dry_run`]: every catalog example rendered down the chain and checked;
//! - [`headers`]: `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link` values.
//!
//! The README's "Event versions" section is the user-facing contract this implements.

pub mod catalog;
pub mod chain;
pub mod dry_run;
pub mod headers;
pub mod lifecycle;
pub mod render;

use serde::{Deserialize, Serialize};

pub use render::{Message, RenderError, Rendered, Renderer, Target};

use crate::api::{
    ApiVersionPolicySpec,
    api_version_policy::{ApiVersion, Enforcement},
    event_topic::{EventType, EventVersionSchema},
};

/// What a dispatcher needs to render one topic's events: the catalog's schemas and the
/// version policy, as the operator copies them into the dispatch configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicVersions {
    /// The catalog: per event type, a schema per version (examples and descriptions left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventType>,
    /// The topic's ApiVersionPolicy, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyVersions>,
}

/// The parts of an ApiVersionPolicy that rendering uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVersions {
    pub current: String,
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Newest first.
    pub versions: Vec<ApiVersion>,
}

impl TopicVersions {
    /// The rendering parts of a topic's catalog and policy (what a dispatcher needs).
    pub fn new(events: &[EventType], policy: Option<&ApiVersionPolicySpec>) -> Self {
        Self::of(events, policy, false)
    }

    /// The same, with the catalog's examples (what the dry run needs).
    pub fn with_examples(events: &[EventType], policy: Option<&ApiVersionPolicySpec>) -> Self {
        Self::of(events, policy, true)
    }

    fn of(events: &[EventType], policy: Option<&ApiVersionPolicySpec>, examples: bool) -> Self {
        let events = events
            .iter()
            .map(|e| EventType {
                event_type: e.event_type.clone(),
                description: None,
                versions: e
                    .versions
                    .iter()
                    .map(|v| EventVersionSchema {
                        name: v.name.clone(),
                        schema: v.schema.clone(),
                        examples: if examples { v.examples.clone() } else { Vec::new() },
                    })
                    .collect(),
            })
            .collect();
        let policy = policy.map(|p| PolicyVersions {
            current: p.current.clone(),
            enforcement: p.enforcement,
            versions: p
                .versions
                .iter()
                .map(|v| ApiVersion {
                    changes: v
                        .changes
                        .iter()
                        .map(|c| crate::api::api_version_policy::VersionChange { description: None, ..c.clone() })
                        .collect(),
                    ..v.clone()
                })
                .collect(),
        });
        Self { events, policy }
    }

    /// A topic with neither a catalog nor a policy: bodies pass through untouched.
    pub fn is_passthrough(&self) -> bool {
        self.events.is_empty() && self.policy.is_none()
    }
}

/// Why a catalog or a policy cannot be compiled. Admission and the EventTopic controller
/// refuse what causes these, so a dispatcher meets one only in a configuration written by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the schema of {event_type} {version} is not a valid JSON Schema: {reason}")]
    Schema { event_type: String, version: String, reason: String },
    #[error("version {version}, change {change}, operation {operation} is not a JSON Patch operation: {reason}")]
    Patch { version: String, change: usize, operation: usize, reason: String },
    #[error("the current version {0} is not one of the policy's versions")]
    NoCurrent(String),
}
