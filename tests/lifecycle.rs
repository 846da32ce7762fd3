//! A stream's life and the server's: clients that leave, shutdown, broker connections that are
//! down or full. Each test counts numbered messages: what the client saw plus what is still in
//! the queue must cover everything published.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::{assert_none_missing, has_all, numbered, unique, wait_for, Amqp, Server, Stream};

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
fn sigterm_exits_within_two_seconds_and_loses_nothing() {
    let mut server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("term");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 30));
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    let mut received = vec![stream.next_data().expect("a first message")];
    let (status, took) = server.stop_with(libc_sigterm());
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The stream ends cleanly; whatever the client did not get is back in the queue.
    while let Some(data) = stream.next_data() {
        received.push(data);
    }
    received.extend(amqp.drain(&queue));
    assert_none_missing("SIGTERM", &numbered(1, 30), &received);
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn sigint_also_stops_the_server() {
    let mut server = Server::start(&[]).ready();
    let _stream = Stream::open(server.addr, &format!("/?id={}", unique("int")), &[]);
    let (status, took) = server.stop_with(2);
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_broker_that_is_down_gets_503_at_once_and_is_retried_without_its_password() {
    let url = format!("amqp://guest:s3cret-pw@127.0.0.1:{}/", closed_port());
    let server = Server::start_with_broker(&url, &[]);
    let started = std::time::Instant::now();
    let answer = server.get(&format!("/?id={}", unique("down")), &[]);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.header("X-Status-Reason"),
        Some("broker: no connection available")
    );
    assert_eq!(answer.header("Retry-After"), Some("1"));
    server.wait_log("cannot connect to broker");
    server.wait_log_count("re-dialling broker", 2);
    assert!(
        !server.log_text().contains("s3cret-pw"),
        "password in the log:\n{}",
        server.log_text()
    );
}

#[test]
fn a_full_connection_gets_a_sibling_instead_of_refusing() {
    // Two channels per connection: the third stream needs a second connection to the node.
    let url = format!("{}?channel_max=2", support::broker_url());
    let server = Server::start_with_broker(&url, &[]).ready();
    let streams: Vec<Stream> = (0..5)
        .map(|i| {
            Stream::open(
                server.addr,
                &format!("/?id={}", unique(&format!("full{i}"))),
                &[],
            )
        })
        .collect();
    for s in &streams {
        assert_eq!(s.status, 200);
    }
    server.wait_log("opened an extra connection");
    let vars = String::from_utf8(server.get("/debug/vars", &[]).body).unwrap();
    assert!(vars.contains("\"Broker\": 3"), "{vars}");
    assert!(vars.contains("\"Consumer\": 5"), "{vars}");
}

#[test]
fn every_configured_node_is_connected() {
    let url = support::broker_url();
    let server = Server::start(&[("EVENTSOURCED_BROKER_NODE", &format!("{url},{url}"))]);
    server.wait_log_count("connected to broker", 2);
    let vars = String::from_utf8(server.get("/debug/vars", &[]).body).unwrap();
    assert!(vars.contains("\"Broker\": 2"), "{vars}");
}

#[test]
fn a_stream_ends_when_its_broker_connection_is_closed() {
    let server = Server::start(&[]).ready();
    let queue = unique("conn");
    let amqp = Amqp::connect();
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    stream.next_data().expect("a first message");
    // The broker closes every connection of this server (as on a broker restart or a
    // management action); the stream must end so EventSource reconnects.
    support::close_broker_connections_of(server.pid());
    assert!(
        stream.closed_by_server(Duration::from_secs(10)),
        "stream still open"
    );
    wait_for("the server to re-dial", Duration::from_secs(10), || {
        server.log_text().matches("connected to broker").count() >= 2
    });
}

