//! The private three-node RabbitMQ cluster of `scripts/test-cluster` (started by
//! `scripts/rabbitmq-cluster`): its nodes, a node killed as a crash kills it and started again,
//! which node leads a quorum queue; a publisher that survives a node; and a client that follows
//! a queue as `EventSource` does, reconnecting with `Last-Event-ID`.

use super::amqp::{amqp_connection_to, quorum_arguments};
use super::client::{parse_event, Stream};
use amiquip::{AmqpProperties, Channel, Confirm, Connection, Publish};
use eventsourced::amqp::queue;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The cluster named by `EVENTSOURCED_TEST_CLUSTER_DIR`.
pub struct Cluster {
    dir: String,
    /// The nodes' AMQP ports on 127.0.0.1, node 1 first.
    pub ports: Vec<u16>,
}

impl Cluster {
    /// The cluster, or `None` (said loudly) when the tests run without one.
    pub fn from_env(test: &str) -> Option<Cluster> {
        let Ok(dir) = std::env::var("EVENTSOURCED_TEST_CLUSTER_DIR") else {
            // Straight to the file descriptor: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: no RabbitMQ cluster (EVENTSOURCED_TEST_CLUSTER_DIR is not set; \
                 run `make test-cluster`)"
            );
            return None;
        };
        let ports = std::fs::read_to_string(format!("{dir}/ports"))
            .expect("the cluster's ports file")
            .lines()
            .map(|p| p.trim().parse().expect("a port"))
            .collect();
        Some(Cluster { dir, ports })
    }

    pub fn url(port: u16) -> String {
        format!("amqp://guest:guest@127.0.0.1:{port}/")
    }

    /// `broker.node` for these ports, as `EVENTSOURCED_BROKER_NODE` takes it.
    pub fn nodes(ports: &[u16]) -> String {
        ports
            .iter()
            .map(|p| Cluster::url(*p))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn script(&self, args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq-cluster");
        let output = Command::new(script)
            .args(args)
            .output()
            .expect("run scripts/rabbitmq-cluster");
        assert!(
            output.status.success(),
            "rabbitmq-cluster {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// `rabbitmqctl ARGS` on the node on `port`.
    pub fn ctl(&self, port: u16, args: &[&str]) -> String {
        let port = port.to_string();
        let mut all = vec!["ctl", self.dir.as_str(), port.as_str()];
        all.extend_from_slice(args);
        self.script(&all)
    }

    /// SIGKILLs the node on `port` (returns once its port is closed); it is started again when
    /// the returned guard is dropped, if the test has not done so.
    pub fn kill(&self, port: u16) -> Killed<'_> {
        self.script(&["kill", &self.dir, &port.to_string()]);
        Killed {
            cluster: self,
            port,
            restarted: false,
        }
    }

    /// The node leading quorum queue `queue`, asked of the node on `ask`.
    pub fn leader_of(&self, queue: &str, ask: u16) -> u16 {
        let listing = self.ctl(
            ask,
            &["list_queues", "name", "leader", "--no-table-headers"],
        );
        listing
            .lines()
            .find_map(|line| {
                let mut cols = line.split_whitespace();
                (cols.next() == Some(queue))
                    .then(|| cols.next())
                    .flatten()
                    .and_then(|node| node.strip_prefix("eventsourced-"))
                    .and_then(|node| node.split('@').next())
                    .and_then(|port| port.parse().ok())
            })
            .unwrap_or_else(|| panic!("no leader of {queue} in:\n{listing}"))
    }

    /// The consumers the node on `ask` lists for `queue`, each as its `active` column.
    pub fn consumers_of(&self, queue: &str, ask: u16) -> Vec<String> {
        let listing = self.ctl(
            ask,
            &[
                "list_consumers",
                "queue_name",
                "active",
                "--no-table-headers",
            ],
        );
        super::client::consumers_listed(&listing, queue)
    }

    /// Declares quorum queue `queue` through the node on `port`, as the server declares it;
    /// its leader is that node.
    pub fn declare_quorum(&self, queue: &str, port: u16) {
        let mut connection = amqp_connection_to(port).expect("connect to a node");
        let channel = connection.open_channel(None).expect("a channel");
        queue::declare(&channel, queue, &quorum_arguments()).expect("declare the queue");
        let _ = connection.close();
    }
}

/// A node killed by a test: started again when dropped.
pub struct Killed<'a> {
    cluster: &'a Cluster,
    pub port: u16,
    restarted: bool,
}

impl Killed<'_> {
    /// Starts the node again; returns once it accepts AMQP and runs in the cluster.
    pub fn restart(&mut self) {
        self.cluster
            .script(&["restart", &self.cluster.dir, &self.port.to_string()]);
        self.restarted = true;
    }
}

impl Drop for Killed<'_> {
    fn drop(&mut self) {
        if !self.restarted {
            self.restart();
        }
    }
}

