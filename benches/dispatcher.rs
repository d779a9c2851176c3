//! `make bench`, dispatcher section: the release `sluice dispatcher` against the test bed's
//! broker and local HTTP sinks, compared in the same run with the fastest consume+ack floor we
//! can build on the same broker. Printed as a table; nothing here asserts.
//!
//! - the floor: `SLUICE_BENCH_MESSAGES` (default 20000) 1 KiB JSON messages waiting in a quorum
//!   queue, drained by three plain consumers with the dispatcher's prefetch: lapin acking each
//!   message in turn, lapin with one `multiple` ack per half prefetch, and Go's amqp091 client
//!   (`tools/amqp-floor`) likewise. The fastest is the floor, its CPU per message the CPU floor;
//! - throughput: the dispatcher draining the same messages into an instant sink (204), passing
//!   bodies through, checking them against a catalog schema, and rendering them two versions
//!   down with both checks; alternating, median of 3 each; CPU per delivery of the dispatcher;
//! - rendering in-process: microseconds per message to check, and to check, convert and check;
//! - latency: publish → received at the sink at 1,000 msg/s for 10 s (p50, p99), and the
//!   same for the raw consumer (publish → consumed);
//! - isolation: the healthy Webhook's throughput with a second dispatcher beside it whose
//!   endpoint never answers (every attempt times out), and without, alternating, median of 3;
//! - dispatcher RSS after the full-speed drain, and of a fresh one at the end of the 1,000 msg/s run.
//!
//! `SLUICE_BENCH_QUICK=1` runs one round of the throughput comparison and nothing after it;
//! `SLUICE_BENCH_PERF=1` also profiles a passthrough drain with `perf` (target/dispatcher-profile.txt).

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]

#[allow(dead_code, clippy::await_holding_lock)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::{
    process::Command,
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
use serde_json::{Value, json};
use sluice::{
    dispatch::signing::generate_secret,
    versions::{Message, Renderer, TopicVersions},
};

const PREFETCH: u16 = 64;

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = harness::cpu_split_of(pid);
    user + system
}

