//! `make bench`: the release server against a private broker, measured side by side with a raw
//! AMQP consumer on the same broker in the same run, printed as one table. It reports; it never
//! asserts a time. Every load loop is bounded in count and time.

#[path = "../tests/support/mod.rs"]
mod support;

mod crowd;
#[path = "bridge/memory.rs"]
mod memory;
#[path = "bridge/readers.rs"]
mod readers;
#[path = "bridge/scale.rs"]
mod scale;
#[path = "bridge/wire.rs"]
mod wire;

use amiquip::{ConsumerMessage, ConsumerOptions};
use eventsourced::config::{self, Search};
use eventsourced::stream::StreamSettings;
use memory::{idle_streams, memory_after_traffic, threads_and_rss};
use readers::{fanout, reader_memory, readers};
use scale::{go_set_up, set_up_and_come_back};
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::{process_cpu, unique, Amqp, Server, Stream, TempDir};

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
        if compared.len() > 1 {
            // The builds take turns, three runs each, so that drift in the broker's rate
            // falls on both.
            for _ in 0..3 {
                each_build(&mut rows, &|| throughput(100_000, "release"));
            }
        } else {
            for (label, binary) in &builds {
                use_build(binary);
                rows.extend(throughput(100_000, label));
            }
            use_build(&None);
        }
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
    broker_quiet();
}

/// Waits (at most 30 s) until the broker is done with what it was given: less than 5 % of a
/// core over a tenth of a second. Right after a fill it is still busy for a while (writing the
/// messages out), and a reader started then shares its cores with that work.
fn broker_quiet() {
    let Some(pid) = broker_pid() else {
        return;
    };
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let before = process_cpu(pid);
        thread::sleep(Duration::from_millis(100));
        if process_cpu(pid) - before < 0.005 {
            return;
        }
    }
}

/// The QoS the server uses on a stream, so the raw consumer gets the same: computed by the
/// server's own code from the same settings (the defaults, and `EVENTSOURCED_QUEUE_*` from the
/// environment, which the server inherits).
fn qos() -> u16 {
    StreamSettings::from(&settings()).qos()
}

/// The server's settings from a config file without values, and the environment.
fn settings() -> config::Config {
    let dir = TempDir::new("bench-config");
    let file = dir.path.join("config.yml");
    std::fs::write(&file, "{}\n").expect("write the bench config");
    config::load(Search::File(file)).expect("the server's settings")
}

/// The broker's CPU seconds so far (0 when its process is not known).
fn broker_cpu() -> f64 {
    broker_pid().map_or(0.0, process_cpu)
}

/// Runs `read` on a queue of `count` messages filled just before: the rate it returns, and
/// the broker's CPU per message meanwhile, in µs.
fn measured(amqp: &Amqp, name: &str, count: usize, read: impl FnOnce(&str) -> f64) -> (f64, f64) {
    // Each queue is filled right before it is read, and read once the broker is idle, so that
    // every reader finds the broker in the same state.
    let queue = unique(name);
    fill(amqp, &queue, count);
    let cpu = broker_cpu();
    let rate = read(&queue);
    (rate, 1e6 * (broker_cpu() - cpu) / count as f64)
}

