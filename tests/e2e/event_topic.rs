//! EventTopic end to end: create → Ready → the exchange checked on the broker → drift
//! repaired → deletion policies → per-topic broker Secrets → broker conflicts.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use serde_json::{Value, json};
use sluice::api::EventTopic;

use crate::harness::{
    AMQP_URI, Controller, ControllerOpts, Rabbit, TestNamespace, admin, condition, events_for, eventually, kubectl,
    serial,
};

const WAIT: Duration = Duration::from_secs(60);

pub fn topic(name: &str, spec: Value) -> EventTopic {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("topic")
}

async fn get_json(ns: &TestNamespace, name: &str) -> Option<Value> {
    ns.get_json::<EventTopic>(name).await
}

async fn wait_condition(ns: &TestNamespace, name: &str, type_: &str, status: &str, reason: &str) -> String {
    ns.wait_condition::<EventTopic>(name, type_, status, reason).await
}

async fn gone(ns: &TestNamespace, name: &str) {
    ns.gone::<EventTopic>(name).await;
}

#[tokio::test]
async fn a_topic_becomes_a_durable_exchange_that_keeps_unroutable_events() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "topic").await;
    let ctl = Controller::start(&ControllerOpts::new("topic-lifecycle"));
    ctl.wait_leader().await;

    let spec = json!({"type": "topic", "events": [{
        "type": "order.created", "description": "A customer placed an order.",
        "versions": [{"name": "v2", "schema": {"type": "object", "required": ["id"]}}]
    }]});
    ns.api::<EventTopic>().create(&PostParams::default(), &topic("orders", spec)).await.expect("create topic");
    ns.wait_ready("eventtopic/orders");

    // The broker holds exactly what the README's EventTopic table promises.
    let rabbit = Rabbit::new();
    let exchange = format!("sluice.{}.orders", ns.name);
    let unroutable = format!("{exchange}.unroutable");
    let x = rabbit.exchange(&exchange).await.expect("exchange declared");
    assert_eq!(
        (x["type"].as_str(), x["durable"].as_bool(), x["auto_delete"].as_bool()),
        (Some("topic"), Some(true), Some(false))
    );
    assert_eq!(x["arguments"], json!({"alternate-exchange": unroutable}));
    let ae = rabbit.exchange(&unroutable).await.expect("alternate exchange declared");
    assert_eq!((ae["type"].as_str(), ae["durable"].as_bool()), (Some("fanout"), Some(true)));
    let q = rabbit.queue(&unroutable).await.expect("unroutable queue declared");
    assert_eq!((q["durable"].as_bool(), q["arguments"]["x-queue-type"].as_str()), (Some(true), Some("quorum")));
    assert_eq!(rabbit.bindings(&unroutable, &unroutable).await.len(), 1);

    // Status and conditions (kstatus).
    let obj = get_json(&ns, "orders").await.expect("topic");
    let status = &obj["status"];
    assert_eq!(status["exchange"], exchange);
    assert_eq!(status["alternateExchange"], unroutable);
    assert_eq!(status["unroutableQueue"], unroutable);
    assert_eq!(status["broker"], "default");
    assert_eq!(status["eventTypes"], 1);
    assert_eq!(status["observedGeneration"], obj["metadata"]["generation"]);
    assert_eq!(condition(&obj, "Ready").map(|c| c.0), Some("True".into()));
    assert_eq!(condition(&obj, "Reconciling").map(|c| c.0), Some("False".into()));
    assert_eq!(condition(&obj, "Stalled").map(|c| c.0), Some("False".into()));
    assert_eq!(obj["metadata"]["finalizers"], json!(["sluice.dev/topology"]));

    // What a person sees with kubectl: printer columns, short names, the category.
    let (ok, out) = kubectl(&["get", "et", "orders", "-n", &ns.name]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "EXCHANGE", "READY", "AGE"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..4], ["orders", "topic", exchange.as_str(), "True"]);
    let (ok, out) = kubectl(&["get", "sluice", "-n", &ns.name, "-o", "name"]);
    assert!(ok && out.trim() == "eventtopic.sluice.dev/orders", "{out}");
    let events = events_for(&client, &ns.name, "orders").await;
    assert!(events.iter().any(|e| e.1 == "Created" && e.2.contains(&exchange)), "{events:?}");

    // An event no Subscription matches is kept in the unroutable queue, not dropped.
    let conn = Connection::connect(AMQP_URI, ConnectionProperties::default()).await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
    let confirm = channel
        .basic_publish(
            exchange.as_str().into(),
            "order.created".into(),
            BasicPublishOptions::default(),
            br#"{"id":"o-1"}"#,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "the broker must confirm the publish");
    let got = channel.basic_get(unroutable.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("get");
    assert_eq!(got.expect("the unroutable event").delivery.data, br#"{"id":"o-1"}"#);
    let again = channel.basic_get(unroutable.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("get");
    assert!(again.is_none(), "exactly one event was published");
    let _ = conn.close(200, "done".into()).await;

    // The controller's metrics pass promtool and count what the API shows.
    crate::harness::promtool_check(&ctl.metrics().await);
    assert_eq!(ctl.metric(r#"sluice_broker_up{broker="default"}"#).await, Some(1.0));
    let all = kube::Api::<EventTopic>::all(client.clone()).list(&kube::api::ListParams::default()).await.expect("list");
    let ready = all.items.iter().filter(|t| {
        t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    let ready = f64::from(u32::try_from(ready.count()).expect("count"));
    eventually("sluice_resources to count the Ready topics", WAIT, || async {
        (ctl.metric(r#"sluice_resources{kind="EventTopic",ready="true"}"#).await == Some(ready)).then_some(())
    })
    .await;

    // Deletion policy Delete (the default) removes everything.
    ns.api::<EventTopic>().delete("orders", &DeleteParams::default()).await.expect("delete");
    gone(&ns, "orders").await;
    assert!(rabbit.exchange(&exchange).await.is_none(), "exchange deleted");
    assert!(rabbit.exchange(&unroutable).await.is_none(), "alternate exchange deleted");
    assert!(rabbit.queue(&unroutable).await.is_none(), "unroutable queue deleted");
    ns.teardown().await;
}

#[tokio::test]
async fn objects_deleted_out_of_band_come_back_and_are_counted() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "drift").await;
    let ctl = Controller::start(&ControllerOpts { resync: "2s", ..ControllerOpts::new("drift") });
    ctl.wait_leader().await;
    ns.api::<EventTopic>()
        .create(&PostParams::default(), &topic("payments", json!({"type": "direct"})))
        .await
        .expect("create");
    ns.wait_ready("eventtopic/payments");
    let repairs = r#"sluice_drift_repairs_total{kind="EventTopic"}"#;
    assert_eq!(ctl.metric(repairs).await, Some(0.0));

    let rabbit = Rabbit::new();
    let exchange = format!("sluice.{}.payments", ns.name);
    rabbit.delete_exchange(&exchange).await;
    let x = eventually("the exchange to come back", WAIT, || rabbit.exchange(&exchange)).await;
    assert_eq!(x["type"], "direct");
    assert_eq!(x["arguments"]["alternate-exchange"], format!("{exchange}.unroutable"));
    eventually("one repair counted", WAIT, || async { (ctl.metric(repairs).await == Some(1.0)).then_some(()) }).await;
    let events = events_for(&client, &ns.name, "payments").await;
    assert!(events.iter().any(|e| e.0 == "Warning" && e.1 == "DriftRepaired" && e.2.contains(&exchange)), "{events:?}");

    // The unroutable queue takes its binding with it: two objects come back.
    let unroutable = format!("{exchange}.unroutable");
    rabbit.delete_queue(&unroutable).await;
    eventually("the queue and its binding to come back", WAIT, || async {
        (rabbit.queue(&unroutable).await.is_some() && rabbit.bindings(&unroutable, &unroutable).await.len() == 1)
            .then_some(())
    })
    .await;
    eventually("three repairs counted", WAIT, || async { (ctl.metric(repairs).await == Some(3.0)).then_some(()) })
        .await;
    let obj = get_json(&ns, "payments").await.expect("topic");
    assert_eq!(condition(&obj, "Ready").map(|c| c.0), Some("True".into()));

    ns.api::<EventTopic>().delete("payments", &DeleteParams::default()).await.expect("delete");
    gone(&ns, "payments").await;
    ns.teardown().await;
}

#[tokio::test]
async fn retain_keeps_the_exchange_after_the_topic_is_gone() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "retain").await;
    let ctl = Controller::start(&ControllerOpts::new("retain"));
    ctl.wait_leader().await;
    let spec = json!({"type": "fanout", "deletionPolicy": "Retain"});
    ns.api::<EventTopic>().create(&PostParams::default(), &topic("audit", spec)).await.expect("create");
    ns.wait_ready("eventtopic/audit");

    ns.api::<EventTopic>().delete("audit", &DeleteParams::default()).await.expect("delete");
    gone(&ns, "audit").await;
    let rabbit = Rabbit::new();
    let exchange = format!("sluice.{}.audit", ns.name);
    assert_eq!(rabbit.exchange(&exchange).await.expect("exchange kept")["type"], "fanout");
    assert!(rabbit.queue(&format!("{exchange}.unroutable")).await.is_some(), "unroutable queue kept");
    let events = events_for(&client, &ns.name, "audit").await;
    assert!(events.iter().any(|e| e.1 == "Retained"), "{events:?}");

    rabbit.delete_exchange(&exchange).await;
    rabbit.delete_exchange(&format!("{exchange}.unroutable")).await;
    rabbit.delete_queue(&format!("{exchange}.unroutable")).await;
    ns.teardown().await;
}

#[tokio::test]
async fn a_topic_can_use_its_own_broker_secret_and_waits_for_it() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "secret").await;
    let ctl = Controller::start(&ControllerOpts::new("secret"));
    ctl.wait_leader().await;
    let spec = json!({"type": "topic", "broker": {"secretRef": {"name": "team-rabbit"}}});
    ns.api::<EventTopic>().create(&PostParams::default(), &topic("invoices", spec)).await.expect("create");

    let message = wait_condition(&ns, "invoices", "Ready", "False", "BrokerSecretMissing").await;
    assert!(message.contains(&format!("{}/team-rabbit does not exist", ns.name)), "{message}");
    wait_condition(&ns, "invoices", "Stalled", "True", "BrokerSecretMissing").await;

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "team-rabbit"},
        "stringData": {"uri": "amqp://127.0.0.1:5672/%2f", "username": "guest", "password": "guest",
                        "managementUri": "http://127.0.0.1:15672"}
    }))
    .expect("secret");
    ns.api::<Secret>().create(&PostParams::default(), &secret).await.expect("create secret");
    ns.wait_ready("eventtopic/invoices");
    let obj = get_json(&ns, "invoices").await.expect("topic");
    assert_eq!(obj["status"]["broker"], "team-rabbit", "the Secret's name, in the topic's namespace");
    assert_eq!(ctl.metric(&format!(r#"sluice_broker_up{{broker="{}/team-rabbit"}}"#, ns.name)).await, Some(1.0));

    ns.api::<EventTopic>().delete("invoices", &DeleteParams::default()).await.expect("delete");
    gone(&ns, "invoices").await;
    assert!(Rabbit::new().exchange(&format!("sluice.{}.invoices", ns.name)).await.is_none());
    ns.teardown().await;
}

#[tokio::test]
async fn an_exchange_the_broker_already_has_with_another_type_stalls_with_the_reason() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "clash").await;
    let rabbit = Rabbit::new();
    let exchange = format!("sluice.{}.clash", ns.name);
    rabbit.declare_exchange(&exchange, "fanout").await;
    let ctl = Controller::start(&ControllerOpts::new("clash"));
    ctl.wait_leader().await;
    ns.api::<EventTopic>()
        .create(&PostParams::default(), &topic("clash", json!({"type": "topic"})))
        .await
        .expect("create");

    let message = wait_condition(&ns, "clash", "Ready", "False", "BrokerConflict").await;
    assert!(message.contains("type is fanout, want topic"), "{message}");
    wait_condition(&ns, "clash", "Stalled", "True", "BrokerConflict").await;
    assert_eq!(rabbit.exchange(&exchange).await.expect("left alone")["type"], "fanout");
    let events = events_for(&client, &ns.name, "clash").await;
    assert!(events.iter().any(|e| e.0 == "Warning" && e.1 == "BrokerConflict"), "{events:?}");
    assert!(ctl.alive().await);

    // Deleting the topic leaves the exchange it never owned alone.
    ns.api::<EventTopic>().delete("clash", &DeleteParams::default()).await.expect("delete");
    gone(&ns, "clash").await;
    assert_eq!(rabbit.exchange(&exchange).await.expect("still there")["type"], "fanout");
    rabbit.delete_exchange(&exchange).await;
    ns.teardown().await;
}
