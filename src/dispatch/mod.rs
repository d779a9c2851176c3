//! The webhook dispatcher (`sluice dispatcher`): consumes a Webhook's Subscription queues,
//! signs and POSTs each event, and retries through the broker's retry queues or dead-letters,
//! acknowledging a message only after its next home confirmed it.
//!
//! - [`acks`]: acknowledging deliveries in batches;
//! - [`backlog`]: what waits in the queues, and how long the oldest held message has;
//! - [`config`]: the dispatch configuration the operator renders;
//! - [`envelope`]: what a message carries: event id, type, version, delivery bookkeeping;
//! - [`outcome`]: what an attempt's result means for the message;
//! - [`metrics`]: the dispatcher's Prometheus metrics;
//! - [`signing`]: Standard Webhooks signatures and `whsec_` secrets;
//! - [`egress`]: which addresses a delivery may connect to;
//! - [`rate_limit`]: the token-bucket rate limit;
//! - [`circuit`]: the circuit breaker;
//! - [`report`]: the delivery status each pod reports to its Webhook;
//! - [`route`]: a Subscription as the dispatcher runs it, and rendering its events;
//! - [`worker`]: the delivery loop.

pub mod acks;
pub mod backlog;
pub mod circuit;
pub mod config;
pub mod egress;
pub mod envelope;
pub mod metrics;
pub mod outcome;
pub mod rate_limit;
pub mod report;
pub mod route;
pub mod signing;
pub mod worker;
