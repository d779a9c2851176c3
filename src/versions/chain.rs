//! A policy's versions compiled into a chain: versions newest first, and between each version and
//! the next older one a step made of that older version's changes (RFC 6902 JSON Patches, each
//! for some event types or for all). Rendering a payload as an older version walks the steps
//! from its own version down to the target, like Stripe's version change modules or Cadwyn's
//! `migrate_response_body`.

use std::fmt;

use json_patch::{Patch, PatchOperation as JsonPatchOperation};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{CompileError, PolicyVersions, headers::Notice};
use crate::api::api_version_policy::{ApiVersion, Enforcement, PatchOp, PatchOperation};

/// One version as rendering needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    /// The headers deliveries in this version carry, once it is deprecated.
    pub notice: Option<Notice>,
    pub sunset_at: Option<Timestamp>,
}

/// One change of a step: a patch for some event types (all when `event_types` is empty).
struct Change {
    event_types: Vec<String>,
    patch: Patch,
    /// Each operation, described for error messages: `move /customer/id -> /customerId`.
    described: Vec<String>,
}

/// The compiled versions of a policy.
pub struct Chain {
    versions: Vec<Version>,
    current: usize,
    enforcement: Enforcement,
    /// `steps[i]` turns a payload of `versions[i]` into `versions[i + 1]`.
    steps: Vec<Vec<Change>>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("versions", &self.versions)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// Why a payload could not be turned into an older version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError {
    /// The versions of the failing step, newer then older.
    pub from: String,
    pub to: String,
    /// Index of the change in the older version's `changes`, and of the operation in its patch.
    pub change: usize,
    pub operation: usize,
    /// The operation, described.
    pub described: String,
    /// Why it failed, as the JSON Patch implementation says.
    pub cause: String,
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} -> {}: changes[{}].patch[{}] ({}) failed: {}",
            self.from, self.to, self.change, self.operation, self.described, self.cause
        )
    }
}

impl Chain {
    /// Compiles `policy`'s versions and patches.
    pub fn compile(policy: &PolicyVersions) -> Result<Self, CompileError> {
        let current = policy
            .versions
            .iter()
            .position(|v| v.name == policy.current)
            .ok_or_else(|| CompileError::NoCurrent(policy.current.clone()))?;
        let versions = policy.versions.iter().map(version).collect();
        let steps = policy.versions.iter().skip(1).map(changes).collect::<Result<_, _>>()?;
        Ok(Self { versions, current, enforcement: policy.enforcement, steps })
    }

    /// The position of version `name` (0 is the newest).
    pub fn index(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.name == name)
    }

    pub fn version(&self, index: usize) -> &Version {
        &self.versions[index]
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// The version names, newest first.
    pub fn names(&self) -> Vec<&str> {
        self.versions.iter().map(|v| v.name.as_str()).collect()
    }

    /// Turns `value`, a payload of `event_type` at version `from`, into version `from + 1`
    /// (one step down). Returns whether any patch applied.
    pub fn step(&self, event_type: &str, from: usize, value: &mut Value) -> Result<bool, ConversionError> {
        let mut changed = false;
        for (c, change) in self.steps[from].iter().enumerate() {
            if !change.event_types.is_empty() && !change.event_types.iter().any(|t| t == event_type) {
                continue;
            }
            // The payload is discarded on failure, so nothing needs undoing.
            json_patch::patch_unsafe(value, &change.patch).map_err(|e| ConversionError {
                from: self.versions[from].name.clone(),
                to: self.versions[from + 1].name.clone(),
                change: c,
                operation: e.operation,
                described: change.described.get(e.operation).cloned().unwrap_or_default(),
                cause: e.kind.to_string(),
            })?;
            changed = true;
        }
        Ok(changed)
    }
}

fn version(v: &ApiVersion) -> Version {
    Version {
        name: v.name.clone(),
        notice: v
            .deprecated_at
            .as_ref()
            .map(|at| Notice::new(at.0, v.sunset_at.as_ref().map(|s| s.0), v.documentation_url.as_deref())),
        sunset_at: v.sunset_at.as_ref().map(|s| s.0),
    }
}

