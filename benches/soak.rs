//! `make soak`: the release server under a long, steady load with the faults a deployment sees,
//! checked for leaks and for lost or repeated messages. Hundreds of streams (`SOAK_STREAMS`, 500),
//! a steady publish rate (`SOAK_RATE`, 500 msg/s in all) of persistent, confirmed messages, a tenth
//! of the clients dropping every minute (FIN, RST, or a stall then RST) and coming back with
//! `Last-Event-ID`, and the broker restarted once midway (`SOAK_BROKER_RESTART` times: 0 for
//! none, more to see whether each restart costs again). Every 10 s the server's RSS, open files
//! and threads (from /proc) and the broker's channel count go into a CSV; the run fails when any
//! of them grew by more than 5 % from the comparison mark to the end, or when a client missed a
//! message or got one twice. `scripts/soak` starts the broker and the memory cap and runs this;
//! every loop here is bounded in time.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "soak/load.rs"]
mod load;

use amiquip::{AmqpProperties, Confirm, Publish};
use load::{client, publish, Tally};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::{Amqp, Server, Stream};

/// How long a stalled client stops reading before it resets its connection.
const STALL: Duration = Duration::from_secs(20);
/// How long, after publishing stops, the clients have to read what is left.
const DRAIN: Duration = Duration::from_secs(120);
/// The private broker's script: start, stop, ctl.
const RABBITMQ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq");
/// Bytes of filler in each message after its number, so frames have a realistic size.
const FILLER: usize = 80;

/// The run as `scripts/soak` sets it up.
struct Plan {
    minutes: f64,
    streams: usize,
    rate: f64,
    out: std::path::PathBuf,
    cgroup: Option<String>,
    broker_dir: String,
    broker_port: u16,
    /// How many times the broker is restarted (`SOAK_BROKER_RESTART`, 1): 0 leaves it up, to
    /// tell what a restart costs apart from the rest; 2 or more show whether each costs again.
    broker_restarts: u32,
}

impl Plan {
    fn from_env() -> Plan {
        let number = |key: &str, default: f64| -> f64 {
            std::env::var(key)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
                })
                .unwrap_or(default)
        };
        Plan {
            minutes: number("SOAK_MINUTES", 30.0),
            streams: number("SOAK_STREAMS", 500.0) as usize,
            rate: number("SOAK_RATE", 500.0),
            out: std::env::var("SOAK_OUT")
                .unwrap_or_else(|_| "target/soak".into())
                .into(),
            cgroup: std::env::var("SOAK_CGROUP").ok().filter(|c| !c.is_empty()),
            broker_dir: std::env::var("EVENTSOURCED_TEST_BROKER_DIR")
                .expect("EVENTSOURCED_TEST_BROKER_DIR is not set: run the soak with `make soak`"),
            broker_port: support::broker_port(),
            broker_restarts: number("SOAK_BROKER_RESTART", 1.0) as u32,
        }
    }

    fn run_time(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    /// Where the last samples are compared: 5 minutes in, or halfway in a run under 10 minutes.
    fn mark(&self) -> Duration {
        if self.minutes >= 10.0 {
            Duration::from_secs(300)
        } else {
            self.run_time() / 2
        }
    }

    /// The broker restarts: the first midway, and after the comparison mark; any others spread
    /// evenly between it and the end.
    fn restarts_at(&self) -> Vec<Duration> {
        let first = (self.run_time() / 2)
            .max(self.mark() + Duration::from_secs(60).min(self.run_time() / 10));
        let n = self.broker_restarts;
        let step = self.run_time().saturating_sub(first) / n.max(1);
        (0..n).map(|k| first + step * k).collect()
    }
}

/// What the publisher and the clients share.
struct Shared {
    /// Messages published (confirmed or not) per queue: the next number is this plus one.
    published: Vec<AtomicU32>,
    /// Set when publishing has stopped and every message is confirmed: `published` is final.
    final_counts: AtomicBool,
    /// Set when the clients should stop dropping and read what is left.
    draining: AtomicBool,
    /// Set when everyone should stop now.
    stop: AtomicBool,
    received: AtomicU64,
    connected: AtomicUsize,
    republished: Mutex<BTreeSet<(usize, u32)>>,
}

fn queue_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index}")
}

fn body(number: u32) -> String {
    format!("{number} {}", "x".repeat(FILLER))
}

