//! One client's session: claim the queue, declare it (a quorum queue: take its lock first),
//! consume it exclusively, write each delivery as an SSE frame, and hold what was written in the
//! ack window until the client can be taken to have it (see `window`). Held deliveries return to
//! the queue when the stream ends; the next connection skips those up to the client's
//! `Last-Event-ID` (see `resume`).
//!
//! Other streams of the queue here follow this one (`follower`): it keeps what it wrote in its
//! feed for them, acks nothing one of them may not have, and when its own client leaves first,
//! goes on consuming for them until the last has left.

use crate::amqp::{holder, queue, Broker};
use crate::http::sse;
use crate::http::{Client, RequestHead, Responder};
use crate::memory;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::stream::feed::Feed;
use crate::stream::follower;
use crate::stream::frames::{Form, Frames};
use crate::stream::hangup::HangupWatch;
use crate::stream::pattern::{Binding, RequestParts};
use crate::stream::registry::{Conflict, Registry, Turn};
use crate::stream::remote;
use crate::stream::resume;
use crate::stream::takeover::{hold, no_consumer_left, TAKEOVER_POLL, TAKEOVER_WAIT};
use crate::stream::window::{AckWindow, Bounds, Release};
use crate::sys;
use amiquip::{Channel, Consumer, ConsumerMessage, ConsumerOptions, FieldTable};
use crossbeam_channel::{select, Receiver, RecvTimeoutError};
use log::{debug, info, warn};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a resuming stream gathers its first deliveries, so that redeliveries arriving just
/// after fresh messages are still sent first; each redelivery extends it by as much, since a
/// busy broker hands back a long tail slowly.
const RESUME_WAIT: Duration = Duration::from_millis(200);
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
        context.broker.open_channel().map_err(|e| {
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

/// Declares the queue, binds it as configured (idempotent), and sets the stream's QoS;
/// returns how many consumers the queue has.
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
    channel
        .qos(0, settings.qos(), false)
        .map_err(|e| broker("setting the prefetch", e))?;
    Ok(declared)
}

struct Session<'a> {
    client: &'a mut Client,
    consumer: &'a Consumer<'a>,
    context: &'a StreamContext,
    /// What its followers read.
    feed: &'a Feed,
    /// Why its own client is gone, while it consumes on for its followers.
    lost: Option<std::io::Error>,
    window: AckWindow,
    /// Bytes handed to the kernel since the stream began (TLS records over HTTPS).
    written: u64,
    delivered: u64,
    /// When the newest write went out (or the set-up ended), until the stream has been quiet for
    /// `memory::QUIET` and the memory it took has been given back.
    quiet_from: Option<Instant>,
    /// Whether a write since then was a burst (`memory::BURST`), whose buffer freed heap memory.
    burst: bool,
    /// Messages ready in the queue when it was declared: the first the broker sends.
    waiting: u32,
}

