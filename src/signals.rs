//! SIGINT and SIGTERM (stop) and SIGHUP (reload), received by one thread with `sigwait` instead
//! of an async handler, so that what they trigger can take locks and log like any other code.

use log::{info, warn};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys;

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread. Call before starting any thread, so
/// that every thread inherits the mask and only the waiting thread receives them.
pub fn block() {
    sys::block_stop_signals();
}

/// What the signals do.
pub struct Handlers {
    /// After the first SIGINT or SIGTERM: stop taking new streams, before `stop` after
    /// `drain_for` (at once when zero).
    pub drain_for: Duration,
    pub drain: Box<dyn FnOnce() + Send>,
    pub stop: Box<dyn FnOnce() + Send>,
    /// On each SIGHUP.
    pub reload: Box<dyn Fn() + Send>,
}

/// Runs `handlers` on a thread of their own. A second stop signal ends the process at once,
/// during the drain or after.
pub fn handle(handlers: Handlers) {
    let Handlers {
        drain_for,
        drain,
        stop,
        reload,
    } = handlers;
    let spawned = thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let next_stop = |within: Option<Duration>| next_stop(within, &*reload);
            let signal = next_stop(None).unwrap_or(libc::SIGTERM);
            if drain_for.is_zero() {
                info!("received {}, stopping", name(signal));
            } else {
                // In force before it is announced: whoever reads the line sees the drain.
                drain();
                info!(
                    "received {}, draining for {} s: not ready, new streams refused",
                    name(signal),
                    drain_for.as_secs()
                );
                if let Some(again) = next_stop(Some(drain_for)) {
                    warn!("received {} again, exiting now", name(again));
                    std::process::exit(1);
                }
                info!("drain over, stopping");
            }
            stop();
            let again = next_stop(None).unwrap_or(libc::SIGTERM);
            warn!("received {} again, exiting now", name(again));
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        warn!("cannot watch for signals: {e}");
    }
}

/// The next SIGINT or SIGTERM within `within`, reloading on every SIGHUP meanwhile.
fn next_stop(within: Option<Duration>, reload: &dyn Fn()) -> Option<libc::c_int> {
    let deadline = within.map(|d| Instant::now() + d);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match sys::wait_stop_signal(left)? {
            libc::SIGHUP => {
                info!("received SIGHUP, reloading");
                reload();
            }
            signal => return Some(signal),
        }
    }
}

fn name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
