//! A follower's stream: a request for a queue that another stream here consumes (a second tab
//! of the same user, or a reconnect whose old connection has not ended yet). It writes what
//! that stream's feed holds to its own client, at its own pace, and says how far its client's
//! TCP has acknowledged it, so that nothing its client may not have is acked (see `feed`).
//!
//! It starts after its client's `Last-Event-ID` when the feed holds that event; at the feed's
//! oldest entry otherwise (a fresh page gets what is still held, as it would from the queue),
//! first telling a client whose last event is no longer held that it may have missed some.

use crate::http::sse;
use crate::http::{Client, RequestHead};
use crate::memory;
use crate::refusal::Refusal;
use crate::stream::feed::{Follower, Read, Start};
use crate::stream::session::{self, End, StreamContext, FOREVER, RESUME_WAIT_MAX, SETTLE_INTERVAL};
use crate::stream::unacknowledged::Unacknowledged;
use crate::sys;
use crossbeam_channel::{select, Receiver};
use log::{info, warn};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a follower waits for the stream it follows to be ready (its resume gathered).
const READY_WAIT: Duration = RESUME_WAIT_MAX.saturating_add(Duration::from_secs(2));

/// Serves `client` from the feed `following` reads, until the client, the stream it follows
/// or the server ends it. Hands the request back, untouched, when the feed cannot place the
/// client's last event but the queue may still hold it (`Start::Takeover`).
pub fn serve(
    mut client: Client,
    head: RequestHead,
    queue: &str,
    context: &StreamContext,
    following: Follower<'_>,
) -> Option<(Client, RequestHead)> {
    let settings = &context.settings;
    // Declared and bound as on every request: bindings may use request values, and a refusal
    // for a bad one is the same whoever holds the queue.
    let lease = match context.broker.open_channel() {
        Ok(lease) => lease,
        Err(e) => {
            warn!("stream {queue:?}: {e}");
            context
                .responder
                .refuse(&mut client, Some(&head), e.refusal());
            return None;
        }
    };
    let declared = lease
        .calls
        .during(|| session::declare(&lease.channel, queue, &head, settings));
    if let Err(e) = lease.channel.close() {
        log::debug!("closing the declaring channel of {queue:?}: {e}");
    }
    if let Err(refusal) = declared {
        context.responder.refuse(&mut client, Some(&head), refusal);
        return None;
    }
    let last_event_id = settings.event_ids.then(|| head.last_event_id()).flatten();
    let deadline = Instant::now() + READY_WAIT;
    let start = match following.wait_start(last_event_id.as_deref(), deadline, &context.shutdown) {
        Some(Start::At { next, gap }) => (next, gap),
        Some(Start::Takeover) => return Some((client, head)),
        None => {
            context
                .responder
                .refuse(&mut client, Some(&head), Refusal::QueueHeld);
            return None;
        }
    };
    let peer = client.peer;
    let started = Instant::now();
    drop(head);
    info!(
        "stream {queue:?} opened for {peer}, following the stream that consumes it here{}",
        session::resuming(last_event_id.as_deref())
    );
    let _open = context.metrics.followers.count();
    let watch = session::watch_hangups(context, &client, queue);
    let never = crossbeam_channel::never();
    let gone = watch.as_ref().map_or(&never, |w| &w.gone);
    let mut stream = Following {
        client: &mut client,
        following: &following,
        context,
        written: 0,
        delivered: 0,
        unacknowledged: Unacknowledged::default(),
        quiet_from: Some(Instant::now()),
    };
    let end = stream.run(start, gone);
    let delivered = stream.delivered;
    drop(watch);
    // Leaving: what it held back is the holder's to release now.
    drop(following);
    client.finish(std::net::Shutdown::Both, !matches!(end, End::ClientGone(_)));
    info!(
        "stream {queue:?} closed for {peer} after {:.1} s and {delivered} messages: {end}",
        started.elapsed().as_secs_f32()
    );
    None
}

