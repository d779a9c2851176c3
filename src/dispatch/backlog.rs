//! What waits: the messages ready in each Subscription's work, retry and dead-letter queues
//! (sampled from the broker), and the age of the oldest message this dispatcher holds.
//!
//! Quorum queues do not report the timestamp of their head message, and reading the head
//! (basic.get + requeue) would count as a delivery against the queue's delivery limit. So the
//! age is measured on what the dispatcher holds unacknowledged: the messages it is delivering,
//! waiting on an open circuit, or retrying in place (Ordered). Those are the ones that get old
//! when an endpoint misbehaves; while delivery is paused nothing is held and the backlog shows
//! in `sluice_queue_messages` instead.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    config::SubscriptionRoute,
    metrics::{DispatcherMetrics, QueueLabels},
    route::Route,
};
use crate::broker::mover::count_on;

/// How often the queues' depths are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long closing the sampler's channel may wait for the broker's answer.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Publish times (unix seconds) of the messages held, per Subscription, as a multiset.
#[derive(Default)]
pub struct Held {
    by_subscription: Mutex<HashMap<String, BTreeMap<u64, u32>>>,
}

/// Releases its message from [`Held`] when dropped (delivery settled, or abandoned).
pub struct HeldGuard<'a> {
    held: &'a Held,
    subscription: String,
    published: u64,
}

impl Held {
    /// Records a message of `subscription` published at `published` as held until the guard drops.
    pub fn hold(&self, subscription: &str, published: u64) -> HeldGuard<'_> {
        let mut map = self.by_subscription.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(subscription.to_owned()).or_default().entry(published).or_default() += 1;
        HeldGuard { held: self, subscription: subscription.to_owned(), published }
    }

    /// Seconds since the oldest held message of `subscription` was published, at `now`; 0 when
    /// none is held.
    pub fn oldest_age(&self, subscription: &str, now: u64) -> u64 {
        let map = self.by_subscription.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(subscription).and_then(|times| times.keys().next()).map_or(0, |oldest| now.saturating_sub(*oldest))
    }
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.held.by_subscription.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(times) = map.get_mut(&self.subscription)
            && let Some(n) = times.get_mut(&self.published)
        {
            *n -= 1;
            if *n == 0 {
                times.remove(&self.published);
            }
        }
    }
}

/// Ready messages of one Subscription, by kind of queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepths {
    pub work: u32,
    /// Summed over every retry step's queue.
    pub retry: u32,
    pub dlq: u32,
}

/// What the sampler measures and where it records it.
pub struct Sampler<'a> {
    pub routes: &'a [std::sync::Arc<Route>],
    pub held: &'a Held,
    pub metrics: &'a DispatcherMetrics,
    /// The current time in unix seconds.
    pub now: fn() -> u64,
}

impl Sampler<'_> {
    /// Every 5 s until `session` ends: the ready messages of each Subscription's queues
    /// (passive declares on a channel of their own; a missing queue counts 0) and the age of
    /// the oldest held message. A failed sample is logged and retried; it never disturbs delivery.
    pub async fn run(&self, conn: &Connection, session: CancellationToken) {
        let mut channel: Option<Channel> = None;
        loop {
            tokio::select! {
                () = session.cancelled() => break,
                () = self.sample_once(conn, &mut channel) => {}
            }
            tokio::select! {
                () = session.cancelled() => break,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
        if let Some(channel) = channel {
            let _ = tokio::time::timeout(CLOSE_WAIT, channel.close(200, "sampler stopping".into())).await;
        }
    }

    async fn sample_once(&self, conn: &Connection, channel: &mut Option<Channel>) {
        for route in self.routes {
            let labels = &route.labels;
            let age = self.held.oldest_age(route.name(), (self.now)());
            self.metrics.oldest_message_age.get_or_create(labels).set(i64::try_from(age).unwrap_or(i64::MAX));
            match depths(conn, channel, &route.config).await {
                Ok(depths) => {
                    for (queue, n) in [("work", depths.work), ("retry", depths.retry), ("dlq", depths.dlq)] {
                        let queue_labels = QueueLabels { route: labels.clone(), queue };
                        self.metrics.queue_messages.get_or_create(&queue_labels).set(i64::from(n));
                    }
                }
                Err(e) => debug!(error = %e, subscription = %route.name(), "Cannot sample the queues."),
            }
        }
    }
}

/// The ready messages of `route`'s work, retry and dead-letter queues, on `channel` (opened
/// again when a missing queue closed it).
async fn depths(
    conn: &Connection,
    channel: &mut Option<Channel>,
    route: &SubscriptionRoute,
) -> Result<QueueDepths, lapin::Error> {
    let mut count = async |queue: &str| -> Result<u32, lapin::Error> {
        let open = match channel.take() {
            Some(open) if open.status().connected() => channel.insert(open),
            _ => channel.insert(conn.create_channel().await?),
        };
        Ok(count_on(open, queue).await?.unwrap_or(0))
    };
    let mut depths = QueueDepths { work: count(&route.queue).await?, ..QueueDepths::default() };
    for queue in &route.retry_queues {
        depths.retry = depths.retry.saturating_add(count(queue).await?);
    }
    depths.dlq = count(&route.dead_letter_queue).await?;
    Ok(depths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_held_message_sets_the_age_until_it_is_released() {
        let held = Held::default();
        assert_eq!(held.oldest_age("billing", 1_000), 0, "nothing held");
        let newer = held.hold("billing", 990);
        let older = held.hold("billing", 900);
        let twin = held.hold("billing", 900);
        let other = held.hold("audit", 500);
        assert_eq!(held.oldest_age("billing", 1_000), 100);
        assert_eq!(held.oldest_age("audit", 1_000), 500, "per Subscription");
        drop(older);
        assert_eq!(held.oldest_age("billing", 1_000), 100, "a second message with the same time is still held");
        drop(twin);
        assert_eq!(held.oldest_age("billing", 1_000), 10);
        drop(newer);
        drop(other);
        assert_eq!((held.oldest_age("billing", 1_000), held.oldest_age("audit", 1_000)), (0, 0));
        // A clock behind the publisher's never yields a negative age.
        let _future = held.hold("billing", 2_000);
        assert_eq!(held.oldest_age("billing", 1_000), 0);
    }
}
