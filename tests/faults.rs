//! The fault suite: for each fault, numbered messages are published, a client reads them the
//! way a browser's EventSource does (reconnecting with `Last-Event-ID` whenever its stream
//! ends), and the delivered set is compared with the published set. Nothing may be missing;
//! duplicates (at-least-once) are counted and printed:
//! `cargo test --test faults -- --nocapture` shows a line per fault.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::{
    assert_none_missing, has_all, numbered, unique, wait_for, Amqp, OwnBroker, Reader, Server,
    Stream,
};

/// The longest a fault test waits for its messages.
const DEADLINE: Duration = Duration::from_secs(60);

/// A client leaves (FIN or RST) in the middle of a stream; messages keep coming.
fn client_leaves(fault: &str, reset: bool) {
    let server = Server::start(&[("EVENTSOURCED_SERVER_KEEPALIVE", "1")]).ready();
    support::leaving::client_leaves(&server, Reader::default(), fault, reset);
}

#[test]
fn client_fin() {
    client_leaves("client FIN", false);
}

#[test]
fn client_rst() {
    client_leaves("client RST", true);
}

#[test]
fn client_stops_reading_then_vanishes() {
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_WRITE_TIMEOUT", "1"),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
    ])
    .ready();
    support::leaving::client_stops_reading_then_vanishes(
        &server,
        Reader::default(),
        "client stalls, then vanishes",
    );
}

#[test]
fn server_sigkill() {
    let mut server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("kill");
    amqp.declare(&queue);
    let published = numbered(1, 60);
    amqp.publish_all(&queue, &published[..30]);
    let mut reader = Reader::default();
    let mut stream = reader.connect(server.addr, &queue).expect("a stream");
    reader.drain(&mut stream, support::WAIT, |got| got.len() >= 15);
    let (status, _) = server.stop_with(libc::SIGKILL);
    assert!(!status.success());
    reader.drain(&mut stream, Duration::from_secs(5), |_| false);
    amqp.publish_all(&queue, &published[30..]);
    let server = Server::start(&[]).ready();
    reader.read_all(|| server.addr, &queue, &published);
    assert_none_missing("fault: server SIGKILL", &published, &reader.received);
}

#[test]
fn queue_deleted() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("deleted");
    amqp.declare(&queue);
    let published = numbered(1, 20);
    amqp.publish_all(&queue, &published);
    let mut reader = Reader::default();
    let mut stream = reader.connect(server.addr, &queue).expect("a stream");
    reader.drain(&mut stream, support::WAIT, |got| has_all(got, &published));
    amqp.delete(&queue);
    assert!(stream.closed_by_server(Duration::from_secs(10)));
    let body = String::from_utf8_lossy(&stream.body).to_string();
    assert!(
        !body.contains("data: \n\n"),
        "an empty event was sent:\n{body}"
    );
    assert_none_missing("fault: queue deleted", &published, &reader.received);
}

#[test]
fn pool_exhausted() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_WORKERS", "1")]).ready();
    let amqp = Amqp::connect();
    let (busy, queue) = (unique("busy"), unique("waiting"));
    amqp.declare(&queue);
    let published = numbered(1, 20);
    amqp.publish_all(&queue, &published);
    let holder = Stream::open(server.addr, &format!("/?id={busy}"), &[]);
    assert_eq!(holder.status, 200);
    let refused = server.get(&format!("/?id={queue}"), &[]);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("Retry-After"), Some("1"));
    holder.close();
    // The refused client retries, as EventSource does, and gets everything once a worker frees.
    // With keep-alives off, only a write shows the first stream that its client left: one
    // message to its queue frees its worker.
    amqp.publish(&busy, "nudge");
    let mut reader = Reader::default();
    reader.read_all(|| server.addr, &queue, &published);
    assert_none_missing("fault: pool exhausted", &published, &reader.received);
}

#[test]
fn slowloris() {
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_WORKERS", "2"),
        ("EVENTSOURCED_SERVER_REQUEST_TIMEOUT", "2"),
    ])
    .ready();
    let slow: Vec<TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = TcpStream::connect(server.addr).ok()?;
            s.write_all(b"GET /?id=slow HTTP/1.1\r\n").ok()?;
            Some(s)
        })
        .collect();
    let amqp = Amqp::connect();
    let queue = unique("loris");
    amqp.declare(&queue);
    let published = numbered(1, 20);
    amqp.publish_all(&queue, &published);
    let mut reader = Reader::default();
    reader.read_all(|| server.addr, &queue, &published);
    drop(slow);
    assert_none_missing(
        "fault: slowloris (200 slow clients)",
        &published,
        &reader.received,
    );
}

