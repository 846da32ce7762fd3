//! One client's session: claim the queue, declare it, consume it exclusively, and write each
//! delivery as an SSE frame. A written delivery is acked only once the client's TCP has
//! acknowledged its bytes and `replay_window` newer deliveries have reached the client too:
//! frames lost in our send queue (a partition, a stalled client) are never acked, and the window
//! covers what may die unread beyond the client's kernel (its socket buffer, a proxy). Unacked deliveries
//! return to the queue when the stream ends; on the next connection those up to the client's
//! `Last-Event-ID` are acked without being sent again.

use crate::broker::Broker;
use crate::config::Binding;
use crate::event_id;
use crate::http::RequestHead;
use crate::metrics::Metrics;
use crate::pattern::RequestParts;
use crate::queue;
use crate::registry::{Conflict, Registry};
use crate::response::{Answers, Client, Refusal};
use crate::sse;
use amiquip::{Channel, Consumer, ConsumerMessage, ConsumerOptions, Delivery, FieldTable};
use crossbeam_channel::{select, Receiver, RecvTimeoutError};
use log::{debug, info};
use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The text the original sends when a queue already has a consumer.
pub const REASON_TAKEN: &str = "server: max consumers exceeded";
/// How long a takeover waits for the old stream to hand its queue back.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);
/// How long a resuming stream gathers its first deliveries, so that redeliveries arriving just
/// after fresh messages are still sent first.
const RESUME_WAIT: Duration = Duration::from_millis(200);
/// How often written deliveries beyond the window are checked for the client's TCP ack.
const SETTLE_INTERVAL: Duration = Duration::from_millis(20);

/// What every stream shares.
pub struct StreamContext {
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub answers: Arc<Answers>,
    pub settings: StreamSettings,
    /// Never sent on; disconnects when the server shuts down.
    pub shutdown: Receiver<()>,
}

pub struct StreamSettings {
    /// The queue declaration's arguments (`x-expires` and `queue.arguments`).
    pub arguments: FieldTable,
    /// Exchanges the queue is bound to on every connect.
    pub bind: Vec<Binding>,
    /// Whether the AMQP `type` becomes `event:`.
    pub event_types: bool,
    /// Milliseconds sent as `retry:` at stream start (0: none), moved by `retry_jitter` percent.
    pub retry: u32,
    pub retry_jitter: u8,
    pub prefetch: u16,
    /// Written deliveries kept unacked until this many newer ones have been written.
    pub replay_window: u16,
    /// Whether frames carry `id:` fields.
    pub event_ids: bool,
    pub conflict: Conflict,
    /// Idle time after which a comment frame is sent; `None` sends none.
    pub keepalive: Option<Duration>,
}

impl StreamSettings {
    /// Deliveries the broker may have unacked on one stream: the window plus the flow.
    fn qos(&self) -> u16 {
        self.prefetch.saturating_add(self.replay_window)
    }
}

