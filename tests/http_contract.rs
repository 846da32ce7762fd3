//! The original's HTTP contract, seen from a client's socket: statuses, headers, refusals,
//! queue-name patterns and the byte-exact SSE body.

mod support;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use support::{request, unique, wait_for, Amqp, Server, Stream};

const CORS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Content-Type, Accept, Cache-Control",
    ),
];

fn assert_cors(headers: impl Fn(&str) -> Option<String>) {
    for (name, value) in CORS {
        assert_eq!(headers(name).as_deref(), Some(value), "header {name}");
    }
}

#[test]
fn smoke_fixture_byte_for_byte() {
    // Event ids off: the original's frames, byte for byte.
    let server = Server::start(&[("EVENTSOURCED_SERVER_EVENT_IDS", "false")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("smoke");
    amqp.declare(&queue);
    for body in [
        "{ do not touch whitespaces }",
        "{ in this fixture }",
        "{ odd message\ndata: !\n :\n! }",
    ] {
        amqp.publish(&queue, body);
    }
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
    for _ in 0..3 {
        stream.next_data().expect("three events");
    }
    assert_eq!(
        String::from_utf8_lossy(&stream.body),
        ": SSE stream\n\ndata: { do not touch whitespaces }\n\ndata: { in this fixture }\n\n\
         data: { odd message\ndata: data: !\ndata:  :\ndata: ! }\n\n"
    );
}

#[test]
fn stream_headers_are_the_sse_and_cors_ones() {
    let server = Server::start(&[]).ready();
    let stream = Stream::open(server.addr, &format!("/?id={}", unique("headers")), &[]);
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.header("Content-Type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(stream.header("Cache-Control"), Some("no-cache"));
    assert_eq!(stream.header("X-Accel-Buffering"), Some("no"));
    // The body runs until the connection closes: no length, no chunking.
    assert_eq!(stream.header("Transfer-Encoding"), None);
    assert_eq!(stream.header("Content-Length"), None);
    assert_eq!(stream.header("Connection"), Some("close"));
    assert!(stream.header("Date").is_some());
    assert_cors(|n| stream.header(n).map(str::to_string));
    assert!(stream.body.starts_with(b": SSE stream\n\n") || stream.body.is_empty());
}

#[test]
fn configured_headers_replace_and_extend_the_defaults() {
    let server = Server::start(&[
        (
            "EVENTSOURCED_HEADER_CORS",
            "{access-control-allow-origin: 'https://app.example'}",
        ),
        ("EVENTSOURCED_HEADER_SSE", "{X-Extra: yes}"),
    ])
    .ready();
    let stream = Stream::open(server.addr, &format!("/?id={}", unique("hdr")), &[]);
    assert_eq!(
        stream.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert_eq!(stream.header("X-Extra"), Some("yes"));
    assert_eq!(stream.header("Cache-Control"), Some("no-cache"));
}

#[test]
fn options_is_204_and_other_methods_405_with_cors() {
    let server = Server::start(&[]);
    let answer = request(server.addr, "OPTIONS", "/?id=x", &[]);
    assert_eq!(answer.status, 204);
    assert_cors(|n| answer.header(n).map(str::to_string));
    for method in ["POST", "PUT", "DELETE", "HEAD", "PATCH"] {
        let answer = request(server.addr, method, "/?id=x", &[]);
        assert_eq!(answer.status, 405, "{method}");
        assert_cors(|n| answer.header(n).map(str::to_string));
    }
}

#[test]
fn second_client_of_a_queue_gets_503_when_conflicts_are_rejected() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_CONFLICT", "reject")]).ready();
    let queue = unique("second");
    let first = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(first.status, 200);
    let second = server.get(&format!("/?id={queue}"), &[]);
    assert_eq!(second.status, 503);
    assert_eq!(
        second.header("X-Status-Reason"),
        Some("server: max consumers exceeded")
    );
    assert_cors(|n| second.header(n).map(str::to_string));
}

#[test]
fn a_queue_consumed_elsewhere_gets_503() {
    let server = Server::start(&[]).ready();
    let queue = unique("elsewhere");
    let amqp = Amqp::connect();
    amqp.declare(&queue);
    // Another process (here: a plain AMQP consumer) holds the queue.
    let mut other = support::amqp_connection();
    let channel = other.open_channel(None).unwrap();
    let _consumer = channel
        .basic_consume(queue.as_str(), amiquip::ConsumerOptions::default())
        .unwrap();
    let answer = server.get(&format!("/?id={queue}"), &[]);
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.header("X-Status-Reason"),
        Some("server: max consumers exceeded")
    );
    assert_eq!(answer.header("Retry-After"), Some("1"));
}

#[test]
fn ten_simultaneous_requests_for_one_queue_get_one_200_when_conflicts_are_rejected() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_CONFLICT", "reject")]).ready();
    let queue = unique("ten");
    let start = Arc::new(Barrier::new(10));
    let streams: Vec<_> = (0..10)
        .map(|_| {
            let (addr, queue, start) = (server.addr, queue.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                Stream::open(addr, &format!("/?id={queue}"), &[])
            })
        })
        .collect();
    let streams: Vec<Stream> = streams.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = streams.iter().filter(|s| s.status == 200).count();
    let refused: Vec<_> = streams.iter().filter(|s| s.status == 503).collect();
    assert_eq!(
        ok,
        1,
        "statuses: {:?}",
        streams.iter().map(|s| s.status).collect::<Vec<_>>()
    );
    assert_eq!(refused.len(), 9);
    for s in refused {
        assert_eq!(
            s.header("X-Status-Reason"),
            Some("server: max consumers exceeded")
        );
    }
}

