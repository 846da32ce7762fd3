//! A flood of connections that send nothing: beyond the number whose request heads the server
//! awaits, every new connection is still answered. In a file of its own: its 8,192 sockets would
//! crowd the tests beside it.

mod support;

use std::net::TcpStream;
use support::{request, wait_for, Server, Stream};

/// Beyond the connections whose request heads are awaited (8,192 with the default pool), a new
/// connection is still answered, never closed without a word: an EventSource is told to come
/// back (so is a client whose request had not arrived), anything else gets 503 with
/// `Retry-After`.
#[test]
fn connections_beyond_the_waiting_ones_are_answered() {
    // The idle connections must outlive the probes: a longer head deadline, nothing else.
    let server = Server::start(&[("EVENTSOURCED_SERVER_REQUEST_TIMEOUT", "60")]);
    let idle: Vec<TcpStream> = (0..8192)
        .map_while(|_| TcpStream::connect(server.addr).ok())
        .collect();
    assert_eq!(
        idle.len(),
        8192,
        "the test could not open its idle connections"
    );
    // The server has taken them all in when the next one is answered at once.
    let mut answered = None;
    wait_for(
        "the waiting connections to be counted",
        support::WAIT,
        || {
            let stream = Stream::try_open(server.addr, "/?id=late", &[]);
            match stream {
                Some(s)
                    if s.header("X-Status-Reason")
                        == Some("server: too many connections waiting") =>
                {
                    answered = Some(s);
                    true
                }
                _ => false,
            }
        },
    );
    let mut browser = answered.expect("an answer");
    assert_eq!(browser.status, 200);
    let frame = browser.next_frame().expect("a retry frame");
    assert!(frame.starts_with("retry: "), "{frame}");
    let plain = request(server.addr, "GET", "/?id=late", &[]);
    assert_eq!(
        plain.header("X-Status-Reason"),
        Some("server: too many connections waiting")
    );
    match plain.status {
        503 => assert_eq!(plain.header("Retry-After"), Some("1")),
        // Its request was not read yet: told to come back, as an EventSource is.
        status => assert_eq!(status, 200, "{plain:?}"),
    }
    drop(idle);
}
