//! The AMQP envelope of an event as the dispatcher reads and writes it: the event id, type and
//! version it carries, and the `x-sluice-*` bookkeeping headers a retried or dead-lettered
//! copy gets (attempts so far, the retry step last used, first and last attempt times, the last
//! status or error, and why it was dead-lettered).

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, ShortString},
};
use sha2::{Digest, Sha256};

use super::outcome::{Attempt, DeadLetterReason};

/// Attempts made so far (a retry carries the count of the attempts before it).
pub const ATTEMPT_HEADER: &str = "x-sluice-attempt";
/// The retry step (1-based) the message last waited in; `Retry-After` may skip steps.
pub const STEP_HEADER: &str = "x-sluice-retry-step";
pub const FIRST_ATTEMPT_HEADER: &str = "x-sluice-first-attempt";
pub const LAST_ATTEMPT_HEADER: &str = "x-sluice-last-attempt";
pub const REASON_HEADER: &str = "x-sluice-reason";
pub const LAST_STATUS_HEADER: &str = "x-sluice-last-status";
pub const LAST_ERROR_HEADER: &str = "x-sluice-last-error";
/// The version of the event's payload, set by the producer (README, "Publishing events").
pub const VERSION_HEADER: &str = "event-version";

/// What the dispatcher needs to know about a message before delivering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The event id (`webhook-id`): the message id, or one derived from the content.
    pub id: String,
    /// The attempt about to be made (1 for the first).
    pub attempt: u32,
    /// The retry step (0-based) the message last waited in, if it was retried.
    pub last_step: Option<usize>,
    /// When the event was published (AMQP `timestamp`), else when it was received; unix seconds.
    pub published: u64,
    /// The event type: the AMQP `type` property, else the routing key.
    pub event_type: String,
    /// The `event-version` header.
    pub version: Option<String>,
    /// The AMQP `content_type`.
    pub content_type: Option<String>,
}

impl Envelope {
    /// Reads the envelope of a message received with `routing_key` at `now` (unix seconds).
    pub fn read(routing_key: &str, properties: &BasicProperties, body: &[u8], now: u64) -> Self {
        let headers = properties.headers().as_ref();
        let number = |name| headers.and_then(|h| header_u32(h, name));
        let version = headers.and_then(|h| text(h.inner().get(VERSION_HEADER)?));
        let event_type = properties.kind().as_ref().map(ShortString::as_str).filter(|t| !t.is_empty());
        // A message the broker dead-lettered carries the routing key it was published with in
        // x-death; its own routing key is then a queue's name.
        let original = headers.and_then(first_routing_key);
        let routing_key = original.as_deref().unwrap_or(routing_key);
        Self {
            id: message_id(routing_key, properties, body),
            attempt: number(ATTEMPT_HEADER).unwrap_or(0).saturating_add(1),
            last_step: number(STEP_HEADER).and_then(|s| usize::try_from(s).ok()?.checked_sub(1)),
            published: properties.timestamp().unwrap_or(now),
            event_type: event_type.unwrap_or(routing_key).to_owned(),
            version: version.filter(|v| !v.is_empty()),
            content_type: properties.content_type().as_ref().map(|c| c.as_str().to_owned()),
        }
    }
}

/// The routing key the message was first published with, from the oldest `x-death` entry
/// (RabbitMQ lists them newest first).
fn first_routing_key(headers: &FieldTable) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else { return None };
    let AMQPValue::FieldTable(oldest) = deaths.as_slice().last()? else { return None };
    let AMQPValue::FieldArray(keys) = oldest.inner().get("routing-keys")? else { return None };
    text(keys.as_slice().first()?)
}

