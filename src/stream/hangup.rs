//! Hang-ups: one thread watches every streaming socket (one epoll set, through mio) and tells a
//! stream, over a channel it selects on, when its client has closed or reset the connection.
//!
//! A stream's worker blocks on the broker's deliveries, not on its socket, so without this an
//! idle stream would notice a client that left only at its next write (a keep-alive, seconds
//! later), keeping the queue's consumer, and its held messages, from the client's reconnect.

use crate::sys;
use crossbeam_channel::{Receiver, Sender};
use log::{error, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

struct Watched {
    fd: RawFd,
    gone: Sender<()>,
}

pub struct HangupWatch {
    /// The watching thread's epoll set (the thread owns the `Poll` itself).
    registry: Registry,
    watched: Mutex<HashMap<Token, Watched>>,
    next: AtomicUsize,
}

/// A socket being watched; dropping it stops the watch (before the socket closes, so that a
/// reused descriptor is never taken for this one).
pub struct Watch {
    owner: Arc<HangupWatch>,
    token: Token,
    fd: RawFd,
    /// Receives once the client has gone.
    pub gone: Receiver<()>,
}

impl HangupWatch {
    /// Starts the watching thread.
    pub fn start() -> std::io::Result<Arc<HangupWatch>> {
        let mut poll = Poll::new()?;
        let watch = Arc::new(HangupWatch {
            registry: poll.registry().try_clone()?,
            watched: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        });
        let running = Arc::clone(&watch);
        std::thread::Builder::new()
            .name("hangups".into())
            .stack_size(128 * 1024)
            .spawn(move || running.run(&mut poll))?;
        Ok(watch)
    }

    /// Watches `socket` until the returned `Watch` is dropped.
    pub fn watch(self: &Arc<Self>, socket: &TcpStream) -> std::io::Result<Watch> {
        let token = Token(self.next.fetch_add(1, Ordering::Relaxed));
        let fd = socket.as_raw_fd();
        let (gone, on_gone) = crossbeam_channel::bounded(1);
        // In the map before epoll can report it, so that no event finds it missing.
        self.lock().insert(token, Watched { fd, gone });
        // Readable covers a hang-up and an error too: epoll always reports both.
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            self.lock().remove(&token);
            return Err(e);
        }
        Ok(Watch {
            owner: Arc::clone(self),
            token,
            fd,
            gone: on_gone,
        })
    }

    fn run(&self, poll: &mut Poll) {
        let mut events = Events::with_capacity(256);
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    error!("hang-up watch: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in &events {
                // Under the lock: a watch being dropped waits, so its descriptor is still open.
                let watched = self.lock();
                if let Some(w) = watched.get(&event.token()) {
                    // A stream client sends nothing after its request; anything it does send
                    // is read and dropped here, so only a close or a reset counts.
                    if sys::discard_input_and_check_closed(w.fd) {
                        let _ = w.gone.try_send(());
                    }
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Token, Watched>> {
        self.watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = self.owner.lock();
        watched.remove(&self.token);
        if let Err(e) = self.owner.registry.deregister(&mut SourceFd(&self.fd)) {
            warn!("hang-up watch: cannot stop watching a socket: {e}");
        }
    }
}
