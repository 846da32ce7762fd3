//! SIGINT and SIGTERM, received by one thread with `sigwait` instead of an async handler, so
//! that what they trigger can take locks and log like any other code.

use log::{info, warn};
use std::thread;
use std::time::Duration;

use crate::sys;

/// Blocks SIGINT and SIGTERM in the calling thread. Call before starting any thread, so that
/// every thread inherits the mask and only the waiting thread receives them.
pub fn block() {
    sys::block_stop_signals();
}

/// On the first SIGINT or SIGTERM: `drain`, then after `drain_for` (at once when zero) `stop`.
/// A second signal ends the process at once, during the drain or after.
pub fn on_stop(
    drain_for: Duration,
    drain: impl FnOnce() + Send + 'static,
    stop: impl FnOnce() + Send + 'static,
) {
    let spawned = thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let signal = sys::wait_stop_signal(None).unwrap_or(libc::SIGTERM);
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
                if let Some(again) = sys::wait_stop_signal(Some(drain_for)) {
                    warn!("received {} again, exiting now", name(again));
                    std::process::exit(1);
                }
                info!("drain over, stopping");
            }
            stop();
            let again = sys::wait_stop_signal(None).unwrap_or(libc::SIGTERM);
            warn!("received {} again, exiting now", name(again));
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        warn!("cannot watch for signals: {e}");
    }
}

fn name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
