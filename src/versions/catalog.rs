//! A topic's catalog compiled: one JSON Schema validator per event type and version, and the
//! first violation of a payload described so a person can fix it (where, which keyword, what).

use std::{collections::HashMap, fmt};

use jsonschema::Validator;
use serde_json::Value;

use super::CompileError;
use crate::api::event_topic::EventType;

/// The compiled schemas of a catalog.
#[derive(Default)]
pub struct Schemas {
    /// Event type → version → validator.
    by_type: HashMap<String, HashMap<String, Validator>>,
    /// Event type → its newest version in the catalog.
    newest: HashMap<String, String>,
}

impl fmt::Debug for Schemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schemas")
            .field("event_types", &self.by_type.keys().collect::<Vec<_>>())
            .field("newest", &self.newest)
            .finish()
    }
}

impl Schemas {
    /// Compiles every schema of `events`.
    pub fn compile(events: &[EventType]) -> Result<Self, CompileError> {
        let mut schemas = Self::default();
        for event in events {
            if let Some(newest) = event.versions.first() {
                schemas.newest.insert(event.event_type.clone(), newest.name.clone());
            }
            let versions = schemas.by_type.entry(event.event_type.clone()).or_default();
            for version in &event.versions {
                let Some(schema) = &version.schema else { continue };
                let validator = jsonschema::validator_for(schema).map_err(|e| CompileError::Schema {
                    event_type: event.event_type.clone(),
                    version: version.name.clone(),
                    reason: e.to_string(),
                })?;
                versions.insert(version.name.clone(), validator);
            }
        }
        Ok(schemas)
    }

    /// The schema of `event_type` at `version`, when the catalog declares one.
    pub fn get(&self, event_type: &str, version: &str) -> Option<&Validator> {
        self.by_type.get(event_type)?.get(version)
    }

    /// The newest version of `event_type` the catalog lists.
    pub fn newest(&self, event_type: &str) -> Option<&str> {
        self.newest.get(event_type).map(String::as_str)
    }
}

/// The first way a payload breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer (RFC 6901) to the offending value; empty for the whole payload.
    pub pointer: String,
    /// The schema keyword that failed, e.g. `required` or `type`.
    pub keyword: String,
    /// What is wrong, e.g. `"id" is a required property`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() { "the payload" } else { &self.pointer };
        write!(f, "at {at}: {} (keyword {})", self.message, self.keyword)
    }
}

/// Checks `value` against `schema`; the first violation when it does not satisfy it.
pub fn check(schema: &Validator, value: &Value) -> Result<(), Violation> {
    // The yes/no check skips building errors; only a failing payload pays for the details.
    if schema.is_valid(value) {
        return Ok(());
    }
    schema.validate(value).map_err(|e| Violation {
        pointer: e.instance_path().to_string(),
        keyword: e.kind().keyword().to_owned(),
        message: truncate(e.to_string()),
    })
}

/// Messages quote the offending value; a large one must not make a header or a condition huge.
fn truncate(mut message: String) -> String {
    const MAX: usize = 300;
    if message.len() > MAX {
        let mut end = MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::event_topic::EventVersionSchema;

    fn catalog(schema: Value) -> Schemas {
        let events = [EventType {
            event_type: "order.created".into(),
            description: None,
            versions: vec![
                EventVersionSchema { name: "v2".into(), schema: Some(schema), examples: Vec::new() },
                EventVersionSchema { name: "v1".into(), schema: None, examples: Vec::new() },
            ],
        }];
        Schemas::compile(&events).expect("compiles")
    }

    fn order() -> Value {
        json!({
            "type": "object", "required": ["id", "customer"],
            "properties": {
                "id": {"type": "string"},
                "customer": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
                "lines": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer", "minimum": 1}}}}
            }
        })
    }

    #[test]
    fn violations_name_the_pointer_the_keyword_and_what_is_wrong() {
        let schemas = catalog(order());
        let v2 = schemas.get("order.created", "v2").expect("schema");
        assert_eq!(check(v2, &json!({"id": "o-1", "customer": {"id": "c-1"}})), Ok(()));
        let missing = check(v2, &json!({"id": "o-1"})).unwrap_err();
        assert_eq!(missing.to_string(), r#"at the payload: "customer" is a required property (keyword required)"#);
        let typed = check(v2, &json!({"id": 42, "customer": {"id": "c-1"}})).unwrap_err();
        assert_eq!(typed.to_string(), r#"at /id: 42 is not of type "string" (keyword type)"#);
        let nested =
            check(v2, &json!({"id": "o", "customer": {"id": "c"}, "lines": [{"qty": 1}, {"qty": 0}]})).unwrap_err();
        assert_eq!((nested.pointer.as_str(), nested.keyword.as_str()), ("/lines/1/qty", "minimum"));
        assert_eq!(nested.message, "0 is less than the minimum of 1");
    }

    #[test]
    fn only_declared_schemas_apply_and_the_newest_version_is_known() {
        let schemas = catalog(order());
        assert!(schemas.get("order.created", "v1").is_none(), "v1 declares no schema");
        assert!(schemas.get("order.paid", "v2").is_none(), "not in the catalog");
        assert_eq!(schemas.newest("order.created"), Some("v2"));
        assert_eq!(schemas.newest("order.paid"), None);
    }

    #[test]
    fn an_invalid_schema_does_not_compile() {
        let events = [EventType {
            event_type: "order.created".into(),
            description: None,
            versions: vec![EventVersionSchema {
                name: "v1".into(),
                schema: Some(json!({"type": "no-such-type"})),
                examples: Vec::new(),
            }],
        }];
        let err = Schemas::compile(&events).unwrap_err();
        assert!(err.to_string().starts_with("the schema of order.created v1 is not a valid JSON Schema"), "{err}");
    }

    #[test]
    fn a_huge_offending_value_is_cut_short() {
        let schemas = catalog(json!({"type": "object", "properties": {"note": {"maxLength": 3}}}));
        let v2 = schemas.get("order.created", "v2").expect("schema");
        let long = check(v2, &json!({"note": "x".repeat(5000)})).unwrap_err();
        assert!(long.message.chars().count() <= 301, "{}", long.message.len());
    }
}
