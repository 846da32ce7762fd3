//! With `queue.conflict: takeover`, a client whose old connection is still held by one instance
//! (a phone that changed networks: that instance sees no FIN) reconnects through another: the
//! new instance asks, through the broker, for the queue to be let go of, and serves the client
//! at once, resuming after its `Last-Event-ID`, with nothing lost and nothing twice. (With
//! `share`, the default, the other instance relays the stream instead: `several_readers.rs`.)

mod support;

use std::time::Instant;
use support::{unique, Amqp, Server, Stream};

#[test]
fn with_takeover_a_reconnect_to_another_instance_is_served_at_once() {
    let takeover = [("EVENTSOURCED_QUEUE_CONFLICT", "takeover")];
    let (a, b) = (
        Server::start(&takeover).ready(),
        Server::start(&takeover).ready(),
    );
    let amqp = Amqp::connect();
    let queue = unique("moved");
    amqp.declare(&queue);
    for n in 1..=3 {
        amqp.publish(&queue, &format!("m{n}"));
    }
    let mut old = Stream::open(a.addr, &format!("/?id={queue}"), &[]);
    let mut last_id = None;
    for n in 1..=3 {
        let event = old.next_event().expect("an event");
        assert_eq!(event.data, Some(format!("m{n}")));
        last_id = event.id;
    }
    let last_id = last_id.expect("events carry ids");
    // The old connection stays open and silent; messages keep coming meanwhile.
    for n in 4..=6 {
        amqp.publish(&queue, &format!("m{n}"));
    }
    let asked = Instant::now();
    let mut moved = Stream::open(
        b.addr,
        &format!("/?id={queue}"),
        &[("Last-Event-ID", last_id.as_str())],
    );
    assert_eq!(moved.status, 200, "{:?}", moved.headers);
    assert_eq!(moved.header("X-Status-Reason"), None);
    let first = moved.next_data();
    let waited = asked.elapsed();
    let mut received = vec![first.expect("a message")];
    while received.len() < 3 {
        received.push(moved.next_data().expect("a message"));
    }
    assert_eq!(received, ["m4", "m5", "m6"]);
    amqp.publish(&queue, "m7");
    assert_eq!(moved.next_data().as_deref(), Some("m7"));
    a.wait_log("taken over");
    assert!(old.closed_by_server(support::WAIT));
    eprintln!("a reconnect moved to another instance waited {waited:?} for its first message");
}

#[test]
fn with_reject_the_other_instance_answers_the_originals_503() {
    let reject = [("EVENTSOURCED_QUEUE_CONFLICT", "reject")];
    let (a, b) = (
        Server::start(&reject).ready(),
        Server::start(&reject).ready(),
    );
    let amqp = Amqp::connect();
    let queue = unique("held");
    amqp.declare(&queue);
    let holder = Stream::open(a.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(holder.status, 200);
    let second = Stream::open(b.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(second.status, 503);
    assert_eq!(
        second.header("X-Status-Reason"),
        Some("server: max consumers exceeded")
    );
    drop(holder);
}
