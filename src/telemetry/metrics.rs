//! The controller's Prometheus metrics (the README's "Metrics" section). Labels are bounded: a kind, a result,
//! a category, a broker Secret — never an object name from a payload or a URL.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: &'static str,
    pub ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    pub broker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub namespace: String,
    pub subscription: String,
    pub queue: &'static str,
}

/// One event version of a topic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicVersionLabels {
    pub namespace: String,
    pub topic: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionStateLabels {
    #[prometheus(flatten)]
    pub version: TopicVersionLabels,
    /// `Current`, `Supported`, `Deprecated` or `Sunset`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn reconcile_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Every metric the controller exports.
#[derive(Clone)]
pub struct ControllerMetrics {
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    reconcile_duration: HistogramFamily<KindLabels>,
    resources: Family<ResourceLabels, Gauge>,
    broker_up: Family<BrokerLabels, Gauge>,
    drift_repairs: Family<KindLabels, Counter>,
    queue_messages: Family<QueueLabels, Gauge>,
    subscriptions_by_version: Family<VersionStateLabels, Gauge>,
    version_sunset: Family<TopicVersionLabels, Gauge>,
    /// The version series set last time, so the ones that are gone can be removed.
    version_series: Arc<Mutex<(HashSet<VersionStateLabels>, HashSet<TopicVersionLabels>)>>,
    pub broker_requests: BrokerRequestMetrics,
}

impl ControllerMetrics {
    /// Creates the metrics and registers them under the `sluice_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_buckets),
            resources: Family::default(),
            broker_up: Family::default(),
            drift_repairs: Family::default(),
            queue_messages: Family::default(),
            subscriptions_by_version: Family::default(),
            version_sunset: Family::default(),
            version_series: Arc::default(),
            broker_requests: BrokerRequestMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("sluice");
        r.register("reconcile", "Reconciles by kind and result (success or error)", metrics.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Failed reconciles by kind and reason (a bounded error category)",
            metrics.reconcile_errors.clone(),
        );
        r.register("reconcile_duration_seconds", "Time one reconcile took", metrics.reconcile_duration.clone());
        r.register("resources", "Resources by kind and Ready condition status", metrics.resources.clone());
        r.register(
            "broker_up",
            "Whether the broker answers on AMQP and its management API (1) or not (0)",
            metrics.broker_up.clone(),
        );
        r.register(
            "drift_repairs",
            "Broker objects found missing or changed out of band and restored",
            metrics.drift_repairs.clone(),
        );
        r.register(
            "queue_messages",
            "Messages in a Subscription's queues (work, retry, dlq), from the broker's statistics",
            metrics.queue_messages.clone(),
        );
        r.register(
            "subscriptions_by_version",
            "Subscriptions receiving each event version of a topic, by the version's state (the ApiVersionPolicy's migration board)",
            metrics.subscriptions_by_version.clone(),
        );
        r.register(
            "version_sunset_timestamp_seconds",
            "When an event version of a topic reaches its sunset (Unix seconds)",
            metrics.version_sunset.clone(),
        );
        r.register(
            "broker_requests",
            "Management API requests by operation and outcome",
            metrics.broker_requests.family.clone(),
        );
        Arc::new(metrics)
    }

    /// Starts timing a reconcile of `kind`; call [`ReconcileTimer::finish`] with the outcome.
    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer { metrics: self, kind, start: Instant::now() }
    }

    pub fn drift_repaired(&self, kind: &'static str, count: usize) {
        self.drift_repairs.get_or_create(&KindLabels { kind }).inc_by(count as u64);
    }

    pub fn set_broker_up(&self, broker: &str, up: bool) {
        self.broker_up.get_or_create(&BrokerLabels { broker: broker.to_owned() }).set(i64::from(up));
    }

    pub fn forget_broker(&self, broker: &str) {
        self.broker_up.remove(&BrokerLabels { broker: broker.to_owned() });
    }

    /// Sets the message counts of a Subscription's queues.
    pub fn set_queue_messages(&self, namespace: &str, subscription: &str, work: i64, retry: i64, dlq: i64) {
        for (queue, value) in [("work", work), ("retry", retry), ("dlq", dlq)] {
            let labels = QueueLabels { namespace: namespace.to_owned(), subscription: subscription.to_owned(), queue };
            self.queue_messages.get_or_create(&labels).set(value);
        }
    }

    /// Drops a deleted Subscription's series.
    pub fn forget_queue_messages(&self, namespace: &str, subscription: &str) {
        for queue in ["work", "retry", "dlq"] {
            let labels = QueueLabels { namespace: namespace.to_owned(), subscription: subscription.to_owned(), queue };
            self.queue_messages.remove(&labels);
        }
    }

    /// Replaces every version series with `board` (Subscriptions per version and state) and
    /// `sunsets` (sunset dates); series of versions or policies no longer there are removed.
    pub fn set_versions(&self, board: Vec<(VersionStateLabels, i64)>, sunsets: Vec<(TopicVersionLabels, i64)>) {
        let mut previous = self.version_series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut seen_board, mut seen_sunsets) = (HashSet::new(), HashSet::new());
        for (labels, value) in board {
            self.subscriptions_by_version.get_or_create(&labels).set(value);
            seen_board.insert(labels);
        }
        for (labels, value) in sunsets {
            self.version_sunset.get_or_create(&labels).set(value);
            seen_sunsets.insert(labels);
        }
        for gone in previous.0.difference(&seen_board) {
            self.subscriptions_by_version.remove(gone);
        }
        for gone in previous.1.difference(&seen_sunsets) {
            self.version_sunset.remove(gone);
        }
        *previous = (seen_board, seen_sunsets);
    }

    /// Sets the number of `kind` resources per Ready status (`true`, `false`, `unknown`).
    pub fn set_resources(&self, kind: &'static str, ready: i64, not_ready: i64, unknown: i64) {
        for (label, value) in [("true", ready), ("false", not_ready), ("unknown", unknown)] {
            self.resources.get_or_create(&ResourceLabels { kind, ready: label }).set(value);
        }
    }
}

/// Times one reconcile and counts its result.
pub struct ReconcileTimer<'a> {
    metrics: &'a ControllerMetrics,
    kind: &'static str,
    start: Instant,
}

impl ReconcileTimer<'_> {
    /// Records the reconcile; `error` is the error category when it failed.
    pub fn finish(self, error: Option<&'static str>) {
        let kind = self.kind;
        self.metrics.reconcile_duration.get_or_create(&KindLabels { kind }).observe(self.start.elapsed().as_secs_f64());
        let result = if error.is_some() { "error" } else { "success" };
        self.metrics.reconciles.get_or_create(&ReconcileLabels { kind, result }).inc();
        if let Some(reason) = error {
            self.metrics.reconcile_errors.get_or_create(&ReconcileErrorLabels { kind, reason }).inc();
        }
    }
}

/// Counts management API requests; cheap to clone into every client.
#[derive(Clone, Default)]
pub struct BrokerRequestMetrics {
    family: Family<RequestLabels, Counter>,
}

impl BrokerRequestMetrics {
    pub fn record<T, E>(&self, operation: &'static str, result: &Result<T, E>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.family.get_or_create(&RequestLabels { operation, outcome }).inc();
    }
}
