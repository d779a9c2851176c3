//! Webhooks end to end: the controller renders the dispatcher Deployment, the test bed's pod
//! runner starts it the way a kubelet would (env from Secrets, the ConfigMap mounted, the
//! pod's own ServiceAccount token), and a real receiver verifies every signature. The
//! Webhook's status is what the dispatcher pods report, summarized by the controller.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Secret},
    },
};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice::{
    api::{EventTopic, Subscription, Webhook},
    dispatch::signing::generate_secret,
};

use crate::{
    harness::{
        Amqp, Controller, ControllerOpts, Object, TestNamespace, admin, condition, eventually, prometheus, serial,
    },
    receiver::{self, Behaviour},
};

const WAIT: Duration = Duration::from_secs(120);

/// The pod runner and the controller a test keeps running until it ends (dropped in this order).
pub struct Running(#[allow(dead_code, reason = "held for its lifetime")] Controller, pub Controller);

/// A fresh namespace `name-…`, a controller with the chart's permissions leading (lease
/// `e2e-name`) and the pod runner that starts the dispatcher pods it writes.
pub async fn bed(name: &str) -> (TestNamespace, Running) {
    bed_with(name, &ControllerOpts::new(name)).await
}

async fn bed_with(name: &str, opts: &ControllerOpts) -> (TestNamespace, Running) {
    let ns = TestNamespace::create(&admin().await, name).await;
    let controller = Controller::start(opts);
    let runner = Controller::pod_runner();
    controller.wait_leader().await;
    (ns, Running(runner, controller))
}

/// A receiver behaviour answering whatever status the returned cell holds.
fn switchable(status: u16) -> (Arc<AtomicU16>, Behaviour) {
    let answer = Arc::new(AtomicU16::new(status));
    let behaviour: Behaviour = {
        let answer = answer.clone();
        Arc::new(move |_, _| answer.load(Ordering::SeqCst))
    };
    (answer, behaviour)
}

pub async fn create<K: Object>(ns: &TestNamespace, object: Value) {
    let object: K = serde_json::from_value(object).expect("object");
    ns.api::<K>().create(&PostParams::default(), &object).await.expect("create");
}

async fn orders_topic(ns: &TestNamespace) {
    create::<EventTopic>(ns, json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic", "metadata": {"name": "orders"}, "spec": {"type": "topic"}
    }))
    .await;
}

async fn topic_and_subscription(ns: &TestNamespace, webhook: &str) {
    orders_topic(ns).await;
    create::<Subscription>(ns, json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": "billing"},
        "spec": {"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]}, "webhookRef": {"name": webhook},
                 "retry": {"schedule": ["100ms", "200ms"]}, "deletionPolicy": "Delete"}
    }))
    .await;
}

