//! The brokers the controller talks to, one entry per broker Secret, each with a pooled HTTP
//! client, an AMQP connection, and a health monitor that drives `sluice_broker_up` and
//! re-reconciles a broker's objects whenever it goes down or comes back.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{BrokerConfig, BrokerError, ConfigError, ManagementClient};
use crate::telemetry::metrics::ControllerMetrics;

/// How often a healthy broker is probed, and how often a down one is retried.
const PROBE_UP: Duration = Duration::from_secs(5);
const PROBE_DOWN: Duration = Duration::from_secs(2);
/// A broker no reconcile asked for in this long stops being monitored.
const IDLE_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// Which broker: the operator's default, or a Secret named by an EventTopic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum BrokerKey {
    #[default]
    Default,
    Secret {
        namespace: String,
        name: String,
    },
}

impl BrokerKey {
    /// How a resource's status names its broker: `default`, or the Secret's name (which lives
    /// in the resource's own namespace).
    pub fn status_name(&self) -> &str {
        match self {
            Self::Default => "default",
            Self::Secret { name, .. } => name,
        }
    }

    /// The broker a status in `namespace` names (see [`BrokerKey::status_name`]); also reads the
    /// `<namespace>/<secret>` form earlier versions wrote.
    pub fn from_status(namespace: &str, text: &str) -> Self {
        match (text, text.split_once('/')) {
            ("default", _) => Self::Default,
            (_, Some((namespace, name))) => Self::Secret { namespace: namespace.to_owned(), name: name.to_owned() },
            (name, None) => Self::Secret { namespace: namespace.to_owned(), name: name.to_owned() },
        }
    }
}

impl fmt::Display for BrokerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Secret { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}

/// Why a broker cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("broker Secret {namespace}/{name} does not exist; create it with keys uri and managementUri")]
    SecretMissing { namespace: String, name: String },
    #[error("broker Secret {namespace}/{name} is invalid: {source}")]
    SecretInvalid {
        namespace: String,
        name: String,
        #[source]
        source: ConfigError,
    },
    #[error("failed to read broker Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Client(#[from] BrokerError),
}

impl ResolveError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::SecretMissing { .. } => "BrokerSecretMissing",
            Self::SecretInvalid { .. } => "BrokerSecretInvalid",
            Self::ReadSecret { .. } => "KubeApiError",
            Self::Client(e) => e.category(),
        }
    }
}

/// One broker in use.
pub struct Broker {
    pub key: BrokerKey,
    pub config: BrokerConfig,
    pub management: ManagementClient,
    up: AtomicBool,
    last_error: Mutex<String>,
    last_used: Mutex<Instant>,
    stop: CancellationToken,
    /// One AMQP connection per broker, shared by the health monitor and message moves.
    amqp: tokio::sync::Mutex<Option<Connection>>,
    connection_name: String,
    /// When broker-wide objects (shared policies) were last checked, so that not every
    /// reconcile re-reads them.
    verified: Mutex<HashMap<&'static str, Instant>>,
}

impl Broker {
    /// Whether `what` was checked on this broker within `within`.
    pub fn verified_within(&self, what: &'static str, within: Duration) -> bool {
        self.verified.lock().ok().and_then(|v| v.get(what).map(|t| t.elapsed() < within)).unwrap_or(false)
    }

    pub fn mark_verified(&self, what: &'static str) {
        if let Ok(mut v) = self.verified.lock() {
            v.insert(what, Instant::now());
        }
    }

