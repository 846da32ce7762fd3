//! Keep-alive comments: an idle stream gets them, and through them the server finds a client
//! that left without a word, which frees its queue.

mod support;

use support::{unique, Server, Stream};

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