/// A realistic order of about 1 KiB, version 3 of the bench's catalog.
fn order(i: usize) -> Vec<u8> {
    let lines: Vec<Value> = (0..6)
        .map(|l| json!({"sku": format!("SKU-{:05}", i * 7 + l), "name": "Organic green tea, 20 bags", "qty": l + 1, "unitPrice": {"amount": 4.5, "currency": "EUR"}}))
        .collect();
    let body = json!({
        "id": format!("ord_{i:08}"),
        "createdAt": "2026-12-03T10:15:00Z",
        "customer": {"id": format!("cus_{i:06}"), "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
        "shipping": {"street": "12 Analytical Row", "city": "London", "postcode": "NW1 6XE", "country": "GB"},
        "lines": lines,
        "total": {"amount": 94.5, "currency": "EUR"},
        "channel": "web"
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The bench's topic: `order.created` in three versions with a schema each, and a policy whose
/// v2 flattens the customer and v1 the total (two steps from v3 to v1).
fn orders() -> TopicVersions {
    serde_json::from_value(json!({
        "events": [{"type": "order.created", "versions": [
            {"name": "v3", "schema": {"type": "object", "required": ["id", "customer", "lines", "total"], "properties": {
                "id": {"type": "string", "pattern": "^ord_[0-9]{8}$"},
                "createdAt": {"type": "string"},
                "customer": {"type": "object", "required": ["id", "name"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}, "tier": {"enum": ["gold", "silver"]}}},
                "shipping": {"type": "object", "required": ["country"], "properties": {"country": {"type": "string", "minLength": 2, "maxLength": 2}}},
                "lines": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["sku", "qty", "unitPrice"], "properties": {
                    "sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
                    "unitPrice": {"type": "object", "required": ["amount", "currency"]}}}},
                "total": {"type": "object", "required": ["amount", "currency"], "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}}}}}},
            {"name": "v2", "schema": {"type": "object", "required": ["id", "customerId", "total"], "not": {"required": ["customer"]}}},
            {"name": "v1", "schema": {"type": "object", "required": ["id", "customerId", "amount", "lines"], "not": {"required": ["total"]},
                "properties": {"amount": {"type": "number"}, "lines": {"type": "array", "minItems": 1}}}}
        ]}],
        "policy": {"current": "v3", "versions": [
            {"name": "v3"},
            {"name": "v2", "changes": [{"patch": [
                {"op": "move", "from": "/customer/id", "path": "/customerId"},
                {"op": "move", "from": "/customer/name", "path": "/customerName"},
                {"op": "remove", "path": "/customer"}]}]},
            {"name": "v1", "changes": [{"patch": [
                {"op": "move", "from": "/total/amount", "path": "/amount"},
                {"op": "remove", "path": "/total"}]}]}
        ]}
    }))
    .expect("the bench topic")
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

/// Publishes `n` persistent 1 KiB orders (`order.created`, as v3) to `queue` with confirms.
async fn fill(channel: &lapin::Channel, queue: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type("order.created".into())
            .with_message_id(format!("m-{i}").into());
        let confirm = channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &order(i), props)
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

/// How a bench dispatcher renders: bodies passed through, checked against the catalog, or
/// checked, rendered two versions down and checked again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rendering {
    Passthrough,
    Checked,
    TwoSteps,
}

fn dispatcher(name: &str, url: &str, queues: &[(&str, &Queues)], timeout_ms: u64, rendering: Rendering) -> Controller {
    let (topic, version) = match rendering {
        Rendering::Passthrough => (None, None),
        Rendering::Checked => (Some("orders"), Some("v3")),
        Rendering::TwoSteps => (Some("orders"), Some("v1")),
    };
    let topics = if topic.is_some() { json!({"orders": orders()}) } else { json!({}) };
    let config = json!({
        "namespace": "bench", "webhook": name, "url": url, "timeout": timeout_ms, "connectTimeout": 1000,
        "maxInFlight": PREFETCH,
        "circuitBreaker": {"failureRatio": 1.0, "minAttempts": 1_000_000, "window": 60_000, "openFor": 1000},
        "egress": {"allow": ["127.0.0.0/8"]},
        "subscriptions": queues.iter().map(|(sub, q)| json!({
            "name": sub, "queue": q.work, "retryQueues": [q.retry], "schedule": [1000], "deadLetterQueue": q.dlq,
            "topic": topic, "version": version
        })).collect::<Vec<_>>(),
        "topics": topics
    });
    Controller::dispatcher(&config, &generate_secret())
}

/// A channel consuming `queue` with the dispatcher's prefetch.
async fn plain_consumer(conn: &Connection, queue: &str) -> (lapin::Channel, lapin::Consumer) {
    let channel = conn.create_channel().await.expect("channel");
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
    let consumer = channel
        .basic_consume(queue.into(), "bench-raw".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    (channel, consumer)
}

/// A plain lapin consumer with the dispatcher's prefetch, acking each message in turn (`every`
/// 1) or with one `multiple` ack per `every` messages; returns its rate and CPU seconds.
async fn lapin_floor(conn: &Connection, queue: &str, n: usize, every: usize) -> (f64, f64) {
    let (channel, mut consumer) = plain_consumer(conn, queue).await;
    let cpu = cpu_seconds(std::process::id());
    let (mut first, mut last) = (None, Instant::now());
    for i in 1..=n {
        let delivery = consumer.next().await.expect("stream").expect("delivery");
        first.get_or_insert_with(Instant::now);
        if i % every == 0 || i == n {
            let multiple = BasicAckOptions { multiple: every > 1 };
            delivery.acker.ack(multiple).await.expect("ack");
        }
        last = Instant::now();
    }
    let used = cpu_seconds(std::process::id()) - cpu;
    let _ = channel.close(200, "done".into()).await;
    ((n - 1) as f64 / (last - first.unwrap_or(last)).as_secs_f64(), used)
}

/// The Go amqp091 floor (`tools/amqp-floor`); its rate and CPU seconds.
fn go_floor(binary: &str, queue: &str, n: usize) -> Option<(f64, f64)> {
    let out = Command::new(binary)
        .args(["-uri", AMQP_URI, "-queue", queue, "-n", &n.to_string(), "-prefetch", &PREFETCH.to_string()])
        .output()
        .ok()?;
    let result: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((result["rate"].as_f64()?, result["cpu_seconds"].as_f64()?))
}

/// Builds the Go floor into target/ (incremental after the first time); `None` without Go.
fn build_go_floor() -> Option<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = format!("{root}/target/amqp-floor");
    let built = Command::new("go")
        .args(["build", "-o", &out, "."])
        .current_dir(format!("{root}/tools/amqp-floor"))
        .env("GOFLAGS", "-mod=mod")
        .status()
        .ok()?;
    built.success().then_some(out)
}

/// The raw consumer for the latency run: acks each message as it comes.
async fn raw_consume(conn: &Connection, queue: &str, n: usize, sink: &Sink) {
    let (channel, mut consumer) = plain_consumer(conn, queue).await;
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

/// Microseconds per message for `Renderer::render` to `pin` over `orders`, single-threaded.
fn render_micros(renderer: &Renderer, pin: &str, bodies: &[Vec<u8>]) -> f64 {
    let target = renderer.target(Some(pin)).expect("pin");
    let started = Instant::now();
    for body in bodies {
        let message =
            Message { event_type: "order.created", version: None, content_type: Some("application/json"), body };
        std::hint::black_box(renderer.render(target, &message).expect("renders"));
    }
    started.elapsed().as_secs_f64() * 1e6 / bodies.len() as f64
}

/// What the bench's parts share: the broker, the sink, the healthy queues, the rows printed.
struct Bench {
    n: usize,
    /// Rounds of each alternating comparison (3; 1 with `SLUICE_BENCH_QUICK`).
    rounds: usize,
    conn: Connection,
    channel: lapin::Channel,
    healthy: Queues,
    url: String,
    sink: Arc<Sink>,
    rows: Vec<(String, String)>,
}

impl Bench {
    fn row(&mut self, figure: &str, value: String) {
        eprintln!("bench: {figure}: {value}");
        self.rows.push((figure.to_owned(), value));
    }

    /// The fastest plain consumer of the same messages with the same prefetch: its rate and
    /// CPU microseconds per message.
    async fn floor(&mut self) -> (f64, f64) {
        let n = self.n;
        let mut floors = Vec::new();
        for (name, every) in [("lapin, acking each message in turn", 1), ("lapin, one multiple ack per 32", 32)] {
            fill(&self.channel, &self.healthy.work, n).await;
            let (rate, cpu) = lapin_floor(&self.conn, &self.healthy.work, n, every).await;
            self.row(&format!("floor: {name}, prefetch {PREFETCH} (msg/s)"), format!("{rate:.0}"));
            floors.push((name.to_owned(), rate, cpu));
        }
        match build_go_floor() {
            Some(binary) => {
                fill(&self.channel, &self.healthy.work, n).await;
                if let Some((rate, cpu)) = go_floor(&binary, &self.healthy.work, n) {
                    let figure = format!("floor: Go amqp091, one multiple ack per 32, prefetch {PREFETCH} (msg/s)");
                    self.row(&figure, format!("{rate:.0}"));
                    floors.push(("Go amqp091".to_owned(), rate, cpu));
                }
            }
            None => self.row("floor: Go amqp091", "not built (no Go toolchain)".to_owned()),
        }
        let (name, rate, cpu) = floors.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned().expect("a floor");
        let per_message = cpu * 1e6 / n as f64;
        self.row("  the floor: the fastest of these", name);
        self.row("  floor CPU per message (µs)", format!("{per_message:.1}"));
        (rate, per_message)
    }

    /// The dispatcher draining n messages: passing them through, checking them, and rendering
    /// them two versions down, alternating, median of 3 each.
    async fn throughput(&mut self, (floor, floor_us): (f64, f64)) {
        let n = self.n;
        let mut runs: Vec<(Rendering, Vec<f64>, Vec<f64>)> =
            [Rendering::Passthrough, Rendering::Checked, Rendering::TwoSteps]
                .into_iter()
                .map(|r| (r, Vec::new(), Vec::new()))
                .collect();
        let (mut drained_rss, mut drained_split) = (0.0, (0, 0));
        for _ in 0..self.rounds {
            for (rendering, rates, cpus) in &mut runs {
                self.sink.reset();
                fill(&self.channel, &self.healthy.work, n).await;
                let d = dispatcher("healthy", &self.url, &[("healthy", &self.healthy)], 15_000, *rendering);
                d.wait_ready().await;
                let cpu = d.cpu_seconds();
                wait_for(&self.sink, n).await;
                rates.push(self.sink.rate());
                cpus.push((d.cpu_seconds() - cpu) * 1e6 / n as f64);
                if *rendering == Rendering::Passthrough {
                    drained_rss = d.rss_kib() as f64 / 1024.0;
                    drained_split = d.rss_split_kib();
                }
            }
        }
        let medians: Vec<(f64, f64)> = runs.iter_mut().map(|(_, rates, cpus)| (median(rates), median(cpus))).collect();
        let (passthrough, passthrough_cpu) = medians[0];
        self.row("dispatcher -> instant sink, passthrough, median of 3 (deliveries/s)", format!("{passthrough:.0}"));
        self.row("  ratio to the floor (target >= 0.6)", format!("{:.2}", passthrough / floor));
        self.row("  dispatcher CPU per delivery (µs)", format!("{passthrough_cpu:.1}"));
        self.row(
            "  ratio to the floor's CPU per message (target <= 1.5)",
            format!("{:.2}", passthrough_cpu / floor_us),
        );
        self.row("dispatcher RSS after draining at full speed (MiB, target < 24)", format!("{drained_rss:.1}"));
        let mib = |kib: u64| kib as f64 / 1024.0;
        let (anon, file) = drained_split;
        self.row("  of which anonymous / file-backed (MiB)", format!("{:.1} / {:.1}", mib(anon), mib(file)));
        for (label, (rate, cpu)) in
            ["checked against the v3 schema", "v3 -> v1, two steps, both checks"].iter().zip(&medians[1..])
        {
            self.row(&format!("dispatcher, {label}, median of 3 (deliveries/s)"), format!("{rate:.0}"));
            self.row("  ratio to passthrough (target >= 0.85 for two steps)", format!("{:.2}", rate / passthrough));
            self.row("  dispatcher CPU per delivery (µs)", format!("{cpu:.1}"));
        }
        let renderer = Renderer::compile(&orders()).expect("compiles");
        let bodies: Vec<Vec<u8>> = (0..n).map(order).collect();
        let checked = render_micros(&renderer, "v3", &bodies);
        self.row("in-process: check one message against its schema (µs)", format!("{checked:.1}"));
        let converted = render_micros(&renderer, "v1", &bodies);
        self.row("in-process: check, render two versions down, check (µs)", format!("{converted:.1}"));
    }

    /// With `SLUICE_BENCH_PERF` set: one more passthrough drain with `perf record` sampling the
    /// dispatcher (CPU clock), its profile by symbol written to target/dispatcher-profile.txt.
    async fn profile(&mut self) {
        if std::env::var_os("SLUICE_BENCH_PERF").is_none() {
            return;
        }
        let n = self.n;
        let root = env!("CARGO_MANIFEST_DIR");
        let (data, text) =
            (format!("{root}/target/dispatcher.perf.data"), format!("{root}/target/dispatcher-profile.txt"));
        self.sink.reset();
        fill(&self.channel, &self.healthy.work, n).await;
        let d = dispatcher("healthy", &self.url, &[("healthy", &self.healthy)], 15_000, Rendering::Passthrough);
        d.wait_ready().await;
        let ((user, system), switches) = (d.cpu_split(), d.context_switches());
        let perf = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "4000", "-g", "-o", &data, "-p", &d.pid().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut perf) = perf else {
            self.row("profile", "perf not found (Debian package linux-perf)".to_owned());
            return;
        };
        wait_for(&self.sink, n).await;
        let (user_after, system_after) = d.cpu_split();
        let per = |v: f64| v * 1e6 / n as f64;
        self.row(
            "profiled drain: dispatcher CPU per delivery, user / system (µs)",
            format!("{:.1} / {:.1}", per(user_after - user), per(system_after - system)),
        );
        self.row(
            "profiled drain: context switches per delivery",
            format!("{:.2}", (d.context_switches() - switches) as f64 / n as f64),
        );
        let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "-i",
                &data,
                "--stdio",
                "--no-children",
                "--sort",
                "symbol",
                "--percent-limit",
                "0.5",
                "-g",
                "none",
            ])
            .output();
        if let Ok(report) = report {
            let _ = std::fs::write(&text, &report.stdout);
            self.row("profile of a passthrough drain (perf, by symbol)", text);
        }
    }

    /// Publish → delivered at 1,000 msg/s: a fresh dispatcher, then the raw consumer.
    async fn latency(&mut self) {
        self.sink.reset();
        let d = dispatcher("healthy", &self.url, &[("healthy", &self.healthy)], 15_000, Rendering::Passthrough);
        d.wait_ready().await;
        paced(&self.channel, &self.healthy.work, 1000, 10).await;
        wait_for(&self.sink, 10_000).await;
        let (p50, p99) = (self.sink.percentile(0.50), self.sink.percentile(0.99));
        self.row("dispatcher at 1,000 msg/s: publish -> delivered p50 (ms)", format!("{p50:.2}"));
        self.row("dispatcher at 1,000 msg/s: publish -> delivered p99 (ms, target < 10)", format!("{p99:.2}"));
        self.row("dispatcher RSS at 1,000 msg/s (MiB, target < 24)", format!("{:.1}", d.rss_kib() as f64 / 1024.0));
        drop(d);
        self.sink.reset();
        let (raw, ()) = tokio::join!(
            async {
                raw_consume(&self.conn, &self.healthy.work, 10_000, &self.sink).await;
                (self.sink.percentile(0.50), self.sink.percentile(0.99))
            },
            paced(&self.channel, &self.healthy.work, 1000, 10)
        );
        self.row("raw consumer at 1,000 msg/s: publish -> consumed p50 (ms)", format!("{:.2}", raw.0));
        self.row("raw consumer at 1,000 msg/s: publish -> consumed p99 (ms)", format!("{:.2}", raw.1));
    }

    /// The healthy Webhook with a dead one (timing out) beside it, and without, alternating
    /// over three rounds each (one drain alone varies by ~10% here).
    async fn isolation(&mut self, base: &str) {
        let n = self.n;
        let dead_queues = declare(&self.channel, &format!("{base}.dead")).await;
        fill(&self.channel, &dead_queues.work, 5_000).await;
        let (dead_url, _dead) = dead_endpoint().await;
        let (mut alone_runs, mut beside_runs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            for with_dead in [false, true] {
                let dead = with_dead
                    .then(|| dispatcher("dead", &dead_url, &[("dead", &dead_queues)], 2_000, Rendering::Passthrough));
                if let Some(dead) = &dead {
                    dead.wait_ready().await;
                }
                self.sink.reset();
                fill(&self.channel, &self.healthy.work, n).await;
                let d = dispatcher("healthy", &self.url, &[("healthy", &self.healthy)], 15_000, Rendering::Passthrough);
                d.wait_ready().await;
                wait_for(&self.sink, n).await;
                if with_dead { &mut beside_runs } else { &mut alone_runs }.push(self.sink.rate());
                drop((d, dead));
            }
        }
        let (alone, beside) = (median(&mut alone_runs), median(&mut beside_runs));
        self.row("dispatcher -> instant sink, alone, median of 3 (msg/s)", format!("{alone:.0}"));
        self.row(
            "dispatcher -> instant sink, with a dead endpoint beside it, median of 3 (msg/s)",
            format!("{beside:.0}"),
        );
        self.row("  ratio with / without the dead endpoint (target >= 0.95)", format!("{:.2}", beside / alone));
        delete(&self.channel, &dead_queues).await;
    }
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
    // SLUICE_BENCH_QUICK: one round of the throughput comparison, no latency or isolation runs.
    let quick = std::env::var_os("SLUICE_BENCH_QUICK").is_some();
    let rounds = if quick { 1 } else { 3 };
    let mut bench = Bench { n, rounds, conn, channel, healthy, url, sink, rows: Vec::new() };
    bench.row("message body (bytes, a realistic order)", format!("{}", order(0).len()));
    let floor = bench.floor().await;
    bench.throughput(floor).await;
    bench.profile().await;
    if !quick {
        bench.latency().await;
        bench.isolation(&base).await;
    }
    delete(&bench.channel, &bench.healthy).await;
    let _ = bench.conn.close(200, "bench done".into()).await;
    println!("\nDispatcher, one run on this machine ({n} messages per throughput figure)");
    println!("{:<82} {:>12}", "figure", "value");
    for (figure, value) in bench.rows {
        println!("{figure:<82} {value:>12}");
    }
}
