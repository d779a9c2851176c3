//! `make bench`, controller section: how fast resources converge compared with declaring the
//! same broker objects directly (the baseline, measured in the same run), what the controller
//! costs in memory, and what a steady-state resync costs the broker. Printed as a table;
//! nothing here asserts a threshold.
//!
//! Sizes: `SLUICE_BENCH_TOPICS` (default 100) EventTopics, then `SLUICE_BENCH_SUBSCRIPTIONS`
//! (default 1000) Subscriptions, each with a dead-letter queue and the default 9-step ladder.

// Figures are printed with one or two decimals; u64 → f64 precision loss is irrelevant.
#![allow(clippy::cast_precision_loss)]

#[allow(dead_code, clippy::await_holding_lock)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use harness::{Controller, ControllerOpts, TestNamespace, admin, eventually};
use kube::api::{ListParams, PostParams};
use reqwest::Method;
use serde_json::{Value, json};
use sluice::{
    api::{EventTopic, Subscription},
    controller::Reconciled,
};

const MGMT: &str = "http://127.0.0.1:15672/api";
/// The controller's default reconcile concurrency; the baseline uses the same.
const CONCURRENCY: usize = 16;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends `requests(i)` for every item `i`, items `CONCURRENCY` at a time, each item's
/// requests in order; returns how long it took.
async fn baseline(n: usize, requests: impl Fn(usize) -> Vec<(Method, String, Value)>) -> Duration {
    let http = reqwest::Client::new();
    let requests = &requests;
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let http = http.clone();
            async move {
                for (method, path, body) in requests(i) {
                    let r =
                        http.request(method, format!("{MGMT}/{path}")).basic_auth("guest", Some("guest")).json(&body);
                    let r = r.send().await.expect("baseline request");
                    assert!(r.status().is_success(), "baseline {path}: {}", r.status());
                }
            }
        })
        .await;
    start.elapsed()
}

/// Deletes what a baseline declared (not timed).
async fn delete_baseline(prefix: &str) {
    harness::Rabbit::new().purge(prefix).await;
}

/// The EventTopic baseline: alternate exchange, exchange, unroutable queue, binding.
fn topic_objects(prefix: &str, i: usize) -> Vec<(Method, String, Value)> {
    let x = format!("{prefix}.t{i}");
    let ae = format!("{x}.unroutable");
    vec![
        (Method::PUT, format!("exchanges/%2f/{}", enc(&ae)), json!({"type": "fanout", "durable": true})),
        (
            Method::PUT,
            format!("exchanges/%2f/{}", enc(&x)),
            json!({"type": "topic", "durable": true, "arguments": {"alternate-exchange": ae}}),
        ),
        (
            Method::PUT,
            format!("queues/%2f/{}", enc(&ae)),
            json!({"durable": true, "arguments": {"x-queue-type": "quorum"}}),
        ),
        (Method::POST, format!("bindings/%2f/e/{}/q/{}", enc(&ae), enc(&ae)), json!({"routing_key": ""})),
    ]
}

/// The Subscription baseline: DLQ, work queue, nine retry queues, one binding.
fn subscription_objects(prefix: &str, exchange: &str, i: usize) -> Vec<(Method, String, Value)> {
    let work = format!("{prefix}.s{i}");
    let dlq = format!("{work}.dlq");
    let quorum = |args: Value| json!({"durable": true, "arguments": args});
    let mut v = vec![
        (Method::PUT, format!("queues/%2f/{}", enc(&dlq)), quorum(json!({"x-queue-type": "quorum"}))),
        (
            Method::PUT,
            format!("queues/%2f/{}", enc(&work)),
            quorum(json!({"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
                          "x-dead-letter-strategy": "at-least-once"})),
        ),
    ];
    for (step, ttl) in
        [5_000u64, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000, 86_400_000]
            .iter()
            .enumerate()
    {
        let args = json!({"x-queue-type": "quorum", "x-message-ttl": ttl, "x-dead-letter-exchange": "",
                          "x-dead-letter-routing-key": work, "x-dead-letter-strategy": "at-least-once",
                          "x-overflow": "reject-publish"});
        v.push((Method::PUT, format!("queues/%2f/{}", enc(&format!("{work}.retry.{}", step + 1))), quorum(args)));
    }
    v.push((
        Method::POST,
        format!("bindings/%2f/e/{}/q/{}", enc(exchange), enc(&work)),
        json!({"routing_key": "order.*"}),
    ));
    v
}

