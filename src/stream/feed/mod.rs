//! Several readers of one queue on this instance: the stream that consumes the queue (its
//! holder) keeps the frames it wrote in a log, as long as its ack window holds their deliveries,
//! and every other stream of the queue here (a follower: a second tab, a reconnect whose old
//! connection has not ended yet) writes from that log to its own client, at its own pace.
//!
//! Entries are numbered as the holder's window holds their deliveries, and leave the log when
//! the window releases them. A follower says how far its client's TCP has acknowledged what it
//! wrote, and the holder acks no entry that a follower's client may not have, just as it acks
//! none its own client may not have.
//!
//! The log keeps at most `queue.shared_bytes` of the newest frames (a burst to one stream must
//! not cost megabytes here; the broker holds what the window holds anyway), but those a
//! follower has yet to read. A reader that comes with an event the log cannot place (older
//! than its oldest entry, but perhaps held by the window) is answered `Start::Takeover`: a
//! stream that takes the queue over resumes from what the broker hands back.
//!
//! The bytes are kept in chunks of one size (`chunk_queue`), for the same reason as the window.

use crate::stream::chunk_queue::ChunkQueue;
use crate::stream::frames::Frames;
use crossbeam_channel::{Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Bytes of frames a chunk of the log takes.
const BYTE_CHUNK: usize = 2048;
/// Entries a chunk of the log's index takes: 64 of 16 bytes, 1,024 bytes.
const ENTRY_CHUNK: usize = 64;

/// One frame in the log.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where its frame ends, counted in bytes from the feed's first.
    end: u64,
    len: u32,
    /// The length of its event id, which starts its frame (`id: `); 0 when it has none.
    id_len: u16,
}

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At entry `next`; with `gap`, its client is first told that its last event is not held.
    At { next: u64, gap: bool },
    /// Its last event may be held by the window but not in the log: only a stream that takes
    /// the queue over, and resumes from what the broker hands back, can place it.
    Takeover,
}

/// What a follower read from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `frames` frames, up to entry `next` (exclusive), were appended.
    Frames { frames: usize, next: u64 },
    /// Nothing new yet.
    Nothing,
    /// The holder's stream has ended (or never got ready): the follower ends too.
    Ended,
}

struct Reader {
    id: u64,
    wake: Sender<()>,
    /// Every entry before this one is acknowledged by the reader's client's TCP.
    acknowledged: u64,
}

#[derive(Default)]
struct State {
    bytes: ChunkQueue<u8, BYTE_CHUNK>,
    entries: ChunkQueue<Entry, ENTRY_CHUNK>,
    /// The number of the log's oldest entry; `first + entries.len()` is the next one's.
    first: u64,
    /// The number of the window's oldest delivery: those from it to `first` are held by the
    /// window, not kept here.
    window_first: u64,
    /// Where `bytes` begins, in bytes from the feed's first; and where it ends.
    bytes_first: u64,
    bytes_end: u64,
    /// Bytes of frames kept at most (`queue.shared_bytes`); 0 keeps none.
    budget: usize,
    /// The event id of the newest frame the holder wrote, kept or not.
    newest_id: Vec<u8>,
    /// A hash of the event id of each delivery the window holds (from `window_first`), kept
    /// or not: 8 bytes a delivery, so that an event the window does not hold is a gap, not a
    /// takeover.
    window_ids: ChunkQueue<u64, ENTRY_CHUNK>,
    /// The holder has written its first batch (a resume's): followers may start.
    ready: bool,
    ended: bool,
    readers: Vec<Reader>,
    next_reader: u64,
}

impl State {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Where entry `index` (from the oldest kept) starts in `bytes`.
    fn start_of(&self, index: usize) -> usize {
        let entry = self.entries[index];
        (entry.end - u64::from(entry.len) - self.bytes_first) as usize
    }

    fn id(&self, index: usize) -> Option<Vec<u8>> {
        let entry = self.entries.get(index)?;
        if entry.id_len == 0 {
            return None;
        }
        let mut id = Vec::with_capacity(usize::from(entry.id_len));
        let from = self.start_of(index) + crate::http::sse::ID_FIELD.len();
        self.bytes
            .copy_range(from, usize::from(entry.id_len), &mut id);
        Some(id)
    }

    /// Whether the window holds a delivery with event id `last` older than the log's oldest.
    fn window_holds_before_log(&self, last: &str) -> bool {
        let before = usize::try_from(self.first.saturating_sub(self.window_first)).unwrap_or(0);
        let hashed = id_hash(last.as_bytes());
        self.window_ids.iter().take(before).any(|&h| h == hashed)
    }

