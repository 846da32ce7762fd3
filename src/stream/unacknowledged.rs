//! A follower's writes that its client's TCP has not acknowledged yet (a follower here, or a
//! reader of a relayed stream): where each ends in its own stream, and the feed entry after its
//! last frame. The feed entry its client has everything before is what it tells the holder.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Unacknowledged {
    writes: VecDeque<(u64, u64)>,
}

impl Unacknowledged {
    /// A write that ends at stream offset `end`, whose last frame is the one before feed entry
    /// `after`.
    pub fn push(&mut self, end: u64, after: u64) {
        self.writes.push_back((end, after));
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Once the client's TCP has acknowledged the stream up to offset `received`: the feed
    /// entry its client now has everything before, when that moved.
    pub fn acknowledged(&mut self, received: u64) -> Option<u64> {
        let mut upto = None;
        while let Some(&(end, after)) = self.writes.front() {
            if end > received {
                break;
            }
            upto = Some(after);
            self.writes.pop_front();
        }
        upto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_once_all_of_its_bytes_are_acknowledged() {
        let mut writes = Unacknowledged::default();
        writes.push(100, 3);
        writes.push(250, 7);
        assert_eq!(writes.acknowledged(99), None);
        assert_eq!(writes.acknowledged(249), Some(3));
        assert!(!writes.is_empty());
        assert_eq!(writes.acknowledged(249), None, "nothing moved");
        assert_eq!(writes.acknowledged(1000), Some(7));
        assert!(writes.is_empty());
    }
}
