//! Desired broker topology: what each resource should look like on RabbitMQ, as plain data.
//! The builders here are pure (no client), so they are unit-tested without a broker.

pub mod event_topic;
pub mod names;
pub mod subscription;

use std::collections::BTreeMap;

use serde_json::Value;

/// Arguments of an exchange, queue or binding, as RabbitMQ stores them.
pub type Arguments = BTreeMap<String, Value>;

/// A durable exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    pub name: String,
    /// RabbitMQ exchange type: topic, direct, fanout or headers.
    pub kind: &'static str,
    pub arguments: Arguments,
}

/// A durable queue. Only what RabbitMQ cannot change later is an argument here; every
/// tunable goes into a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Queue {
    pub name: String,
    pub arguments: Arguments,
}

/// A binding from an exchange to a queue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    pub source: String,
    pub queue: String,
    pub routing_key: String,
    pub arguments: BTreeMap<String, String>,
}

/// Everything one resource owns on the broker, in the order it must be declared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<Queue>,
    pub bindings: Vec<Binding>,
}

/// The argument that makes a queue a quorum queue (replicated, durable, with delivery limits).
pub fn quorum_queue_arguments() -> Arguments {
    Arguments::from([("x-queue-type".to_owned(), Value::from("quorum"))])
}
