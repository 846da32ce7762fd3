//! What a stream keeps of a delivery until it is written: its tag, whether it came back, its
//! event id and type, and its body. The rest of a delivery (its properties, exchange and routing
//! key: about 400 bytes beside the body) is freed as soon as the delivery arrives. A stream that
//! gathers a resume's redeliveries holds only what it may write, and so does every stream at
//! once when a broker restart hands each its held messages back.

use crate::stream::event_id;
use amiquip::Delivery;

pub struct Message {
    pub tag: u64,
    pub redelivered: bool,
    /// The event id (`event_id::of`), when frames carry ids.
    pub id: Option<String>,
    /// The AMQP `type`, when it becomes `event:`.
    pub kind: Option<String>,
    pub body: Vec<u8>,
}

impl Message {
    // Deliveries arrive boxed (vendor/amiquip/CHANGED.md); taken by value, the box is freed here.
    #[allow(clippy::boxed_local)]
    pub fn of(mut delivery: Box<Delivery>, with_id: bool, with_type: bool) -> Message {
        let id = with_id.then(|| event_id::of(&delivery.body, &delivery.properties));
        let kind = if with_type {
            delivery.properties.type_().as_deref().map(str::to_owned)
        } else {
            None
        };
        Message {
            tag: delivery.delivery_tag(),
            redelivered: delivery.redelivered,
            id,
            kind,
            body: std::mem::take(&mut delivery.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_message_is_a_small_part_of_a_delivery() {
        // Held by the thousands in a resume and across a broker restart: its size is a choice.
        assert!(std::mem::size_of::<Message>() <= 88);
        assert!(std::mem::size_of::<Delivery>() >= 3 * std::mem::size_of::<Message>());
    }
}