/// A header value holding text, long or short string.
fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The event id: the message id, or one derived from the content (stable across redeliveries)
/// that every retry then carries as its message id.
pub fn message_id(routing_key: &str, properties: &BasicProperties, body: &[u8]) -> String {
    if let Some(id) = properties.message_id().as_ref().filter(|id| !id.as_str().is_empty()) {
        return id.as_str().to_owned();
    }
    let mut hash = Sha256::new();
    hash.update(routing_key.as_bytes());
    hash.update([0]);
    hash.update(properties.timestamp().unwrap_or_default().to_be_bytes());
    hash.update(body);
    let digest = hash.finalize();
    let mut id = String::from("msg_");
    for b in digest.iter().take(12) {
        use std::fmt::Write as _;
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// How a message leaves the dispatcher for a retry step or the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onward<'a> {
    /// To the retry queue of this step (0-based), after the attempt `result`.
    Retry { step: usize, result: &'a Attempt },
    /// To the dead-letter queue, after the attempt `result`.
    DeadLetter { reason: DeadLetterReason, result: &'a Attempt },
    /// To the dead-letter queue before any attempt: the payload could not be rendered.
    Unrenderable { reason: DeadLetterReason, detail: &'a str },
}

/// The properties of the re-published copy: the original ones, the event id as message id,
/// persistent, plus the bookkeeping headers of where it goes and why. `now` is unix seconds.
pub fn onward(properties: &BasicProperties, envelope: &Envelope, next: &Onward<'_>, now: i64) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let first = headers.inner().get(FIRST_ATTEMPT_HEADER).cloned();
    let mut set = |k: &str, v: AMQPValue| {
        headers.insert(ShortString::from(k), v);
    };
    let (result, reason) = match next {
        Onward::Retry { step, result } => {
            set(STEP_HEADER, AMQPValue::LongUInt(u32::try_from(step + 1).unwrap_or(u32::MAX)));
            (Some(*result), None)
        }
        Onward::DeadLetter { reason, result } => (Some(*result), Some(*reason)),
        Onward::Unrenderable { reason, detail } => {
            set(LAST_ERROR_HEADER, AMQPValue::LongString((*detail).into()));
            (None, Some(*reason))
        }
    };
    if let Some(result) = result {
        set(ATTEMPT_HEADER, AMQPValue::LongUInt(envelope.attempt));
        set(FIRST_ATTEMPT_HEADER, first.unwrap_or(AMQPValue::LongLongInt(now)));
        set(LAST_ATTEMPT_HEADER, AMQPValue::LongLongInt(now));
        match result {
            Attempt::Status { code, .. } => set(LAST_STATUS_HEADER, AMQPValue::ShortUInt(*code)),
            Attempt::Timeout => set(LAST_ERROR_HEADER, AMQPValue::LongString("timeout".into())),
            Attempt::Connection => set(LAST_ERROR_HEADER, AMQPValue::LongString("connection failed".into())),
            Attempt::Refused => set(LAST_ERROR_HEADER, AMQPValue::LongString("refused by the egress guard".into())),
        }
    }
    if let Some(reason) = reason {
        set(REASON_HEADER, AMQPValue::LongString(reason.as_str().into()));
    }
    // The copy travels through the default exchange with a queue's name as routing key: the
    // event type goes along as the `type` property, so the next delivery renders it the same.
    properties
        .clone()
        .with_message_id(envelope.id.as_str().into())
        .with_type(envelope.event_type.as_str().into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// A header holding an unsigned number, whichever integer type the producer used.
pub fn header_u32(headers: &FieldTable, name: &str) -> Option<u32> {
    match headers.inner().get(name)? {
        AMQPValue::ShortShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::ShortShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_headers(table)
    }

    fn header<'a>(p: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
        p.headers().as_ref()?.inner().get(name)
    }

    #[test]
    fn a_fresh_message_is_read_as_the_producer_published_it() {
        let p = props(&[(VERSION_HEADER, AMQPValue::LongString("v2".into()))])
            .with_message_id("evt-1".into())
            .with_timestamp(1_700_000_000)
            .with_content_type("application/json".into());
        let e = Envelope::read("order.created", &p, b"{}", 1_800_000_000);
        assert_eq!(
            e,
            Envelope {
                id: "evt-1".into(),
                attempt: 1,
                last_step: None,
                published: 1_700_000_000,
                event_type: "order.created".into(),
                version: Some("v2".into()),
                content_type: Some("application/json".into()),
            }
        );
    }

    #[test]
    fn the_type_property_wins_over_the_routing_key_and_bookkeeping_is_read_back() {
        let p = props(&[
            (ATTEMPT_HEADER, AMQPValue::ShortShortUInt(2)),
            (STEP_HEADER, AMQPValue::LongUInt(4)),
            (VERSION_HEADER, AMQPValue::ShortString("2026-01-01".into())),
        ])
        .with_type("order.shipped".into());
        let e = Envelope::read("orders", &p, b"{}", 99);
        assert_eq!((e.event_type.as_str(), e.attempt, e.last_step), ("order.shipped", 3, Some(3)));
        assert_eq!((e.version.as_deref(), e.published, e.content_type), (Some("2026-01-01"), 99, None));
    }

    #[test]
    fn a_message_the_broker_dead_lettered_keeps_the_routing_key_it_was_published_with() {
        let death = |queue: &str, key: &str| {
            let mut entry = FieldTable::default();
            entry.insert("queue".into(), AMQPValue::LongString(queue.into()));
            entry.insert("routing-keys".into(), AMQPValue::FieldArray(vec![AMQPValue::LongString(key.into())].into()));
            AMQPValue::FieldTable(entry)
        };
        let deaths = AMQPValue::FieldArray(
            vec![
                death("sluice.shop.billing.dlq", "sluice.shop.billing.dlq"),
                death("sluice.shop.billing", "order.created"),
            ]
            .into(),
        );
        let p = props(&[("x-death", deaths)]);
        let e = Envelope::read("sluice.shop.billing.dlq", &p, b"{}", 0);
        assert_eq!(e.event_type, "order.created", "the oldest x-death entry's routing key");
        assert_eq!(e.id, message_id("order.created", &p, b"{}"), "and the id derived from it");
    }

    #[test]
    fn without_a_message_id_the_id_is_derived_from_the_content_and_stable() {
        let p = BasicProperties::default().with_timestamp(5);
        let a = message_id("order.created", &p, b"{\"id\":1}");
        assert_eq!(a, message_id("order.created", &p, b"{\"id\":1}"));
        assert_ne!(a, message_id("order.created", &p, b"{\"id\":2}"));
        assert_ne!(a, message_id("order.paid", &p, b"{\"id\":1}"));
        assert!(a.starts_with("msg_") && a.len() == 28, "{a}");
    }

    #[test]
    fn a_retry_records_the_attempt_the_step_and_the_times() {
        let p = props(&[(FIRST_ATTEMPT_HEADER, AMQPValue::LongLongInt(100))]);
        let e = Envelope::read("order.created", &p, b"{}", 0);
        let result = Attempt::Status { code: 503, retry_after: None };
        let next = onward(&p, &e, &Onward::Retry { step: 2, result: &result }, 200);
        assert_eq!(header(&next, ATTEMPT_HEADER), Some(&AMQPValue::LongUInt(1)));
        assert_eq!(header(&next, STEP_HEADER), Some(&AMQPValue::LongUInt(3)));
        assert_eq!(header(&next, FIRST_ATTEMPT_HEADER), Some(&AMQPValue::LongLongInt(100)), "kept");
        assert_eq!(header(&next, LAST_ATTEMPT_HEADER), Some(&AMQPValue::LongLongInt(200)));
        assert_eq!(header(&next, LAST_STATUS_HEADER), Some(&AMQPValue::ShortUInt(503)));
        assert_eq!(header(&next, REASON_HEADER), None);
        assert_eq!(next.message_id().as_ref().map(ShortString::as_str), Some(e.id.as_str()));
        assert_eq!(next.delivery_mode(), &Some(2));
        // Back from the retry step, through the default exchange: the routing key is a queue's.
        let back = Envelope::read("sluice.shop.billing", &next, b"{}", 0);
        assert_eq!((back.attempt, back.last_step), (2, Some(2)), "read back on the next delivery");
        assert_eq!(
            (back.event_type.as_str(), back.id.as_str()),
            ("order.created", e.id.as_str()),
            "same type, same id"
        );
    }

    #[test]
    fn a_dead_letter_says_why_and_an_unrenderable_one_says_what_to_fix() {
        let p = BasicProperties::default();
        let e = Envelope::read("order.created", &p, b"{}", 0);
        let dead = onward(
            &p,
            &e,
            &Onward::DeadLetter { reason: DeadLetterReason::EgressRefused, result: &Attempt::Refused },
            7,
        );
        assert_eq!(header(&dead, REASON_HEADER), Some(&AMQPValue::LongString("egress-refused".into())));
        assert_eq!(
            header(&dead, LAST_ERROR_HEADER),
            Some(&AMQPValue::LongString("refused by the egress guard".into()))
        );
        let detail =
            r#"order.created v2 does not satisfy its schema at /id: 42 is not of type "string" (keyword type)"#;
        let bad = onward(&p, &e, &Onward::Unrenderable { reason: DeadLetterReason::SchemaInvalid, detail }, 7);
        assert_eq!(header(&bad, REASON_HEADER), Some(&AMQPValue::LongString("schema-invalid".into())));
        assert_eq!(header(&bad, LAST_ERROR_HEADER), Some(&AMQPValue::LongString(detail.into())));
        assert_eq!(header(&bad, ATTEMPT_HEADER), None, "never attempted");
    }

    #[test]
    fn the_bookkeeping_is_what_a_redrive_drops() {
        for name in [
            ATTEMPT_HEADER,
            STEP_HEADER,
            FIRST_ATTEMPT_HEADER,
            LAST_ATTEMPT_HEADER,
            REASON_HEADER,
            LAST_STATUS_HEADER,
            LAST_ERROR_HEADER,
        ] {
            assert!(name.starts_with(crate::broker::mover::BOOKKEEPING_PREFIX), "{name}");
        }
        assert!(
            !VERSION_HEADER.starts_with(crate::broker::mover::BOOKKEEPING_PREFIX),
            "the producer's own header stays"
        );
    }

    #[test]
    fn numbers_are_read_from_any_integer_type() {
        let p =
            props(&[("a", AMQPValue::ShortInt(7)), ("b", AMQPValue::LongLongInt(-1)), ("c", AMQPValue::Boolean(true))]);
        let h = p.headers().clone().unwrap_or_default();
        assert_eq!((header_u32(&h, "a"), header_u32(&h, "b"), header_u32(&h, "c")), (Some(7), None, None));
    }
}
