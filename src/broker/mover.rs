//! Moving messages between queues without losing any: each message is re-published to the
//! target through the default exchange (mandatory, publisher confirms on) and the original
//! is acknowledged only after the broker confirmed the copy. A crash at any instant leaves
//! the message in the source, the target, or (at worst, once) in both.

use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{FieldTable, ShortString},
};

use super::{Broker, BrokerError};

/// Publishes in flight at once while moving.
const WINDOW: u16 = 256;
/// The prefix of the headers in which the dispatcher keeps a message's delivery bookkeeping
/// (attempts, retry step, attempt times, last status, dead-letter reason).
pub const BOOKKEEPING_PREFIX: &str = "x-sluice-";
/// The headers in which quorum queues count a message's deliveries: `x-delivery-count`
/// (failed deliveries, which the delivery limit counts) and, on RabbitMQ 4, `x-acquired-count`
/// (every delivery, requeues included). A moved message starts a new life in its target queue.
const DELIVERY_COUNT_HEADERS: [&str; 2] = ["x-delivery-count", "x-acquired-count"];

/// Why a copy of a message is not safely in its target queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publish to {queue}: {source}")]
    Send {
        queue: String,
        #[source]
        source: lapin::Error,
    },
    #[error("queue {0} does not exist (the message was returned)")]
    Returned(String),
    #[error("queue {0} refused the message (is it full?)")]
    Refused(String),
    #[error("publisher confirms are off on this channel")]
    Unconfirmed,
}

/// Publishes a copy to `queue` through the default exchange, mandatory, and waits for the
/// broker's confirm (`channel` must be in confirm mode).
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let send = |source| PublishError::Send { queue: queue.to_owned(), source };
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel.basic_publish("".into(), queue.into(), options, body, properties).await.map_err(send)?;
    confirmed(&confirm.await.map_err(send)?, queue)
}

/// Whether a confirmation means the copy is stored in `queue`.
fn confirmed(confirmation: &Confirmation, queue: &str) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Returned(queue.to_owned())),
        Confirmation::Nack(_) => Err(PublishError::Refused(queue.to_owned())),
        Confirmation::NotRequested => Err(PublishError::Unconfirmed),
    }
}

/// What happens to a message's headers on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Headers {
    /// Keep Sluice's bookkeeping (a retry step being removed: the message keeps its attempt
    /// count); only the broker's delivery count starts over.
    Keep,
    /// Start over (a dead-letter redrive): drop Sluice's delivery bookkeeping
    /// ([`BOOKKEEPING_PREFIX`]) as well, so the message gets a full retry ladder again.
    FreshStart,
}

/// Moves the messages present in `from` when the move starts to queue `to`; returns how many
/// were moved. Messages arriving in `from` meanwhile are left for the next move.
pub async fn move_messages(broker: &Broker, from: &str, to: &str, headers: Headers) -> Result<u64, BrokerError> {
    let fail = |reason: String| BrokerError::Move { from: from.to_owned(), to: to.to_owned(), reason };
    let channel = broker.channel().await?;
    let result = move_on(&channel, from, to, headers).await.map_err(fail);
    let _ = channel.close(200, "moved".into()).await;
    result
}

/// Messages ready in `queue` right now, from the queue itself (the management API's counts
/// are statistics, seconds old). `None` when the queue does not exist.
pub async fn ready_count(broker: &Broker, queue: &str) -> Result<Option<u32>, BrokerError> {
    let channel = broker.channel().await?;
    let count = count_on(&channel, queue)
        .await
        .map_err(|e| BrokerError::Amqp { endpoint: broker.config.endpoint(), reason: e.to_string() })?;
    let _ = channel.close(200, "counted".into()).await;
    Ok(count)
}