fn main() {
    std::env::set_var("EVENTSOURCED_QUIET_SERVER", "1");
    let plan = Plan::from_env();
    std::fs::create_dir_all(&plan.out).expect("create the soak output directory");
    let run_time = plan.run_time();
    eprintln!(
        "soak: {} streams, {} msg/s, {:.1} min; comparison at {:.1} min{}; {}; memory cap: {}",
        plan.streams,
        plan.rate,
        plan.minutes,
        plan.mark().as_secs_f64() / 60.0,
        if plan.minutes < 10.0 {
            " (halfway: the run is under 10 minutes)"
        } else {
            ""
        },
        if plan.broker_restarts > 0 {
            let at: Vec<String> = plan
                .restarts_at()
                .iter()
                .map(|at| format!("{:.1}", at.as_secs_f64() / 60.0))
                .collect();
            format!("broker restart at {} min", at.join(", "))
        } else {
            "no broker restart (SOAK_BROKER_RESTART=0)".into()
        },
        plan.cgroup.as_deref().unwrap_or("none"),
    );

    let workers = (plan.streams + 100).to_string();
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_WORKERS", workers.as_str()),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "15"),
    ])
    .ready();
    let pid = server.pid();
    if let Some(cgroup) = &plan.cgroup {
        std::fs::write(format!("{cgroup}/cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move the server ({pid}) into {cgroup}: {e}"));
        eprintln!("soak: server {pid} runs in {cgroup}");
    }

    let prefix = support::unique("soak");
    {
        let amqp = Amqp::connect_to(plan.broker_port).expect("connect to the soak broker");
        for i in 0..plan.streams {
            amqp.declare(&queue_name(&prefix, i));
        }
    }
    let shared = Arc::new(Shared {
        published: (0..plan.streams).map(|_| AtomicU32::new(0)).collect(),
        final_counts: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        received: AtomicU64::new(0),
        connected: AtomicUsize::new(0),
        republished: Mutex::new(BTreeSet::new()),
    });
    let began = Instant::now();
    let hard_end = began + run_time + DRAIN + Duration::from_secs(120);

    let clients: Vec<_> = (0..plan.streams)
        .map(|i| {
            let (shared, queue, addr) = (Arc::clone(&shared), queue_name(&prefix, i), server.addr);
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || client(i, &queue, addr, &shared, began, hard_end))
                .expect("a client thread")
        })
        .collect();
    let publisher = {
        let (shared, prefix) = (Arc::clone(&shared), prefix.clone());
        let (port, rate, streams) = (plan.broker_port, plan.rate, plan.streams);
        thread::spawn(move || publish(port, &prefix, streams, rate, &shared, began + run_time))
    };
    let restart = {
        let (dir, port, times) = (
            plan.broker_dir.clone(),
            plan.broker_port,
            plan.restarts_at(),
        );
        thread::spawn(move || {
            for at in times {
                thread::sleep(at.saturating_sub(began.elapsed()));
                let stopping = Instant::now();
                rabbitmq(&["stop", &dir]);
                let stopped = stopping.elapsed();
                rabbitmq(&["start", &dir, &port.to_string()]);
                eprintln!(
                    "soak: broker restarted at {:.1} min (stop {:.1} s, down {:.1} s)",
                    at.as_secs_f64() / 60.0,
                    stopped.as_secs_f64(),
                    stopping.elapsed().as_secs_f64()
                );
            }
        })
    };

    // Where the plot draws its vertical lines.
    std::fs::write(
        plan.out.join("marks.csv"),
        plan.restarts_at().iter().fold(
            format!("what,seconds\ncomparison mark,{}\n", plan.mark().as_secs()),
            |marks, at| marks + &format!("broker restart,{}\n", at.as_secs()),
        ),
    )
    .expect("write marks.csv");

    // Samples every 10 s until the run ends.
    let csv_path = plan.out.join("soak.csv");
    let mut csv = std::fs::File::create(&csv_path).expect("create soak.csv");
    writeln!(
        csv,
        "seconds,rss_kib,fds,threads,broker_channels,cgroup_kib,clients_connected,published,received"
    )
    .unwrap();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next = began;
    while began.elapsed() < run_time {
        let sample = Sample::take(pid, began, &plan, &shared);
        writeln!(csv, "{}", sample.csv_line()).unwrap();
        csv.flush().unwrap();
        eprintln!(
            "soak: {:>5.0} s  rss {} KiB  fds {}  threads {}  channels {}  clients {}  published {}  received {}",
            sample.seconds, sample.rss_kib, sample.fds, sample.threads,
            sample.channels.map_or("-".into(), |c| c.to_string()),
            sample.connected, sample.published, sample.received
        );
        samples.push(sample);
        next += Duration::from_secs(10);
        let end = began + run_time;
        thread::sleep(next.min(end).saturating_duration_since(Instant::now()));
    }

    // Publishing stops with the run; then the clients read what is left.
    let confirmed = publisher.join().expect("the publisher");
    shared.draining.store(true, Ordering::SeqCst);
    restart.join().expect("the broker restart");
    // The clients stop on their own once they have everything; the rest are stopped after DRAIN.
    let draining = Instant::now();
    while draining.elapsed() < DRAIN && clients.iter().any(|c| !c.is_finished()) {
        thread::sleep(Duration::from_millis(500));
    }
    shared.stop.store(true, Ordering::SeqCst);
    let results: Vec<Tally> = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .collect();
    let _ = std::fs::write(plan.out.join("server.log"), server.log_text());
    let cgroup_note = plan.cgroup.as_deref().map(cgroup_report);
    drop(server);

    let verdict = report(&plan, &samples, &results, &shared, confirmed, cgroup_note);
    eprintln!(
        "soak: CSV {}; server log {}",
        csv_path.display(),
        plan.out.join("server.log").display()
    );
    if !verdict {
        std::process::exit(1);
    }
}

