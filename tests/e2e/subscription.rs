//! Subscriptions end to end: the queues, retry ladder, dead-letter queue, bindings and
//! policies on the broker; live changes that keep every message; references followed by
//! watches; deletion policies; drift repair; dead-letter redrive.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use sluice::api::{EventTopic, Subscription, Webhook};

use crate::{
    event_topic::topic,
    harness::{
        Amqp, Controller, ControllerOpts, Rabbit, TestNamespace, admin, event_count, events_for, eventually, ids,
        kubectl, serial, text_header,
    },
};

const WAIT: Duration = Duration::from_secs(90);

fn subscription(name: &str, spec: Value) -> Subscription {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("subscription")
}

async fn create_topic(ns: &TestNamespace, name: &str, spec: Value) {
    ns.api::<EventTopic>().create(&PostParams::default(), &topic(name, spec)).await.expect("create topic");
    ns.wait_ready(&format!("eventtopic/{name}"));
}

async fn create_sub(ns: &TestNamespace, name: &str, spec: Value) {
    ns.api::<Subscription>()
        .create(&PostParams::default(), &subscription(name, spec))
        .await
        .expect("create subscription");
}

async fn patch_spec(ns: &TestNamespace, name: &str, spec: Value) {
    let patch = Patch::Merge(json!({"spec": spec}));
    ns.api::<Subscription>().patch(name, &PatchParams::default(), &patch).await.expect("patch subscription");
}

/// Waits until the Subscription is Ready for its current generation; returns its status.
async fn wait_sub_ready(ns: &TestNamespace, name: &str) -> Value {
    eventually(&format!("subscription {name} Ready for its generation"), WAIT, || async {
        let obj = ns.get_json::<Subscription>(name).await?;
        let ready = obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
        // The condition's own observedGeneration, as kubectl wait checks it.
        let current = ready["observedGeneration"] == obj["metadata"]["generation"];
        (ready["status"] == "True" && current).then(|| obj["status"].clone())
    })
    .await
}

fn queue_name(ns: &TestNamespace, sub: &str) -> String {
    format!("sluice.{}.{sub}", ns.name)
}

