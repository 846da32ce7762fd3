//! The ack window: deliveries written to a client and held unacked, because only the client can
//! prove it read them (its `Last-Event-ID` on the next connection). What is held goes back to
//! the queue when the stream ends, and the next connection skips what the client says it has.
//!
//! The window is bounded, because RabbitMQ's prefetch is a count (at most 65,535) and held
//! deliveries cost memory: a delivery leaves it, acked, once more than `messages` newer ones or
//! more than `bytes` of frames are held, or once it is older than `age`. Even then it stays
//! while the client's TCP has not acknowledged its bytes: those are surely unread.
//!
//! Pure logic over delivery tags and stream offsets: no broker, no socket.

use crate::stream::chunk_queue::ChunkQueue;
use std::time::{Duration, Instant};

/// How much the window holds at most; past any bound the oldest deliveries are acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub messages: usize,
    pub bytes: u64,
    pub age: Duration,
}

/// What to ack.
#[derive(Debug, PartialEq, Eq)]
pub enum Release<T> {
    Nothing,
    /// One ack with `multiple`: `newest` and every delivery before it on the channel, `count`
    /// of them held here.
    UpTo {
        newest: T,
        count: usize,
    },
    /// One ack each: a delivery with a lower tag is still held.
    Each(Vec<T>),
}

impl<T> Release<T> {
    /// How many held deliveries this acks.
    pub fn count(&self) -> usize {
        match self {
            Release::Nothing => 0,
            Release::UpTo { count, .. } => *count,
            Release::Each(all) => all.len(),
        }
    }
}

/// 24 bytes: a window may hold thousands, in each of thousands of streams.
#[derive(Debug, Clone, Copy)]
struct Held {
    tag: u64,
    /// The stream offset just past this delivery's frame.
    end: u64,
    /// The frame's size (`SIZE`), and whether an ack lands here (`ACK_HERE`): on the last
    /// delivery of a batch written in tag order (one `multiple` ack covers the batch), or on
    /// every delivery of one that is not (a resumed stream's first).
    size_and_ack: u32,
    /// When it was written: milliseconds after the window's epoch.
    written: u32,
}

impl Held {
    const ACK_HERE: u32 = 1 << 31;
    /// A frame is at most a message, and RabbitMQ's are at most 512 MiB.
    const SIZE: u32 = Self::ACK_HERE - 1;

    fn bytes(&self) -> u64 {
        u64::from(self.size_and_ack & Self::SIZE)
    }

    fn ack_here(&self) -> bool {
        self.size_and_ack & Self::ACK_HERE != 0
    }
}

/// Held deliveries a chunk of the window takes: 42 of 24 bytes, 1,008 bytes.
const CHUNK: usize = 42;

pub struct AckWindow {
    /// In chunks of one size, which every stream's window allocates whatever it held before
    /// (see `chunk_queue`).
    held: ChunkQueue<Held, CHUNK>,
    bounds: Bounds,
    bytes: u64,
    /// True while the held tags increase from oldest to newest: always, but while a resumed
    /// stream's first batch (redeliveries before fresh messages) is held.
    in_order: bool,
    /// What held deliveries' times count from: the first time one was held, moved on when a
    /// stream has lived for weeks.
    epoch: Option<Instant>,
}

impl AckWindow {
    pub fn new(bounds: Bounds) -> AckWindow {
        AckWindow {
            held: ChunkQueue::new(),
            bounds,
            bytes: 0,
            in_order: true,
            epoch: None,
        }
    }

    /// `now` as a held delivery's time. A window that has lived for `u32::MAX` milliseconds (49
    /// days) moves its epoch on by half that; a delivery held since before the new epoch then
    /// counts as written at it.
    fn stamp(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        if let Ok(millis) = u32::try_from(now.saturating_duration_since(epoch).as_millis()) {
            return millis;
        }
        let half = u32::MAX / 2;
        let moved = now
            .checked_sub(Duration::from_millis(u64::from(half)))
            .unwrap_or(now);
        let shift = moved.saturating_duration_since(epoch).as_millis();
        for held in self.held.iter_mut() {
            held.written =
                u32::try_from(u128::from(held.written).saturating_sub(shift)).unwrap_or(0);
        }
        self.epoch = Some(moved);
        half
    }

