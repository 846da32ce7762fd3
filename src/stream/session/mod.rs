//! One client's session: claim the queue, declare it (a quorum queue: take its lock first),
//! consume it exclusively, write each delivery as an SSE frame, and hold what was written in the
//! ack window until the client can be taken to have it (see `window`). Held deliveries return to
//! the queue when the stream ends; the next connection skips those up to the client's
//! `Last-Event-ID` (see `resume`).
//!
//! Other streams of the queue here follow this one (`follower`): it keeps what it wrote in its
//! feed for them, acks nothing one of them may not have, and when its own client leaves first,
//! goes on consuming for them until the last has left.

mod running;

use crate::amqp::{holder, queue, Broker};
use crate::http::sse;
use crate::http::{Client, RequestHead, Responder};
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::stream::follower;
use crate::stream::hangup::HangupWatch;
use crate::stream::pattern::{Binding, RequestParts};
use crate::stream::registry::{Conflict, Registry, Turn};
use crate::stream::remote;
use crate::stream::takeover::{hold, no_consumer_left, TAKEOVER_POLL, TAKEOVER_WAIT};
use crate::stream::window::{AckWindow, Bounds};
use amiquip::{Channel, ConsumerOptions, FieldTable};
use crossbeam_channel::Receiver;
use log::{debug, info, warn};
use running::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a resuming stream gathers its first deliveries, so that redeliveries arriving just
/// after fresh messages are still sent first; each redelivery extends it by as much, since a
/// busy broker hands back a long tail slowly.
pub(super) const RESUME_WAIT: Duration = Duration::from_millis(200);
/// The longest a resuming stream gathers, however long redeliveries keep coming.
pub(super) const RESUME_WAIT_MAX: Duration = Duration::from_secs(3);
/// How often a window waiting on the client's TCP is looked at again.
pub(super) const SETTLE_INTERVAL: Duration = Duration::from_millis(20);
/// The longest idle wait: a stream without keep-alives and nothing held.
pub(super) const FOREVER: Duration = Duration::from_secs(86_400 * 365);

/// What every stream shares.
pub struct StreamContext {
    pub broker: Arc<Broker>,
    /// Tells a stream at once when its client closes or resets the connection.
    pub hangups: Arc<HangupWatch>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub responder: Arc<Responder>,
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
    /// Deliveries the broker may have in flight to a stream beyond what the window holds.
    pub prefetch: u16,
    /// What the ack window holds at most.
    pub window: Bounds,
    /// Bytes of the newest frames a stream keeps for other readers of its queue (`share`).
    pub shared_bytes: usize,
    /// Whether frames carry `id:` fields.
    pub event_ids: bool,
    pub conflict: Conflict,
    /// Idle time after which a comment frame is sent; `None` sends none.
    pub keepalive: Option<Duration>,
}

impl StreamSettings {
    /// Deliveries the broker may have unacked on one stream: the window plus the flow.
    pub fn qos(&self) -> u16 {
        let held = u16::try_from(self.window.messages).unwrap_or(u16::MAX);
        self.prefetch.saturating_add(held)
    }
}

/// Why a stream ended, for the log.
pub(super) enum End {
    ClientGone(std::io::Error),
    Cancelled,
    ChannelClosed(String),
    TakenOver,
    Shutdown,
    /// A follower's: the stream it followed ended.
    HolderEnded,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientGone(e) => write!(f, "client gone ({e})"),
            End::Cancelled => f.write_str("consumer cancelled by the broker"),
            End::ChannelClosed(why) => write!(f, "broker channel closed ({why})"),
            End::TakenOver => f.write_str("taken over by a new request for the queue"),
            End::Shutdown => f.write_str("server shutting down"),
            End::HolderEnded => f.write_str("the stream it followed ended"),
        }
    }
}

