//! Several readers: one fanout exchange feeding a thousand streams, and one queue read by
//! several tabs (`queue.conflict: share`), with what each costs.

use super::*;

/// `streams` streams bound to one fanout exchange, `messages` published to it: the aggregate
/// rate at which the clients receive them, against `streams` raw amiquip consumers on the same
/// queues (the same QoS, a `multiple` ack per batch) in the same run: the broker's own limit.
pub(super) fn fanout(streams: usize, messages: usize) -> Row {
    let amqp = Amqp::connect();
    let exchange = unique("bench-fanout");
    amqp.exchange(&exchange, amiquip::ExchangeType::Fanout);
    let prefix = unique("bench-fanout-q");
    let queues: Vec<String> = (0..streams).map(|i| format!("{prefix}-{i}")).collect();
    let total = streams * messages;
    let body = format!("{:0>100}", 0);
    let publish = |amqp: &Amqp| {
        for _ in 0..messages {
            amqp.publish_to(&exchange, "", &body);
        }
    };
    let deadline = || Instant::now() + Duration::from_secs(120);

    let bind = format!("[{{exchange: {exchange}}}]");
    let workers = (streams + 100).to_string();
    let server = Server::start(&[
        ("EVENTSOURCED_QUEUE_BIND", bind.as_str()),
        ("EVENTSOURCED_SERVER_WORKERS", workers.as_str()),
    ])
    .ready();
    let mut crowd = crowd::Crowd::new(server.addr);
    for queue in &queues {
        crowd.open(queue);
    }
    crowd.run_until(deadline(), crowd::Client::streaming);
    let began = Instant::now();
    publish(&amqp);
    crowd.run_until(deadline(), |c| c.data.len() >= messages);
    let bridge_time = began.elapsed().as_secs_f64();
    let bridge_got: usize = crowd
        .clients
        .iter()
        .map(|c| c.data.len().min(messages))
        .sum();
    crowd.close_all();
    drop(server);
    // What the streams held goes back to their queues: the baseline starts from empty ones.
    for queue in &queues {
        amqp.delete(queue);
        amqp.declare(queue);
        amqp.channel()
            .queue_bind(queue.as_str(), exchange.as_str(), "", Default::default())
            .expect("bind the queue");
    }

    // The baseline: ten connections of a hundred consumers each, every queue its own consumer.
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ready = Arc::new(std::sync::Barrier::new(11));
    let stop = Arc::new(AtomicBool::new(false));
    let qos = qos();
    let consumers: Vec<_> = queues
        .chunks(streams.div_ceil(10))
        .map(|chunk| {
            let (chunk, received, ready, stop) = (
                chunk.to_vec(),
                Arc::clone(&received),
                Arc::clone(&ready),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                let mut connection = support::amqp_connection();
                let channels: Vec<_> = chunk
                    .iter()
                    .map(|_| connection.open_channel(None).expect("a channel"))
                    .collect();
                let consumers: Vec<_> = channels
                    .iter()
                    .zip(&chunk)
                    .map(|(channel, queue)| {
                        channel.qos(0, qos, false).expect("qos");
                        channel
                            .basic_consume(queue.as_str(), ConsumerOptions::default())
                            .expect("consume")
                    })
                    .collect();
                ready.wait();
                let mut select = crossbeam_channel::Select::new();
                for consumer in &consumers {
                    select.recv(consumer.receiver());
                }
                while !stop.load(Ordering::Relaxed) {
                    let Ok(index) = select.ready_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let consumer = &consumers[index];
                    let mut last = None;
                    while let Ok(ConsumerMessage::Delivery(d)) = consumer.receiver().try_recv() {
                        received.fetch_add(1, Ordering::Relaxed);
                        last = Some(d);
                    }
                    if let Some(last) = last {
                        let _ = consumer.ack_multiple(*last);
                    }
                }
                drop(consumers);
                drop(channels);
                let _ = connection.close();
            })
        })
        .collect();
    ready.wait();
    let began = Instant::now();
    publish(&amqp);
    let end = deadline();
    while received.load(Ordering::Relaxed) < total && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    let raw_time = began.elapsed().as_secs_f64();
    let raw_got = received.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for consumer in consumers {
        let _ = consumer.join();
    }
    for queue in &queues {
        amqp.delete(queue);
    }
    row(
        &format!("{streams} streams fed by one fanout exchange, {messages} messages: aggregate delivery rate"),
        format!("{:.0} msg/s", bridge_got as f64 / bridge_time),
        &format!("{:.0} msg/s ({streams} raw consumers)", raw_got as f64 / raw_time),
        format!("{bridge_got} and {raw_got} of {total} delivered, each timed from the first publish"),
    )
}