/// Messages ready in `queue` (a passive declare on `channel`); `None` when the queue does not
/// exist, which also closes `channel`.
pub async fn count_on(channel: &Channel, queue: &str) -> Result<Option<u32>, lapin::Error> {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    match channel.queue_declare(queue.into(), passive, FieldTable::default()).await {
        Ok(q) => Ok(Some(q.message_count())),
        // A missing queue closes the channel with 404: an answer, not a failure.
        Err(e) if matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 404) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn move_on(channel: &Channel, from: &str, to: &str, headers: Headers) -> Result<u64, String> {
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let present = channel
        .queue_declare(from.into(), passive, FieldTable::default())
        .await
        .map_err(|e| format!("queue {from} is not there: {e}"))?
        .message_count();
    if present == 0 {
        return Ok(0);
    }
    let prefetch = u16::try_from(present).unwrap_or(WINDOW).min(WINDOW);
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| e.to_string())?;
    let mut consumer = channel
        .basic_consume(from.into(), "sluice-mover".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| e.to_string())?;

    let (mut taken, mut moved) = (0u32, 0u64);
    let mut confirms = FuturesUnordered::new();
    let mut failure = None;
    while failure.is_none() && (taken < present || !confirms.is_empty()) {
        tokio::select! {
            delivery = consumer.next(), if taken < present && confirms.len() < usize::from(WINDOW) => {
                let Some(delivery) = delivery else { failure = Some("the consumer was cancelled".to_owned()); break };
                let delivery = delivery.map_err(|e| e.to_string())?;
                taken += 1;
                let properties = rewrite(delivery.properties.clone(), headers);
                let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
                let confirm = channel
                    .basic_publish("".into(), to.into(), options, &delivery.data, properties)
                    .await
                    .map_err(|e| e.to_string())?;
                let acker = delivery.acker;
                confirms.push(async move { (confirm.await, acker) });
            }
            Some((confirmation, acker)) = confirms.next() => {
                match settle(confirmation, &acker, to).await {
                    Ok(()) => moved += 1,
                    Err(e) => failure = Some(e),
                }
            }
        }
    }
    // Whatever is still unconfirmed goes back to the source when the channel closes.
    let _ = channel.basic_cancel("sluice-mover".into(), BasicCancelOptions::default()).await;
    match failure {
        Some(reason) => Err(format!("{reason} (moved {moved} before that)")),
        None => Ok(moved),
    }
}

/// Acks the original if the copy is safely in `to`; otherwise returns it to the source.
async fn settle(confirmation: lapin::Result<Confirmation>, acker: &Acker, to: &str) -> Result<(), String> {
    let outcome = match confirmation {
        Ok(confirmation) => confirmed(&confirmation, to).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(()) => acker.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => {
            let _ = acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
            Err(e)
        }
    }
}

fn rewrite(properties: BasicProperties, headers: Headers) -> BasicProperties {
    let Some(table) = properties.headers().clone() else { return properties };
    let mut kept = FieldTable::default();
    for (key, value) in table.inner() {
        let drop = DELIVERY_COUNT_HEADERS.contains(&key.as_str())
            || (headers == Headers::FreshStart && key.as_str().starts_with(BOOKKEEPING_PREFIX));
        if !drop {
            kept.insert(ShortString::from(key.as_str()), value.clone());
        }
    }
    properties.with_headers(kept)
}

#[cfg(test)]
mod tests {
    use lapin::types::AMQPValue;

    use super::*;

    fn headers_of(p: &BasicProperties) -> Vec<String> {
        p.headers().as_ref().map(|t| t.inner().keys().map(|k| k.as_str().to_owned()).collect()).unwrap_or_default()
    }

    #[test]
    fn a_redrive_starts_over_and_a_step_move_keeps_the_count() {
        let mut table = FieldTable::default();
        table.insert("x-sluice-attempt".into(), AMQPValue::LongUInt(4));
        table.insert("x-delivery-count".into(), AMQPValue::LongUInt(2));
        table.insert("x-acquired-count".into(), AMQPValue::LongUInt(3));
        table.insert("event-version".into(), AMQPValue::LongString("v2".into()));
        let p = BasicProperties::default().with_headers(table);
        assert_eq!(headers_of(&rewrite(p.clone(), Headers::FreshStart)), ["event-version"]);
        assert_eq!(headers_of(&rewrite(p, Headers::Keep)), ["event-version", "x-sluice-attempt"]);
    }
}
