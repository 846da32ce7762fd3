//! What an operator watches: `/healthz`, `/readyz` (which needs a broker), Prometheus
//! `/metrics`, and the original's `/debug/vars` with its consumer and delivery counts.

mod support;

use std::time::Duration;
use support::{numbered, request, unique, wait_for, Amqp, Server, Stream};

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
    let server = Server::start_with_broker(&support::absent_broker_url(), &[]);
    assert_eq!(request(server.addr, "GET", "/healthz", &[]).status, 200);
    let ready = request(server.addr, "GET", "/readyz", &[]);
    assert_eq!(ready.status, 503);
    assert_eq!(
        String::from_utf8_lossy(&ready.body),
        "broker: no connection available\n"
    );
}

#[test]
fn debug_vars_counts_consumers() {
    let server = Server::start(&[]).ready();
    let vars = |server: &Server| String::from_utf8(server.get("/debug/vars", &[]).body).unwrap();
    let before = vars(&server);
    assert!(before.contains("\"eventsourced\""), "{before}");
    assert!(before.contains("\"Broker\": 1"), "{before}");
    assert!(before.contains("\"Consumer\": 0"), "{before}");
    for key in ["\"Delivery\"", "\"Threads\"", "\"Uptime\""] {
        assert!(before.contains(key), "{before}");
    }
    let stream = Stream::open(server.addr, &format!("/?id={}", unique("vars")), &[]);
    assert_eq!(stream.status, 200);
    assert!(vars(&server).contains("\"Consumer\": 1"));
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
