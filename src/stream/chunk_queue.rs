//! A first-in first-out queue kept in chunks of one fixed size: it takes memory a chunk at a time
//! as it grows, gives a chunk back once everything in it has left, and holds none when empty.
//!
//! Every queue of a kind then allocates blocks of one size, whatever its history, and a block one
//! queue frees is one another can reuse. A queue that grows by copying into ever larger blocks
//! (`VecDeque`) ends in a block whose size depends on what it once held: a stream's ack window
//! ended in one size after a steady start and another after a resume's burst. As the streams
//! that came back replaced the others, the blocks of the first size emptied one by one among
//! those still used, and the allocator could give back none of that memory.

use std::collections::VecDeque;

/// Entries in chunks of `N`.
#[derive(Debug)]
pub struct ChunkQueue<T, const N: usize> {
    /// Each with room for exactly `N`; only the last is not full. The list itself (24 bytes a
    /// chunk) shrinks too, once mostly unused.
    chunks: VecDeque<Vec<T>>,
    /// Entries of the first chunk that have left already.
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> ChunkQueue<T, N> {
    /// A chunk holds something: `ChunkQueue<T, 0>` does not build.
    const SOME_ROOM: () = assert!(N > 0, "a chunk must have room");
    /// The list of chunks keeps room for this many whatever it held.
    const LIST_KEEP: usize = 4;

    pub fn new() -> ChunkQueue<T, N> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SOME_ROOM;
        ChunkQueue {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, value: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < N => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(N);
                chunk.push(value);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// Appends every entry of `values`, oldest first: a chunk's room at a time.
    pub fn extend_from_slice(&mut self, mut values: &[T]) {
        while !values.is_empty() {
            let room = match self.chunks.back() {
                Some(last) if last.len() < N => N - last.len(),
                _ => {
                    self.chunks.push_back(Vec::with_capacity(N));
                    N
                }
            };
            let (now, later) = values.split_at(room.min(values.len()));
            if let Some(last) = self.chunks.back_mut() {
                last.extend_from_slice(now);
            }
            self.len += now.len();
            values = later;
        }
    }

    /// Drops the oldest `count` entries (all of them when there are fewer).
    pub fn drop_front(&mut self, count: usize) {
        let mut left = count.min(self.len);
        while left > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let here = (first.len() - self.head).min(left);
            if self.head + here < first.len() {
                self.head += here;
                self.len -= here;
                break;
            }
            // The whole rest of the first chunk: `pop_front` frees it and shrinks the list.
            self.head += here - 1;
            self.len -= here - 1;
            self.pop_front();
            left -= here;
        }
    }

    /// Appends to `out` the `count` entries from `start` places after the oldest (as many of
    /// them as there are).
    pub fn copy_range(&self, start: usize, count: usize, out: &mut Vec<T>) {
        let end = start.saturating_add(count).min(self.len);
        let mut at = self.head + start;
        let last = self.head + end;
        while at < last {
            let Some(chunk) = self.chunks.get(at / N) else {
                break;
            };
            let from = at % N;
            let to = (from + (last - at)).min(chunk.len());
            out.extend_from_slice(&chunk[from..to]);
            at += to - from;
        }
    }

    /// Takes the oldest entry. A chunk all of whose entries have left is freed.
    pub fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let first = self.chunks.front()?;
        let value = *first.get(self.head)?;
        self.head += 1;
        self.len -= 1;
        if self.head == first.len() {
            self.chunks.pop_front();
            self.head = 0;
            let listed = self.chunks.len();
            if listed == 0 {
                self.chunks = VecDeque::new();
            } else if self.chunks.capacity() > Self::LIST_KEEP
                && listed * 4 <= self.chunks.capacity()
            {
                self.chunks.shrink_to((listed * 2).max(Self::LIST_KEEP));
            }
        }
        Some(value)
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn back(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|last| self.get(last))
    }

    /// The entry `index` places after the oldest.
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        let at = self.head + index;
        self.chunks.get(at / N)?.get(at % N)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let head = self.head;
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(index, chunk)| {
                if index == 0 {
                    &chunk[head..]
                } else {
                    &chunk[..]
                }
            })
    }

    /// Oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        let head = self.head;
        self.chunks
            .iter_mut()
            .enumerate()
            .flat_map(move |(index, chunk)| {
                if index == 0 {
                    &mut chunk[head..]
                } else {
                    &mut chunk[..]
                }
            })
    }

    /// How many chunks the queue holds memory for.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// How many chunks its list has room for.
    #[cfg(test)]
    fn listed_room(&self) -> usize {
        self.chunks.capacity()
    }
}

impl<T: Copy, const N: usize> Default for ChunkQueue<T, N> {
    fn default() -> Self {
        ChunkQueue::new()
    }
}

