//! Which queues this server is streaming right now: one consuming stream per queue, decided here
//! before the broker is asked (the broker's exclusive consume then guards against other servers).
//! A new request for a queue being streamed here joins it as a follower (`feed`), takes it over
//! (the old stream ends and hands its unacked messages back) or is refused, as `queue.conflict`
//! says.

use crate::stream::feed::Feed;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What to do when a queue already has a stream here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Serve the new request beside the old stream, from what that stream consumes: every tab
    /// of a user gets every message, and a reconnect whose old connection has not ended yet is
    /// served at once.
    Share,
    /// End the old stream and serve the new request (a browser reconnecting after a network
    /// change is served at once instead of waiting for TCP to notice the old connection).
    Takeover,
    /// Refuse the new request, as the original does.
    Reject,
}

#[derive(Default)]
pub struct Registry {
    active: Mutex<HashMap<String, Holder>>,
    released: Condvar,
    next: AtomicU64,
}

struct Holder {
    id: u64,
    stop: Sender<()>,
    feed: Arc<Feed>,
}

/// What a request for a queue gets here.
pub enum Turn<'a> {
    /// It consumes the queue.
    Hold(Claim<'a>),
    /// It follows the stream that does (`Conflict::Share`).
    Follow(Arc<Feed>),
}

/// Proof that a stream owns its queue here; dropping it releases the queue.
pub struct Claim<'a> {
    registry: &'a Registry,
    queue: String,
    id: u64,
    /// Receives when another request takes the queue over.
    pub stop: Receiver<()>,
    /// What the stream's followers read.
    pub feed: Arc<Feed>,
}

impl Registry {
    /// Claims `queue`, taking it over from its current stream if `conflict` says so and that
    /// stream lets go within `wait`; `None` when the queue stays taken.
    pub fn claim(&self, queue: &str, conflict: Conflict, wait: Duration) -> Option<Claim<'_>> {
        match self.turn(queue, conflict, wait)? {
            Turn::Hold(claim) => Some(claim),
            Turn::Follow(_) => None,
        }
    }

    /// Claims `queue`, or with `Conflict::Share` follows its stream here when there is one;
    /// otherwise as `claim`.
    pub fn turn(&self, queue: &str, conflict: Conflict, wait: Duration) -> Option<Turn<'_>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + wait;
        let mut active = self.lock();
        while let Some(holder) = active.get(queue) {
            match conflict {
                Conflict::Reject => return None,
                Conflict::Share => return Some(Turn::Follow(Arc::clone(&holder.feed))),
                Conflict::Takeover => {}
            }
            let _ = holder.stop.try_send(());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            active = self
                .released
                .wait_timeout(active, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let feed = Arc::new(Feed::default());
        let holder = Holder {
            id,
            stop,
            feed: Arc::clone(&feed),
        };
        active.insert(queue.to_string(), holder);
        Some(Turn::Hold(Claim {
            registry: self,
            queue: queue.to_string(),
            id,
            stop: stopped,
            feed,
        }))
    }

    /// The feed of the stream holding `queue` here, if any.
    pub fn feed_of(&self, queue: &str) -> Option<Arc<Feed>> {
        self.lock()
            .get(queue)
            .map(|holder| Arc::clone(&holder.feed))
    }

    /// Tells the stream holding `queue` here, if any, to end (another instance takes it over).
    pub fn release(&self, queue: &str) -> bool {
        match self.lock().get(queue) {
            Some(holder) => {
                let _ = holder.stop.try_send(());
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Holder>> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut active = self.registry.lock();
        if active.get(&self.queue).is_some_and(|h| h.id == self.id) {
            active.remove(&self.queue);
        }
        self.registry.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    const WAIT: Duration = Duration::from_secs(2);

    #[test]
    fn reject_keeps_one_claim_per_queue_until_released() {
        let registry = Registry::default();
        let first = registry.claim("q", Conflict::Reject, WAIT);
        assert!(first.is_some());
        assert!(registry.claim("q", Conflict::Reject, WAIT).is_none());
        assert!(registry.claim("other", Conflict::Reject, WAIT).is_some());
        drop(first);
        assert!(registry.claim("q", Conflict::Reject, WAIT).is_some());
    }

    #[test]
    fn takeover_stops_the_holder_and_waits_for_it() {
        let registry = Arc::new(Registry::default());
        let (held_tx, held_rx) = crossbeam_channel::bounded(0);
        let holder = {
            let registry = Arc::clone(&registry);
            thread::spawn(move || {
                let claim = registry
                    .claim("q", Conflict::Takeover, WAIT)
                    .expect("first claim");
                held_tx.send(()).unwrap();
                // A stream ends when told to, then releases the queue.
                claim.stop.recv_timeout(WAIT).expect("told to stop");
            })
        };
        held_rx.recv().unwrap();
        let second = registry.claim("q", Conflict::Takeover, WAIT);
        assert!(second.is_some());
        holder.join().unwrap();
    }

    #[test]
    fn share_follows_the_holder_and_never_stops_it() {
        let registry = Registry::default();
        let Some(Turn::Hold(claim)) = registry.turn("q", Conflict::Share, WAIT) else {
            panic!("the first request holds the queue");
        };
        let Some(Turn::Follow(feed)) = registry.turn("q", Conflict::Share, WAIT) else {
            panic!("the second follows");
        };
        assert!(Arc::ptr_eq(&feed, &claim.feed));
        assert!(
            claim.stop.try_recv().is_err(),
            "nobody takes the queue over"
        );
        drop(claim);
        assert!(matches!(
            registry.turn("q", Conflict::Share, WAIT),
            Some(Turn::Hold(_))
        ));
    }

    #[test]
    fn release_tells_the_holder_and_nobody_else() {
        let registry = Registry::default();
        let claim = registry.claim("q", Conflict::Reject, WAIT).unwrap();
        assert!(!registry.release("other"));
        assert!(registry.release("q"));
        assert!(claim.stop.try_recv().is_ok());
    }

    #[test]
    fn takeover_gives_up_when_the_holder_does_not_let_go() {
        let registry = Registry::default();
        let _stuck = registry.claim("q", Conflict::Takeover, WAIT).unwrap();
        assert!(registry
            .claim("q", Conflict::Takeover, Duration::from_millis(50))
            .is_none());
    }
}
