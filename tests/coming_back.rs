//! A refusal for a reason that passes must not end a browser's stream for good: EventSource
//! gives up on any status but 200, so a client that accepts `text/event-stream` is answered
//! with a short event stream that sets `retry:` and says why, then ends; it comes back by
//! itself. Clients that don't accept an event stream, permanent refusals, `conflict: reject`
//! and `retry_refusals: false` keep the original's status answer.

mod support;

use support::{request, unique, Amqp, Server, Stream};

const EVENT_STREAM: (&str, &str) = ("Accept", "text/event-stream");

/// Asserts that `stream` is a come-back-later answer for `reason`, and returns its retry in ms.
fn told_to_come_back(stream: &mut Stream, reason: &str) -> u32 {
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        stream.headers
    );
    assert_eq!(stream.header("X-Status-Reason"), Some(reason));
    assert!(stream.closed_by_server(support::WAIT), "the answer ends");
    let body = String::from_utf8_lossy(&stream.body).to_string();
    assert!(body.contains(&format!(": {reason}\n\n")), "{body:?}");
    assert!(!body.contains("data:") && !body.contains("id:"), "{body:?}");
    let retry = body
        .lines()
        .find_map(|l| l.strip_prefix("retry: "))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no retry field in {body:?}"));
    assert!((800..=1200).contains(&retry), "{retry}");
    retry
}

#[test]
fn a_full_pool_tells_an_event_stream_client_to_come_back() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_WORKERS", "1")]).ready();
    let amqp = Amqp::connect();
    let (busy, queue) = (unique("busy"), unique("waiting"));
    amqp.declare(&queue);
    let holder = Stream::open(server.addr, &format!("/?id={busy}"), &[]);
    assert_eq!(holder.status, 200);
    let mut refused = Stream::open(server.addr, &format!("/?id={queue}"), &[EVENT_STREAM]);
    told_to_come_back(&mut refused, "server: too many streams");
    // A client that does not take an event stream gets the original's answer.
    let plain = request(server.addr, "GET", &format!("/?id={queue}"), &[]);
    assert_eq!(plain.status, 503);
    assert_eq!(plain.header("Retry-After"), Some("1"));
    // Once a worker is free, the client that came back is served.
    holder.close();
    amqp.publish(&queue, "after the wait");
    let mut served = None;
    support::wait_for("a worker to be free", support::WAIT, || {
        let stream = Stream::open(server.addr, &format!("/?id={queue}"), &[EVENT_STREAM]);
        let ok = stream.header("X-Status-Reason").is_none();
        served = ok.then_some(stream);
        ok
    });
    let mut stream = served.expect("a stream");
    assert_eq!(stream.next_data().as_deref(), Some("after the wait"));
}

#[test]
fn a_broker_that_is_away_tells_event_stream_clients_to_come_back() {
    let server = Server::start_with_broker(&support::absent_broker_url(), &[]);
    let mut refused = Stream::open(server.addr, "/?id=any", &[EVENT_STREAM]);
    told_to_come_back(&mut refused, "broker: no connection available");
    let plain = request(server.addr, "GET", "/?id=any", &[]);
    assert_eq!(plain.status, 503);
    assert_eq!(
        plain.header("X-Status-Reason"),
        Some("broker: no connection available")
    );
}

#[test]
fn retry_refusals_off_gives_the_originals_503_to_everyone() {
    let server = Server::start_with_broker(
        &support::absent_broker_url(),
        &[("EVENTSOURCED_SERVER_RETRY_REFUSALS", "false")],
    );
    let refused = Stream::open(server.addr, "/?id=any", &[EVENT_STREAM]);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("Retry-After"), Some("1"));
}

#[test]
fn permanent_refusals_and_reject_keep_the_original_answer() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_CONFLICT", "reject")]).ready();
    // A request that names no queue will never be served: the browser may as well stop.
    let missing = Stream::open(server.addr, "/?other=1", &[EVENT_STREAM]);
    assert_eq!(missing.status, 503);
    assert_eq!(
        missing.header("X-Status-Reason"),
        Some("request parameter(s) missing")
    );
    // `conflict: reject` is the original's rule, answered as the original does.
    let amqp = Amqp::connect();
    let queue = unique("reject");
    amqp.declare(&queue);
    let holder = Stream::open(server.addr, &format!("/?id={queue}"), &[EVENT_STREAM]);
    assert_eq!(holder.status, 200);
    let second = Stream::open(server.addr, &format!("/?id={queue}"), &[EVENT_STREAM]);
    assert_eq!(second.status, 503);
    assert_eq!(
        second.header("X-Status-Reason"),
        Some("server: max consumers exceeded")
    );
    drop(holder);
}
