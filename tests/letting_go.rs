//! A client that closes an idle stream (FIN, as a closed tab; RST, as a crashed client) lets go
//! of its queue at once: the consumer is cancelled and the messages it held go back to the
//! queue, for the client's reconnect wherever it lands. Nothing is written to notice it.

mod support;

use std::time::{Duration, Instant};
use support::{unique, wait_for, Amqp, Server, Stream};

/// Reads 5 messages on an idle stream, leaves as `leave` says, and returns how long the queue
/// took to have no consumer and its 5 messages back.
fn time_to_let_go(server: &Server, leave: impl FnOnce(Stream)) -> Duration {
    let amqp = Amqp::connect();
    let queue = unique("let-go");
    amqp.declare(&queue);
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
    for n in 1..=5 {
        amqp.publish(&queue, &format!("m{n}"));
    }
    for n in 1..=5 {
        assert_eq!(stream.next_data(), Some(format!("m{n}")));
    }
    // Held unacked: only the client's next connection can say it read them.
    assert_eq!(amqp.consumers(&queue), 1);
    assert_eq!(amqp.ready(&queue), 0);
    let left = Instant::now();
    leave(stream);
    // Well before the first keep-alive (15 s by default) would show that the client left.
    wait_for("the queue to be let go of", Duration::from_secs(5), || {
        amqp.consumers(&queue) == 0 && amqp.ready(&queue) == 5
    });
    left.elapsed()
}

#[test]
fn a_closed_idle_stream_lets_go_of_its_queue_at_once() {
    // The default keep-alive: an idle stream writes nothing for 15 s.
    let server = Server::start(&[("EVENTSOURCED_SERVER_KEEPALIVE", "15")]).ready();
    let fin = time_to_let_go(&server, Stream::close);
    let rst = time_to_let_go(&server, Stream::reset);
    eprintln!("let go after the client's FIN in {fin:?}, after its RST in {rst:?}");
}

#[test]
fn a_closed_stream_without_keepalives_lets_go_too() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_KEEPALIVE", "0")]).ready();
    time_to_let_go(&server, Stream::close);
    time_to_let_go(&server, Stream::reset);
}
