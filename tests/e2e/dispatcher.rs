//! The dispatcher against the real broker and a real local receiver that verifies every
//! signature. The Subscription's queues come from the controller (real control plane); the
//! dispatcher runs as a process with a configuration rendered from the Subscription's status.
//! Every published id is accounted for: received (exactly once unless a duplicate is
//! reported) or in the dead-letter queue with its reason.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use kube::api::PostParams;
use lapin::{options::BasicGetOptions, types::AMQPValue};
use serde_json::{Value, json};
use sluice::api::{EventTopic, Subscription};

use crate::{
    harness::{Amqp, Controller, ControllerOpts, Dispatcher, TestNamespace, admin, eventually, serial},
    receiver::{Behaviour, receiver},
};

const WAIT: Duration = Duration::from_secs(120);

/// A topic, a Subscription with a short retry schedule, Ready; returns the Subscription's status.
async fn subscription(ns: &TestNamespace, schedule: &[&str]) -> Value {
    let topic: EventTopic = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic", "metadata": {"name": "orders"}, "spec": {"type": "topic"}
    }))
    .expect("topic");
    ns.api::<EventTopic>().create(&PostParams::default(), &topic).await.expect("topic");
    let sub: Subscription = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": "billing"},
        "spec": {"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]},
                 "retry": {"schedule": schedule}, "deletionPolicy": "Delete"}
    }))
    .expect("subscription");
    ns.api::<Subscription>().create(&PostParams::default(), &sub).await.expect("subscription");
    ns.wait_ready("subscription/billing");
    ns.get_json::<Subscription>("billing").await.expect("subscription")["status"].clone()
}

/// The dispatch configuration for the Subscription, delivering to the receiver.
fn config(ns: &TestNamespace, status: &Value, schedule_ms: &[u64], receiver: SocketAddr) -> Value {
    json!({
        "namespace": ns.name, "webhook": "billing-hook", "url": format!("http://{receiver}/hook"),
        "timeout": 5000, "connectTimeout": 2000, "maxInFlight": 32,
        "circuitBreaker": {"failureRatio": 1.0, "minAttempts": 1_000_000, "window": 60_000, "openFor": 1000},
        "egress": {"allow": ["127.0.0.0/8"]},
        "subscriptions": [{
            "name": "billing", "queue": status["queue"], "retryQueues": status["retryQueues"],
            "schedule": schedule_ms, "deadLetterQueue": status["deadLetterQueue"]
        }]
    })
}

#[tokio::test]
async fn ten_thousand_events_arrive_once_each_with_valid_signatures() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "dispatch-all").await;
    let ctl = Controller::start(&ControllerOpts::new("dispatch-all"));
    ctl.wait_leader().await;
    let status = subscription(&ns, &["100ms"]).await;
    let (addr, secret, seen) = receiver(Arc::new(|_, _| 204)).await;
    let dispatcher = Dispatcher::dispatcher(&config(&ns, &status, &[100], addr), &secret);
    dispatcher.wait_ready().await;

    let amqp = Amqp::connect().await;
    let exchange = format!("sluice.{}.orders", ns.name);
    amqp.publish(&exchange, "order.created", "evt", 10_000).await;
    eventually("10,000 deliveries", WAIT, || async {
        (seen.lock().expect("lock").delivered.len() == 10_000).then_some(())
    })
    .await;
    // Anything still on its way would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seen = seen.lock().expect("lock");
    let duplicates: u32 = seen.delivered.values().map(|n| n - 1).sum();
    assert_eq!(seen.bad_signatures, 0);
    assert_eq!(duplicates, 0, "duplicate deliveries");
    assert!((0..10_000).all(|i| seen.delivered.contains_key(&format!("evt-{i}"))));
    drop(seen);
    let work = status["queue"].as_str().expect("queue");
    let dlq = status["deadLetterQueue"].as_str().expect("dlq");
    assert_eq!(amqp.count(dlq).await, 0);
    assert_eq!(amqp.count(work).await, 0);
    let attempts = r#"sluice_delivery_attempts_total{namespace="NS",webhook="billing-hook",subscription="billing",outcome="delivered",status_class="2xx"}"#
        .replace("NS", &ns.name);
    assert_eq!(dispatcher.metric(&attempts).await, Some(10_000.0));
    amqp.close().await;
    drop(dispatcher);
    ns.teardown().await;
}

