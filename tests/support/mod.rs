//! What every integration test needs: the real server binary on a port of its own, a raw-socket
//! HTTP/SSE client, a publisher on the private test broker, numbered messages to count losses
//! with, and the faults a test can cause. Every wait has a deadline.
//!
//! - [`server`]: the binary under test and its log.
//! - [`client`]: one request and its answer; an SSE stream read as a browser reads it.
//! - [`amqp`]: the test broker, a publisher and declarer on it.
//! - [`numbered`]: messages `m1`, `m2`, … and the check that none went missing.
//! - [`cluster`]: the three-node cluster of `make test-cluster`, a publisher and a client that
//!   go on through the loss of a node.
//! - [`faults`]: `rabbitmqctl`, a process's broker connections closed, a relay that goes silent.

// Each test file uses only some of the helpers.
#![allow(dead_code)]

pub mod amqp;
pub mod client;
pub mod cluster;
pub mod faults;
pub mod leaving;
pub mod numbered;
pub mod reader;
pub mod server;

// The names the tests use; each test file takes only some of them.
#[allow(unused_imports)]
pub use amqp::{
    amqp_connection, amqp_connection_to, broker_port, broker_url, quorum_arguments, Amqp, QUORUM,
};
#[allow(unused_imports)]
pub use client::{
    consumers_listed, open_at_once, parse_event, read_many, request, set_receive_buffer,
    the_one_served, Event, Response, Stream,
};
#[allow(unused_imports)]
pub use faults::{
    broker_connection_ports, close_broker_connections_of, rabbitmqctl, unacked, OwnBroker, Relay,
};
#[allow(unused_imports)]
pub use numbered::{assert_exactly_once, assert_none_missing, has_all, numbered};
#[allow(unused_imports)]
pub use reader::Reader;
#[allow(unused_imports)]
pub use server::process_cpu;
#[allow(unused_imports)]
pub use server::Server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a test waits for anything that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(20);

/// A queue name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "test-{name}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// Runs the server binary as a command (`-c`, `token`, a config that fails) and waits for it,
/// at most `WAIT`: a command that does not end (a server that started) fails the test.
pub fn run_eventsourced(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eventsourced"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("run eventsourced");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for eventsourced") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "eventsourced {args:?} did not exit within {WAIT:?}; stderr:\n{}",
                text(&stderr.join().unwrap_or_default())
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Output bytes as text, for messages and assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// A loopback port nothing listens on (for a broker that is down, or a server to start there).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address").port()
}

/// A broker URL where no broker answers.
pub fn absent_broker_url() -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/", closed_port())
}

/// Waits until `condition` holds, or panics with `what` at the deadline.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !condition() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A directory removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(&format!("eventsourced-{name}")));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The certificates `scripts/test` made for this run (`scripts/test-certs`), and the port of the
/// test broker's `amqps://` listener. `None` (and the test says it is skipped) outside
/// `scripts/test`.
pub fn tls_setup() -> Option<(std::path::PathBuf, u16)> {
    let certs = std::env::var_os("EVENTSOURCED_TEST_CERTS")?;
    let port = std::env::var("EVENTSOURCED_TEST_AMQPS_PORT")
        .ok()?
        .parse()
        .ok()?;
    Some((std::path::PathBuf::from(certs), port))
}