/// Why a stream ended, for the log.
enum End {
    ClientGone(std::io::Error),
    Cancelled,
    ChannelClosed(String),
    TakenOver,
    Shutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientGone(e) => write!(f, "client gone ({e})"),
            End::Cancelled => f.write_str("consumer cancelled by the broker"),
            End::ChannelClosed(why) => write!(f, "broker channel closed ({why})"),
            End::TakenOver => f.write_str("taken over by a new request for the queue"),
            End::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// Serves `client` as the stream of `queue` until the client, the broker or the server ends it.
pub fn serve(mut client: Client, head: &RequestHead, queue: &str, context: &StreamContext) {
    let what = format!("GET {}", head.target);
    let mut refuse = |reason: &str, retry_after: Option<u32>| {
        let refusal = Refusal {
            reason,
            retry_after,
        };
        context.answers.refuse(&mut client, &what, 503, &refusal);
    };
    let settings = &context.settings;
    let Some(claim) = context
        .registry
        .claim(queue, settings.conflict, TAKEOVER_WAIT)
    else {
        return refuse(REASON_TAKEN, None);
    };
    let lease = match context.broker.open_channel() {
        Ok(lease) => lease,
        Err(e) => return refuse(&e.to_string(), Some(1)),
    };
    let channel = lease.channel;
    // Counted as calls in flight: a broker that stops answering marks its connection stalled,
    // and further requests go elsewhere or are refused at once instead of waiting here too.
    if let Err(e) = lease
        .calls
        .during(|| declare(&channel, queue, head, settings))
    {
        return refuse(&e, None);
    }
    let options = ConsumerOptions {
        exclusive: true,
        ..ConsumerOptions::default()
    };
    let consumer = match lease.calls.during(|| channel.basic_consume(queue, options)) {
        Ok(consumer) => consumer,
        // ACCESS_REFUSED: a consumer elsewhere (another server) holds the queue.
        Err(amiquip::Error::ServerClosedChannel { code: 403, .. }) => {
            return refuse(REASON_TAKEN, Some(1))
        }
        Err(e) => return refuse(&format!("broker: {e}"), None),
    };

    let peer = client.peer;
    let started = Instant::now();
    let last_event_id = settings.event_ids.then(|| last_event_id(head)).flatten();
    info!(
        "stream {queue:?} opened for {peer} on broker {}{}",
        lease.broker,
        last_event_id
            .as_deref()
            .map(|id| format!(", resuming after {id:?}"))
            .unwrap_or_default()
    );
    context.metrics.consumers.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        socket: &mut client.socket,
        consumer: &consumer,
        context,
        window: VecDeque::new(),
        written: 0,
        out: Vec::new(),
        delivered: 0,
    };
    let end = session.run(last_event_id.as_deref(), &claim.stop);
    let delivered = session.delivered;
    context.metrics.consumers.fetch_sub(1, Ordering::Relaxed);
    // amiquip's I/O thread, on cancel-ok, first wakes the cancelling `Consumer::drop` and only
    // then tells the consumer's receiver; if that receiver is gone by then, it treats this as
    // fatal and closes the whole connection, ending every stream on it. A clone of the receiver
    // kept until the channel is closed makes that last message land.
    let keep_receiver = consumer.receiver().clone();
    drop(consumer);
    // Closing the channel hands every unacked delivery back to the queue.
    if let Err(e) = channel.close() {
        debug!("closing the channel of {queue:?}: {e}");
    }
    drop(keep_receiver);
    // Only now may a takeover proceed: the messages are back in the queue.
    drop(claim);
    // The client sees the end of the stream, and its EventSource reconnects.
    let _ = client.socket.shutdown(std::net::Shutdown::Both);
    info!(
        "stream {queue:?} closed for {peer} after {:.1} s and {delivered} messages: {end}",
        started.elapsed().as_secs_f32()
    );
}

/// Declares the queue, binds it as configured (idempotent), and sets the stream's QoS.
fn declare(
    channel: &Channel,
    name: &str,
    head: &RequestHead,
    settings: &StreamSettings,
) -> Result<(), String> {
    let broker = |e: amiquip::Error| format!("broker: {e}");
    queue::declare(channel, name, &settings.arguments).map_err(broker)?;
    let headers = head.header_pairs();
    let parts = RequestParts {
        query: head.query(),
        headers: &headers,
    };
    for binding in &settings.bind {
        let exchange = binding
            .exchange
            .resolve_text(&parts)
            .map_err(|r| r.reason().to_string())?;
        let key = binding
            .routing_key
            .resolve_text(&parts)
            .map_err(|r| r.reason().to_string())?;
        channel
            .queue_bind(name, exchange, key, FieldTable::default())
            .map_err(broker)?;
    }
    channel.qos(0, settings.qos(), false).map_err(broker)
}

/// The last event the client has: the `Last-Event-ID` header browsers send on reconnect, or
/// the `lastEventId` query parameter EventSource polyfills send instead.
fn last_event_id(head: &RequestHead) -> Option<String> {
    let from_query = || {
        head.query().split('&').find_map(|pair| {
            let value = pair.strip_prefix("lastEventId=")?;
            crate::pattern::form_decode(value).and_then(|v| String::from_utf8(v).ok())
        })
    };
    head.header("Last-Event-ID")
        .map(str::to_string)
        .or_else(from_query)
        .filter(|id| !id.is_empty())
}

struct Session<'a> {
    socket: &'a mut TcpStream,
    consumer: &'a Consumer<'a>,
    context: &'a StreamContext,
    /// Written, unacked deliveries (bodies dropped) with the stream offset their frame ends
    /// at, oldest first.
    window: VecDeque<(Delivery, u64)>,
    /// Bytes written to the socket since the stream began.
    written: u64,
    out: Vec<u8>,
    delivered: u64,
}

