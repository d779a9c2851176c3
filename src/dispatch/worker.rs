//! The delivery loop. One AMQP connection per dispatcher; per Subscription one channel in
//! confirm mode, prefetch = `maxInFlight`, consuming the work queue. Each message is signed
//! and POSTed; then acked (delivered), or re-published to the next retry queue or to the
//! dead-letter queue and acked only once the broker confirmed that publish. Nothing waits in
//! memory across a retry delay: a crash at any instant leaves every message in a queue.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    backlog::{Held, QueueDepths},
    circuit::{CircuitBreaker, CircuitState, Settings, Transition},
    config::{DispatchConfig, SubscriptionRoute},
    egress::EgressPolicy,
    metrics::{
        AttemptLabels, DeadLetterLabels, DispatcherMetrics, QueueLabels, RetryLabels, SubscriptionLabels, WebhookLabels,
    },
    outcome::{Attempt, DeadLetterReason, Verdict, judge, parse_retry_after, status_class},
    rate_limit::RateLimiter,
    report::Stats,
    signing::KeyRing,
};

/// Headers the dispatcher keeps on a message across retries.
pub const ATTEMPT_HEADER: &str = "x-sluice-attempt";
pub const FIRST_ATTEMPT_HEADER: &str = "x-sluice-first-attempt";
pub const LAST_ATTEMPT_HEADER: &str = "x-sluice-last-attempt";
pub const REASON_HEADER: &str = "x-sluice-reason";
pub const LAST_STATUS_HEADER: &str = "x-sluice-last-status";
pub const LAST_ERROR_HEADER: &str = "x-sluice-last-error";
/// At most this much of a response is read.
const RESPONSE_CAP: usize = 64 * 1024;
/// How long a channel or connection close may wait for the broker's answer: on a broken
/// connection none comes, and stopping must not hang until the pod's grace period runs out.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often the queues' depths are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Everything the delivery tasks share.
pub struct Dispatcher {
    config: DispatchConfig,
    keys: KeyRing,
    http: reqwest::Client,
    egress: EgressPolicy,
    limiter: RateLimiter,
    breaker: Mutex<CircuitBreaker>,
    metrics: Arc<DispatcherMetrics>,
    stats: Arc<Stats>,
    /// The messages being delivered (or waiting to be), for the oldest-message age.
    held: Held,
    /// Set on 410 Gone: the Webhook is disabled and nothing more is consumed.
    gone: AtomicBool,
    connected: AtomicBool,
}

impl Dispatcher {
    pub fn new(
        config: DispatchConfig,
        keys: KeyRing,
        egress: EgressPolicy,
        metrics: Arc<DispatcherMetrics>,
        stats: Arc<Stats>,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = super::egress::http_client(egress.clone(), config.connect_timeout, config.timeout)?;
        let limiter =
            config.rate_limit.as_ref().map_or_else(RateLimiter::unlimited, |r| RateLimiter::new(r.per_second, r.burst));
        let breaker = CircuitBreaker::new(Settings::from(&config.circuit_breaker));
        Ok(Arc::new(Self {
            config,
            keys,
            http,
            egress,
            limiter,
            breaker: Mutex::new(breaker),
            metrics,
            stats,
            held: Held::default(),
            gone: AtomicBool::new(false),
            connected: AtomicBool::new(false),
        }))
    }

    /// Whether the broker connection is up (readiness).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether delivery is paused (suspended, or disabled by 410 Gone): nothing is consumed.
    pub fn paused(&self) -> bool {
        self.config.suspend || self.gone.load(Ordering::Acquire)
    }

