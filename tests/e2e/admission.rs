//! Admission: invalid objects of all four kinds are refused by the real apiserver (OpenAPI
//! schema + CEL rules from the generated CRDs) with a message that says what to fix, and
//! valid ones are accepted.

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::harness::{TestNamespace, admin, serial};

fn api(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("sluice.dev", "v1alpha1", kind);
    let plural = match kind {
        "EventTopic" => "eventtopics",
        "Subscription" => "subscriptions",
        "Webhook" => "webhooks",
        _ => "apiversionpolicies",
    };
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec
    }))
    .expect("object")
}

fn topic_ref() -> Value {
    json!({"name": "orders"})
}

fn versions() -> Value {
    json!([{"name": "v2"}, {"name": "v1", "deprecatedAt": "2026-06-01T00:00:00Z", "sunsetAt": "2027-01-01T00:00:00Z",
            "successor": "v2", "changes": [{"eventTypes": ["order.created"],
            "patch": [{"op": "move", "from": "/customer/id", "path": "/customerId"}, {"op": "remove", "path": "/customer"}]}]}])
}

/// (kind, name, spec, expected fragment of the refusal).
fn invalid_on_create() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        ("EventTopic", "bad-type", json!({"type": "queue"}), r#"Unsupported value: "queue""#),
        ("EventTopic", "orders.v1", json!({}), "metadata.name must be a DNS label"),
        ("EventTopic", "bad-policy", json!({"deletionPolicy": "Keep"}), r#"Unsupported value: "Keep""#),
        (
            "EventTopic",
            "bad-event-type",
            json!({"events": [{"type": "Order Created", "versions": [{"name": "v1"}]}]}),
            "spec.events[0].type in body should match",
        ),
        (
            "EventTopic",
            "no-versions",
            json!({"events": [{"type": "order.created", "versions": []}]}),
            "spec.events[0].versions in body should have at least 1 items",
        ),
        (
            "Subscription",
            "both-filters",
            json!({"topicRef": topic_ref(), "filter": {"routingKeys": ["order.*"], "headers": {"region": "eu"}}}),
            "set either routingKeys (topic and direct topics) or headers (headers topics), not both",
        ),
        (
            "Subscription",
            "bad-key",
            json!({"topicRef": topic_ref(), "filter": {"routingKeys": ["order..created"]}}),
            "each routing key is dot-separated words",
        ),
        (
            "Subscription",
            "bad-duration",
            json!({"topicRef": topic_ref(), "retry": {"schedule": ["5 minutes"]}}),
            "spec.retry.schedule[0] in body should match",
        ),
        (
            "Subscription",
            "zero-step",
            json!({"topicRef": topic_ref(), "retry": {"schedule": ["5s", "0s"]}}),
            "spec.retry.schedule: every step must be between 1ms and 720h",
        ),
        (
            "Subscription",
            "zero-limit",
            json!({"topicRef": topic_ref(), "queue": {"deliveryLimit": 0}}),
            "spec.queue.deliveryLimit in body should be greater than or equal to 1",
        ),
        (
            "Subscription",
            "x-header",
            json!({"topicRef": topic_ref(), "filter": {"headers": {"x-match": "all"}}}),
            "names starting with 'x-' are ignored by RabbitMQ's headers exchange",
        ),
        (
            "Subscription",
            "match-alone",
            json!({"topicRef": topic_ref(), "filter": {"routingKeys": ["a"], "match": "Any"}}),
            "spec.filter.match applies to header matches only",
        ),
        ("Subscription", "no-topic", json!({}), "spec.topicRef: Required value"),
        (
            "Subscription",
            "short-ttl",
            json!({"topicRef": topic_ref(), "queue": {"messageTtl": "500ms"}}),
            "spec.queue.messageTtl must be at least 1s",
        ),
        (
            "Subscription",
            "short-dlq-ttl",
            json!({"topicRef": topic_ref(), "deadLetter": {"messageTtl": "0s"}}),
            "spec.deadLetter.messageTtl must be at least 1s",
        ),
        (
            "Subscription",
            "bad-overflow",
            json!({"topicRef": topic_ref(), "queue": {"overflow": "DropTail"}}),
            r#"Unsupported value: "DropTail""#,
        ),
        (
            "Subscription",
            "long-ladder",
            json!({"topicRef": topic_ref(), "retry": {"schedule": vec!["1s"; 26]}}),
            "spec.retry.schedule: Too many: 26: must have at most 25 items",
        ),
        (
            "Subscription",
            "bad-version",
            json!({"topicRef": topic_ref(), "eventVersion": "v 2"}),
            "spec.eventVersion in body should match",
        ),
        (
            "Subscription",
            "bad-topic-ref",
            json!({"topicRef": {"name": "Orders.EU"}}),
            "spec.topicRef.name in body should match",
        ),
        (
            "Subscription",
            "keep-queues",
            json!({"topicRef": topic_ref(), "deletionPolicy": "Keep"}),
            r#"spec.deletionPolicy: Unsupported value: "Keep""#,
        ),
        (
            "Webhook",
            "ftp",
            json!({"url": "ftp://files.example.com/in"}),
            "spec.url must be an absolute http:// or https:// URL",
        ),
        (
            "Webhook",
            "creds",
            json!({"url": "https://user:pw@hooks.example.com/in"}),
            "spec.url must not contain credentials",
        ),
        (
            "Webhook",
            "bad-timeout",
            json!({"url": "https://h.example/x", "timeout": "15"}),
            "spec.timeout in body should match",
        ),
        (
            "Webhook",
            "slow-connect",
            json!({"url": "https://h.example/x", "timeout": "10s", "connectTimeout": "30s"}),
            "spec.connectTimeout must not be longer than spec.timeout",
        ),
        (
            "Webhook",
            "own-signature",
            json!({"url": "https://h.example/x", "headers": {"Webhook-Signature": "v1,forged"}}),
            "are set by Sluice and cannot be overridden",
        ),
        (
            "Webhook",
            "small-burst",
            json!({"url": "https://h.example/x", "rateLimit": {"perSecond": 100, "burst": 10}}),
            "spec.rateLimit.burst must be at least spec.rateLimit.perSecond",
        ),
        (
            "Webhook",
            "ratio",
            json!({"url": "https://h.example/x", "circuitBreaker": {"failureRatio": 1.5}}),
            "spec.circuitBreaker.failureRatio in body should be less than or equal to 1",
        ),
        (
            "Webhook",
            "no-flight",
            json!({"url": "https://h.example/x", "maxInFlight": 0}),
            "spec.maxInFlight in body should be greater than or equal to 1",
        ),
        (
            "ApiVersionPolicy",
            "unknown-current",
            json!({"topicRef": topic_ref(), "current": "v3", "versions": versions()}),
            "spec.current must be the name of one of spec.versions",
        ),
        (
            "ApiVersionPolicy",
            "early-sunset",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2"},
                   {"name": "v1", "deprecatedAt": "2027-01-01T00:00:00Z", "sunsetAt": "2026-01-01T00:00:00Z", "successor": "v2"}]}),
            "sunsetAt must not be earlier than deprecatedAt",
        ),
        (
            "ApiVersionPolicy",
            "no-successor",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2"}, {"name": "v1", "deprecatedAt": "2026-06-01T00:00:00Z"}]}),
            "a deprecated version must name its successor",
        ),
        (
            "ApiVersionPolicy",
            "deprecated-current",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v1"}, {"name": "v1"}]}),
            "the current version cannot be deprecated",
        ),
        (
            "ApiVersionPolicy",
            "ghost-successor",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2"}, {"name": "v1", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v9"}]}),
            "every successor must be the name of one of spec.versions",
        ),
        (
            "ApiVersionPolicy",
            "move-without-from",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2"}, {"name": "v1", "changes": [{"patch": [{"op": "move", "path": "/a"}]}]}]}),
            "'from' is required for move and copy operations",
        ),
        (
            "ApiVersionPolicy",
            "relative-path",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2"}, {"name": "v1", "changes": [{"patch": [{"op": "remove", "path": "customer/id"}]}]}]}),
            "path in body should match",
        ),
        (
            "ApiVersionPolicy",
            "add-without-value",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2"}, {"name": "v1", "changes": [{"patch": [{"op": "add", "path": "/a"}]}]}]}),
            "spec.versions[1].changes[0].patch[0].value: Required value",
        ),
        (
            "ApiVersionPolicy",
            "test-without-value",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v2"}, {"name": "v1", "changes": [{"patch": [{"op": "test", "path": "/a"}]}]}]}),
            "spec.versions[1].changes[0].patch[0].value: Required value",
        ),
        (
            "ApiVersionPolicy",
            "older-successor",
            json!({"topicRef": topic_ref(), "current": "v3", "versions": [{"name": "v3"},
                   {"name": "v2", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v1"}, {"name": "v1"}]}),
            "a successor must be newer than its version",
        ),
        (
            "ApiVersionPolicy",
            "successor-cycle",
            json!({"topicRef": topic_ref(), "current": "v3", "versions": [{"name": "v3"},
                   {"name": "v2", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v1"},
                   {"name": "v1", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v2"}]}),
            "a successor must be newer than its version",
        ),
        (
            "ApiVersionPolicy",
            "dotted-version",
            json!({"topicRef": topic_ref(), "current": "1.0.0..", "versions": [{"name": "1.0.0.."}]}),
            "spec.versions[0].name in body should match",
        ),
        (
            "ApiVersionPolicy",
            "orders.versions",
            json!({"topicRef": topic_ref(), "current": "v1", "versions": [{"name": "v1"}]}),
            "metadata.name must be a DNS label",
        ),
        (
            "Webhook",
            "header-injection",
            json!({"url": "https://h.example/x", "headers": {"X-Team": "billing\r\nX-Injected: 1"}}),
            "header values may contain only printable ASCII",
        ),
        (
            "Webhook",
            "header-name",
            json!({"url": "https://h.example/x", "headers": {"X Team": "billing"}}),
            "header names may contain only letters, digits",
        ),
        (
            "Webhook",
            "own-version-header",
            json!({"url": "https://h.example/x", "headers": {"Event-Version": "v1"}}),
            "are set by Sluice and cannot be overridden",
        ),
        (
            "Subscription",
            "shrinking-ladder",
            json!({"topicRef": topic_ref(), "retry": {"schedule": ["5s", "1m", "30s"]}}),
            "each step must be at least as long as the one before it",
        ),
        (
            "ApiVersionPolicy",
            "preview-first",
            json!({"topicRef": topic_ref(), "current": "v2", "versions": [{"name": "v3"}, {"name": "v2"}]}),
            "spec.current must be the newest version, the first of spec.versions",
        ),
        (
            "EventTopic",
            "default-broker",
            json!({"broker": {"secretRef": {"name": "default"}}}),
            "'default' is how status names the operator's own broker",
        ),
        (
            "ApiVersionPolicy",
            "maybe",
            json!({"topicRef": topic_ref(), "current": "v2", "enforcement": "Maybe", "versions": [{"name": "v2"}]}),
            r#"Unsupported value: "Maybe""#,
        ),
    ]
}

/// (kind, name, valid spec, merge patch of spec, expected fragment of the refusal).
fn invalid_updates() -> Vec<(&'static str, &'static str, Value, Value, &'static str)> {
    vec![
        ("EventTopic", "retype", json!({"type": "topic"}), json!({"type": "fanout"}), "spec.type is immutable"),
        (
            "EventTopic",
            "rebroker",
            json!({"type": "topic"}),
            json!({"broker": {"secretRef": {"name": "other"}}}),
            "spec.broker is immutable",
        ),
        (
            "Subscription",
            "reorder",
            json!({"topicRef": topic_ref()}),
            json!({"ordering": "Ordered"}),
            "spec.ordering is immutable",
        ),
        (
            "Subscription",
            "retopic",
            json!({"topicRef": topic_ref()}),
            json!({"topicRef": {"name": "payments"}}),
            "spec.topicRef is immutable",
        ),
    ]
}

fn refusal(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "refused as invalid: {status:?}");
            status.message
        }
        other => panic!("expected a refusal from the apiserver, got {other}"),
    }
}

#[tokio::test]
async fn invalid_objects_are_refused_with_a_message_that_says_what_to_fix() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "admission").await;
    let mut failures = Vec::new();
    let cases = invalid_on_create();
    assert!(cases.len() >= 15);
    for (kind, name, spec, expected) in cases {
        match api(&client, &ns.name, kind).create(&PostParams::default(), &object(kind, name, spec)).await {
            Ok(_) => failures.push(format!("{kind} {name}: accepted")),
            Err(e) => {
                let message = refusal(e);
                if !message.contains(expected) {
                    failures.push(format!("{kind} {name}: {message:?} does not contain {expected:?}"));
                }
            }
        }
    }
    for (kind, name, spec, patch, expected) in invalid_updates() {
        let api = api(&client, &ns.name, kind);
        api.create(&PostParams::default(), &object(kind, name, spec)).await.expect("valid object");
        let patched = api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": patch}))).await;
        match patched {
            Ok(_) => failures.push(format!("{kind} {name}: update accepted")),
            Err(e) => {
                let message = refusal(e);
                if !message.contains(expected) {
                    failures.push(format!("{kind} {name}: {message:?} does not contain {expected:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    ns.teardown().await;
}

#[tokio::test]
async fn the_documented_examples_are_accepted_with_their_defaults() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "valid").await;
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    let valid = [
        (
            "EventTopic",
            json!({"type": "topic", "events": [{"type": "order.created", "versions": [{"name": "v2", "schema": {"type": "object"},
                   "examples": [{"id": "o-1", "customer": {"id": "c-1"}}]}]}]}),
        ),
        (
            "Subscription",
            json!({"topicRef": topic_ref(), "filter": {"routingKeys": ["order.*", "order.#"]}, "webhookRef": {"name": "billing"},
                   "eventVersion": "v1", "retry": {"schedule": ["5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"]},
                   "queue": {"maxLength": 100_000, "messageTtl": "168h", "deliveryLimit": 20}}),
        ),
        (
            "Webhook",
            json!({"url": "https://billing.example.com/hooks/orders", "signing": {"secretRef": {"name": "billing-webhook", "key": "secret"}},
                   "headers": {"X-Team": "billing"}, "timeout": "15s", "connectTimeout": "5s", "maxInFlight": 64,
                   "rateLimit": {"perSecond": 100, "burst": 200},
                   "circuitBreaker": {"failureRatio": 0.7, "minAttempts": 10, "window": "5m", "openFor": "30s"},
                   "autoDisableAfter": "120h", "suspend": false, "replicas": 1}),
        ),
        (
            "ApiVersionPolicy",
            json!({"topicRef": topic_ref(), "current": "v2", "enforcement": "Block", "versions": versions()}),
        ),
    ];
    for (kind, spec) in valid {
        let created = api(&client, &ns.name, kind)
            .create(&dry, &object(kind, "example", spec))
            .await
            .unwrap_or_else(|e| panic!("{kind} example refused: {e}"));
        if kind == "Subscription" {
            // Defaults are visible to GitOps tools as the apiserver stores them.
            assert_eq!(created.data["spec"]["deletionPolicy"], "Retain");
            assert_eq!(created.data["spec"]["ordering"], "Unordered");
        }
        if kind == "EventTopic" {
            assert_eq!(created.data["spec"]["deletionPolicy"], "Delete");
        }
    }
    ns.teardown().await;
}