#[tokio::test]
async fn a_subscription_becomes_a_work_queue_with_a_retry_ladder_and_a_dead_letter_queue() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "sub").await;
    let ctl = Controller::start(&ControllerOpts { resync: "3s", ..ControllerOpts::new("sub") });
    ctl.wait_leader().await;
    create_topic(&ns, "orders", json!({"type": "topic"})).await;
    create_sub(
        &ns,
        "billing",
        json!({"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]},
               "retry": {"schedule": ["1s", "2s"]}, "queue": {"deliveryLimit": 2}, "deletionPolicy": "Delete"}),
    )
    .await;
    ns.wait_ready("subscription/billing");

    let rabbit = Rabbit::new();
    let work = queue_name(&ns, "billing");
    let (dlq, retry1, retry2) = (format!("{work}.dlq"), format!("{work}.retry.1"), format!("{work}.retry.2"));
    let q = rabbit.queue(&work).await.expect("work queue");
    assert_eq!(
        q["arguments"],
        json!({"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
               "x-dead-letter-strategy": "at-least-once"})
    );
    assert_eq!(q["durable"], true);
    for (name, ttl) in [(&retry1, 1000), (&retry2, 2000)] {
        let r = rabbit.queue(name).await.expect("retry queue");
        assert_eq!(r["arguments"]["x-message-ttl"], ttl, "{name}");
        assert_eq!(r["arguments"]["x-dead-letter-routing-key"], work.as_str(), "{name}");
        assert_eq!(r["arguments"]["x-queue-type"], "quorum", "{name}");
    }
    assert!(rabbit.queue(&format!("{work}.retry.3")).await.is_none());
    assert_eq!(rabbit.queue(&dlq).await.expect("dead-letter queue")["arguments"], json!({"x-queue-type": "quorum"}));
    let policy = rabbit.policy(&work).await.expect("the subscription's own policy");
    assert_eq!(policy["definition"], json!({"delivery-limit": 2, "overflow": "reject-publish"}));
    assert_eq!(policy["pattern"], format!("^{}$", work.replace('.', r"\.")));
    let shared = rabbit.policy("sluice.work-queue-defaults").await.expect("shared policy");
    assert_eq!(shared["definition"], json!({"delivery-limit": 20, "overflow": "reject-publish"}));
    let exchange = format!("sluice.{}.orders", ns.name);
    assert_eq!(rabbit.binding_keys(&exchange, &work).await, ["order.*"]);

    let status = wait_sub_ready(&ns, "billing").await;
    assert_eq!(status["queue"], work.as_str());
    assert_eq!(status["deadLetterQueue"], dlq.as_str());
    assert_eq!(status["retryQueues"], json!([retry1, retry2]));
    assert_eq!(status["bindings"], json!(["order.*"]));
    assert_eq!(status["exchange"], exchange.as_str());
    assert_eq!(status["broker"], "default");
    let (ok, out) = kubectl(&["get", "esub", "billing", "-n", &ns.name]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "TOPIC", "WEBHOOK", "VERSION", "MESSAGES", "DLQ", "AGE"]);

    // The ladder: a message in a retry step comes back to the work queue when its delay is up.
    let amqp = Amqp::connect().await;
    amqp.publish(&exchange, "order.created", "first", 1).await;
    amqp.publish("", &retry1, "retried", 1).await;
    eventually("the retried message back in the work queue", WAIT, || async {
        (amqp.count(&work).await == 2 && amqp.count(&retry1).await == 0).then_some(())
    })
    .await;

    // Poison: a message the consumer keeps rejecting goes to the DLQ after the delivery limit.
    let options = BasicGetOptions { no_ack: false };
    eventually("both messages dead-lettered after 2 deliveries", WAIT, || async {
        if let Some(m) = amqp.channel.basic_get(work.as_str().into(), options).await.expect("get") {
            m.delivery.acker.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
        }
        (amqp.count(&work).await == 0 && amqp.count(&dlq).await == 2).then_some(())
    })
    .await;
    let mut dead = amqp.drain(&dlq).await;
    dead.sort();
    assert_eq!(dead, ["first-0", "retried-0"]);
    amqp.publish("", &dlq, "dead", 3).await;

    // Counts in status and metrics follow the broker's statistics on the resync.
    let labels = format!(r#"namespace="{}",subscription="billing""#, ns.name);
    eventually("the dead-letter count in status and metrics", WAIT, || async {
        let status = ns.get_json::<Subscription>("billing").await?["status"].clone();
        let metric = ctl.metric(&format!(r#"sluice_queue_messages{{{labels},queue="dlq"}}"#)).await;
        (status["messages"]["deadLettered"] == 3 && metric == Some(3.0)).then_some(())
    })
    .await;
    assert_eq!(ctl.metric(&format!(r#"sluice_queue_messages{{{labels},queue="work"}}"#)).await, Some(0.0));
    amqp.close().await;
    ns.teardown().await;
    assert!(rabbit.queue(&work).await.is_none() && rabbit.queue(&dlq).await.is_none(), "Delete removes the queues");
    assert!(rabbit.policy(&work).await.is_none(), "and the policy");
}

#[tokio::test]
async fn changing_every_tunable_routing_key_and_retry_step_keeps_every_message() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "live").await;
    let ctl = Controller::start(&ControllerOpts::new("live"));
    ctl.wait_leader().await;
    create_topic(&ns, "orders", json!({"type": "topic"})).await;
    create_sub(
        &ns,
        "audit",
        json!({"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]},
               "retry": {"schedule": ["1h", "2h", "3h"]}, "deletionPolicy": "Delete"}),
    )
    .await;
    wait_sub_ready(&ns, "audit").await;

    let rabbit = Rabbit::new();
    let amqp = Amqp::connect().await;
    let work = queue_name(&ns, "audit");
    let exchange = format!("sluice.{}.orders", ns.name);
    amqp.publish(&exchange, "order.created", "order", 1000).await;
    amqp.publish("", &format!("{work}.retry.1"), "step1", 7).await;
    amqp.publish("", &format!("{work}.retry.3"), "step3", 10).await;
    assert_eq!(amqp.count(&work).await, 1000);
    assert!(rabbit.policy(&work).await.is_none(), "default limits use the shared policy");

    // Every queue tunable, the routing keys, a changed step (1h -> 2h) and a removed step (3).
    patch_spec(
        &ns,
        "audit",
        json!({"filter": {"routingKeys": ["payment.*", "order.created"]},
               "retry": {"schedule": ["2h", "2h"]},
               "queue": {"maxLength": 5000, "maxLengthBytes": 10_000_000, "messageTtl": "168h", "deliveryLimit": 7,
                         "overflow": "DropHead"}}),
    )
    .await;
    let status = wait_sub_ready(&ns, "audit").await;
    assert_eq!(status["retryQueues"], json!([format!("{work}.retry.1"), format!("{work}.retry.2")]));

    let policy = rabbit.policy(&work).await.expect("own policy once limits differ");
    assert_eq!(
        policy["definition"],
        json!({"delivery-limit": 7, "max-length": 5000, "max-length-bytes": 10_000_000, "message-ttl": 604_800_000u64,
               "overflow": "drop-head"})
    );
    assert_eq!(rabbit.binding_keys(&exchange, &work).await, ["order.created", "payment.*"]);
    assert!(rabbit.queue(&format!("{work}.retry.3")).await.is_none(), "removed step deleted");
    let step1 = rabbit.queue(&format!("{work}.retry.1")).await.expect("step 1 re-created");
    assert_eq!(step1["arguments"]["x-message-ttl"], 7_200_000);
    assert_eq!(amqp.count(&format!("{work}.retry.1")).await, 0);

    // Every message is still there, exactly once: the 1000 in the work queue, plus the ones
    // that were waiting in the changed and the removed step.
    let mut held = amqp.drain(&work).await;
    held.sort();
    let mut expected = [ids("order", 1000), ids("step1", 7), ids("step3", 10)].concat();
    expected.sort();
    assert_eq!(held.len(), 1017);
    assert_eq!(held, expected);
    let events = events_for(&client, &ns.name, "audit").await;
    let updated = events.iter().find(|e| e.1 == "Updated").map(|e| e.2.clone()).unwrap_or_default();
    assert!(
        updated.contains("moved 7 waiting messages") && updated.contains("moved 10 waiting messages"),
        "{events:?}"
    );

    // The new routing keys route; the removed one does not.
    amqp.publish(&exchange, "payment.settled", "pay", 2).await;
    amqp.publish(&exchange, "order.created", "created", 3).await;
    amqp.publish(&exchange, "order.cancelled", "cancelled", 4).await;
    assert_eq!(amqp.count(&work).await, 5);
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn references_are_followed_by_watches_and_a_recreated_topic_is_rebound() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "refs").await;
    // A long resync: only watches can make these converge within the test's time.
    let ctl = Controller::start(&ControllerOpts { resync: "10m", ..ControllerOpts::new("refs") });
    ctl.wait_leader().await;
    let spec = json!({"topicRef": {"name": "later"}, "webhookRef": {"name": "hook"}, "deletionPolicy": "Delete"});
    create_sub(&ns, "late", spec).await;
    let message = ns.wait_condition::<Subscription>("late", "Ready", "False", "TopicNotReady").await;
    assert!(message.contains("does not exist"), "{message}");

    create_topic(&ns, "later", json!({"type": "topic"})).await;
    let message = ns.wait_condition::<Subscription>("late", "Ready", "False", "WebhookNotFound").await;
    let work = queue_name(&ns, "late");
    assert!(message.contains(&format!("events wait in queue {work}")), "{message}");
    let rabbit = Rabbit::new();
    assert!(rabbit.queue(&work).await.is_some(), "the queue exists while the webhook is missing");

    let webhook: Webhook = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook",
        "metadata": {"name": "hook"}, "spec": {"url": "https://hooks.example.com/in"}
    }))
    .expect("webhook");
    ns.api::<Webhook>().create(&PostParams::default(), &webhook).await.expect("create webhook");
    wait_sub_ready(&ns, "late").await;

    // A topic deleted and re-created: the queue and its messages stay, the binding returns.
    let exchange = format!("sluice.{}.later", ns.name);
    let amqp = Amqp::connect().await;
    amqp.publish(&exchange, "order.created", "before", 5).await;
    ns.api::<EventTopic>().delete("later", &DeleteParams::default()).await.expect("delete topic");
    ns.gone::<EventTopic>("later").await;
    ns.wait_condition::<Subscription>("late", "Ready", "False", "TopicNotReady").await;
    assert_eq!(amqp.count(&work).await, 5, "deleting a topic never deletes a Subscription's messages");
    create_topic(&ns, "later", json!({"type": "topic"})).await;
    wait_sub_ready(&ns, "late").await;
    assert_eq!(rabbit.binding_keys(&exchange, &work).await, ["#"]);
    amqp.publish(&exchange, "order.created", "after", 3).await;
    assert_eq!(amqp.count(&work).await, 8);

    // A filter that does not fit the topic's type stalls with what to change.
    create_topic(&ns, "broadcast", json!({"type": "fanout"})).await;
    create_sub(&ns, "keys", json!({"topicRef": {"name": "broadcast"}, "filter": {"routingKeys": ["a.b"]}})).await;
    let message = ns.wait_condition::<Subscription>("keys", "Stalled", "True", "FilterMismatch").await;
    assert!(message.contains("ignores routing keys: remove spec.filter.routingKeys"), "{message}");
    assert!(rabbit.queue(&queue_name(&ns, "keys")).await.is_none());
    // A direct exchange does not expand wildcards: a pattern would silently match nothing.
    create_topic(&ns, "exact", json!({"type": "direct"})).await;
    create_sub(
        &ns,
        "wild",
        json!({"topicRef": {"name": "exact"}, "filter": {"routingKeys": ["order.created", "order.*"]}}),
    )
    .await;
    let message = ns.wait_condition::<Subscription>("wild", "Stalled", "True", "FilterMismatch").await;
    assert!(
        message.contains(
            r#"does not expand * or #: list the event types in spec.filter.routingKeys ("order.*" would match nothing)"#
        ),
        "{message}"
    );
    assert!(rabbit.queue(&queue_name(&ns, "wild")).await.is_none());
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn retain_keeps_queues_policies_and_messages_and_delete_removes_them() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "keep").await;
    let ctl = Controller::start(&ControllerOpts::new("keep"));
    ctl.wait_leader().await;
    create_topic(&ns, "orders", json!({"type": "topic"})).await;
    let limits = json!({"maxLength": 500});
    create_sub(&ns, "keep", json!({"topicRef": {"name": "orders"}, "retry": {"schedule": ["1m"]}, "queue": limits}))
        .await;
    let spec = json!({"topicRef": {"name": "orders"}, "retry": {"schedule": ["1m"]}, "queue": limits, "deletionPolicy": "Delete"});
    create_sub(&ns, "drop", spec).await;
    wait_sub_ready(&ns, "keep").await;
    wait_sub_ready(&ns, "drop").await;
    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "kept", 4).await;

    for name in ["keep", "drop"] {
        ns.api::<Subscription>().delete(name, &DeleteParams::default()).await.expect("delete");
        ns.gone::<Subscription>(name).await;
    }
    let rabbit = Rabbit::new();
    let (keep, drop_) = (queue_name(&ns, "keep"), queue_name(&ns, "drop"));
    for q in [keep.clone(), format!("{keep}.retry.1"), format!("{keep}.dlq")] {
        assert!(rabbit.queue(&q).await.is_some(), "Retain keeps {q}");
    }
    assert_eq!(amqp.count(&keep).await, 4, "and its messages");
    assert!(rabbit.policy(&keep).await.is_some(), "and its policy");
    for q in [drop_.clone(), format!("{drop_}.retry.1"), format!("{drop_}.dlq")] {
        assert!(rabbit.queue(&q).await.is_none(), "Delete removes {q}");
    }
    assert!(rabbit.policy(&drop_).await.is_none(), "and its policy");
    let events = events_for(&client, &ns.name, "keep").await;
    assert!(events.iter().any(|e| e.1 == "Retained"), "{events:?}");

    for q in [keep.clone(), format!("{keep}.retry.1"), format!("{keep}.dlq")] {
        rabbit.delete_queue(&q).await;
    }
    rabbit.delete_policy(&keep).await;
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn queues_bindings_and_policies_changed_out_of_band_are_restored_and_counted() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "subdrift").await;
    let ctl = Controller::start(&ControllerOpts { resync: "2s", ..ControllerOpts::new("subdrift") });
    ctl.wait_leader().await;
    create_topic(&ns, "orders", json!({"type": "topic"})).await;
    let spec = json!({"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]},
                      "retry": {"schedule": ["1m", "2m"]}, "queue": {"maxLength": 100}, "deletionPolicy": "Delete"});
    create_sub(&ns, "watched", spec).await;
    wait_sub_ready(&ns, "watched").await;
    let repairs = r#"sluice_drift_repairs_total{kind="Subscription"}"#;
    assert_eq!(ctl.metric(repairs).await, Some(0.0));

    let rabbit = Rabbit::new();
    let work = queue_name(&ns, "watched");
    let exchange = format!("sluice.{}.orders", ns.name);
    let step2 = format!("{work}.retry.2");
    rabbit.delete_queue(&step2).await;
    let retry2 = eventually("retry step 2 back", WAIT, || rabbit.queue(&step2)).await;
    assert_eq!(retry2["arguments"]["x-message-ttl"], 120_000);
    eventually("one repair", WAIT, || async { (ctl.metric(repairs).await == Some(1.0)).then_some(()) }).await;

    rabbit.unbind(&exchange, &work).await;
    eventually("the binding back", WAIT, || async {
        (rabbit.binding_keys(&exchange, &work).await == ["order.*"]).then_some(())
    })
    .await;
    eventually("two repairs", WAIT, || async { (ctl.metric(repairs).await == Some(2.0)).then_some(()) }).await;

    let pattern = format!("^{}$", work.replace('.', r"\."));
    rabbit
        .put_policy(
            &work,
            json!({"pattern": pattern, "apply-to": "queues", "priority": 110, "definition": {"max-length": 1}}),
        )
        .await;
    eventually("the policy restored", WAIT, || async {
        let p = rabbit.policy(&work).await?;
        (p["definition"] == json!({"delivery-limit": 20, "max-length": 100, "overflow": "reject-publish"}))
            .then_some(())
    })
    .await;
    eventually("three repairs", WAIT, || async { (ctl.metric(repairs).await == Some(3.0)).then_some(()) }).await;
    // The recorder folds repeats of a reason into one Event with a series count.
    eventually("three DriftRepaired Events", WAIT, || async {
        (event_count(&client, &ns.name, "watched", "DriftRepaired").await == 3).then_some(())
    })
    .await;
    ns.teardown().await;
}

