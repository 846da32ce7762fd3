//! Memory: idle streams by the thousand, and what a stream keeps after traffic.

use super::*;

pub(super) fn idle_streams(count: usize, build: &str) -> Vec<Row> {
    let workers = (count + 100).to_string();
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_WORKERS", workers.as_str()),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "0"),
    ])
    .ready();
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let rss_before = proc_status(pid, "VmRSS:");
    let prefix = unique("bench-idle");
    let opened = Instant::now();
    // Eight openers in parallel; every stream stays open, idle, until the measurement is taken.
    let openers: Vec<_> = (0..8)
        .map(|k| {
            let (addr, prefix) = (server.addr, prefix.clone());
            thread::spawn(move || {
                let mut held: Vec<Stream> = Vec::new();
                for i in (k..count).step_by(8) {
                    if let Some(stream) = Stream::try_open(addr, &format!("/?id={prefix}-{i}"), &[])
                    {
                        if stream.status == 200 {
                            held.push(stream);
                        }
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<Stream> = openers
        .into_iter()
        .flat_map(|o| o.join().unwrap_or_default())
        .collect();
    let open_time = opened.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(1));
    let rss = proc_status(pid, "VmRSS:");
    let threads = proc_status(pid, "Threads:");
    let per_stream = (rss.saturating_sub(rss_before)) as f64 / held.len().max(1) as f64;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    drop(held);
    // Sockets are closed with the streams; the server notices on its own, unacked nothing.
    let _ = TcpStream::connect(server.addr);
    vec![row(
        &format!("{build}: {count} idle streams: server RSS, threads, RSS per stream"),
        format!("{} MiB, {threads} threads, {per_stream:.1} KiB/stream", rss / 1024),
        "",
        format!("{fds} open files; opened in {open_time:.1} s; RSS with no clients {rss_before} KiB; target ≤ 24 KiB/stream"),
    )]
}

/// Server threads and RSS, from /proc.
pub(super) fn threads_and_rss(pid: i32) -> (u64, u64) {
    (proc_status(pid, "Threads:"), proc_status(pid, "VmRSS:"))
}

/// RSS per stream after traffic: `count` streams each read 42 messages of 100 bytes; then a
/// fiftieth of them a burst of 1,000 messages of 10 KB; then every client leaves, and the
/// server's idle workers end. Each figure is the RSS above the server's with no client.
pub(super) fn memory_after_traffic(count: usize, build: &str) -> Vec<Row> {
    let workers = (count + 100).to_string();
    let server = Server::start(&[("EVENTSOURCED_SERVER_WORKERS", workers.as_str())]).ready();
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let (threads_before, rss_before) = threads_and_rss(pid);
    let per_stream = |rss: u64| rss.saturating_sub(rss_before) as f64 / count as f64;
    let amqp = Amqp::connect();
    let prefix = unique("bench-traffic");
    let queues: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for queue in &queues {
        amqp.declare(queue);
    }
    let mut crowd = crowd::Crowd::new(server.addr);
    for queue in &queues {
        crowd.open(queue);
    }
    let deadline = || Instant::now() + Duration::from_secs(120);
    crowd.run_until(deadline(), crowd::Client::streaming);
    // Each figure is taken at rest: once a stream has been quiet for `memory::QUIET`, it has
    // given back what its set-up or its writes took.
    let at_rest = eventsourced::memory::QUIET + Duration::from_secs(1);
    thread::sleep(at_rest);
    let (_, idle) = threads_and_rss(pid);
    let small = format!("{:0>100}", 0);
    for queue in &queues {
        for _ in 0..42 {
            amqp.publish(queue, &small);
        }
    }
    let all_small = crowd.run_until(deadline(), |c| c.data.len() >= 42);
    thread::sleep(at_rest);
    let (_, after_small) = threads_and_rss(pid);
    let large = format!("{:0>10000}", 0);
    let bursts = count / 50;
    for queue in &queues[..bursts] {
        for _ in 0..1000 {
            amqp.publish(queue, &large);
        }
    }
    let burst = &queues[..bursts];
    let all_burst = crowd.run_until(deadline(), |c| {
        !burst.contains(&c.queue) || c.data.len() >= 1042
    });
    thread::sleep(at_rest);
    let (_, after_burst) = threads_and_rss(pid);
    let stack = metric(&server, "eventsourced_worker_stack_peak_bytes");
    crowd.close_all();
    // Idle workers end after a minute; wait for them, at most two.
    let end = Instant::now() + Duration::from_secs(120);
    while threads_and_rss(pid).0 > threads_before + 2 && Instant::now() < end {
        thread::sleep(Duration::from_millis(500));
    }
    let (threads_after, after_close) = threads_and_rss(pid);
    let stack = stack.max(metric(&server, "eventsourced_worker_stack_peak_bytes"));
    for queue in &queues {
        amqp.delete(queue);
    }
    let complete = |done: bool| if done { "" } else { " (not all delivered)" };
    vec![
        row(
            &format!("{build}: {count} streams: RSS per stream idle, after 42 × 100 B, after a burst of 1,000 × 10 KB to {bursts} of them"),
            format!(
                "{:.1}, {:.1}{}, {:.1}{} KiB",
                per_stream(idle),
                per_stream(after_small),
                complete(all_small),
                per_stream(after_burst),
                complete(all_burst)
            ),
            "",
            format!(
                "RSS with no client {rss_before} KiB; each figure {} s after the traffic, at \
                 rest; the burst's messages stay held, unacked, for queue.replay_age; the most \
                 of a worker's stack in memory {} KiB of {} KiB",
                at_rest.as_secs(),
                stack / 1024,
                eventsourced::server::WORKER_STACK / 1024
            ),
        ),
        row(
            &format!("{build}: RSS after those {count} clients left and idle workers ended"),
            format!("{} KiB", after_close),
            &format!("{rss_before} KiB before any client"),
            format!(
                "{threads_after} threads ({threads_before} before); peak was {} KiB",
                after_burst.max(after_small)
            ),
        ),
    ]
}
