//! Broker connections: every configured node is dialled and kept up by a supervisor thread that
//! re-dials with backoff; streams get channels round-robin over the connections that are up, and
//! a node whose connections have run out of channels gets another connection.

use crate::amqp::control;
use crate::amqp::dial::{connect, Backoff, Dial};
use crate::amqp::url::BrokerUrl;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use amiquip::ConsumerMessage;
use amiquip::{Channel, Connection, ConnectionBlockedNotification, ConnectionTuning};
use crossbeam_channel::{select, Receiver, Sender};
use log::{debug, info, warn};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Bound of the queue from each channel to its connection's I/O thread (amiquip allocates every
/// slot of it up front, per channel): a stream sends an ack per batch, so a few suffice.
const MEM_CHANNEL_BOUND: usize = 16;
const SUPERVISOR_STACK: usize = 256 * 1024;

/// Why no channel could be had.
#[derive(Debug)]
pub enum BrokerError {
    /// No broker connection is up.
    Unavailable,
    /// Connections are up but none answers (a partition: the sockets stay open).
    NotAnswering(String),
    /// Connections are up but opening a channel failed.
    Channel(String),
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Unavailable => f.write_str("broker: no connection available"),
            BrokerError::NotAnswering(address) => write!(f, "broker: {address} does not answer"),
            BrokerError::Channel(e) => write!(f, "broker: cannot open channel: {e}"),
        }
    }
}

impl std::error::Error for BrokerError {}

impl BrokerError {
    /// What the client is told: a fixed reason; the detail stays in the log.
    pub fn refusal(&self) -> Refusal {
        match self {
            BrokerError::Unavailable => Refusal::BrokerUnavailable,
            BrokerError::NotAnswering(_) => Refusal::BrokerNotAnswering,
            BrokerError::Channel(_) => Refusal::BrokerFailed,
        }
    }
}

/// All broker connections of this server.
pub struct Broker {
    nodes: Vec<Arc<Node>>,
    cursor: AtomicUsize,
    dial: Dial,
    metrics: Arc<Metrics>,
    closing: AtomicBool,
    /// Dropped on shutdown, which wakes supervisors sleeping between dials.
    wake: Mutex<Option<Sender<()>>>,
    woken: Receiver<()>,
    next_link_id: AtomicU64,
    /// This instance's name on the control exchange.
    instance: String,
    /// Called with what another instance asks of this one (let go of a queue, relay it).
    on_request: Box<dyn Fn(control::Request) + Send + Sync>,
}

struct Node {
    url: BrokerUrl,
    links: Mutex<Vec<Arc<Link>>>,
    /// Held while dialling an extra connection, so that a burst of requests adds one, not many.
    extra_dial: Mutex<()>,
}

/// One AMQP connection.
struct Link {
    id: u64,
    connection: Mutex<Option<Connection>>,
    calls: Arc<Calls>,
    /// True while a request opens a channel alone on this connection, which does not answer
    /// at once; others wait their turn on `turn`, giving up when the connection stalls.
    opening: Mutex<bool>,
    turn: Condvar,
}

/// A channel, the name of the connection it came from (for logs), and that connection's calls.
pub struct Lease {
    pub channel: Channel,
    pub broker: String,
    pub calls: Arc<Calls>,
    /// The user the connection logs in as, when known (`BrokerUrl::login_user`).
    pub user: Option<String>,
}

/// How long a call to the broker may be in flight, with no other call on the connection
/// finishing meanwhile, before the connection counts as stalled: a broker that went silent
/// (a partition; a crash or restart closes the socket instead) is only declared dead by
/// heartbeats, after two of them, and new requests must not wait for that.
/// Three seconds: a broker answers in milliseconds, and even one busy with a thousand
/// simultaneous stream setups finishes some call on a connection well within that.
const STALL_LIMIT: Duration = Duration::from_secs(3);
/// How long calls may go unanswered before channels are opened one at a time again: only a
/// connection that answers gets a burst of openings side by side, each of which would hang
/// until heartbeats end the connection if the broker went silent.
const ANSWERING: Duration = Duration::from_millis(250);