    /// When `held` was written (to the millisecond, rounded down).
    fn written(&self, held: &Held) -> Instant {
        let epoch = self.epoch.unwrap_or_else(Instant::now);
        epoch + Duration::from_millis(u64::from(held.written))
    }

    /// Holds the delivery `tag`, whose frame of `bytes` ends at stream offset `end`, written at `now`.
    pub fn hold(&mut self, tag: u64, end: u64, bytes: u64, now: Instant) {
        self.hold_batch(vec![(tag, end, bytes)], now);
    }

    /// Holds a batch written at `now` in one write: each delivery with the stream offset its
    /// frame ends at and the frame's size. Batches are held in the order written.
    pub fn hold_batch(&mut self, batch: Vec<(u64, u64, u64)>, now: Instant) {
        let newest = self.held.back().map(|h| h.tag);
        let mut previous = newest;
        let increasing = batch.iter().all(|&(tag, _, _)| {
            let above = previous.is_none_or(|p| tag > p);
            previous = Some(tag);
            above
        });
        self.in_order &= increasing;
        let written = self.stamp(now);
        let last = batch.len().saturating_sub(1);
        for (index, (tag, end, bytes)) in batch.into_iter().enumerate() {
            let size = u32::try_from(bytes).unwrap_or(Held::SIZE).min(Held::SIZE);
            self.bytes += u64::from(size);
            let ack_here = !increasing || index == last;
            self.held.push_back(Held {
                tag,
                end,
                size_and_ack: size | if ack_here { Held::ACK_HERE } else { 0 },
                written,
            });
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// The chunks the window holds memory for.
    #[cfg(test)]
    fn chunks(&self) -> usize {
        self.held.chunks()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Acks the oldest deliveries that are past a bound at `now`, as far as the client's TCP
    /// has acknowledged the stream (`received`, an offset), and as far as an ack can reach:
    /// in whole write batches.
    pub fn release(&mut self, received: u64, now: Instant) -> Release<u64> {
        self.release_within(received, usize::MAX, now)
    }

    /// As `release`, for at most the oldest `limit` deliveries: those every other reader of the
    /// stream's frames (`feed`) has too.
    pub fn release_within(&mut self, received: u64, limit: usize, now: Instant) -> Release<u64> {
        let due = self.due(Some(received), now).min(limit);
        let in_order = self.in_order;
        let (cut, multiple) = match self.ackable(due) {
            Some(found) => found,
            None => return Release::Nothing,
        };
        // The acks: with `multiple`, one on the newest released, where a delivery was kept
        // (none if it was not); otherwise one on each kept.
        let mut newest: Option<Held> = None;
        let mut each = Vec::new();
        for _ in 0..cut {
            let Some(held) = self.held.pop_front() else {
                break;
            };
            self.bytes -= held.bytes();
            if multiple {
                if newest.is_none_or(|n| held.tag >= n.tag) {
                    newest = Some(held);
                }
            } else if held.ack_here() {
                each.push(held.tag);
            }
        }
        if !self.in_order {
            self.in_order = self
                .held
                .iter()
                .zip(self.held.iter().skip(1))
                .all(|(a, b)| a.tag < b.tag);
        }
        if multiple {
            newest
                .filter(|newest| in_order || newest.ack_here())
                .map_or(Release::Nothing, |newest| Release::UpTo {
                    newest: newest.tag,
                    count: cut,
                })
        } else {
            Release::Each(each)
        }
    }

    /// How many of the oldest deliveries are past a bound at `now`, counting only those whose
    /// bytes the client's TCP has acknowledged when `received` is given. The newest is never
    /// due while the window holds anything at all (`messages` > 0): it marks where the client
    /// is, so that a client coming back after a quiet spell finds its last event still held and
    /// is known to have missed nothing.
    fn due(&self, received: Option<u64>, now: Instant) -> usize {
        let mut due = 0;
        let mut bytes = self.bytes;
        let keep = usize::from(self.bounds.messages > 0);
        for (index, held) in self.held.iter().enumerate() {
            if self.held.len() - index <= keep {
                break;
            }
            let over = self.held.len() - index > self.bounds.messages
                || bytes > self.bounds.bytes
                || now.saturating_duration_since(self.written(held)) >= self.bounds.age;
            if !over || received.is_some_and(|r| held.end > r) {
                break;
            }
            bytes -= held.bytes();
            due += 1;
        }
        due
    }

    /// The most of the oldest `due` deliveries one release can ack, and whether with one ack
    /// (`multiple`, when nothing left has a lower tag) or one each.
    fn ackable(&self, due: usize) -> Option<(usize, bool)> {
        if self.in_order {
            // Tags increase: a multiple ack on the newest released, where a delivery was kept;
            // or anywhere, when all but the newest are due and only it (held to mark the
            // client's place) would end the batch.
            let cut = (1..=due)
                .rev()
                .find(|&cut| self.held[cut - 1].ack_here())
                .or_else(|| (due > 0 && due + 1 == self.held.len()).then_some(due))?;
            return Some((cut, true));
        }
        // A resumed stream's first batch is held: look for the longest cut that one multiple
        // ack, or one ack each, can cover.
        let n = self.held.len();
        let mut lowest_after = vec![u64::MAX; n + 1];
        for i in (0..n).rev() {
            lowest_after[i] = lowest_after[i + 1].min(self.held[i].tag);
        }
        let mut best = None;
        let (mut highest, mut highest_kept, mut all_kept) = (0u64, false, true);
        for (index, held) in self.held.iter().take(due).enumerate() {
            let cut = index + 1;
            if held.tag >= highest {
                highest = held.tag;
                highest_kept = held.ack_here();
            }
            all_kept &= held.ack_here();
            if lowest_after[cut] > highest && highest_kept {
                best = Some((cut, true));
            } else if all_kept {
                best = Some((cut, false));
            }
        }
        best
    }

    /// True when the oldest held delivery is past a bound at `now`: only then can anything be
    /// released, and only then is the client's TCP worth asking about.
    pub fn over_bounds(&self, now: Instant) -> bool {
        let keep = usize::from(self.bounds.messages > 0);
        self.held.len() > keep
            && self.held.front().is_some_and(|oldest| {
                self.held.len() > self.bounds.messages
                    || self.bytes > self.bounds.bytes
                    || now.saturating_duration_since(self.written(oldest)) >= self.bounds.age
            })
    }

    /// True when a delivery is past a bound but waits for the client's TCP: the broker may
    /// stop sending until it is released, so the caller should look again soon.
    pub fn waiting_on_client_tcp(&self, received: u64, now: Instant) -> bool {
        self.waiting_on_readers(received, usize::MAX, now)
    }

    /// As `waiting_on_client_tcp`, also waiting while other readers of the stream's frames have
    /// fewer than `limit` of the oldest deliveries.
    pub fn waiting_on_readers(&self, received: u64, limit: usize, now: Instant) -> bool {
        let Some((cut, _)) = self.ackable(self.due(None, now)) else {
            return false;
        };
        let reachable = self
            .ackable(self.due(Some(received), now).min(limit))
            .map_or(0, |(c, _)| c);
        reachable < cut && (self.held[cut - 1].end > received || limit < cut)
    }

    /// When the oldest held delivery reaches the age bound; `None` for never, and while the
    /// only one held is the newest, which the window keeps whatever its age (it marks where
    /// the client is): a stream that waited for that would wake at once, again and again.
    pub fn next_expiry(&self) -> Option<Instant> {
        let keep = usize::from(self.bounds.messages > 0);
        if self.held.len() <= keep {
            return None;
        }
        self.held
            .front()
            .and_then(|h| self.written(h).checked_add(self.bounds.age))
    }
}

#[cfg(test)]
mod tests;
