//! The operating system's limits that bound how many streams one process can serve: open files
//! (a socket each), threads (a worker each: `RLIMIT_NPROC`, `kernel.threads-max`,
//! `kernel.pid_max`) and memory mappings (each thread's stack and guard page:
//! `vm.max_map_count`). Checked once at start, so that a pool larger than the system allows is
//! said plainly instead of failing at the ten-thousandth stream. And the process's own settings
//! that thousands of threads make matter (`fit_process`).

use crate::sys;
use log::{debug, info, warn};

/// Files beyond one per stream: the listeners, broker connections, epoll sets, the log.
const SPARE_FILES: u64 = 64;
/// Threads beyond one per stream: reception, hang-ups, signals, supervisors, amiquip's I/O.
const SPARE_THREADS: u64 = 64;

/// What the pool of `workers` needs against what the system allows; `pending` request heads
/// may be awaited on top of the streams.
pub fn check(workers: usize, pending: usize) {
    let workers = workers as u64;
    match sys::raise_open_files_limit() {
        Ok((now, before)) => {
            if now > before {
                info!("open files limit raised from {before} to {now}");
            }
            let needed = workers + SPARE_FILES;
            if now < needed {
                warn!(
                    "server.workers is {workers}, but this process may open only {now} files \
                     (each stream is one): streams beyond about {} fail; raise the hard limit \
                     (LimitNOFILE= in the systemd unit, ulimit -Hn, or nofile in \
                     /etc/security/limits.conf) to at least {}",
                    now.saturating_sub(SPARE_FILES),
                    needed + pending as u64
                );
            }
        }
        Err(e) => warn!("cannot read the open files limit: {e}"),
    }
    let threads = workers + SPARE_THREADS;
    for (what, limit) in [
        (
            "the threads limit (ulimit -u, LimitNPROC=)",
            sys::threads_limit(),
        ),
        (
            "kernel.threads-max",
            proc_number("/proc/sys/kernel/threads-max"),
        ),
        ("kernel.pid_max", proc_number("/proc/sys/kernel/pid_max")),
    ] {
        if let Some(limit) = limit.filter(|&limit| limit < threads) {
            warn!(
                "server.workers is {workers}, but {what} is {limit}: each stream is a thread, so \
                 streams beyond about {} fail; raise it to at least {threads}",
                limit.saturating_sub(SPARE_THREADS)
            );
        }
    }
    // A thread's stack and its guard page are two mappings.
    if let Some(maps) = proc_number("/proc/sys/vm/max_map_count") {
        let needed = 2 * threads + 1024;
        if maps < needed {
            warn!(
                "server.workers is {workers}, but vm.max_map_count is {maps}: each stream's \
                 thread takes two memory mappings, so streams beyond about {} fail; raise it to \
                 at least {needed} (sysctl -w vm.max_map_count={needed})",
                maps.saturating_sub(1024) / 2
            );
        }
    }
}

/// A number from a `/proc/sys` file; `None` where there is none (not Linux, no `/proc`).
fn proc_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Fits the process to a pool of `workers`: a futex slot for each thread that may wait, so
/// that a wake finds its thread at once, and glibc's large blocks given back when freed.
pub fn fit_process(workers: usize) {
    crate::memory::set_up();
    let slots = (workers + SPARE_THREADS as usize).next_power_of_two();
    match sys::size_futex_table(slots) {
        Ok(()) => debug!("futex table: {slots} slots"),
        Err(e) => debug!("futex table left as the kernel sized it ({e})"),
    }
}
