//! A stream once set up: the loop that writes each delivery to the client, holds it in the
//! window and the feed, and acks what the window lets go of.

use super::{
    closed, opening, End, StreamContext, FOREVER, RESUME_WAIT, RESUME_WAIT_MAX, SETTLE_INTERVAL,
};
use crate::http::sse;
use crate::http::Client;
use crate::memory;
use crate::stream::feed::Feed;
use crate::stream::frames::{Form, Frames};
use crate::stream::resume;
use crate::stream::window::{AckWindow, Release};
use crate::sys;
use amiquip::{Consumer, ConsumerMessage};
use crossbeam_channel::{select, Receiver, RecvTimeoutError};
use log::{debug, info};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) struct Session<'a> {
    pub(super) client: &'a mut Client,
    pub(super) consumer: &'a Consumer<'a>,
    pub(super) context: &'a StreamContext,
    /// What its followers read.
    pub(super) feed: &'a Feed,
    /// Why its own client is gone, while it consumes on for its followers.
    pub(super) lost: Option<std::io::Error>,
    pub(super) window: AckWindow,
    /// Bytes handed to the kernel since the stream began (TLS records over HTTPS).
    pub(super) written: u64,
    pub(super) delivered: u64,
    /// When the newest write went out (or the set-up ended), until the stream has been quiet for
    /// `memory::QUIET` and the memory it took has been given back.
    pub(super) quiet_from: Option<Instant>,
    /// Whether a write since then was a burst (`memory::BURST`), whose buffer freed heap memory.
    pub(super) burst: bool,
    /// Messages ready in the queue when it was declared: the first the broker sends.
    pub(super) waiting: u32,
}

impl Session<'_> {
    pub(super) fn run(
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