#[test]
fn broker_restart() {
    let broker = OwnBroker::start();
    let server = Server::start_with_broker(&broker.url(), &[]).ready();
    let queue = unique("restart");
    Amqp::connect_to(broker.port)
        .expect("publisher")
        .declare(&queue);
    // A publisher that keeps going through the outage: a message counts as published once the
    // broker confirmed it; one that was not confirmed is sent again.
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (confirmed, publishing, queue, port) = (
            Arc::clone(&confirmed),
            Arc::clone(&publishing),
            queue.clone(),
            broker.port,
        );
        thread::spawn(move || {
            let mut amqp = None;
            let mut n = 1;
            while publishing.load(Ordering::Relaxed) || n <= 20 {
                if amqp.is_none() {
                    amqp = Amqp::confirming(port).ok();
                }
                let Some(publisher) = &amqp else {
                    thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let message = format!("m{n}");
                match publisher.publish_confirmed(&queue, &message) {
                    Ok(()) => {
                        confirmed.lock().unwrap().push(message);
                        n += 1;
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => amqp = None,
                }
            }
        })
    };
    let reader = Arc::new(Mutex::new(Reader::default()));
    let reading = {
        let (reader, confirmed, publishing, addr, queue) = (
            Arc::clone(&reader),
            Arc::clone(&confirmed),
            Arc::clone(&publishing),
            server.addr,
            queue.clone(),
        );
        thread::spawn(move || {
            let end = Instant::now() + DEADLINE;
            let done = |got: &[String]| {
                !publishing.load(Ordering::Relaxed) && has_all(got, &confirmed.lock().unwrap())
            };
            let mut reader = reader.lock().unwrap();
            while !done(&reader.received) && Instant::now() < end {
                match reader.connect(addr, &queue) {
                    Some(mut stream) => reader.drain(&mut stream, Duration::from_secs(5), done),
                    None => thread::sleep(Duration::from_millis(300)),
                }
            }
        })
    };
    wait_for("messages before the restart", support::WAIT, || {
        confirmed.lock().unwrap().len() >= 30
    });
    broker.restart();
    let after = confirmed.lock().unwrap().len() + 30;
    wait_for("messages after the restart", DEADLINE, || {
        confirmed.lock().unwrap().len() >= after
    });
    publishing.store(false, Ordering::Relaxed);
    publisher.join().unwrap();
    reading.join().unwrap();
    let published = confirmed.lock().unwrap().clone();
    let received = reader.lock().unwrap().received.clone();
    assert_none_missing("fault: broker restart", &published, &received);
}

/// A client host of its own: a network namespace joined to this one by a veth pair, so that
/// the link between client and server can be cut. Needs root and iproute2.
struct ClientHost {
    name: String,
    host_side: String,
    server_ip: String,
}

impl ClientHost {
    fn create() -> Option<ClientHost> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
            return None;
        }
        let tag = std::process::id() % 10_000;
        let name = format!("es-client-{tag}");
        let host_side = format!("esh{tag}");
        let client_side = format!("esc{tag}");
        let octet = 100 + tag % 100;
        let server_ip = format!("10.231.{octet}.1");
        let client_ip = format!("10.231.{octet}.2");
        let host = ClientHost {
            name: name.clone(),
            host_side: host_side.clone(),
            server_ip: server_ip.clone(),
        };
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let ok = ip(&["netns", "add", &name])
            && ip(&[
                "link",
                "add",
                &host_side,
                "type",
                "veth",
                "peer",
                "name",
                &client_side,
            ])
            && ip(&["link", "set", &client_side, "netns", &name])
            && ip(&["addr", "add", &format!("{server_ip}/30"), "dev", &host_side])
            && ip(&["link", "set", &host_side, "up"])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{client_ip}/30"),
                "dev",
                &client_side,
            ])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "link",
                "set",
                &client_side,
                "up",
            ]);
        ok.then_some(host)
    }

    /// Connects to `addr` from inside the client host.
    fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let path = format!("/var/run/netns/{}", self.name);
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path)?;
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns on this short-lived thread only, with an open namespace fd.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("connect thread panicked")))
        })
    }

    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let status = Command::new("ip")
            .args(["link", "set", &self.host_side, state])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "ip link set {state}");
    }
}

impl Drop for ClientHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_side])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn network_partition() {
    let Some(host) = ClientHost::create() else {
        eprintln!("fault: network partition             SKIPPED: needs root and iproute2 for a network namespace");
        return;
    };
    let server = Server::start(&[
        (
            "EVENTSOURCED_SERVER_ADDRESS",
            &format!("{}:0", host.server_ip),
        ),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
        ("EVENTSOURCED_SERVER_WRITE_TIMEOUT", "2"),
    ])
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("partition");
    amqp.declare(&queue);
    let published = numbered(1, 200);
    amqp.publish_all(&queue, &published[..10]);
    let mut reader = Reader::default();
    let connect = || host.connect(server.addr);
    let mut stream = reader
        .connect_with(server.addr, &queue, connect)
        .expect("a stream from the client host");
    reader.drain(&mut stream, support::WAIT, |got| got.len() >= 10);
    // The link goes; the server keeps writing into the void until TCP gives up.
    host.link(false);
    amqp.publish_all(&queue, &published[10..]);
    server.wait_log("client gone");
    host.link(true);
    drop(stream);
    let end = Instant::now() + DEADLINE;
    while !has_all(&reader.received, &published) && Instant::now() < end {
        match reader.connect_with(server.addr, &queue, connect) {
            Some(mut stream) => reader.drain(&mut stream, Duration::from_secs(10), |got| {
                has_all(got, &published)
            }),
            None => thread::sleep(Duration::from_millis(300)),
        }
    }
    assert_none_missing("fault: network partition", &published, &reader.received);
}