/// The calls to the broker in flight on one connection.
pub struct Calls {
    pending: AtomicUsize,
    /// When a call last finished, or, if later, when calls started after a quiet spell: the
    /// broker has shown no sign of life since then.
    progress: Mutex<Instant>,
    metrics: Arc<Metrics>,
}

impl Calls {
    fn new(metrics: Arc<Metrics>) -> Calls {
        Calls {
            pending: AtomicUsize::new(0),
            progress: Mutex::new(Instant::now()),
            metrics,
        }
    }

    /// Runs `call` (one or more synchronous AMQP methods) counted as in flight.
    pub fn during<T>(&self, call: impl FnOnce() -> T) -> T {
        {
            let mut progress = lock(&self.progress);
            if self.pending.fetch_add(1, Ordering::AcqRel) == 0 {
                *progress = Instant::now();
            }
        }
        self.metrics.broker_calls.fetch_add(1, Ordering::Relaxed);
        let result = call();
        {
            let mut progress = lock(&self.progress);
            *progress = Instant::now();
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        self.metrics.broker_calls.fetch_sub(1, Ordering::Relaxed);
        result
    }

    fn stalled(&self) -> bool {
        self.unanswered_for(STALL_LIMIT)
    }

    /// Whether calls are in flight and none has finished for longer than `limit`.
    fn unanswered_for(&self, limit: Duration) -> bool {
        let progress = lock(&self.progress);
        self.pending.load(Ordering::Acquire) > 0 && progress.elapsed() > limit
    }
}

impl Broker {
    /// Starts one supervisor per node; returns at once (nodes connect in the background).
    /// `on_request` is called (on a supervisor thread) with each request of another instance:
    /// to let go of a queue, or to relay its stream.
    pub fn start(
        nodes: &[BrokerUrl],
        dial: Dial,
        metrics: Arc<Metrics>,
        on_request: Box<dyn Fn(control::Request) + Send + Sync>,
    ) -> Arc<Broker> {
        let (wake, woken) = crossbeam_channel::bounded(0);
        let broker = Arc::new(Broker {
            nodes: nodes
                .iter()
                .map(|url| {
                    Arc::new(Node {
                        url: url.clone(),
                        links: Mutex::new(Vec::new()),
                        extra_dial: Mutex::new(()),
                    })
                })
                .collect(),
            cursor: AtomicUsize::new(0),
            dial,
            metrics,
            closing: AtomicBool::new(false),
            wake: Mutex::new(Some(wake)),
            woken,
            next_link_id: AtomicU64::new(1),
            instance: format!(
                "eventsourced-{}-{:016x}",
                std::process::id(),
                crate::random::next_u64()
            ),
            on_request,
        });
        for (index, node) in broker.nodes.iter().enumerate() {
            let broker = Arc::clone(&broker);
            let node = Arc::clone(node);
            let spawned = thread::Builder::new()
                .name(format!("broker-{index}"))
                .stack_size(SUPERVISOR_STACK)
                .spawn(move || broker.supervise(&node));
            if let Err(e) = spawned {
                warn!("cannot start the supervisor of broker node {index}: {e}");
            }
        }
        broker
    }

    /// Whether a stream could be served now: a connection is up and answering.
    pub fn readiness(&self) -> Result<(), &'static str> {
        let links: Vec<Arc<Link>> = self
            .nodes
            .iter()
            .flat_map(|n| lock(&n.links).clone())
            .collect();
        if links.is_empty() {
            Err("broker: no connection available")
        } else if links.iter().all(|l| l.calls.stalled()) {
            Err("broker: not answering")
        } else {
            Ok(())
        }
    }

    /// A new channel on the next connection in turn, opened with the broker.
    pub fn open_channel(&self) -> Result<Lease, BrokerError> {
        self.open(Open::Answered)
    }

