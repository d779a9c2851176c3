//! A small client for the RabbitMQ management HTTP API: the operations topology needs, with
//! timeouts, no proxies, and errors that carry RabbitMQ's reason (never the credentials).

use std::{collections::BTreeMap, time::Duration};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use url::Url;

use super::{BrokerConfig, BrokerError};
use crate::{telemetry::metrics::BrokerRequestMetrics, topology::Arguments};

/// Characters left as-is in a path segment; everything else (including `/` in a vhost) is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// An exchange as the management API reports it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ExchangeInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Arguments,
}

/// A queue as the management API reports it. Message counts come from the broker's
/// statistics, refreshed every few seconds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct QueueInfo {
    #[serde(default)]
    pub name: String,
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Arguments,
    #[serde(default)]
    pub messages_ready: Option<i64>,
    #[serde(default)]
    pub messages_unacknowledged: Option<i64>,
    /// The policy in effect on the queue.
    #[serde(default)]
    pub policy: Option<String>,
}

/// A policy as the management API reports it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PolicyInfo {
    pub pattern: String,
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    pub priority: i64,
    pub definition: serde_json::Map<String, Value>,
}

/// A binding as the management API reports it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BindingInfo {
    pub routing_key: String,
    #[serde(default)]
    pub arguments: BTreeMap<String, Value>,
    pub properties_key: String,
}

#[derive(Serialize)]
struct ExchangeBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: &'a Arguments,
}

#[derive(Serialize)]
struct QueueBody<'a> {
    durable: bool,
    auto_delete: bool,
    arguments: &'a Arguments,
}

#[derive(Serialize)]
struct BindingBody<'a> {
    routing_key: &'a str,
    arguments: &'a BTreeMap<String, String>,
}

/// The RabbitMQ error body: `{"error": "...", "reason": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    reason: Value,
}

/// Client for one broker's management API.
#[derive(Clone)]
pub struct ManagementClient {
    http: reqwest::Client,
    base: Url,
    username: String,
    password: String,
    vhost: String,
    metrics: BrokerRequestMetrics,
}