/// A publisher of persistent messages, each confirmed before the next, that goes on through a
/// node's loss: a nacked message is published again on a fresh channel (a quorum queue nacks
/// in a leader election, and may go on nacking that channel), and a failed connection is
/// replaced by one to the next node.
pub struct Publisher {
    ports: Vec<u16>,
    next: usize,
    connection: Option<Connection>,
    channel: Option<(Channel, crossbeam_channel::Receiver<Confirm>)>,
    /// Attempts that were not confirmed, for the test's output.
    pub retries: u32,
}

impl Publisher {
    pub fn new(ports: &[u16]) -> Publisher {
        Publisher {
            ports: ports.to_vec(),
            next: 0,
            connection: None,
            channel: None,
            retries: 0,
        }
    }

    /// Publishes `body` to `queue` until the broker confirms it; panics after a deadline.
    pub fn publish(&mut self, queue: &str, body: &str) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match self.try_publish(queue, body) {
                Ok(()) => return,
                Err(why) => {
                    self.retries += 1;
                    assert!(Instant::now() < end, "{body} never confirmed: {why}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn try_publish(&mut self, queue: &str, body: &str) -> Result<(), String> {
        if self.connection.is_none() {
            let port = self.ports[self.next % self.ports.len()];
            self.next += 1;
            self.connection = Some(amqp_connection_to(port)?);
        }
        if self.channel.is_none() {
            let connection = self.connection.as_mut().expect("a connection");
            let opened = connection
                .open_channel(None)
                .and_then(|c| {
                    c.enable_publisher_confirms()?;
                    let confirms = c.listen_for_publisher_confirms()?;
                    Ok((c, confirms))
                })
                .map_err(|e| {
                    self.connection = None;
                    e.to_string()
                })?;
            self.channel = Some(opened);
        }
        let (channel, confirms) = self.channel.as_ref().expect("a channel");
        let properties = AmqpProperties::default().with_delivery_mode(2);
        let sent = channel.basic_publish(
            "",
            Publish::with_properties(body.as_bytes(), queue, properties),
        );
        let outcome = match sent {
            Err(e) => Err(format!("publish: {e}")),
            Ok(()) => match confirms.recv_timeout(Duration::from_secs(5)) {
                Ok(Confirm::Ack(_)) => return Ok(()),
                Ok(Confirm::Nack(_)) => Err("nacked".to_string()),
                Err(e) => Err(format!("no confirm: {e}")),
            },
        };
        // A fresh channel for the next attempt; a fresh connection when this one failed.
        self.channel = None;
        if self
            .connection
            .as_mut()
            .is_some_and(|c| c.open_channel(None).map(|c| c.close()).is_err())
        {
            self.connection = None;
        }
        outcome
    }
}

/// What a following client saw.
pub struct Followed {
    pub received: Vec<String>,
    /// The longest time between two messages, and between the last one and the end.
    pub longest_pause: Duration,
    /// Streams opened (the first included).
    pub connections: u32,
}

/// Follows `queue` as `EventSource` does, from another thread: a stream, and when it ends, after
/// the stream's `retry:` (else 1 s), a new one with the last event's id as `Last-Event-ID`,
/// each time through the next of `servers`; until `count` messages or `within` has passed.
pub fn follow(
    servers: Vec<SocketAddr>,
    queue: &str,
    count: usize,
    within: Duration,
) -> JoinHandle<Followed> {
    let target = format!("/?id={queue}");
    thread::spawn(move || {
        let end = Instant::now() + within;
        let mut followed = Followed {
            received: Vec::new(),
            longest_pause: Duration::ZERO,
            connections: 0,
        };
        let mut last_id: Option<String> = None;
        let mut last_at: Option<Instant> = None;
        while followed.received.len() < count && Instant::now() < end {
            let addr = servers[followed.connections as usize % servers.len()];
            followed.connections += 1;
            let headers: Vec<(&str, &str)> = last_id
                .iter()
                .map(|id| ("Last-Event-ID", id.as_str()))
                .collect();
            let mut retry = Duration::from_secs(1);
            if let Some(mut stream) = Stream::try_open(addr, &target, &headers) {
                while followed.received.len() < count {
                    let left = end.saturating_duration_since(Instant::now());
                    let Ok(Some(frame)) = stream.next_frame_within(left) else {
                        break;
                    };
                    if let Some(ms) = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("retry: "))
                        .and_then(|ms| ms.parse().ok())
                    {
                        retry = Duration::from_millis(ms);
                    }
                    let event = parse_event(&frame);
                    let Some(data) = event.data else { continue };
                    let now = Instant::now();
                    if let Some(previous) = last_at {
                        followed.longest_pause = followed.longest_pause.max(now - previous);
                    }
                    last_at = Some(now);
                    followed.received.push(data);
                    if event.id.is_some() {
                        last_id = event.id;
                    }
                }
            }
            if followed.received.len() < count {
                thread::sleep(retry.min(end.saturating_duration_since(Instant::now())));
            }
        }
        if let (Some(previous), true) = (last_at, followed.received.len() < count) {
            followed.longest_pause = followed.longest_pause.max(previous.elapsed());
        }
        followed
    })
}
