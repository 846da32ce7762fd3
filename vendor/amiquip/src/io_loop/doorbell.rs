//! Messages to the I/O thread: a bounded crossbeam channel per sender, and one doorbell that
//! wakes the thread's `mio::Poll` and says which channel has something.
//!
//! Each send queues the message, then the sender's key on the doorbell's list, then rings (a
//! `mio::Waker`, one eventfd write) unless a ring is already pending. The thread clears the
//! pending flag before it reads the list, so a key listed after that rings again. A sender
//! rings once more when it is dropped: the thread then finds its channel disconnected.

use crossbeam_channel::{Receiver, SendError, Sender};
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub(super) struct Doorbell {
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
    keys: Sender<usize>,
}

impl Doorbell {
    /// The doorbell, and the list of keys it brings to the I/O thread.
    pub(super) fn new(waker: Waker) -> (Doorbell, Receiver<usize>) {
        let (keys, rung) = crossbeam_channel::unbounded();
        let bell = Doorbell {
            waker: Arc::new(waker),
            pending: Arc::new(AtomicBool::new(false)),
            keys,
        };
        (bell, rung)
    }

    /// A bounded channel whose sends ring this doorbell with `key`.
    pub(super) fn channel<T>(&self, bound: usize, key: usize) -> (RingingSender<T>, Receiver<T>) {
        let (tx, rx) = crossbeam_channel::bounded(bound);
        let sender = RingingSender {
            tx: Some(tx),
            key,
            bell: self.clone(),
        };
        (sender, rx)
    }

    /// Called by the I/O thread when it wakes, before it drains the list of keys. A swap, not a
    /// store: reading the `true` a sender wrote, it sees the key that sender listed before.
    pub(super) fn answer(&self) {
        self.pending.swap(false, Ordering::SeqCst);
    }

    fn ring(&self, key: usize) {
        // The I/O thread holds the receiving end of `keys` for as long as any channel's
        // receiver lives; when it has gone the message is refused before we get here.
        let _ = self.keys.send(key);
        if !self.pending.swap(true, Ordering::SeqCst) {
            // A failed wake leaves the thread to its next event; nothing better can be done.
            let _ = self.waker.wake();
        }
    }
}

/// The sending half: blocks while the channel is full, like `std::sync::mpsc::SyncSender`.
/// Dropped, it rings once more, so that the I/O thread finds the channel disconnected.
pub(super) struct RingingSender<T> {
    tx: Option<Sender<T>>,
    key: usize,
    bell: Doorbell,
}

impl<T> RingingSender<T> {
    pub(super) fn send(&self, item: T) -> Result<(), SendError<T>> {
        match &self.tx {
            Some(tx) => tx.send(item)?,
            None => return Err(SendError(item)),
        }
        self.bell.ring(self.key);
        Ok(())
    }
}

impl<T> Drop for RingingSender<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.bell.ring(self.key);
    }
}