#[tokio::test]
async fn a_redrive_moves_the_dead_letter_queue_back_once_per_value() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "redrive").await;
    let ctl = Controller::start(&ControllerOpts::new("redrive"));
    ctl.wait_leader().await;
    create_topic(&ns, "orders", json!({"type": "topic"})).await;
    create_sub(&ns, "billing", json!({"topicRef": {"name": "orders"}, "deletionPolicy": "Delete"})).await;
    wait_sub_ready(&ns, "billing").await;
    let work = queue_name(&ns, "billing");
    let dlq = format!("{work}.dlq");

    let amqp = Amqp::connect().await;
    let mut headers = FieldTable::default();
    headers.insert("x-sluice-attempt".into(), AMQPValue::LongUInt(9));
    headers.insert("x-sluice-reason".into(), AMQPValue::LongString("http-400".into()));
    headers.insert("event-version".into(), AMQPValue::LongString("v2".into()));
    for i in 0..25 {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(format!("dead-{i}").as_str().into())
            .with_headers(headers.clone());
        let confirm = amqp
            .channel
            .basic_publish("".into(), dlq.as_str().into(), BasicPublishOptions::default(), b"{}", props)
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
    }

    let annotate = |value: &'static str| {
        let ns = &ns;
        async move {
            let patch = Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/redrive": value}}}));
            ns.api::<Subscription>().patch("billing", &PatchParams::default(), &patch).await.expect("annotate");
        }
    };
    annotate("first").await;
    let redrive = eventually("the redrive recorded in status", WAIT, || async {
        let status = ns.get_json::<Subscription>("billing").await?["status"].clone();
        (status["redrive"]["value"] == "first").then(|| status["redrive"].clone())
    })
    .await;
    assert_eq!(redrive["moved"], 25);
    assert!(redrive["time"].is_string());
    // The counts in the same status write are those after the move, not the stale ones before.
    let messages = ns.get_json::<Subscription>("billing").await.expect("subscription")["status"]["messages"].clone();
    assert_eq!((messages["ready"].clone(), messages["deadLettered"].clone()), (json!(25), json!(0)), "{messages}");
    assert_eq!(amqp.count(&dlq).await, 0);
    assert_eq!(amqp.count(&work).await, 25);
    let m = amqp.channel.basic_get(work.as_str().into(), BasicGetOptions { no_ack: false }).await.expect("get");
    let m = m.expect("a redriven message");
    let kept: Vec<String> = m
        .delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| h.inner().keys().map(|k| k.as_str().to_owned()).collect())
        .unwrap_or_default();
    assert!(kept.contains(&"event-version".to_owned()), "{kept:?}");
    assert!(!kept.iter().any(|h| h.starts_with("x-sluice-")), "a redrive starts the retry count over: {kept:?}");
    m.delivery.acker.reject(BasicRejectOptions { requeue: true }).await.expect("requeue");
    let events = events_for(&client, &ns.name, "billing").await;
    assert!(events.iter().any(|e| e.1 == "Redriven" && e.2.contains("Moved 25 messages")), "{events:?}");

    // The same value again does nothing, even when the object is reconciled.
    amqp.publish("", &dlq, "later", 4).await;
    let reconciles = r#"sluice_reconcile_total{kind="Subscription",result="success"}"#;
    let before = ctl.metric(reconciles).await.unwrap_or_default();
    annotate("first").await;
    // A spec change wakes the controller (status and label changes do not).
    let touch = Patch::Merge(json!({"spec": {"queue": {"maxLength": 100_000}}}));
    ns.api::<Subscription>().patch("billing", &PatchParams::default(), &touch).await.expect("touch");
    eventually("a reconcile after the touch", WAIT, || async {
        (ctl.metric(reconciles).await.unwrap_or_default() > before).then_some(())
    })
    .await;
    assert_eq!(amqp.count(&dlq).await, 4);
    annotate("second").await;
    eventually("the second redrive", WAIT, || async {
        let status = ns.get_json::<Subscription>("billing").await?["status"].clone();
        (status["redrive"]["value"] == "second" && status["redrive"]["moved"] == 4).then_some(())
    })
    .await;
    assert_eq!(amqp.count(&dlq).await, 0);
    assert_eq!(amqp.count(&work).await, 29);
    amqp.close().await;
    ns.teardown().await;
}

