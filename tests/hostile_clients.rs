//! Hostile and overloaded: slow requests, oversized and broken heads, a full pool, a panic.
//! Each gets an answer a client can act on, and the server goes on serving.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{request, unique, wait_for, Server, Stream};

fn raw(server: &Server, bytes: &[u8]) -> String {
    let mut socket = TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(support::WAIT)).unwrap();
    socket.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

#[test]
fn slow_requests_hold_no_worker_and_get_408() {
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_WORKERS", "2"),
        ("EVENTSOURCED_SERVER_REQUEST_TIMEOUT", "1"),
    ])
    .ready();
    // Fifty clients that never finish their request (slowloris).
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET /?id=slow HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // Two workers are enough for real clients meanwhile.
    let stream = Stream::open(server.addr, &format!("/?id={}", unique("fast")), &[]);
    assert_eq!(stream.status, 200);
    let vars = request(server.addr, "GET", "/debug/vars", &[]);
    assert_eq!(vars.status, 200);
    for socket in &mut slow {
        socket.set_read_timeout(Some(support::WAIT)).unwrap();
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
        assert!(
            answer.contains("X-Status-Reason: request not received in time"),
            "{answer:?}"
        );
    }
}

#[test]
fn oversized_and_broken_heads_get_4xx_with_a_reason() {
    let server = Server::start(&[]);
    let big = format!(
        "GET /?id=x HTTP/1.1\r\nCookie: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw(&server, big.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:.80}");
    assert!(answer.contains("X-Status-Reason: request head too large"));
    for (bytes, reason) in [
        (&b"HELLO\r\n\r\n"[..], "malformed request line"),
        (
            b"GET /?id=\xff HTTP/1.1\r\n\r\n",
            "request head is not UTF-8",
        ),
        (
            b"GET /?id=x HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            "control character in a header",
        ),
        (b"GET /?id=x HTTP/2.0\r\n\r\n", "unsupported HTTP version"),
    ] {
        let answer = raw(&server, bytes);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
        assert!(
            answer.contains(&format!("X-Status-Reason: {reason}\r\n")),
            "{answer:?}"
        );
    }
    // And the server still serves.
    assert_eq!(request(server.addr, "OPTIONS", "/", &[]).status, 204);
}

#[test]
fn a_full_pool_answers_503_with_retry_after_at_once() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_WORKERS", "2")]).ready();
    let _a = Stream::open(server.addr, &format!("/?id={}", unique("full-a")), &[]);
    let _b = Stream::open(server.addr, &format!("/?id={}", unique("full-b")), &[]);
    let began = Instant::now();
    let third = server.get(&format!("/?id={}", unique("full-c")), &[]);
    assert!(began.elapsed() < Duration::from_secs(1));
    assert_eq!(third.status, 503);
    assert_eq!(
        third.header("X-Status-Reason"),
        Some("server: too many streams")
    );
    assert_eq!(third.header("Retry-After"), Some("1"));
    drop(_a);
    drop(_b);
}

#[test]
fn a_panic_ends_one_request_and_the_pool_stays_whole() {
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_WORKERS", "2"),
        ("EVENTSOURCED_TEST_PANIC_QUEUE", "boom"),
    ])
    .ready();
    for _ in 0..3 {
        let mut socket = TcpStream::connect(server.addr).unwrap();
        socket.set_read_timeout(Some(support::WAIT)).unwrap();
        socket.write_all(b"GET /?id=boom HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    }
    server.wait_log_count("ended by an internal error", 3);
    // Both workers are free again (the only busy one is answering this question)...
    wait_for("the workers to be free", support::WAIT, || {
        let metrics = String::from_utf8(request(server.addr, "GET", "/metrics", &[]).body)
            .unwrap_or_default();
        metrics.contains("eventsourced_workers{state=\"busy\"} 1\n")
    });
    // ...and both still serve streams.
    let a = Stream::open(server.addr, &format!("/?id={}", unique("after-a")), &[]);
    let b = Stream::open(server.addr, &format!("/?id={}", unique("after-b")), &[]);
    assert_eq!((a.status, b.status), (200, 200));
}
