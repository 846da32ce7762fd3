//! What the original lacked: event names and retry hints, exchange fan-out, queue arguments,
//! signed URLs, Prometheus and health endpoints, a drain, two instances on one broker.

mod support;

use amiquip::{AmqpProperties, ExchangeType};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use support::{numbered, request, unique, wait_for, Amqp, Server, Stream};

#[test]
fn the_amqp_type_becomes_the_event_name_when_enabled() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_EVENT_TYPES", "true")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("types");
    amqp.declare(&queue);
    amqp.publish_with(
        &queue,
        b"up",
        AmqpProperties::default().with_type_("price".into()),
    );
    amqp.publish_with(
        &queue,
        b"odd",
        AmqpProperties::default().with_type_("a\nb".into()),
    );
    amqp.publish(&queue, "plain");
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let events: Vec<_> = (0..3)
        .map(|_| stream.next_event().expect("an event"))
        .collect();
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
        AmqpProperties::default().with_type_("price".into()),
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
fn one_publish_to_a_fanout_exchange_reaches_a_hundred_clients() {
    let exchange = unique("fan");
    let amqp = Amqp::connect();
    amqp.exchange(&exchange, ExchangeType::Fanout);
    let bind = format!("[{{exchange: {exchange}}}]");
    let server = Server::start(&[
        ("EVENTSOURCED_QUEUE_BIND", &bind),
        ("EVENTSOURCED_SERVER_WORKERS", "200"),
    ])
    .ready();
    let prefix = unique("fanout");
    let opened = Arc::new(Barrier::new(101));
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let (addr, target, opened) = (
                server.addr,
                format!("/?id={prefix}-{i}"),
                Arc::clone(&opened),
            );
            thread::spawn(move || {
                let mut stream = Stream::open(addr, &target, &[]);
                assert_eq!(stream.status, 200);
                opened.wait();
                stream.next_data()
            })
        })
        .collect();
    opened.wait();
    amqp.publish_to(&exchange, "", "to everyone");
    for client in clients {
        assert_eq!(client.join().unwrap().as_deref(), Some("to everyone"));
    }
}

#[test]
fn a_topic_routes_by_a_per_user_key() {
    let bind = "[{exchange: amq.topic, routing_key: 'user.${query:id}'}]";
    let server = Server::start(&[("EVENTSOURCED_QUEUE_BIND", bind)]).ready();
    let amqp = Amqp::connect();
    let (ann, bob) = (unique("ann"), unique("bob"));
    let mut ann_stream = Stream::open(server.addr, &format!("/?id={ann}"), &[]);
    let mut bob_stream = Stream::open(server.addr, &format!("/?id={bob}"), &[]);
    assert_eq!((ann_stream.status, bob_stream.status), (200, 200));
    amqp.publish_to("amq.topic", &format!("user.{ann}"), "for ann");
    amqp.publish_to("amq.topic", &format!("user.{bob}"), "for bob");
    assert_eq!(ann_stream.next_data().as_deref(), Some("for ann"));
    // Bob's first message is his own: ann's never reached his queue.
    assert_eq!(bob_stream.next_data().as_deref(), Some("for bob"));
}

#[test]
fn queue_arguments_reach_the_declaration() {
    let server = Server::start(&[
        ("EVENTSOURCED_QUEUE_ARGUMENTS", "{x-max-length: 2}"),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
    ])
    .ready();
    let queue = unique("capped");
    // The first connection declares the queue with its cap.
    drop(Stream::open(server.addr, &format!("/?id={queue}"), &[]));
    wait_for("the first stream to end", Duration::from_secs(10), || {
        server.log_text().contains("closed for")
    });
    let amqp = Amqp::connect();
    amqp.publish_all(&queue, &numbered(1, 5));
    wait_for("the cap to apply", Duration::from_secs(10), || {
        amqp.ready(&queue) == 2
    });
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.next_data().as_deref(), Some("m4"));
    assert_eq!(stream.next_data().as_deref(), Some("m5"));
}

fn mint(queue: &str, ttl: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eventsourced"))
        .args(["token", queue, "--ttl", ttl])
        .env("EVENTSOURCED_AUTH_SECRET", "s3cret")
        .output()
        .expect("run eventsourced token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn signed_urls_are_required_when_a_secret_is_set() {
    let server = Server::start(&[("EVENTSOURCED_AUTH_SECRET", "s3cret")]).ready();
    let queue = unique("signed");
    let signed = mint(&queue, "600");
    let ok = Stream::open(server.addr, &format!("/?id={queue}&{signed}"), &[]);
    assert_eq!(ok.status, 200);
    drop(ok);
    // The same, as cookies.
    let other = unique("signed-cookie");
    let by_cookie = Stream::open(
        server.addr,
        &format!("/?id={other}"),
        &[("Cookie", &mint(&other, "600").replace('&', "; "))],
    );
    assert_eq!(by_cookie.status, 200);
    let refusals = [
        (format!("/?id={queue}"), "auth: token missing"),
        (format!("/?id={queue}x&{signed}"), "auth: token invalid"),
        (
            format!("/?id={queue}&{}", signed.replace("token=", "token=0")),
            "auth: token invalid",
        ),
        (
            format!("/?id={queue}&{}", mint(&queue, "0")),
            "auth: token expired",
        ),
    ];
    for (target, reason) in refusals {
        let answer = server.get(&target, &[]);
        assert_eq!(answer.status, 403, "{target}");
        assert_eq!(answer.header("X-Status-Reason"), Some(reason), "{target}");
    }
}

#[test]
fn health_readiness_and_prometheus_metrics() {
    let server = Server::start(&[]).ready();
    assert_eq!(request(server.addr, "GET", "/healthz", &[]).status, 200);
    assert_eq!(request(server.addr, "GET", "/readyz", &[]).status, 200);
    let _ = server.get("/?id=amq.nope", &[]);
    let _stream = Stream::open(server.addr, &format!("/?id={}", unique("metrics")), &[]);
    let metrics = String::from_utf8(request(server.addr, "GET", "/metrics", &[]).body).unwrap();
    for line in [
        "eventsourced_streams_open 1\n",
        "eventsourced_broker_connections 1\n",
        "eventsourced_refusals_total{reason=\"invalid queue name\"} 1\n",
        "# TYPE eventsourced_deliveries_total counter\n",
        "eventsourced_workers{state=\"limit\"} 1024\n",
    ] {
        assert!(metrics.contains(line), "{line:?} missing in\n{metrics}");
    }
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );
}

#[test]
fn readiness_needs_a_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start_with_broker(&format!("amqp://guest:guest@127.0.0.1:{port}/"), &[]);
    assert_eq!(request(server.addr, "GET", "/healthz", &[]).status, 200);
    let ready = request(server.addr, "GET", "/readyz", &[]);
    assert_eq!(ready.status, 503);
    assert_eq!(
        String::from_utf8_lossy(&ready.body),
        "broker: no connection available\n"
    );
}

#[test]
fn a_drain_refuses_new_streams_and_keeps_the_open_ones_going() {
    let mut server = Server::start(&[("EVENTSOURCED_SERVER_DRAIN", "2")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("drain");
    amqp.declare(&queue);
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let began = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status();
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
