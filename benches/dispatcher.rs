//! `make bench`, dispatcher section: the release `sluice dispatcher` against the test bed's
//! broker and local HTTP sinks, compared with a raw lapin consumer (consume + ack, nothing
//! else) on the same broker in the same run. Printed as a table; nothing here asserts.
//!
//! - throughput: `SLUICE_BENCH_MESSAGES` (default 20000) messages waiting in a quorum queue,
//!   drained by the raw consumer, then by the dispatcher into an instant sink (204);
//! - latency: publish → received at the sink at 1,000 msg/s for 10 s (p50, p99), and the
//!   same for the raw consumer (publish → consumed);
//! - isolation: the healthy Webhook's throughput with a second dispatcher beside it whose
//!   endpoint never answers (every attempt times out), and without, alternating, median of 3;
//! - dispatcher RSS after the full-speed drain, and of a fresh one at the end of the 1,000 msg/s run.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]

#[allow(dead_code, clippy::await_holding_lock)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use futures::StreamExt;
use harness::{AMQP_URI, Controller, eventually, random_suffix};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::json;
use sluice::dispatch::signing::generate_secret;

const PREFETCH: u16 = 64;

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// What a sink saw: deliveries, and publish → arrival latencies (µs) of timed bodies.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    latencies: Mutex<Vec<u64>>,
}

impl Sink {
    fn arrived(&self, body: &[u8]) {
        let now = Instant::now();
        self.first.lock().expect("lock").get_or_insert(now);
        *self.last.lock().expect("lock") = Some(now);
        if let Some(sent) =
            std::str::from_utf8(body).ok().and_then(|b| b.strip_prefix("t=")).and_then(|t| t.parse::<u64>().ok())
        {
            self.latencies.lock().expect("lock").push(now_micros().saturating_sub(sent));
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        *self.first.lock().expect("lock") = None;
        *self.last.lock().expect("lock") = None;
        self.latencies.lock().expect("lock").clear();
    }

    /// Messages per second between the first and the last arrival.
    fn rate(&self) -> f64 {
        let (first, last) = (*self.first.lock().expect("lock"), *self.last.lock().expect("lock"));
        let n = self.received.load(Ordering::Relaxed);
        match (first, last) {
            (Some(f), Some(l)) if l > f => (n.saturating_sub(1)) as f64 / (l - f).as_secs_f64(),
            _ => 0.0,
        }
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut l = self.latencies.lock().expect("lock").clone();
        if l.is_empty() {
            return f64::NAN;
        }
        l.sort_unstable();
        let i = ((l.len() - 1) as f64 * p).round() as usize;
        l[i] as f64 / 1000.0
    }
}

async fn hook(State(sink): State<Arc<Sink>>, body: Bytes) -> StatusCode {
    sink.arrived(&body);
    StatusCode::NO_CONTENT
}

async fn sink() -> (String, Arc<Sink>) {
    let sink = Arc::new(Sink::default());
    let app = Router::new().route("/hook", post(hook)).with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), sink)
}

/// An endpoint that accepts connections and never answers.
async fn dead_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{addr}/hook"), task)
}

/// A work queue with one retry step and a dead-letter queue, declared directly.
struct Queues {
    work: String,
    retry: String,
    dlq: String,
}

async fn declare(channel: &lapin::Channel, name: &str) -> Queues {
    let q = Queues { work: format!("{name}.work"), retry: format!("{name}.retry.1"), dlq: format!("{name}.dlq") };
    let quorum = |extra: &[(&str, AMQPValue)]| {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        for (k, v) in extra {
            args.insert((*k).into(), v.clone());
        }
        args
    };
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    for (queue, args) in [
        (&q.work, quorum(&[])),
        (&q.dlq, quorum(&[])),
        (
            &q.retry,
            quorum(&[
                ("x-message-ttl", AMQPValue::LongUInt(1000)),
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                ("x-dead-letter-routing-key", AMQPValue::LongString(q.work.as_str().into())),
            ]),
        ),
    ] {
        channel.queue_declare(queue.as_str().into(), durable, args).await.expect("declare");
    }
    q
}

async fn delete(channel: &lapin::Channel, q: &Queues) {
    for queue in [&q.work, &q.retry, &q.dlq] {
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
}

/// Publishes `n` persistent messages to `queue` with confirms, `body(i)` each.
async fn fill(channel: &lapin::Channel, queue: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(format!("m-{i}").into());
        let confirm = channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), b"{}", props)
            .await
            .expect("publish");
        pending.push(confirm);
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                c.await.expect("confirm");
            }
        }
    }
    for c in pending {
        c.await.expect("confirm");
    }
}

fn dispatcher(name: &str, url: &str, queues: &[(&str, &Queues)], timeout_ms: u64) -> Controller {
    let config = json!({
        "namespace": "bench", "webhook": name, "url": url, "timeout": timeout_ms, "connectTimeout": 1000,
        "maxInFlight": PREFETCH,
        "circuitBreaker": {"failureRatio": 1.0, "minAttempts": 1_000_000, "window": 60_000, "openFor": 1000},
        "egress": {"allow": ["127.0.0.0/8"]},
        "subscriptions": queues.iter().map(|(sub, q)| json!({
            "name": sub, "queue": q.work, "retryQueues": [q.retry], "schedule": [1000], "deadLetterQueue": q.dlq
        })).collect::<Vec<_>>()
    });
    Controller::dispatcher(&config, &generate_secret())
}

