//! `make bench`: the release server against a private broker, measured side by side with a raw
//! AMQP consumer on the same broker in the same run, printed as one table. It reports; it never
//! asserts a time. Every load loop is bounded in count and time.

#[path = "../tests/support/mod.rs"]
mod support;

mod crowd;

use amiquip::{ConsumerMessage, ConsumerOptions};
use eventsourced::config::{self, Search};
use eventsourced::stream::StreamSettings;
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::{unique, Amqp, Server, Stream, TempDir};

/// A figure for the table: what, through the bridge, the baseline, and a note.
struct Row {
    what: String,
    bridge: String,
    baseline: String,
    note: String,
}

fn row(what: &str, bridge: String, baseline: &str, note: String) -> Row {
    Row {
        what: what.into(),
        bridge,
        baseline: baseline.into(),
        note,
    }
}

fn main() {
    // The server's own log lines would drown the table.
    std::env::set_var("EVENTSOURCED_QUIET_SERVER", "1");
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let began = Instant::now();
    let mut rows = Vec::new();
    // The cargo release build (glibc), and the static musl build that ships, when it exists.
    let mut builds = vec![("release", None)];
    if let Ok(path) = std::env::var("EVENTSOURCED_STATIC_BIN") {
        builds.push(("static musl", Some(path)));
    }
    let use_build = |binary: &Option<String>| match binary {
        Some(path) => std::env::set_var("EVENTSOURCED_BIN", path),
        None => std::env::remove_var("EVENTSOURCED_BIN"),
    };
    if run("startup") {
        for (label, binary) in &builds {
            use_build(binary);
            rows.extend(startup(label));
        }
        use_build(&None);
    }
    // A build of an earlier commit (EVENTSOURCED_BEFORE_BIN, e.g. from `git worktree`), measured
    // in the same run beside this one, each section the one build after the other; its rows
    // are marked "before". `BEFORE=REV make bench` builds one (scripts/bench).
    let mut compared = vec![("", None)];
    if let Ok(path) = std::env::var("EVENTSOURCED_BEFORE_BIN") {
        compared.push(("before: ", Some(path)));
    }
    let each_build = |rows: &mut Vec<Row>, measure: &dyn Fn() -> Vec<Row>| {
        for (label, binary) in &compared {
            use_build(binary);
            rows.extend(measure().into_iter().map(|mut r| {
                r.what = format!("{label}{}", r.what);
                r
            }));
        }
        use_build(&None);
    };
    if run("throughput") {
        each_build(&mut rows, &|| throughput(100_000));
    }
    if run("latency") {
        each_build(&mut rows, &|| latency(1000, Duration::from_secs(4)));
    }
    if run("fanin") {
        each_build(&mut rows, &|| vec![many_clients(1000, 42)]);
    }
    if compared.len() > 1 && run("setup") {
        // Set-up CPU per stream at 10,000 (the scale section's figure), for each build.
        each_build(&mut rows, &|| set_up_and_come_back(10_000, "release"));
    }
    if run("scale") {
        // The release build of this commit: set-up cost hardly depends on the C library.
        // BENCH_SCALE=10000 runs one count.
        let counts: Vec<usize> = std::env::var("BENCH_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(vec![1000, 10_000], |n| vec![n]);
        for n in counts {
            rows.extend(set_up_and_come_back(n, "release"));
            // The Go original, when a build of it is named: the same clients, the same queues.
            if let Ok(go) = std::env::var("EVENTSOURCED_GO_BIN") {
                rows.push(go_set_up(n, &go));
            }
        }
    }
    if run("fanout") {
        rows.push(fanout(1000, 100));
    }
    if run("readers") {
        rows.extend(readers(20_000));
        rows.extend(reader_memory(500));
    }
    if run("traffic") {
        for (label, binary) in &builds {
            use_build(binary);
            rows.extend(memory_after_traffic(1000, label));
        }
        use_build(&None);
    }
    if run("idle") {
        for (label, binary) in &builds {
            use_build(binary);
            for n in [1000, 10_000] {
                rows.extend(idle_streams(n, label));
            }
        }
        use_build(&None);
    }
    println!();
    println!("| measurement | eventsourced | baseline | note |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.what, r.bridge, r.baseline, r.note
        );
    }
    println!();
    println!("bench: whole run {:.0} s", began.elapsed().as_secs_f64());
}

