//! Keep-alive comments: an idle stream gets them, and through them the server finds a client
//! that left without a word, which frees its queue.

mod support;

use std::time::{Duration, Instant};
use support::{process_cpu, unique, Server, Stream};

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

#[test]
fn a_quiet_stream_sleeps_once_its_messages_are_older_than_the_replay_age() {
    // Its window keeps the newest delivery whatever its age, to mark where the client is. A
    // stream that waited for that one to age out woke at once, again and again: a core at
    // 100 % for every stream quiet for longer than `queue.replay_age`.
    let server = Server::start(&[("EVENTSOURCED_QUEUE_REPLAY_AGE", "1")]).ready();
    let queue = unique("quiet");
    let amqp = support::Amqp::connect();
    amqp.declare(&queue);
    amqp.publish_all(&queue, &["one".to_string(), "two".to_string()]);
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    for expected in ["one", "two"] {
        let event = stream.next_event().expect("an event");
        assert_eq!(event.data.as_deref(), Some(expected));
    }
    // The first is acked once it is older than the replay age; the second stays held.
    let acked = || {
        let metrics = server.get("/metrics", &[]);
        String::from_utf8_lossy(&metrics.body)
            .lines()
            .find_map(|l| {
                l.strip_prefix("eventsourced_acks_total ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked() < 1 {
        assert!(
            Instant::now() < deadline,
            "the older message was never acked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (cpu, began) = (process_cpu(server.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let busy = (process_cpu(server.pid()) - cpu) / began.elapsed().as_secs_f64();
    assert!(
        busy < 0.5,
        "the server spent {:.0} % of a core on one quiet stream",
        busy * 100.0
    );
    drop(stream);
}
