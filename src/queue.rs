//! The client queue as the original declares it, so that queues made by either server (or by
//! `eventsourced publish`) are accepted by the other: durable, not exclusive, not auto-delete,
//! `x-expires` as a signed 32-bit integer of milliseconds.

use amiquip::{AmqpValue, Channel, FieldTable, QueueDeclareOptions};

pub fn declare(channel: &Channel, queue: &str, expires_ms: i32) -> amiquip::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".to_string(), AmqpValue::LongInt(expires_ms));
    let options = QueueDeclareOptions {
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments,
    };
    channel.queue_declare(queue, options).map(drop)
}

/// `queue.expires` seconds as the `x-expires` value; the config loader keeps it in range.
pub fn expires_ms(expires_secs: u32) -> i32 {
    i32::try_from(u64::from(expires_secs) * 1000).unwrap_or(i32::MAX)
}