    /// Drops the oldest `count` entries the log keeps.
    fn drop_oldest(&mut self, count: usize) {
        let count = count.min(self.entries.len());
        if count == 0 {
            return;
        }
        let until = self.entries[count - 1].end;
        self.bytes.drop_front((until - self.bytes_first) as usize);
        self.entries.drop_front(count);
        self.bytes_first = until;
        self.first += count as u64;
    }

    /// Keeps no frames from here on: the log is empty, and begins at the next entry.
    fn forget(&mut self) {
        self.budget = 0;
        self.first = self.end();
        self.bytes = ChunkQueue::new();
        self.entries = ChunkQueue::new();
        self.bytes_first = self.bytes_end;
    }

    fn wake_readers(&self) {
        for reader in &self.readers {
            let _ = reader.wake.try_send(());
        }
    }
}

/// A 64-bit hash of an event id: a collision costs a takeover, never a message.
fn id_hash(id: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// The log of one queue's holder, shared with its followers.
pub struct Feed {
    state: Mutex<State>,
    /// Tells the holder that a follower left or acknowledged more.
    holder_wake: Sender<()>,
    holder_woken: Receiver<()>,
}

impl Default for Feed {
    fn default() -> Feed {
        let (holder_wake, holder_woken) = crossbeam_channel::bounded(1);
        Feed {
            state: Mutex::default(),
            holder_wake,
            holder_woken,
        }
    }
}

/// A follower's place among the feed's readers; leaves when dropped.
pub struct Follower<'a> {
    feed: &'a Feed,
    id: u64,
    /// Receives when the log grows or the holder ends.
    pub woken: Receiver<()>,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // The holder's side.

    /// Keeps at most `budget` bytes of the newest frames from now on, and always the newest
    /// and those a follower has yet to read; a feed never told to keep keeps none (no follower
    /// can join it).
    pub fn keep(&self, budget: usize) {
        self.lock().budget = budget.max(1);
    }

    /// Receives when a follower leaves or acknowledges more.
    pub fn holder_woken(&self) -> &Receiver<()> {
        &self.holder_woken
    }

    /// Appends the frames of `batch` at `indices` (in the order the window holds them), and
    /// wakes the followers.
    pub fn append(&self, batch: &Frames, indices: impl Iterator<Item = usize>) {
        let mut state = self.lock();
        for index in indices {
            if let Some(id) = batch.id(index) {
                state.newest_id.clear();
                state.newest_id.extend_from_slice(id.as_bytes());
            }
            if state.budget > 0 {
                let hashed = batch.id(index).map_or(0, |id| id_hash(id.as_bytes()));
                state.window_ids.push_back(hashed);
            }
            let bytes = batch.frame_bytes(index);
            state.bytes_end += bytes.len() as u64;
            if state.budget == 0 {
                state.first += 1;
                state.bytes_first = state.bytes_end;
                continue;
            }
            let id_len = batch
                .id(index)
                .and_then(|id| u16::try_from(id.len()).ok())
                .unwrap_or(0);
            state.bytes.extend_from_slice(bytes);
            let end = state.bytes_end;
            state.entries.push_back(Entry {
                end,
                len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                id_len,
            });
        }
        // The oldest go past the budget, but those a follower has yet to read.
        let unread = state
            .readers
            .iter()
            .map(|r| r.acknowledged)
            .min()
            .unwrap_or(u64::MAX);
        let mut over = 0;
        while over < state.entries.len()
            && state.first + (over as u64) < unread
            && (state.bytes_end - state.entries[over].end) as usize >= state.budget
        {
            over += 1;
        }
        state.drop_oldest(over);
        state.wake_readers();
    }

    /// The holder has written its first batch: followers may start.
    pub fn ready(&self) {
        let mut state = self.lock();
        state.ready = true;
        state.wake_readers();
    }

    /// How many of the window's oldest deliveries every follower's client has: `None` with no
    /// follower.
    pub fn acknowledged_by_followers(&self) -> Option<usize> {
        let state = self.lock();
        let oldest = state.window_first;
        state
            .readers
            .iter()
            .map(|r| usize::try_from(r.acknowledged.saturating_sub(oldest)).unwrap_or(usize::MAX))
            .min()
    }

    /// The window released its oldest `count` deliveries: their entries leave the log.
    pub fn release(&self, count: usize) {
        if count == 0 {
            return;
        }
        let mut state = self.lock();
        state.window_first += count as u64;
        state.window_ids.drop_front(count);
        let gone =
            usize::try_from(state.window_first.saturating_sub(state.first)).unwrap_or(usize::MAX);
        state.drop_oldest(gone);
    }

    pub fn followers(&self) -> usize {
        self.lock().readers.len()
    }

    /// The holder's stream has ended: the followers end theirs.
    pub fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        state.forget();
        state.wake_readers();
    }

    // A follower's side.

    /// Joins as a follower; `None` once the holder has ended.
    pub fn follow(&self) -> Option<Follower<'_>> {
        let mut state = self.lock();
        if state.ended {
            return None;
        }
        let id = state.next_reader;
        state.next_reader += 1;
        let (wake, woken) = crossbeam_channel::bounded(1);
        // Until `start` places it, nothing the window holds is released, nor trimmed from the
        // log: its place may be anywhere in it.
        let acknowledged = state.window_first.min(state.first);
        state.readers.push(Reader {
            id,
            wake,
            acknowledged,
        });
        Some(Follower {
            feed: self,
            id,
            woken,
        })
    }
}

