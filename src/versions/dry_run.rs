//! The conversion dry run: every example payload of the catalog rendered down the version
//! chain, one step at a time, and each result checked against the schema of the version it
//! became. A broken patch shows up on the policy before a single event is delivered.

use std::fmt;

use super::{
    CompileError, TopicVersions,
    catalog::{Schemas, Violation, check},
    chain::{Chain, ConversionError},
};

/// What failed, for which example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunError {
    pub event_type: String,
    /// The catalog version the example belongs to, and its index among that version's examples.
    pub version: String,
    pub example: usize,
    pub failure: Failure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A patch did not apply.
    Conversion(ConversionError),
    /// The result of step `from` → `to` does not satisfy `to`'s schema.
    Schema { from: String, to: String, violation: Violation },
}

impl fmt::Display for DryRunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} example {} of {}: ", self.event_type, self.example, self.version)?;
        match &self.failure {
            Failure::Conversion(e) => write!(f, "{e}"),
            Failure::Schema { from, to, violation } => {
                write!(f, "step {from} -> {to}: the result does not satisfy the {to} schema {violation}")
            }
        }
    }
}

/// Why a dry run did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DryRunFailed {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("{0}")]
    Example(Box<DryRunError>),
}

/// What a passing dry run checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checked {
    pub examples: usize,
    /// Step renderings checked, over all examples.
    pub steps: usize,
}

/// Renders every example of `topic`'s catalog down its policy's chain (a topic without a
/// policy has nothing to convert).
pub fn dry_run(topic: &TopicVersions) -> Result<Checked, DryRunFailed> {
    let Some(policy) = &topic.policy else { return Ok(Checked::default()) };
    let schemas = Schemas::compile(&topic.events)?;
    let chain = Chain::compile(policy)?;
    let names = chain.names();
    let mut checked = Checked::default();
    for event in &topic.events {
        for version in &event.versions {
            // A catalog version the policy does not list has no place in the chain.
            let Some(from) = chain.index(&version.name) else { continue };
            for (i, example) in version.examples.iter().enumerate() {
                let fail = |failure| {
                    DryRunFailed::Example(Box::new(DryRunError {
                        event_type: event.event_type.clone(),
                        version: version.name.clone(),
                        example: i,
                        failure,
                    }))
                };
                let mut value = example.clone();
                for step in from..names.len() - 1 {
                    chain.step(&event.event_type, step, &mut value).map_err(|e| fail(Failure::Conversion(e)))?;
                    if let Some(schema) = schemas.get(&event.event_type, names[step + 1]) {
                        check(schema, &value).map_err(|violation| {
                            fail(Failure::Schema {
                                from: names[step].to_owned(),
                                to: names[step + 1].to_owned(),
                                violation,
                            })
                        })?;
                    }
                    checked.steps += 1;
                }
                checked.examples += 1;
            }
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[allow(clippy::needless_pass_by_value, reason = "fixtures read better inline")]
    fn topic(v1_patch: Value) -> TopicVersions {
        serde_json::from_value(json!({
            "events": [{"type": "order.created", "versions": [
                {"name": "v3", "examples": [{"id": "o-1", "customer": {"id": "c-1"}}, {"id": "o-2", "customer": {"id": "c-2"}}]},
                {"name": "v2", "schema": {"type": "object", "required": ["customerId"]},
                 "examples": [{"id": "o-3", "customerId": "c-3"}]},
                {"name": "v1", "schema": {"type": "object", "required": ["buyer"], "properties": {"buyer": {"type": "string"}}}}
            ]}],
            "policy": {"current": "v3", "versions": [
                {"name": "v3"},
                {"name": "v2", "changes": [{"patch": [{"op": "move", "from": "/customer/id", "path": "/customerId"}, {"op": "remove", "path": "/customer"}]}]},
                {"name": "v1", "changes": [{"patch": v1_patch}]}
            ]}
        }))
        .expect("topic")
    }

    #[test]
    fn every_example_walks_every_step_down_to_the_oldest_version() {
        let ok = topic(json!([{"op": "move", "from": "/customerId", "path": "/buyer"}]));
        assert_eq!(
            dry_run(&ok),
            Ok(Checked { examples: 3, steps: 5 }),
            "two v3 examples take two steps, the v2 one takes one"
        );
    }

    #[test]
    fn a_patch_that_does_not_apply_names_the_example_the_step_and_the_operation() {
        let broken = topic(json!([{"op": "move", "from": "/customer/id", "path": "/buyer"}]));
        assert_eq!(
            dry_run(&broken).unwrap_err().to_string(),
            r#"order.created example 0 of v3: step v2 -> v1: changes[0].patch[0] (move /customer/id -> /buyer) failed: "from" path is invalid"#
        );
    }

    #[test]
    fn a_result_off_the_older_schema_names_the_pointer_and_the_keyword() {
        let typed = topic(json!([{"op": "add", "path": "/buyer", "value": 7}]));
        assert_eq!(
            dry_run(&typed).unwrap_err().to_string(),
            r#"order.created example 0 of v3: step v2 -> v1: the result does not satisfy the v1 schema at /buyer: 7 is not of type "string" (keyword type)"#
        );
    }

    #[test]
    fn without_a_policy_there_is_nothing_to_convert() {
        let catalog_only = TopicVersions { policy: None, ..topic(json!([])) };
        assert_eq!(dry_run(&catalog_only), Ok(Checked::default()));
    }
}