impl<T: Copy, const N: usize> std::ops::Index<usize> for ChunkQueue<T, N> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(value) => value,
            None => panic!("index {index} in a queue of {}", self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Queue = ChunkQueue<u32, 4>;

    fn filled(values: std::ops::Range<u32>) -> Queue {
        let mut queue = Queue::new();
        for value in values {
            queue.push_back(value);
        }
        queue
    }

    #[test]
    fn entries_leave_in_the_order_they_came() {
        let mut queue = filled(0..10);
        assert_eq!(queue.len(), 10);
        let taken: Vec<u32> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(taken, (0..10).collect::<Vec<_>>());
        assert!(queue.is_empty());
        assert_eq!(queue.pop_front(), None);
    }

    #[test]
    fn indexing_and_iteration_start_at_the_oldest() {
        let mut queue = filled(0..10);
        queue.pop_front();
        queue.pop_front();
        queue.pop_front();
        queue.pop_front();
        queue.pop_front();
        assert_eq!(queue.front(), Some(&5));
        assert_eq!(queue.back(), Some(&9));
        assert_eq!(queue[0], 5);
        assert_eq!(queue[4], 9);
        assert_eq!(queue.get(5), None);
        assert_eq!(queue.iter().copied().collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
        for value in queue.iter_mut() {
            *value *= 10;
        }
        assert_eq!(
            queue.iter().copied().collect::<Vec<_>>(),
            [50, 60, 70, 80, 90]
        );
    }

    #[test]
    fn memory_follows_the_length_a_chunk_at_a_time() {
        let mut queue = filled(0..1000);
        assert_eq!(queue.chunks(), 250);
        for _ in 0..998 {
            queue.pop_front();
        }
        // Entries 998 and 999: the last chunk, and a list shrunk to the few it holds.
        assert_eq!(queue.chunks(), 1);
        assert!(queue.listed_room() <= 4, "room for {}", queue.listed_room());
        queue.pop_front();
        queue.pop_front();
        assert!(queue.is_empty());
        assert_eq!(queue.chunks(), 0);
        assert_eq!(queue.listed_room(), 0, "an empty queue holds no memory");
        for value in 0..4 {
            queue.push_back(value);
        }
        assert_eq!(queue.chunks(), 1);
        queue.push_back(4);
        assert_eq!(queue.chunks(), 2);
    }

    #[test]
    fn a_queue_emptied_midway_through_a_chunk_starts_afresh() {
        let mut queue = filled(0..2);
        queue.pop_front();
        queue.pop_front();
        assert_eq!(queue.chunks(), 0);
        queue.push_back(7);
        assert_eq!(queue.front(), Some(&7));
        assert_eq!(queue.iter().copied().collect::<Vec<_>>(), [7]);
        assert_eq!(queue.chunks(), 1);
    }

    proptest::proptest! {
        /// Any run of pushes (`Some`) and pops (`None`) leaves what a `VecDeque` would, in no
        /// more chunks than its length needs and one more for a first chunk begun at its end,
        /// and in none once empty.
        #[test]
        fn it_holds_what_a_vecdeque_holds(ops in proptest::collection::vec(
            proptest::option::weighted(0.6, 0u32..1000), 0..200)) {
            let mut queue = Queue::new();
            let mut model = std::collections::VecDeque::new();
            for op in ops {
                match op {
                    Some(value) => {
                        queue.push_back(value);
                        model.push_back(value);
                    }
                    None => proptest::prop_assert_eq!(queue.pop_front(), model.pop_front()),
                }
                proptest::prop_assert_eq!(queue.len(), model.len());
                proptest::prop_assert_eq!(queue.front(), model.front());
                proptest::prop_assert_eq!(queue.back(), model.back());
                proptest::prop_assert!(queue.iter().eq(model.iter()));
                for (index, value) in model.iter().enumerate() {
                    proptest::prop_assert_eq!(queue[index], *value);
                }
                proptest::prop_assert!(queue.chunks() <= model.len().div_ceil(4) + 1);
                proptest::prop_assert!(!model.is_empty() || queue.listed_room() == 0);
            }
        }
    }

    proptest::proptest! {
        /// Bulk appends, drops and copies leave what a `VecDeque` would.
        #[test]
        fn bulk_operations_hold_what_a_vecdeque_holds(ops in proptest::collection::vec(
            (0u8..3, 0usize..12, 0usize..12), 0..100)) {
            let mut queue = Queue::new();
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u32;
            for (op, a, b) in ops {
                match op {
                    0 => {
                        let values: Vec<u32> = (next..next + a as u32).collect();
                        next += a as u32;
                        queue.extend_from_slice(&values);
                        model.extend(values);
                    }
                    1 => {
                        queue.drop_front(a);
                        model.drain(..a.min(model.len()));
                    }
                    _ => {
                        let mut out = Vec::new();
                        queue.copy_range(a, b, &mut out);
                        let expected: Vec<u32> = model.iter().skip(a).take(b).copied().collect();
                        proptest::prop_assert_eq!(out, expected);
                    }
                }
                proptest::prop_assert_eq!(queue.len(), model.len());
                proptest::prop_assert!(queue.iter().eq(model.iter()));
                proptest::prop_assert!(queue.chunks() <= model.len().div_ceil(4) + 1);
                proptest::prop_assert!(!model.is_empty() || queue.listed_room() == 0);
            }
        }
    }

    #[test]
    fn a_chunk_takes_exactly_its_entries() {
        let queue = filled(0..1);
        assert_eq!(queue.chunks[0].capacity(), 4);
    }
}
