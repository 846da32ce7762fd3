//! Takeover across instances, through the broker: every instance listens on one fanout
//! exchange, and a request for a queue that a stream on another instance holds asks, there,
//! for it to be let go. The holder ends its stream as a local takeover would (its held messages
//! go back to the queue), and the request consumes the queue. No gossip of our own: the broker
//! the instances already share carries the word.
//!
//! With `queue.conflict: share` the request asks instead to follow the stream (`follow`): the
//! holder relays what it writes to a private queue of the asking instance (`stream::relay`), and
//! the asking instance's client reads it (`stream::remote`).
//!
//! A message's body is the queue's name; its `app_id` names the instance that asks, which
//! ignores its own word. A `follow` names its private queue in `reply_to` and the client's last
//! event, if any, in the header `last-event-id`; it carries the broker user it was published
//! as in `user_id`, which RabbitMQ checks against the publishing connection's. An instance
//! relays only for its own broker user: another user who may write to the exchange (a
//! publisher's) must not be able to have any queue's stream relayed to a queue of its own.

use amiquip::{
    AmqpProperties, AmqpValue, Channel, Consumer, ConsumerOptions, Delivery,
    ExchangeDeclareOptions, ExchangeType, FieldTable, Publish, QueueDeclareOptions,
};

/// The exchange every instance listens on.
pub const EXCHANGE: &str = "eventsourced.control";
/// The `type` of a request to let go of a queue.
const RELEASE: &str = "release";
/// The `type` of a request to relay a queue's stream.
const FOLLOW: &str = "follow";
/// The header of a `follow` that names the client's last event.
const LAST_EVENT_ID: &str = "last-event-id";

/// What another instance asks of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// To let go of the queue.
    Release(String),
    /// To relay the queue's stream to a private queue of the asking instance.
    Follow(FollowRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowRequest {
    pub queue: String,
    /// The asking instance's private queue.
    pub reply_to: String,
    pub last_event_id: Option<String>,
}

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
        .with_app_id(instance.to_string().into())
        .with_type(RELEASE.to_string().into());
    channel.basic_publish(
        EXCHANGE,
        Publish::with_properties(queue.as_bytes(), "", properties),
    )
}

/// Asks the instance whose stream holds `queue` to relay it to `reply_to`, resuming after
/// `last_event_id`.
pub fn ask_follow(
    channel: &Channel,
    instance: &str,
    user: Option<&str>,
    queue: &str,
    reply_to: &str,
    last_event_id: Option<&str>,
) -> amiquip::Result<()> {
    declare_exchange(channel)?;
    let mut headers = FieldTable::default();
    if let Some(last) = last_event_id {
        headers.insert(
            LAST_EVENT_ID.to_string().into(),
            AmqpValue::LongString(last.to_string().into()),
        );
    }
    let mut properties = AmqpProperties::default()
        .with_app_id(instance.to_string().into())
        .with_type(FOLLOW.to_string().into())
        .with_reply_to(reply_to.to_string().into())
        .with_headers(headers);
    // A user name over a short string's 255 bytes is not sent: the holder then ignores the
    // request (it checks the user), and the reader falls back as when nobody answers.
    if let Some(user) = user.and_then(|user| amiquip::ShortString::try_new(user).ok()) {
        properties = properties.with_user_id(user);
    }
    channel.basic_publish(
        EXCHANGE,
        Publish::with_properties(queue.as_bytes(), "", properties),
    )
}

/// Listens on `channel`: a private queue (gone with the connection) bound to the exchange.
pub fn listen(channel: &Channel) -> amiquip::Result<Consumer<'_>> {
    declare_exchange(channel)?;
    let (name, consumer) = private_queue(channel)?;
    channel.queue_bind(name, EXCHANGE, "", FieldTable::default())?;
    Ok(consumer)
}

/// A queue of this connection's own (server-named, gone with it), consumed on `channel`
/// without acks: where another instance's word reaches this one. Its name, and the consumer.
pub fn private_queue(channel: &Channel) -> amiquip::Result<(String, Consumer<'_>)> {
    let options = QueueDeclareOptions {
        durable: false,
        exclusive: true,
        auto_delete: true,
        arguments: FieldTable::default(),
    };
    let queue = channel.queue_declare("", options)?;
    let name = queue.name().to_string();
    let consumer = queue.consume(ConsumerOptions {
        no_ack: true,
        exclusive: true,
        ..ConsumerOptions::default()
    })?;
    Ok((name, consumer))
}

/// What another instance asks of this one; `None` for this instance's own word, a `follow`
/// published as another broker user than `user` (when known), or anything else.
pub fn request(delivery: &Delivery, instance: &str, user: Option<&str>) -> Option<Request> {
    let properties = &delivery.properties;
    if properties.app_id().as_ref().map(|s| s.as_str()) == Some(instance) {
        return None;
    }
    let queue = String::from_utf8(delivery.body.clone()).ok()?;
    match properties.kind().as_ref().map(|s| s.as_str())? {
        RELEASE => Some(Request::Release(queue)),
        FOLLOW => {
            if user.is_some() && properties.user_id().as_ref().map(|s| s.as_str()) != user {
                log::warn!(
                    "a request to relay a stream, published as another broker user, is ignored"
                );
                return None;
            }
            let reply_to = properties
                .reply_to()
                .clone()
                .filter(|r| !r.as_str().is_empty())?;
            let last_event_id = match properties.headers().as_ref()?.inner().get(LAST_EVENT_ID) {
                Some(AmqpValue::LongString(last)) => {
                    Some(String::from_utf8_lossy(last.as_bytes()).into_owned())
                }
                _ => None,
            };
            Some(Request::Follow(FollowRequest {
                queue,
                reply_to: reply_to.to_string(),
                last_event_id,
            }))
        }
        _ => None,
    }
}