/// A message whose readers keep dying is dead-lettered at the Subscription's delivery limit,
/// and the dead-letter queue then keeps it however often its own readers die or requeue it:
/// a dead-letter queue has nowhere to dead-letter to, so a limit there (RabbitMQ 4 sets 20 on
/// every quorum queue by default) would drop the message for good.
#[tokio::test]
async fn a_poison_message_is_dead_lettered_at_its_delivery_limit_and_then_kept_for_good() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "poison").await;
    let ctl = Controller::start(&ControllerOpts::new("poison"));
    ctl.wait_leader().await;
    create_topic(&ns, "orders", json!({"type": "topic"})).await;
    create_sub(
        &ns,
        "billing",
        json!({"topicRef": {"name": "orders"}, "queue": {"deliveryLimit": 3}, "deletionPolicy": "Delete"}),
    )
    .await;
    wait_sub_ready(&ns, "billing").await;
    let rabbit = Rabbit::new();
    let (work, dlq) = (queue_name(&ns, "billing"), format!("{}.dlq", queue_name(&ns, "billing")));
    let shared = rabbit.policy("sluice.dead-letter-defaults").await.expect("the shared dead-letter policy");
    assert_eq!(shared["definition"], json!({"delivery-limit": 2_147_483_647}));
    eventually("the dead-letter queue under the shared policy", WAIT, || async {
        let q = rabbit.queue(&dlq).await?;
        (q["policy"] == "sluice.dead-letter-defaults"
            && q["effective_policy_definition"]["delivery-limit"] == 2_147_483_647)
            .then_some(())
    })
    .await;

    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "poison", 1).await;
    // The first delivery and 3 more (the limit counts redeliveries); then it is dead-lettered.
    let mut deliveries = 0;
    while Amqp::die_holding(&work, Duration::from_secs(10)).await.is_some() {
        deliveries += 1;
        assert!(deliveries <= 10, "the delivery limit of 3 never dead-lettered the message");
    }
    assert_eq!(deliveries, 4, "delivered once and redelivered up to the limit of 3");
    eventually("the message in the dead-letter queue", WAIT, || async { (amqp.count(&dlq).await == 1).then_some(()) })
        .await;

    // 25 readers of the dead-letter queue die holding it, 25 more requeue it: it stays.
    for i in 0..25 {
        assert!(Amqp::die_holding(&dlq, Duration::from_secs(10)).await.is_some(), "crash {i}: the message is kept");
    }
    for i in 0..25 {
        assert!(amqp.reject_requeue(&dlq, Duration::from_secs(10)).await, "requeue {i}: the message is kept");
    }
    let headers = amqp.take(&dlq, Duration::from_secs(10)).await.expect("the poison message, still there");
    assert_eq!(text_header(&headers, "x-first-death-reason").as_deref(), Some("delivery_limit"));
    assert_eq!(text_header(&headers, "x-first-death-queue").as_deref(), Some(work.as_str()));
    assert_eq!(amqp.count(&dlq).await, 0);
    assert_eq!(amqp.count(&work).await, 0);

    let version = rabbit.version().await;
    if version.starts_with('4') {
        assert_eq!(rabbit.deprecated_features_used().await, json!([]), "RabbitMQ {version}");
    }
    amqp.close().await;
    ns.teardown().await;
}
