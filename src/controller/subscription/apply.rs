//! The apply step of the Subscription controller: make the broker hold the desired topology,
//! changing a live queue without losing a message. Limits are policies (changed in place);
//! a retry step that is removed, or whose delay changed, is drained back into the work queue
//! before it is deleted (and re-created with its new delay).

use std::{collections::HashMap, time::Duration};

use futures::{StreamExt, TryStreamExt, stream};

use crate::{
    api::subscription::{MAX_RETRY_STEPS, MessageCounts},
    broker::{
        Broker, BrokerError, SyncReport,
        management::QueueInfo,
        mover::{Headers, move_messages, ready_count},
        sync::{queue_conflict, remove_policy, sync_bindings, sync_policy, sync_shared_policies},
    },
    topology::{
        Queue, names,
        subscription::{Policy, SubscriptionTopology, retry_step, same_arguments},
    },
};

/// Drain attempts before a queue that is not empty yet is left for the next reconcile.
const DRAIN_ATTEMPTS: usize = 5;
/// Above every other policy, so a closing queue really takes nothing new.
const CLOSING_POLICY_PRIORITY: i64 = 1000;
/// Queue lookups of one reconcile in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 8;

/// What applying changed, and what the queues hold.
#[derive(Debug, Default)]
pub struct Applied {
    pub report: SyncReport,
    /// Messages moved back to the work queue from retry queues that were removed or replaced.
    pub moved: Vec<(String, u64)>,
    pub counts: MessageCounts,
}

/// Which retry queues beyond the desired ones may exist on the broker and must be drained.
#[derive(Debug, Clone)]
pub enum Leftovers {
    /// The retry queues recorded in status by the last successful apply (steady state).
    Recorded(Vec<String>),
    /// Every possible step name, for when the last apply did not finish on this spec.
    AnyStep,
}

pub async fn apply(
    broker: &Broker,
    namespace: &str,
    name: &str,
    t: &SubscriptionTopology,
    leftovers: &Leftovers,
) -> Result<Applied, BrokerError> {
    let client = &broker.management;
    let mut applied = Applied::default();
    let work = t.work_queue.name.as_str();
    // Queues are looked up by name, never listed: a listing costs the broker time in
    // proportion to all its queues, which made 1,000 Subscriptions quadratic.
    let existing = lookup(broker, candidates(namespace, name, t, leftovers)).await?;

    // Policies before queues: a queue must never run without its limits.
    applied.report.extend(sync_shared_policies(broker).await?);
    for policy in &t.policies {
        sync_policy(client, policy, &mut applied.report).await?;
    }
    for name in &t.unused_policies {
        remove_policy(client, name, &mut applied.report).await?;
    }

    // The dead-letter queue before the work queue that dead-letters into it.
    for queue in [&t.dead_letter_queue, &t.work_queue] {
        match existing.get(&queue.name) {
            None => create(broker, queue, &mut applied.report).await?,
            Some(have) => {
                if let Some(detail) = queue_conflict(queue, have) {
                    return Err(BrokerError::Conflict { object: format!("queue {}", queue.name), detail });
                }
            }
        }
    }

    for queue in &t.retry_queues {
        match existing.get(&queue.name) {
            None => create(broker, queue, &mut applied.report).await?,
            Some(have) if !have.durable || !same_arguments(&queue.arguments, &have.arguments) => {
                // A step whose delay changed: its waiting messages go back to the work queue now.
                let moved = drain_and_delete(broker, &queue.name, work).await?;
                applied.moved.push((queue.name.clone(), moved));
                client.put_queue(&queue.name, &queue.arguments).await?;
                applied.report.updated.push(format!("queue {}", queue.name));
            }
            Some(_) => {}
        }
    }
    let steps = t.retry_queues.len();
    let mut removed_steps: Vec<&String> =
        existing.keys().filter(|q| retry_step(namespace, name, q).is_some_and(|step| step > steps)).collect();
    removed_steps.sort();
    for queue in removed_steps {
        let moved = drain_and_delete(broker, queue, work).await?;
        applied.moved.push((queue.clone(), moved));
        applied.report.removed.push(format!("queue {queue}"));
    }

    if let Some(first) = t.bindings.first() {
        sync_bindings(client, &first.source, work, &t.bindings, &mut applied.report).await?;
    }

    applied.counts = counts(&existing, t);
    Ok(applied)
}

/// The queue names this Subscription may have on the broker.
fn candidates(namespace: &str, name: &str, t: &SubscriptionTopology, leftovers: &Leftovers) -> Vec<String> {
    let mut names: Vec<String> =
        [&t.dead_letter_queue, &t.work_queue].into_iter().chain(&t.retry_queues).map(|q| q.name.clone()).collect();
    let extra = match leftovers {
        Leftovers::Recorded(queues) => queues.clone(),
        Leftovers::AnyStep => (1..=MAX_RETRY_STEPS).map(|step| names::retry_queue(namespace, name, step)).collect(),
    };
    for queue in extra {
        if !names.contains(&queue) {
            names.push(queue);
        }
    }
    names
}

/// The queues of `names` that exist, by name.
async fn lookup(broker: &Broker, names: Vec<String>) -> Result<HashMap<String, QueueInfo>, BrokerError> {
    let client = &broker.management;
    stream::iter(names)
        .map(|queue| async move { client.get_queue(&queue).await.map(|found| found.map(|q| (queue, q))) })
        .buffer_unordered(LOOKUPS_IN_FLIGHT)
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await
}