async fn webhook_status(ns: &TestNamespace, name: &str) -> Value {
    ns.get_json::<Webhook>(name).await.map(|w| w["status"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_webhook_runs_its_dispatcher_delivers_signed_and_reports_status() {
    let _serial = serial();
    let (ns, _running) = bed("webhook").await;

    let first = generate_secret();
    let behaviour: Behaviour = Arc::new(|id, _| if id.starts_with("bad-") { 400 } else { 204 });
    let receiver = receiver::start(&[&first], behaviour).await;
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("hook-signing".into()), ..Default::default() },
        data: Some([("secret".to_owned(), ByteString(first.clone().into_bytes()))].into()),
        ..Secret::default()
    };
    ns.api::<Secret>().create(&PostParams::default(), &secret).await.expect("secret");
    topic_and_subscription(&ns, "hook").await;
    create::<Webhook>(
        &ns,
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": "hook"},
            "spec": {"url": receiver.url(), "signing": {"secretRef": {"name": "hook-signing"}}, "maxInFlight": 16}
        }),
    )
    .await;
    ns.wait_ready("subscription/billing");
    ns.wait_ready("webhook/hook");

    // What the controller wrote: an owned, hardened Deployment and the configuration.
    let deployment = ns.api::<Deployment>().get("sluice-dispatcher-hook").await.expect("deployment");
    let owner = &deployment.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Webhook", "hook"));
    let config = ns.api::<ConfigMap>().get("sluice-dispatcher-hook").await.expect("config map");
    let config: Value = serde_json::from_str(&config.data.expect("data")["dispatch.json"]).expect("json");
    assert_eq!(config["subscriptions"][0]["queue"], json!(format!("sluice.{}.billing", ns.name)));
    assert_eq!(config["subscriptions"][0]["schedule"], json!([100, 200]));

    let amqp = Amqp::connect().await;
    let exchange = format!("sluice.{}.orders", ns.name);
    amqp.publish(&exchange, "order.created", "ok", 1000).await;
    amqp.publish(&exchange, "order.created", "bad", 20).await;
    let dlq = format!("sluice.{}.billing.dlq", ns.name);
    eventually("1,000 deliveries and 20 dead letters", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() == 1000 && amqp.count(&dlq).await == 20).then_some(())
    })
    .await;

    // The dispatcher pod reports; the controller sums it up within seconds.
    let started = std::time::Instant::now();
    let status = loop {
        let s = webhook_status(&ns, "hook").await;
        if s["delivered"] == json!(1000) && s["deadLettered"] == json!(20) {
            break s;
        }
        assert!(started.elapsed() < WAIT, "the Webhook status never showed every delivery; last: {s:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status["failed"], json!(20), "one failed attempt per 400");
    assert_eq!(status["readyReplicas"], json!(1));
    assert_eq!(status["circuit"], json!("Closed"));
    assert!(status["lastSuccessTime"].is_string() && status["lastFailureTime"].is_string());
    assert_eq!(status["dispatchers"].as_array().map(Vec::len), Some(1));
    let hook = ns.get_json::<Webhook>("hook").await.expect("webhook");
    assert_eq!(condition(&hook, "Disabled").map(|c| c.0), Some("False".to_owned()));
    assert_eq!(condition(&hook, "CircuitOpen").map(|c| c.0), Some("False".to_owned()));
    {
        let seen = receiver.seen.lock().expect("lock");
        assert_eq!((seen.bad_signatures, seen.duplicates()), (0, 0));
    }

    // Rotating the secret: the dispatcher rolls and signs with both secrets for the overlap.
    let second = generate_secret();
    receiver.learn(&second);
    let rotated = json!({"data": {"secret": ByteString(second.clone().into_bytes())}});
    ns.api::<Secret>().patch("hook-signing", &PatchParams::default(), &Patch::Merge(&rotated)).await.expect("rotate");
    // The operator reads Secrets without watching them: a resync or any change of the Webhook
    // picks the new one up.
    let nudge = json!({"metadata": {"annotations": {"example.com/rotated": "1"}}});
    ns.api::<Webhook>().patch("hook", &PatchParams::default(), &Patch::Merge(&nudge)).await.expect("annotate");
    eventually("the rotation to reach the dispatcher", WAIT, || async {
        amqp.publish(&exchange, "order.created", &format!("probe-{}", crate::harness::random_suffix()), 1).await;
        let seen = receiver.seen.lock().expect("lock");
        (seen.verified_by.get(1).copied().unwrap_or(0) > 0).then_some(())
    })
    .await;
    rolled_out(&ns, "hook").await;
    amqp.publish(&exchange, "order.created", "after", 100).await;
    eventually("100 deliveries after the rotation", WAIT, || async {
        let seen = receiver.seen.lock().expect("lock");
        ((0..100).all(|i| seen.delivered.contains_key(&format!("after-{i}")))).then_some(())
    })
    .await;
    let seen = receiver.seen.lock().expect("lock");
    for i in 0..100 {
        let keys = seen.keys_of.get(&format!("after-{i}")).cloned().unwrap_or_default();
        assert_eq!(keys, [0, 1], "after-{i} carries signatures by the old and the new secret");
    }
    assert_eq!((seen.bad_signatures, seen.duplicates()), (0, 0));
    drop(seen);
    amqp.close().await;
    ns.teardown().await;
}

/// Waits until the test bed's Prometheus, scraping the dispatcher pods, shows `want` for each
/// query; fails with every query's last value when it does not within a minute.
async fn scraped(queries: &[(String, f64)]) {
    let started = std::time::Instant::now();
    loop {
        let mut seen = Vec::new();
        for (query, _) in queries {
            seen.push(prometheus(query).await);
        }
        if queries.iter().zip(&seen).all(|((_, want), got)| *got == Some(*want)) {
            return;
        }
        let report: Vec<_> =
            queries.iter().zip(&seen).map(|((q, want), got)| format!("{q} = {got:?} (want {want})")).collect();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus never showed the counts:\n{}",
            report.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn ten_thousand_events_with_transient_failures_arrive_once_and_prometheus_counts_match_the_receiver() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-10k").await;
    // One event in ten gets a 500 on its first two attempts and is delivered on the third.
    let behaviour: Behaviour = Arc::new(|id, attempt| {
        let n: u32 = id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if n.is_multiple_of(10) && attempt <= 2 { 500 } else { 204 }
    });
    let receiver = delivering(&ns, behaviour).await;
    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 10_000).await;
    let duplicates = all_delivered(&receiver, &amqp, &ns, "evt", 10_000).await;
    assert_eq!(duplicates, 0, "no dispatcher restarted, so nothing is delivered twice");
    let (attempts, failed) = {
        let seen = receiver.seen.lock().expect("lock");
        for (id, n) in &seen.attempts {
            let flaky = id.rsplit('-').next().is_some_and(|n| n.ends_with('0'));
            assert_eq!(
                *n,
                if flaky { 3 } else { 1 },
                "{id}: delivered on its third attempt when flaky, else its first"
            );
        }
        let attempts: u32 = seen.attempts.values().sum();
        (attempts, attempts - u32::try_from(seen.delivered.len()).expect("count"))
    };
    assert_eq!((attempts, failed), (12_000, 2_000));

    // What Prometheus scraped from the dispatcher pod equals what the receiver counted.
    let sum = |metric: &str, labels: &str| {
        format!(r#"sum({metric}{{namespace="{}",webhook="hook",subscription="billing"{labels}}})"#, ns.name)
    };
    scraped(&[
        (sum("sluice_delivery_attempts_total", ""), f64::from(attempts)),
        (sum("sluice_delivery_attempts_total", r#",outcome="delivered",status_class="2xx""#), 10_000.0),
        (sum("sluice_delivery_attempts_total", r#",outcome="retried",status_class="5xx""#), f64::from(failed)),
        (sum("sluice_retries_total", r#",step="1""#), 1_000.0),
        (sum("sluice_retries_total", r#",step="2""#), 1_000.0),
        (sum("sluice_retries_total", ""), 2_000.0),
        (sum("sluice_delivery_latency_seconds_count", ""), 10_000.0),
        (sum("sluice_delivery_duration_seconds_count", ""), f64::from(attempts)),
        (sum("sluice_dead_lettered_total", "") + " or vector(0)", 0.0),
        (sum("sluice_queue_messages", r#",queue="work""#), 0.0),
        (sum("sluice_queue_messages", r#",queue="retry""#), 0.0),
        (sum("sluice_queue_messages", r#",queue="dlq""#), 0.0),
        (sum("sluice_oldest_message_age_seconds", ""), 0.0),
        (format!(r#"sum(sluice_inflight{{namespace="{}",webhook="hook"}})"#, ns.name), 0.0),
    ])
    .await;
    // Every series the dispatcher pod exposes passes promtool.
    let targets = std::fs::read_to_string(crate::harness::env().testbed.join("pods/targets.json")).expect("targets");
    let targets: Value = serde_json::from_str(&targets).expect("targets json");
    let target = targets.as_array().into_iter().flatten().find(|t| t["labels"]["namespace"] == json!(ns.name));
    let target = target.and_then(|t| t["targets"][0].as_str()).expect("the dispatcher pod's scrape target");
    let metrics = reqwest::get(format!("http://{target}/metrics")).await.expect("scrape").text().await.expect("body");
    crate::harness::promtool_check(&metrics);
    // The Webhook's status agrees.
    eventually("the Webhook status to count every attempt", WAIT, || async {
        let status = webhook_status(&ns, "hook").await;
        let counts = (status["delivered"].clone(), status["failed"].clone(), status["deadLettered"].clone());
        (counts == (json!(10_000), json!(2_000), json!(0))).then_some(())
    })
    .await;
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn gone_disables_the_webhook_keeps_messages_and_a_spec_change_resumes() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-gone").await;

    // No secretRef: the operator generates one; the receiver learns it from the Secret.
    let (answer, behaviour) = switchable(410);
    let receiver = receiver::start(&[], behaviour).await;
    create::<Webhook>(
        &ns,
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": "hook"},
            "spec": {"url": receiver.url(), "maxInFlight": 4}
        }),
    )
    .await;
    ns.wait_ready("webhook/hook");
    let generated = generated_secret(&ns, "hook").await;
    assert!(generated.starts_with("whsec_"));
    receiver.learn(&generated);
    assert_eq!(webhook_status(&ns, "hook").await["signingSecret"], json!("sluice-signing-hook"));

    // A Subscription added later reaches the dispatcher through the ConfigMap.
    topic_and_subscription(&ns, "hook").await;
    ns.wait_ready("subscription/billing");
    eventually("the dispatcher configuration to list the Subscription", WAIT, || async {
        let map = ns.api::<ConfigMap>().get("sluice-dispatcher-hook").await.ok()?;
        map.data?.get("dispatch.json")?.contains("\"billing\"").then_some(())
    })
    .await;

    let amqp = Amqp::connect().await;
    let exchange = format!("sluice.{}.orders", ns.name);
    let work = format!("sluice.{}.billing", ns.name);
    amqp.publish(&exchange, "order.created", "evt", 200).await;
    let hook = ns.wait_condition::<Webhook>("hook", "Disabled", "True", "EndpointGone").await;
    assert!(hook.contains("410"), "{hook}");
    ns.wait_condition::<Webhook>("hook", "Ready", "False", "Disabled").await;
    eventually("all 200 messages kept in the work queue", WAIT, || async {
        (amqp.count(&work).await == 200).then_some(())
    })
    .await;
    let attempts: u32 = receiver.seen.lock().expect("lock").attempts.values().sum();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.seen.lock().expect("lock").attempts.values().sum::<u32>(), attempts, "nothing consumed");
    assert_eq!(receiver.seen.lock().expect("lock").delivered.len(), 0);
    // The paused dispatcher still shows the backlog.
    let backlog = format!(r#"sum(sluice_queue_messages{{namespace="{}",webhook="hook",queue="work"}})"#, ns.name);
    scraped(&[(backlog, 200.0)]).await;

    // Any change to the spec re-enables; the endpoint is back.
    answer.store(204, Ordering::SeqCst);
    let change = json!({"spec": {"timeout": "10s"}});
    ns.api::<Webhook>().patch("hook", &PatchParams::default(), &Patch::Merge(&change)).await.expect("change");
    ns.wait_condition::<Webhook>("hook", "Disabled", "False", "Enabled").await;
    eventually("all 200 delivered after re-enabling", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() == 200).then_some(())
    })
    .await;
    let seen = receiver.seen.lock().expect("lock");
    assert_eq!((seen.bad_signatures, seen.duplicates()), (0, 0));
    drop(seen);
    assert_eq!(amqp.count(&work).await, 0);
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn failing_for_auto_disable_after_disables_and_suspend_holds_the_backlog() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-autodisable").await;
    let (answer, behaviour) = switchable(503);
    let receiver = receiver::start(&[], behaviour).await;
    orders_topic(&ns).await;
    create::<Subscription>(&ns, json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": "billing"},
        "spec": {"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]}, "webhookRef": {"name": "hook"},
                 "retry": {"schedule": ["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]}, "deletionPolicy": "Delete"}
    }))
    .await;
    // The smallest autoDisableAfter admission allows; the default circuit breaker.
    create::<Webhook>(
        &ns,
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": "hook"},
            "spec": {"url": receiver.url(), "maxInFlight": 4, "autoDisableAfter": "1m"}
        }),
    )
    .await;
    ns.wait_ready("subscription/billing");
    ns.wait_ready("webhook/hook");
    receiver.learn(&generated_secret(&ns, "hook").await);

    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 20).await;
    let started = std::time::Instant::now();
    // The minute of failures plus the report and requeue lag: more than wait_condition's 90 s
    // on a busy machine is possible.
    let hook = eventually("Disabled=True (FailingTooLong)", Duration::from_secs(180), || async {
        let (status, reason, message) = condition(&ns.get_json::<Webhook>("hook").await?, "Disabled")?;
        (status == "True" && reason == "FailingTooLong").then_some(message)
    })
    .await;
    let failing_for = started.elapsed();
    assert!(hook.contains("autoDisableAfter 60s"), "{hook}");
    assert!(failing_for >= Duration::from_secs(55), "disabled after {failing_for:?} of failures, not 1m");
    ns.wait_condition::<Webhook>("hook", "Ready", "False", "Disabled").await;
    let (ok, events) = crate::harness::kubectl(&[
        "get",
        "events",
        "-n",
        &ns.name,
        "--field-selector",
        "reason=Disabled",
        "-o",
        "name",
    ]);
    assert!(ok && !events.trim().is_empty(), "a Disabled Event");
    // Nothing dropped: every message is back in the work queue (retry steps of 1 s return
    // them), none dead-lettered, none delivered.
    let work = format!("sluice.{}.billing", ns.name);
    eventually("all 20 messages back in the work queue", WAIT, || async {
        (amqp.count(&work).await == 20).then_some(())
    })
    .await;
    assert_eq!(amqp.count(&format!("sluice.{}.billing.dlq", ns.name)).await, 0);
    let attempts: u32 = receiver.seen.lock().expect("lock").attempts.values().sum();
    println!("auto-disabled after {failing_for:?} of failures and {attempts} attempts");

    // Suspending is a spec change: it re-enables, and holds delivery while the backlog shows.
    answer.store(204, Ordering::SeqCst);
    let suspend = |on: bool| json!({"spec": {"suspend": on}});
    ns.api::<Webhook>().patch("hook", &PatchParams::default(), &Patch::Merge(&suspend(true))).await.expect("suspend");
    ns.wait_condition::<Webhook>("hook", "Disabled", "False", "Enabled").await;
    ns.wait_condition::<Webhook>("hook", "Ready", "True", "Suspended").await;
    let backlog = format!(r#"sum(sluice_queue_messages{{namespace="{}",webhook="hook",queue="work"}})"#, ns.name);
    scraped(&[(backlog, 20.0)]).await;
    assert_eq!(receiver.seen.lock().expect("lock").attempts.values().sum::<u32>(), attempts, "nothing consumed");
    ns.api::<Webhook>().patch("hook", &PatchParams::default(), &Patch::Merge(&suspend(false))).await.expect("resume");
    eventually("all 20 delivered once resumed", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() == 20).then_some(())
    })
    .await;
    finish(&receiver, amqp, ns).await;
}

/// Checks that `receiver` saw no bad signature and no duplicate, then closes the test's
/// connection and removes its namespace.
async fn finish(receiver: &receiver::Handle, amqp: Amqp, ns: TestNamespace) {
    let (bad, duplicates) = {
        let seen = receiver.seen.lock().expect("lock");
        (seen.bad_signatures, seen.duplicates())
    };
    assert_eq!((bad, duplicates), (0, 0), "bad signatures, duplicates");
    amqp.close().await;
    ns.teardown().await;
}

/// A Webhook `hook` delivering Subscription `billing` (retries 100ms, 200ms, 300ms, 400ms,
/// 500ms) to a receiver with `behaviour`, Ready, with its dispatcher pod running.
async fn delivering(ns: &TestNamespace, behaviour: Behaviour) -> receiver::Handle {
    let secret = generate_secret();
    let receiver = receiver::start(&[&secret], behaviour).await;
    let signing = Secret {
        metadata: kube::api::ObjectMeta { name: Some("hook-signing".into()), ..Default::default() },
        data: Some([("secret".to_owned(), ByteString(secret.into_bytes()))].into()),
        ..Secret::default()
    };
    ns.api::<Secret>().create(&PostParams::default(), &signing).await.expect("secret");
    orders_topic(ns).await;
    create::<Subscription>(ns, json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": "billing"},
        "spec": {"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]}, "webhookRef": {"name": "hook"},
                 "retry": {"schedule": ["100ms", "200ms", "300ms", "400ms", "500ms"]}, "deletionPolicy": "Delete"}
    }))
    .await;
    create::<Webhook>(
        ns,
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": "hook"},
            "spec": {"url": receiver.url(), "signing": {"secretRef": {"name": "hook-signing"}}, "maxInFlight": 64,
                     "circuitBreaker": {"failureRatio": 1.0, "minAttempts": 100_000}}
        }),
    )
    .await;
    ns.wait_ready("subscription/billing");
    ns.wait_ready("webhook/hook");
    receiver
}

/// Every id `<prefix>-0..n` delivered, the dead-letter queue empty; returns the duplicates.
async fn all_delivered(receiver: &receiver::Handle, amqp: &Amqp, ns: &TestNamespace, prefix: &str, n: usize) -> u32 {
    eventually(&format!("{n} deliveries"), Duration::from_secs(300), || async {
        let seen = receiver.seen.lock().expect("lock");
        (0..n).all(|i| seen.delivered.contains_key(&format!("{prefix}-{i}"))).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(amqp.count(&format!("sluice.{}.billing.dlq", ns.name)).await, 0, "nothing dead-lettered");
    assert_eq!(amqp.count(&format!("sluice.{}.billing", ns.name)).await, 0, "nothing left in the work queue");
    let seen = receiver.seen.lock().expect("lock");
    assert_eq!(seen.bad_signatures, 0);
    assert_eq!(seen.delivered.len(), n, "no unexpected id");
    seen.duplicates()
}

/// Waits until Webhook `hook`'s dispatcher Deployment has rolled out and exactly one dispatcher
/// process runs: a pod of the previous revision still consuming would take messages meant for
/// the new one.
pub async fn rolled_out(ns: &TestNamespace, hook: &str) {
    let deployment = format!("deployment/sluice-dispatcher-{hook}");
    let (ok, out) = crate::harness::kubectl(&["rollout", "status", &deployment, "-n", &ns.name, "--timeout=90s"]);
    assert!(ok, "{deployment} rolled out: {out}");
    eventually(&format!("one dispatcher process of {hook}"), WAIT, || async {
        (dispatcher_pids(ns, hook).len() == 1).then_some(())
    })
    .await;
}

/// The running dispatcher processes of Webhook `hook` in `ns`, from the pod runner's files.
fn dispatcher_pids(ns: &TestNamespace, hook: &str) -> Vec<i32> {
    let pods = crate::harness::env().testbed.join("pods");
    let Ok(entries) = std::fs::read_dir(pods) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&format!("{}_sluice-dispatcher-{hook}-", ns.name)) {
                return None;
            }
            let pid: i32 = std::fs::read_to_string(entry.path().join("pid")).ok()?.trim().parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            // A killed process the runner has not reaped yet is a zombie, not a running one.
            (!status.contains("State:\tZ")).then_some(pid)
        })
        .collect()
}

#[tokio::test]
async fn sigkilled_dispatchers_lose_nothing_in_a_20000_message_run_with_failures() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-kill").await;
    // One in ten events fails (500) on its first attempt.
    let behaviour: Behaviour = Arc::new(|id, attempt| {
        let n: u32 = id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if n.is_multiple_of(10) && attempt == 1 { 500 } else { 204 }
    });
    let receiver = delivering(&ns, behaviour).await;
    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 20_000).await;

    // SIGKILL the dispatcher three times while it delivers; the pod runner restarts it.
    let mut kills = 0;
    while kills < 3 {
        let delivered = receiver.seen.lock().expect("lock").delivered.len();
        if delivered >= 20_000 {
            break;
        }
        if delivered > 2_000 * (kills + 1)
            && let Some(&pid) = dispatcher_pids(&ns, "hook").first()
        {
            std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
            kills += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let duplicates = all_delivered(&receiver, &amqp, &ns, "evt", 20_000).await;
    println!("SIGKILL x{kills} during 20,000 deliveries (10% failing once): 0 lost, {duplicates} duplicate deliveries");
    assert_eq!(kills, 3, "the dispatcher was killed three times during the run");
    let retried =
        receiver.seen.lock().expect("lock").attempts.iter().filter(|(id, n)| **n > 1 && id.ends_with('0')).count();
    assert_eq!(retried, 2000, "every event of the failing tenth was retried");
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn a_broker_crash_mid_run_loses_nothing_and_delivery_resumes_by_itself() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-broker").await;
    let receiver = delivering(&ns, Arc::new(|_, _| 204)).await;
    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 20_000).await;
    amqp.close().await;
    eventually("deliveries under way", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() > 500).then_some(())
    })
    .await;
    // SIGKILL, not a graceful stop: during a graceful shutdown the dispatcher could finish
    // the whole run, and a crash is the harder case (unconfirmed, unflushed state).
    let outage = crate::harness::Rabbit::crash();
    let during = receiver.seen.lock().expect("lock").delivered.len();
    outage.end();
    let amqp = Amqp::connect().await;
    let duplicates = all_delivered(&receiver, &amqp, &ns, "evt", 20_000).await;
    println!("RabbitMQ killed after {during} of 20,000 deliveries: 0 lost, {duplicates} duplicate deliveries");
    assert!(during < 20_000, "the crash happened mid-run");
    amqp.close().await;
    ns.teardown().await;
}

/// Topic `orders`, and per (Subscription, Webhook, url, extra Webhook spec) one Subscription
/// delivering to one Webhook with a one-hour retry step (retries wait in the broker).
async fn webhooks(ns: &TestNamespace, hooks: &[(&str, &str, &str, Value)]) {
    orders_topic(ns).await;
    for (sub, hook, url, extra) in hooks {
        create::<Subscription>(ns, json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": sub},
            "spec": {"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]}, "webhookRef": {"name": hook},
                     "retry": {"schedule": ["1h"]}, "deletionPolicy": "Delete"}
        }))
        .await;
        let mut spec = json!({"url": url});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        create::<Webhook>(
            ns,
            json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": hook}, "spec": spec
            }),
        )
        .await;
    }
    for (sub, hook, ..) in hooks {
        ns.wait_ready(&format!("subscription/{sub}"));
        ns.wait_ready(&format!("webhook/{hook}"));
    }
}

