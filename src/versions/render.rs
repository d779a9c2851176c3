//! Rendering one message for one Subscription: check that the payload is JSON and satisfies its
//! own version's schema, walk the chain down to the Subscription's version, check the result
//! against that version's schema. Each failure is one of four dead-letter reasons with a
//! message that says where and why, so one bad message never holds up the next.

use std::borrow::Cow;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{
    CompileError, TopicVersions,
    catalog::{Schemas, check},
    chain::Chain,
    headers::Notice,
};
use crate::api::api_version_policy::Enforcement;

/// A topic's catalog and policy, compiled once per configuration.
#[derive(Debug)]
pub struct Renderer {
    schemas: Schemas,
    chain: Option<Chain>,
}

/// The version a Subscription receives: an index into the policy's versions, or none when the
/// topic has no policy (each message is delivered in its own version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target(Option<usize>);

/// What rendering needs to know about a message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The AMQP `type` property, else the routing key.
    pub event_type: &'a str,
    /// The `event-version` header.
    pub version: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// A message ready to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered<'a> {
    /// The original bytes when no change applied; compact JSON (keys sorted) when one did.
    pub body: Cow<'a, [u8]>,
    /// The version delivered (the `event-version` request header), when known.
    pub version: Option<&'a str>,
    /// The deprecation headers of that version, when it is deprecated.
    pub notice: Option<&'a Notice>,
}

/// Why a message cannot be delivered in the Subscription's version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    UnsupportedContentType(String),
    #[error("{0}")]
    SchemaInvalid(String),
    #[error("{0}")]
    VersionUnavailable(String),
    #[error("{0}")]
    ConversionFailed(String),
}

