//! Broker faults: RabbitMQ down when the controller starts and again mid-run. The controller
//! keeps running, reports the broker down, marks topics not Ready with the reason, and
//! converges by itself when the broker is back.

use std::time::Duration;

use kube::api::PostParams;
use serde_json::{Value, json};
use sluice::api::EventTopic;

use crate::{
    event_topic::topic,
    harness::{Controller, ControllerOpts, Rabbit, TestNamespace, admin, condition, eventually, serial},
};

const WAIT: Duration = Duration::from_secs(90);
const UP: &str = r#"sluice_broker_up{broker="default"}"#;

async fn ready_state(ns: &TestNamespace, name: &str) -> Option<(String, String, String)> {
    let obj = ns.api::<EventTopic>().get_opt(name).await.ok()??;
    condition(&serde_json::to_value(obj).ok()?, "Ready")
}

async fn wait_ready(ns: &TestNamespace, name: &str, status: &str, reason: &str) -> String {
    eventually(&format!("{name} Ready={status} ({reason})"), WAIT, || async {
        let (s, r, m) = ready_state(ns, name).await?;
        (s == status && r == reason).then_some(m)
    })
    .await
}

#[tokio::test]
async fn the_controller_survives_a_broker_outage_and_converges_by_itself() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "outage").await;
    let rabbit = Rabbit::new();
    let topics = ns.api::<EventTopic>();

    // Down at start: the controller runs, leads, says the broker is down, and is not ready.
    let outage = Rabbit::stop();
    let ctl = Controller::start(&ControllerOpts::new("outage"));
    eventually("the controller to answer", WAIT, || async { ctl.alive().await.then_some(()) }).await;
    eventually("broker_up 0", WAIT, || async { (ctl.metric(UP).await == Some(0.0)).then_some(()) }).await;
    eventually("readyz to say the broker was never reached", WAIT, || async {
        let (code, body) = ctl.readiness().await?;
        (code == 503 && body.contains("the default broker has not been reached yet")).then_some(())
    })
    .await;
    topics.create(&PostParams::default(), &topic("early", json!({"type": "topic"}))).await.expect("create");
    let message = wait_ready(&ns, "early", "False", "BrokerUnavailable").await;
    assert!(message.contains("unavailable"), "{message}");

    // Back: everything converges without any edit.
    outage.end();
    eventually("broker_up 1", WAIT, || async { (ctl.metric(UP).await == Some(1.0)).then_some(()) }).await;
    wait_ready(&ns, "early", "True", "Ready").await;
    ctl.wait_leader().await;
    let early = format!("sluice.{}.early", ns.name);
    assert!(rabbit.exchange(&early).await.is_some());

    // Down mid-run: existing topics turn not Ready with the reason; new ones wait.
    let outage = Rabbit::stop();
    eventually("broker_up 0 again", WAIT, || async { (ctl.metric(UP).await == Some(0.0)).then_some(()) }).await;
    wait_ready(&ns, "early", "False", "BrokerUnavailable").await;
    topics.create(&PostParams::default(), &topic("during", json!({"type": "direct"}))).await.expect("create");
    wait_ready(&ns, "during", "False", "BrokerUnavailable").await;
    assert!(ctl.alive().await, "the controller keeps running");
    let restarts = ctl.log_text().matches("Admin server listening").count();
    assert_eq!(restarts, 1, "the process never restarted");

    outage.end();
    wait_ready(&ns, "early", "True", "Ready").await;
    wait_ready(&ns, "during", "True", "Ready").await;
    let during: Value =
        rabbit.exchange(&format!("sluice.{}.during", ns.name)).await.expect("declared after the outage");
    assert_eq!(during["type"], "direct");
    assert!(rabbit.exchange(&early).await.is_some(), "durable exchange survived the restart");

    ns.teardown().await;
}
