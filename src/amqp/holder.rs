//! Who holds a queue, when the broker does not say: a queue with a single active consumer (every
//! quorum queue here) accepts a second consume and leaves it waiting, silent, while its
//! declaration still counts one consumer (measured on RabbitMQ 3.10). So before consuming such a
//! queue, a stream takes its lock: an exclusive, auto-delete classic queue named after it. The
//! broker lets one connection declare it (another gets RESOURCE_LOCKED, 405), atomically across a
//! cluster; consumed on the stream's channel, it is deleted when that channel closes, and with
//! the connection or its node.

use amiquip::{Channel, Consumer, ConsumerOptions, FieldTable, QueueDeclareOptions};
use sha2::{Digest, Sha256};

/// What every lock's name begins with.
pub const PREFIX: &str = "eventsourced.holder.";

/// The lock of `queue`: a fixed length whatever the queue's name (up to 255 bytes) is.
pub fn name(queue: &str) -> String {
    let digest = Sha256::digest(queue.as_bytes());
    let mut name = String::with_capacity(PREFIX.len() + 64);
    name.push_str(PREFIX);
    for byte in digest {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// Whether `error` says another connection holds the lock.
pub fn is_held(error: &amiquip::Error) -> bool {
    matches!(error, amiquip::Error::ServerClosedChannel { code: 405, .. })
}

/// Takes the lock of `queue` for this channel's connection; fails with RESOURCE_LOCKED (see
/// `is_held`, the channel is then closed) when another connection holds it.
pub fn take(channel: &Channel, queue: &str) -> amiquip::Result<()> {
    let options = QueueDeclareOptions {
        durable: false,
        exclusive: true,
        auto_delete: true,
        arguments: FieldTable::default(),
    };
    channel.queue_declare(name(queue), options).map(drop)
}

/// Ties the lock taken with `take` to `channel`: it goes when the channel closes.
pub fn keep<'a>(channel: &'a Channel, queue: &str) -> amiquip::Result<Consumer<'a>> {
    channel.basic_consume(
        name(queue),
        ConsumerOptions {
            no_ack: true,
            exclusive: true,
            ..ConsumerOptions::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_fixed_and_distinct() {
        let long = "q".repeat(255);
        assert_eq!(name(&long).len(), PREFIX.len() + 64);
        assert_eq!(name("a"), name("a"));
        assert_ne!(name("a"), name("b"));
        assert!(name("a").starts_with(PREFIX));
    }
}