    /// Consumes every Subscription until `stop` fires, reconnecting with backoff whenever the
    /// broker connection is lost. While delivery is paused it consumes nothing but keeps
    /// sampling the queues, so the backlog shows.
    pub async fn run(self: Arc<Self>, amqp_uri: String, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let was_paused = self.paused();
            let props = ConnectionProperties::default().with_connection_name(
                format!("sluice-dispatcher/{}/{}", self.config.namespace, self.config.webhook).into(),
            );
            match Connection::connect(&amqp_uri, props).await {
                Ok(conn) => {
                    failures = 0;
                    self.set_connected(true);
                    info!("Connected to the broker.");
                    let conn = Arc::new(conn);
                    let session = stop.child_token();
                    let sampler = tokio::spawn(self.clone().sample(conn.clone(), session.clone()));
                    let mut consumers = tokio::task::JoinSet::new();
                    if self.paused() {
                        info!("Delivery is paused; consuming nothing.");
                    } else {
                        for route in self.config.subscriptions.clone() {
                            consumers.spawn(self.clone().consume(conn.clone(), route, session.clone()));
                        }
                    }
                    tokio::select! {
                        () = stop.cancelled() => {}
                        Some(done) = consumers.join_next() => {
                            match done {
                                Ok(Err(e)) => warn!(error = %e, "Consumer stopped; reconnecting."),
                                Ok(Ok(())) => debug!("Consumer finished."),
                                Err(e) => warn!(error = %e, "Consumer task failed; reconnecting."),
                            }
                        }
                        () = closed(&conn) => warn!("The broker connection closed; reconnecting."),
                    }
                    session.cancel();
                    // In-flight deliveries finish (their publish + ack) before the connection closes.
                    while consumers.join_next().await.is_some() {}
                    let _ = sampler.await;
                    self.set_connected(false);
                    let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, "dispatcher stopping".into())).await;
                }
                Err(e) => {
                    self.set_connected(false);
                    failures = failures.saturating_add(1);
                    warn!(error = %e, attempt = failures, "Cannot connect to the broker.");
                }
            }
            // A consumer that ended because the endpoint just answered 410 Gone reconnects at
            // once, paused; every other retry waits.
            if !stop.is_cancelled() && (was_paused || !self.paused()) {
                let delay = Duration::from_millis(500 * 2u64.pow(failures.min(6))).min(Duration::from_secs(30));
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    /// Every 5 s until the session ends: the ready messages of each Subscription's queues
    /// (passive declares on a channel of their own; a missing queue counts 0) and the age of
    /// the oldest held message. A failed sample is logged and retried; it never disturbs delivery.
    async fn sample(self: Arc<Self>, conn: Arc<Connection>, session: CancellationToken) {
        let mut channel: Option<Channel> = None;
        loop {
            tokio::select! {
                () = session.cancelled() => break,
                () = self.sample_once(&conn, &mut channel) => {}
            }
            tokio::select! {
                () = session.cancelled() => break,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
        if let Some(channel) = channel {
            let _ = tokio::time::timeout(CLOSE_WAIT, channel.close(200, "sampler stopping".into())).await;
        }
    }

    async fn sample_once(&self, conn: &Connection, channel: &mut Option<Channel>) {
        for route in &self.config.subscriptions {
            let labels = self.labels(route);
            let age = self.held.oldest_age(&route.name, unix_now());
            self.metrics.oldest_message_age.get_or_create(&labels).set(i64::try_from(age).unwrap_or(i64::MAX));
            match depths(conn, channel, route).await {
                Ok(depths) => {
                    for (queue, n) in [("work", depths.work), ("retry", depths.retry), ("dlq", depths.dlq)] {
                        let queue_labels = QueueLabels {
                            namespace: labels.namespace.clone(),
                            webhook: labels.webhook.clone(),
                            subscription: labels.subscription.clone(),
                            queue,
                        };
                        self.metrics.queue_messages.get_or_create(&queue_labels).set(i64::from(n));
                    }
                }
                Err(e) => debug!(error = %e, subscription = %route.name, "Cannot sample the queues."),
            }
        }
    }

    /// The metric labels of `route`'s series.
    fn labels(&self, route: &SubscriptionRoute) -> SubscriptionLabels {
        SubscriptionLabels {
            namespace: self.config.namespace.clone(),
            webhook: self.config.webhook.clone(),
            subscription: route.name.clone(),
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        self.metrics.broker_up.set(i64::from(up));
    }

    /// Consumes one Subscription's work queue until the session ends or the channel fails.
    async fn consume(
        self: Arc<Self>,
        conn: Arc<Connection>,
        route: SubscriptionRoute,
        session: CancellationToken,
    ) -> Result<(), String> {
        let name = route.name.clone();
        let fail = |e: lapin::Error| format!("subscription {name}: {e}");
        let channel = conn.create_channel().await.map_err(fail)?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(fail)?;
        let prefetch = if route.ordered { 1 } else { self.config.max_in_flight };
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(fail)?;
        let tag = format!("sluice-dispatcher-{}", route.name);
        let mut consumer = channel
            .basic_consume(
                route.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(fail)?;
        let route = Arc::new(route);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = session.cancelled() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                next = consumer.next() => {
                    let Some(delivery) = next else { break };
                    let delivery = delivery.map_err(fail)?;
                    let (this, channel, route) = (self.clone(), channel.clone(), route.clone());
                    let session = session.clone();
                    tasks.spawn(async move { this.handle(&channel, &route, delivery, &session).await });
                }
            }
            if self.gone.load(Ordering::Acquire) {
                session.cancel();
            }
        }
        while tasks.join_next().await.is_some() {}
        let _ = tokio::time::timeout(CLOSE_WAIT, channel.close(200, "consumer stopping".into())).await;
        if self.gone.load(Ordering::Acquire) || session.is_cancelled() {
            return Ok(());
        }
        Err(format!("the consumer of {} was cancelled", route.queue))
    }

    async fn handle(
        &self,
        channel: &Channel,
        route: &SubscriptionRoute,
        delivery: Delivery,
        session: &CancellationToken,
    ) {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let mut attempt = header_u32(&headers, ATTEMPT_HEADER).unwrap_or(0).saturating_add(1);
        let id = message_id(&delivery);
        let published = delivery.properties.timestamp().unwrap_or_else(unix_now);
        let _held = self.held.hold(&route.name, published);
        let (result, verdict) = loop {
            let (result, verdict) = self.attempt(route, &delivery, &id, attempt).await;
            match verdict {
                // Ordered: the head of the queue is retried in place, blocking the ones behind it.
                Verdict::Retry { step } if route.ordered => {
                    debug!(attempt, step = step + 1, "Retrying in place (ordered).");
                    self.count_retry(route, step);
                    tokio::select! {
                        () = tokio::time::sleep(route.schedule[step]) => {}
                        () = session.cancelled() => {
                            // Back to the head of the queue; the next consumer starts over.
                            let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                            let _ = delivery.acker.nack(requeue).await;
                            return;
                        }
                    }
                    attempt = attempt.saturating_add(1);
                }
                _ => break (result, verdict),
            }
        };
        self.settle(channel, route, &delivery, &id, attempt, &result, verdict).await;
    }

    /// One attempt at delivering `delivery`, measured and judged.
    async fn attempt(
        &self,
        route: &SubscriptionRoute,
        delivery: &Delivery,
        id: &str,
        attempt: u32,
    ) -> (Attempt, Verdict) {
        let webhook = WebhookLabels { namespace: self.config.namespace.clone(), webhook: self.config.webhook.clone() };

        self.wait_for_circuit(&webhook).await;
        self.limiter.acquire().await;

        let inflight = self.metrics.inflight.get_or_create(&webhook).clone();
        inflight.inc();
        let started = Instant::now();
        let result = self.post(id, &delivery.data).await;
        inflight.dec();
        let labels = self.labels(route);
        self.metrics.attempt_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        let success = matches!(result, Attempt::Status { code: 200..=299, .. });
        self.record_circuit(success, &webhook);
        match &result {
            Attempt::Status { code: code @ 200..=299, .. } => self.stats.delivered(*code),
            Attempt::Status { code, .. } => self.stats.failed(Some(*code)),
            Attempt::Timeout | Attempt::Connection | Attempt::Refused => self.stats.failed(None),
        }

        let verdict = judge(&result, attempt, &route.schedule);
        let outcome = match &verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry { .. } => "retried",
            Verdict::DeadLetter(_) => "dead_lettered",
            Verdict::Gone => "gone",
        };
        self.metrics
            .attempts
            .get_or_create(&AttemptLabels {
                namespace: labels.namespace.clone(),
                webhook: labels.webhook.clone(),
                subscription: labels.subscription.clone(),
                outcome,
                status_class: status_class(&result),
            })
            .inc();
        (result, verdict)
    }

    /// Acks a delivered message; re-publishes one to retry or dead-letter, then acks it once
    /// the broker confirmed; returns it to its queue when that fails or the endpoint is gone.
    #[allow(clippy::too_many_arguments, reason = "one call site; the pieces of one delivery")]
    async fn settle(
        &self,
        channel: &Channel,
        route: &SubscriptionRoute,
        delivery: &Delivery,
        id: &str,
        attempt: u32,
        result: &Attempt,
        verdict: Verdict,
    ) {
        let labels = self.labels(route);
        let settled = match verdict {
            Verdict::Delivered => {
                if let Some(published) = delivery.properties.timestamp() {
                    let age = unix_now().saturating_sub(*published);
                    #[allow(clippy::cast_precision_loss, reason = "seconds since publish fit f64 exactly")]
                    self.metrics.latency.get_or_create(&labels).observe(age as f64);
                }
                Ok(())
            }
            Verdict::Retry { step } => {
                let queue = &route.retry_queues[step];
                let next = with_attempt(delivery, id, attempt, result, None);
                let sent = publish(channel, queue, &delivery.data, next).await;
                if sent.is_ok() {
                    self.count_retry(route, step);
                }
                sent
            }
            Verdict::DeadLetter(reason) => {
                let next = with_attempt(delivery, id, attempt, result, Some(reason));
                let sent = publish(channel, &route.dead_letter_queue, &delivery.data, next).await;
                if sent.is_ok() {
                    self.stats.dead_lettered();
                    self.metrics
                        .dead_lettered
                        .get_or_create(&DeadLetterLabels {
                            namespace: labels.namespace.clone(),
                            webhook: labels.webhook.clone(),
                            subscription: labels.subscription.clone(),
                            reason: reason.as_str(),
                        })
                        .inc();
                }
                sent
            }
            Verdict::Gone => {
                warn!("The endpoint answered 410 Gone; the Webhook is disabled and consumption stops.");
                self.gone.store(true, Ordering::Release);
                self.stats.gone();
                Err("endpoint gone".to_owned())
            }
        };
        let acked = match settled {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(e) => {
                if !self.gone.load(Ordering::Acquire) {
                    warn!(error = %e, queue = %route.queue, "Could not move the message on; it goes back to its queue.");
                }
                delivery.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
            }
        };
        if let Err(e) = acked {
            // The channel is gone: the broker returns the message to the queue by itself.
            debug!(error = %e, "Acknowledgement failed.");
        }
    }

    fn count_retry(&self, route: &SubscriptionRoute, step: usize) {
        let labels = RetryLabels {
            namespace: self.config.namespace.clone(),
            webhook: self.config.webhook.clone(),
            subscription: route.name.clone(),
            step: (step + 1).to_string(),
        };
        self.metrics.retries.get_or_create(&labels).inc();
    }

    /// Holds this delivery while the circuit is open (the unacknowledged prefetch keeps the
    /// broker from sending more); lets one probe through when it half-opens.
    async fn wait_for_circuit(&self, webhook: &WebhookLabels) {
        loop {
            let wait = {
                let mut breaker = self.breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                if breaker.allow(now) {
                    None
                } else {
                    match breaker.state(now) {
                        CircuitState::Open { until } => Some(until.saturating_duration_since(now)),
                        // Half-open with its probe out: wait for the probe's answer.
                        CircuitState::HalfOpen | CircuitState::Closed => Some(Duration::from_millis(100)),
                    }
                }
            };
            match wait {
                None => return,
                Some(wait) => {
                    self.metrics.circuit_open.get_or_create(webhook).set(1);
                    tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
                }
            }
        }
    }

    fn record_circuit(&self, success: bool, webhook: &WebhookLabels) {
        let transition = {
            let mut breaker = self.breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            breaker.record(success, Instant::now())
        };
        match transition {
            Some(Transition::Opened | Transition::Reopened) => {
                warn!("Circuit opened: the endpoint keeps failing; messages wait in the broker.");
                self.metrics.circuit_open.get_or_create(webhook).set(1);
                self.stats.circuit(true);
            }
            Some(Transition::Closed) => {
                info!("Circuit closed: the endpoint answers again.");
                self.metrics.circuit_open.get_or_create(webhook).set(0);
                self.stats.circuit(false);
            }
            None => {}
        }
    }

    /// One signed POST. Reads at most 64 KiB of the answer; never follows a redirect.
    async fn post(&self, id: &str, body: &[u8]) -> Attempt {
        let Ok(url) = url::Url::parse(&self.config.url) else { return Attempt::Refused };
        if self.egress.check_url(&url).is_err() {
            return Attempt::Refused;
        }
        let timestamp = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let signature = self.keys.sign(id, timestamp, body);
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        match request.body(body.to_vec()).send().await {
            Ok(mut response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let mut read = 0;
                while read < RESPONSE_CAP {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                Attempt::Status { code, retry_after }
            }
            Err(e) if refused_by_egress(&e) => Attempt::Refused,
            Err(e) if e.is_timeout() => Attempt::Timeout,
            Err(_) => Attempt::Connection,
        }
    }
}

fn refused_by_egress(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if super::egress::EgressRefused::find_in(err).is_some() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The event id: the message id, or one derived from the content (stable across redeliveries)
/// that every retry then carries as its message id.
pub fn message_id(delivery: &Delivery) -> String {
    if let Some(id) = delivery.properties.message_id().as_ref().filter(|id| !id.as_str().is_empty()) {
        return id.as_str().to_owned();
    }
    let mut hash = Sha256::new();
    hash.update(delivery.routing_key.as_str().as_bytes());
    hash.update([0]);
    hash.update(delivery.properties.timestamp().unwrap_or_default().to_be_bytes());
    hash.update(&delivery.data);
    let digest = hash.finalize();
    let mut id = String::from("msg_");
    for b in digest.iter().take(12) {
        use std::fmt::Write as _;
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// The properties of the re-published message: the original ones plus the attempt count,
/// attempt times, the last status or error, and (for the DLQ) the reason.
fn with_attempt(
    delivery: &Delivery,
    id: &str,
    attempt: u32,
    result: &Attempt,
    reason: Option<DeadLetterReason>,
) -> BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let inner = headers.inner();
    let first = inner.get(FIRST_ATTEMPT_HEADER).cloned().unwrap_or(AMQPValue::LongLongInt(now));
    let mut set = |k: &str, v: AMQPValue| {
        headers.insert(ShortString::from(k), v);
    };
    set(ATTEMPT_HEADER, AMQPValue::LongUInt(attempt));
    set(FIRST_ATTEMPT_HEADER, first);
    set(LAST_ATTEMPT_HEADER, AMQPValue::LongLongInt(now));
    match result {
        Attempt::Status { code, .. } => set(LAST_STATUS_HEADER, AMQPValue::ShortUInt(*code)),
        Attempt::Timeout => set(LAST_ERROR_HEADER, AMQPValue::LongString("timeout".into())),
        Attempt::Connection => set(LAST_ERROR_HEADER, AMQPValue::LongString("connection failed".into())),
        Attempt::Refused => set(LAST_ERROR_HEADER, AMQPValue::LongString("refused by the egress guard".into())),
    }
    if let Some(reason) = reason {
        set(REASON_HEADER, AMQPValue::LongString(reason.as_str().into()));
    }
    delivery.properties.clone().with_message_id(id.into()).with_delivery_mode(2).with_headers(headers)
}

/// Publishes to `queue` through the default exchange, mandatory, and waits for the confirm.
async fn publish(channel: &Channel, queue: &str, body: &[u8], properties: BasicProperties) -> Result<(), String> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel
        .basic_publish("".into(), queue.into(), options, body, properties)
        .await
        .map_err(|e| format!("publish to {queue}: {e}"))?;
    match confirm.await.map_err(|e| format!("confirm from {queue}: {e}"))? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(format!("queue {queue} does not exist (the message was returned)")),
        Confirmation::Nack(_) => Err(format!("queue {queue} refused the message (is it full?)")),
        Confirmation::NotRequested => Err("publisher confirms are off".to_owned()),
    }
}

/// The ready messages of `route`'s work, retry and dead-letter queues, on `channel` (opened
/// again when a missing queue closed it).
async fn depths(
    conn: &Connection,
    channel: &mut Option<Channel>,
    route: &SubscriptionRoute,
) -> Result<QueueDepths, lapin::Error> {
    let mut count = async |queue: &str| -> Result<u32, lapin::Error> {
        let open = match channel.take() {
            Some(open) if open.status().connected() => channel.insert(open),
            _ => channel.insert(conn.create_channel().await?),
        };
        Ok(crate::broker::mover::count_on(open, queue).await?.unwrap_or(0))
    };
    let mut depths = QueueDepths { work: count(&route.queue).await?, ..QueueDepths::default() };
    for queue in &route.retry_queues {
        depths.retry = depths.retry.saturating_add(count(queue).await?);
    }
    depths.dlq = count(&route.dead_letter_queue).await?;
    Ok(depths)
}

/// Resolves once `conn` is no longer connected.
async fn closed(conn: &Connection) {
    while conn.status().connected() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn header_u32(headers: &FieldTable, name: &str) -> Option<u32> {
    match headers.inner().get(name)? {
        AMQPValue::ShortShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::ShortShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
