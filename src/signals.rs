//! SIGINT and SIGTERM, received by one thread with `sigwait` instead of an async handler, so
//! that what they trigger can take locks and log like any other code.

use log::{info, warn};
use std::thread;

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

/// Calls `on_stop` on the first SIGINT or SIGTERM; a second one ends the process at once.
pub fn on_stop(on_stop: impl FnOnce() + Send + 'static) {
    let spawned = thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let signal = wait();
            info!("received {}, stopping", name(signal));
            on_stop();
            let signal = wait();
            warn!("received {} again, exiting now", name(signal));
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        warn!("cannot watch for signals: {e}");
    }
}

fn wait() -> libc::c_int {
    // SAFETY: as in `block`; sigwait writes the received signal into `signal`.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        let mut signal: libc::c_int = 0;
        while libc::sigwait(&set, &mut signal) != 0 {}
        signal
    }
}

fn name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
