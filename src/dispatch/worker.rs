//! The delivery loop. One AMQP connection per dispatcher; per Subscription one channel in
//! confirm mode, prefetch = `maxInFlight`, consuming the work queue; `maxInFlight` permits
//! shared by all of them bound the requests in flight per replica. Each message is signed
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

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{
    Channel, Connection, ConnectionProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use prometheus_client::metrics::gauge::Gauge;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{
    acks::{Ack, AckWindow},
    backlog::Sampler,
    circuit::{CircuitBreaker, CircuitState, Settings, Transition},
    config::DispatchConfig,
    egress::EgressPolicy,
    envelope::{self, Envelope, Onward, VERSION_HEADER},
    metrics::{DeadLetterLabels, DispatcherMetrics, RetryLabels, WebhookLabels},
    outcome::{Attempt, DeadLetterReason, Verdict, judge, parse_retry_after, status_class},
    rate_limit::RateLimiter,
    report::Stats,
    route::{Outgoing, Route},
    signing::{ID_HEADER, KeyRing, SIGNATURE_HEADER, TIMESTAMP_HEADER},
};
use crate::{
    broker::mover::{PublishError, publish_confirmed},
    versions::headers::Notice,
};

/// At most this much of a response is read.
const RESPONSE_CAP: usize = 64 * 1024;
/// The longest a settled delivery waits for its (batched) ack.
const ACK_DELAY: Duration = Duration::from_millis(50);
/// How long a channel or connection close may wait for the broker's answer: on a broken
/// connection none comes, and stopping must not hang until the pod's grace period runs out.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why a Subscription's consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("subscription {subscription}: {source}")]
    Channel {
        subscription: String,
        #[source]
        source: lapin::Error,
    },
    #[error("the consumer of {0} was cancelled")]
    Cancelled(String),
}

/// One message on its way through the dispatcher: its route, the delivery, what its envelope
/// says, and its body as published. Carried from the first attempt to the settlement.
struct InFlight<'a> {
    route: &'a Route,
    delivery: Delivery,
    envelope: Envelope,
    body: Bytes,
}

/// Everything the delivery tasks share.
pub struct Dispatcher {
    config: DispatchConfig,
    /// The Subscriptions, compiled: queues, rendering, metric labels.
    routes: Vec<Arc<Route>>,
    keys: KeyRing,
    /// Sends the Webhook's own headers with every request.
    http: reqwest::Client,
    /// The endpoint, parsed once; `None` when it does not parse (every attempt is refused).
    url: Option<url::Url>,
    egress: EgressPolicy,
    limiter: RateLimiter,
    /// `maxInFlight` permits, shared by every Subscription's deliveries: the bound is per replica.
    in_flight: Semaphore,
    breaker: Mutex<CircuitBreaker>,
    metrics: Arc<DispatcherMetrics>,
    stats: Arc<Stats>,
    /// Set on 410 Gone: the Webhook is disabled and nothing more is consumed.
    gone: AtomicBool,
    connected: AtomicBool,
    /// The Webhook's `sluice_inflight` and `sluice_circuit_open` series, looked up once.
    requests_gauge: Gauge,
    circuit_open: Gauge,
}

/// Why a dispatcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("header {0:?} of the Webhook is not a valid HTTP header")]
    Header(String),
}