/// One reading of the server and the broker.
struct Sample {
    seconds: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    channels: Option<u64>,
    cgroup_kib: Option<u64>,
    connected: usize,
    published: u64,
    received: u64,
}

impl Sample {
    fn take(pid: i32, began: Instant, plan: &Plan, shared: &Shared) -> Sample {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        // rabbitmqctl takes a second or two; a broker that is down gives no count.
        let channels = Command::new(RABBITMQ)
            .args([
                "ctl",
                &plan.broker_dir,
                "list_channels",
                "pid",
                "--no-table-headers",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count() as u64
            });
        let cgroup_kib = plan.cgroup.as_ref().and_then(|c| {
            ["memory.current", "memory.usage_in_bytes"]
                .iter()
                .find_map(|f| std::fs::read_to_string(format!("{c}/{f}")).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|b| b / 1024)
        });
        Sample {
            seconds: began.elapsed().as_secs_f64(),
            rss_kib: field("VmRSS:"),
            fds,
            threads: field("Threads:"),
            channels,
            cgroup_kib,
            connected: shared.connected.load(Ordering::Relaxed),
            published: shared
                .published
                .iter()
                .map(|p| u64::from(p.load(Ordering::Relaxed)))
                .sum(),
            received: shared.received.load(Ordering::Relaxed),
        }
    }

    fn csv_line(&self) -> String {
        let or_empty = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        format!(
            "{:.0},{},{},{},{},{},{},{},{}",
            self.seconds,
            self.rss_kib,
            self.fds,
            self.threads,
            or_empty(self.channels),
            or_empty(self.cgroup_kib),
            self.connected,
            self.published,
            self.received
        )
    }
}

fn rabbitmq(args: &[&str]) {
    let status = Command::new(RABBITMQ).args(args).status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("soak: scripts/rabbitmq {args:?} failed");
    }
}

/// The cap, the peak and how often the cap was hit, from the memory cgroup (v2 or v1).
fn cgroup_report(cgroup: &str) -> String {
    let read = |f: &str| std::fs::read_to_string(format!("{cgroup}/{f}")).ok();
    let kib = |v: Option<String>| {
        v.and_then(|v| v.trim().parse::<u64>().ok())
            .map_or("?".into(), |b| format!("{} KiB", b / 1024))
    };
    if let Some(max) = read("memory.max") {
        let events = read("memory.events").unwrap_or_default().replace('\n', " ");
        format!(
            "cgroup v2 {cgroup}: memory.max {}, peak {}, events: {}",
            max.trim(),
            kib(read("memory.peak")),
            events.trim()
        )
    } else {
        format!(
            "cgroup v1 {cgroup}: limit {}, peak {}, times at the limit {}",
            kib(read("memory.limit_in_bytes")),
            kib(read("memory.max_usage_in_bytes")),
            read("memory.failcnt").unwrap_or_default().trim()
        )
    }
}