/// The generated signing secret of `hook`.
pub async fn generated_secret(ns: &TestNamespace, hook: &str) -> String {
    let secret = ns.api::<Secret>().get(&format!("sluice-signing-{hook}")).await.expect("generated secret");
    String::from_utf8(secret.data.expect("data")["secret"].0.clone()).expect("utf-8")
}

#[tokio::test]
async fn a_failing_endpoint_opens_its_circuit_while_a_healthy_webhook_delivers_everything() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-circuit").await;
    let healthy = receiver::start(&[], Arc::new(|_, _| 204)).await;
    let failing = receiver::start(&[], Arc::new(|_, _| 503)).await;
    let breaker = json!({"circuitBreaker": {"failureRatio": 0.5, "minAttempts": 10, "window": "1m", "openFor": "1h"}});
    webhooks(&ns, &[("billing", "healthy", &healthy.url(), json!({})), ("audit", "failing", &failing.url(), breaker)])
        .await;
    healthy.learn(&generated_secret(&ns, "healthy").await);
    failing.learn(&generated_secret(&ns, "failing").await);

    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 1000).await;
    ns.wait_condition::<Webhook>("failing", "CircuitOpen", "True", "FailureRatioExceeded").await;
    eventually("1,000 deliveries to the healthy endpoint", WAIT, || async {
        (healthy.seen.lock().expect("lock").delivered.len() == 1000).then_some(())
    })
    .await;
    // The open circuit stops consumption: the failing Webhook's messages wait in the broker.
    let attempts = failing.seen.lock().expect("lock").attempts.values().sum::<u32>();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(failing.seen.lock().expect("lock").attempts.values().sum::<u32>(), attempts, "no attempt while open");
    assert!(attempts < 100, "the circuit opened early ({attempts} attempts)");
    // Ready or held unacknowledged by the paused consumer: all in the broker.
    let rabbit = crate::harness::Rabbit::new();
    let messages = |queue: String| {
        let rabbit = &rabbit;
        async move { rabbit.queue(&queue).await.and_then(|q| q["messages"].as_u64()).unwrap_or(0) }
    };
    eventually("all 1,000 messages of the failing Webhook in its work and retry queues", WAIT, || async {
        let waiting = messages(format!("sluice.{}.audit", ns.name)).await
            + messages(format!("sluice.{}.audit.retry.1", ns.name)).await;
        (waiting == 1000).then_some(())
    })
    .await;
    assert_eq!(amqp.count(&format!("sluice.{}.audit.dlq", ns.name)).await, 0);
    // The failing dispatcher's metrics, as Prometheus scraped them, show what waits and why.
    let work = amqp.count(&format!("sluice.{}.audit", ns.name)).await;
    let retry = amqp.count(&format!("sluice.{}.audit.retry.1", ns.name)).await;
    let audit = format!(r#"namespace="{}",webhook="failing",subscription="audit""#, ns.name);
    scraped(&[
        (format!(r#"sum(sluice_queue_messages{{{audit},queue="work"}})"#), f64::from(work)),
        (format!(r#"sum(sluice_queue_messages{{{audit},queue="retry"}})"#), f64::from(retry)),
        (format!(r#"sum(sluice_circuit_open{{namespace="{}",webhook="failing"}})"#, ns.name), 1.0),
        (format!(r#"sum(sluice_circuit_open{{namespace="{}",webhook="healthy"}}) or vector(0)"#, ns.name), 0.0),
    ])
    .await;
    // The messages held by the waiting deliveries grow old.
    eventually("the oldest held message to be 5 s old", WAIT, || async {
        let age = prometheus(&format!("sum(sluice_oldest_message_age_seconds{{{audit}}})")).await?;
        (age >= 5.0).then_some(())
    })
    .await;
    let status = webhook_status(&ns, "failing").await;
    assert_eq!(status["circuit"], json!("Open"));
    let (ok, events) = crate::harness::kubectl(&[
        "get",
        "events",
        "-n",
        &ns.name,
        "--field-selector",
        "reason=CircuitOpened",
        "-o",
        "name",
    ]);
    assert!(ok && !events.trim().is_empty(), "a CircuitOpened Event");
    assert_eq!(healthy.seen.lock().expect("lock").duplicates(), 0);
    amqp.close().await;
    ns.teardown().await;
}

/// Whether the dispatcher configuration of Webhook `hook` routes Subscription `sub`.
async fn routes(ns: &TestNamespace, hook: &str, sub: &str) -> bool {
    let Ok(map) = ns.api::<ConfigMap>().get(&format!("sluice-dispatcher-{hook}")).await else { return false };
    let config: Value = serde_json::from_str(&map.data.unwrap_or_default()["dispatch.json"]).unwrap_or_default();
    config["subscriptions"].as_array().into_iter().flatten().any(|s| s["name"] == json!(sub))
}

#[tokio::test]
async fn a_subscription_moved_to_another_webhook_while_delivering_leaves_the_first() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-move").await;
    let (alpha, beta) =
        (receiver::start(&[], Arc::new(|_, _| 204)).await, receiver::start(&[], Arc::new(|_, _| 204)).await);
    webhooks(&ns, &[("billing", "alpha", &alpha.url(), json!({})), ("audit", "beta", &beta.url(), json!({}))]).await;
    alpha.learn(&generated_secret(&ns, "alpha").await);
    beta.learn(&generated_secret(&ns, "beta").await);
    let amqp = Amqp::connect().await;
    let exchange = format!("sluice.{}.orders", ns.name);
    // Deliveries flow, so both Webhooks are woken by their pods' reports from here on.
    amqp.publish(&exchange, "order.created", "before", 500).await;
    eventually("500 deliveries to each Webhook", WAIT, || async {
        let counts =
            (alpha.seen.lock().expect("lock").delivered.len(), beta.seen.lock().expect("lock").delivered.len());
        (counts == (500, 500)).then_some(())
    })
    .await;

    let moved = json!({"spec": {"webhookRef": {"name": "beta"}}});
    ns.api::<Subscription>().patch("billing", &PatchParams::default(), &Patch::Merge(&moved)).await.expect("move");
    // The Webhook it left drops it, not only the one it joined picks it up, well before a resync.
    eventually("billing routed by beta and no longer by alpha", Duration::from_secs(60), || async {
        (routes(&ns, "beta", "billing").await && !routes(&ns, "alpha", "billing").await).then_some(())
    })
    .await;
    rolled_out(&ns, "alpha").await;
    amqp.publish(&exchange, "order.created", "after", 200).await;
    let started = std::time::Instant::now();
    loop {
        let copies: Vec<u32> = {
            let seen = beta.seen.lock().expect("lock");
            (0..200).map(|i| seen.delivered.get(&format!("after-{i}")).copied().unwrap_or(0)).collect()
        };
        if copies.iter().all(|n| *n == 2) {
            break;
        }
        let histogram = (0..=3).map(|n| copies.iter().filter(|c| **c == n).count()).collect::<Vec<_>>();
        assert!(
            started.elapsed() < WAIT,
            "beta never got every event twice (billing and audit); events with 0/1/2/3 copies: {histogram:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let alpha_after = alpha.seen.lock().expect("lock").attempts.keys().filter(|id| id.starts_with("after-")).count();
    assert_eq!(alpha_after, 0, "nothing reaches the Webhook the Subscription left");
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn the_rate_limit_holds_and_the_egress_guard_refuses_metadata_and_loopback() {
    let _serial = serial();
    // No loopback allowlist for this controller's dispatchers.
    let mut opts = ControllerOpts::new("webhook-guards");
    opts.egress_allow = "";
    let (ns, running) = bed_with("webhook-guards", &opts).await;
    let receiver = receiver::start(&[], Arc::new(|_, _| 204)).await;
    webhooks(
        &ns,
        &[
            ("metadata", "metadata", "http://169.254.169.254/latest/meta-data", json!({})),
            ("loopback", "loopback", &receiver.url(), json!({})),
        ],
    )
    .await;
    let amqp = Amqp::connect().await;
    // Fewer than the circuit breaker's minAttempts, so every one is judged, not held back.
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 5).await;
    for sub in ["metadata", "loopback"] {
        let dlq = format!("sluice.{}.{sub}.dlq", ns.name);
        eventually(&format!("5 refused deliveries of {sub} in its DLQ"), WAIT, || async {
            (amqp.count(&dlq).await == 5).then_some(())
        })
        .await;
        let m = amqp
            .channel
            .basic_get(dlq.as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .expect("a dead letter");
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let reason = headers.inner().get("x-sluice-reason").cloned();
        assert_eq!(reason, Some(lapin::types::AMQPValue::LongString("egress-refused".into())), "{sub}");
    }
    assert_eq!(receiver.seen.lock().expect("lock").attempts.len(), 0, "nothing reached loopback");
    amqp.close().await;
    ns.teardown().await;
    drop(running);

    // The rate limit, with loopback allowlisted: 50/s with a burst of 50.
    let (ns, _running) = bed("webhook-rate").await;
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let behaviour: Behaviour = {
        let arrivals = arrivals.clone();
        Arc::new(move |_, _| {
            arrivals.lock().expect("lock").push(std::time::Instant::now());
            204
        })
    };
    let receiver = receiver::start(&[], behaviour).await;
    webhooks(&ns, &[("billing", "limited", &receiver.url(), json!({"rateLimit": {"perSecond": 50, "burst": 50}}))])
        .await;
    receiver.learn(&generated_secret(&ns, "limited").await);
    // The limit is per replica: a pod still rolling out would bring a second full bucket.
    rolled_out(&ns, "limited").await;
    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 400).await;
    eventually("400 deliveries", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() == 400).then_some(())
    })
    .await;
    let arrivals = arrivals.lock().expect("lock").clone();
    // The sustained rate, well after the burst (tokens that refilled while the burst went out
    // are spent by then): 299 intervals between arrival 100 and arrival 400.
    let sustained = 299.0 / (arrivals[399] - arrivals[100]).as_secs_f64();
    println!("rate limit 50/s (burst 50): sustained {sustained:.1} requests/s");
    assert!((45.0..=55.0).contains(&sustained), "within 10% of 50/s: {sustained:.1}");
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn ordered_delivery_keeps_order_through_failures() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-ordered").await;
    // Every tenth event fails twice (500) before it is accepted.
    let behaviour: Behaviour = Arc::new(|id, attempt| {
        let n: u32 = id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if n.is_multiple_of(10) && attempt <= 2 { 500 } else { 204 }
    });
    let receiver = receiver::start(&[], behaviour).await;
    orders_topic(&ns).await;
    create::<Subscription>(&ns, json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": "ledger"},
        "spec": {"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]}, "webhookRef": {"name": "hook"},
                 "ordering": "Ordered", "retry": {"schedule": ["100ms", "100ms", "100ms"]}, "deletionPolicy": "Delete"}
    }))
    .await;
    create::<Webhook>(
        &ns,
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": "hook"},
            "spec": {"url": receiver.url(), "circuitBreaker": {"failureRatio": 1.0, "minAttempts": 100_000}}
        }),
    )
    .await;
    ns.wait_ready("subscription/ledger");
    ns.wait_ready("webhook/hook");
    receiver.learn(&generated_secret(&ns, "hook").await);
    // The route is in the dispatcher's configuration once the Subscription is Ready.
    eventually("the dispatcher configuration to list the Subscription", WAIT, || async {
        let map = ns.api::<ConfigMap>().get("sluice-dispatcher-hook").await.ok()?;
        map.data?.get("dispatch.json")?.contains("\"ordered\": true").then_some(())
    })
    .await;
    rolled_out(&ns, "hook").await;

    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "evt", 100).await;
    eventually("100 deliveries", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() == 100).then_some(())
    })
    .await;
    let seen = receiver.seen.lock().expect("lock");
    let expected: Vec<String> = (0..100).map(|i| format!("evt-{i}")).collect();
    assert_eq!(seen.order, expected, "delivered in publish order, once each");
    for i in (0..100).step_by(10) {
        assert_eq!(seen.attempts.get(&format!("evt-{i}")), Some(&3), "evt-{i} retried in place twice");
    }
    drop(seen);
    assert_eq!(amqp.count(&format!("sluice.{}.ledger.dlq", ns.name)).await, 0);
    amqp.close().await;
    ns.teardown().await;
}