impl ManagementClient {
    pub fn new(config: &BrokerConfig, metrics: BrokerRequestMetrics) -> Result<Self, BrokerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .pool_max_idle_per_host(8)
            .build()
            .map_err(|source| BrokerError::Client { source })?;
        Ok(Self {
            http,
            base: config.management_url.clone(),
            username: config.username.clone(),
            password: config.password.clone(),
            vhost: config.vhost.clone(),
            metrics,
        })
    }

    /// The management API base URL, for messages.
    pub fn endpoint(&self) -> &str {
        self.base.as_str()
    }

    /// Checks the credentials and that the API answers.
    pub async fn whoami(&self) -> Result<(), BrokerError> {
        self.send_unit("whoami", Method::GET, &["whoami"], None::<&()>).await
    }

    pub async fn get_exchange(&self, name: &str) -> Result<Option<ExchangeInfo>, BrokerError> {
        self.send("exchange.get", Method::GET, &["exchanges", &self.vhost, name], None::<&()>).await
    }

    pub async fn put_exchange(&self, name: &str, kind: &str, arguments: &Arguments) -> Result<(), BrokerError> {
        let body = ExchangeBody { kind, durable: true, auto_delete: false, internal: false, arguments };
        self.send_unit("exchange.put", Method::PUT, &["exchanges", &self.vhost, name], Some(&body)).await
    }

    pub async fn delete_exchange(&self, name: &str) -> Result<(), BrokerError> {
        self.send_unit("exchange.delete", Method::DELETE, &["exchanges", &self.vhost, name], None::<&()>).await
    }

    pub async fn get_queue(&self, name: &str) -> Result<Option<QueueInfo>, BrokerError> {
        self.send("queue.get", Method::GET, &["queues", &self.vhost, name], None::<&()>).await
    }

    pub async fn put_queue(&self, name: &str, arguments: &Arguments) -> Result<(), BrokerError> {
        let body = QueueBody { durable: true, auto_delete: false, arguments };
        self.send_unit("queue.put", Method::PUT, &["queues", &self.vhost, name], Some(&body)).await
    }

    pub async fn delete_queue(&self, name: &str) -> Result<(), BrokerError> {
        self.send_unit("queue.delete", Method::DELETE, &["queues", &self.vhost, name], None::<&()>).await
    }

    pub async fn get_policy(&self, name: &str) -> Result<Option<PolicyInfo>, BrokerError> {
        self.send("policy.get", Method::GET, &["policies", &self.vhost, name], None::<&()>).await
    }

    /// Creates or replaces a policy applying to queues.
    pub async fn put_policy(
        &self,
        name: &str,
        pattern: &str,
        priority: i64,
        definition: &serde_json::Map<String, Value>,
    ) -> Result<(), BrokerError> {
        let body = PolicyInfo {
            pattern: pattern.to_owned(),
            apply_to: "queues".into(),
            priority,
            definition: definition.clone(),
        };
        self.send_unit("policy.put", Method::PUT, &["policies", &self.vhost, name], Some(&body)).await
    }

    pub async fn delete_policy(&self, name: &str) -> Result<(), BrokerError> {
        self.send_unit("policy.delete", Method::DELETE, &["policies", &self.vhost, name], None::<&()>).await
    }

    /// Bindings from `exchange` to `queue`; empty when either is missing.
    pub async fn list_bindings(&self, exchange: &str, queue: &str) -> Result<Vec<BindingInfo>, BrokerError> {
        let path = ["bindings", &self.vhost, "e", exchange, "q", queue];
        Ok(self.send("binding.list", Method::GET, &path, None::<&()>).await?.unwrap_or_default())
    }

    pub async fn create_binding(
        &self,
        exchange: &str,
        queue: &str,
        routing_key: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let body = BindingBody { routing_key, arguments };
        let path = ["bindings", &self.vhost, "e", exchange, "q", queue];
        self.send_unit("binding.create", Method::POST, &path, Some(&body)).await
    }

    pub async fn delete_binding(&self, exchange: &str, queue: &str, properties_key: &str) -> Result<(), BrokerError> {
        let path = ["bindings", &self.vhost, "e", exchange, "q", queue, properties_key];
        self.send_unit("binding.delete", Method::DELETE, &path, None::<&()>).await
    }

    /// Sends a request whose answer carries nothing we need.
    async fn send_unit(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<&impl Serialize>,
    ) -> Result<(), BrokerError> {
        self.send::<Value>(operation, method, segments, body).await.map(|_| ())
    }

    /// Sends one request. A 404 is `Ok(None)`: reads report "missing", deletes are idempotent.
    async fn send<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>, BrokerError> {
        let object = segments.last().copied().unwrap_or_default();
        let path: Vec<String> = segments.iter().map(|s| seg(s)).collect();
        self.send_path(operation, method, &path.join("/"), object, body).await
    }

    /// Sends one request to `path` (already encoded, relative to `/api/`).
    async fn send_path<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        object: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>, BrokerError> {
        let result = self.send_inner(operation, method, path, object.to_owned(), body).await;
        self.metrics.record(operation, &result);
        result
    }

    async fn send_inner<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        object: String,
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>, BrokerError> {
        let url = format!("{}api/{path}", self.base);
        let mut request = self.http.request(method, url).basic_auth(&self.username, Some(&self.password));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| BrokerError::Unreachable { endpoint: self.base.to_string(), source })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(BrokerError::Unauthorized { user: self.username.clone(), status: status.as_u16() });
        }
        if status.is_server_error() {
            return Err(BrokerError::ServerError { operation, object, status: status.as_u16() });
        }
        if !status.is_success() {
            let reason = match response.json::<ErrorBody>().await {
                Ok(ErrorBody { reason: Value::String(s) }) => s,
                Ok(ErrorBody { reason }) => reason.to_string(),
                Err(_) => status.to_string(),
            };
            return Err(BrokerError::Refused { operation, object, status: status.as_u16(), reason });
        }
        if status == StatusCode::NO_CONTENT || status == StatusCode::CREATED {
            return Ok(serde_json::from_value(Value::Null).ok());
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|source| BrokerError::Unreachable { endpoint: self.base.to_string(), source })?;
        if bytes.is_empty() {
            return Ok(serde_json::from_value(Value::Null).ok());
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|source| BrokerError::Decode { operation, source })
    }
}