/// The raw baseline: a lapin consumer with the same prefetch that only acks.
async fn raw_consume(conn: &Connection, queue: &str, n: usize, sink: &Sink) {
    let channel = conn.create_channel().await.expect("channel");
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = channel
        .basic_consume(queue.into(), "bench-raw".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    while sink.received.load(Ordering::Relaxed) < n as u64 {
        let delivery = consumer.next().await.expect("stream").expect("delivery");
        sink.arrived(&delivery.data);
        delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let _ = channel.close(200, "done".into()).await;
}

/// Publishes timed bodies to `queue` at `rate` per second for `secs`.
async fn paced(channel: &lapin::Channel, queue: &str, rate: u64, secs: u64) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut confirms = Vec::new();
    for i in 0..rate * secs {
        tick.tick().await;
        let props = BasicProperties::default().with_delivery_mode(2).with_message_id(format!("p-{i}").into());
        let body = format!("t={}", now_micros());
        let confirm = channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body.as_bytes(), props)
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        confirm.await.expect("confirm");
    }
}

fn median(runs: &mut [f64]) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

async fn wait_for(sink: &Sink, n: usize) {
    eventually(&format!("{n} arrivals"), Duration::from_secs(600), || async {
        (sink.received.load(Ordering::Relaxed) >= n as u64).then_some(())
    })
    .await;
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let conn = Connection::connect(AMQP_URI, ConnectionProperties::default()).await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let base = format!("bench-dispatch-{}", random_suffix());
    let healthy = declare(&channel, &format!("{base}.healthy")).await;
    let (url, sink) = sink().await;
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |figure: &str, value: String| {
        eprintln!("bench: {figure}: {value}");
        rows.push((figure.to_owned(), value));
    };

    // Throughput: raw consumer, then the dispatcher, each draining n waiting messages.
    fill(&channel, &healthy.work, n).await;
    raw_consume(&conn, &healthy.work, n, &sink).await;
    let raw = sink.rate();
    sink.reset();
    fill(&channel, &healthy.work, n).await;
    let d = dispatcher("healthy", &url, &[("healthy", &healthy)], 15_000);
    d.wait_ready().await;
    wait_for(&sink, n).await;
    let alone = sink.rate();
    row(&format!("raw lapin consume+ack, prefetch {PREFETCH} (msg/s)"), format!("{raw:.0}"));
    row("dispatcher -> instant sink, deliveries/s", format!("{alone:.0}"));
    row("  ratio dispatcher / raw", format!("{:.2}", alone / raw));

    row("dispatcher RSS after draining at full speed (MiB)", format!("{:.1}", d.rss_kib() as f64 / 1024.0));
    drop(d);

    // Latency at 1,000 msg/s: a fresh dispatcher, then the raw consumer.
    sink.reset();
    let d = dispatcher("healthy", &url, &[("healthy", &healthy)], 15_000);
    d.wait_ready().await;
    paced(&channel, &healthy.work, 1000, 10).await;
    wait_for(&sink, 10_000).await;
    row("dispatcher at 1,000 msg/s: publish -> delivered p50 (ms)", format!("{:.2}", sink.percentile(0.50)));
    row("dispatcher at 1,000 msg/s: publish -> delivered p99 (ms)", format!("{:.2}", sink.percentile(0.99)));
    row("dispatcher RSS at 1,000 msg/s (MiB)", format!("{:.1}", d.rss_kib() as f64 / 1024.0));
    drop(d);
    sink.reset();
    let (raw_latency, ()) = tokio::join!(
        async {
            raw_consume(&conn, &healthy.work, 10_000, &sink).await;
            (sink.percentile(0.50), sink.percentile(0.99))
        },
        paced(&channel, &healthy.work, 1000, 10)
    );
    row("raw consumer at 1,000 msg/s: publish -> consumed p50 (ms)", format!("{:.2}", raw_latency.0));
    row("raw consumer at 1,000 msg/s: publish -> consumed p99 (ms)", format!("{:.2}", raw_latency.1));

    // Isolation: the healthy Webhook again, with a dead one (timing out) beside it, and
    // without, alternating over three rounds each (one drain alone varies by ~10% here).
    let dead_queues = declare(&channel, &format!("{base}.dead")).await;
    fill(&channel, &dead_queues.work, 5_000).await;
    let (dead_url, _dead) = dead_endpoint().await;
    let (mut alone_runs, mut beside_runs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for with_dead in [false, true] {
            let dead = with_dead.then(|| dispatcher("dead", &dead_url, &[("dead", &dead_queues)], 2_000));
            if let Some(dead) = &dead {
                dead.wait_ready().await;
            }
            sink.reset();
            fill(&channel, &healthy.work, n).await;
            let d = dispatcher("healthy", &url, &[("healthy", &healthy)], 15_000);
            d.wait_ready().await;
            wait_for(&sink, n).await;
            if with_dead { &mut beside_runs } else { &mut alone_runs }.push(sink.rate());
            drop((d, dead));
        }
    }
    let (alone_median, beside) = (median(&mut alone_runs), median(&mut beside_runs));
    row("dispatcher -> instant sink, alone, median of 3 (msg/s)", format!("{alone_median:.0}"));
    row("dispatcher -> instant sink, with a dead endpoint beside it, median of 3 (msg/s)", format!("{beside:.0}"));
    row("  ratio with / without the dead endpoint", format!("{:.2}", beside / alone_median));

    delete(&channel, &healthy).await;
    delete(&channel, &dead_queues).await;
    let _ = conn.close(200, "bench done".into()).await;
    println!("\nDispatcher, one run on this machine ({n} messages per throughput figure)");
    println!("{:<82} {:>12}", "figure", "value");
    for (figure, value) in rows {
        println!("{figure:<82} {value:>12}");
    }
}