/// Serves `client` as the stream of `queue` until the client, the broker or the server ends it.
pub fn serve(mut client: Client, mut head: RequestHead, queue: &str, context: &StreamContext) {
    let settings = &context.settings;
    let deadline = Instant::now() + TAKEOVER_WAIT;
    // `share`, but for a reader whose last event only the broker can place (see `feed`).
    let mut conflict = settings.conflict;
    let mut claim = loop {
        match context.registry.turn(queue, conflict, TAKEOVER_WAIT) {
            Some(Turn::Hold(claim)) => break claim,
            Some(Turn::Follow(feed)) => {
                if let Some(following) = feed.follow() {
                    let Some(back) = follower::serve(client, head, queue, context, following)
                    else {
                        return;
                    };
                    (client, head) = back;
                    conflict = Conflict::Takeover;
                    continue;
                }
                // The stream is ending: its claim goes once its messages are back in the queue.
                if Instant::now() >= deadline {
                    let refusal = Refusal::QueueHeld;
                    return context.responder.refuse(&mut client, Some(&head), refusal);
                }
                std::thread::sleep(TAKEOVER_POLL);
            }
            None => {
                let refusal = match conflict {
                    Conflict::Reject => Refusal::QueueTaken,
                    Conflict::Share | Conflict::Takeover => Refusal::QueueHeld,
                };
                return context.responder.refuse(&mut client, Some(&head), refusal);
            }
        }
    };
    // Only `share` has followers; the others keep no frames for them.
    if settings.conflict == Conflict::Share {
        claim.feed.keep(settings.shared_bytes);
    }
    // A queue that keeps one consumer active lets a second one wait silently: its lock says
    // who holds it (see `amqp::holder`).
    let single_active = queue::single_active(&settings.arguments);
    let mut lease = if single_active {
        hold(queue, context, conflict)
    } else {
        // Its open-ok comes with the answers of `declare`'s calls: one round trip for all.
        context.broker.open_channel_deferred().map_err(|e| {
            warn!("stream {queue:?}: {e}");
            e.refusal()
        })
    };
    if single_active
        && settings.conflict == Conflict::Share
        && lease.as_ref().err() == Some(&Refusal::QueueHeld)
    {
        // Its lock is held on another instance, which relays the stream (`relay`).
        drop(claim);
        if remote::follow(&mut client, &head, queue, context, true) {
            return;
        }
        // Nobody relays it, or the holder cannot place the client's last event: asked to let
        // go, as with `takeover`.
        claim = match context
            .registry
            .turn(queue, Conflict::Takeover, TAKEOVER_WAIT)
        {
            Some(Turn::Hold(claim)) => claim,
            _ => {
                let refusal = Refusal::QueueHeld;
                return context.responder.refuse(&mut client, Some(&head), refusal);
            }
        };
        claim.feed.keep(settings.shared_bytes);
        lease = hold(queue, context, Conflict::Takeover);
    }
    let mut refuse = |refusal: Refusal| context.responder.refuse(&mut client, Some(&head), refusal);
    let lease = match lease {
        Ok(lease) => lease,
        Err(refusal) => return refuse(refusal),
    };
    let channel = lease.channel;
    let lock = if single_active {
        match lease.calls.during(|| holder::keep(&channel, queue)) {
            Ok(lock) => Some(lock),
            Err(e) => {
                warn!("stream {queue:?}: keeping its lock failed: {e}");
                return refuse(Refusal::BrokerFailed);
            }
        }
    } else {
        None
    };
    // Counted as calls in flight: a broker that stops answering marks its connection stalled,
    // and further requests go elsewhere or are refused at once instead of waiting here too.
    let declared = match lease
        .calls
        .during(|| declare(&channel, queue, &head, settings))
    {
        Ok(declared) => declared,
        Err(refusal) => return refuse(refusal),
    };
    if declared.consumers > 0 && settings.conflict == Conflict::Share && !single_active {
        // A stream on another instance holds the queue: it relays what it writes (`relay`).
        // Not claimed here meanwhile, so that another request here follows it the same way.
        drop(claim);
        if remote::follow(&mut client, &head, queue, context, false) {
            drop(lock);
            if let Err(e) = channel.close() {
                debug!("closing the channel of {queue:?}: {e}");
            }
            return;
        }
        // Nobody relays it (a consumer that is not an instance of ours): asked to let go.
        claim = match context
            .registry
            .turn(queue, settings.conflict, TAKEOVER_WAIT)
        {
            Some(Turn::Hold(claim)) => claim,
            _ => {
                let refusal = Refusal::QueueHeld;
                return context.responder.refuse(&mut client, Some(&head), refusal);
            }
        };
    }
    let mut refuse = |refusal: Refusal| context.responder.refuse(&mut client, Some(&head), refusal);
    if declared.consumers > 0 {
        // A stream on another instance holds the queue (this one's was settled by the claim);
        // with the lock held here, a consumer still counted is one that is leaving.
        let deadline = Instant::now() + TAKEOVER_WAIT;
        let taken = match (settings.conflict, single_active) {
            (Conflict::Reject, false) => Err(Refusal::QueueTaken),
            (Conflict::Reject, true) => no_consumer_left(
                &channel,
                &lease.calls,
                queue,
                &settings.arguments,
                None,
                deadline,
            )
            .map_err(|refusal| {
                if refusal == Refusal::QueueHeld {
                    Refusal::QueueTaken
                } else {
                    refusal
                }
            }),
            // A stream on another instance is asked to let go, as with `takeover`.
            (Conflict::Share | Conflict::Takeover, _) => no_consumer_left(
                &channel,
                &lease.calls,
                queue,
                &settings.arguments,
                Some(context.broker.instance()),
                deadline,
            ),
        };
        if let Err(refusal) = taken {
            return refuse(refusal);
        }
    }
    let options = ConsumerOptions {
        exclusive: true,
        ..ConsumerOptions::default()
    };
    let consumer = match lease.calls.during(|| channel.basic_consume(queue, options)) {
        Ok(consumer) => consumer,
        // ACCESS_REFUSED: a consumer elsewhere (another server) holds the queue.
        Err(amiquip::Error::ServerClosedChannel { code: 403, .. }) => {
            return refuse(match settings.conflict {
                Conflict::Reject => Refusal::QueueTaken,
                Conflict::Share | Conflict::Takeover => Refusal::QueueHeld,
            })
        }
        Err(e) => {
            warn!("stream {queue:?}: consuming failed: {e}");
            return refuse(Refusal::BrokerFailed);
        }
    };

    let peer = client.peer;
    let started = Instant::now();
    let last_event_id = settings.event_ids.then(|| head.last_event_id()).flatten();
    // Not kept for the stream's life: its headers are a few hundred bytes in each stream.
    drop(head);
    info!(
        "stream {queue:?} opened for {peer} on broker {}{}",
        lease.broker,
        resuming(last_event_id.as_deref())
    );
    let _open = context.metrics.consumers.count();
    let watch = watch_hangups(context, &client, queue);
    let never = crossbeam_channel::never();
    let gone = watch.as_ref().map_or(&never, |w| &w.gone);
    let mut session = Session {
        client: &mut client,
        consumer: &consumer,
        context,
        feed: &claim.feed,
        lost: None,
        window: AckWindow::new(settings.window),
        written: 0,
        delivered: 0,
        quiet_from: Some(Instant::now()),
        burst: false,
        waiting: declared.messages,
    };
    let end = session.run(last_event_id, &claim.stop, gone);
    let delivered = session.delivered;
    // Its followers end their streams too, and come back to whichever stream holds it next.
    claim.feed.end();
    // Stop watching before the socket can close and its descriptor be reused.
    drop(watch);
    // amiquip's I/O thread, on cancel-ok, first wakes the cancelling `Consumer::drop` and only
    // then tells the consumer's receiver; if that receiver is gone by then, it treats this as
    // fatal and closes the whole connection, ending every stream on it. A clone of the receiver
    // kept until the channel is closed makes that last message land.
    let keep_receiver = consumer.receiver().clone();
    drop(consumer);
    // The lock goes last but for the channel (the same care for its cancel-ok).
    let keep_lock_receiver = lock.as_ref().map(|lock| lock.receiver().clone());
    drop(lock);
    // Closing the channel hands every unacked delivery back to the queue.
    if let Err(e) = channel.close() {
        debug!("closing the channel of {queue:?}: {e}");
    }
    drop(keep_receiver);
    drop(keep_lock_receiver);
    // Only now may a takeover proceed: the messages are back in the queue.
    drop(claim);
    // The client sees the end of the stream, and its EventSource reconnects.
    // A client that is gone (or stopped reading) is not sent TLS's goodbye: it would only wait
    // out the write timeout again.
    client.finish(std::net::Shutdown::Both, !matches!(end, End::ClientGone(_)));
    info!(
        "stream {queue:?} closed for {peer} after {:.1} s and {delivered} messages: {end}",
        started.elapsed().as_secs_f32()
    );
}