/// Creates `objects` (32 at a time, as one big `kubectl apply` would) and returns how long
/// it took until every one was Ready.
async fn apply_and_wait<K>(api: &kube::Api<K>, objects: Vec<K>) -> Duration
where
    K: Reconciled + serde::Serialize + Send + Sync,
{
    let n = objects.len();
    let start = Instant::now();
    stream::iter(objects)
        .for_each_concurrent(32, |o| async move {
            api.create(&PostParams::default(), &o).await.expect("create");
        })
        .await;
    eventually("every object Ready", Duration::from_secs(1800), || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|o| o.conditions().iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            .count();
        (ready == n).then_some(())
    })
    .await;
    start.elapsed()
}

/// AMQP channels the broker has seen opened (nothing but the controller talks AMQP while the
/// steady state is measured).
async fn channels_opened() -> f64 {
    let overview: Value = reqwest::Client::new()
        .get(format!("{MGMT}/overview"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("overview")
        .json()
        .await
        .expect("overview JSON");
    overview["churn_rates"]["channel_created"].as_f64().unwrap_or_default()
}

struct Steady {
    reconciles: f64,
    management_calls: f64,
    amqp_channels: f64,
    writes: f64,
    took: Duration,
}

/// A restarted controller re-verifies every object once (the same work as a resync, all at
/// once): starts a fresh controller and measures that pass until `n` reconciles of `kind`
/// succeeded. Returns the figures and the controller, which keeps running.
async fn verification_pass(kind: &str, n: usize) -> (Steady, Controller) {
    let channels_before = channels_opened().await;
    let ctl = Controller::start(&ControllerOpts::new("bench"));
    // A fresh process counts from zero: its first scrape may come after its first reconciles,
    // and must not be taken as the starting point (nor made before its admin server listens).
    eventually("the controller to answer", Duration::from_secs(60), || async { ctl.alive().await.then_some(()) }).await;
    let steady = count_reconciles(&ctl, kind, n, String::new(), channels_before).await;
    (steady, ctl)
}

/// What the next `n` successful reconciles of `kind` cost the broker, from now on: a fresh
/// controller's verification pass, or one resync round of a running one (each object's
/// jittered resync came round once).
async fn next_reconciles(ctl: &Controller, kind: &str, n: usize) -> Steady {
    let before = ctl.metrics().await;
    count_reconciles(ctl, kind, n, before, channels_opened().await).await
}

/// What the reconciles of `kind` cost the broker from the metrics `before` (and the broker's
/// `channels_before`) until `n` more of them succeeded.
async fn count_reconciles(ctl: &Controller, kind: &str, n: usize, before: String, channels_before: f64) -> Steady {
    let sum = |metrics: &str, prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let writes = |metrics: &str| {
        ["exchange.put", "queue.put", "binding.create", "policy.put"]
            .iter()
            .map(|op| sum(metrics, &format!("sluice_broker_requests_total{{operation=\"{op}\"")))
            .sum::<f64>()
    };
    let success = format!("sluice_reconcile_total{{kind=\"{kind}\",result=\"success\"}}");
    let all = format!("sluice_reconcile_total{{kind=\"{kind}\"");
    let done_before = sum(&before, &success);
    let start = Instant::now();
    eventually("a resync round", Duration::from_secs(1800), || async {
        let done = ctl.metric(&success).await.unwrap_or_default();
        (done - done_before >= n as f64).then_some(())
    })
    .await;
    let after = ctl.metrics().await;
    Steady {
        reconciles: sum(&after, &all) - sum(&before, &all),
        management_calls: sum(&after, "sluice_broker_requests_total") - sum(&before, "sluice_broker_requests_total"),
        amqp_channels: channels_opened().await - channels_before,
        writes: writes(&after) - writes(&before),
        took: start.elapsed(),
    }
}

fn steady_rows(table: &mut Table, kind: &str, n: usize, s: &Steady) {
    table.row(format!("  every {kind} re-verified (s)"), format!("{:.2}", s.took.as_secs_f64()));
    table.row(format!("  steady state: {kind} reconciles in that pass"), format!("{:.0}", s.reconciles));
    table.row(
        "  steady state: management API calls per reconcile (all kinds)",
        format!("{:.2}", s.management_calls / s.reconciles.max(1.0)),
    );
    table.row(
        "  steady state: AMQP channels opened per reconcile",
        format!("{:.2}", s.amqp_channels / s.reconciles.max(1.0)),
    );
    table.row(format!("  steady state: broker writes while re-verifying {n}"), format!("{:.0}", s.writes.abs()));
}

struct Table(Vec<(String, String)>);

impl Table {
    /// Records a figure, and shows it at once (to stderr) so an interrupted run still
    /// leaves what it measured.
    fn row(&mut self, figure: impl Into<String>, value: String) {
        let figure = figure.into();
        eprintln!("bench: {figure}: {value}");
        self.0.push((figure, value));
    }

    fn print(&self, title: &str) {
        println!("\n{title}");
        println!("{:<66} {:>12}", "figure", "value");
        for (figure, value) in &self.0 {
            println!("{figure:<66} {value:>12}");
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    let (topics, subscriptions) = (size("SLUICE_BENCH_TOPICS", 100), size("SLUICE_BENCH_SUBSCRIPTIONS", 1000));
    let client = admin().await;
    let mut table = Table(Vec::new());
    let mut ctl = Controller::start(&ControllerOpts::new("bench"));
    ctl.wait_leader().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    table.row("controller RSS idle (MiB)", mib(ctl.rss_kib()));

    // EventTopics.
    let prefix = format!("bench-raw-{}", harness::random_suffix());
    let raw = baseline(topics, |i| topic_objects(&prefix, i)).await;
    delete_baseline(&prefix).await;
    let ns = TestNamespace::create(&client, "bench-topics").await;
    let objects = (0..topics)
        .map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic",
                "metadata": {"name": format!("t{i}")}, "spec": {"type": "topic"}
            }))
            .expect("topic")
        })
        .collect();
    let took = apply_and_wait(&ns.api::<EventTopic>(), objects).await;
    table.row(
        format!("{topics} EventTopics: baseline, same objects via the management API (s)"),
        format!("{:.2}", raw.as_secs_f64()),
    );
    table.row(format!("{topics} EventTopics: apply -> all Ready (s)"), format!("{:.2}", took.as_secs_f64()));
    table.row("  ratio operator / baseline", format!("{:.2}", took.as_secs_f64() / raw.as_secs_f64()));
    table.row(format!("controller RSS with {topics} EventTopics (MiB)"), mib(ctl.rss_kib()));
    ctl.terminate();
    let (steady, next) = verification_pass("EventTopic", topics).await;
    ctl = next;
    steady_rows(&mut table, "EventTopic", topics, &steady);
    ns.teardown().await;
    ctl.terminate();

    // Subscriptions, each with a DLQ and the default 9-step ladder, on one topic. Steady
    // state is measured as one resync round of the running controller: a restarted one cannot
    // reconnect to RabbitMQ 3.10 here once it holds 11,000 quorum queues (its file handle
    // cache counts ~3 handles per quorum queue and this machine caps descriptors at 20,000, so
    // new AMQP connections wait for a handle forever).
    let mut opts = ControllerOpts::new("bench");
    opts.resync = "120s";
    let ctl = Controller::start(&opts);
    ctl.wait_leader().await;
    let ns = TestNamespace::create(&client, "bench-subs").await;
    let orders: EventTopic = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic", "metadata": {"name": "orders"}, "spec": {"type": "topic"}
    }))
    .expect("topic");
    ns.api::<EventTopic>().create(&PostParams::default(), &orders).await.expect("topic");
    ns.wait_ready("eventtopic/orders");
    let exchange = format!("sluice.{}.orders", ns.name);
    let prefix = format!("bench-raw-{}", harness::random_suffix());
    let raw = baseline(subscriptions, |i| subscription_objects(&prefix, &exchange, i)).await;
    delete_baseline(&prefix).await;
    let objects: Vec<Subscription> = (0..subscriptions)
        .map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": format!("s{i}")},
                "spec": {"topicRef": {"name": "orders"}, "filter": {"routingKeys": ["order.*"]}, "deletionPolicy": "Delete"}
            }))
            .expect("subscription")
        })
        .collect();
    let took = apply_and_wait(&ns.api::<Subscription>(), objects).await;
    let label = format!("{subscriptions} Subscriptions (11 quorum queues + 1 binding each)");
    table.row(format!("{label}: baseline (s)"), format!("{:.2}", raw.as_secs_f64()));
    table.row(format!("{subscriptions} Subscriptions: apply -> all Ready (s)"), format!("{:.2}", took.as_secs_f64()));
    table.row("  ratio operator / baseline", format!("{:.2}", took.as_secs_f64() / raw.as_secs_f64()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    table.row(format!("controller RSS with {subscriptions} Subscriptions (MiB)"), mib(ctl.rss_kib()));
    table.row("  (resync 120s, jittered ±10%, for the next figures)", String::new());
    let steady = next_reconciles(&ctl, "Subscription", subscriptions).await;
    steady_rows(&mut table, "Subscription", subscriptions, &steady);
    table.row("controller RSS after a resync round (MiB)", mib(ctl.rss_kib()));
    table.print("Controller, one run on this machine");
    ns.teardown().await;
}
