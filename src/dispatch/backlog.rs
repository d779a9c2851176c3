//! What waits: the messages ready in each Subscription's work, retry and dead-letter queues
//! (sampled from the broker), and the age of the oldest message this dispatcher holds.
//!
//! Quorum queues do not report the timestamp of their head message, and reading the head
//! (basic.get + requeue) would count as a delivery against the queue's delivery limit. So the
//! age is measured on what the dispatcher holds unacknowledged: the messages it is delivering,
//! waiting on an open circuit, or retrying in place (Ordered). Those are the ones that get old
//! when an endpoint misbehaves; while delivery is paused nothing is held and the backlog shows
//! in `sluice_queue_messages` instead.

use std::{sync::Arc, time::Duration};

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
    pub routes: &'a [Arc<Route>],
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
            let age = route.held.oldest_age((self.now)());
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
