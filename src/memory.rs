//! Freed memory given back to the system: when, and how often. glibc keeps what a burst or an
//! ended stream freed in its heaps; musl gives it back on its own (the calls do nothing there).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often, at most, freed memory is given back: it walks every heap.
const EVERY: Duration = Duration::from_secs(1);

/// When freed memory was last given back.
static GIVEN_BACK: Mutex<Option<Instant>> = Mutex::new(None);

/// How long after a burst, or after a stream's end, with nothing new, freed memory is given
/// back: what the burst freed is then all free.
pub const QUIET: Duration = Duration::from_secs(2);

/// A write batch at least this large is a burst worth giving back after.
pub const BURST: usize = 256 * 1024;

/// The glibc tunable that sets how many freed blocks each thread keeps for itself.
pub const THREAD_CACHE_TUNABLE: &str = "glibc.malloc.tcache_count";

/// A glibc build serving streams runs itself again, once, at start, with glibc's per-thread
/// caches of freed blocks off (`GLIBC_TUNABLES`, which glibc reads only as a program starts):
/// each of thousands of stream threads kept 4 to 10 KiB of freed blocks in its cache. An
/// environment that says how many to keep is left alone. musl has no such cache.
pub fn without_thread_caches() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.contains(THREAD_CACHE_TUNABLE) {
        return;
    }
    let off = format!("{THREAD_CACHE_TUNABLE}=0");
    let tunables = if tunables.is_empty() {
        off
    } else {
        format!("{tunables}:{off}")
    };
    // Only returns when it could not: the server runs on with the caches.
    let _ = crate::sys::run_again_with("GLIBC_TUNABLES", &tunables);
}

/// Set once at start: large blocks are mapped on their own and unmapped when freed. A glibc
/// build says how its per-thread caches are set.
pub fn set_up() {
    crate::sys::return_large_blocks();
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        match std::env::var("GLIBC_TUNABLES") {
            Ok(tunables) if tunables.contains(THREAD_CACHE_TUNABLE) => {
                log::info!("glibc malloc: GLIBC_TUNABLES={tunables}")
            }
            _ => log::warn!(
                "glibc malloc: each thread caches freed blocks (could not run again with \
                 GLIBC_TUNABLES={THREAD_CACHE_TUNABLE}=0); streams take more memory"
            ),
        }
    }
}

/// Gives freed memory back to the system, unless that was done less than `EVERY` ago (or is
/// being done now, by another thread).
pub fn give_back_now_and_then() {
    let Ok(mut last) = GIVEN_BACK.try_lock() else {
        return;
    };
    if last.is_some_and(|at| at.elapsed() < EVERY) {
        return;
    }
    crate::sys::give_back_free_memory();
    *last = Some(Instant::now());
}