impl Session<'_> {
    fn run(&mut self, last_event_id: Option<&str>, taken_over: &Receiver<()>) -> End {
        let mut head = self.context.answers.stream_head();
        head.extend_from_slice(sse::BANNER);
        let settings = &self.context.settings;
        if settings.retry > 0 {
            // Moved at random per stream, so that a restart does not bring every browser back in
            // the same instant.
            let retry = crate::random::jitter(f64::from(settings.retry), settings.retry_jitter);
            sse::push_retry(&mut head, retry.round() as u32);
        }
        if let Err(e) = self.send(&head) {
            return End::ClientGone(e);
        }
        if let Some(id) = last_event_id {
            let replayed = match self.resume_after(id) {
                Ok(replayed) => replayed,
                Err(end) => return end,
            };
            if let Err(end) = self.write(replayed) {
                return end;
            }
        }
        let deliveries = self.consumer.receiver();
        let batch_limit = usize::from(self.context.settings.prefetch);
        // Without keep-alives the idle wait is simply very long.
        let keepalive =
            (self.context.settings.keepalive).unwrap_or(Duration::from_secs(86_400 * 365));
        let mut last_write = Instant::now();
        loop {
            // While written deliveries wait for the client's TCP to acknowledge them, look again
            // soon: they hold places in the broker's prefetch window.
            let idle = if self.unsettled() {
                SETTLE_INTERVAL
            } else {
                keepalive.saturating_sub(last_write.elapsed())
            };
            let first = select! {
                recv(deliveries) -> message => message,
                recv(self.context.shutdown) -> _ => return End::Shutdown,
                recv(taken_over) -> _ => return End::TakenOver,
                default(idle) => {
                    if last_write.elapsed() >= keepalive {
                        if let Err(end) = self.keepalive() {
                            return end;
                        }
                        last_write = Instant::now();
                    }
                    if let Err(end) = self.settle() {
                        return end;
                    }
                    continue;
                }
            };
            let mut batch = match first {
                Ok(ConsumerMessage::Delivery(delivery)) => vec![delivery],
                Ok(other) => return ended_by(other),
                Err(_) => return End::ChannelClosed("connection lost".into()),
            };
            // Deliveries that are already waiting go out in the same write.
            let mut pending_end = None;
            while batch.len() < batch_limit {
                match deliveries.try_recv() {
                    Ok(ConsumerMessage::Delivery(delivery)) => batch.push(delivery),
                    Ok(other) => {
                        pending_end = Some(ended_by(other));
                        break;
                    }
                    Err(_) => break,
                }
            }
            if let Err(end) = self.write(batch) {
                return end;
            }
            last_write = Instant::now();
            if let Some(end) = pending_end {
                return end;
            }
        }
    }

    /// A resuming stream's first batch: what the broker sends in the first moments, with
    /// redeliveries (the previous stream's unacked tail, older) before fresh messages, and
    /// without those up to and including `last`, which are acked unsent. Redeliveries can arrive
    /// after fresh ones: another server's stream ends by cancelling its consumer and only then
    /// closing its channel, which is what hands its unacked messages back.
    fn resume_after(&mut self, last: &str) -> Result<Vec<Delivery>, End> {
        let limit = usize::from(self.context.settings.qos());
        let deadline = Instant::now() + RESUME_WAIT;
        let mut taken = Vec::new();
        while taken.len() < limit {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.consumer.receiver().recv_timeout(left) {
                Ok(ConsumerMessage::Delivery(delivery)) => taken.push(delivery),
                Ok(other) => return Err(ended_by(other)),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(End::ChannelClosed("connection lost".into()))
                }
            }
        }
        let (mut replayed, fresh): (Vec<Delivery>, Vec<Delivery>) =
            taken.into_iter().partition(|d| d.redelivered);
        let known = replayed
            .iter()
            .position(|d| event_id::of(&d.body, &d.properties) == last);
        if let Some(position) = known {
            // One by one: fresh deliveries with lower tags may be among the unsent.
            for delivery in replayed.drain(..=position) {
                self.consumer
                    .ack(delivery)
                    .map_err(|e| End::ChannelClosed(e.to_string()))?;
            }
            self.context
                .metrics
                .acks
                .fetch_add(position as u64 + 1, Ordering::Relaxed);
            debug!("skipped {} messages the client already has", position + 1);
        }
        replayed.extend(fresh);
        Ok(replayed)
    }

    /// Writes `batch` in one write, then acks what may be acked.
    fn write(&mut self, batch: Vec<Delivery>) -> Result<(), End> {
        if batch.is_empty() {
            return Ok(());
        }
        self.out.clear();
        let with_ids = self.context.settings.event_ids;
        let with_types = self.context.settings.event_types;
        for delivery in &batch {
            let id = with_ids.then(|| event_id::of(&delivery.body, &delivery.properties));
            let kind = delivery
                .properties
                .type_()
                .as_deref()
                .filter(|_| with_types);
            let event = sse::Event {
                id: id.as_deref(),
                event: kind,
                data: &delivery.body,
            };
            sse::push_event(&mut self.out, &event);
        }
        let frames = std::mem::take(&mut self.out);
        let sent = self.send(&frames);
        self.out = frames;
        sent.map_err(End::ClientGone)?;
        let count = batch.len() as u64;
        self.delivered += count;
        self.context.metrics.record_deliveries(count);
        // Every frame of the batch counts as ending with the write: conservative, never early.
        let end = self.written;
        self.window.extend(batch.into_iter().map(|mut delivery| {
            delivery.body = Vec::new();
            (delivery, end)
        }));
        self.settle()
    }

    /// Acks the oldest deliveries whose bytes the client's TCP has acknowledged, all but the
    /// newest `replay_window` of them: those may still die unread beyond the client's kernel.
    fn settle(&mut self) -> Result<(), End> {
        // A client that has closed its side will never read what is still in flight: those
        // deliveries stay unacked and go back to the queue.
        if peer_closed(self.socket) {
            return Err(End::ClientGone(closed()));
        }
        let received = self
            .written
            .saturating_sub(unacknowledged_bytes(self.socket));
        let at_client = self
            .window
            .iter()
            .take_while(|(_, end)| *end <= received)
            .count();
        let settled = at_client.saturating_sub(usize::from(self.context.settings.replay_window));
        if settled == 0 {
            return Ok(());
        }
        self.context
            .metrics
            .acks
            .fetch_add(settled as u64, Ordering::Relaxed);
        let done: Vec<Delivery> = self.window.drain(..settled).map(|(d, _)| d).collect();
        let newest = done.iter().map(Delivery::delivery_tag).max().unwrap_or(0);
        let ack =
            |result: amiquip::Result<()>| result.map_err(|e| End::ChannelClosed(e.to_string()));
        // One ack with `multiple` covers every delivery up to the newest tag, when nothing still
        // in the window has a lower tag (a resumed stream may send older redeliveries first).
        if self.window.iter().all(|(d, _)| d.delivery_tag() > newest) {
            if let Some(delivery) = done.into_iter().max_by_key(Delivery::delivery_tag) {
                ack(self.consumer.ack_multiple(delivery))?;
            }
        } else {
            for delivery in done {
                ack(self.consumer.ack(delivery))?;
            }
        }
        Ok(())
    }

    /// True while deliveries beyond the window wait for the client's TCP.
    fn unsettled(&self) -> bool {
        self.window.len() > usize::from(self.context.settings.replay_window)
    }

    fn keepalive(&mut self) -> Result<(), End> {
        let mut comment = Vec::new();
        sse::push_comment(&mut comment, "keep-alive");
        self.send(&comment).map_err(End::ClientGone)
    }

    /// The one place bytes go to the client: written, flushed, counted.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(bytes)?;
        self.socket.flush()?;
        self.written += bytes.len() as u64;
        self.context
            .metrics
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// True when the client has closed its side or reset the connection. A stream client sends
/// nothing after its request, so readable means end of stream (or an error).
fn peer_closed(client: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv into a one-byte buffer we own, on a socket we own; MSG_PEEK leaves any
    // data in place and MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            client.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => {
            let error = std::io::Error::last_os_error();
            !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            )
        }
    }
}

/// Bytes written to `client` that its TCP has not acknowledged yet (sent or not); 0 when the
/// kernel cannot say, which leaves the count-only window.
fn unacknowledged_bytes(client: &TcpStream) -> u64 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int into `queued`, a live local; the socket is ours.
    let status = unsafe { libc::ioctl(client.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if status == 0 {
        u64::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed by the client",
    )
}

fn ended_by(message: ConsumerMessage) -> End {
    match message {
        ConsumerMessage::Delivery(_) => End::ChannelClosed("unexpected delivery".into()),
        ConsumerMessage::ServerCancelled | ConsumerMessage::ClientCancelled => End::Cancelled,
        ConsumerMessage::ServerClosedChannel(e) | ConsumerMessage::ServerClosedConnection(e) => {
            End::ChannelClosed(e.to_string())
        }
        ConsumerMessage::ClientClosedChannel | ConsumerMessage::ClientClosedConnection => {
            End::Shutdown
        }
    }
}