/// Whether a content type is JSON: `application/json` or a `+json` type, parameters ignored.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl Renderer {
    pub fn compile(topic: &TopicVersions) -> Result<Self, CompileError> {
        let schemas = Schemas::compile(&topic.events)?;
        let chain = topic.policy.as_ref().map(Chain::compile).transpose()?;
        Ok(Self { schemas, chain })
    }

    /// The version a Subscription pinned to `pin` (none: the current one) receives; the known
    /// versions when the policy does not list `pin`.
    pub fn target(&self, pin: Option<&str>) -> Result<Target, Vec<String>> {
        match (&self.chain, pin) {
            (None, None) => Ok(Target(None)),
            (None, Some(_)) => Err(Vec::new()),
            (Some(chain), None) => Ok(Target(Some(chain.current()))),
            (Some(chain), Some(pin)) => chain
                .index(pin)
                .map(|i| Target(Some(i)))
                .ok_or_else(|| chain.names().into_iter().map(str::to_owned).collect()),
        }
    }

    /// From when `target` stops being delivered: its sunset date under enforcement Block.
    pub fn blocked_from(&self, target: Target) -> Option<Timestamp> {
        let (chain, index) = (self.chain.as_ref()?, target.0?);
        (chain.enforcement() == Enforcement::Block).then(|| chain.version(index).sunset_at).flatten()
    }

    /// Renders `message` in `target`'s version.
    pub fn render<'a>(&'a self, target: Target, message: &Message<'a>) -> Result<Rendered<'a>, RenderError> {
        if let Some(content_type) = message.content_type.filter(|c| !is_json(c)) {
            return Err(RenderError::UnsupportedContentType(format!(
                "content type {content_type:?}: this topic has an event catalog or version policy, so payloads must be JSON (application/json)"
            )));
        }
        let mut value: Value = serde_json::from_slice(message.body)
            .map_err(|e| RenderError::SchemaInvalid(format!("the payload is not JSON: {e}")))?;
        let event_type = message.event_type;
        let Some(chain) = &self.chain else {
            // No policy: delivered in its own version, checked against it.
            let version = message.version.or_else(|| self.schemas.newest(event_type));
            self.check_own(event_type, version, &value)?;
            return Ok(Rendered { body: Cow::Borrowed(message.body), version, notice: None });
        };
        let from_name = message.version.unwrap_or_else(|| chain.version(chain.current()).name.as_str());
        let from = chain.index(from_name).ok_or_else(|| {
            RenderError::VersionUnavailable(format!(
                "{event_type} is published as version {from_name}, which the policy does not list (it lists {})",
                chain.names().join(", ")
            ))
        })?;
        self.check_own(event_type, Some(from_name), &value)?;
        let to = target.0.unwrap_or(chain.current());
        let to_name = chain.version(to).name.as_str();
        if from > to {
            return Err(RenderError::VersionUnavailable(format!(
                "{event_type} is published as version {from_name}, older than this Subscription's {to_name}: versions are only ever rendered as older ones; publish it as {to_name} or newer"
            )));
        }
        let mut changed = false;
        for step in from..to {
            changed |=
                chain.step(event_type, step, &mut value).map_err(|e| RenderError::ConversionFailed(e.to_string()))?;
        }
        if from != to
            && let Some(schema) = self.schemas.get(event_type, to_name)
        {
            check(schema, &value).map_err(|v| {
                RenderError::ConversionFailed(format!(
                    "{event_type} rendered from {from_name} as {to_name} does not satisfy the {to_name} schema {v}"
                ))
            })?;
        }
        let body = if changed {
            // Serializing a Value cannot fail: its keys are strings.
            Cow::Owned(serde_json::to_vec(&value).unwrap_or_default())
        } else {
            Cow::Borrowed(message.body)
        };
        Ok(Rendered { body, version: Some(to_name), notice: chain.version(to).notice.as_ref() })
    }

    fn check_own(&self, event_type: &str, version: Option<&str>, value: &Value) -> Result<(), RenderError> {
        let Some(schema) = version.and_then(|v| self.schemas.get(event_type, v)) else { return Ok(()) };
        check(schema, value).map_err(|v| {
            RenderError::SchemaInvalid(format!(
                "{event_type} {} does not satisfy its schema {v}",
                version.unwrap_or_default()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Three versions of `order.created`, each with a schema: v3 (current) has `customer.id`
    /// and `total.amount`; v2 has a flat `customerId`; v1 has `amount` as cents.
    fn topic() -> TopicVersions {
        serde_json::from_value(json!({
            "events": [{"type": "order.created", "versions": [
                {"name": "v3", "schema": {"type": "object", "required": ["id", "customer", "total"],
                    "properties": {"id": {"type": "string"}, "customer": {"type": "object", "required": ["id"]},
                                   "total": {"type": "object", "required": ["amount"]}}}},
                {"name": "v2", "schema": {"type": "object", "required": ["id", "customerId", "total"],
                    "properties": {"customerId": {"type": "string"}}, "not": {"required": ["customer"]}}},
                {"name": "v1", "schema": {"type": "object", "required": ["id", "customerId", "amount"],
                    "properties": {"amount": {"type": "number"}}, "not": {"required": ["total"]}}}
            ]}],
            "policy": {"current": "v3", "enforcement": "Block", "versions": [
                {"name": "v3"},
                {"name": "v2", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v3",
                 "documentationUrl": "https://docs.example.com/v2",
                 "changes": [{"eventTypes": ["order.created"], "patch": [
                     {"op": "move", "from": "/customer/id", "path": "/customerId"}, {"op": "remove", "path": "/customer"}]}]},
                {"name": "v1", "deprecatedAt": "2026-06-01T00:00:00Z", "sunsetAt": "2027-01-01T00:00:00Z", "successor": "v2",
                 "changes": [{"patch": [{"op": "move", "from": "/total/amount", "path": "/amount"}, {"op": "remove", "path": "/total"}]}]}
            ]}
        }))
        .expect("topic")
    }

    fn renderer() -> Renderer {
        Renderer::compile(&topic()).expect("compiles")
    }

    fn message<'a>(version: Option<&'a str>, body: &'a [u8]) -> Message<'a> {
        Message { event_type: "order.created", version, content_type: Some("application/json"), body }
    }

    const V3: &[u8] = br#"{"id":"o-1","customer":{"id":"c-1"},"total":{"amount":12.5}}"#;

    #[test]
    fn the_current_version_passes_byte_for_byte_and_older_ones_are_rendered() {
        let r = renderer();
        let v3 = r.render(r.target(None).expect("current"), &message(Some("v3"), V3)).expect("v3");
        assert_eq!((v3.body.as_ref(), v3.version, v3.notice), (V3, Some("v3"), None));
        let v2 = r.render(r.target(Some("v2")).expect("v2"), &message(None, V3)).expect("v2");
        assert_eq!(v2.body.as_ref(), br#"{"customerId":"c-1","id":"o-1","total":{"amount":12.5}}"#);
        assert_eq!(v2.version, Some("v2"));
        assert_eq!(
            v2.notice.map(|n| n.link.as_deref()),
            Some(Some(r#"<https://docs.example.com/v2>; rel="deprecation""#))
        );
        let v1 = r.render(r.target(Some("v1")).expect("v1"), &message(Some("v3"), V3)).expect("v1");
        assert_eq!(v1.body.as_ref(), br#"{"amount":12.5,"customerId":"c-1","id":"o-1"}"#);
        let from_v2 = r.render(
            r.target(Some("v1")).expect("v1"),
            &message(Some("v2"), br#"{"id":"o-2","customerId":"c-2","total":{"amount":1}}"#),
        );
        assert_eq!(from_v2.expect("v2 -> v1").body.as_ref(), br#"{"amount":1,"customerId":"c-2","id":"o-2"}"#);
    }

    #[test]
    fn each_failure_is_its_own_reason_with_a_message_that_says_why() {
        let r = renderer();
        let v1 = r.target(Some("v1")).expect("v1");
        let fail = |m: Message<'_>| r.render(v1, &m).unwrap_err();
        let text = Message { content_type: Some("text/plain"), ..message(None, b"hello") };
        assert!(matches!(fail(text), RenderError::UnsupportedContentType(_)));
        let not_json = fail(message(None, b"hello"));
        assert!(matches!(not_json, RenderError::SchemaInvalid(_)), "{not_json:?}");
        assert!(
            not_json.to_string().starts_with("the payload is not JSON: expected value at line 1 column 1"),
            "{not_json}"
        );
        let invalid = fail(message(Some("v3"), br#"{"id":"o-1","customer":{},"total":{"amount":1}}"#));
        assert_eq!(
            invalid.to_string(),
            r#"order.created v3 does not satisfy its schema at /customer: "id" is a required property (keyword required)"#
        );
        let unknown = fail(message(Some("v9"), V3));
        assert_eq!(
            unknown,
            RenderError::VersionUnavailable(
                "order.created is published as version v9, which the policy does not list (it lists v3, v2, v1)".into()
            )
        );
        let older = r.render(
            r.target(Some("v2")).expect("v2"),
            &message(Some("v1"), br#"{"id":"o","customerId":"c","amount":1}"#),
        );
        assert!(
            matches!(older, Err(RenderError::VersionUnavailable(_))),
            "never rendered as a newer version: {older:?}"
        );
    }

    #[test]
    fn a_patch_that_breaks_or_a_result_off_schema_fails_the_conversion() {
        let mut t = topic();
        let policy = t.policy.as_mut().expect("policy");
        // v2's patch forgets to remove /customer: the v2 schema forbids it.
        policy.versions[1].changes[0].patch.pop();
        let r = Renderer::compile(&t).expect("compiles");
        let err = r.render(r.target(Some("v2")).expect("v2"), &message(None, V3)).unwrap_err();
        assert_eq!(
            err,
            RenderError::ConversionFailed(
                r#"order.created rendered from v3 as v2 does not satisfy the v2 schema at the payload: {"required":["customer"]} is not allowed for {"customer":{},"customerId":"c-1","id":"o-1","total":{"amount":12.5}} (keyword not)"#.into()
            )
        );
        // A v3 payload without customer.id passes v3's schema only if the schema allows it;
        // here the move itself fails and names its operation.
        let lax: TopicVersions = serde_json::from_value(json!({"policy": topic().policy})).expect("lax");
        let r = Renderer::compile(&lax).expect("compiles");
        let err = r.render(r.target(Some("v2")).expect("v2"), &message(None, br#"{"id":"o-1"}"#)).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"step v3 -> v2: changes[0].patch[0] (move /customer/id -> /customerId) failed: "from" path is invalid"#
        );
    }

    #[test]
    fn without_a_policy_each_message_keeps_its_version_and_is_checked_against_it() {
        let catalog_only = TopicVersions { policy: None, ..topic() };
        let r = Renderer::compile(&catalog_only).expect("compiles");
        let target = r.target(None).expect("no pin");
        let v3 = r.render(target, &message(None, V3)).expect("the newest version is assumed");
        assert_eq!((v3.body.as_ref(), v3.version), (V3, Some("v3")));
        let v1 = br#"{"id":"o","customerId":"c","amount":1}"#;
        assert_eq!(r.render(target, &message(Some("v1"), v1)).expect("v1").version, Some("v1"));
        assert!(matches!(r.render(target, &message(Some("v1"), V3)), Err(RenderError::SchemaInvalid(_))));
        assert_eq!(r.target(Some("v1")), Err(Vec::new()), "a pin needs a policy");
    }

    #[test]
    fn pins_resolve_to_listed_versions_and_block_applies_from_the_sunset() {
        let r = renderer();
        assert_eq!(r.target(Some("v7")), Err(vec!["v3".to_owned(), "v2".to_owned(), "v1".to_owned()]));
        let v1 = r.target(Some("v1")).expect("v1");
        assert_eq!(r.blocked_from(v1), Some("2027-01-01T00:00:00Z".parse().expect("time")));
        assert_eq!(r.blocked_from(r.target(Some("v2")).expect("v2")), None, "no sunset date");
        let mut warn = topic();
        warn.policy.as_mut().expect("policy").enforcement = Enforcement::Warn;
        let r = Renderer::compile(&warn).expect("compiles");
        assert_eq!(r.blocked_from(r.target(Some("v1")).expect("v1")), None, "Warn keeps delivering");
    }

    #[test]
    fn json_content_types_are_recognised() {
        for json in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json"]
        {
            assert!(is_json(json), "{json}");
        }
        for other in ["text/plain", "application/octet-stream", "application/jsonp", "text/json+x"] {
            assert!(!is_json(other), "{other}");
        }
    }
}
