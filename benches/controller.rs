//! `make bench`, controller section: how fast EventTopics converge compared with declaring
//! the same broker objects directly, what the controller costs in memory, and how many
//! management API calls a steady-state resync makes. Figures are measured in one run on this
//! machine and printed as a table; nothing here asserts a threshold.

// Figures are printed with one decimal; the u64 → f64 precision loss is irrelevant.
#![allow(clippy::cast_precision_loss)]

#[allow(dead_code, clippy::await_holding_lock)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use harness::{Controller, ControllerOpts, TestNamespace, admin, eventually};
use kube::api::{ListParams, PostParams};
use serde_json::json;
use sluice::api::EventTopic;

const MGMT: &str = "http://127.0.0.1:15672/api";

fn topics() -> usize {
    std::env::var("SLUICE_BENCH_TOPICS").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

/// Baseline: the same four objects per topic declared straight through the management API,
/// 16 at a time (the controller's default concurrency).
async fn raw_declare(prefix: &str, n: usize) -> Duration {
    let http = reqwest::Client::new();
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let http = http.clone();
            async move {
                let x = format!("{prefix}.t{i}");
                let ae = format!("{x}.unroutable");
                let enc =
                    |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
                let put = |path: String, body: serde_json::Value| {
                    let http = http.clone();
                    async move {
                        let r = http
                            .put(format!("{MGMT}/{path}"))
                            .basic_auth("guest", Some("guest"))
                            .json(&body)
                            .send()
                            .await;
                        assert!(r.is_ok_and(|r| r.status().is_success()), "baseline declare failed");
                    }
                };
                put(format!("exchanges/%2f/{}", enc(&ae)), json!({"type": "fanout", "durable": true})).await;
                put(
                    format!("exchanges/%2f/{}", enc(&x)),
                    json!({"type": "topic", "durable": true, "arguments": {"alternate-exchange": ae}}),
                )
                .await;
                put(
                    format!("queues/%2f/{}", enc(&ae)),
                    json!({"durable": true, "arguments": {"x-queue-type": "quorum"}}),
                )
                .await;
                let r = http
                    .post(format!("{MGMT}/bindings/%2f/e/{}/q/{}", enc(&ae), enc(&ae)))
                    .basic_auth("guest", Some("guest"))
                    .json(&json!({"routing_key": ""}))
                    .send()
                    .await;
                assert!(r.is_ok_and(|r| r.status().is_success()), "baseline bind failed");
            }
        })
        .await;
    let took = start.elapsed();
    stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let http = http.clone();
            async move {
                let x = format!("{prefix}.t{i}");
                for path in [
                    format!("exchanges/%2f/{x}"),
                    format!("exchanges/%2f/{x}.unroutable"),
                    format!("queues/%2f/{x}.unroutable"),
                ] {
                    let _ = http.delete(format!("{MGMT}/{path}")).basic_auth("guest", Some("guest")).send().await;
                }
            }
        })
        .await;
    took
}

fn sum(metrics: &str, name: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Creates `n` topics and returns how long it took until every one was Ready.
async fn apply_and_wait(api: &kube::Api<EventTopic>, n: usize) -> Duration {
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            async move {
                let t: EventTopic = serde_json::from_value(json!({
                    "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic",
                    "metadata": {"name": format!("t{i}")}, "spec": {"type": "topic"}
                }))
                .expect("topic");
                api.create(&PostParams::default(), &t).await.expect("create topic");
            }
        })
        .await;
    eventually("every topic Ready", Duration::from_secs(600), || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        (ready == n).then_some(())
    })
    .await;
    start.elapsed()
}

/// Steady state over `window`: (reconciles, management API calls, broker writes).
async fn steady_state(ctl: &Controller, window: Duration) -> (f64, f64, f64) {
    let before = ctl.metrics().await;
    tokio::time::sleep(window).await;
    let after = ctl.metrics().await;
    let delta = |name: &str| sum(&after, name) - sum(&before, name);
    let writes = ["exchange.put", "queue.put", "binding.create"]
        .iter()
        .map(|op| delta(&format!("sluice_broker_requests_total{{operation=\"{op}\"")))
        .sum::<f64>();
    (delta("sluice_reconcile_total"), delta("sluice_broker_requests_total"), writes)
}

#[tokio::main]
async fn main() {
    let n = topics();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "bench").await;

    let raw = raw_declare(&format!("bench-raw-{}", harness::random_suffix()), n).await;

    let ctl = Controller::start(&ControllerOpts { resync: "10s", ..ControllerOpts::new("bench") });
    ctl.wait_leader().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = ctl.rss_kib();

    let api = ns.api::<EventTopic>();
    let converge = apply_and_wait(&api, n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = ctl.rss_kib();
    let (reconciles, requests, writes) = steady_state(&ctl, Duration::from_secs(30)).await;
    let rss_steady = ctl.rss_kib();

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("\nController (EventTopic), {n} topics, one run on this machine");
    println!("{:<58} {:>14}", "figure", "value");
    println!("{:<58} {:>14.2}", "baseline: declare the same objects via the management API (s)", raw.as_secs_f64());
    println!("{:<58} {:>14.2}", "operator: apply -> every topic Ready (s)", converge.as_secs_f64());
    println!("{:<58} {:>14.2}", "ratio operator / baseline", converge.as_secs_f64() / raw.as_secs_f64());
    println!("{:<58} {:>14.1}", "controller RSS idle (MiB)", mib(rss_idle));
    println!("{:<58} {:>14.1}", format!("controller RSS with {n} topics Ready (MiB)"), mib(rss_loaded));
    println!("{:<58} {:>14.1}", "controller RSS after 30s of resyncs (MiB)", mib(rss_steady));
    println!("{:<58} {:>14.0}", "steady state: reconciles in 30s (resync 10s)", reconciles);
    println!("{:<58} {:>14.2}", "steady state: management API calls per reconcile", requests / reconciles.max(1.0));
    println!("{:<58} {:>14.0}", "steady state: broker writes in 30s", writes);

    ns.teardown().await;
}
