//! The original's stress test: 1000 concurrent clients, each on its own queue pre-filled with
//! 42 messages, each receiving all 42. Wall time is printed, never asserted.

mod support;

use std::time::Instant;
use support::{unique, Amqp, Server};

const CLIENTS: usize = 1000;
const MESSAGES: usize = 42;

#[test]
fn a_thousand_clients_each_get_their_42_messages() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_WORKERS", "1100")]).ready();
    let amqp = Amqp::connect();
    let prefix = unique("stress");
    let queues: Vec<String> = (0..CLIENTS).map(|i| format!("{prefix}-{i}")).collect();
    let filling = Instant::now();
    for queue in &queues {
        amqp.declare(queue);
        for n in 0..MESSAGES {
            amqp.publish(queue, &format!("{queue}/{n}"));
        }
    }
    eprintln!(
        "stress: {} messages published in {:.2} s",
        CLIENTS * MESSAGES,
        filling.elapsed().as_secs_f64()
    );
    let (received, wall) = support::read_many(server.addr, &queues, MESSAGES);
    for (queue, seen) in queues.iter().zip(&received) {
        assert_eq!(seen.len(), MESSAGES, "{queue} got {seen:?}");
        assert!(
            seen.iter().all(|m| m.starts_with(&format!("{queue}/"))),
            "{queue} got {seen:?}"
        );
    }
    eprintln!(
        "stress: {CLIENTS} clients x {MESSAGES} messages all delivered in {:.2} s",
        wall.as_secs_f64()
    );
}
