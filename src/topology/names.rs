//! RabbitMQ names. Deterministic and documented: users grep for them in the management UI
//! and producers publish to them, so they never change across operator versions.

/// The exchange of an EventTopic: `sluice.<namespace>.<topic>`.
pub fn exchange(namespace: &str, topic: &str) -> String {
    format!("sluice.{namespace}.{topic}")
}

/// The alternate exchange capturing a topic's unroutable events: `sluice.<namespace>.<topic>.unroutable`.
pub fn unroutable_exchange(namespace: &str, topic: &str) -> String {
    format!("sluice.{namespace}.{topic}.unroutable")
}

/// The queue keeping a topic's unroutable events; same name as its exchange.
pub fn unroutable_queue(namespace: &str, topic: &str) -> String {
    unroutable_exchange(namespace, topic)
}

/// The work queue of a Subscription: `sluice.<namespace>.<subscription>`.
pub fn work_queue(namespace: &str, subscription: &str) -> String {
    format!("sluice.{namespace}.{subscription}")
}

/// The retry queue of one step of a Subscription's ladder: `sluice.<namespace>.<subscription>.retry.<step>`.
pub fn retry_queue(namespace: &str, subscription: &str, step: usize) -> String {
    format!("sluice.{namespace}.{subscription}.retry.{step}")
}

/// The dead-letter queue of a Subscription: `sluice.<namespace>.<subscription>.dlq`.
pub fn dead_letter_queue(namespace: &str, subscription: &str) -> String {
    format!("sluice.{namespace}.{subscription}.dlq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        assert_eq!(exchange("shop", "orders"), "sluice.shop.orders");
        assert_eq!(unroutable_exchange("shop", "orders"), "sluice.shop.orders.unroutable");
        assert_eq!(work_queue("shop", "orders-to-billing"), "sluice.shop.orders-to-billing");
        assert_eq!(retry_queue("shop", "orders-to-billing", 3), "sluice.shop.orders-to-billing.retry.3");
        assert_eq!(dead_letter_queue("shop", "orders-to-billing"), "sluice.shop.orders-to-billing.dlq");
    }
}
