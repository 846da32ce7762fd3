//! One client reading a pre-filled queue of 20,000 messages: every message arrives, in order.
//! The rate is printed (run with `--nocapture`), never asserted.

mod support;

use std::time::Instant;
use support::{unique, Amqp, Server, Stream};

const MESSAGES: usize = 20_000;

#[test]
fn one_client_reads_20000_messages_in_order() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("throughput");
    amqp.declare(&queue);
    let body = "x".repeat(90);
    for n in 0..MESSAGES {
        amqp.publish(&queue, &format!("{n:08} {body}"));
    }
    support::wait_for("all messages to be queued", support::WAIT, || {
        amqp.ready(&queue) as usize == MESSAGES
    });
    let began = Instant::now();
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    for n in 0..MESSAGES {
        let data = stream.next_data().expect("the stream to go on");
        assert_eq!(&data[..8], format!("{n:08}"), "message {n} out of order");
    }
    let seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "throughput: {MESSAGES} messages of 100 bytes through one stream in {seconds:.2} s = {:.0} msg/s",
        MESSAGES as f64 / seconds
    );
}
