//! Event ids: what a browser sends back as `Last-Event-ID` after a reconnect, so the server can
//! skip what the browser already has. The same message must get the same id when the broker
//! delivers it again, so the id is the publisher's `message_id`, or else derived from the
//! message itself.

use amiquip::AmqpProperties;

/// An event id: the publisher's, borrowed from the message, or one derived from the message,
/// held in place (a stream formats thousands of them a second; none needs an allocation).
#[derive(Debug, Clone, Copy)]
pub enum EventId<'a> {
    Given(&'a str),
    /// `h` and the 16 hex digits of a hash.
    Derived([u8; 17]),
}

impl EventId<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            EventId::Given(id) => id,
            // Only ASCII is ever written into it.
            EventId::Derived(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
        }
    }
}

/// The id of a message with `body` and `properties`.
pub fn of<'a>(body: &[u8], properties: &'a AmqpProperties) -> EventId<'a> {
    if let Some(id) = properties.message_id() {
        let id = id.as_str();
        // An id that could not be sent as one SSE field line is derived instead.
        if !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control) {
            return EventId::Given(id);
        }
    }
    let mut hash = Fnv64::new();
    hash.write(body);
    if let Some(timestamp) = properties.timestamp() {
        hash.write(&timestamp.to_be_bytes());
    }
    for field in [
        properties.correlation_id(),
        properties.kind(),
        properties.app_id(),
    ] {
        match field {
            Some(text) => {
                hash.write(&[1]);
                hash.write(text.as_str().as_bytes());
            }
            None => hash.write(&[0]),
        }
    }
    derived(hash.finish())
}

fn derived(hash: u64) -> EventId<'static> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [b'h'; 17];
    for (i, digit) in id[1..].iter_mut().enumerate() {
        *digit = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    EventId::Derived(id)
}

/// FNV-1a, 64 bits: stable across builds and versions, unlike std's hasher.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publishers_message_id_is_used() {
        let props = AmqpProperties::default().with_message_id("order-7".to_string().into());
        assert_eq!(of(b"x", &props).as_str(), "order-7");
    }

    #[test]
    fn derived_ids_are_stable_and_tell_messages_apart() {
        let plain = AmqpProperties::default();
        let id = |body: &[u8], props| of(body, props).as_str().to_owned();
        assert_eq!(id(b"hello", &plain), id(b"hello", &plain));
        assert_eq!(id(b"hello", &plain), "h91ee78c61a8a3059");
        assert_ne!(id(b"hello", &plain), id(b"hellp", &plain));
        let stamped = AmqpProperties::default().with_timestamp(1);
        assert_ne!(id(b"hello", &plain), id(b"hello", &stamped));
    }

    #[test]
    fn unusable_message_ids_are_replaced() {
        let props = AmqpProperties::default().with_message_id("a\nid: b".to_string().into());
        assert!(of(b"x", &props).as_str().starts_with('h'));
        let props = AmqpProperties::default().with_message_id(String::new().into());
        assert!(of(b"x", &props).as_str().starts_with('h'));
    }
}