async fn create(broker: &Broker, queue: &Queue, report: &mut SyncReport) -> Result<(), BrokerError> {
    broker.management.put_queue(&queue.name, &queue.arguments).await?;
    report.created.push(format!("queue {}", queue.name));
    Ok(())
}

/// Moves everything in `queue` back to the work queue and deletes it, losing nothing:
/// quorum queues cannot be deleted "if empty", so the queue is first closed to new messages
/// (a policy with max-length 0 and reject-publish, so a late publisher gets a nack rather
/// than a silent loss), then drained, then deleted.
async fn drain_and_delete(broker: &Broker, queue: &str, work: &str) -> Result<u64, BrokerError> {
    let client = &broker.management;
    let closing = closing_policy(queue);
    client.put_policy(&closing.name, &closing.pattern, closing.priority, &closing.definition).await?;
    wait_for_policy(broker, queue, &closing.name).await?;
    let mut moved = 0;
    for _ in 0..DRAIN_ATTEMPTS {
        moved += move_messages(broker, queue, work, Headers::Keep).await?;
        // The mover closed its channel, so nothing is held unacknowledged: ready is all.
        if ready_count(broker, queue).await?.is_none_or(|ready| ready == 0) {
            client.delete_queue(queue).await?;
            client.delete_policy(&closing.name).await?;
            return Ok(moved);
        }
    }
    Err(BrokerError::Move {
        from: queue.to_owned(),
        to: work.to_owned(),
        reason: format!("the queue was not empty after {DRAIN_ATTEMPTS} drains; will try again"),
    })
}

/// A policy that lets nothing new into `queue`.
fn closing_policy(queue: &str) -> Policy {
    let mut definition = serde_json::Map::new();
    definition.insert("max-length".into(), 0.into());
    definition.insert("overflow".into(), "reject-publish".into());
    Policy {
        name: format!("sluice.closing:{queue}"),
        pattern: format!("^{}$", queue.replace('.', r"\.")),
        priority: CLOSING_POLICY_PRIORITY,
        definition,
    }
}

/// Waits until the broker reports `policy` as the one in effect on `queue`.
async fn wait_for_policy(broker: &Broker, queue: &str, policy: &str) -> Result<(), BrokerError> {
    // A policy reaches its queues after the broker re-evaluates every queue against every
    // policy: seconds on a broker with thousands of queues.
    for _ in 0..300 {
        if broker.management.get_queue(queue).await?.is_none_or(|q| q.policy.as_deref() == Some(policy)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BrokerError::Move {
        from: queue.to_owned(),
        to: "(closing)".into(),
        reason: format!("policy {policy} did not take effect within 30s"),
    })
}

/// Message counts from the lookup taken before any change (queues created now are empty).
fn counts(existing: &HashMap<String, QueueInfo>, t: &SubscriptionTopology) -> MessageCounts {
    let held = |name: &str| {
        existing.get(name).map_or((0, 0), |q| (q.messages_ready.unwrap_or(0), q.messages_unacknowledged.unwrap_or(0)))
    };
    let (ready, unacknowledged) = held(&t.work_queue.name);
    let retrying = t.retry_queues.iter().map(|q| held(&q.name)).map(|(r, u)| r + u).sum();
    let (dlq_ready, dlq_unacked) = held(&t.dead_letter_queue.name);
    MessageCounts { ready, unacknowledged, retrying, dead_lettered: dlq_ready + dlq_unacked }
}

/// The counts after moving messages between the queues: ready messages read from the queues
/// themselves (exact, where the statistics lag by seconds); unacknowledged ones as `before`.
pub async fn recount(
    broker: &Broker,
    t: &SubscriptionTopology,
    before: &MessageCounts,
) -> Result<MessageCounts, BrokerError> {
    let mut retrying = 0;
    for queue in &t.retry_queues {
        retrying += ready(broker, &queue.name).await?;
    }
    Ok(MessageCounts {
        ready: ready(broker, &t.work_queue.name).await?,
        unacknowledged: before.unacknowledged,
        retrying,
        dead_lettered: ready(broker, &t.dead_letter_queue.name).await?,
    })
}

async fn ready(broker: &Broker, queue: &str) -> Result<i64, BrokerError> {
    Ok(i64::from(ready_count(broker, queue).await?.unwrap_or(0)))
}

/// Deletes every queue and policy of the subscription (deletionPolicy Delete). Deletes are
/// idempotent, so every name it could have is deleted without looking first.
pub async fn delete_all(broker: &Broker, namespace: &str, name: &str) -> Result<(), BrokerError> {
    let client = &broker.management;
    let work = names::work_queue(namespace, name);
    let queues = [work.clone(), names::dead_letter_queue(namespace, name)]
        .into_iter()
        .chain((1..=MAX_RETRY_STEPS).map(|step| names::retry_queue(namespace, name, step)));
    stream::iter(queues)
        .map(|queue| async move { client.delete_queue(&queue).await })
        .buffer_unordered(LOOKUPS_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let mut ignored = SyncReport::default();
    for policy in [work.clone(), names::dead_letter_queue(namespace, name)] {
        remove_policy(client, &policy, &mut ignored).await?;
    }
    Ok(())
}
