//! What a frame carries besides the message: an `id:` on every event (the publisher's
//! `message_id` when it has one), `event:` from the AMQP type when that is enabled, and a
//! `retry:` hint, sent once, with jitter.

mod support;

use amiquip::AmqpProperties;
use support::{unique, Amqp, Server, Stream};

#[test]
fn every_event_has_an_id_and_the_publishers_message_id_wins() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("ids");
    amqp.declare(&queue);
    amqp.publish(&queue, "plain");
    amqp.publish_with(
        &queue,
        b"named",
        AmqpProperties::default().with_message_id("order-7".into()),
    );
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let events = stream.next_events(2);
    assert!(
        events[0]
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with('h') && id.len() == 17),
        "{events:?}"
    );
    assert_eq!(events[1].id.as_deref(), Some("order-7"));
}

#[test]
fn the_amqp_type_becomes_the_event_name_when_enabled() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_EVENT_TYPES", "true")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("types");
    amqp.declare(&queue);
    amqp.publish_with(
        &queue,
        b"up",
        AmqpProperties::default().with_type("price".into()),
    );
    amqp.publish_with(
        &queue,
        b"odd",
        AmqpProperties::default().with_type("a\nb".into()),
    );
    amqp.publish(&queue, "plain");
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let events = stream.next_events(3);
    assert_eq!(events[0].event.as_deref(), Some("price"));
    // A newline in a type would end the field early: it is never written raw.
    assert_eq!(events[1].event.as_deref(), Some("ab"));
    assert_eq!(events[2].event, None);
}

#[test]
fn types_stay_out_of_frames_by_default() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("notypes");
    amqp.declare(&queue);
    amqp.publish_with(
        &queue,
        b"up",
        AmqpProperties::default().with_type("price".into()),
    );
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.next_event().expect("an event").event, None);
}

#[test]
fn retry_is_sent_once_with_jitter() {
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_RETRY", "3000"),
        ("EVENTSOURCED_SERVER_RETRY_JITTER", "10"),
    ])
    .ready();
    let mut values = Vec::new();
    for _ in 0..5 {
        let mut stream = Stream::open(server.addr, &format!("/?id={}", unique("retry")), &[]);
        assert_eq!(stream.next_frame().as_deref(), Some(": SSE stream"));
        let frame = stream.next_frame().expect("a retry frame");
        let millis: u32 = frame
            .strip_prefix("retry: ")
            .and_then(|v| v.parse().ok())
            .expect(&frame);
        assert!((2700..=3300).contains(&millis), "{millis}");
        values.push(millis);
    }
    values.dedup();
    assert!(values.len() > 1, "no jitter: {values:?}");
}