struct Following<'a> {
    client: &'a mut Client,
    following: &'a Follower<'a>,
    context: &'a StreamContext,
    /// Bytes handed to the kernel since the stream began.
    written: u64,
    delivered: u64,
    unacknowledged: Unacknowledged,
    /// As a session's: when the newest write went out, until the memory it took is given back.
    quiet_from: Option<Instant>,
}

impl Following<'_> {
    /// Streams from feed entry `next`, telling the client first of a `gap`.
    fn run(&mut self, (mut next, gap): (u64, bool), client_gone: &Receiver<()>) -> End {
        let head = session::opening(self.context);
        if let Err(e) = self.send(&head) {
            return End::ClientGone(e);
        }
        drop(head);
        let shutdown = &self.context.shutdown;
        let woken = &self.following.woken;
        if gap {
            let mut gap = Vec::new();
            sse::push_gap(&mut gap);
            if let Err(e) = self.send(&gap) {
                return End::ClientGone(e);
            }
            info!("a follower resuming after an event no longer held was told of a gap");
        }
        let batch_limit = usize::from(self.context.settings.prefetch).max(1);
        let keepalive = self.context.settings.keepalive.unwrap_or(FOREVER);
        let mut last_write = Instant::now();
        loop {
            let mut batch = Vec::new();
            match self.following.read(next, batch_limit, &mut batch) {
                Read::Frames {
                    frames,
                    next: after,
                } => {
                    if let Err(end) = self.write(&batch, frames, after) {
                        return end;
                    }
                    next = after;
                    last_write = Instant::now();
                    // More may be waiting: read again before waiting.
                    continue;
                }
                Read::Ended => return End::HolderEnded,
                Read::Nothing => {}
            }
            drop(batch);
            let idle = self.idle_wait(keepalive.saturating_sub(last_write.elapsed()));
            select! {
                recv(woken) -> _ => {}
                recv(shutdown) -> _ => return End::Shutdown,
                recv(client_gone) -> _ => return End::ClientGone(session::closed()),
                default(idle) => {
                    self.give_back_when_quiet();
                    if last_write.elapsed() >= keepalive {
                        let mut comment = Vec::new();
                        sse::push_comment(&mut comment, "keep-alive");
                        if let Err(e) = self.send(&comment) {
                            return End::ClientGone(e);
                        }
                        last_write = Instant::now();
                    }
                    self.acknowledge();
                }
            }
        }
    }

    /// Until the next keep-alive, the memory give-back, or, while the client's TCP has not
    /// acknowledged a write, a short while.
    fn idle_wait(&self, until_keepalive: Duration) -> Duration {
        let until_acknowledged = if self.unacknowledged.is_empty() {
            FOREVER
        } else {
            SETTLE_INTERVAL
        };
        let until_quiet = self.quiet_from.map_or(FOREVER, |at| {
            (at + memory::QUIET).saturating_duration_since(Instant::now())
        });
        until_keepalive.min(until_acknowledged).min(until_quiet)
    }

    fn give_back_when_quiet(&mut self) {
        if self
            .quiet_from
            .is_some_and(|at| at.elapsed() >= memory::QUIET)
        {
            self.context.metrics.note_stack_and_give_back();
            self.quiet_from = None;
        }
    }

    /// Writes `frames` frames in one write; `after` is the feed entry after the last.
    fn write(&mut self, bytes: &[u8], frames: usize, after: u64) -> Result<(), End> {
        self.send(bytes).map_err(End::ClientGone)?;
        self.quiet_from = Some(Instant::now());
        self.unacknowledged.push(self.written, after);
        self.delivered += frames as u64;
        self.context.metrics.record_deliveries(frames as u64);
        self.acknowledge();
        Ok(())
    }

    /// Tells the feed how far the client's TCP has acknowledged what was written.
    fn acknowledge(&mut self) {
        if self.unacknowledged.is_empty() {
            return;
        }
        let received = self
            .written
            .saturating_sub(sys::unacknowledged_bytes(&self.client.socket));
        let upto = self.unacknowledged.acknowledged(received);
        if let Some(upto) = upto {
            self.following.acknowledge(upto);
        }
    }

    /// The one place bytes go to a follower's client: written, counted.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.written += self.client.send(bytes)?;
        self.context
            .metrics
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
