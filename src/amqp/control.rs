//! Takeover across instances, through the broker: every instance listens on one fanout
//! exchange, and a request for a queue that a stream on another instance holds asks, there,
//! for it to be let go. The holder ends its stream as a local takeover would (its held messages
//! go back to the queue), and the request consumes the queue. No gossip of our own: the broker
//! the instances already share carries the word.
//!
//! A message's body is the queue's name; its `app_id` names the instance that asks, which
//! ignores its own word.

use amiquip::{
    AmqpProperties, Channel, Consumer, ConsumerOptions, Delivery, ExchangeDeclareOptions,
    ExchangeType, FieldTable, Publish, QueueDeclareOptions,
};

/// The exchange every instance listens on.
pub const EXCHANGE: &str = "eventsourced.control";
/// The `type` of a request to let go of a queue.
const RELEASE: &str = "release";

fn declare_exchange(channel: &Channel) -> amiquip::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    };
    channel
        .exchange_declare(ExchangeType::Fanout, EXCHANGE, options)
        .map(drop)
}

/// Asks every other instance to let go of `queue`.
pub fn ask_release(channel: &Channel, instance: &str, queue: &str) -> amiquip::Result<()> {
    declare_exchange(channel)?;
    let properties = AmqpProperties::default()
        .with_app_id(instance.to_string())
        .with_type_(RELEASE.to_string());
    channel.basic_publish(
        EXCHANGE,
        Publish::with_properties(queue.as_bytes(), "", properties),
    )
}

/// Listens on `channel`: a private queue (gone with the connection) bound to the exchange.
pub fn listen(channel: &Channel) -> amiquip::Result<Consumer<'_>> {
    declare_exchange(channel)?;
    let options = QueueDeclareOptions {
        durable: false,
        exclusive: true,
        auto_delete: true,
        arguments: FieldTable::default(),
    };
    let queue = channel.queue_declare("", options)?;
    channel.queue_bind(queue.name(), EXCHANGE, "", FieldTable::default())?;
    queue.consume(ConsumerOptions {
        no_ack: true,
        exclusive: true,
        ..ConsumerOptions::default()
    })
}

/// The queue another instance asks this one to let go of; `None` for this instance's own word
/// or anything else.
pub fn release_request(delivery: &Delivery, instance: &str) -> Option<String> {
    let properties = &delivery.properties;
    if properties.type_().as_deref() != Some(RELEASE)
        || properties.app_id().as_deref() == Some(instance)
    {
        return None;
    }
    String::from_utf8(delivery.body.clone()).ok()
}
