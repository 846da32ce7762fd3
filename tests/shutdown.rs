//! Stopping the server: SIGTERM and SIGINT end it within two seconds and lose nothing (what a
//! client did not get is back in its queue); with `server.drain`, SIGTERM first refuses new
//! streams while the open ones go on.

mod support;

use std::time::{Duration, Instant};
use support::{assert_none_missing, numbered, request, unique, Amqp, Server, Stream};

#[test]
fn sigterm_exits_within_two_seconds_and_loses_nothing() {
    let mut server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("term");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 30));
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let mut received = vec![stream.next_data().expect("a first message")];
    let (status, took) = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The stream ends cleanly; whatever the client did not get is back in the queue.
    while let Some(data) = stream.next_data() {
        received.push(data);
    }
    received.extend(amqp.drain(&queue));
    assert_none_missing("SIGTERM", &numbered(1, 30), &received);
}

#[test]
fn sigint_also_stops_the_server() {
    let mut server = Server::start(&[]).ready();
    let _stream = Stream::open(server.addr, &format!("/?id={}", unique("int")), &[]);
    let (status, took) = server.stop_with(libc::SIGINT);
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_drain_refuses_new_streams_and_keeps_the_open_ones_going() {
    let mut server = Server::start(&[("EVENTSOURCED_SERVER_DRAIN", "2")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("drain");
    amqp.declare(&queue);
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let began = Instant::now();
    server.signal(libc::SIGTERM);
    server.wait_log("draining for 2 s");
    assert_eq!(request(server.addr, "GET", "/readyz", &[]).status, 503);
    let refused = server.get(&format!("/?id={}", unique("late")), &[]);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("X-Status-Reason"), Some("server: draining"));
    assert_eq!(refused.header("Retry-After"), Some("1"));
    amqp.publish(&queue, "during the drain");
    assert_eq!(stream.next_data().as_deref(), Some("during the drain"));
    let (status, _) = server.stop_with(0);
    assert!(status.success(), "{status:?}");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(stream.closed_by_server(Duration::from_secs(5)));
}