impl Session<'_> {
    fn run(
        &mut self,
        last_event_id: Option<String>,
        taken_over: &Receiver<()>,
        client_gone: &Receiver<()>,
    ) -> End {
        let head = opening(self.context);
        let sent = self.send(&head);
        // Not kept for the stream's life: a few hundred bytes in each of thousands of streams.
        drop(head);
        if let Err(e) = sent {
            return End::ClientGone(e);
        }
        // Not kept once resumed: only streams that came back hold one, so a long-lived
        // allocation of its size would follow a stream's history (see `chunk_queue`).
        if let Some(id) = last_event_id {
            let (replayed, unsent) = match self.resume_after(&id) {
                Ok(replayed) => replayed,
                Err(end) => return end,
            };
            if let Err(end) = self.write(replayed, unsent) {
                return end;
            }
        }
        self.feed.ready();
        let never = crossbeam_channel::never();
        let mut client_gone = client_gone;
        let deliveries = self.consumer.receiver();
        let batch_limit = usize::from(self.context.settings.prefetch);
        let keepalive = self.context.settings.keepalive.unwrap_or(FOREVER);
        let mut last_write = Instant::now();
        loop {
            let idle = self.idle_wait(keepalive.saturating_sub(last_write.elapsed()));
            let first = select! {
                recv(deliveries) -> message => message,
                recv(self.context.shutdown) -> _ => return End::Shutdown,
                recv(taken_over) -> _ => return End::TakenOver,
                recv(client_gone) -> _ => {
                    if let Err(end) = self.lose_client(closed()) {
                        return end;
                    }
                    client_gone = &never;
                    continue;
                }
                recv(self.feed.holder_woken()) -> _ => {
                    if let Some(end) = self.alone_without_client() {
                        return end;
                    }
                    if let Err(end) = self.settle() {
                        return end;
                    }
                    continue;
                }
                default(idle) => {
                    self.give_back_when_quiet();
                    if self.lost.is_none() && last_write.elapsed() >= keepalive {
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
            let mut batch = Frames::new();
            match first {
                Ok(ConsumerMessage::Delivery(delivery)) => batch.push(delivery, self.form()),
                Ok(other) => return ended_by(other),
                Err(_) => return End::ChannelClosed("connection lost".into()),
            }
            // Deliveries that are already waiting go out in the same write.
            let mut pending_end = None;
            while batch.len() < batch_limit {
                match deliveries.try_recv() {
                    Ok(ConsumerMessage::Delivery(delivery)) => batch.push(delivery, self.form()),
                    Ok(other) => {
                        pending_end = Some(ended_by(other));
                        break;
                    }
                    Err(_) => break,
                }
            }
            if let Err(end) = self.write(batch, 0) {
                return end;
            }
            if self.lost.is_some() {
                client_gone = &never;
            }
            last_write = Instant::now();
            if let Some(end) = pending_end {
                return end;
            }
        }
    }

    /// Its client is gone: with followers, it consumes on for them; without, it ends.
    fn lose_client(&mut self, error: std::io::Error) -> Result<(), End> {
        if self.feed.followers() == 0 {
            return Err(End::ClientGone(error));
        }
        if self.lost.is_none() {
            debug!("its client gone ({error}), a stream consumes on for its followers");
        }
        self.lost = Some(error);
        Ok(())
    }

    /// Why it ends when its client is gone and its last follower has left.
    fn alone_without_client(&mut self) -> Option<End> {
        if self.lost.is_some() && self.feed.followers() == 0 {
            return self.lost.take().map(End::ClientGone);
        }
        None
    }

    /// How long to wait for the next delivery: until the next keep-alive is due, the oldest
    /// held delivery ages out, or, while the window waits on the client's TCP, a short while.
    fn idle_wait(&self, until_keepalive: Duration) -> Duration {
        let now = Instant::now();
        // Asking the kernel only when something could be released.
        if self.window.over_bounds(now)
            && self
                .window
                .waiting_on_readers(self.received(), self.followers_have(), now)
        {
            return SETTLE_INTERVAL;
        }
        let until_expiry = self
            .window
            .next_expiry()
            .map_or(FOREVER, |at| at.saturating_duration_since(now));
        let until_quiet = self.quiet_from.map_or(FOREVER, |at| {
            (at + memory::QUIET).saturating_duration_since(now)
        });
        until_keepalive.min(until_expiry).min(until_quiet)
    }

    /// Once the stream is quiet (nothing written for `memory::QUIET`), the stack pages its
    /// set-up and writes touched below the waiting loop are given back, and after a burst what
    /// the burst freed.
    fn give_back_when_quiet(&mut self) {
        if self
            .quiet_from
            .is_some_and(|at| at.elapsed() >= memory::QUIET)
        {
            self.context.metrics.note_stack_and_give_back();
            if std::mem::take(&mut self.burst) {
                memory::give_back_now_and_then();
            }
            self.quiet_from = None;
        }
    }

    /// Which fields the stream's frames carry.
    fn form(&self) -> Form {
        let settings = &self.context.settings;
        Form {
            event_ids: settings.event_ids,
            event_types: settings.event_types,
        }
    }

    /// A resuming stream's first batch: what the broker sends in the first moments (and for as
    /// long as redeliveries keep coming, until the client's last event is among them), planned
    /// by `resume::plan`; what the client already has is acked unsent. (A stream resumes only
    /// when its frames carry ids.)
    fn resume_after(&mut self, last: &str) -> Result<(Frames, usize), End> {
        let limit = usize::from(self.context.settings.qos());
        let started = Instant::now();
        let latest = started + RESUME_WAIT_MAX;
        let mut deadline = started + RESUME_WAIT;
        // What the queue held when declared is surely coming (first, in the queue's order):
        // until the client's last event is among it, it is waited for, however slow a busy
        // broker is to send the first of it.
        let expected = usize::try_from(self.waiting).map_or(limit, |w| w.min(limit));
        let mut gathered = Frames::new();
        let mut found = false;
        while gathered.len() < limit {
            let until = if !found && gathered.len() < expected {
                latest
            } else {
                deadline
            };
            let left = until.saturating_duration_since(Instant::now());
            match self.consumer.receiver().recv_timeout(left) {
                Ok(ConsumerMessage::Delivery(delivery)) => {
                    let redelivered = delivery.redelivered;
                    gathered.push(delivery, self.form());
                    // Until the client's last event is among the redeliveries, more of what it
                    // has may still be on its way back.
                    if redelivered && !found {
                        found = gathered.id(gathered.len() - 1) == Some(last);
                        if !found {
                            deadline = (Instant::now() + RESUME_WAIT).min(latest).max(deadline);
                        }
                    }
                }
                Ok(other) => return Err(ended_by(other)),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(End::ChannelClosed("connection lost".into()))
                }
            }
        }
        let plan = resume::plan(
            (0..gathered.len()).collect(),
            |&index| gathered.frame(index).redelivered,
            |&index| gathered.id(index) == Some(last),
        );
        let skipped = plan.skip.len();
        // The client's last event stays held, unsent, to mark where it is (see `window`).
        let bookmark = match plan.skip.last() {
            Some(&last) if self.context.settings.window.messages > 0 => Some(last),
            _ => None,
        };
        if plan.skip.is_empty() {
            // Its last event is held nowhere: what it missed may be lost. It is told so.
            let mut gap = Vec::new();
            sse::push_gap(&mut gap);
            self.send(&gap).or_else(|e| self.lose_client(e))?;
            info!("a stream resuming after an event no longer held was told of a gap");
        }
        // One by one: fresh deliveries with lower tags may be among the unsent.
        for &index in plan.skip.iter().filter(|&&index| Some(index) != bookmark) {
            self.consumer
                .ack_tag(gathered.frame(index).tag, false)
                .map_err(|e| End::ChannelClosed(e.to_string()))?;
        }
        if skipped > 0 {
            self.context
                .metrics
                .acks
                .fetch_add(skipped as u64, Ordering::Relaxed);
            debug!("skipped {skipped} messages the client already has");
        }
        let order: Vec<usize> = bookmark.into_iter().chain(plan.send).collect();
        Ok((gathered.select(&order), usize::from(bookmark.is_some())))
    }

    /// Writes `batch` in one write but its first `unsent` frames (held only: the client has
    /// them), holds it in the window and the feed, then acks what may be acked.
    fn write(&mut self, batch: Frames, unsent: usize) -> Result<(), End> {
        if batch.is_empty() {
            return Ok(());
        }
        self.feed.append(&batch, 0..batch.len());
        let skip = unsent.checked_sub(1).map_or(0, |last| {
            batch.ends().nth(last).map_or(0, |(_, end, _)| end)
        });
        let bytes = &batch.bytes()[skip..];
        let start = self.written;
        let sent = self.send(bytes);
        let sent_at = Instant::now();
        self.burst |= batch.allocated() >= memory::BURST;
        self.quiet_from = Some(sent_at);
        if let Err(e) = sent {
            self.lose_client(e)?;
            // Counted as written: the window's offsets go on increasing for its followers.
            self.written = start + bytes.len() as u64;
        }
        // Over HTTPS the kernel counts TLS records, in which a frame's end has no exact offset:
        // every frame of the batch counts as received when the whole batch is.
        let exact = !self.client.is_tls();
        let batch_end = self.written - start;
        let count = (batch.len() - unsent) as u64;
        self.delivered += count;
        self.context.metrics.record_deliveries(count);
        let held = batch
            .ends()
            .map(|(tag, end, size)| {
                let end = if exact {
                    end.saturating_sub(skip) as u64
                } else {
                    batch_end
                };
                (tag, start + end, size as u64)
            })
            .collect();
        // A buffer for this write only: one kept between writes would keep the size of the
        // largest burst, in every one of thousands of idle streams.
        drop(batch);
        self.window.hold_batch(held, sent_at);
        self.settle()
    }

    /// The stream offset up to which the client's TCP has acknowledged our bytes: all of them
    /// once the client is gone (only its followers hold releases back then).
    fn received(&self) -> u64 {
        if self.lost.is_some() {
            return u64::MAX;
        }
        self.written
            .saturating_sub(sys::unacknowledged_bytes(&self.client.socket))
    }

    /// How many of the oldest held deliveries every follower's client has.
    fn followers_have(&self) -> usize {
        self.feed.acknowledged_by_followers().unwrap_or(usize::MAX)
    }

    /// Acks what the window lets go of. (A client that closed its side is told by the hang-up
    /// watch; what it held goes back to the queue when the stream ends.)
    fn settle(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if !self.window.over_bounds(now) {
            return Ok(());
        }
        let held = self.window.len();
        let released = self
            .window
            .release_within(self.received(), self.followers_have(), now);
        // The same entries leave the feed: entry n of the feed is delivery n of the window.
        self.feed.release(held - self.window.len());
        let ack =
            |result: amiquip::Result<()>| result.map_err(|e| End::ChannelClosed(e.to_string()));
        let count = released.count() as u64;
        match released {
            Release::Nothing => return Ok(()),
            Release::UpTo { newest, .. } => ack(self.consumer.ack_tag(newest, true))?,
            Release::Each(tags) => {
                for tag in tags {
                    ack(self.consumer.ack_tag(tag, false))?;
                }
            }
        }
        self.context
            .metrics
            .acks
            .fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    fn keepalive(&mut self) -> Result<(), End> {
        let mut comment = Vec::new();
        sse::push_comment(&mut comment, "keep-alive");
        self.send(&comment).or_else(|e| self.lose_client(e))
    }

    /// The one place bytes go to the client: written, counted. Once the client is gone, they
    /// are only counted.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.lost.is_some() {
            self.written += bytes.len() as u64;
            return Ok(());
        }
        self.written += self.client.send(bytes)?;
        self.context
            .metrics
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
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
