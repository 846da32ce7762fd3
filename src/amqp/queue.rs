//! The client queue as the original declares it, so that queues made by either server (or by
//! `eventsourced publish`) are accepted by the other: durable, not exclusive, not auto-delete,
//! `x-expires` as a signed 32-bit integer of milliseconds, plus the configured arguments; a
//! quorum queue also gets `x-single-active-consumer` (it ignores `exclusive` consumes).

use amiquip::{AmqpValue, Channel, FieldTable, QueueDeclareOptions};
use std::collections::BTreeMap;

/// A queue argument (`queue.arguments`): what AMQP field tables and YAML scalars have in common.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Argument {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// Makes a quorum queue keep one consumer active at a time. RabbitMQ checks it on every
/// re-declaration (PRECONDITION_FAILED when it differs), so it is always set for quorum queues.
pub const SINGLE_ACTIVE: &str = "x-single-active-consumer";

/// The declaration's arguments: `queue.arguments`, then our `x-expires` (which wins), and for a
/// quorum queue `x-single-active-consumer: true` (which wins too: RabbitMQ 3.10 does not enforce
/// an exclusive consume on quorum queues).
pub fn arguments(configured: &BTreeMap<String, Argument>, expires_ms: i32) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in configured {
        let value = match value {
            Argument::Bool(b) => AmqpValue::Boolean(*b),
            Argument::Int(n) => AmqpValue::LongLongInt(*n),
            Argument::Float(f) => AmqpValue::Double(*f),
            Argument::Text(t) => AmqpValue::LongString(t.clone().into()),
        };
        table.insert(name.clone().into(), value);
    }
    table.insert(
        "x-expires".to_string().into(),
        AmqpValue::LongInt(expires_ms),
    );
    let quorum = matches!(configured.get("x-queue-type"), Some(Argument::Text(t)) if t == "quorum");
    if quorum {
        table.insert(SINGLE_ACTIVE.to_string().into(), AmqpValue::Boolean(true));
    }
    table
}

/// Whether queues declared with `arguments` keep one consumer active and let others wait
/// silently: then a stream must hold the queue's lock (`amqp::holder`) before consuming.
pub fn single_active(arguments: &FieldTable) -> bool {
    matches!(
        arguments.inner().get(SINGLE_ACTIVE),
        Some(AmqpValue::Boolean(true))
    )
}

/// Declares `queue`; returns how many consumers it has.
pub fn declare(channel: &Channel, queue: &str, arguments: &FieldTable) -> amiquip::Result<u32> {
    declare_counting(channel, queue, arguments).map(|declared| declared.consumers)
}

/// What the broker says of a queue it declared.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    pub consumers: u32,
    /// Messages ready in it: a stream that consumes it now will be sent these first.
    pub messages: u32,
}

/// Declares `queue` as `declare` does, and says how many consumers and messages it has.
pub fn declare_counting(
    channel: &Channel,
    queue: &str,
    arguments: &FieldTable,
) -> amiquip::Result<Declared> {
    let options = QueueDeclareOptions {
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: arguments.clone(),
    };
    channel.queue_declare(queue, options).map(|q| Declared {
        consumers: q.declared_consumer_count().unwrap_or(0),
        messages: q.declared_message_count().unwrap_or(0),
    })
}

/// `queue.expires` seconds as the `x-expires` value; the config loader keeps it in range.
pub fn expires_ms(expires_secs: u32) -> i32 {
    i32::try_from(u64::from(expires_secs) * 1000).unwrap_or(i32::MAX)
}

/// How many consumers `queue`, which exists, has now.
pub fn consumers(channel: &Channel, queue: &str) -> amiquip::Result<u32> {
    channel
        .queue_declare_passive(queue)
        .map(|q| q.declared_consumer_count().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(pairs: &[(&str, Argument)]) -> BTreeMap<String, Argument> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn quorum_queues_keep_one_consumer_active() {
        let quorum = arguments(
            &configured(&[("x-queue-type", Argument::Text("quorum".into()))]),
            1000,
        );
        assert!(single_active(&quorum));
        assert_eq!(
            quorum.inner().get(SINGLE_ACTIVE),
            Some(&AmqpValue::Boolean(true))
        );
        assert_eq!(
            quorum.inner().get("x-expires"),
            Some(&AmqpValue::LongInt(1000))
        );
    }

    #[test]
    fn a_configured_false_does_not_undo_it_on_quorum_queues() {
        let quorum = arguments(
            &configured(&[
                ("x-queue-type", Argument::Text("quorum".into())),
                (SINGLE_ACTIVE, Argument::Bool(false)),
            ]),
            1000,
        );
        assert!(single_active(&quorum));
    }

    #[test]
    fn classic_queues_are_declared_as_before() {
        for types in [
            configured(&[]),
            configured(&[("x-queue-type", Argument::Text("classic".into()))]),
        ] {
            let table = arguments(&types, 1000);
            assert!(!single_active(&table));
            assert_eq!(table.inner().get(SINGLE_ACTIVE), None);
        }
    }
}
