//! The dispatcher's metrics (the README's "Metrics" section). Labels are bounded: namespace, webhook,
//! subscription, outcome, status class, retry step, dead-letter reason. Never a URL or an id.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    #[prometheus(flatten)]
    pub route: SubscriptionLabels,
    /// `delivered`, `retried`, `dead_lettered`, `gone`.
    pub outcome: &'static str,
    /// `2xx` … `5xx`, `timeout`, `connection`, `refused`.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    pub namespace: String,
    pub webhook: String,
    pub subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    #[prometheus(flatten)]
    pub route: SubscriptionLabels,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    #[prometheus(flatten)]
    pub route: SubscriptionLabels,
    /// The retry step the message was sent to (1-based).
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    #[prometheus(flatten)]
    pub route: SubscriptionLabels,
    /// `work`, `retry` (every step's queue summed) or `dlq`.
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub namespace: String,
    pub webhook: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn attempt_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0])
}

fn latency_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 1800.0, 7200.0, 86_400.0])
}

/// Every dispatcher metric, registered under `sluice_`.
pub struct DispatcherMetrics {
    pub attempts: Family<AttemptLabels, Counter>,
    pub attempt_duration: Histograms<SubscriptionLabels>,
    pub latency: Histograms<SubscriptionLabels>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub circuit_open: Family<WebhookLabels, Gauge>,
    pub inflight: Family<WebhookLabels, Gauge>,
    pub queue_messages: Family<QueueLabels, Gauge>,
    pub oldest_message_age: Family<SubscriptionLabels, Gauge>,
    pub broker_up: Gauge,
}

impl DispatcherMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(attempt_buckets),
            latency: Family::new_with_constructor(latency_buckets),
            dead_lettered: Family::default(),
            retries: Family::default(),
            circuit_open: Family::default(),
            inflight: Family::default(),
            queue_messages: Family::default(),
            oldest_message_age: Family::default(),
            broker_up: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("sluice");
        r.register("delivery_attempts", "Delivery attempts by outcome and HTTP status class", metrics.attempts.clone());
        r.register(
            "delivery_duration_seconds",
            "Time one delivery attempt took, from connecting to reading the response",
            metrics.attempt_duration.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Time from publishing an event to its successful delivery, retries included",
            metrics.latency.clone(),
        );
        r.register(
            "dead_lettered",
            "Messages published to a dead-letter queue, by reason",
            metrics.dead_lettered.clone(),
        );
        r.register("retries", "Messages sent to a retry queue, by retry step", metrics.retries.clone());
        r.register(
            "circuit_open",
            "Whether the Webhook's circuit breaker is open (1) or not (0)",
            metrics.circuit_open.clone(),
        );
        r.register("inflight", "Delivery attempts in progress", metrics.inflight.clone());
        r.register(
            "queue_messages",
            "Messages ready in the Subscription's queues (work, retry steps summed, dlq), sampled every 5 s",
            metrics.queue_messages.clone(),
        );
        r.register(
            "oldest_message_age_seconds",
            "Seconds since the oldest message this dispatcher holds (delivering, waiting on the circuit, retrying in place) was published (or received, without a timestamp)",
            metrics.oldest_message_age.clone(),
        );
        r.register(
            "dispatcher_broker_up",
            "Whether the dispatcher is connected to its broker (1) or not (0)",
            metrics.broker_up.clone(),
        );
        Arc::new(metrics)
    }
}
