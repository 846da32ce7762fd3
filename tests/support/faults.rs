//! Faults a test causes, and the broker-side view it needs for them: `rabbitmqctl` on the test
//! broker, the broker connections of a process (found in `/proc`) closed by the broker, and a
//! relay that goes silent as a network partition does.

use super::{broker_port, TempDir};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Runs `rabbitmqctl` against the test broker.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let dir = std::env::var("EVENTSOURCED_TEST_BROKER_DIR")
        .expect("EVENTSOURCED_TEST_BROKER_DIR is not set: run the tests with `make test`");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq");
    let output = Command::new(script)
        .arg("ctl")
        .arg(dir)
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// How many of `queue`'s messages are delivered and not acked, as the broker lists it.
pub fn unacked(queue: &str) -> String {
    rabbitmqctl(&[
        "list_queues",
        "name",
        "messages_unacknowledged",
        "--no-table-headers",
    ])
    .lines()
    .find_map(|l| {
        l.strip_prefix(&format!("{queue}\t"))
            .map(|n| n.trim().to_string())
    })
    .unwrap_or_default()
}

/// Local ports of the TCP connections process `pid` has open to the test broker.
pub fn broker_connection_ports(pid: i32) -> Vec<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let broker = broker_port();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            let remote = u16::from_str_radix(cols.get(2)?.rsplit(':').next()?, 16).ok()?;
            (remote == broker && inodes.contains(*cols.get(9)?)).then_some(local)
        })
        .collect()
}

/// Makes the broker close every AMQP connection of process `pid`.
pub fn close_broker_connections_of(pid: i32) {
    let ports = broker_connection_ports(pid);
    assert!(!ports.is_empty(), "process {pid} has no broker connection");
    let listing = rabbitmqctl(&["list_connections", "pid", "peer_port", "--no-table-headers"]);
    let mut closed = 0;
    for line in listing.lines() {
        let mut cols = line.split_whitespace();
        let (Some(connection), Some(port)) = (cols.next(), cols.next()) else {
            continue;
        };
        if port.parse().is_ok_and(|p: u16| ports.contains(&p)) {
            rabbitmqctl(&["close_connection", connection, "closed by a test"]);
            closed += 1;
        }
    }
    assert_eq!(closed, ports.len(), "connections listed:\n{listing}");
}

/// A TCP relay to 127.0.0.1:`target` that can go silent: while frozen it moves no bytes but
/// keeps every connection open, as a network partition does.
pub struct Relay {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn to(target: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay listener");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (f, s) = (Arc::clone(&frozen), Arc::clone(&stop));
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let (f, s) = (Arc::clone(&f), Arc::clone(&s));
                    thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
                        let mut buffer = [0u8; 16 * 1024];
                        while !s.load(Ordering::Relaxed) {
                            if f.load(Ordering::Relaxed) {
                                thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                            match from.read(&mut buffer) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buffer[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, frozen, stop }
    }

    pub fn freeze(&self, silent: bool) {
        self.frozen.store(silent, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A private broker of a test's own, which it may stop and start.
pub struct OwnBroker {
    dir: TempDir,
    pub port: u16,
    /// `amqps://` on this port, with the certificates in `certs`, when started with TLS.
    pub tls: Option<(u16, std::path::PathBuf)>,
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        OwnBroker::start_with(None)
    }

    /// A broker with an `amqps://` listener too, using the certificates in `certs`
    /// (`scripts/test-certs`).
    pub fn start_tls(certs: &std::path::Path) -> OwnBroker {
        OwnBroker::start_with(Some(certs))
    }

    fn start_with(certs: Option<&std::path::Path>) -> OwnBroker {
        let dir = TempDir::new("broker");
        let base = broker_port() + 7;
        let mut free = (base..base + 50).filter(|p| TcpStream::connect(("127.0.0.1", *p)).is_err());
        let port = free.next().expect("a free port");
        let tls = certs.map(|certs| (free.next().expect("a free port"), certs.to_path_buf()));
        let broker = OwnBroker { dir, port, tls };
        broker.start_again();
        broker
    }

    fn script(&self, args: &[&str]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq");
        let status = Command::new(script)
            .args(args)
            .status()
            .expect("run scripts/rabbitmq");
        assert!(status.success(), "scripts/rabbitmq {args:?}");
    }

    pub fn stop(&self) {
        self.script(&["stop", &self.dir.path.display().to_string()]);
    }

    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Starts the broker again after `stop`, on the same port with the same data.
    pub fn start_again(&self) {
        let mut args = vec![
            "start".to_string(),
            self.dir.path.display().to_string(),
            self.port.to_string(),
        ];
        if let Some((port, certs)) = &self.tls {
            args.extend([port.to_string(), certs.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.script(&args);
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
