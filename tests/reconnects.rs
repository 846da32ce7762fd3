//! A client that reconnects loses nothing and, when it says what it has, gets nothing twice:
//! `Last-Event-ID` (header or query), the replay window of unacked deliveries, a new request
//! taking the queue over from the old connection, and a move to another instance of the server.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{has_all, numbered, unique, wait_for, Amqp, Event, Server, Stream};

fn data(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.data.clone().unwrap_or_default())
        .collect()
}

#[test]
fn a_client_that_closes_mid_stream_loses_nothing() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("close");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 5));
    let mut first = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let mut seen = BTreeSet::new();
    for _ in 1..=5 {
        seen.insert(first.next_data().expect("messages 1 to 5"));
    }
    assert_eq!(seen, BTreeSet::from_iter(numbered(1, 5)));
    first.close();
    // Published after the client left: the server writes into a dead connection.
    amqp.publish_all(&queue, &numbered(6, 10));
    server.wait_log("client gone");
    let mut second = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(second.status, 200);
    let mut later = Vec::new();
    while !has_all(&later, &numbered(6, 10)) {
        later.push(
            second
                .next_data()
                .expect("messages 6 to 10 on the next connection"),
        );
    }
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
    let events = first.next_events(10);
    // The browser processed up to m6 when the network dropped.
    let last = events[5].id.clone().expect("an id");
    first.close();
    let mut second = Stream::open(server.addr, &target, &[("Last-Event-ID", &last)]);
    assert_eq!(data(&second.next_events(4)), ["m7", "m8", "m9", "m10"]);
    amqp.publish_all(&queue, &numbered(11, 11));
    assert_eq!(data(&second.next_events(1)), ["m11"]);
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
    let last = first.next_events(5)[4].id.clone().expect("an id");
    first.close();
    // The polyfill form of Last-Event-ID, as a query parameter.
    let mut second = Stream::open(server.addr, &format!("{target}&lastEventId={last}"), &[]);
    amqp.publish_all(&queue, &numbered(6, 6));
    assert_eq!(data(&second.next_events(1)), ["m6"]);
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
    first.next_events(3);
    first.close();
    let mut second = Stream::open(server.addr, &target, &[]);
    assert_eq!(data(&second.next_events(3)), ["m1", "m2", "m3"]);
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
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    // One message per write: the window acks in whole write batches.
    for m in numbered(1, 10) {
        amqp.publish(&queue, &m);
        assert_eq!(stream.next_data(), Some(m));
    }
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
fn with_takeover_a_new_request_takes_the_queue_over_at_once() {
    // The single reader of earlier versions; `share` (the default) is `several_readers.rs`.
    let server = Server::start(&[("EVENTSOURCED_QUEUE_CONFLICT", "takeover")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("takeover");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let target = format!("/?id={queue}");
    let mut old = Stream::open(server.addr, &target, &[]);
    let events = old.next_events(3);
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
    assert_eq!(data(&new.next_events(1)), ["m4"]);
    server.wait_log("taken over by a new request");
}

#[test]
fn a_client_moving_between_two_instances_continues_without_loss() {
    let keepalive = [("EVENTSOURCED_SERVER_KEEPALIVE", "1")];
    let (a, b) = (
        Server::start(&keepalive).ready(),
        Server::start(&keepalive).ready(),
    );
    let amqp = Amqp::connect();
    let queue = unique("moving");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 10));
    let target = format!("/?id={queue}");
    let mut on_a = Stream::open(a.addr, &target, &[]);
    let mut seen: Vec<String> = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let event = on_a.next_event().expect("an event from a");
        last = event.id;
        seen.extend(event.data);
    }
    // The balancer sends the client to b; its connection to a is gone.
    on_a.close();
    amqp.publish_all(&queue, &numbered(11, 15));
    let last = last.expect("an id");
    let mut on_b = None;
    wait_for(
        "b to take the queue over once a let go",
        Duration::from_secs(15),
        || {
            match Stream::try_open(b.addr, &target, &[("Last-Event-ID", &last)]) {
                Some(s) if s.status == 200 => {
                    on_b = Some(s);
                    true
                }
                Some(s) => {
                    // While a still holds the consumer: 503 with Retry-After.
                    assert_eq!(s.status, 503);
                    assert_eq!(s.header("Retry-After"), Some("1"));
                    false
                }
                None => false,
            }
        },
    );
    let mut on_b = on_b.expect("a stream on b");
    while seen.len() < 15 {
        seen.extend(on_b.next_event().expect("an event from b").data);
    }
    assert_eq!(seen, numbered(1, 15));
}