fn throughput(count: usize, build: &str) -> Vec<Row> {
    let amqp = Amqp::connect();
    // The baselines: the broker's limit, a bare socket reader asking for no acks; an amiquip
    // consumer asking for none; and one with the stream's QoS, acking every batch with
    // `multiple`.
    let (bare, bare_broker) = measured(&amqp, "bench-bare", count, |queue| {
        wire::no_ack_rate(queue, count).expect("the bare consumer")
    });
    let (library, _) = measured(&amqp, "bench-no-ack", count, |queue| {
        raw_consume(queue, count, Acks::None).0
    });
    let mut raw_cpu = 0.0;
    let (acking, acking_broker) = measured(&amqp, "bench-raw", count, |queue| {
        let (rate, cpu) = raw_consume(queue, count, Acks::Batches { keep: 0 });
        raw_cpu = cpu;
        rate
    });
    // What the broker allows a reader that keeps a replay window unacked, as a stream does.
    let window = StreamSettings::from(&settings()).window.messages;
    let (keeping, keeping_broker) = measured(&amqp, "bench-keep", count, |queue| {
        raw_consume(queue, count, Acks::Batches { keep: window }).0
    });

    let server = Server::start(&[]).ready();
    let (mut client_cpu, mut server_cpu, mut io_cpu, mut got) = (0.0, 0.0, 0.0, 0);
    let (rate, stream_broker) = measured(&amqp, "bench-bridge", count, |queue| {
        let cpu = own_cpu();
        let server_before = process_cpu(server.pid());
        // amiquip's I/O threads parse every frame: their CPU is the AMQP codec's cost,
        // whatever the batches the stream writes.
        let io_before = threads_cpu(server.pid(), "amiquip-io");
        let began = Instant::now();
        let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
        while got < count && began.elapsed() < Duration::from_secs(120) {
            match stream.next_event_within(Duration::from_secs(10)) {
                Ok(Some(_)) => got += 1,
                _ => break,
            }
        }
        let seconds = began.elapsed().as_secs_f64();
        client_cpu = 100.0 * (own_cpu() - cpu) / seconds;
        server_cpu = process_cpu(server.pid()) - server_before;
        io_cpu = threads_cpu(server.pid(), "amiquip-io") - io_before;
        got as f64 / seconds
    });
    let per_message = |seconds: f64| 1e6 * seconds / got.max(1) as f64;
    vec![row(
        &format!("{build}: one stream, pre-filled queue of {count} × 100 B: msg/s"),
        format!("{rate:.0}"),
        &format!(
            "{bare:.0} (bare socket reader, no acks); raw amiquip consumers: {library:.0} with no acks, {acking:.0} acking each batch, {keeping:.0} acking but the newest {window} (QoS {})",
            qos()
        ),
        format!(
            "ratio {:.2} to the bare reader (target ≥ 0.9 static, 0.95 glibc), {:.2} to the raw consumer keeping {window}; broker CPU {stream_broker:.1} µs/msg (bare reader {bare_broker:.1}, acking each batch {acking_broker:.1}, keeping {window} {keeping_broker:.1}); server CPU {:.2} µs/msg, of it the AMQP I/O thread {:.2}; load client CPU {client_cpu:.0} % of the run (raw consumer {:.0} %)",
            rate / bare,
            rate / keeping,
            per_message(server_cpu),
            per_message(io_cpu),
            100.0 * raw_cpu / (count as f64 / acking)
        ),
    )]
}

/// How a raw consumer acks.
#[derive(Clone, Copy, PartialEq)]
enum Acks {
    /// `no_ack`: the broker sends as fast as it can, and forgets.
    None,
    /// With the stream's QoS, one `multiple` ack for what arrived together, keeping the newest
    /// `n` unacked, as a stream's replay window does (0: all acked).
    Batches { keep: usize },
}

/// Reads `count` messages of `queue` with a raw amiquip consumer: its rate, and the CPU seconds
/// this process spent.
fn raw_consume(queue: &str, count: usize, acks: Acks) -> (f64, f64) {
    let cpu = own_cpu();
    let began = Instant::now();
    let mut connection = support::amqp_connection();
    let channel = connection.open_channel(None).expect("channel");
    let options = ConsumerOptions {
        no_ack: acks == Acks::None,
        ..ConsumerOptions::default()
    };
    if acks != Acks::None {
        channel.qos(0, qos(), false).expect("qos");
    }
    let consumer = channel.basic_consume(queue, options).expect("consume");
    let mut held = std::collections::VecDeque::new();
    let mut received = 0;
    while received < count && began.elapsed() < Duration::from_secs(120) {
        let Ok(ConsumerMessage::Delivery(first)) =
            consumer.receiver().recv_timeout(Duration::from_secs(10))
        else {
            break;
        };
        held.push_back(first.delivery_tag());
        received += 1;
        while let Ok(ConsumerMessage::Delivery(d)) = consumer.receiver().try_recv() {
            held.push_back(d.delivery_tag());
            received += 1;
        }
        let Acks::Batches { keep } = acks else {
            held.clear();
            continue;
        };
        let mut newest = None;
        while held.len() > keep {
            newest = held.pop_front();
        }
        if let Some(tag) = newest {
            let _ = consumer.ack_tag(tag, true);
        }
    }
    let rate = received as f64 / began.elapsed().as_secs_f64();
    let spent = own_cpu() - cpu;
    drop(consumer);
    let _ = channel.close();
    let _ = connection.close();
    (rate, spent)
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

/// A sample of the server's `/metrics`, 0 when absent.
fn metric(server: &Server, name: &str) -> u64 {
    let response = server.get("/metrics", &[]);
    String::from_utf8_lossy(&response.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}