impl Follower<'_> {
    /// Where to start, once the holder is ready (`None` before; `Some(Err(()))` once it has
    /// ended): after the entry whose event id is `last` when the log holds it, or at the end
    /// when `last` is the newest event written; else at the log's oldest entry, with a gap
    /// when the client named an event that is held nowhere; or `Start::Takeover` when the
    /// window may hold it but the log does not.
    pub fn start(&self, last: Option<&str>) -> Option<Result<Start, ()>> {
        let mut state = self.feed.lock();
        if state.ended {
            return Some(Err(()));
        }
        if !state.ready {
            return None;
        }
        let start = match last {
            None => Start::At {
                next: state.first,
                gap: false,
            },
            Some(last) => {
                // The oldest that matches, should an id come twice (identical messages without
                // a `message_id`): duplicates, never a gap.
                let found = (0..state.entries.len())
                    .find(|&index| state.id(index).as_deref() == Some(last.as_bytes()));
                match found {
                    Some(index) => Start::At {
                        next: state.first + index as u64 + 1,
                        gap: false,
                    },
                    None if state.newest_id == last.as_bytes() => Start::At {
                        next: state.end(),
                        gap: false,
                    },
                    None if !state.window_holds_before_log(last) => Start::At {
                        next: state.first,
                        gap: true,
                    },
                    None => Start::Takeover,
                }
            }
        };
        if let Start::At { next, .. } = start {
            if let Some(reader) = state.readers.iter_mut().find(|r| r.id == self.id) {
                reader.acknowledged = next;
            }
        }
        Some(Ok(start))
    }

    /// As `start`, waiting until the holder is ready: `None` when it ends, is not ready by
    /// `deadline`, or `stop` speaks (or disconnects) first.
    pub fn wait_start(
        &self,
        last: Option<&str>,
        deadline: Instant,
        stop: &Receiver<()>,
    ) -> Option<Start> {
        loop {
            match self.start(last) {
                Some(Ok(start)) => return Some(start),
                Some(Err(())) => return None,
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            crossbeam_channel::select! {
                recv(self.woken) -> _ => {}
                recv(stop) -> _ => return None,
                default(left) => {}
            }
        }
    }

    /// Appends to `out` the frames from entry `next` on, at most `limit` of them.
    pub fn read(&self, next: u64, limit: usize, out: &mut Vec<u8>) -> Read {
        let state = self.feed.lock();
        if state.ended || next < state.first {
            // Released before this follower had it: cannot happen while it counts among the
            // readers, whose acknowledgement holds every release back.
            return Read::Ended;
        }
        let skip = usize::try_from(next - state.first).unwrap_or(usize::MAX);
        if skip >= state.entries.len() || limit == 0 {
            return Read::Nothing;
        }
        let count = (state.entries.len() - skip).min(limit);
        let start = state.start_of(skip);
        let end = (state.entries[skip + count - 1].end - state.bytes_first) as usize;
        out.reserve(end - start);
        state.bytes.copy_range(start, end - start, out);
        Read::Frames {
            frames: count,
            next: next + count as u64,
        }
    }

    /// Whether the holder's stream has ended.
    pub fn ended(&self) -> bool {
        self.feed.lock().ended
    }

    /// Every entry before `upto` is acknowledged by this follower's client.
    pub fn acknowledge(&self, upto: u64) {
        let mut state = self.feed.lock();
        let mut moved = false;
        if let Some(reader) = state.readers.iter_mut().find(|r| r.id == self.id) {
            moved = upto > reader.acknowledged;
            reader.acknowledged = reader.acknowledged.max(upto);
        }
        drop(state);
        if moved {
            let _ = self.feed.holder_wake.try_send(());
        }
    }
}

impl Drop for Follower<'_> {
    fn drop(&mut self) {
        let mut state = self.feed.lock();
        state.readers.retain(|r| r.id != self.id);
        drop(state);
        let _ = self.feed.holder_wake.try_send(());
    }
}

#[cfg(test)]
mod tests;