/// Sets the stream's QoS, declares the queue and binds it as configured (idempotent); returns
/// how many consumers and messages the queue has. The QoS is not waited for: its answer comes
/// with the declaration's, in one round trip (the QoS applies to consumers started after it).
pub(super) fn declare(
    channel: &Channel,
    name: &str,
    head: &RequestHead,
    settings: &StreamSettings,
) -> Result<queue::Declared, Refusal> {
    let broker = |what: &str, e: amiquip::Error| {
        warn!("queue {name:?}: {what} failed: {e}");
        Refusal::BrokerFailed
    };
    channel
        .qos_deferred(settings.qos(), false)
        .map_err(|e| broker("setting the prefetch", e))?;
    let declared = queue::declare_counting(channel, name, &settings.arguments)
        .map_err(|e| broker("declaring", e))?;
    let parts = RequestParts::of(head);
    for binding in &settings.bind {
        let exchange = binding.exchange.resolve_binding(&parts)?;
        let key = binding.routing_key.resolve_binding(&parts)?;
        channel
            .queue_bind(name, exchange, key, FieldTable::default())
            .map_err(|e| broker("binding", e))?;
    }
    Ok(declared)
}

/// What every stream sends first: the stream's head, the banner, and `retry:` when configured
/// (moved at random per stream, so that a restart does not bring every browser back in the
/// same instant).
pub(super) fn opening(context: &StreamContext) -> Vec<u8> {
    let mut head = context.responder.stream_head();
    head.extend_from_slice(sse::BANNER);
    let settings = &context.settings;
    if settings.retry > 0 {
        let retry = crate::random::jitter(f64::from(settings.retry), settings.retry_jitter);
        sse::push_retry(&mut head, retry.round() as u32);
    }
    head
}

/// `, resuming after "ID"` in a stream's opening line, or nothing.
pub(super) fn resuming(last_event_id: Option<&str>) -> String {
    last_event_id
        .map(|id| format!(", resuming after {id:?}"))
        .unwrap_or_default()
}

/// Watches `client`'s socket for a hang-up (`hangup`); `None`, logged, when it cannot.
pub(super) fn watch_hangups(
    context: &StreamContext,
    client: &Client,
    queue: &str,
) -> Option<crate::stream::hangup::Watch> {
    let peer = client.peer;
    context
        .hangups
        .watch(&client.socket)
        .map_err(|e| warn!("stream {queue:?}: hang-ups of {peer} go unnoticed until a write: {e}"))
        .ok()
}

pub(super) fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed by the client",
    )
}