#[tokio::test]
async fn a_webhook_delivers_the_subscriptions_of_its_first_broker_and_names_the_others() {
    let _serial = serial();
    let (ns, _running) = bed("webhook-brokers").await;
    let receiver = receiver::start(&[], Arc::new(|_, _| 204)).await;
    // A second broker Secret (the same RabbitMQ under another name is another broker to Sluice).
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "team-rabbit"},
        "stringData": {"uri": "amqp://127.0.0.1:5672/%2f", "username": "guest", "password": "guest",
                        "managementUri": "http://127.0.0.1:15672"}
    }))
    .expect("secret");
    ns.api::<Secret>().create(&PostParams::default(), &secret).await.expect("secret");
    orders_topic(&ns).await;
    create::<EventTopic>(
        &ns,
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic", "metadata": {"name": "invoices"},
            "spec": {"type": "topic", "broker": {"secretRef": {"name": "team-rabbit"}}}
        }),
    )
    .await;
    let subscription = |name: &str, topic: &str, hook: &str| {
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": name},
               "spec": {"topicRef": {"name": topic}, "webhookRef": {"name": hook}, "deletionPolicy": "Delete"}})
    };
    create::<Subscription>(&ns, subscription("billing", "orders", "hook")).await;
    // Creation times have a resolution of one second: billing is the older one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create::<Subscription>(&ns, subscription("invoicing", "invoices", "hook")).await;
    create::<Webhook>(&ns, json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": "hook"}, "spec": {"url": receiver.url()}
    }))
    .await;
    ns.wait_ready("subscription/billing");
    ns.wait_ready("webhook/hook");
    receiver.learn(&generated_secret(&ns, "hook").await);
    let message = ns.wait_condition::<Subscription>("invoicing", "Ready", "False", "WebhookOnOtherBroker").await;
    assert!(message.contains(&format!("events wait in queue sluice.{}.invoicing", ns.name)), "{message}");
    eventually("the Webhook to name the Subscription it leaves out", WAIT, || async {
        let status = webhook_status(&ns, "hook").await;
        (status["brokerConflicts"] == json!(["invoicing"])).then_some(())
    })
    .await;
    let hook = ns.get_json::<Webhook>("hook").await.expect("webhook");
    let (_, _, ready) = condition(&hook, "Ready").expect("ready");
    assert!(
        ready.contains("not delivered, their topics live on another broker than the others': invoicing"),
        "{ready}"
    );

    // The first broker's Subscription is delivered; the other's events wait, none lost.
    let amqp = Amqp::connect().await;
    amqp.publish(&format!("sluice.{}.orders", ns.name), "order.created", "order", 10).await;
    amqp.publish(&format!("sluice.{}.invoices", ns.name), "invoice.sent", "invoice", 5).await;
    eventually("the 10 orders delivered", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() == 10).then_some(())
    })
    .await;
    assert_eq!(amqp.count(&format!("sluice.{}.invoicing", ns.name)).await, 5);

    // Pointed at a Webhook of its own, it is delivered too.
    create::<Webhook>(&ns, json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Webhook", "metadata": {"name": "invoices-hook"}, "spec": {"url": receiver.url()}
    }))
    .await;
    ns.wait_ready("webhook/invoices-hook");
    receiver.learn(&generated_secret(&ns, "invoices-hook").await);
    let moved = json!({"spec": {"webhookRef": {"name": "invoices-hook"}}});
    ns.api::<Subscription>().patch("invoicing", &PatchParams::default(), &Patch::Merge(&moved)).await.expect("move");
    ns.wait_ready("subscription/invoicing");
    eventually("the 5 invoices delivered by their own Webhook", WAIT, || async {
        (receiver.seen.lock().expect("lock").delivered.len() == 15).then_some(())
    })
    .await;
    eventually("the first Webhook to stop naming it", WAIT, || async {
        webhook_status(&ns, "hook").await.get("brokerConflicts").is_none().then_some(())
    })
    .await;
    finish(&receiver, amqp, ns).await;
}
