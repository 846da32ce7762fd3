use log::trace;
use std::fmt::Debug;
use std::time::{Duration, Instant};

#[derive(Debug, Copy, Clone, PartialEq)]
pub enum HeartbeatState {
    StillRunning,
    Expired,
}

/// A heartbeat deadline: the I/O loop polls no longer than until the nearest one, and then
/// asks each whether it has fired.
#[derive(Debug)]
pub struct Heartbeat<T: Copy + Debug> {
    val: T,
    last: Instant,
    deadline: Instant,
    interval: Duration,
}

impl<T: Copy + Debug> Heartbeat<T> {
    pub fn start(val: T, interval: Duration) -> Heartbeat<T> {
        assert!(
            interval > Duration::from_millis(0),
            "timer interval cannot be 0"
        );
        let last = Instant::now();
        Heartbeat {
            val,
            last,
            deadline: last + interval,
            interval,
        }
    }

    pub fn record_activity(&mut self) {
        self.last = Instant::now();
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// None before the deadline; after it, whether the interval passed without activity (the
    /// heartbeat then starts again for the full interval) or not (it restarts for the rest).
    pub fn fire(&mut self, now: Instant) -> Option<HeartbeatState> {
        if now < self.deadline {
            return None;
        }
        // A few ms of fudge for imprecise wakeups; AMQP heartbeats are scaled in seconds.
        let elapsed = now.saturating_duration_since(self.last);
        let (when, state) = if self.interval <= elapsed + Duration::from_millis(5) {
            (self.interval, HeartbeatState::Expired)
        } else {
            (self.interval - elapsed, HeartbeatState::StillRunning)
        };
        trace!(
            "setting new heartbeat timer {:?} for {:?} (interval = {:?}, elapsed = {:?})",
            self.val,
            when,
            self.interval,
            elapsed
        );
        self.deadline = now + when;
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_only_after_its_deadline() {
        let mut hb = Heartbeat::start(0u32, Duration::from_millis(100));
        let start = hb.deadline() - Duration::from_millis(100);
        assert_eq!(hb.fire(start), None);
        assert_eq!(
            hb.fire(start + Duration::from_millis(100)),
            Some(HeartbeatState::Expired)
        );
        assert!(hb.deadline() >= start + Duration::from_millis(200));
    }

    #[test]
    fn activity_restarts_it_for_the_rest_of_the_interval() {
        let mut hb = Heartbeat::start(0u32, Duration::from_secs(10));
        let start = hb.deadline() - Duration::from_secs(10);
        hb.last = start + Duration::from_secs(4);
        assert_eq!(
            hb.fire(start + Duration::from_secs(10)),
            Some(HeartbeatState::StillRunning)
        );
        assert_eq!(hb.deadline(), start + Duration::from_secs(14));
    }
}
