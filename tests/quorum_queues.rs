//! Quorum queues on one broker: RabbitMQ 3.10 accepts a second consume on a quorum queue even
//! when both ask to be exclusive, and with `x-single-active-consumer` the second one waits
//! silently. A request for a quorum queue that another instance streams is therefore decided by
//! the queue's lock: refused with `queue.conflict: reject`, served after the holder let go with
//! `takeover`; never a second consumer that gets nothing, or half of the messages.

mod support;

use support::{
    assert_exactly_once, consumers_listed, numbered, open_at_once, rabbitmqctl, the_one_served,
    unique, wait_for, Amqp, Server, Stream, QUORUM, WAIT,
};

/// The consumers the broker lists for `queue`, each as its `active` column (`true`, `false`).
fn consumers_of(queue: &str) -> Vec<String> {
    let listing = rabbitmqctl(&[
        "list_consumers",
        "queue_name",
        "active",
        "--no-table-headers",
    ]);
    consumers_listed(&listing, queue)
}

#[test]
fn ten_requests_at_once_over_two_instances_make_one_stream_and_one_consumer() {
    let env = [("EVENTSOURCED_QUEUE_CONFLICT", "reject"), QUORUM];
    let (a, b) = (Server::start(&env).ready(), Server::start(&env).ready());
    let amqp = Amqp::connect();
    // A few rounds: the race between two instances is decided in a millisecond or two.
    for round in 0..5 {
        let queue = unique("quorum-race");
        let answers = open_at_once(&[a.addr, b.addr], &format!("/?id={queue}"), 10);
        let mut holder = the_one_served(answers, &format!("round {round}"));
        // The broker's listing may lag the consume by a moment.
        support::wait_for("the consumer listed", support::WAIT, || {
            !consumers_of(&queue).is_empty()
        });
        assert_eq!(consumers_of(&queue), ["true"], "round {round}");
        let published = numbered(1, 20);
        amqp.publish_all(&queue, &published);
        let received: Vec<String> = (0..published.len())
            .map(|_| holder.next_data().expect("a message"))
            .collect();
        assert_exactly_once("the one stream of ten requests", &published, &received);
    }
}

#[test]
fn with_takeover_another_instance_serves_the_client_once_the_holder_let_go() {
    let takeover = ("EVENTSOURCED_QUEUE_CONFLICT", "takeover");
    let (a, b) = (
        Server::start(&[QUORUM, takeover]).ready(),
        Server::start(&[QUORUM, takeover]).ready(),
    );
    let amqp = Amqp::connect();
    let queue = unique("quorum-moved");
    amqp.declare_quorum(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let mut old = Stream::open(a.addr, &format!("/?id={queue}"), &[]);
    let first = old.next_events(3);
    let last_id = first[2].id.clone().expect("events carry ids");
    amqp.publish_all(&queue, &numbered(4, 6));
    let mut moved = Stream::open(
        b.addr,
        &format!("/?id={queue}"),
        &[("Last-Event-ID", last_id.as_str())],
    );
    assert_eq!(moved.status, 200, "{:?}", moved.headers);
    let mut received: Vec<String> = first.into_iter().filter_map(|e| e.data).collect();
    received.extend((0..3).map(|_| moved.next_data().expect("a message")));
    amqp.publish(&queue, "m7");
    received.push(moved.next_data().expect("m7"));
    assert_exactly_once(
        "a client moved between instances",
        &numbered(1, 7),
        &received,
    );
    assert!(old.closed_by_server(support::WAIT));
    assert_eq!(consumers_of(&queue), ["true"]);
}

#[test]
fn a_quorum_queue_without_a_consumer_expires_and_so_does_its_lock() {
    let server = Server::start(&[QUORUM, ("EVENTSOURCED_QUEUE_EXPIRES", "1")]).ready();
    let queue = unique("quorum-expires");
    let stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
    server.wait_log("opened for");
    let listed = || rabbitmqctl(&["list_queues", "name", "--no-table-headers"]);
    let lock = eventsourced::amqp::holder::name(&queue);
    assert!(listed().contains(&lock), "the lock is held while streaming");
    stream.close();
    server.wait_log("closed for");
    wait_for("the queue and its lock to go", WAIT, || {
        let names = listed();
        !names.contains(&queue) && !names.contains(&lock)
    });
}

#[test]
fn with_share_a_reader_on_another_instance_is_relayed_and_the_holder_stays() {
    let (a, b) = (
        Server::start(&[QUORUM]).ready(),
        Server::start(&[QUORUM]).ready(),
    );
    let amqp = Amqp::connect();
    let queue = unique("quorum-shared");
    amqp.declare_quorum(&queue);
    let target = format!("/?id={queue}");
    let mut on_a = Stream::open(a.addr, &target, &[]);
    a.wait_log("opened for");
    let mut on_b = Stream::open(b.addr, &target, &[]);
    assert_eq!(on_b.status, 200, "{:?}", on_b.headers);
    b.wait_log("following the stream another instance holds");
    amqp.publish_all(&queue, &numbered(1, 5));
    for stream in [&mut on_a, &mut on_b] {
        let got: Vec<String> = stream
            .next_events(5)
            .into_iter()
            .filter_map(|e| e.data)
            .collect();
        assert_eq!(got, numbered(1, 5));
    }
    assert_eq!(consumers_of(&queue), ["true"], "one consumer, a's");
}