#[test]
fn streams_are_spread_round_robin_over_connections() {
    let url = support::broker_url();
    let server = Server::start(&[("EVENTSOURCED_BROKER_NODE", &format!("{url},{url}"))]);
    server.wait_log_count("connected to broker", 2);
    let streams: Vec<Stream> = (0..6)
        .map(|i| {
            Stream::open(
                server.addr,
                &format!("/?id={}", unique(&format!("rr{i}"))),
                &[],
            )
        })
        .collect();
    assert!(streams.iter().all(|s| s.status == 200));
    // The broker's view: channels with a consumer, per connection of this server.
    let ports = support::broker_connection_ports(server.pid());
    assert_eq!(ports.len(), 2);
    let listing = support::rabbitmqctl(&[
        "list_channels",
        "connection",
        "consumer_count",
        "--no-table-headers",
    ]);
    let connections =
        support::rabbitmqctl(&["list_connections", "pid", "peer_port", "--no-table-headers"]);
    let per_connection: Vec<usize> = connections
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let (pid, port) = (cols.next()?, cols.next()?.parse::<u16>().ok()?);
            ports.contains(&port).then(|| {
                listing
                    .lines()
                    .filter(|c| c.starts_with(pid) && c.trim_end().ends_with('1'))
                    .count()
            })
        })
        .collect();
    assert_eq!(
        per_connection,
        vec![3, 3],
        "channels:\n{listing}\nconnections:\n{connections}"
    );
}

#[test]
fn debug_vars_counts_deliveries_of_the_last_second() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("rate");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 50));
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    for _ in 1..=50 {
        stream.next_data().expect("50 messages");
    }
    let mut most = 0;
    wait_for(
        "Delivery to report the burst",
        Duration::from_secs(5),
        || {
            let vars = String::from_utf8(server.get("/debug/vars", &[]).body).unwrap();
            let n: u64 = vars
                .split("\"Delivery\": ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            most = most.max(n);
            most > 0
        },
    );
    assert!(most <= 50, "{most}");
}

#[test]
fn a_silent_broker_is_answered_503_at_once_and_streams_come_back() {
    let relay = support::Relay::to(support::broker_port());
    let url = format!("amqp://guest:guest@127.0.0.1:{}/", relay.port);
    // Heartbeats of 5 s: the broker is declared dead after about 10 s of silence; the connection
    // counts as stalled after 3 s.
    let server = Server::start_with_broker(&url, &[("EVENTSOURCED_BROKER_HEARTBEAT", "5")]).ready();
    let first = Stream::open(server.addr, &format!("/?id={}", unique("silent-a")), &[]);
    assert_eq!(first.status, 200);
    // A partition between server and broker: the connection stays open, nothing answers.
    relay.freeze(true);
    let addr = server.addr;
    let stuck_target = format!("/?id={}", unique("silent-b"));
    let stuck =
        std::thread::spawn(move || support::request(addr, "GET", &stuck_target, &[]).status);
    // The first request to meet the silence waits inside a call to the broker.
    wait_for(
        "the first request to be waiting on the broker",
        Duration::from_secs(10),
        || {
            let metrics = String::from_utf8(support::request(addr, "GET", "/metrics", &[]).body)
                .unwrap_or_default();
            metrics.contains("eventsourced_broker_calls_pending 1\n")
        },
    );
    // After 3 s without an answer the connection counts as stalled: not ready...
    wait_for(
        "readiness to notice the silence",
        Duration::from_secs(10),
        || support::request(addr, "GET", "/readyz", &[]).status == 503,
    );
    // ...and every later request is refused at once, while that first one is still waiting for
    // the heartbeats' verdict.
    let answer = server.get(&format!("/?id={}", unique("silent-c")), &[]);
    assert!(
        !stuck.is_finished(),
        "the first request should still be waiting"
    );
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("Retry-After"), Some("1"));
    assert!(
        answer
            .header("X-Status-Reason")
            .is_some_and(|r| r.contains("does not answer")),
        "{answer:?}"
    );
    // Heartbeats declare the broker dead: the waiting request gets its 503 too, never a hang.
    assert_eq!(stuck.join().unwrap(), 503);
    relay.freeze(false);
    wait_for(
        "a stream once the broker answers again",
        Duration::from_secs(40),
        || {
            Stream::try_open(server.addr, &format!("/?id={}", unique("silent-d")), &[])
                .is_some_and(|s| s.status == 200)
        },
    );
}
