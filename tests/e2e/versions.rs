//! Event versions end to end: a topic with a catalog of three versions, an ApiVersionPolicy
//! whose oldest version reaches its sunset during the test, and three Subscriptions pinned to
//! v3, v2 and v1 delivering through one Webhook to one receiver that verifies every signature.
//! Every published event is accounted for per Subscription: delivered byte for byte in its
//! version with the exact headers, in the dead-letter queue with its reason, or waiting in the
//! queue of a Subscription whose version is past its sunset.

use std::{collections::HashMap, sync::Arc, time::Duration};

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use sluice::api::{ApiVersionPolicy, EventTopic, Subscription, Webhook};

use crate::{
    harness::{Amqp, TestNamespace, condition, events_for, eventually, serial},
    receiver::{self, Received, Seen},
    webhook::{bed, create, generated_secret, rolled_out},
};

const WAIT: Duration = Duration::from_secs(120);
/// v2's and v1's deprecation dates, and v1's first sunset date, as the headers carry them.
const V2_DEPRECATED: (&str, &str) = ("2026-06-01T00:00:00Z", "@1780272000");
const V1_DEPRECATED: (&str, &str) = ("2026-01-01T00:00:00Z", "@1767225600");
const V1_SUNSET: (&str, &str) = ("2030-01-01T00:00:00Z", "Tue, 01 Jan 2030 00:00:00 GMT");

/// `order.created` in three versions: v3 nests the customer and the total; v2 flattens the
/// customer; v1 also flattens the total's amount and drops the currency.
fn orders_catalog() -> Value {
    json!({"type": "topic", "events": [{"type": "order.created", "versions": [
        {"name": "v3", "schema": {"type": "object", "required": ["id", "customer", "total"], "properties": {
            "id": {"type": "string"},
            "customer": {"type": "object", "required": ["id", "name"], "properties": {"id": {"type": "string"}, "name": {"type": "string"}}},
            "total": {"type": "object", "required": ["amount", "currency"]}}},
         "examples": [{"id": "o-x", "customer": {"id": "c-x", "name": "Ada"}, "total": {"amount": 1.5, "currency": "EUR"}}]},
        {"name": "v2", "schema": {"type": "object", "required": ["id", "customerId", "total"], "not": {"required": ["customer"]},
            "properties": {"customerId": {"type": "string"}, "customerName": {"type": "string"}}},
         "examples": [{"id": "o-y", "customerId": "c-y", "total": {"amount": 2, "currency": "EUR"}}]},
        {"name": "v1", "schema": {"type": "object", "required": ["id", "customerId", "amount"], "not": {"required": ["total"]},
            "properties": {"amount": {"type": "number"}}}}
    ]}]})
}

fn orders_policy(enforcement: &str) -> Value {
    json!({"topicRef": {"name": "orders"}, "current": "v3", "enforcement": enforcement, "versions": [
        {"name": "v3"},
        {"name": "v2", "deprecatedAt": V2_DEPRECATED.0, "successor": "v3", "documentationUrl": "https://docs.example.com/orders/v2",
         "changes": [{"eventTypes": ["order.created"], "description": "customer flattened", "patch": [
            {"op": "move", "from": "/customer/id", "path": "/customerId"},
            {"op": "move", "from": "/customer/name", "path": "/customerName"},
            {"op": "remove", "path": "/customer"}]}]},
        {"name": "v1", "deprecatedAt": V1_DEPRECATED.0, "sunsetAt": V1_SUNSET.0, "successor": "v2",
         "documentationUrl": "https://docs.example.com/orders/v1",
         "changes": [{"patch": [{"op": "move", "from": "/total/amount", "path": "/amount"}, {"op": "remove", "path": "/total"}]}]}
    ]})
}