    /// A fresh channel on the broker's AMQP connection, reconnecting if it dropped.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut link = self.amqp.lock().await;
        if !link.as_ref().is_some_and(|c| c.status().connected()) {
            *link = Some(
                connect(&self.config.amqp_uri, &self.connection_name)
                    .await
                    .map_err(|reason| BrokerError::Amqp { endpoint: self.config.endpoint(), reason })?,
            );
        }
        let conn = link
            .as_ref()
            .ok_or_else(|| BrokerError::Amqp { endpoint: self.config.endpoint(), reason: "no connection".into() })?;
        conn.create_channel()
            .await
            .map_err(|e| BrokerError::Amqp { endpoint: self.config.endpoint(), reason: e.to_string() })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The error that made the last health probe fail.
    pub fn last_error(&self) -> String {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Fails fast while the health monitor sees the broker down, so reconciles do not each
    /// wait for a connect timeout.
    pub fn ensure_up(&self) -> Result<(), BrokerUnavailable> {
        if self.is_up() {
            Ok(())
        } else {
            Err(BrokerUnavailable {
                broker: self.key.to_string(),
                endpoint: self.config.endpoint(),
                error: self.last_error(),
            })
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The broker is known to be down.
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker {broker} ({endpoint}) is unavailable: {error}")]
pub struct BrokerUnavailable {
    pub broker: String,
    pub endpoint: String,
    pub error: String,
}

/// All brokers in use, keyed by Secret.
pub struct Brokers {
    client: kube::Client,
    default_namespace: String,
    default_secret: String,
    entries: Mutex<HashMap<BrokerKey, Arc<Broker>>>,
    metrics: Arc<ControllerMetrics>,
    health_changed: broadcast::Sender<BrokerKey>,
    default_connected_once: AtomicBool,
    connection_name: String,
}

impl Brokers {
    pub fn new(
        client: kube::Client,
        default_namespace: String,
        default_secret: String,
        metrics: Arc<ControllerMetrics>,
        connection_name: String,
    ) -> Arc<Self> {
        let (health_changed, _) = broadcast::channel(64);
        Arc::new(Self {
            client,
            default_namespace,
            default_secret,
            entries: Mutex::new(HashMap::new()),
            metrics,
            health_changed,
            default_connected_once: AtomicBool::new(false),
            connection_name,
        })
    }

    /// Notified with the broker's key each time a broker goes down or comes back, so the
    /// resources on it report the truth without waiting for a resync.
    pub fn subscribe(&self) -> broadcast::Receiver<BrokerKey> {
        self.health_changed.subscribe()
    }

    /// Whether the default broker has been reachable at least once (readiness).
    pub fn default_connected_once(&self) -> bool {
        self.default_connected_once.load(Ordering::Acquire)
    }

    /// Returns the broker for `key`, reading its Secret; a changed Secret replaces the entry
    /// (and its connections), so rotated credentials take effect on the next reconcile.
    pub async fn resolve(self: &Arc<Self>, key: &BrokerKey) -> Result<Arc<Broker>, ResolveError> {
        let (namespace, name) = match key {
            BrokerKey::Default => (self.default_namespace.as_str(), self.default_secret.as_str()),
            BrokerKey::Secret { namespace, name } => (namespace.as_str(), name.as_str()),
        };
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| ResolveError::ReadSecret {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })?
            .ok_or_else(|| ResolveError::SecretMissing { namespace: namespace.to_owned(), name: name.to_owned() })?;
        let config = BrokerConfig::from_secret_data(&secret.data.unwrap_or_default()).map_err(|source| {
            ResolveError::SecretInvalid { namespace: namespace.to_owned(), name: name.to_owned(), source }
        })?;

        if let Some(existing) = self.lookup(key).filter(|b| b.config == config) {
            existing.touch();
            return Ok(existing);
        }
        let broker = Arc::new(Broker {
            key: key.clone(),
            management: ManagementClient::new(&config, self.metrics.broker_requests.clone())?,
            config,
            up: AtomicBool::new(false),
            last_error: Mutex::new("not probed yet".to_owned()),
            last_used: Mutex::new(Instant::now()),
            stop: CancellationToken::new(),
            amqp: tokio::sync::Mutex::new(None),
            connection_name: self.connection_name.clone(),
            verified: Mutex::default(),
        });
        // The first probe runs before the broker is handed out, so a fresh entry is not
        // reported down just because nobody has looked yet.
        probe(&broker).await;
        self.record_health(&broker, false);
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key.clone(), broker.clone());
        }
        info!(broker = %key, endpoint = %broker.config.endpoint(), up = broker.is_up(), "Broker configured.");
        tokio::spawn(monitor(self.clone(), Arc::downgrade(&broker), broker.stop.clone()));
        Ok(broker)
    }

    fn lookup(&self, key: &BrokerKey) -> Option<Arc<Broker>> {
        self.entries.lock().ok().and_then(|e| e.get(key).cloned())
    }

    /// Updates metrics after a probe; `was_up` is the state before it.
    fn record_health(&self, broker: &Broker, was_up: bool) {
        let up = broker.is_up();
        let label = broker.key.to_string();
        self.metrics.set_broker_up(&label, up);
        if up && broker.key == BrokerKey::Default {
            self.default_connected_once.store(true, Ordering::Release);
        }
        if up != was_up {
            let _ = self.health_changed.send(broker.key.clone());
        }
    }

    fn retire(&self, broker: &Broker) {
        if let Ok(mut entries) = self.entries.lock()
            && entries.get(&broker.key).is_some_and(|b| std::ptr::eq(Arc::as_ptr(b), broker))
        {
            entries.remove(&broker.key);
            self.metrics.forget_broker(&broker.key.to_string());
        }
    }

    /// Keeps probing the default broker until its Secret exists, so `sluice_broker_up` and
    /// readiness reflect it even before any resource uses it.
    pub async fn watch_default(self: Arc<Self>, stop: CancellationToken) {
        let mut reported = None::<String>;
        loop {
            match self.resolve(&BrokerKey::Default).await {
                Ok(_) => reported = None,
                Err(e) => {
                    self.metrics.set_broker_up("default", false);
                    let text = e.to_string();
                    if reported.as_ref() != Some(&text) {
                        warn!(error = %text, "Default broker is not usable.");
                        reported = Some(text);
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PROBE_UP) => {}
            }
        }
    }
}

/// Probes one broker: the AMQP connection (kept open between probes) and the management API.
async fn probe(broker: &Broker) {
    let amqp = {
        let mut link = broker.amqp.lock().await;
        if link.as_ref().is_some_and(|c| c.status().connected()) {
            Ok(())
        } else {
            match connect(&broker.config.amqp_uri, &broker.connection_name).await {
                Ok(c) => {
                    *link = Some(c);
                    Ok(())
                }
                Err(e) => {
                    *link = None;
                    Err(e)
                }
            }
        }
    };
    let api = broker.management.whoami().await;
    let (up, error) = match (amqp, api) {
        (Ok(()), Ok(())) => (true, String::new()),
        (Err(e), _) => (false, e),
        (Ok(()), Err(e)) => (false, e.to_string()),
    };
    broker.up.store(up, Ordering::Release);
    if let Ok(mut last) = broker.last_error.lock() {
        *last = error;
    }
}

async fn connect(uri: &str, name: &str) -> Result<Connection, String> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(Duration::from_secs(5), Connection::connect(uri, props)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("AMQP connection failed: {e}")),
        Err(_) => Err("AMQP connection timed out after 5s".to_owned()),
    }
}

async fn monitor(brokers: Arc<Brokers>, broker: std::sync::Weak<Broker>, stop: CancellationToken) {
    loop {
        let wait = match broker.upgrade() {
            Some(b) if b.is_up() => PROBE_UP,
            Some(_) => PROBE_DOWN,
            None => return,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let Some(b) = broker.upgrade() else { return };
        if b.key != BrokerKey::Default && b.idle_for() > IDLE_EXPIRY {
            brokers.retire(&b);
            return;
        }
        let was_up = b.is_up();
        probe(&b).await;
        if was_up != b.is_up() {
            if b.is_up() {
                info!(broker = %b.key, "Broker is reachable again.");
            } else {
                warn!(broker = %b.key, error = %b.last_error(), "Broker is unreachable.");
            }
        }
        brokers.record_health(&b, was_up);
    }
}