/// The changes that turn the next newer version into `older`.
fn changes(older: &ApiVersion) -> Result<Vec<Change>, CompileError> {
    older
        .changes
        .iter()
        .enumerate()
        .map(|(c, change)| {
            let operations = change
                .patch
                .iter()
                .enumerate()
                .map(|(o, op)| {
                    let json = serde_json::to_value(op).and_then(serde_json::from_value::<JsonPatchOperation>);
                    json.map_err(|e| CompileError::Patch {
                        version: older.name.clone(),
                        change: c,
                        operation: o,
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Change {
                event_types: change.event_types.clone(),
                patch: Patch(operations),
                described: change.patch.iter().map(describe).collect(),
            })
        })
        .collect()
}

/// An operation in a few words, for error messages.
pub fn describe(op: &PatchOperation) -> String {
    let from = op.from.as_deref().unwrap_or_default();
    match op.op {
        PatchOp::Add => format!("add {}", op.path),
        PatchOp::Remove => format!("remove {}", op.path),
        PatchOp::Replace => format!("replace {}", op.path),
        PatchOp::Move => format!("move {from} -> {}", op.path),
        PatchOp::Copy => format!("copy {from} -> {}", op.path),
        PatchOp::Test => format!("test {}", op.path),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A policy from YAML-ish JSON: versions newest first.
    #[allow(clippy::needless_pass_by_value, reason = "fixtures read better inline")]
    fn chain(versions: Value) -> Chain {
        let policy: PolicyVersions =
            serde_json::from_value(json!({"current": versions[0]["name"], "versions": versions})).expect("policy");
        Chain::compile(&policy).expect("compiles")
    }

    /// Walks `value` of `event_type` from version `from` down to `to`.
    fn walk(chain: &Chain, event_type: &str, from: &str, to: &str, mut value: Value) -> Result<Value, ConversionError> {
        let (from, to) = (chain.index(from).expect("from"), chain.index(to).expect("to"));
        for step in from..to {
            chain.step(event_type, step, &mut value)?;
        }
        Ok(value)
    }

    #[test]
    fn every_operation_turns_a_newer_payload_into_the_older_one() {
        let c = chain(json!([
            {"name": "v2"},
            {"name": "v1", "changes": [{"patch": [
                {"op": "add", "path": "/currency", "value": "EUR"},
                {"op": "remove", "path": "/channel"},
                {"op": "replace", "path": "/status", "value": "open"},
                {"op": "move", "from": "/customer/id", "path": "/customerId"},
                {"op": "copy", "from": "/total", "path": "/amount"},
                {"op": "test", "path": "/total", "value": 12}
            ]}]}
        ]));
        let v2 = json!({"id": "o-1", "channel": "web", "status": "NEW", "customer": {"id": "c-1"}, "total": 12});
        assert_eq!(
            walk(&c, "order.created", "v2", "v1", v2).expect("walks"),
            json!({"id": "o-1", "currency": "EUR", "status": "open", "customer": {}, "customerId": "c-1", "total": 12, "amount": 12})
        );
    }

    #[test]
    fn changes_for_other_event_types_are_skipped_and_a_step_without_changes_is_identity() {
        let c = chain(json!([
            {"name": "v3"},
            {"name": "v2"},
            {"name": "v1", "changes": [
                {"eventTypes": ["order.created"], "patch": [{"op": "add", "path": "/created", "value": true}]},
                {"eventTypes": ["order.paid", "order.refunded"], "patch": [{"op": "add", "path": "/paid", "value": true}]},
                {"patch": [{"op": "add", "path": "/all", "value": 1}]}
            ]}
        ]));
        let payload = json!({"id": "o-1"});
        let mut unchanged = payload.clone();
        assert!(!c.step("order.created", 0, &mut unchanged).expect("v3 -> v2"), "v2 declares no changes");
        assert_eq!(unchanged, payload);
        assert_eq!(
            walk(&c, "order.created", "v3", "v1", payload.clone()).expect("walks"),
            json!({"id": "o-1", "created": true, "all": 1})
        );
        assert_eq!(
            walk(&c, "order.refunded", "v2", "v1", payload.clone()).expect("walks"),
            json!({"id": "o-1", "paid": true, "all": 1})
        );
        assert_eq!(walk(&c, "order.shipped", "v2", "v1", payload).expect("walks"), json!({"id": "o-1", "all": 1}));
    }

    #[test]
    fn steps_apply_in_order_from_newest_to_oldest() {
        let c = chain(json!([
            {"name": "2026-06-01"},
            {"name": "2026-01-01", "changes": [{"patch": [{"op": "move", "from": "/customer", "path": "/buyer"}]}]},
            {"name": "2025-01-01", "changes": [{"patch": [{"op": "move", "from": "/buyer/id", "path": "/buyerId"}, {"op": "remove", "path": "/buyer"}]}]}
        ]));
        let newest = json!({"customer": {"id": "c-1", "name": "Ada"}});
        assert_eq!(
            walk(&c, "x", "2026-06-01", "2026-01-01", newest.clone()).expect("one step"),
            json!({"buyer": {"id": "c-1", "name": "Ada"}})
        );
        assert_eq!(walk(&c, "x", "2026-06-01", "2025-01-01", newest).expect("two steps"), json!({"buyerId": "c-1"}));
        assert_eq!(c.names(), ["2026-06-01", "2026-01-01", "2025-01-01"]);
    }

    #[test]
    fn a_failing_operation_names_the_step_the_change_the_operation_and_why() {
        let c = chain(json!([
            {"name": "v2"},
            {"name": "v1", "changes": [
                {"eventTypes": ["order.paid"], "patch": [{"op": "add", "path": "/x", "value": 1}]},
                {"patch": [{"op": "add", "path": "/y", "value": 1}, {"op": "move", "from": "/customer/id", "path": "/customerId"}]}
            ]}
        ]));
        let err = walk(&c, "order.created", "v2", "v1", json!({"id": "o-1"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"step v2 -> v1: changes[1].patch[1] (move /customer/id -> /customerId) failed: "from" path is invalid"#
        );
        let test = chain(
            json!([{"name": "v2"}, {"name": "v1", "changes": [{"patch": [{"op": "test", "path": "/kind", "value": "order"}]}]}]),
        );
        let err = walk(&test, "e", "v2", "v1", json!({"kind": "refund"})).unwrap_err();
        assert_eq!((err.operation, err.cause.as_str()), (0, "value did not match"));
        let removed =
            chain(json!([{"name": "v2"}, {"name": "v1", "changes": [{"patch": [{"op": "remove", "path": "/gone"}]}]}]));
        let err = walk(&removed, "e", "v2", "v1", json!({})).unwrap_err();
        assert_eq!((err.described.as_str(), err.cause.as_str()), ("remove /gone", "path is invalid"));
    }

    #[test]
    fn the_current_version_must_be_listed() {
        let policy: PolicyVersions =
            serde_json::from_value(json!({"current": "v3", "versions": [{"name": "v2"}]})).expect("policy");
        assert_eq!(Chain::compile(&policy).unwrap_err(), CompileError::NoCurrent("v3".into()));
    }
}