/// Prints the figures and the verdict; true when the run passed.
fn report(
    plan: &Plan,
    samples: &[Sample],
    results: &[Tally],
    shared: &Shared,
    confirmed: bool,
    cgroup: Option<String>,
) -> bool {
    let mut passed = true;
    let republished = shared.republished.lock().unwrap().clone();
    let (mut published, mut received, mut missing, mut duplicated, mut republished_twice) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut out_of_order, mut drops, mut reconnects) = (0u64, [0u64; 3], 0u64);
    let mut worst: Vec<String> = Vec::new();
    for (q, t) in results.iter().enumerate() {
        published += u64::from(t.published);
        out_of_order += t.out_of_order;
        reconnects += t.reconnects.saturating_sub(1);
        for (all, own) in drops.iter_mut().zip(t.drops) {
            *all += own;
        }
        let mut queue_missing = 0;
        for n in 1..=t.published {
            let c = t.counts.get(n as usize - 1).copied().unwrap_or(0);
            received += u64::from(c);
            if c == 0 {
                queue_missing += 1;
            } else if c > 1 {
                if republished.contains(&(q, n)) {
                    republished_twice += u64::from(c - 1);
                } else {
                    duplicated += u64::from(c - 1);
                }
            }
        }
        missing += queue_missing;
        if queue_missing > 0 && worst.len() < 5 {
            worst.push(format!(
                "queue {q}: {queue_missing} missing of {}",
                t.published
            ));
        }
    }
    println!();
    println!(
        "soak: {} streams, {:.1} minutes, {} msg/s",
        plan.streams, plan.minutes, plan.rate
    );
    println!(
        "soak: clients left {} times by FIN, {} by RST, {} by a {} s stall then RST; {} reconnects in all",
        drops[0],
        drops[1],
        drops[2],
        STALL.as_secs(),
        reconnects
    );
    println!(
        "soak: published {published}, received {received}, missing {missing}, duplicated {duplicated}, out of order {out_of_order}"
    );
    println!(
        "soak: {} messages published again (not confirmed when the broker went away); {republished_twice} of them arrived twice (the broker had kept the first copy)",
        republished.len()
    );
    if !confirmed {
        println!("soak: FAIL: the publisher could not get every message confirmed");
        passed = false;
    }
    if duplicated > 0 {
        let mut by_minute = BTreeMap::new();
        for t in results {
            for m in &t.repeated_in_minute {
                *by_minute.entry(*m).or_insert(0u64) += 1;
            }
        }
        let streams = results
            .iter()
            .filter(|t| !t.repeated_in_minute.is_empty())
            .count();
        println!(
            "soak: repeats (publisher's own included) by minute of arrival: {by_minute:?}, on {streams} streams"
        );
    }
    if missing > 0 || duplicated > 0 {
        println!(
            "soak: FAIL: messages lost or repeated ({})",
            worst.join("; ")
        );
        passed = false;
    }
    if let Some(note) = cgroup {
        println!("soak: memory cap: {note}");
    }

    // Growth: the median of the three samples nearest the mark against the last three.
    let mark = plan.mark().as_secs_f64();
    let mut near: Vec<&Sample> = samples.iter().collect();
    near.sort_by(|a, b| {
        (a.seconds - mark)
            .abs()
            .total_cmp(&(b.seconds - mark).abs())
    });
    let reference: Vec<&Sample> = near.into_iter().take(3).collect();
    let last: Vec<&Sample> = samples.iter().rev().take(3).collect();
    if samples.len() < 6 {
        println!(
            "soak: FAIL: only {} samples, too few to compare",
            samples.len()
        );
        return false;
    }
    let first = &samples[0];
    let end = samples.last().unwrap();
    let nearest = reference[0];
    println!(
        "soak: growth compared at {:.0} s{} against the last three samples (median of three each)",
        mark,
        if plan.minutes < 10.0 {
            " (halfway: the run is under 10 minutes)"
        } else {
            ""
        }
    );
    println!(
        "| figure | start ({:.0} s) | mark ({:.0} s) | end ({:.0} s) | growth mark → end |",
        first.seconds, nearest.seconds, end.seconds
    );
    println!("|---|---|---|---|---|");
    type Pick = fn(&Sample) -> Option<u64>;
    let figures: [(&str, Pick); 4] = [
        ("server RSS (KiB)", |s| Some(s.rss_kib)),
        ("server open files", |s| Some(s.fds)),
        ("server threads", |s| Some(s.threads)),
        ("broker channels", |s| s.channels),
    ];
    for (name, pick) in figures {
        let median = |set: &[&Sample]| -> Option<f64> {
            let mut v: Vec<u64> = set.iter().filter_map(|s| pick(s)).collect();
            v.sort_unstable();
            v.get(v.len() / 2).map(|&x| x as f64)
        };
        let (Some(at_mark), Some(at_end)) = (median(&reference), median(&last)) else {
            println!("| {name} | | | | no samples |");
            passed = false;
            continue;
        };
        let growth = (at_end - at_mark) / at_mark.max(1.0) * 100.0;
        let show = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        println!(
            "| {name} | {} | {at_mark:.0} | {at_end:.0} | {growth:+.1} % |",
            show(pick(first))
        );
        if growth > 5.0 {
            println!("soak: FAIL: {name} grew {growth:.1} % after the mark");
            passed = false;
        }
    }
    println!("soak: {}", if passed { "PASS" } else { "FAIL" });
    passed
}
