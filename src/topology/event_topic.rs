//! The desired topology of an EventTopic: its exchange, and an alternate exchange with a
//! queue so an event no Subscription matched is kept rather than silently dropped.

use serde_json::Value;

use super::{Arguments, Binding, Exchange, Queue, Topology, names, quorum_queue_arguments};
use crate::api::ExchangeType;

/// The broker objects of one EventTopic.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicTopology {
    pub exchange: String,
    pub alternate_exchange: String,
    pub unroutable_queue: String,
    pub topology: Topology,
}

/// Builds the desired topology of the topic `name` in `namespace`.
pub fn desired(namespace: &str, name: &str, kind: ExchangeType) -> TopicTopology {
    let exchange = names::exchange(namespace, name);
    let alternate_exchange = names::unroutable_exchange(namespace, name);
    let unroutable_queue = names::unroutable_queue(namespace, name);
    // Declared in dependency order: the capture path first, then the exchange that points at it.
    let topology = Topology {
        exchanges: vec![
            Exchange { name: alternate_exchange.clone(), kind: "fanout", arguments: Arguments::new() },
            Exchange {
                name: exchange.clone(),
                kind: kind.as_str(),
                arguments: Arguments::from([(
                    "alternate-exchange".to_owned(),
                    Value::from(alternate_exchange.clone()),
                )]),
            },
        ],
        queues: vec![Queue { name: unroutable_queue.clone(), arguments: quorum_queue_arguments() }],
        bindings: vec![Binding {
            source: alternate_exchange.clone(),
            queue: unroutable_queue.clone(),
            routing_key: String::new(),
            arguments: std::collections::BTreeMap::new(),
        }],
    };
    TopicTopology { exchange, alternate_exchange, unroutable_queue, topology }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_gets_its_exchange_and_an_unroutable_capture() {
        let t = desired("shop", "orders", ExchangeType::Topic);
        assert_eq!(t.exchange, "sluice.shop.orders");
        assert_eq!(t.alternate_exchange, "sluice.shop.orders.unroutable");
        let names: Vec<_> = t.topology.exchanges.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(names, [("sluice.shop.orders.unroutable", "fanout"), ("sluice.shop.orders", "topic")]);
        assert_eq!(t.topology.exchanges[1].arguments["alternate-exchange"], "sluice.shop.orders.unroutable");
        assert_eq!(t.topology.queues[0].name, "sluice.shop.orders.unroutable");
        assert_eq!(t.topology.queues[0].arguments["x-queue-type"], "quorum");
        assert_eq!(t.topology.bindings.len(), 1);
        assert_eq!(t.topology.bindings[0].source, "sluice.shop.orders.unroutable");
        assert_eq!(t.topology.bindings[0].queue, "sluice.shop.orders.unroutable");
    }

    #[test]
    fn the_exchange_type_follows_the_spec() {
        for kind in [ExchangeType::Topic, ExchangeType::Direct, ExchangeType::Fanout, ExchangeType::Headers] {
            assert_eq!(desired("a", "b", kind).topology.exchanges[1].kind, kind.as_str());
        }
    }
}