#[tokio::test]
async fn transient_failures_retry_through_the_broker_and_bad_requests_dead_letter() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "dispatch-retry").await;
    let ctl = Controller::start(&ControllerOpts::new("dispatch-retry"));
    ctl.wait_leader().await;
    let status = subscription(&ns, &["100ms", "200ms", "300ms"]).await;
    let behaviour: Behaviour = Arc::new(|id, attempt| match id.split('-').next() {
        Some("flaky") if attempt <= 2 => 500,
        Some("bad") => 400,
        _ => 200,
    });
    let (addr, secret, seen) = receiver(behaviour).await;
    let dispatcher = Dispatcher::dispatcher(&config(&ns, &status, &[100, 200, 300], addr), &secret);
    dispatcher.wait_ready().await;

    let amqp = Amqp::connect().await;
    let exchange = format!("sluice.{}.orders", ns.name);
    amqp.publish(&exchange, "order.created", "flaky", 200).await;
    amqp.publish(&exchange, "order.created", "bad", 50).await;
    amqp.publish(&exchange, "order.created", "ok", 100).await;
    let dlq = status["deadLetterQueue"].as_str().expect("dlq").to_owned();
    eventually("300 deliveries and 50 dead letters", WAIT, || async {
        (seen.lock().expect("lock").delivered.len() == 300 && amqp.count(&dlq).await == 50).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.bad_signatures, 0);
        for i in 0..200 {
            let id = format!("flaky-{i}");
            assert_eq!(seen.attempts.get(&id), Some(&3), "{id} delivered on its third attempt");
            assert_eq!(seen.delivered.get(&id), Some(&1), "{id} delivered once");
        }
        for i in 0..50 {
            assert_eq!(seen.attempts.get(&format!("bad-{i}")), Some(&1), "a 400 is not retried");
        }
    }
    // The dead letters say why.
    let mut reasons = HashMap::new();
    while let Some(m) =
        amqp.channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("get")
    {
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let h = headers.inner();
        let reason = match (h.get("x-sluice-reason"), h.get("x-sluice-last-status")) {
            (Some(AMQPValue::LongString(reason)), Some(AMQPValue::ShortUInt(status))) => {
                format!("{}/{status}", String::from_utf8_lossy(reason.as_bytes()))
            }
            other => format!("unexpected headers {other:?}"),
        };
        let id = m.delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
        assert!(id.starts_with("bad-"), "{id}");
        *reasons.entry(reason).or_insert(0) += 1;
    }
    assert_eq!(reasons.into_iter().collect::<Vec<_>>(), [("non-retryable-status/400".to_owned(), 50)]);
    let series = |name: &str, extra: &str| {
        format!(r#"{name}{{namespace="{}",webhook="billing-hook",subscription="billing",{extra}}}"#, ns.name)
    };
    assert_eq!(dispatcher.metric(&series("sluice_retries_total", r#"step="1""#)).await, Some(200.0));
    assert_eq!(dispatcher.metric(&series("sluice_retries_total", r#"step="2""#)).await, Some(200.0));
    assert_eq!(dispatcher.metric(&series("sluice_retries_total", r#"step="3""#)).await, None);
    assert_eq!(
        dispatcher.metric(&series("sluice_dead_lettered_total", r#"reason="non-retryable-status""#)).await,
        Some(50.0)
    );
    amqp.close().await;
    drop(dispatcher);
    ns.teardown().await;
}

#[tokio::test]
async fn gone_stops_consumption_and_keeps_every_message() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "dispatch-gone").await;
    let ctl = Controller::start(&ControllerOpts::new("dispatch-gone"));
    ctl.wait_leader().await;
    let status = subscription(&ns, &["100ms"]).await;
    let (addr, secret, seen) = receiver(Arc::new(|_, _| 410)).await;
    let dispatcher = Dispatcher::dispatcher(&config(&ns, &status, &[100], addr), &secret);
    dispatcher.wait_ready().await;

    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 100).await;
    let work = status["queue"].as_str().expect("queue").to_owned();
    let gone = format!(
        r#"sluice_delivery_attempts_total{{namespace="{}",webhook="billing-hook",subscription="billing",outcome="gone",status_class="4xx"}}"#,
        ns.name
    );
    eventually("a 410 seen", WAIT, || async { dispatcher.metric(&gone).await.map(|_| ()) }).await;
    // Every message is back in (or never left) the work queue; nothing was delivered or lost.
    eventually("all 100 messages waiting in the work queue", WAIT, || async {
        (amqp.count(&work).await == 100).then_some(())
    })
    .await;
    let attempts: u32 = seen.lock().expect("lock").attempts.values().sum();
    assert!(attempts <= 32, "consumption stopped after the first answers ({attempts} attempts)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(seen.lock().expect("lock").attempts.values().sum::<u32>(), attempts, "no attempt after 410");
    assert_eq!(amqp.count(&work).await, 100);
    amqp.close().await;
    drop(dispatcher);
    ns.teardown().await;
}

/// An endpoint that holds each request for `hold` and records the most requests it ever had in
/// flight at once.
async fn slow_endpoint(hold: Duration) -> (SocketAddr, Arc<std::sync::Mutex<(u32, u32, u32)>>) {
    use axum::{Router, extract::State, http::StatusCode, routing::post};
    // (in flight now, most in flight at once, requests seen)
    let counts = Arc::new(std::sync::Mutex::new((0u32, 0u32, 0u32)));
    let handler = move |State(counts): State<Arc<std::sync::Mutex<(u32, u32, u32)>>>| async move {
        {
            let mut c = counts.lock().expect("lock");
            c.0 += 1;
            c.1 = c.1.max(c.0);
            c.2 += 1;
        }
        tokio::time::sleep(hold).await;
        counts.lock().expect("lock").0 -= 1;
        StatusCode::NO_CONTENT
    };
    let app = Router::new().route("/hook", post(handler)).with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, counts)
}

#[tokio::test]
async fn max_in_flight_bounds_a_replica_across_all_its_subscriptions() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "dispatch-inflight").await;
    let ctl = Controller::start(&ControllerOpts::new("dispatch-inflight"));
    ctl.wait_leader().await;
    let topic: EventTopic = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic", "metadata": {"name": "orders"}, "spec": {"type": "topic"}
    }))
    .expect("topic");
    ns.api::<EventTopic>().create(&PostParams::default(), &topic).await.expect("topic");
    let names = ["billing", "audit", "ledger"];
    for name in names {
        let sub: Subscription = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": name},
            "spec": {"topicRef": {"name": "orders"}, "retry": {"schedule": ["1s"]}, "deletionPolicy": "Delete"}
        }))
        .expect("subscription");
        ns.api::<Subscription>().create(&PostParams::default(), &sub).await.expect("subscription");
    }
    let mut routes = Vec::new();
    for name in names {
        ns.wait_ready(&format!("subscription/{name}"));
        let status = ns.get_json::<Subscription>(name).await.expect("subscription")["status"].clone();
        routes.push(json!({
            "name": name, "queue": status["queue"], "retryQueues": status["retryQueues"],
            "schedule": [1000], "deadLetterQueue": status["deadLetterQueue"]
        }));
    }
    let (addr, counts) = slow_endpoint(Duration::from_millis(50)).await;
    let config = json!({
        "namespace": ns.name, "webhook": "hook", "url": format!("http://{addr}/hook"),
        "timeout": 5000, "connectTimeout": 2000, "maxInFlight": 4,
        "circuitBreaker": {"failureRatio": 1.0, "minAttempts": 1_000_000, "window": 60_000, "openFor": 1000},
        "egress": {"allow": ["127.0.0.0/8"]}, "subscriptions": routes
    });
    let dispatcher = Dispatcher::dispatcher(&config, &sluice::dispatch::signing::generate_secret());
    dispatcher.wait_ready().await;

    // Every event reaches all three Subscriptions: 3 x 100 deliveries, each held 50 ms.
    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 100).await;
    eventually("300 deliveries, none left in flight", WAIT, || async {
        let (now, _, seen) = *counts.lock().expect("lock");
        (seen == 300 && now == 0).then_some(())
    })
    .await;
    let (now, most, seen) = *counts.lock().expect("lock");
    println!("maxInFlight 4 over 3 Subscriptions: at most {most} requests in flight");
    assert_eq!((now, seen), (0, 300));
    assert_eq!(most, 4, "4 requests in flight per replica, not 4 per Subscription");
    for name in names {
        assert_eq!(amqp.count(&format!("sluice.{}.{name}", ns.name)).await, 0, "{name} drained");
    }
    amqp.close().await;
    drop(dispatcher);
    ns.teardown().await;
}
