//! One client's session: claim the queue, declare it, consume it exclusively, and write each
//! delivery as an SSE frame, acking only what has been written and flushed.

use crate::broker::Broker;
use crate::http::RequestHead;
use crate::metrics::Metrics;
use crate::queue;
use crate::registry::Registry;
use crate::response::{Answers, Client, Refusal};
use crate::sse;
use amiquip::{Channel, ConsumerMessage, ConsumerOptions, Delivery};
use crossbeam_channel::{select, Receiver};
use log::{debug, info};
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The text the original sends when a queue already has a consumer.
pub const REASON_TAKEN: &str = "server: max consumers exceeded";

/// What every stream shares.
pub struct StreamContext {
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub answers: Answers,
    pub settings: StreamSettings,
    /// Never sent on; disconnects when the server shuts down.
    pub shutdown: Receiver<()>,
}

pub struct StreamSettings {
    /// `x-expires` in milliseconds, a signed 32-bit integer like the original's.
    pub expires_ms: i32,
    pub prefetch: u16,
    /// Idle time after which a comment frame is sent; `None` sends none.
    pub keepalive: Option<Duration>,
}

/// Why a stream ended, for the log.
enum End {
    ClientGone(std::io::Error),
    Cancelled,
    ChannelClosed(String),
    Shutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientGone(e) => write!(f, "client gone ({e})"),
            End::Cancelled => f.write_str("consumer cancelled by the broker"),
            End::ChannelClosed(why) => write!(f, "broker channel closed ({why})"),
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
    let Some(_claim) = context.registry.claim(queue) else {
        return refuse(REASON_TAKEN, None);
    };
    let lease = match context.broker.open_channel() {
        Ok(lease) => lease,
        Err(e) => return refuse(&e.to_string(), Some(1)),
    };
    let channel = lease.channel;
    if let Err(e) = declare(&channel, queue, &context.settings) {
        return refuse(&format!("broker: {e}"), None);
    }
    let options = ConsumerOptions {
        exclusive: true,
        ..ConsumerOptions::default()
    };
    let consumer = match channel.basic_consume(queue, options) {
        Ok(consumer) => consumer,
        // ACCESS_REFUSED: another consumer (of this or another server) holds the queue.
        Err(amiquip::Error::ServerClosedChannel { code: 403, .. }) => {
            return refuse(REASON_TAKEN, None)
        }
        Err(e) => return refuse(&format!("broker: {e}"), None),
    };

    let peer = client.peer;
    let started = Instant::now();
    info!(
        "stream {queue:?} opened for {peer} on broker {}",
        lease.broker
    );
    context.metrics.consumers.fetch_add(1, Ordering::Relaxed);
    let mut delivered = 0u64;
    let end = run(&mut client.socket, &consumer, context, &mut delivered);
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
    // The client sees the end of the stream, and its EventSource reconnects.
    let _ = client.socket.shutdown(std::net::Shutdown::Both);
    info!(
        "stream {queue:?} closed for {peer} after {:.1} s and {delivered} messages: {end}",
        started.elapsed().as_secs_f32()
    );
}

fn declare(channel: &Channel, queue: &str, settings: &StreamSettings) -> amiquip::Result<()> {
    queue::declare(channel, queue, settings.expires_ms)?;
    channel.qos(0, settings.prefetch, false)
}

/// Writes the head, then frames, until something ends the stream. Acks follow flushes.
fn run(
    client: &mut TcpStream,
    consumer: &amiquip::Consumer<'_>,
    context: &StreamContext,
    delivered: &mut u64,
) -> End {
    let mut out = context.answers.stream_head();
    out.extend_from_slice(sse::BANNER);
    if let Err(e) = send(client, &out) {
        return End::ClientGone(e);
    }
    let deliveries = consumer.receiver();
    let batch_limit = usize::from(context.settings.prefetch);
    // Without keep-alives the idle wait is simply very long.
    let idle = context
        .settings
        .keepalive
        .unwrap_or(Duration::from_secs(86_400 * 365));
    loop {
        let first = select! {
            recv(deliveries) -> message => message,
            recv(context.shutdown) -> _ => return End::Shutdown,
            default(idle) => {
                out.clear();
                sse::push_comment(&mut out, "keep-alive");
                if let Err(e) = send(client, &out) {
                    return End::ClientGone(e);
                }
                if peer_closed(client) {
                    return End::ClientGone(closed());
                }
                continue;
            }
        };
        let mut last = match first {
            Ok(ConsumerMessage::Delivery(delivery)) => delivery,
            Ok(other) => return ended_by(other),
            Err(_) => return End::ChannelClosed("connection lost".into()),
        };
        // Frames of deliveries that are already waiting go out in the same write.
        out.clear();
        push_frame(&mut out, &mut last);
        let mut count = 1u64;
        let mut pending_end = None;
        while (count as usize) < batch_limit {
            match deliveries.try_recv() {
                Ok(ConsumerMessage::Delivery(mut delivery)) => {
                    push_frame(&mut out, &mut delivery);
                    last = delivery;
                    count += 1;
                }
                Ok(other) => {
                    pending_end = Some(ended_by(other));
                    break;
                }
                Err(_) => break,
            }
        }
        if let Err(e) = send(client, &out) {
            return End::ClientGone(e);
        }
        // A client that has already closed its side will never read what was just written:
        // those deliveries stay unacked and go back to the queue.
        if peer_closed(client) {
            return End::ClientGone(closed());
        }
        *delivered += count;
        context.metrics.record_deliveries(count);
        // Every delivery up to `last` on this channel has been written and flushed.
        if let Err(e) = consumer.ack_multiple(last) {
            return End::ChannelClosed(e.to_string());
        }
        if let Some(end) = pending_end {
            return end;
        }
    }
}

fn push_frame(out: &mut Vec<u8>, delivery: &mut Delivery) {
    let body = std::mem::take(&mut delivery.body);
    sse::push_event(
        out,
        &sse::Event {
            id: None,
            event: None,
            data: &body,
        },
    );
}

fn send(client: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes)?;
    client.flush()
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