    /// A new channel as `open_channel` gives, whose open is not waited for: the broker's
    /// answer comes before that of the channel's first call that waits, which fails if the
    /// open did. A stream's set-up makes its calls in one round trip so.
    pub fn open_channel_deferred(&self) -> Result<Lease, BrokerError> {
        self.open(Open::Deferred)
    }

    fn open(&self, open: Open) -> Result<Lease, BrokerError> {
        let links: Vec<(Arc<Node>, Arc<Link>)> = self
            .nodes
            .iter()
            .flat_map(|node| {
                lock(&node.links)
                    .iter()
                    .map(|link| (Arc::clone(node), Arc::clone(link)))
                    .collect::<Vec<_>>()
            })
            .collect();
        if links.is_empty() {
            return Err(BrokerError::Unavailable);
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        let mut silent = None;
        let mut full_node = None;
        for i in 0..links.len() {
            let (node, link) = &links[(start + i) % links.len()];
            match link.open_channel(open) {
                Ok(channel) => return Ok(self.lease(node, link, channel)),
                Err(OpenError::Stalled) => {
                    silent.get_or_insert_with(|| node.url.address());
                }
                Err(OpenError::Exhausted) => full_node = full_node.or(Some(Arc::clone(node))),
                Err(OpenError::Gone) => {}
                Err(OpenError::Amqp(e)) => last_error = Some(node.url.scrub(&e.to_string())),
            }
        }
        if let Some(node) = full_node {
            return self.open_on_extra_link(&node, open);
        }
        Err(match (last_error, silent) {
            (Some(error), _) => BrokerError::Channel(error),
            (None, Some(address)) => BrokerError::NotAnswering(address),
            (None, None) => BrokerError::Unavailable,
        })
    }

    fn lease(&self, node: &Node, link: &Link, channel: Channel) -> Lease {
        Lease {
            channel,
            broker: node.url.address(),
            user: node.url.login_user().map(str::to_string),
            calls: Arc::clone(&link.calls),
        }
    }

    /// Every connection of `node` has used its negotiated `channel_max`: open one more.
    fn open_on_extra_link(
        self: &Broker,
        node: &Arc<Node>,
        open: Open,
    ) -> Result<Lease, BrokerError> {
        let _one_at_a_time = lock(&node.extra_dial);
        // Another request may have added a connection while this one waited.
        for link in lock(&node.links).clone() {
            if let Ok(channel) = link.open_channel(open) {
                return Ok(self.lease(node, &link, channel));
            }
        }
        let (link, blocked) = self
            .dial(node)
            .map_err(|e| BrokerError::Channel(format!("extra connection to {}: {e}", node.url)))?;
        info!(
            "opened an extra connection to {} (all channels in use)",
            node.url
        );
        let channel = link.open_channel(open).map_err(|e| match e {
            OpenError::Amqp(e) => BrokerError::Channel(node.url.scrub(&e.to_string())),
            _ => BrokerError::Unavailable,
        })?;
        self.attach(node, &link);
        let lease = self.lease(node, &link, channel);
        let watched = Arc::clone(node);
        let metrics = Arc::clone(&self.metrics);
        let spawned = thread::Builder::new()
            .name("broker-extra".into())
            .stack_size(SUPERVISOR_STACK)
            .spawn(move || {
                watch(&blocked, &watched.url);
                detach(&watched, &link, &metrics);
                debug!("extra connection to {} closed", watched.url);
            });
        if let Err(e) = spawned {
            warn!("cannot watch the extra connection to {}: {e}", node.url);
        }
        Ok(lease)
    }

    /// Keeps one connection to `node` up until shutdown.
    fn supervise(&self, node: &Arc<Node>) {
        let mut backoff = Backoff::new();
        while !self.closing.load(Ordering::Acquire) {
            match self.dial(node) {
                Ok((link, blocked)) => {
                    self.attach(node, &link);
                    info!("connected to broker {}", node.url);
                    backoff.reset();
                    self.serve_link(&link, &blocked, &node.url);
                    detach(node, &link, &self.metrics);
                    if self.closing.load(Ordering::Acquire) {
                        break;
                    }
                    warn!("lost connection to broker {}", node.url);
                }
                Err(e) => warn!("cannot connect to broker {}: {e}", node.url),
            }
            let delay = backoff.next_delay();
            info!(
                "re-dialling broker {} in {:.1} s",
                node.url,
                delay.as_secs_f32()
            );
            // Returns at once on shutdown, when the sender is dropped.
            let _ = self.woken.recv_timeout(delay);
        }
    }

    /// This instance's name on the control exchange.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Until the connection of `link` is gone: listens for other instances asking for a queue
    /// to be let go of, and logs flow-control notices.
    fn serve_link(
        &self,
        link: &Link,
        blocked: &Receiver<ConnectionBlockedNotification>,
        url: &BrokerUrl,
    ) {
        let channel = {
            let mut connection = lock(&link.connection);
            match connection.as_mut().map(|c| c.open_channel(None)) {
                Some(Ok(channel)) => channel,
                Some(Err(e)) => {
                    warn!("broker {url}: no takeover across instances on this connection: {e}");
                    return watch(blocked, url);
                }
                None => return,
            }
        };
        let consumer = match control::listen(&channel) {
            Ok(consumer) => consumer,
            Err(e) => {
                warn!("broker {url}: no takeover across instances on this connection: {e}");
                return watch(blocked, url);
            }
        };
        loop {
            select! {
                recv(blocked) -> notice => match notice {
                    Ok(notice) => log_flow_control(notice, url),
                    Err(_) => return,
                },
                recv(consumer.receiver()) -> message => match message {
                    Ok(ConsumerMessage::Delivery(delivery)) => {
                        let user = url.login_user();
                        if let Some(request) = control::request(&delivery, &self.instance, user) {
                            debug!("another instance asks: {request:?}");
                            (self.on_request)(request);
                        }
                    }
                    // The control channel ended but the connection may live on.
                    _ => {
                        warn!("broker {url}: takeover across instances stopped on this connection");
                        return watch(blocked, url);
                    }
                },
            }
        }
    }

    fn dial(
        &self,
        node: &Node,
    ) -> Result<(Arc<Link>, Receiver<ConnectionBlockedNotification>), String> {
        let tuning = ConnectionTuning::default().mem_channel_bound(MEM_CHANNEL_BOUND);
        let mut connection = connect(&node.url, &self.dial, tuning)?;
        // The sender of this channel lives in the connection's I/O thread: when the connection
        // dies for any reason, the receiver disconnects. That is our death notice.
        let blocked = connection
            .listen_for_connection_blocked()
            .map_err(|e| node.url.scrub(&e.to_string()))?;
        let link = Arc::new(Link {
            id: self.next_link_id.fetch_add(1, Ordering::Relaxed),
            connection: Mutex::new(Some(connection)),
            calls: Arc::new(Calls::new(Arc::clone(&self.metrics))),
            opening: Mutex::new(false),
            turn: Condvar::new(),
        });
        Ok((link, blocked))
    }

    fn attach(&self, node: &Node, link: &Arc<Link>) {
        lock(&node.links).push(Arc::clone(link));
        self.metrics
            .broker_connections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Stops re-dialling and closes every connection (unacked messages return to their queues).
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        lock(&self.wake).take();
        for node in &self.nodes {
            for link in lock(&node.links).clone() {
                if let Some(connection) = lock(&link.connection).take() {
                    if let Err(e) = connection.close() {
                        debug!(
                            "closing connection to {}: {}",
                            node.url,
                            node.url.scrub(&e.to_string())
                        );
                    }
                }
            }
        }
    }
}

enum OpenError {
    /// The connection has used all its channel ids.
    Exhausted,
    /// The broker has not answered this connection's calls for a while.
    Stalled,
    /// The connection is already closed.
    Gone,
    Amqp(amiquip::Error),
}

impl Link {
    /// A channel of this connection. The channel id is taken under the connection's lock (by
    /// amiquip's I/O thread, which answers at once; for a deferred open, here, without asking
    /// it); the round trip to the broker is outside it, so that a burst of streams opens its
    /// channels side by side. A connection whose
    /// calls have gone unanswered for a moment (`ANSWERING`) opens one at a time, so that only
    /// one request hangs on a broker that went silent, and the others give up when it counts
    /// as stalled and go elsewhere.
    fn open_channel(&self, open: Open) -> Result<Channel, OpenError> {
        // (A stalled connection has been unanswered longer still: `wait_turn` refuses it.)
        let _turn = if self.calls.unanswered_for(ANSWERING) {
            Some(self.wait_turn()?)
        } else {
            None
        };
        let allocated = {
            let mut connection = lock(&self.connection);
            let connection = connection.as_mut().ok_or(OpenError::Gone)?;
            match open {
                Open::Answered => connection.allocate_channel(None),
                // Without waiting for amiquip's I/O thread: the lock is held only for the
                // moment an id is taken.
                Open::Deferred => connection.allocate_channel_now(),
            }
            .map_err(|e| match e {
                amiquip::Error::ExhaustedChannelIds => OpenError::Exhausted,
                e => OpenError::Amqp(e),
            })?
        };
        match open {
            Open::Answered => self.calls.during(|| allocated.open()),
            Open::Deferred => allocated.open_deferred(),
        }
        .map_err(OpenError::Amqp)
    }

