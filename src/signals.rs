//! SIGINT and SIGTERM, received by one thread with `sigwait` instead of an async handler, so
//! that what they trigger can take locks and log like any other code.

use log::{info, warn};
use std::thread;
use std::time::Duration;

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Blocks SIGINT and SIGTERM in the calling thread. Call before starting any thread, so that
/// every thread inherits the mask and only the waiting thread receives them.
pub fn block() {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; these calls only
    // change this thread's signal mask.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
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
            let signal = wait(None).unwrap_or(libc::SIGTERM);
            if drain_for.is_zero() {
                info!("received {}, stopping", name(signal));
            } else {
                info!(
                    "received {}, draining for {} s: not ready, new streams refused",
                    name(signal),
                    drain_for.as_secs()
                );
                drain();
                if let Some(again) = wait(Some(drain_for)) {
                    warn!("received {} again, exiting now", name(again));
                    std::process::exit(1);
                }
                info!("drain over, stopping");
            }
            stop();
            let again = wait(None).unwrap_or(libc::SIGTERM);
            warn!("received {} again, exiting now", name(again));
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        warn!("cannot watch for signals: {e}");
    }
}

/// The next SIGINT or SIGTERM; `None` when `within` passes first.
fn wait(within: Option<Duration>) -> Option<libc::c_int> {
    // SAFETY: sigset_t is initialised by sigemptyset before use; sigtimedwait writes only into
    // the info struct we own, and reads the timespec we pass.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        let deadline = within.map(|d| std::time::Instant::now() + d);
        loop {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            let signal = match deadline {
                None => libc::sigwaitinfo(&set, &mut info),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    let timeout = libc::timespec {
                        tv_sec: left.as_secs() as libc::time_t,
                        tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
                    };
                    libc::sigtimedwait(&set, &mut info, &timeout)
                }
            };
            if signal > 0 {
                return Some(signal);
            }
            // EINTR: wait again; EAGAIN: the timeout passed (checked at the top).
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
