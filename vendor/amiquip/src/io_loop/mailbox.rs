//! Replies from the I/O thread to the one caller waiting for them: a small queue behind a
//! mutex, whose receiver sleeps on a condition variable as soon as it finds it empty.
//!
//! A crossbeam channel's blocking receive spins, then yields the CPU a few times, before it
//! sleeps. A call waits for a round trip to the broker, far longer than that spinning lasts,
//! and with thousands of streams setting up at once the spinning and yielding took a quarter
//! of their CPU. The sending side never blocks: past its bound a send is refused as full, as
//! crossbeam's `try_send` refuses it.

use crossbeam_channel::{RecvError, SendError, TrySendError};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

struct State<T> {
    items: VecDeque<T>,
    poster_gone: bool,
    mailbox_gone: bool,
    /// The receiver sleeps and nobody has woken it yet: only then does a post wake it, so
    /// that replies arriving together cost one wake-up, not one each.
    asleep: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    arrived: Condvar,
    bound: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Neither side panics while holding the lock; a poisoned one still holds good data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A mailbox holding at most `bound` items: the sending and the receiving side.
pub(crate) fn mailbox<T>(bound: usize) -> (Poster<T>, Mailbox<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            poster_gone: false,
            mailbox_gone: false,
            asleep: false,
        }),
        arrived: Condvar::new(),
        bound,
    });
    (
        Poster {
            shared: Arc::clone(&shared),
        },
        Mailbox { shared },
    )
}

/// The sending side (the I/O thread's). Dropped, it wakes the receiver, whose next `recv`
/// fails once the items already posted are taken.
pub(crate) struct Poster<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Poster<T> {
    /// Posts `item` unless the mailbox is full or its receiver gone.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if state.mailbox_gone {
            return Err(TrySendError::Disconnected(item));
        }
        if state.items.len() >= self.shared.bound {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        self.wake(state);
        Ok(())
    }

    /// Posts `item`, over the bound if need be, unless the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), SendError<T>> {
        let mut state = self.shared.lock();
        if state.mailbox_gone {
            return Err(SendError(item));
        }
        state.items.push_back(item);
        self.wake(state);
        Ok(())
    }

    fn wake(&self, mut state: MutexGuard<'_, State<T>>) {
        let asleep = std::mem::take(&mut state.asleep);
        drop(state);
        if asleep {
            self.shared.arrived.notify_one();
        }
    }
}

impl<T> Drop for Poster<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.poster_gone = true;
        self.wake(state);
    }
}

/// The receiving side (the caller's).
pub(crate) struct Mailbox<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Mailbox<T> {
    /// The oldest item, waiting for one; an error once the poster is gone and nothing is left.
    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Ok(item);
            }
            if state.poster_gone {
                return Err(RecvError);
            }
            state.asleep = true;
            state = self
                .shared
                .arrived
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<T> Drop for Mailbox<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.mailbox_gone = true;
        // What was posted and never taken goes now, not with the poster.
        state.items.clear();
    }
}

/// Sending without blocking, to a mailbox or to a crossbeam channel (a consumer's).
pub(crate) trait TrySend<T> {
    fn try_send(&self, item: T) -> Result<(), TrySendError<T>>;
}

impl<T> TrySend<T> for Poster<T> {
    fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        Poster::try_send(self, item)
    }
}

impl<T> TrySend<T> for crossbeam_channel::Sender<T> {
    fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        crossbeam_channel::Sender::try_send(self, item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn items_come_in_order_and_the_bound_refuses_more() {
        let (poster, mailbox) = mailbox(2);
        assert!(poster.try_send(1).is_ok());
        assert!(poster.try_send(2).is_ok());
        assert!(matches!(poster.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(mailbox.recv(), Ok(1));
        assert_eq!(mailbox.recv(), Ok(2));
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_post_from_another_thread() {
        let (poster, mailbox) = mailbox(1);
        let sender = thread::spawn(move || {
            poster.try_send("reply").map_err(|_| "refused")?;
            Ok::<_, &str>(poster)
        });
        assert_eq!(mailbox.recv(), Ok("reply"));
        assert!(sender.join().is_ok());
    }

    #[test]
    fn what_was_posted_is_taken_before_the_gone_poster_is_an_error() {
        let (poster, mailbox) = mailbox(2);
        assert!(poster.try_send(7).is_ok());
        drop(poster);
        assert_eq!(mailbox.recv(), Ok(7));
        assert_eq!(mailbox.recv(), Err(RecvError));
    }

    #[test]
    fn a_gone_receiver_refuses_posts() {
        let (poster, mailbox) = mailbox::<u8>(2);
        drop(mailbox);
        assert!(matches!(
            poster.try_send(1),
            Err(TrySendError::Disconnected(1))
        ));
        assert!(poster.send(2).is_err());
    }
}
