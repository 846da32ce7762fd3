//! Several readers of one queue on this instance: the stream that consumes the queue (its
//! holder) keeps the frames it wrote in a log, as long as its ack window holds their deliveries,
//! and every other stream of the queue here (a follower: a second tab, a reconnect whose old
//! connection has not ended yet) writes from that log to its own client, at its own pace.
//!
//! Entries enter the log in the order the holder's window holds them and leave it when the
//! window releases them: entry `n` of the log is delivery `n` of the window. A follower says how
//! far its client's TCP has acknowledged what it wrote, and the holder acks no entry that a
//! follower's client may not have, just as it acks none its own client may not have.
//!
//! The bytes are kept in chunks of one size (`chunk_queue`), for the same reason as the window.

use crate::stream::chunk_queue::ChunkQueue;
use crate::stream::frames::Frames;
use crossbeam_channel::{Receiver, Sender};
use std::sync::{Mutex, MutexGuard};

/// Bytes of frames a chunk of the log takes.
const BYTE_CHUNK: usize = 2048;
/// Entries a chunk of the log's index takes: 128 of 8 bytes, 1,024 bytes.
const ENTRY_CHUNK: usize = 128;

/// One frame in the log.
#[derive(Debug, Clone, Copy)]
struct Entry {
    len: u32,
    /// The length of its event id, which starts its frame (`id: `); 0 when it has none.
    id_len: u16,
}

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The first entry it sends.
    pub next: u64,
    /// Its client's last event is not in the log: it is told so before anything is sent.
    pub gap: bool,
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
    /// The number of the log's oldest entry.
    first: u64,
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

    fn id(&self, index: usize, start: usize) -> Option<Vec<u8>> {
        let entry = self.entries.get(index)?;
        if entry.id_len == 0 {
            return None;
        }
        let mut id = Vec::with_capacity(usize::from(entry.id_len));
        let from = start + crate::http::sse::ID_FIELD.len();
        self.bytes
            .copy_range(from, usize::from(entry.id_len), &mut id);
        Some(id)
    }

    fn wake_readers(&self) {
        for reader in &self.readers {
            let _ = reader.wake.try_send(());
        }
    }
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

    /// Receives when a follower leaves or acknowledges more.
    pub fn holder_woken(&self) -> &Receiver<()> {
        &self.holder_woken
    }

    /// Appends the frames of `batch` at `indices` (in the order the window holds them), and
    /// wakes the followers.
    pub fn append(&self, batch: &Frames, indices: impl Iterator<Item = usize>) {
        let mut state = self.lock();
        for index in indices {
            let bytes = batch.frame_bytes(index);
            let id_len = batch
                .id(index)
                .and_then(|id| u16::try_from(id.len()).ok())
                .unwrap_or(0);
            state.bytes.extend_from_slice(bytes);
            state.entries.push_back(Entry {
                len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                id_len,
            });
        }
        state.wake_readers();
    }

    /// The holder has written its first batch: followers may start.
    pub fn ready(&self) {
        let mut state = self.lock();
        state.ready = true;
        state.wake_readers();
    }

    /// How many of the oldest entries every follower's client has: `None` with no follower.
    pub fn acknowledged_by_followers(&self) -> Option<usize> {
        let state = self.lock();
        let first = state.first;
        state
            .readers
            .iter()
            .map(|r| usize::try_from(r.acknowledged.saturating_sub(first)).unwrap_or(usize::MAX))
            .min()
    }

    /// Entries the window released leave the log.
    pub fn release(&self, count: usize) {
        if count == 0 {
            return;
        }
        let mut state = self.lock();
        let count = count.min(state.entries.len());
        let mut bytes = 0usize;
        for index in 0..count {
            bytes += state.entries.get(index).map_or(0, |e| e.len as usize);
        }
        state.bytes.drop_front(bytes);
        state.entries.drop_front(count);
        state.first += count as u64;
    }

    pub fn followers(&self) -> usize {
        self.lock().readers.len()
    }

    /// The holder's stream has ended: the followers end theirs.
    pub fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        state.bytes = ChunkQueue::new();
        state.entries = ChunkQueue::new();
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
        // Nothing is acknowledged before it starts; `start` moves it to where it starts.
        let acknowledged = state.end();
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
    /// Whether the holder is ready (`Some`), and where to start then: after the entry whose
    /// event id is `last` when the log holds it; otherwise at the log's oldest entry, with a gap
    /// when the client named an event the log does not hold. `None` while the holder is not
    /// ready; `Some(Err(()))` once it has ended.
    pub fn start(&self, last: Option<&str>) -> Option<Result<Start, ()>> {
        let mut state = self.feed.lock();
        if state.ended {
            return Some(Err(()));
        }
        if !state.ready {
            return None;
        }
        let mut start = Start {
            next: state.first,
            gap: last.is_some(),
        };
        if let Some(last) = last {
            let mut offset = 0usize;
            // The newest that matches, should an id come twice.
            let mut found = None;
            for index in 0..state.entries.len() {
                if state.id(index, offset).as_deref() == Some(last.as_bytes()) {
                    found = Some(index);
                }
                offset += state.entries[index].len as usize;
            }
            if let Some(index) = found {
                start = Start {
                    next: state.first + index as u64 + 1,
                    gap: false,
                };
            }
        }
        let next = start.next;
        if let Some(reader) = state.readers.iter_mut().find(|r| r.id == self.id) {
            reader.acknowledged = next;
        }
        Some(Ok(start))
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
        if skip >= state.entries.len() {
            return Read::Nothing;
        }
        let mut start = 0usize;
        for index in 0..skip {
            start += state.entries[index].len as usize;
        }
        let count = (state.entries.len() - skip).min(limit);
        let mut len = 0usize;
        for index in skip..skip + count {
            len += state.entries[index].len as usize;
        }
        out.reserve(len);
        state.bytes.copy_range(start, len, out);
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
mod tests {
    use super::*;
    use crate::http::sse::Event;

    fn frames(ids: &[&str]) -> Frames {
        let mut frames = Frames::new();
        for (tag, id) in ids.iter().enumerate() {
            let event = Event {
                id: Some(id),
                event: None,
                data: id.as_bytes(),
            };
            frames.push_event(tag as u64 + 1, false, &event);
        }
        frames
    }

    fn append(feed: &Feed, ids: &[&str]) {
        let batch = frames(ids);
        feed.append(&batch, 0..batch.len());
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_follower_waits_for_the_holder_then_reads_after_its_last_event() {
        let feed = Feed::default();
        let follower = feed.follow().unwrap();
        assert_eq!(follower.start(Some("b")), None, "the holder is not ready");
        append(&feed, &["a", "b", "c"]);
        feed.ready();
        let start = follower.start(Some("b")).unwrap().unwrap();
        assert_eq!(
            start,
            Start {
                next: 2,
                gap: false
            }
        );
        let mut out = Vec::new();
        assert_eq!(
            follower.read(start.next, 10, &mut out),
            Read::Frames { frames: 1, next: 3 }
        );
        assert_eq!(text(&out), "id: c\ndata: c\n\n");
        assert_eq!(follower.read(3, 10, &mut out), Read::Nothing);
    }

    #[test]
    fn an_event_the_log_does_not_hold_is_a_gap_and_a_fresh_page_gets_the_whole_log() {
        let feed = Feed::default();
        append(&feed, &["a", "b"]);
        feed.ready();
        let follower = feed.follow().unwrap();
        assert_eq!(
            follower.start(Some("zz")).unwrap().unwrap(),
            Start { next: 0, gap: true }
        );
        assert_eq!(
            follower.start(None).unwrap().unwrap(),
            Start {
                next: 0,
                gap: false
            }
        );
    }

    #[test]
    fn released_entries_leave_and_numbers_go_on() {
        let feed = Feed::default();
        append(&feed, &["a", "b", "c"]);
        feed.ready();
        feed.release(2);
        append(&feed, &["d"]);
        let follower = feed.follow().unwrap();
        assert_eq!(
            follower.start(Some("a")).unwrap().unwrap(),
            Start { next: 2, gap: true }
        );
        let start = follower.start(Some("c")).unwrap().unwrap();
        assert_eq!(start.next, 3);
        let mut out = Vec::new();
        follower.read(2, 1, &mut out);
        assert_eq!(text(&out), "id: c\ndata: c\n\n");
    }

    #[test]
    fn the_slowest_follower_holds_releases_back() {
        let feed = Feed::default();
        assert_eq!(feed.acknowledged_by_followers(), None);
        append(&feed, &["a", "b", "c", "d"]);
        feed.ready();
        let one = feed.follow().unwrap();
        let two = feed.follow().unwrap();
        one.start(None).unwrap().unwrap();
        two.start(Some("b")).unwrap().unwrap();
        assert_eq!(feed.acknowledged_by_followers(), Some(0));
        one.acknowledge(3);
        assert_eq!(feed.acknowledged_by_followers(), Some(2));
        assert!(feed.holder_woken().try_recv().is_ok());
        drop(two);
        assert_eq!(feed.acknowledged_by_followers(), Some(3));
        drop(one);
        assert_eq!(feed.followers(), 0);
    }

    #[test]
    fn followers_end_with_the_holder_and_none_join_after() {
        let feed = Feed::default();
        append(&feed, &["a"]);
        feed.ready();
        let follower = feed.follow().unwrap();
        feed.end();
        assert!(follower.woken.try_recv().is_ok());
        assert_eq!(follower.read(0, 10, &mut Vec::new()), Read::Ended);
        assert_eq!(follower.start(None), Some(Err(())));
        assert!(feed.follow().is_none());
    }
}