/// Opens a stream for `target` and returns the queue the broker shows a consumer on.
fn consumes(server: &Server, amqp: &Amqp, target: &str, headers: &[(&str, &str)], queue: &str) {
    amqp.declare(queue);
    let stream = Stream::open(server.addr, target, headers);
    assert_eq!(stream.status, 200, "{target}");
    wait_for(
        "the consumer on the named queue",
        Duration::from_secs(10),
        || amqp.consumers(queue) == 1,
    );
}

#[test]
fn query_cookie_and_literal_text_name_the_queue() {
    let server = Server::start(&[(
        "EVENTSOURCED_QUEUE_PATTERN",
        "queue-${query:id}-${cookie:sid}-name",
    )])
    .ready();
    let amqp = Amqp::connect();
    let id = unique("pat");
    let queue = format!("queue-{id}-s%1-name");
    consumes(
        &server,
        &amqp,
        &format!("/any/path?x=1&id={id}"),
        &[("Cookie", "a=b; sid=s%1")],
        &queue,
    );
}

#[test]
fn query_values_are_percent_decoded() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let id = unique("dec");
    consumes(
        &server,
        &amqp,
        &format!("/?id={id}%2Fx+y"),
        &[],
        &format!("{id}/x y"),
    );
}

#[test]
fn a_header_can_name_the_queue() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_PATTERN", "user.${header:X-User}")]).ready();
    let amqp = Amqp::connect();
    let user = unique("hdr");
    let queue = format!("user.{user}");
    amqp.declare(&queue);
    amqp.publish(&queue, "for you");
    let mut stream = Stream::open(server.addr, "/", &[("X-User", &user)]);
    assert_eq!(stream.next_data().as_deref(), Some("for you"));
}

#[test]
fn refused_names_answer_503_with_the_reason() {
    let server =
        Server::start(&[("EVENTSOURCED_QUEUE_PATTERN", "${query:id}${cookie:sid}")]).ready();
    let cookie = [("Cookie", "sid=c")];
    let long = "a".repeat(256);
    type Case<'a> = (String, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case> = vec![
        ("/?id=x".into(), &[], "request parameter(s) missing"),
        ("/?sid=x".into(), &cookie, "request parameter(s) missing"),
        ("/?id=".into(), &cookie, "request parameter(s) missing"),
        ("/?id=amq.x".into(), &cookie, "invalid queue name"),
        ("/?id=AMQ.x".into(), &cookie, "invalid queue name"),
        (format!("/?id={long}"), &cookie, "invalid queue name"),
        ("/?id=a%00b".into(), &cookie, "invalid queue name"),
        ("/?id=%FF".into(), &cookie, "invalid queue name"),
    ];
    for (target, headers, reason) in cases {
        let answer = server.get(&target, headers);
        assert_eq!(answer.status, 503, "{target}");
        assert_eq!(answer.header("X-Status-Reason"), Some(reason), "{target}");
        assert_cors(|n| answer.header(n).map(str::to_string));
    }
    // 255 bytes is still a name.
    let name = format!("{}c", "b".repeat(254));
    let fits = Stream::open(server.addr, &format!("/?id={}", &name[..254]), &cookie);
    assert_eq!(fits.status, 200);
}

#[test]
fn a_message_published_before_the_client_connects_is_delivered() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("early");
    amqp.declare(&queue);
    amqp.publish(&queue, "waiting for you");
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.next_data().as_deref(), Some("waiting for you"));
    // And one published while connected arrives too.
    amqp.publish(&queue, "live");
    assert_eq!(stream.next_data().as_deref(), Some("live"));
}

#[test]
fn a_deleted_queue_ends_the_stream_without_empty_events() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("deleted");
    amqp.declare(&queue);
    amqp.publish(&queue, "before");
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.next_data().as_deref(), Some("before"));
    amqp.delete(&queue);
    assert!(
        stream.closed_by_server(Duration::from_secs(10)),
        "stream still open after its queue was deleted"
    );
    let body = String::from_utf8_lossy(&stream.body).to_string();
    assert_eq!(body.matches("data:").count(), 1, "{body}");
    server.wait_log("consumer cancelled by the broker");
}
