//! Nothing lost, no duplicates for clients that say where they are: event ids, the replay
//! window, `Last-Event-ID`, takeover of a queue by a reconnecting client, keep-alives.

mod support;

use amiquip::AmqpProperties;
use std::time::{Duration, Instant};
use support::{numbered, unique, wait_for, Amqp, Event, Server, Stream};

fn read(stream: &mut Stream, count: usize) -> Vec<Event> {
    (0..count)
        .map(|_| stream.next_event().expect("another event"))
        .collect()
}

fn data(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.data.clone().unwrap_or_default())
        .collect()
}

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
    let events = read(&mut stream, 2);
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
fn a_reconnect_with_last_event_id_gets_only_what_it_lacks() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("resume");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 10));
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    let events = read(&mut first, 10);
    // The browser processed up to m6 when the network dropped.
    let last = events[5].id.clone().expect("an id");
    first.close();
    let mut second = Stream::open(server.addr, &target, &[("Last-Event-ID", &last)]);
    assert_eq!(data(&read(&mut second, 4)), ["m7", "m8", "m9", "m10"]);
    amqp.publish_all(&queue, &numbered(11, 11));
    assert_eq!(data(&read(&mut second, 1)), ["m11"]);
}

#[test]
fn a_reconnect_that_has_everything_gets_no_duplicates() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("nodup");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 5));
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    let last = read(&mut first, 5)[4].id.clone().expect("an id");
    first.close();
    // The polyfill form of Last-Event-ID, as a query parameter.
    let mut second = Stream::open(server.addr, &format!("{target}&lastEventId={last}"), &[]);
    amqp.publish_all(&queue, &numbered(6, 6));
    assert_eq!(data(&read(&mut second, 1)), ["m6"]);
}

#[test]
fn a_reconnect_without_an_id_gets_the_window_again() {
    // At-least-once: a client that cannot say what it has gets the unacked tail once more.
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("again");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    read(&mut first, 3);
    first.close();
    let mut second = Stream::open(server.addr, &target, &[]);
    assert_eq!(data(&read(&mut second, 3)), ["m1", "m2", "m3"]);
}

#[test]
fn the_window_keeps_only_the_newest_deliveries_unacked() {
    let server = Server::start(&[
        ("EVENTSOURCED_QUEUE_REPLAY_WINDOW", "2"),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
    ])
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("window");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 10));
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    read(&mut stream, 10);
    let unacked = || {
        let listing = support::rabbitmqctl(&[
            "list_queues",
            "name",
            "messages_unacknowledged",
            "--no-table-headers",
        ]);
        listing
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{queue}\t"))
                    .map(|n| n.trim().to_string())
            })
            .unwrap_or_default()
    };
    wait_for("two unacked deliveries", Duration::from_secs(10), || {
        unacked() == "2"
    });
    stream.close();
    server.wait_log("client gone");
    wait_for(
        "the window back in the queue",
        Duration::from_secs(10),
        || amqp.ready(&queue) == 2,
    );
    assert_eq!(amqp.drain(&queue), ["m9", "m10"]);
}

#[test]
fn a_new_request_takes_the_queue_over_at_once() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("takeover");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let target = format!("/?id={queue}");
    let mut old = Stream::open(server.addr, &target, &[]);
    let events = read(&mut old, 3);
    // The same browser, reconnecting from a new network while the old connection lingers.
    let began = Instant::now();
    let mut new = Stream::open(
        server.addr,
        &target,
        &[("Last-Event-ID", events[2].id.as_deref().unwrap())],
    );
    assert_eq!(new.status, 200);
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "took {:?}",
        began.elapsed()
    );
    assert!(
        old.closed_by_server(Duration::from_secs(5)),
        "the old stream is still open"
    );
    amqp.publish_all(&queue, &numbered(4, 4));
    assert_eq!(data(&read(&mut new, 1)), ["m4"]);
    server.wait_log("taken over by a new request");
}

#[test]
fn an_idle_stream_gets_keepalive_comments() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_KEEPALIVE", "1")]).ready();
    let mut stream = Stream::open(server.addr, &format!("/?id={}", unique("keepalive")), &[]);
    assert_eq!(stream.next_frame().as_deref(), Some(": SSE stream"));
    assert_eq!(stream.next_frame().as_deref(), Some(": keep-alive"));
}

#[test]
fn a_client_that_left_silently_is_found_by_the_keepalive() {
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
        ("EVENTSOURCED_QUEUE_CONFLICT", "reject"),
    ])
    .ready();
    let queue = unique("silent");
    let first = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    first.close();
    server.wait_log("client gone");
    // The queue is free again, even for a server that refuses conflicts.
    let second = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(second.status, 200);
}
