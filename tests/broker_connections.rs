//! The server's connections to the broker: a broker that is down is answered 503 at once and
//! re-dialled (its password never logged), every configured node is connected and streams are
//! spread over the connections, a full connection gets a sibling, a closed one ends its streams,
//! and a silent one is noticed before the heartbeats' verdict.

mod support;

use std::time::Duration;
use support::{closed_port, numbered, unique, wait_for, Amqp, Server, Stream};

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
fn every_configured_node_is_connected() {
    let url = support::broker_url();
    let server = Server::start(&[("EVENTSOURCED_BROKER_NODE", &format!("{url},{url}"))]);
    server.wait_log_count("connected to broker", 2);
    let vars = String::from_utf8(server.get("/debug/vars", &[]).body).unwrap();
    assert!(vars.contains("\"Broker\": 2"), "{vars}");
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
    // The broker's view: consumers of the streams' queues, per connection of this server.
    let ports = support::broker_connection_ports(server.pid());
    assert_eq!(ports.len(), 2);
    let rows = |args: &[&str]| -> Vec<Vec<String>> {
        support::rabbitmqctl(args)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let channels = rows(&["list_channels", "pid", "connection", "--no-table-headers"]);
    let consumers = rows(&[
        "list_consumers",
        "queue_name",
        "channel_pid",
        "--no-table-headers",
    ]);
    let connections = rows(&["list_connections", "pid", "peer_port", "--no-table-headers"]);
    let per_connection: Vec<usize> = connections
        .iter()
        .filter(|c| c.len() == 2 && c[1].parse::<u16>().is_ok_and(|p| ports.contains(&p)))
        .map(|c| {
            consumers
                .iter()
                .filter(|q| q.len() == 2 && q[0].starts_with("test-rr"))
                .filter(|q| {
                    channels
                        .iter()
                        .any(|ch| ch.len() == 2 && ch[0] == q[1] && ch[1] == c[0])
                })
                .count()
        })
        .collect();
    assert_eq!(
        per_connection,
        vec![3, 3],
        "channels: {channels:?}\nconsumers: {consumers:?}\nconnections: {connections:?}"
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
    assert_eq!(
        answer.header("X-Status-Reason"),
        Some("broker: not answering"),
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