impl Dispatcher {
    pub fn new(
        config: DispatchConfig,
        keys: KeyRing,
        egress: EgressPolicy,
        metrics: Arc<DispatcherMetrics>,
        stats: Arc<Stats>,
    ) -> Result<Arc<Self>, StartError> {
        let limiter =
            config.rate_limit.as_ref().map_or_else(RateLimiter::unlimited, |r| RateLimiter::new(r.per_second, r.burst));
        let breaker = CircuitBreaker::new(Settings::from(&config.circuit_breaker));
        let in_flight = Semaphore::new(usize::from(config.max_in_flight.max(1)));
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name_ok = HeaderName::from_bytes(name.as_bytes()).map_err(|_| StartError::Header(name.clone()))?;
            let value_ok = HeaderValue::from_str(value).map_err(|_| StartError::Header(name.clone()))?;
            headers.insert(name_ok, value_ok);
        }
        // The Webhook's own headers go with every request; the ones set per request (the
        // signature, the content type, the version) are names the Webhook cannot use.
        let http = super::egress::http_client(egress.clone(), config.connect_timeout, config.timeout)
            .default_headers(headers)
            .build()?;
        let routes = super::route::compile(&config, &metrics).into_iter().map(Arc::new).collect();
        let url = url::Url::parse(&config.url).ok();
        let webhook = WebhookLabels { namespace: config.namespace.clone(), webhook: config.webhook.clone() };
        let requests_gauge = metrics.inflight.get_or_create(&webhook).clone();
        let circuit_open = metrics.circuit_open.get_or_create(&webhook).clone();
        Ok(Arc::new(Self {
            requests_gauge,
            circuit_open,
            url,
            in_flight,
            routes,
            config,
            keys,
            http,
            egress,
            limiter,
            breaker: Mutex::new(breaker),
            metrics,
            stats,
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
        for route in &self.routes {
            if let Some(why) = &route.unusable {
                error!(subscription = %route.name(), reason = %why, "This Subscription's events cannot be rendered; not consuming it.");
            }
        }
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
                        for route in self.routes.iter().filter(|r| r.unusable.is_none()) {
                            consumers.spawn(self.clone().consume(conn.clone(), route.clone(), session.clone()));
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

    /// Samples the queues' depths and the oldest held message until the session ends.
    async fn sample(self: Arc<Self>, conn: Arc<Connection>, session: CancellationToken) {
        let sampler = Sampler { routes: &self.routes, metrics: &self.metrics, now: unix_now };
        sampler.run(&conn, session).await;
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        self.metrics.broker_up.set(i64::from(up));
    }

    /// Consumes one Subscription's work queue until the session ends or the channel fails. A
    /// Subscription whose version is past its sunset under Block consumes nothing from then on:
    /// its messages wait in the queue.
    async fn consume(
        self: Arc<Self>,
        conn: Arc<Connection>,
        route: Arc<Route>,
        session: CancellationToken,
    ) -> Result<(), ConsumeError> {
        if route.blocked(SystemTime::now()) {
            info!(subscription = %route.name(), "The Subscription's version is past its sunset (enforcement Block); consuming nothing.");
            session.cancelled().await;
            return Ok(());
        }
        let name = route.name().to_owned();
        let fail = |source| ConsumeError::Channel { subscription: name.clone(), source };
        let channel = conn.create_channel().await.map_err(fail)?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(fail)?;
        let prefetch = if route.config.ordered { 1 } else { self.config.max_in_flight };
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(fail)?;
        let tag = format!("sluice-dispatcher-{}", route.name());
        let mut consumer = channel
            .basic_consume(
                route.config.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(fail)?;
        let sunset = until_blocked(&route);
        tokio::pin!(sunset);
        // Ends with the session, or earlier for this Subscription alone at its sunset, so the
        // deliveries still waiting their turn go back to the queue at once.
        let deliveries = session.child_token();
        // The deliveries in progress, polled here rather than spawned: no task per message.
        let mut in_progress = FuturesUnordered::new();
        let mut acks = AckWindow::new(usize::from(prefetch / 4));
        // Settled messages are acked within ACK_DELAY at the latest, even while the deliveries
        // still in progress wait (on an open circuit, say): a message already in its retry or
        // dead-letter queue must not stay unacked in its work queue too.
        let ack_timer = tokio::time::sleep(ACK_DELAY);
        tokio::pin!(ack_timer);
        let mut timer_armed = false;
        let mut blocked = false;
        loop {
            tokio::select! {
                () = session.cancelled() => break,
                () = &mut ack_timer, if timer_armed => {
                    send(&channel, acks.flush()).await;
                    timer_armed = false;
                }
                () = &mut sunset, if !blocked => {
                    info!(subscription = %route.name(), "The Subscription's version reached its sunset (enforcement Block); consumption stops, messages wait in the queue.");
                    blocked = true;
                    break;
                }
                Some(settled) = in_progress.next(), if !in_progress.is_empty() => {
                    let Settled { tag, needs_ack, held_back } = settled;
                    send(&channel, acks.settle(tag, needs_ack, in_progress.is_empty())).await;
                    if acks.pending() == 0 {
                        timer_armed = false;
                    } else if !timer_armed {
                        ack_timer.as_mut().reset(tokio::time::Instant::now() + ACK_DELAY);
                        timer_armed = true;
                    }
                    if held_back && route.blocked(SystemTime::now()) {
                        // By the wall clock the sunset has passed, whatever the timer says.
                        info!(subscription = %route.name(), "The Subscription's version reached its sunset (enforcement Block); consumption stops, messages wait in the queue.");
                        blocked = true;
                        break;
                    }
                }
                next = consumer.next() => {
                    let Some(delivery) = next else { break };
                    let delivery = delivery.map_err(fail)?;
                    in_progress.push(self.handle(&channel, &route, delivery, &deliveries));
                }
            }
            if self.gone.load(Ordering::Acquire) {
                session.cancel();
            }
        }
        // Deliveries not attempted yet (prefetched, or waiting for the circuit, a permit or a
        // token) see the block or the stop and go back to the queue.
        if blocked {
            deliveries.cancel();
        }
        while let Some(Settled { tag, needs_ack, .. }) = in_progress.next().await {
            send(&channel, acks.settle(tag, needs_ack, false)).await;
        }
        send(&channel, acks.flush()).await;
        let _ = tokio::time::timeout(CLOSE_WAIT, channel.close(200, "consumer stopping".into())).await;
        if blocked {
            session.cancelled().await;
        }
        if self.gone.load(Ordering::Acquire) || session.is_cancelled() {
            return Ok(());
        }
        Err(ConsumeError::Cancelled(route.config.queue.clone()))
    }

    /// Delivers one message and settles it: by the time this returns, it is delivered, in a
    /// retry or dead-letter queue, or back in its own queue; the ack (batched) is the caller's.
    async fn handle(
        &self,
        channel: &Channel,
        route: &Route,
        mut delivery: Delivery,
        session: &CancellationToken,
    ) -> Settled {
        let body = Bytes::from(std::mem::take(&mut delivery.data));
        let envelope = Envelope::read(delivery.routing_key.as_str(), &delivery.properties, &body, unix_now());
        let mut message = InFlight { route, delivery, envelope, body };
        if route.blocked(SystemTime::now()) {
            return requeue(&message.delivery).await;
        }
        let _held = route.held.hold(message.envelope.published);
        let outgoing = match route.outgoing(&message.envelope, &message.body) {
            Ok(outgoing) => outgoing,
            Err(e) => {
                let reason = DeadLetterReason::of(&e);
                debug!(id = %message.envelope.id, reason = reason.as_str(), error = %e, "Cannot render; dead-lettering.");
                return self.settle_unrenderable(channel, &message, reason, &e.to_string()).await;
            }
        };
        let (result, verdict) = loop {
            let Some((result, verdict)) = self.attempt(&message, &outgoing, session).await else {
                // Stopping, or the version's sunset passed while it waited: back to the queue.
                return requeue(&message.delivery).await;
            };
            match verdict {
                // Ordered: the head of the queue is retried in place, blocking the ones behind it.
                Verdict::Retry { step } if route.config.ordered => {
                    debug!(attempt = message.envelope.attempt, step = step + 1, "Retrying in place (ordered).");
                    self.count_retry(route, step);
                    tokio::select! {
                        () = tokio::time::sleep(route.config.schedule[step]) => {}
                        // Back to the head of the queue; the next consumer starts over.
                        () = session.cancelled() => return requeue(&message.delivery).await,
                        () = until_blocked(route) => return requeue(&message.delivery).await,
                    }
                    message.envelope.attempt = message.envelope.attempt.saturating_add(1);
                    message.envelope.last_step = Some(step);
                }
                _ => break (result, verdict),
            }
        };
        self.settle(channel, &message, &result, verdict).await
    }

    /// One attempt at delivering `message` as `outgoing`, measured and judged; `None` when the
    /// session ended or the route's version reached its sunset while it waited its turn.
    async fn attempt(
        &self,
        message: &InFlight<'_>,
        outgoing: &Outgoing,
        session: &CancellationToken,
    ) -> Option<(Attempt, Verdict)> {
        let turn = async {
            self.wait_for_circuit().await;
            // The semaphore is never closed, so acquiring only waits.
            let permit = self.in_flight.acquire().await.ok();
            self.limiter.acquire().await;
            permit
        };
        let _permit = tokio::select! {
            permit = turn => permit,
            () = session.cancelled() => return None,
        };
        if message.route.blocked(SystemTime::now()) {
            return None;
        }

        self.requests_gauge.inc();
        let started = Instant::now();
        let result = self.post(&message.envelope.id, outgoing).await;
        self.requests_gauge.dec();
        let route = message.route;
        route.metrics.attempt_duration.observe(started.elapsed().as_secs_f64());
        let success = matches!(result, Attempt::Status { code: 200..=299, .. });
        self.record_circuit(success);
        match &result {
            Attempt::Status { code: code @ 200..=299, .. } => self.stats.delivered(*code),
            Attempt::Status { code, .. } => self.stats.failed(Some(*code)),
            Attempt::Timeout | Attempt::Connection | Attempt::Refused => self.stats.failed(None),
        }

        let verdict =
            judge(&result, message.envelope.attempt, message.envelope.last_step, &message.route.config.schedule);
        let outcome = match &verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry { .. } => "retried",
            Verdict::DeadLetter(_) => "dead_lettered",
            Verdict::Gone => "gone",
        };
        route.metrics.attempts(&self.metrics, &route.labels, outcome, status_class(&result)).inc();
        Some((result, verdict))
    }

    /// Acks a delivered message; re-publishes one to retry or dead-letter, then acks it once
    /// the broker confirmed; returns it to its queue when that fails or the endpoint is gone.
    async fn settle(&self, channel: &Channel, message: &InFlight<'_>, result: &Attempt, verdict: Verdict) -> Settled {
        let (route, delivery) = (message.route, &message.delivery);
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let onward = |next: Onward<'_>| envelope::onward(&delivery.properties, &message.envelope, &next, now);
        let settled = match verdict {
            Verdict::Delivered => {
                if let Some(published) = delivery.properties.timestamp() {
                    let age = unix_now().saturating_sub(*published);
                    #[allow(clippy::cast_precision_loss, reason = "seconds since publish fit f64 exactly")]
                    route.metrics.latency.observe(age as f64);
                }
                Ok(())
            }
            Verdict::Retry { step } => {
                let next = onward(Onward::Retry { step, result });
                let sent = publish_confirmed(channel, &route.config.retry_queues[step], &message.body, next).await;
                if sent.is_ok() {
                    self.count_retry(route, step);
                }
                sent.map_err(Some)
            }
            Verdict::DeadLetter(reason) => {
                let next = onward(Onward::DeadLetter { reason, result });
                let sent = publish_confirmed(channel, &route.config.dead_letter_queue, &message.body, next).await;
                if sent.is_ok() {
                    self.count_dead_letter(route, reason);
                }
                sent.map_err(Some)
            }
            Verdict::Gone => {
                warn!("The endpoint answered 410 Gone; the Webhook is disabled and consumption stops.");
                self.gone.store(true, Ordering::Release);
                self.stats.gone();
                Err(None)
            }
        };
        self.acknowledge(message, settled).await
    }

    /// Dead-letters a message that cannot be rendered, before any attempt, saying why.
    async fn settle_unrenderable(
        &self,
        channel: &Channel,
        message: &InFlight<'_>,
        reason: DeadLetterReason,
        detail: &str,
    ) -> Settled {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let next = envelope::onward(
            &message.delivery.properties,
            &message.envelope,
            &Onward::Unrenderable { reason, detail },
            now,
        );
        let sent = publish_confirmed(channel, &message.route.config.dead_letter_queue, &message.body, next).await;
        if sent.is_ok() {
            self.count_dead_letter(message.route, reason);
        }
        self.acknowledge(message, sent.map_err(Some)).await
    }

    /// To be acked once its next home has it; otherwise returned to its queue now.
    async fn acknowledge(&self, message: &InFlight<'_>, settled: Result<(), Option<PublishError>>) -> Settled {
        match settled {
            Ok(()) => Settled { tag: message.delivery.delivery_tag, needs_ack: true, held_back: false },
            Err(e) => {
                if let Some(e) = e {
                    warn!(error = %e, queue = %message.route.config.queue, "Could not move the message on; it goes back to its queue.");
                }
                requeue(&message.delivery).await
            }
        }
    }

    fn count_dead_letter(&self, route: &Route, reason: DeadLetterReason) {
        self.stats.dead_lettered();
        let labels = DeadLetterLabels { route: route.labels.clone(), reason: reason.as_str() };
        self.metrics.dead_lettered.get_or_create(&labels).inc();
    }

    fn count_retry(&self, route: &Route, step: usize) {
        let labels = RetryLabels { route: route.labels.clone(), step: (step + 1).to_string() };
        self.metrics.retries.get_or_create(&labels).inc();
    }

    /// Holds this delivery while the circuit is open (the unacknowledged prefetch keeps the
    /// broker from sending more); lets one probe through when it half-opens.
    async fn wait_for_circuit(&self) {
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
                    self.circuit_open.set(1);
                    tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
                }
            }
        }
    }

    fn record_circuit(&self, success: bool) {
        let transition = {
            let mut breaker = self.breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            breaker.record(success, Instant::now())
        };
        match transition {
            Some(Transition::Opened | Transition::Reopened) => {
                warn!("Circuit opened: the endpoint keeps failing; messages wait in the broker.");
                self.circuit_open.set(1);
                self.stats.circuit(true);
            }
            Some(Transition::Closed) => {
                info!("Circuit closed: the endpoint answers again.");
                self.circuit_open.set(0);
                self.stats.circuit(false);
            }
            None => {}
        }
    }

    /// One signed POST of `outgoing`. Reads at most 64 KiB of the answer; never follows a redirect.
    async fn post(&self, id: &str, outgoing: &Outgoing) -> Attempt {
        let Some(url) = &self.url else { return Attempt::Refused };
        if self.egress.check_url(url).is_err() {
            return Attempt::Refused;
        }
        let timestamp = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let signature = self.keys.sign(id, timestamp, &outgoing.body);
        let mut request = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, outgoing.content_type.as_str())
            .header(ID_HEADER, id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature);
        if let Some(version) = &outgoing.version {
            request = request.header(VERSION_HEADER, version.as_str());
        }
        for (name, value) in outgoing.notice.iter().flat_map(Notice::headers) {
            request = request.header(name, value);
        }
        match request.body(outgoing.body.clone()).send().await {
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

/// A delivery that is done with: acked later in a batch, or returned to its queue already.
struct Settled {
    tag: u64,
    needs_ack: bool,
    /// Returned without an attempt (stopping, or its version's sunset).
    held_back: bool,
}

/// Resolves when `route`'s version reaches its sunset under Block; never when it has none.
async fn until_blocked(route: &Route) {
    match route.blocked_from().map(|at| at.duration_since(SystemTime::now()).unwrap_or_default()) {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Returns `delivery` to its queue (to its head: the next consumer starts over with it).
async fn requeue(delivery: &Delivery) -> Settled {
    let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
    if let Err(e) = delivery.acker.nack(requeue).await {
        // The channel is gone: the broker returns the message to the queue by itself.
        debug!(error = %e, "Returning the message failed.");
    }
    Settled { tag: delivery.delivery_tag, needs_ack: false, held_back: true }
}

/// Sends `acks` on `channel`. A failure means the channel is gone, and with it every
/// unacknowledged delivery, which the broker returns to its queue.
async fn send(channel: &Channel, acks: Vec<Ack>) {
    for ack in acks {
        let sent = match ack {
            Ack::Through(tag) => channel.basic_ack(tag, BasicAckOptions { multiple: true }).await,
            Ack::Each(tags) => {
                let mut sent = Ok(());
                for tag in tags {
                    sent = sent.and(channel.basic_ack(tag, BasicAckOptions { multiple: false }).await);
                }
                sent
            }
        };
        if let Err(e) = sent {
            debug!(error = %e, "Acknowledgement failed.");
        }
    }
}

/// Resolves once `conn` is no longer connected.
async fn closed(conn: &Connection) {
    while conn.status().connected() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::{
        Router,
        body::Bytes,
        extract::State,
        http::{HeaderMap, StatusCode},
        routing::post,
    };
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::dispatch::{
        config::{CircuitBreakerConfig, EgressConfig},
        signing::{SigningKey, generate_secret, verify},
    };

    type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

    /// A local endpoint answering `status` (with `headers`) after `delay`, recording each request.
    async fn endpoint(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        delay: Duration,
    ) -> (String, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route(
                "/hook",
                post(move |State(seen): State<Seen>, request_headers: HeaderMap, body: Bytes| async move {
                    seen.lock().expect("lock").push((request_headers, body));
                    tokio::time::sleep(delay).await;
                    let mut answer = HeaderMap::new();
                    for (k, v) in headers {
                        answer.insert(*k, v.parse().expect("header"));
                    }
                    (StatusCode::from_u16(status).expect("status"), answer, "x".repeat(100_000))
                }),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), seen)
    }

    fn json(body: &'static [u8]) -> Outgoing {
        Outgoing {
            body: Bytes::from_static(body),
            content_type: "application/json".into(),
            version: None,
            notice: None,
        }
    }

    fn dispatcher(url: &str, secret: &str, allow_loopback: bool) -> Arc<Dispatcher> {
        let config = DispatchConfig {
            namespace: "shop".into(),
            webhook: "billing".into(),
            url: url.into(),
            headers: BTreeMap::from([("X-Team".to_owned(), "billing".to_owned())]),
            timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_millis(300),
            max_in_flight: 4,
            rate_limit: None,
            circuit_breaker: CircuitBreakerConfig {
                failure_ratio: 1.0,
                min_attempts: 1000,
                window: Duration::from_secs(60),
                open_for: Duration::from_secs(1),
            },
            suspend: false,
            egress: EgressConfig::default(),
            subscriptions: Vec::new(),
            topics: BTreeMap::new(),
        };
        let allow = if allow_loopback { vec!["127.0.0.0/8".parse().expect("cidr")] } else { Vec::new() };
        let egress = EgressPolicy { allow, refuse_private: false };
        let keys = KeyRing::new(SigningKey::parse(secret).expect("key"));
        let metrics = DispatcherMetrics::register(&mut Registry::default());
        Dispatcher::new(config, keys, egress, metrics, Arc::new(Stats::default())).expect("dispatcher")
    }

    #[tokio::test]
    async fn a_post_is_signed_over_its_body_and_carries_the_webhooks_headers() {
        let (url, seen) = endpoint(204, &[], Duration::ZERO).await;
        let secret = generate_secret();
        let result = dispatcher(&url, &secret, true).post("evt-1", &json(br#"{"id":"o-1"}"#)).await;
        assert_eq!(result, Attempt::Status { code: 204, retry_after: None });
        let seen = seen.lock().expect("lock");
        let (headers, body) = &seen[0];
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(body.as_ref(), br#"{"id":"o-1"}"#);
        assert_eq!((h("webhook-id").as_str(), h("content-type").as_str()), ("evt-1", "application/json"));
        assert_eq!(h("x-team"), "billing");
        let timestamp: i64 = h("webhook-timestamp").parse().expect("timestamp");
        let key = SigningKey::parse(&secret).expect("key");
        assert!(verify(&key, "evt-1", timestamp, body, &h("webhook-signature")), "signed with the Webhook's secret");
    }

    #[tokio::test]
    async fn a_redirect_is_the_answer_and_retry_after_is_read() {
        let (url, seen) = endpoint(302, &[("location", "http://127.0.0.1:1/elsewhere")], Duration::ZERO).await;
        let result = dispatcher(&url, &generate_secret(), true).post("evt-1", &json(b"{}")).await;
        assert_eq!(result, Attempt::Status { code: 302, retry_after: None }, "not followed");
        assert_eq!(seen.lock().expect("lock").len(), 1);
        let (url, _) = endpoint(429, &[("retry-after", "120")], Duration::ZERO).await;
        let result = dispatcher(&url, &generate_secret(), true).post("evt-1", &json(b"{}")).await;
        assert_eq!(result, Attempt::Status { code: 429, retry_after: Some(Duration::from_secs(120)) });
    }

    #[tokio::test]
    async fn a_slow_endpoint_times_out_and_a_refused_address_is_never_contacted() {
        let (url, _) = endpoint(204, &[], Duration::from_secs(5)).await;
        assert_eq!(dispatcher(&url, &generate_secret(), true).post("evt-1", &json(b"{}")).await, Attempt::Timeout);
        let (url, seen) = endpoint(204, &[], Duration::ZERO).await;
        assert_eq!(dispatcher(&url, &generate_secret(), false).post("evt-1", &json(b"{}")).await, Attempt::Refused);
        assert!(seen.lock().expect("lock").is_empty(), "loopback is refused without the allowlist");
        let closed = "http://127.0.0.1:1/hook";
        assert_eq!(dispatcher(closed, &generate_secret(), true).post("evt-1", &json(b"{}")).await, Attempt::Connection);
    }
}