/// CPU seconds this process has used (user + system).
fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn proc_status(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn startup(build: &str) -> Vec<Row> {
    let mut listening = Vec::new();
    let mut connected = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..5 {
        let spawned = Instant::now();
        let server = Server::start(&[]);
        listening.push(spawned.elapsed());
        let server = server.ready();
        connected.push(spawned.elapsed());
        rss.push(proc_status(server.pid(), "VmRSS:"));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    rss.sort_unstable();
    vec![
        row(
            &format!("{build}: exec to listening, median of 5"),
            format!("{:.1} ms", median(&mut listening)),
            "",
            "target < 50 ms".into(),
        ),
        row(
            &format!("{build}: exec to first broker connection, median of 5"),
            format!("{:.1} ms", median(&mut connected)),
            "",
            String::new(),
        ),
        row(
            &format!("{build}: RSS right after start, no clients"),
            format!("{} KiB", rss[rss.len() / 2]),
            "",
            String::new(),
        ),
    ]
}

/// Fills `queue` with `count` messages of 100 bytes.
fn fill(amqp: &Amqp, queue: &str, count: usize) {
    amqp.declare(queue);
    let pad = "x".repeat(91);
    for n in 0..count {
        amqp.publish(queue, &format!("{n:08} {pad}"));
    }
    let end = Instant::now() + Duration::from_secs(60);
    while (amqp.ready(queue) as usize) < count && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
}

/// The QoS the server uses on a stream, so the raw consumer gets the same: computed by the
/// server's own code from the same settings (the defaults, and `EVENTSOURCED_QUEUE_*` from the
/// environment, which the server inherits).
fn qos() -> u16 {
    let dir = TempDir::new("bench-config");
    let file = dir.path.join("config.yml");
    std::fs::write(&file, "{}\n").expect("write the bench config");
    let config = config::load(Search::File(file)).expect("the server's settings");
    StreamSettings::from(&config).qos()
}

fn throughput(count: usize) -> Vec<Row> {
    let amqp = Amqp::connect();
    let (through_bridge, raw) = (unique("bench-bridge"), unique("bench-raw"));
    fill(&amqp, &through_bridge, count);
    fill(&amqp, &raw, count);

    // The baseline: an amiquip consumer with the same QoS, acking every batch with `multiple`.
    let cpu = own_cpu();
    let began = Instant::now();
    let mut connection = support::amqp_connection();
    let channel = connection.open_channel(None).expect("channel");
    channel.qos(0, qos(), false).expect("qos");
    let consumer = channel
        .basic_consume(raw.as_str(), ConsumerOptions::default())
        .expect("consume");
    let mut received = 0;
    while received < count && began.elapsed() < Duration::from_secs(120) {
        let Ok(ConsumerMessage::Delivery(first)) =
            consumer.receiver().recv_timeout(Duration::from_secs(10))
        else {
            break;
        };
        let mut last = first;
        received += 1;
        while let Ok(ConsumerMessage::Delivery(d)) = consumer.receiver().try_recv() {
            last = d;
            received += 1;
        }
        let _ = consumer.ack_multiple(*last);
    }
    let raw_rate = received as f64 / began.elapsed().as_secs_f64();
    let raw_cpu = own_cpu() - cpu;
    drop(consumer);
    let _ = channel.close();
    let _ = connection.close();

    let server = Server::start(&[]).ready();
    let cpu = own_cpu();
    let server_cpu = process_cpu(server.pid());
    // amiquip's I/O threads parse every frame: their CPU is the AMQP codec's cost, whatever
    // the batches the stream writes.
    let io_cpu = threads_cpu(server.pid(), "amiquip-io");
    let began = Instant::now();
    let mut stream = Stream::open(server.addr, &format!("/?id={through_bridge}"), &[]);
    let mut got = 0;
    while got < count && began.elapsed() < Duration::from_secs(120) {
        match stream.next_event_within(Duration::from_secs(10)) {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let rate = got as f64 / seconds;
    let client_cpu = own_cpu() - cpu;
    let server_cpu = process_cpu(server.pid()) - server_cpu;
    let io_cpu = threads_cpu(server.pid(), "amiquip-io") - io_cpu;
    vec![row(
        &format!("one stream, pre-filled queue of {count} × 100 B: msg/s"),
        format!("{rate:.0}"),
        &format!("{raw_rate:.0} (raw amiquip consumer, QoS {})", qos()),
        format!(
            "ratio {:.2}; server CPU {:.2} µs/msg, of it the AMQP I/O thread {:.2}; load client CPU {:.0} % of the run (raw consumer {:.0} %); target ≥ 0.9",
            rate / raw_rate,
            1e6 * server_cpu / got.max(1) as f64,
            1e6 * io_cpu / got.max(1) as f64,
            100.0 * client_cpu / seconds,
            100.0 * raw_cpu / (count as f64 / raw_rate)
        ),
    )]
}

/// Publishes at `rate` per second for `span`, each message carrying its send time, and measures
/// publish → client arrival, through the bridge and straight from the broker.
fn latency(rate: u32, span: Duration) -> Vec<Row> {
    let epoch = Instant::now();
    let nanos = move || epoch.elapsed().as_nanos() as u64;
    let measure = |through_bridge: bool| -> Vec<u64> {
        let amqp = Amqp::connect();
        let queue = unique("bench-latency");
        amqp.declare(&queue);
        let total = (rate as f64 * span.as_secs_f64()) as usize;
        let publishing = Arc::new(AtomicBool::new(true));
        let publisher = {
            let (queue, publishing) = (queue.clone(), Arc::clone(&publishing));
            thread::spawn(move || {
                let amqp = Amqp::connect();
                let interval = Duration::from_secs(1) / rate;
                let start = Instant::now();
                for n in 0..total {
                    // Sleeping, not spinning: on two cores a spinning publisher takes one away
                    // from the broker and the server.
                    let due = start + interval * n as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    amqp.publish(&queue, &nanos().to_string());
                }
                publishing.store(false, Ordering::Relaxed);
            })
        };
        let mut samples = Vec::with_capacity(total);
        let end = Instant::now() + span + Duration::from_secs(10);
        if through_bridge {
            let server = Server::start(&[]).ready();
            let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
            while samples.len() < total && Instant::now() < end {
                match stream.next_event_within(Duration::from_secs(5)) {
                    Ok(Some(event)) => {
                        let sent: u64 = event.data.unwrap_or_default().parse().unwrap_or(0);
                        samples.push(nanos().saturating_sub(sent));
                    }
                    _ => break,
                }
            }
        } else {
            let mut connection = support::amqp_connection();
            let channel = connection.open_channel(None).expect("channel");
            channel.qos(0, qos(), false).expect("qos");
            let consumer = channel
                .basic_consume(queue.as_str(), ConsumerOptions::default())
                .expect("consume");
            while samples.len() < total && Instant::now() < end {
                let Ok(ConsumerMessage::Delivery(d)) =
                    consumer.receiver().recv_timeout(Duration::from_secs(5))
                else {
                    break;
                };
                let sent: u64 = String::from_utf8_lossy(&d.body).parse().unwrap_or(0);
                samples.push(nanos().saturating_sub(sent));
                let _ = consumer.ack(*d);
            }
        }
        publisher.join().expect("publisher");
        samples.sort_unstable();
        samples
    };
    let percentile = |s: &[u64], p: f64| -> f64 {
        if s.is_empty() {
            return f64::NAN;
        }
        s[((s.len() - 1) as f64 * p) as usize] as f64 / 1e6
    };
    let raw = measure(false);
    let bridge = measure(true);
    vec![
        row(
            &format!("publish → client latency at {rate} msg/s: p50"),
            format!("{:.3} ms", percentile(&bridge, 0.5)),
            &format!("{:.3} ms (raw consumer)", percentile(&raw, 0.5)),
            format!("{} samples; target within 0.1 ms of raw", bridge.len()),
        ),
        row(
            &format!("publish → client latency at {rate} msg/s: p99"),
            format!("{:.3} ms", percentile(&bridge, 0.99)),
            &format!("{:.3} ms (raw consumer)", percentile(&raw, 0.99)),
            "target within 1 ms of raw".into(),
        ),
    ]
}

fn many_clients(clients: usize, messages: usize) -> Row {
    let server = Server::start(&[("EVENTSOURCED_SERVER_WORKERS", "1100")]).ready();
    let amqp = Amqp::connect();
    let prefix = unique("bench-fanin");
    let queues: Vec<String> = (0..clients).map(|i| format!("{prefix}-{i}")).collect();
    for queue in &queues {
        amqp.declare(queue);
        for n in 0..messages {
            amqp.publish(queue, &format!("{n}"));
        }
    }
    let (sets, wall) = support::read_many(server.addr, &queues, messages);
    let received: usize = sets.iter().map(BTreeSet::len).sum();
    let wall = wall.as_secs_f64();
    row(
        &format!("{clients} clients × {messages} messages, each its own queue: wall time"),
        format!("{wall:.2} s"),
        "",
        format!(
            "{received} of {} delivered; target < 3 s",
            clients * messages
        ),
    )
}

fn idle_streams(count: usize, build: &str) -> Vec<Row> {
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

/// CPU seconds a process has used (user + system), from /proc.
fn process_cpu(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Seconds on the CPU of `pid`'s threads named `name` (schedstat: nanoseconds, not ticks).
fn threads_cpu(pid: i32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut nanos = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        nanos += schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    nanos as f64 / 1e9
}

/// The broker's process, for its share of the CPU.
fn broker_pid() -> Option<i32> {
    let dir = std::env::var("EVENTSOURCED_TEST_BROKER_DIR").ok()?;
    std::fs::read_to_string(format!("{dir}/rabbitmq.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `count` new queues named after `name`, each holding the messages "0" to "3".
fn queues_with_four(amqp: &Amqp, name: &str, count: usize) -> Vec<String> {
    let prefix = unique(name);
    let queues: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for queue in &queues {
        amqp.declare(queue);
        for n in 0..4 {
            amqp.publish(queue, &n.to_string());
        }
    }
    queues
}

/// A client for each of `queues` connects at once, and each reads the four messages its queue
/// holds: the crowd, whether all did, and the seconds it took (at most 180).
fn four_each(addr: std::net::SocketAddr, queues: &[String]) -> (crowd::Crowd, bool, f64) {
    let mut crowd = crowd::Crowd::new(addr);
    let began = Instant::now();
    for queue in queues {
        crowd.open(queue);
    }
    let all = crowd.run_until(began + Duration::from_secs(180), |c| c.data.len() >= 4);
    (crowd, all, began.elapsed().as_secs_f64())
}

/// A free loopback port, so that a restarted server listens where its clients come back to.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").to_string()
}

/// `count` clients, each with its own queue holding four messages, connect at once: the time
/// until every one has its four, and the server's CPU per stream. Then the server is restarted
/// while two more messages wait in each queue, and every client comes back with its
/// `Last-Event-ID` after the stream's jittered `retry:`: the time until all have all six, and
/// whether any was lost or repeated.
fn set_up_and_come_back(count: usize, build: &str) -> Vec<Row> {
    let workers = (count + 100).to_string();
    let address = free_address();
    let env = [
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_SERVER_WORKERS", workers.as_str()),
        ("EVENTSOURCED_SERVER_RETRY", "2000"),
    ];
    let amqp = Amqp::connect();
    let queues = queues_with_four(&amqp, "bench-scale", count);
    let mut server = Server::start(&env).ready();
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let rss_before = proc_status(pid, "VmRSS:");
    let broker = broker_pid();
    let broker_cpu = broker.map_or(0.0, process_cpu);
    let cpu = process_cpu(pid);
    let (mut crowd, all, set_up) = four_each(server.addr, &queues);
    let cpu = process_cpu(pid) - cpu;
    let broker_cpu = broker.map_or(0.0, process_cpu) - broker_cpu;
    let streaming = crowd.clients.iter().filter(|c| c.data.len() >= 4).count();
    thread::sleep(Duration::from_secs(1));
    let rss = proc_status(pid, "VmRSS:");
    let per_stream = rss.saturating_sub(rss_before) as f64 / streaming.max(1) as f64;
    let mut rows = vec![
        row(
            &format!("{build}: {count} clients at once, 4 messages each: all served after"),
            format!("{set_up:.1} s{}", if all { "" } else { " (not all)" }),
            "",
            format!("{streaming} of {count} streaming"),
        ),
        row(
            &format!("{build}: {count} clients: CPU per stream set-up"),
            format!("{:.2} ms", cpu * 1000.0 / count as f64),
            &format!("{:.2} ms (the broker)", broker_cpu * 1000.0 / count as f64),
            "the server's CPU, and the broker's, over the set-up divided by the streams".into(),
        ),
        row(
            &format!("{build}: {count} streams after 4 messages: RSS per stream"),
            format!("{per_stream:.1} KiB"),
            "",
            format!("{} MiB in all", rss / 1024),
        ),
    ];
    // The restart: the old server drains and ends; two more messages wait in every queue.
    let (_, stopped_in) = server.stop_with(15);
    drop(server);
    for queue in &queues {
        for n in 4..6 {
            amqp.publish(queue, &n.to_string());
        }
    }
    let server = Server::start(&env).ready();
    let restarted = Instant::now();
    crowd.come_back = true;
    let all = crowd.run_until(restarted + Duration::from_secs(120), |c| {
        c.data.len() >= 6 && c.streaming()
    });
    let back = restarted.elapsed().as_secs_f64();
    let expected: Vec<String> = (0..6).map(|n| n.to_string()).collect();
    let exact = crowd.clients.iter().filter(|c| c.data == expected).count();
    let repeated = crowd
        .clients
        .iter()
        .filter(|c| c.data.len() > BTreeSet::from_iter(&c.data).len())
        .count();
    let short = crowd.clients.iter().filter(|c| c.data.len() < 6).count();
    crowd.close_all();
    drop(server);
    for queue in &queues {
        amqp.delete(queue);
    }
    rows.push(row(
        &format!("{build}: {count} clients coming back with Last-Event-ID after a restart: all streaming after"),
        format!("{back:.1} s{}", if all { "" } else { " (not all)" }),
        "",
        format!(
            "{exact} of {count} have each message once; {repeated} with a repeat, {short} missing some; \
             retry 2 s ± 20 %; the old server drained in {:.1} s",
            stopped_in.as_secs_f64()
        ),
    ));
    rows
}

/// A sample of the server's `/metrics`, 0 when absent.
fn metric(server: &Server, name: &str) -> u64 {
    let response = server.get("/metrics", &[]);
    String::from_utf8_lossy(&response.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The Go original serving the same load as `set_up_and_come_back`'s first part: `count`
/// clients at once, four messages each. It reads `config.yml` beside its binary, so the binary
/// is copied into a directory of its own; one broker connection per 1,500 streams (it opens at
/// most 2,047 channels on each).
fn go_set_up(count: usize, binary: &str) -> Row {
    let dir = TempDir::new("go-original");
    let copy = dir.path.join("eventsourced");
    let address = free_address();
    let broker = std::env::var("EVENTSOURCED_TEST_AMQP").unwrap_or_default();
    let nodes = format!("    - {broker}\n").repeat(count / 1500 + 1);
    let written = std::fs::copy(binary, &copy).and_then(|_| {
        std::fs::write(
            dir.path.join("config.yml"),
            format!(
                "server:\n  address: {address}\nbroker:\n  node:\n{nodes}queue:\n  pattern: ${{query:id}}\n  expires: 1800\n"
            ),
        )
    });
    let what = format!("Go original: {count} clients at once, 4 messages each: all served after");
    if let Err(e) = written {
        return row(&what, "-".into(), "", format!("cannot set it up: {e}"));
    }
    let Ok(mut child) = std::process::Command::new(&copy)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return row(&what, "-".into(), "", "cannot start it".into());
    };
    let addr: std::net::SocketAddr = address.parse().expect("a socket address");
    let up = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() && Instant::now() < up {
        thread::sleep(Duration::from_millis(50));
    }
    // Its broker connections open at start; give them the moment they take.
    thread::sleep(Duration::from_secs(1));
    let amqp = Amqp::connect();
    let queues = queues_with_four(&amqp, "bench-go", count);
    let pid = child.id() as i32;
    let cpu = process_cpu(pid);
    let (mut crowd, all, wall) = four_each(addr, &queues);
    let cpu = process_cpu(pid) - cpu;
    let streaming = crowd.clients.iter().filter(|c| c.data.len() >= 4).count();
    thread::sleep(Duration::from_secs(1));
    let rss = proc_status(pid, "VmRSS:");
    crowd.close_all();
    let _ = child.kill();
    let _ = child.wait();
    for queue in &queues {
        amqp.delete(queue);
    }
    row(
        &what,
        format!("{wall:.1} s{}", if all { "" } else { " (not all)" }),
        "",
        format!(
            "{streaming} of {count} streaming; CPU per stream set-up {:.2} ms; {} MiB RSS \
             ({:.1} KiB a stream); {} broker connections",
            cpu * 1000.0 / count as f64,
            rss / 1024,
            rss as f64 / streaming.max(1) as f64,
            count / 1500 + 1
        ),
    )
}

/// Server threads and RSS, from /proc.
fn threads_and_rss(pid: i32) -> (u64, u64) {
    (proc_status(pid, "Threads:"), proc_status(pid, "VmRSS:"))
}

/// RSS per stream after traffic: `count` streams each read 42 messages of 100 bytes; then a
/// fiftieth of them a burst of 1,000 messages of 10 KB; then every client leaves, and the
/// server's idle workers end. Each figure is the RSS above the server's with no client.
fn memory_after_traffic(count: usize, build: &str) -> Vec<Row> {
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

/// `streams` streams bound to one fanout exchange, `messages` published to it: the aggregate
/// rate at which the clients receive them, against `streams` raw amiquip consumers on the same
/// queues (the same QoS, a `multiple` ack per batch) in the same run: the broker's own limit.
fn fanout(streams: usize, messages: usize) -> Row {
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
fn readers(count: usize) -> Vec<Row> {
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
fn reader_memory(queues: usize) -> Vec<Row> {
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