    /// Waits until no other request opens a channel alone here, as long as the connection
    /// does not count as stalled.
    fn wait_turn(&self) -> Result<Turn<'_>, OpenError> {
        let mut busy = lock(&self.opening);
        loop {
            if self.calls.stalled() {
                return Err(OpenError::Stalled);
            }
            if !*busy {
                break;
            }
            busy = self
                .turn
                .wait_timeout(busy, Duration::from_millis(100))
                .map_or_else(|p| p.into_inner().0, |(guard, _)| guard);
        }
        *busy = true;
        Ok(Turn(self))
    }
}

/// Ends a request's turn at opening a channel alone, however the opening ended.
struct Turn<'a>(&'a Link);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *lock(&self.0.opening) = false;
        self.0.turn.notify_one();
    }
}

/// Blocks until the connection behind `blocked` is gone, logging flow-control notices meanwhile.
fn watch(blocked: &Receiver<ConnectionBlockedNotification>, url: &BrokerUrl) {
    while let Ok(notice) = blocked.recv() {
        log_flow_control(notice, url);
    }
}

fn log_flow_control(notice: ConnectionBlockedNotification, url: &BrokerUrl) {
    match notice {
        ConnectionBlockedNotification::Blocked(reason) => {
            warn!("broker {url} blocked this connection: {reason}")
        }
        ConnectionBlockedNotification::Unblocked => {
            info!("broker {url} unblocked this connection")
        }
    }
}

fn detach(node: &Node, link: &Arc<Link>, metrics: &Metrics) {
    let was_attached = {
        let mut links = lock(&node.links);
        let before = links.len();
        links.retain(|l| l.id != link.id);
        links.len() != before
    };
    if was_attached {
        metrics.broker_connections.fetch_sub(1, Ordering::Relaxed);
    }
    // The I/O thread has ended, so this join returns at once.
    drop(lock(&link.connection).take());
}

/// Whether a channel's open waits for the broker's answer.
#[derive(Clone, Copy)]
enum Open {
    Answered,
    Deferred,
}

/// A poisoned lock only means another thread panicked while holding it; the data (a list of
/// connections) is still usable, and one stream's panic must not stop the others.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
