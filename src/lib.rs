//! Sluice: a Kubernetes operator that turns EventTopic, Subscription, Webhook and
//! ApiVersionPolicy resources into RabbitMQ topology and signed webhook delivery.
//!
//! - [`api`]: the custom resources (one module per kind);
//! - [`controller`]: one reconcile driver per kind;
//! - [`topology`]: pure builders of the desired broker objects;
//! - [`versions`]: event versions, pure: catalogs, version chains, states by the clock;
//! - [`broker`]: RabbitMQ connections, the management API client, applying topology;
//! - [`dispatch`]: the webhook dispatcher (consume, sign, deliver, retry, dead-letter);
//! - [`workload`]: pure builders of the dispatcher Deployment and its ConfigMap, Secret, RBAC;
//! - [`telemetry`], [`admin`], [`leader`]: metrics, health, logs, leader election;
//! - [`cmd`]: the `sluice` command line.

pub mod admin;
pub mod api;
pub mod broker;
pub mod cmd;
pub mod controller;
pub mod dispatch;
pub mod leader;
pub mod telemetry;
pub mod topology;
pub mod versions;
pub mod workload;
