//! Clients that go away in the middle of a stream, the same over HTTP and HTTPS: the reader
//! given says which. Each checks with numbered messages that nothing was lost.

use super::numbered::{assert_none_missing, has_all, numbered};
use super::{unique, Amqp, Reader, Server, WAIT};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A client leaves (FIN, or RST with `reset`) after ten of twenty messages; twenty more are
/// published; reconnecting with its last id, it gets every one.
pub fn client_leaves(server: &Server, mut reader: Reader, fault: &str, reset: bool) {
    let amqp = Amqp::connect();
    let queue = unique(&fault.replace(' ', "-"));
    amqp.declare(&queue);
    let published = numbered(1, 40);
    amqp.publish_all(&queue, &published[..20]);
    let mut stream = reader.connect(server.addr, &queue).expect("a stream");
    reader.drain(&mut stream, WAIT, |got| got.len() >= 10);
    if reset {
        stream.reset();
    } else {
        stream.close();
    }
    amqp.publish_all(&queue, &published[20..]);
    server.wait_log("client gone");
    reader.read_all(|| server.addr, &queue, &published);
    assert_none_missing(&format!("fault: {fault}"), &published, &reader.received);
}

/// A client with a small receive buffer stops reading (the server's write times out: start it
/// with a short `write_timeout`), then vanishes; its next connection gets all 400 messages.
pub fn client_stops_reading_then_vanishes(server: &Server, mut reader: Reader, fault: &str) {
    let amqp = Amqp::connect();
    let queue = unique("stall");
    amqp.declare(&queue);
    let published = numbered(1, 400);
    let filler = "x".repeat(1000);
    for m in &published {
        amqp.publish(&queue, &format!("{m} {filler}"));
    }
    // A small receive buffer, so the stall reaches the server quickly.
    let connect = || {
        let socket = TcpStream::connect(server.addr)?;
        super::set_receive_buffer(&socket, 4096);
        Ok(socket)
    };
    let mut stream = reader
        .connect_with(server.addr, &queue, connect)
        .expect("a stream");
    reader.drain(&mut stream, WAIT, |got| got.len() >= 5);
    // Stops reading; the server's write times out and the stream ends.
    server.wait_log("client gone");
    drop(stream);
    // Bodies are "m{n} xxx…": the number names the message.
    let numbers = |got: &[String]| -> Vec<String> {
        got.iter()
            .map(|m| m.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    let end = Instant::now() + super::reader::READ_ALL_DEADLINE;
    while !has_all(&numbers(&reader.received), &published) && Instant::now() < end {
        if let Some(mut stream) = reader.connect(server.addr, &queue) {
            reader.drain(&mut stream, Duration::from_secs(10), |got| {
                has_all(&numbers(got), &published)
            });
        }
    }
    assert_none_missing(
        &format!("fault: {fault}"),
        &published,
        &numbers(&reader.received),
    );
}