fn v3(id: &str, i: usize) -> String {
    format!(r#"{{"id":"{id}","customer":{{"id":"c-{i}","name":"N{i}"}},"total":{{"amount":{i}.5,"currency":"EUR"}}}}"#)
}
fn v3_as_v2(id: &str, i: usize) -> String {
    format!(r#"{{"customerId":"c-{i}","customerName":"N{i}","id":"{id}","total":{{"amount":{i}.5,"currency":"EUR"}}}}"#)
}
fn v3_as_v1(id: &str, i: usize) -> String {
    format!(r#"{{"amount":{i}.5,"customerId":"c-{i}","customerName":"N{i}","id":"{id}"}}"#)
}
fn v2(id: &str, i: usize) -> String {
    format!(r#"{{"id":"{id}","customerId":"c-{i}","total":{{"amount":{i},"currency":"EUR"}}}}"#)
}
fn v2_as_v1(id: &str, i: usize) -> String {
    format!(r#"{{"amount":{i},"customerId":"c-{i}","id":"{id}"}}"#)
}

/// The verified requests in `version` whose ids start with `prefix` and that the receiver
/// accepted, by id.
fn received<'a>(seen: &'a Seen, version: &str, prefix: &str) -> HashMap<&'a str, Vec<&'a Received>> {
    let mut by_id: HashMap<&str, Vec<&Received>> = HashMap::new();
    let accepted = seen.requests.iter().filter(|r| (200..300).contains(&r.status));
    for r in accepted.filter(|r| r.header("event-version") == Some(version) && r.id.starts_with(prefix)) {
        by_id.entry(r.id.as_str()).or_default().push(r);
    }
    by_id
}

fn count(seen: &Seen, version: &str, prefix: &str) -> usize {
    received(seen, version, prefix).values().map(Vec::len).sum()
}

/// Checks the headers a delivery in `version` carries: the version, and the deprecation
/// headers exactly when the version is deprecated.
fn assert_headers(r: &Received, version: &str, deprecation: Option<&str>, sunset: Option<&str>, link: Option<&str>) {
    let what = format!("{} as {version}", r.id);
    assert_eq!(r.header("event-version"), Some(version), "{what}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    assert_eq!(r.header("deprecation"), deprecation, "{what}: Deprecation");
    assert_eq!(r.header("sunset"), sunset, "{what}: Sunset");
    assert_eq!(r.header("link"), link, "{what}: Link");
}

/// The migration board as (name, state, subscriptions, pinned) rows, and its two totals.
async fn board(ns: &TestNamespace, policy: &str) -> (Vec<(String, String, i64, Vec<String>)>, (i64, i64)) {
    let status = ns.get_json::<ApiVersionPolicy>(policy).await.expect("policy")["status"].clone();
    let rows = status["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let pinned =
                v["pinned"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect();
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["state"].as_str().unwrap_or_default().to_owned(),
                v["subscriptions"].as_i64().unwrap_or(-1),
                pinned,
            )
        })
        .collect();
    (rows, (status["deprecatedInUse"].as_i64().unwrap_or(-1), status["sunsetInUse"].as_i64().unwrap_or(-1)))
}

fn row(name: &str, state: &str, subscriptions: i64, pinned: &[&str]) -> (String, String, i64, Vec<String>) {
    (name.into(), state.into(), subscriptions, pinned.iter().map(|p| (*p).to_owned()).collect())
}

/// Waits until the board of `policy` is `rows` with `totals` (deprecated, sunset in use).
async fn board_is(ns: &TestNamespace, policy: &str, rows: &[(String, String, i64, Vec<String>)], totals: (i64, i64)) {
    let started = std::time::Instant::now();
    loop {
        let now = board(ns, policy).await;
        if now.0 == rows && now.1 == totals {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the migration board of {policy} never became {rows:?} {totals:?}; it is {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Subscription of `topic` pinned to `pin`, delivered by Webhook `hook` when `delivered`.
async fn subscription(ns: &TestNamespace, name: &str, topic: &str, pin: &str, delivered: bool) {
    let webhook = delivered.then(|| json!({"name": "hook"}));
    create::<Subscription>(
        ns,
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": name},
            "spec": {"topicRef": {"name": topic}, "webhookRef": webhook, "eventVersion": pin,
                     "retry": {"schedule": ["100ms"]}, "deletionPolicy": "Delete"}
        }),
    )
    .await;
}

#[tokio::test]
async fn every_delivery_arrives_in_its_subscriptions_version_and_a_sunset_holds_messages_until_re_pinned() {
    let _serial = serial();
    let (ns, running) = bed("versions").await;
    // Events o-10 .. o-19 are refused (503) the first time they arrive in v2 and in v1, so the
    // Subscriptions pinned there get them back from a retry step and render them again.
    let receiver = receiver::start_versioned(
        &[],
        Arc::new(|id, version, attempt| {
            let flaky = id.len() == 4 && id.starts_with("o-1") && matches!(version, Some("v2" | "v1"));
            if flaky && attempt == 1 { 503 } else { 204 }
        }),
    )
    .await;
    let meta = |kind: &str, name: &str, spec: Value| json!({"apiVersion": "sluice.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    create::<EventTopic>(&ns, meta("EventTopic", "orders", orders_catalog())).await;
    create::<ApiVersionPolicy>(&ns, meta("ApiVersionPolicy", "orders-versions", orders_policy("Block"))).await;
    // A second topic whose v1 is already past its sunset, under Warn.
    create::<EventTopic>(&ns, meta("EventTopic", "payments", json!({"type": "topic"}))).await;
    let payments = json!({"topicRef": {"name": "payments"}, "current": "v2", "enforcement": "Warn", "versions": [
        {"name": "v2"},
        {"name": "v1", "deprecatedAt": "2026-01-01T00:00:00Z", "sunsetAt": "2026-11-01T00:00:00Z", "successor": "v2",
         "changes": [{"patch": [{"op": "add", "path": "/legacy", "value": true}]}]}]});
    create::<ApiVersionPolicy>(&ns, meta("ApiVersionPolicy", "payments-versions", payments)).await;
    create::<Webhook>(
        &ns,
        meta(
            "Webhook",
            "hook",
            json!({"url": receiver.url(), "maxInFlight": 32,
        "circuitBreaker": {"failureRatio": 1.0, "minAttempts": 100_000}}),
        ),
    )
    .await;
    for (sub, pin) in [("billing-v3", "v3"), ("billing-v2", "v2"), ("billing-v1", "v1")] {
        subscription(&ns, sub, "orders", pin, true).await;
    }
    subscription(&ns, "payments-v1", "payments", "v1", true).await;
    for resource in [
        "apiversionpolicy/orders-versions",
        "apiversionpolicy/payments-versions",
        "subscription/billing-v3",
        "subscription/billing-v2",
        "subscription/billing-v1",
        "subscription/payments-v1",
        "webhook/hook",
    ] {
        ns.wait_ready(resource);
    }
    receiver.learn(&generated_secret(&ns, "hook").await);
    eventually("the dispatcher configuration to render all four Subscriptions", WAIT, || async {
        let map = ns.api::<k8s_openapi::api::core::v1::ConfigMap>().get("sluice-dispatcher-hook").await.ok()?;
        let config: Value = serde_json::from_str(map.data?.get("dispatch.json")?).ok()?;
        let versions: Vec<&str> =
            config["subscriptions"].as_array()?.iter().filter_map(|s| s["version"].as_str()).collect();
        (versions == ["v1", "v2", "v3", "v1"]).then_some(())
    })
    .await;
    rolled_out(&ns, "hook").await;
    board_is(
        &ns,
        "orders-versions",
        &[
            row("v3", "Current", 1, &[]),
            row("v2", "Deprecated", 1, &["billing-v2"]),
            row("v1", "Deprecated", 1, &["billing-v1"]),
        ],
        (2, 0),
    )
    .await;
    let (ok, printed) = crate::harness::kubectl(&["get", "avp", "orders-versions", "-n", &ns.name, "--no-headers"]);
    assert!(ok && printed.split_whitespace().take(5).eq(["orders-versions", "orders", "v3", "2", "0"]), "{printed}");

    // Phase 1: 300 events as v3 (half of them without a version header: the current one), 20
    // as v2, 5 that break v3's schema and 5 that are not JSON.
    let amqp = Amqp::connect().await;
    let exchange = format!("sluice.{}.orders", ns.name);
    for i in 0..300 {
        let id = format!("o-{i}");
        let version = (i % 2 == 0).then_some("v3");
        amqp.publish_event(&exchange, "order.created", &id, v3(&id, i).as_bytes(), Some("application/json"), version)
            .await;
    }
    for i in 0..20 {
        let id = format!("p2-{i}");
        amqp.publish_event(
            &exchange,
            "order.created",
            &id,
            v2(&id, i).as_bytes(),
            Some("application/json"),
            Some("v2"),
        )
        .await;
    }
    for i in 0..5 {
        let id = format!("bad-{i}");
        amqp.publish_event(
            &exchange,
            "order.created",
            &id,
            format!(r#"{{"id":"{id}"}}"#).as_bytes(),
            Some("application/json"),
            Some("v3"),
        )
        .await;
        let id = format!("txt-{i}");
        amqp.publish_event(&exchange, "order.created", &id, b"not json at all", Some("text/plain"), None).await;
    }
    let dlq = |sub: &str| format!("sluice.{}.{sub}.dlq", ns.name);
    eventually("every event delivered or dead-lettered by each Subscription", WAIT, || async {
        let delivered = {
            let seen = receiver.seen.lock().expect("lock");
            [
                count(&seen, "v3", "o-"),
                count(&seen, "v2", "o-"),
                count(&seen, "v1", "o-"),
                count(&seen, "v2", "p2-"),
                count(&seen, "v1", "p2-"),
            ]
        };
        let dead = [
            amqp.count(&dlq("billing-v3")).await,
            amqp.count(&dlq("billing-v2")).await,
            amqp.count(&dlq("billing-v1")).await,
        ];
        (delivered == [300, 300, 300, 20, 20] && dead == [30, 10, 10]).then_some(())
    })
    .await;
    {
        let seen = receiver.seen.lock().expect("lock");
        assert_eq!(seen.bad_signatures, 0);
        let (v2_link, v1_link) = (
            Some(r#"<https://docs.example.com/orders/v2>; rel="deprecation""#),
            Some(r#"<https://docs.example.com/orders/v1>; rel="deprecation""#),
        );
        for (version, prefix, expected) in [
            ("v3", "o-", v3 as fn(&str, usize) -> String),
            ("v2", "o-", v3_as_v2),
            ("v1", "o-", v3_as_v1),
            ("v2", "p2-", v2),
            ("v1", "p2-", v2_as_v1),
        ] {
            let by_id = received(&seen, version, prefix);
            let n = if prefix == "o-" { 300 } else { 20 };
            assert_eq!(by_id.len(), n, "{n} {prefix} events as {version}");
            for i in 0..n {
                let id = format!("{prefix}{i}");
                let copies = &by_id[id.as_str()];
                assert_eq!(copies.len(), 1, "{id} as {version} exactly once");
                let r = copies[0];
                assert_eq!(
                    std::str::from_utf8(&r.body).expect("utf-8"),
                    expected(&id, i),
                    "{id} as {version}, byte for byte"
                );
                match version {
                    "v3" => assert_headers(r, "v3", None, None, None),
                    "v2" => assert_headers(r, "v2", Some(V2_DEPRECATED.1), None, v2_link),
                    _ => assert_headers(r, "v1", Some(V1_DEPRECATED.1), Some(V1_SUNSET.1), v1_link),
                }
            }
        }
        assert!(!seen.requests.iter().any(|r| r.id.starts_with("bad-") || r.id.starts_with("txt-")), "never delivered");
    }
    // Each dead letter says why: v3 cannot be rendered as a newer version than its own.
    let reasons = |ids: Vec<(String, String)>| {
        let mut by_reason: HashMap<String, usize> = HashMap::new();
        for (id, reason) in ids {
            let expected = match id.split('-').next() {
                Some("bad") => "schema-invalid",
                Some("txt") => "unsupported-content-type",
                _ => "version-unavailable",
            };
            assert_eq!(reason, expected, "{id}");
            *by_reason.entry(reason).or_default() += 1;
        }
        by_reason
    };
    let v3_dead = reasons(amqp.drain_reasons(&dlq("billing-v3")).await);
    assert_eq!(
        v3_dead,
        HashMap::from([
            ("version-unavailable".into(), 20),
            ("schema-invalid".into(), 5),
            ("unsupported-content-type".into(), 5)
        ])
    );
    for sub in ["billing-v2", "billing-v1"] {
        let dead = reasons(amqp.drain_reasons(&dlq(sub)).await);
        assert_eq!(
            dead,
            HashMap::from([("schema-invalid".into(), 5), ("unsupported-content-type".into(), 5)]),
            "{sub}"
        );
    }

    // Phase 2: v1's sunset moves to 25 s from now; at that instant billing-v1 stops.
    let sunset = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(25);
    let sunset = k8s_openapi::jiff::Timestamp::from_second(sunset.as_second()).expect("whole seconds");
    let moved = json!([{"op": "replace", "path": "/spec/versions/2/sunsetAt", "value": sunset.to_string()}]);
    let patch: json_patch::Patch = serde_json::from_value(moved).expect("patch");
    ns.api::<ApiVersionPolicy>()
        .patch("orders-versions", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .expect("sunset");
    // The new sunset reaches the dispatcher: its configuration changes and it rolls.
    eventually("the dispatcher configuration to carry the new sunset", WAIT, || async {
        let map = ns.api::<k8s_openapi::api::core::v1::ConfigMap>().get("sluice-dispatcher-hook").await.ok()?;
        map.data?.get("dispatch.json")?.contains(&sunset.to_string()).then_some(())
    })
    .await;
    rolled_out(&ns, "hook").await;
    assert!(
        k8s_openapi::jiff::Timestamp::now() < sunset,
        "the dispatcher rolled out after the sunset: the test needs it before"
    );
    // An event every 50 ms from before the sunset until 3 s after it: the dispatcher stops
    // consuming billing-v1 at the instant, with deliveries in flight.
    let edges = {
        let exchange = exchange.clone();
        let until = sunset + k8s_openapi::jiff::SignedDuration::from_secs(3);
        tokio::spawn(async move {
            let amqp = Amqp::connect().await;
            let mut i = 0;
            while k8s_openapi::jiff::Timestamp::now() < until {
                let id = format!("edge-{i}");
                let body = v3(&id, i);
                amqp.publish_event(&exchange, "order.created", &id, body.as_bytes(), Some("application/json"), None)
                    .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            amqp.close().await;
            i
        })
    };
    ns.wait_condition::<Subscription>("billing-v1", "Ready", "False", "VersionSunset").await;
    let edges = edges.await.expect("the publisher");
    let work = format!("sluice.{}.billing-v1", ns.name);
    let (edge_v1, waiting) =
        eventually("every edge event delivered as v3 and v2, the rest of v1's waiting", WAIT, || async {
            let (v3s, v2s, v1s) = {
                let seen = receiver.seen.lock().expect("lock");
                (count(&seen, "v3", "edge-"), count(&seen, "v2", "edge-"), count(&seen, "v1", "edge-"))
            };
            let waiting = usize::try_from(amqp.count(&work).await).expect("count");
            (v3s == edges && v2s == edges && v1s + waiting == edges).then_some((v1s, waiting))
        })
        .await;
    {
        let seen = receiver.seen.lock().expect("lock");
        let cutoff = sunset.as_second();
        for (id, copies) in received(&seen, "v1", "edge-") {
            assert_eq!(copies.len(), 1, "{id} as v1 once");
            let signed: i64 = copies[0].header("webhook-timestamp").and_then(|t| t.parse().ok()).expect("timestamp");
            assert!(signed < cutoff, "{id} delivered as v1 at {signed}, at or after the sunset {cutoff}");
        }
    }
    println!("{edges} events across the sunset: {edge_v1} delivered as v1 before it, {waiting} kept for billing-v1");
    assert!(edge_v1 > 0 && waiting > 0, "the sunset fell while billing-v1 was delivering: {edge_v1} / {waiting}");
    let events = events_for(&admin_client().await, &ns.name, "billing-v1").await;
    assert!(events.iter().any(|(t, r, _)| t == "Warning" && r == "VersionSunset"), "{events:?}");
    board_is(
        &ns,
        "orders-versions",
        &[
            row("v3", "Current", 1, &[]),
            row("v2", "Deprecated", 1, &["billing-v2"]),
            row("v1", "Sunset", 1, &["billing-v1"]),
        ],
        (1, 1),
    )
    .await;
    let ctl = &running.1;
    let series = |version: &str, state: &str| {
        format!(
            r#"sluice_subscriptions_by_version{{namespace="{}",topic="orders",version="{version}",state="{state}"}}"#,
            ns.name
        )
    };
    eventually("the board's metric", WAIT, || async {
        (ctl.metric(&series("v1", "Sunset")).await == Some(1.0)).then_some(())
    })
    .await;
    let sunset_series =
        format!(r#"sluice_version_sunset_timestamp_seconds{{namespace="{}",topic="orders",version="v1"}}"#, ns.name);
    #[allow(clippy::cast_precision_loss, reason = "a Unix second fits f64 exactly")]
    let sunset_seconds = sunset.as_second() as f64;
    assert_eq!(ctl.metric(&sunset_series).await, Some(sunset_seconds));

    let v1_before = count(&receiver.seen.lock().expect("lock"), "v1", "");
    for i in 0..50 {
        let id = format!("late-{i}");
        amqp.publish_event(&exchange, "order.created", &id, v3(&id, i).as_bytes(), Some("application/json"), None)
            .await;
    }
    let kept = u32::try_from(waiting + 50).expect("count");
    eventually("50 late events as v3 and v2, and all of them waiting for billing-v1", WAIT, || async {
        let counts = {
            let seen = receiver.seen.lock().expect("lock");
            (count(&seen, "v3", "late-"), count(&seen, "v2", "late-"))
        };
        (counts == (50, 50) && amqp.count(&work).await == kept).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(amqp.count(&work).await, kept, "every late event waits in billing-v1's queue");
    assert_eq!(count(&receiver.seen.lock().expect("lock"), "v1", "late-"), 0, "none delivered as v1 after the sunset");
    assert_eq!(count(&receiver.seen.lock().expect("lock"), "v1", "o-"), 300, "no v1 delivery after the sunset");
    assert_eq!(count(&receiver.seen.lock().expect("lock"), "v1", "edge-"), edge_v1, "none since");
    assert_eq!(amqp.count(&dlq("billing-v1")).await, 0, "none dead-lettered");

    // Phase 3: re-pinned to v2, billing-v1 receives the 50 it kept, as v2, once each.
    let repin = json!({"spec": {"eventVersion": "v2"}});
    ns.api::<Subscription>().patch("billing-v1", &PatchParams::default(), &Patch::Merge(&repin)).await.expect("re-pin");
    ns.wait_condition::<Subscription>("billing-v1", "Ready", "True", "Ready").await;
    eventually("the kept events delivered as v2 to billing-v1 (so twice as v2 in all)", WAIT, || async {
        let seen = receiver.seen.lock().expect("lock");
        let late = received(&seen, "v2", "late-");
        let edge = received(&seen, "v2", "edge-");
        let twice = edge.values().filter(|c| c.len() == 2).count();
        let ok = late.len() == 50 && late.values().all(|c| c.len() == 2);
        (ok && edge.len() == edges && edge.values().all(|c| c.len() <= 2) && twice == waiting).then_some(())
    })
    .await;
    {
        let seen = receiver.seen.lock().expect("lock");
        for (id, copies) in received(&seen, "v2", "late-") {
            let i: usize = id.trim_start_matches("late-").parse().expect("index");
            for r in copies {
                assert_eq!(std::str::from_utf8(&r.body).expect("utf-8"), v3_as_v2(id, i));
                assert_headers(
                    r,
                    "v2",
                    Some(V2_DEPRECATED.1),
                    None,
                    Some(r#"<https://docs.example.com/orders/v2>; rel="deprecation""#),
                );
            }
        }
        assert_eq!(count(&seen, "v1", ""), v1_before, "still nothing as v1");
    }
    assert_eq!(amqp.count(&work).await, 0);
    board_is(
        &ns,
        "orders-versions",
        &[
            row("v3", "Current", 1, &[]),
            row("v2", "Deprecated", 2, &["billing-v1", "billing-v2"]),
            row("v1", "Sunset", 0, &[]),
        ],
        (2, 0),
    )
    .await;

    // Warn: payments-v1 is past its sunset and keeps receiving, saying so.
    let pay = format!("sluice.{}.payments", ns.name);
    for i in 0..10 {
        let id = format!("pay-{i}");
        amqp.publish_event(
            &pay,
            "payment.captured",
            &id,
            format!(r#"{{"id":"{id}"}}"#).as_bytes(),
            Some("application/json"),
            None,
        )
        .await;
    }
    eventually("10 payments delivered as v1", WAIT, || async {
        (count(&receiver.seen.lock().expect("lock"), "v1", "pay-") == 10).then_some(())
    })
    .await;
    {
        let seen = receiver.seen.lock().expect("lock");
        for (id, copies) in received(&seen, "v1", "pay-") {
            assert_eq!(copies.len(), 1);
            assert_eq!(
                std::str::from_utf8(&copies[0].body).expect("utf-8"),
                format!(r#"{{"id":"{id}","legacy":true}}"#)
            );
            assert_eq!(copies[0].header("sunset"), Some("Sun, 01 Nov 2026 00:00:00 GMT"));
        }
    }
    let warned = ns.get_json::<Subscription>("payments-v1").await.expect("subscription");
    assert_eq!(condition(&warned, "Ready").map(|c| c.0).as_deref(), Some("True"));
    let (status, reason, message) = condition(&warned, "VersionSunset").expect("VersionSunset condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "VersionSunset"), "{message}");
    assert_eq!(
        warned["status"]["version"],
        json!({"name": "v1", "state": "Sunset", "sunsetAt": "2026-11-01T00:00:00Z"})
    );
    let events = events_for(&admin_client().await, &ns.name, "payments-v1").await;
    assert!(events.iter().any(|(t, r, _)| t == "Warning" && r == "VersionSunset"), "{events:?}");
    let warn_series = format!(
        r#"sluice_subscriptions_by_version{{namespace="{}",topic="payments",version="v1",state="Sunset"}}"#,
        ns.name
    );
    eventually("the Warn board's metric", WAIT, || async {
        (ctl.metric(&warn_series).await == Some(1.0)).then_some(())
    })
    .await;

    amqp.close().await;
    ns.teardown().await;
}

async fn admin_client() -> kube::Client {
    crate::harness::admin().await
}

#[tokio::test]
async fn a_policy_reports_its_topic_conflicts_and_broken_patches_and_subscriptions_their_pins() {
    let _serial = serial();
    let (ns, _running) = bed("versions-status").await;
    let meta = |kind: &str, name: &str, spec: Value| json!({"apiVersion": "sluice.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    // No topic yet: not Ready, and kstatus sees it in progress (Reconciling), not failed.
    create::<ApiVersionPolicy>(&ns, meta("ApiVersionPolicy", "orders-versions", orders_policy("Block"))).await;
    let message = ns.wait_condition::<ApiVersionPolicy>("orders-versions", "Ready", "False", "TopicNotFound").await;
    assert!(message.contains(&format!("EventTopic {}/orders does not exist", ns.name)), "{message}");
    let policy = ns.get_json::<ApiVersionPolicy>("orders-versions").await.expect("policy");
    assert_eq!(condition(&policy, "Reconciling").map(|c| c.0).as_deref(), Some("True"));
    assert_eq!(condition(&policy, "Stalled").map(|c| c.0).as_deref(), Some("False"));
    create::<EventTopic>(&ns, meta("EventTopic", "orders", orders_catalog())).await;
    ns.wait_ready("apiversionpolicy/orders-versions");
    let ready = ns.wait_condition::<ApiVersionPolicy>("orders-versions", "Ready", "True", "Ready").await;
    assert!(ready.contains("2 example(s) rendered through 3 version step(s)"), "{ready}");

    // One policy per topic: the second names the first.
    create::<ApiVersionPolicy>(&ns, meta("ApiVersionPolicy", "more-versions", orders_policy("Warn"))).await;
    let conflict = ns.wait_condition::<ApiVersionPolicy>("more-versions", "Ready", "False", "Conflict").await;
    assert!(conflict.contains("ApiVersionPolicy orders-versions already governs EventTopic orders"), "{conflict}");

    // Pins: known, unknown, and without any policy.
    subscription(&ns, "known", "orders", "v2", false).await;
    subscription(&ns, "unknown", "orders", "v7", false).await;
    create::<EventTopic>(&ns, meta("EventTopic", "audit", json!({"type": "topic"}))).await;
    subscription(&ns, "unversioned", "audit", "v1", false).await;
    ns.wait_ready("subscription/known");
    let known = ns.get_json::<Subscription>("known").await.expect("subscription");
    assert_eq!(known["status"]["version"], json!({"name": "v2", "state": "Deprecated"}));
    let (ok, printed) = crate::harness::kubectl(&["get", "esub", "known", "-n", &ns.name, "--no-headers"]);
    assert!(
        ok && printed.split_whitespace().nth(3) == Some("v2"),
        "the Version column (no Webhook column value): {printed}"
    );
    let unknown = ns.wait_condition::<Subscription>("unknown", "Ready", "False", "UnknownVersion").await;
    assert_eq!(
        unknown,
        "spec.eventVersion v7 is not a version of ApiVersionPolicy orders-versions, which lists v3, v2, v1"
    );
    let none = ns.wait_condition::<Subscription>("unversioned", "Ready", "False", "NoVersionPolicy").await;
    assert!(none.contains("topic audit has no ApiVersionPolicy"), "{none}");

    // A patch that breaks the catalog's example is refused before any event is delivered.
    let broken =
        json!([{"op": "replace", "path": "/spec/versions/1/changes/0/patch/1/from", "value": "/customer/nickname"}]);
    let patch: json_patch::Patch = serde_json::from_value(broken).expect("patch");
    ns.api::<ApiVersionPolicy>()
        .patch("orders-versions", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .expect("break");
    let invalid = ns.wait_condition::<ApiVersionPolicy>("orders-versions", "Ready", "False", "ConversionInvalid").await;
    assert_eq!(
        invalid,
        r#"conversion dry run failed: order.created example 0 of v3: step v3 -> v2: changes[0].patch[1] (move /customer/nickname -> /customerName) failed: "from" path is invalid"#
    );
    let policy = ns.get_json::<ApiVersionPolicy>("orders-versions").await.expect("policy");
    assert_eq!(condition(&policy, "Stalled").map(|c| c.0).as_deref(), Some("True"), "a human must fix it");
    // The Subscriptions on its topic say so and keep what they had.
    ns.wait_condition::<Subscription>("known", "Ready", "False", "VersionPolicyNotReady").await;
    let events = events_for(&admin_client().await, &ns.name, "orders-versions").await;
    assert!(events.iter().any(|(t, r, _)| t == "Warning" && r == "ConversionInvalid"), "{events:?}");
    ns.teardown().await;
}
