//! The original's stress test: 1000 concurrent clients, each on its own queue pre-filled with
//! 42 messages, each receiving all 42. Wall time is printed, never asserted.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;
use support::{unique, Amqp, Server, Stream};

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
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = queues
        .iter()
        .map(|queue| {
            let (addr, queue, start) = (server.addr, queue.clone(), Arc::clone(&start));
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    start.wait();
                    let mut stream = Stream::open(addr, &format!("/?id={queue}"), &[]);
                    assert_eq!(
                        stream.status,
                        200,
                        "{queue}: {:?}",
                        stream.header("X-Status-Reason")
                    );
                    let mut seen = BTreeSet::new();
                    while seen.len() < MESSAGES {
                        let data = stream
                            .next_data()
                            .unwrap_or_else(|| panic!("{queue} ended early"));
                        assert!(data.starts_with(&queue), "{queue} got {data}");
                        seen.insert(data);
                    }
                    seen.len()
                })
                .expect("client thread")
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let received: usize = clients.into_iter().map(|c| c.join().expect("client")).sum();
    let wall = began.elapsed();
    assert_eq!(received, CLIENTS * MESSAGES);
    eprintln!(
        "stress: {CLIENTS} clients x {MESSAGES} messages all delivered in {:.2} s",
        wall.as_secs_f64()
    );
}
