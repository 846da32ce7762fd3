//! The client queue as the original declares it, so that queues made by either server (or by
//! `eventsourced publish`) are accepted by the other: durable, not exclusive, not auto-delete,
//! `x-expires` as a signed 32-bit integer of milliseconds, plus the configured arguments.

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

/// The declaration's arguments: `queue.arguments`, then our `x-expires` (which wins).
pub fn arguments(configured: &BTreeMap<String, Argument>, expires_ms: i32) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in configured {
        let value = match value {
            Argument::Bool(b) => AmqpValue::Boolean(*b),
            Argument::Int(n) => AmqpValue::LongLongInt(*n),
            Argument::Float(f) => AmqpValue::Double(*f),
            Argument::Text(t) => AmqpValue::LongString(t.clone()),
        };
        table.insert(name.clone(), value);
    }
    table.insert("x-expires".to_string(), AmqpValue::LongInt(expires_ms));
    table
}

/// Declares `queue`; returns how many consumers it has.
pub fn declare(channel: &Channel, queue: &str, arguments: &FieldTable) -> amiquip::Result<u32> {
    let options = QueueDeclareOptions {
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: arguments.clone(),
    };
    channel
        .queue_declare(queue, options)
        .map(|q| q.declared_consumer_count().unwrap_or(0))
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
