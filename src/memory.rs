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

/// Set once at start: large blocks are mapped on their own and unmapped when freed.
pub fn set_up() {
    crate::sys::return_large_blocks();
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
