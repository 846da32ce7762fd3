//! The queue a stream consumes, as the server declares it: accepted when the original server
//! declared it first, with the configured arguments, and bound to the configured exchanges (one
//! fanout publish reaches every client; a topic key per user reaches only that user).

mod support;

use amiquip::{AmqpValue, ExchangeType, FieldTable, QueueDeclareOptions};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use support::{numbered, unique, wait_for, Amqp, Server, Stream};

/// Declares `queue` as the original server does, written out here rather than taken from the
/// library (which `Amqp::declare` uses), so that the test below compares two declarations.
fn declare_as_the_original(queue: &str) {
    let mut connection = support::amqp_connection();
    let channel = connection.open_channel(None).expect("a channel");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-expires".to_string().into(),
        AmqpValue::LongInt(1_800_000),
    );
    let options = QueueDeclareOptions {
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments,
    };
    channel
        .queue_declare(queue, options)
        .expect("declare the queue as the original does");
}

#[test]
fn a_queue_declared_by_the_original_is_accepted() {
    // The original declares x-expires as a signed 32-bit integer; a different type would make
    // the broker refuse our declaration (PRECONDITION_FAILED).
    let server = Server::start(&[("EVENTSOURCED_QUEUE_EXPIRES", "1800")]).ready();
    let queue = unique("compat");
    declare_as_the_original(&queue);
    let stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
}

#[test]
fn queue_arguments_reach_the_declaration() {
    let server = Server::start(&[
        ("EVENTSOURCED_QUEUE_ARGUMENTS", "{x-max-length: 2}"),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
    ])
    .ready();
    let queue = unique("capped");
    // The first connection declares the queue with its cap.
    drop(Stream::open(server.addr, &format!("/?id={queue}"), &[]));
    wait_for("the first stream to end", Duration::from_secs(10), || {
        server.log_text().contains("closed for")
    });
    let amqp = Amqp::connect();
    amqp.publish_all(&queue, &numbered(1, 5));
    wait_for("the cap to apply", Duration::from_secs(10), || {
        amqp.ready(&queue) == 2
    });
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.next_data().as_deref(), Some("m4"));
    assert_eq!(stream.next_data().as_deref(), Some("m5"));
}

#[test]
fn one_publish_to_a_fanout_exchange_reaches_a_hundred_clients() {
    let exchange = unique("fan");
    let amqp = Amqp::connect();
    amqp.exchange(&exchange, ExchangeType::Fanout);
    let bind = format!("[{{exchange: {exchange}}}]");
    let server = Server::start(&[
        ("EVENTSOURCED_QUEUE_BIND", &bind),
        ("EVENTSOURCED_SERVER_WORKERS", "200"),
    ])
    .ready();
    let prefix = unique("fanout");
    let opened = Arc::new(Barrier::new(101));
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let (addr, target, opened) = (
                server.addr,
                format!("/?id={prefix}-{i}"),
                Arc::clone(&opened),
            );
            thread::spawn(move || {
                let mut stream = Stream::open(addr, &target, &[]);
                assert_eq!(stream.status, 200);
                opened.wait();
                stream.next_data()
            })
        })
        .collect();
    opened.wait();
    amqp.publish_to(&exchange, "", "to everyone");
    for client in clients {
        assert_eq!(client.join().unwrap().as_deref(), Some("to everyone"));
    }
}

#[test]
fn a_topic_routes_by_a_per_user_key() {
    let bind = "[{exchange: amq.topic, routing_key: 'user.${query:id}'}]";
    let server = Server::start(&[("EVENTSOURCED_QUEUE_BIND", bind)]).ready();
    let amqp = Amqp::connect();
    let (ann, bob) = (unique("ann"), unique("bob"));
    let mut ann_stream = Stream::open(server.addr, &format!("/?id={ann}"), &[]);
    let mut bob_stream = Stream::open(server.addr, &format!("/?id={bob}"), &[]);
    assert_eq!((ann_stream.status, bob_stream.status), (200, 200));
    amqp.publish_to("amq.topic", &format!("user.{ann}"), "for ann");
    amqp.publish_to("amq.topic", &format!("user.{bob}"), "for bob");
    assert_eq!(ann_stream.next_data().as_deref(), Some("for ann"));
    // Bob's first message is his own: ann's never reached his queue.
    assert_eq!(bob_stream.next_data().as_deref(), Some("for bob"));
}