/// One queue read by 1, 2 and 5 readers at once (tabs of one user, `queue.conflict: share`):
/// `count` numbered messages of 100 B published while all are connected. The rate at which the
/// slowest reader has them all, and the server's CPU a message, against one reader in the same
/// run; each reader's messages are checked to be every one, once, in order.
pub(super) fn readers(count: usize) -> Vec<Row> {
    let server = Server::start(&[]).ready();
    let pid = server.pid();
    let amqp = Amqp::connect();
    let deadline = || Instant::now() + Duration::from_secs(120);
    let bodies: Arc<Vec<String>> = Arc::new((0..count).map(|i| format!("{i:0>100}")).collect());
    let mut measured = Vec::new();
    for readers in [1usize, 2, 5] {
        let queue = unique("bench-readers");
        amqp.declare(&queue);
        let mut crowd = crowd::Crowd::new(server.addr);
        for _ in 0..readers {
            crowd.open(&queue);
        }
        crowd.run_until(deadline(), crowd::Client::streaming);
        let settled = Instant::now() + Duration::from_secs(10);
        while metric(&server, "eventsourced_followers_open") < (readers - 1) as u64
            && Instant::now() < settled
        {
            thread::sleep(Duration::from_millis(20));
        }
        let cpu = process_cpu(pid);
        let began = Instant::now();
        let publisher = {
            let (queue, bodies) = (queue.clone(), Arc::clone(&bodies));
            thread::spawn(move || {
                let amqp = Amqp::connect();
                for body in bodies.iter() {
                    amqp.publish(&queue, body);
                }
            })
        };
        let all = crowd.run_until(deadline(), |c| c.data.len() >= count);
        let seconds = began.elapsed().as_secs_f64();
        let _ = publisher.join();
        let server_cpu = process_cpu(pid) - cpu;
        let exact = crowd.clients.iter().all(|c| c.data[..] == bodies[..]);
        measured.push((readers, count as f64 / seconds, server_cpu, all && exact));
        crowd.close_all();
        amqp.delete(&queue);
    }
    let (_, one_rate, one_cpu, _) = measured[0];
    let per_message = |cpu: f64| 1e6 * cpu / count as f64;
    measured
        .iter()
        .map(|&(readers, rate, cpu, exact)| {
            row(
                &format!(
                    "one queue, {readers} reader{} at once, {count} × 100 B: msg/s each reader has them all",
                    if readers == 1 { "" } else { "s" }
                ),
                format!("{rate:.0}"),
                &format!("{one_rate:.0} (one reader, same run)"),
                format!(
                    "server CPU {:.1} µs a message (one reader {:.1}); every reader got every \
                     message once, in order: {}",
                    per_message(cpu),
                    per_message(one_cpu),
                    if exact { "yes" } else { "NO" }
                ),
            )
        })
        .collect()
}

/// What a reader costs in memory: `queues` queues of one reader each read 42 messages of 100 B;
/// then a second reader joins each (it gets the 42 from the first's feed). RSS at rest, above
/// the server's with no client, per queue; beside it the same single readers on a server with
/// `queue.conflict: takeover`, which keeps no frames for followers.
pub(super) fn reader_memory(queues: usize) -> Vec<Row> {
    let workers = (2 * queues + 100).to_string();
    let at_rest = eventsourced::memory::QUIET + Duration::from_secs(1);
    let deadline = || Instant::now() + Duration::from_secs(120);
    let small = format!("{:0>100}", 0);
    let amqp = Amqp::connect();
    let measure = |conflict: &str, second: bool| -> (f64, f64) {
        let server = Server::start(&[
            ("EVENTSOURCED_SERVER_WORKERS", workers.as_str()),
            ("EVENTSOURCED_QUEUE_CONFLICT", conflict),
        ])
        .ready();
        let pid = server.pid();
        thread::sleep(Duration::from_millis(300));
        let (_, before) = threads_and_rss(pid);
        let prefix = unique("bench-reader-memory");
        let names: Vec<String> = (0..queues).map(|i| format!("{prefix}-{i}")).collect();
        let mut first = crowd::Crowd::new(server.addr);
        for name in &names {
            amqp.declare(name);
            first.open(name);
        }
        first.run_until(deadline(), crowd::Client::streaming);
        for name in &names {
            for _ in 0..42 {
                amqp.publish(name, &small);
            }
        }
        first.run_until(deadline(), |c| c.data.len() >= 42);
        thread::sleep(at_rest);
        let (_, one) = threads_and_rss(pid);
        let mut two = one;
        if second {
            let mut followers = crowd::Crowd::new(server.addr);
            for name in &names {
                followers.open(name);
            }
            followers.run_until(deadline(), |c| c.data.len() >= 42);
            thread::sleep(at_rest);
            two = threads_and_rss(pid).1;
            followers.close_all();
        }
        first.close_all();
        for name in &names {
            amqp.delete(name);
        }
        let per_queue = |rss: u64| rss.saturating_sub(before) as f64 / queues as f64;
        (per_queue(one), per_queue(two))
    };
    let (shared_one, shared_two) = measure("share", true);
    let (takeover_one, _) = measure("takeover", false);
    vec![row(
        &format!("{queues} queues after 42 × 100 B each: RSS per queue with one reader, with a second reader"),
        format!("{shared_one:.1}, {shared_two:.1} KiB"),
        &format!("{takeover_one:.1} KiB (one reader, queue.conflict: takeover: no frames kept)"),
        format!(
            "a second reader adds {:.1} KiB; keeping the window's frames for readers costs a \
             single reader {:.1} KiB; at rest, {} s after the traffic",
            shared_two - shared_one,
            shared_one - takeover_one,
            at_rest.as_secs()
        ),
    )]
}
