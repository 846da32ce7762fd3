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
            let above = previous.map_or(true, |p| tag > p);
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
                if newest.map_or(true, |n| held.tag >= n.tag) {
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

    /// When the oldest held delivery reaches the age bound; `None` for never.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.held
            .front()
            .and_then(|h| self.written(h).checked_add(self.bounds.age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOTS: u64 = u64::MAX;

    fn up_to(newest: u64, count: usize) -> Release<u64> {
        Release::UpTo { newest, count }
    }

    fn bounds(messages: usize, bytes: u64, age_secs: u64) -> Bounds {
        Bounds {
            messages,
            bytes,
            age: Duration::from_secs(age_secs),
        }
    }

    /// Holds tags `tags` as 10-byte frames written back to back from offset `start`.
    fn fill(window: &mut AckWindow, tags: impl IntoIterator<Item = u64>, at: Instant) {
        for tag in tags {
            let end = (window.len() as u64 + 1) * 10;
            window.hold(tag, end, 10, at);
        }
    }

    #[test]
    fn nothing_is_acked_within_the_bounds() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(5, LOTS, 60));
        fill(&mut window, 1..=5, now);
        assert!(!window.over_bounds(now));
        assert_eq!(window.release(LOTS, now), Release::Nothing);
        assert_eq!(window.len(), 5);
        window.hold(6, 60, 10, now);
        assert!(window.over_bounds(now));
    }

    #[test]
    fn the_count_bound_slides_with_one_multiple_ack() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(3, LOTS, 60));
        fill(&mut window, 1..=7, now);
        assert_eq!(window.release(LOTS, now), up_to(4, 4));
        assert_eq!(window.len(), 3);
        window.hold(8, 80, 10, now);
        assert_eq!(window.release(LOTS, now), up_to(5, 1));
    }

    #[test]
    fn the_byte_bound_counts_frame_bytes() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(100, 25, 60));
        fill(&mut window, 1..=4, now);
        // 40 bytes held, 25 allowed: the two oldest go.
        assert_eq!(window.release(LOTS, now), up_to(2, 2));
        assert_eq!(window.release(LOTS, now), Release::Nothing);
    }

    #[test]
    fn the_age_bound_acks_what_is_older_and_says_when_next() {
        let start = Instant::now();
        let mut window = AckWindow::new(bounds(100, LOTS, 10));
        fill(&mut window, 1..=2, start);
        let later = start + Duration::from_secs(4);
        window.hold(3, 30, 10, later);
        assert_eq!(window.next_expiry(), Some(start + Duration::from_secs(10)));
        assert_eq!(
            window.release(LOTS, start + Duration::from_secs(9)),
            Release::Nothing
        );
        assert_eq!(
            window.release(LOTS, start + Duration::from_secs(10)),
            up_to(2, 2)
        );
        assert_eq!(window.next_expiry(), Some(later + Duration::from_secs(10)));
    }

    #[test]
    fn nothing_the_clients_tcp_has_not_acknowledged_is_acked() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(1, LOTS, 60));
        fill(&mut window, 1..=4, now);
        // Only the first two frames (20 bytes) reached the client's kernel.
        assert_eq!(window.release(20, now), up_to(2, 2));
        assert!(window.waiting_on_client_tcp(20, now));
        assert_eq!(window.release(20, now), Release::Nothing);
        assert_eq!(window.release(40, now), up_to(3, 1));
        assert!(!window.waiting_on_client_tcp(40, now));
    }

    #[test]
    fn out_of_order_redeliveries_are_acked_one_by_one() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(2, LOTS, 60));
        // A resumed stream: redeliveries (tags 5, 6) arrived after fresh ones (1, 2) but were
        // written first.
        fill(&mut window, [5, 6, 1, 2], now);
        assert_eq!(window.release(LOTS, now), Release::Each(vec![5, 6]));
        window.hold(7, 50, 10, now);
        // Tag 1 is now the oldest, and nothing held is lower: one multiple ack again.
        assert_eq!(window.release(LOTS, now), up_to(1, 1));
    }

    #[test]
    fn a_resumed_first_batch_longer_than_a_chunk_is_acked_one_by_one_across_chunks() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(10, LOTS, 3600));
        // 51 redeliveries (60 to 110), then 9 fresh messages with lower tags, in one write.
        let tags = (60..=110).chain(1..=9);
        let batch: Vec<(u64, u64, u64)> = tags.zip(1..).map(|(tag, i)| (tag, i * 10, 10)).collect();
        window.hold_batch(batch, now);
        assert_eq!(window.chunks(), 2);
        assert_eq!(
            window.release(LOTS, now),
            Release::Each((60..=109).collect())
        );
        assert_eq!(window.len(), 10);
        assert_eq!(window.chunks(), 1);
        window.hold(111, 610, 10, now);
        // 110 goes alone: 1 to 9, held after it, are lower.
        assert_eq!(window.release(LOTS, now), Release::Each(vec![110]));
        // In order again: one multiple ack.
        window.hold(112, 620, 10, now);
        assert_eq!(window.release(LOTS, now), up_to(1, 1));
    }

    #[test]
    fn a_multiple_ack_covers_lower_tags_released_together() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(1, LOTS, 60));
        fill(&mut window, [5, 6, 1, 2, 9], now);
        // Everything but the newest goes, and nothing left is lower than 6.
        assert_eq!(window.release(LOTS, now), up_to(6, 4));
    }

    #[test]
    fn a_held_delivery_takes_twenty_four_bytes() {
        assert_eq!(std::mem::size_of::<Held>(), 24);
    }

    #[test]
    fn a_burst_takes_chunks_and_gives_them_back_once_released() {
        let bounds = Bounds {
            messages: 0,
            bytes: u64::MAX,
            age: Duration::from_secs(3600),
        };
        let mut window = AckWindow::new(bounds);
        let now = Instant::now();
        let burst: Vec<(u64, u64, u64)> = (1..=1000).map(|t| (t, t * 10, 10)).collect();
        window.hold_batch(burst, now);
        assert_eq!(window.chunks(), 1000_usize.div_ceil(CHUNK));
        assert_eq!(window.release(10_000, now).count(), 1000);
        assert_eq!(window.chunks(), 0, "an emptied window holds no chunk");
    }

    #[test]
    fn a_steady_stream_takes_the_chunks_it_holds() {
        let mut window = AckWindow::new(bounds(20, LOTS, 3600));
        let now = Instant::now();
        fill(&mut window, 1..=120, now);
        assert_eq!(window.chunks(), 120_usize.div_ceil(CHUNK));
        // Most of it released: the chunks follow.
        assert_eq!(window.release(LOTS, now).count(), 100);
        // 101 to 120: the third chunk's last twenty.
        assert_eq!(window.chunks(), 1);
    }

    #[test]
    fn a_chunk_of_the_window_is_about_a_kilobyte() {
        assert_eq!(CHUNK * std::mem::size_of::<Held>(), 1008);
    }

    #[test]
    fn a_window_weeks_old_still_ages_its_deliveries() {
        let start = Instant::now();
        let mut window = AckWindow::new(bounds(usize::MAX, LOTS, 60));
        window.hold(1, 10, 10, start);
        window.hold(2, 20, 10, start);
        assert_eq!(
            window.release(20, start + Duration::from_secs(61)),
            up_to(1, 1)
        );
        // Fifty days on: past what milliseconds in 32 bits count.
        let later = start + Duration::from_secs(50 * 86_400);
        window.hold(3, 30, 10, later);
        window.hold(4, 40, 10, later);
        assert_eq!(
            window.release(40, later + Duration::from_secs(59)),
            up_to(2, 1),
            "the first days' last is long past its age"
        );
        assert_eq!(window.next_expiry(), Some(later + Duration::from_secs(60)));
        assert_eq!(
            window.release(40, later + Duration::from_secs(59)),
            Release::Nothing
        );
        assert_eq!(
            window.release(40, later + Duration::from_secs(60)),
            up_to(3, 1)
        );
    }

    #[test]
    fn the_newest_delivery_stays_held_to_mark_where_the_client_is() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(2, LOTS, 1));
        fill(&mut window, 1..=3, now);
        let later = now + Duration::from_secs(2);
        assert!(window.over_bounds(later));
        assert_eq!(window.release(LOTS, later), up_to(2, 2));
        assert_eq!(window.len(), 1);
        assert!(!window.over_bounds(later + Duration::from_secs(60)));
        assert_eq!(window.release(LOTS, later), Release::Nothing);
        // Without a window, nothing is held at all.
        let mut none = AckWindow::new(bounds(0, LOTS, 1));
        fill(&mut none, 1..=2, now);
        assert_eq!(none.release(LOTS, now), up_to(2, 2));
    }

    #[test]
    fn a_batch_is_released_but_for_its_newest_once_all_of_it_is_due() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(usize::MAX, LOTS, 1));
        window.hold_batch(vec![(1, 10, 10), (2, 20, 10), (3, 30, 10)], now);
        let later = now + Duration::from_secs(2);
        assert_eq!(window.release(LOTS, later), up_to(2, 2));
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn followers_hold_releases_back_to_what_they_all_have() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(0, LOTS, 1));
        fill(&mut window, 1..=4, now);
        assert!(window.waiting_on_readers(LOTS, 1, now));
        assert_eq!(window.release_within(LOTS, 1, now), up_to(1, 1));
        assert_eq!(window.release_within(LOTS, 0, now), Release::Nothing);
        assert!(!window.waiting_on_readers(LOTS, usize::MAX, now));
        assert_eq!(window.release_within(LOTS, usize::MAX, now), up_to(4, 3));
    }

    /// A batch of `tags` as one write of 10-byte frames after what `window` holds.
    fn batch(window: &AckWindow, tags: &[u64]) -> Vec<(u64, u64, u64)> {
        let start = window.len() as u64 * 10;
        tags.iter()
            .enumerate()
            .map(|(i, &tag)| (tag, start + (i as u64 + 1) * 10, 10))
            .collect()
    }

    #[test]
    fn an_in_order_batch_is_acked_at_its_end() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(2, LOTS, 60));
        window.hold_batch(batch(&window, &[1, 2, 3, 4]), now);
        // 1 and 2 are past the bound, but an ack can only land on 4, which is not.
        assert_eq!(window.release(LOTS, now), Release::Nothing);
        assert!(window.over_bounds(now));
        window.hold_batch(batch(&window, &[5, 6]), now);
        assert_eq!(window.release(LOTS, now), up_to(4, 4));
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn a_resumed_first_batch_is_acked_one_by_one_until_it_is_in_order_again() {
        let now = Instant::now();
        let mut window = AckWindow::new(bounds(3, LOTS, 60));
        // Redeliveries 5, 6 before fresh 1, 2: every delivery of this batch is kept.
        window.hold_batch(batch(&window, &[5, 6, 1, 2]), now);
        assert_eq!(window.release(LOTS, now), Release::Each(vec![5]));
        window.hold_batch(batch(&window, &[7, 8, 9]), now);
        // 6, 1, 2 go, and nothing left is lower than 6: one multiple ack.
        assert_eq!(window.release(LOTS, now), up_to(6, 3));
        // In order again: the next batch is acked at its end.
        window.hold_batch(batch(&window, &[10, 11, 12]), now);
        assert_eq!(window.release(LOTS, now), up_to(9, 3));
    }

    #[test]
    fn an_unbounded_age_never_expires() {
        let now = Instant::now();
        let mut window = AckWindow::new(Bounds {
            messages: 1,
            bytes: u64::MAX,
            age: Duration::MAX,
        });
        window.hold(1u64, 10, 10, now);
        assert_eq!(window.next_expiry(), None);
        assert_eq!(window.release(LOTS, now), Release::Nothing);
    }

    #[test]
    fn an_empty_window_has_no_expiry_and_releases_nothing() {
        let now = Instant::now();
        let mut window: AckWindow = AckWindow::new(bounds(0, 0, 0));
        assert_eq!(window.next_expiry(), None);
        assert_eq!(window.release(LOTS, now), Release::Nothing);
        assert!(!window.waiting_on_client_tcp(0, now));
        // With every bound at zero, each delivery is acked as soon as the client's TCP has it.
        window.hold(1, 10, 10, now);
        assert_eq!(window.release(0, now), Release::Nothing);
        assert_eq!(window.release(10, now), up_to(1, 1));
    }
}
