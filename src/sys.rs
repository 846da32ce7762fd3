//! Every call into libc, each behind a safe function: socket options std does not offer, the
//! kernel's view of a connection, and signals received by a thread instead of a handler.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The signals the signal thread waits for: two that stop the server, one that reloads.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Socket options of an accepted connection: a peer that vanished without a word (a partition)
/// fails the next write once TCP has retried for `user_timeout`, and idle connections are
/// probed by TCP keep-alives. A failure leaves the default, which only makes dead peers slower
/// to notice.
pub fn set_user_timeout_and_keepalive(socket: &TcpStream, user_timeout: Duration) {
    let millis = libc::c_uint::try_from(user_timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    let on: libc::c_int = 1;
    let fd = socket.as_raw_fd();
    // SAFETY: setsockopt with pointers to live values of the sizes passed, on a socket we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&millis as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Sets the listen backlog of a listening socket (Linux takes a second `listen` as a new
/// backlog). Failure leaves the old backlog, which still works.
pub fn set_backlog(listener: &TcpListener, backlog: libc::c_int) {
    // SAFETY: listen on a socket we own.
    unsafe {
        libc::listen(listener.as_raw_fd(), backlog);
    }
}

/// Reads and discards whatever the peer sent, without blocking: true when the peer has closed
/// or reset the connection (end of stream or an error), false when it is still open.
pub fn discard_input_and_check_closed(fd: std::os::fd::RawFd) -> bool {
    let mut scratch = [0u8; 512];
    loop {
        // SAFETY: recv into a buffer we own, of the size passed; MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                fd,
                scratch.as_mut_ptr().cast(),
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return true,
            n if n > 0 => continue,
            _ => return !would_block(&std::io::Error::last_os_error()),
        }
    }
}

fn would_block(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// Bytes written to `socket` that the peer's TCP has not acknowledged yet (sent or not); 0 when
/// the kernel cannot say.
pub fn unacknowledged_bytes(socket: &TcpStream) -> u64 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int into `queued`, a live local; the socket is ours.
    let status = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if status == 0 {
        u64::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

/// Waits until `fd` can take more bytes, at most `within`; false when the time passed first.
pub fn wait_writable(fd: std::os::fd::RawFd, within: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = libc::c_int::try_from(within.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll reads and writes the one pollfd we own, for the count we pass.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    ready > 0
}

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before anything reads it.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in STOP_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and the threads it starts later).
pub fn block_stop_signals() {
    let set = stop_signal_set();
    // SAFETY: changes only this thread's signal mask, from a set we own.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The next SIGINT, SIGTERM or SIGHUP; `None` when `within` passes first.
pub fn wait_stop_signal(within: Option<Duration>) -> Option<libc::c_int> {
    let set = stop_signal_set();
    let deadline = within.map(|d| Instant::now() + d);
    loop {
        // SAFETY: siginfo_t is plain data that sigwaitinfo/sigtimedwait fill; both read the set
        // and timespec we own.
        let signal = unsafe {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            match deadline {
                None => libc::sigwaitinfo(&set, &mut info),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    // `as _`: tv_sec is 64-bit, or 32-bit on the 32-bit musl builds (whose
                    // `libc::time_t` is deprecated, as musl 1.2 made it 64-bit); a timeout
                    // fits either way once clamped.
                    let timeout = libc::timespec {
                        tv_sec: left.as_secs().min(i32::MAX as u64) as _,
                        tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
                    };
                    libc::sigtimedwait(&set, &mut info, &timeout)
                }
            }
        };
        if signal > 0 {
            return Some(signal);
        }
        // EINTR: wait again; EAGAIN: the timeout passed (checked at the top).
    }
}

/// Raises the soft limit on open files to the hard one, as Go's runtime does at start: each
/// stream is a socket, and the default soft limit (1024) is below the default pool. Returns the
/// limit in force afterwards, and what it was before.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    // SAFETY: getrlimit and setrlimit read and write the rlimit we own.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = limit.rlim_cur as u64;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok((limit.rlim_cur as u64, before))
    }
}

/// The calling thread's stack: its lowest address and its size, without the guard below it.
/// Found once per thread (glibc's answer for the main thread reads `/proc/self/maps`).
fn own_stack() -> Option<(usize, usize)> {
    thread_local! {
        static STACK: std::cell::Cell<Option<Option<(usize, usize)>>> =
            const { std::cell::Cell::new(None) };
    }
    STACK.with(|known| {
        if let Some(stack) = known.get() {
            return stack;
        }
        let stack = find_own_stack();
        known.set(Some(stack));
        stack
    })
}

fn find_own_stack() -> Option<(usize, usize)> {
    // SAFETY: pthread_getattr_np fills the attr we own, destroyed before it goes out of scope.
    unsafe {
        let mut attr = std::mem::zeroed::<libc::pthread_attr_t>();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut base = std::ptr::null_mut::<libc::c_void>();
        let mut size = 0usize;
        let found = libc::pthread_attr_getstack(&attr, &mut base, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (found == 0 && !base.is_null()).then_some((base as usize, size))
    }
}

fn page_size() -> Option<usize> {
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|&p| p.is_power_of_two())
}

/// Bytes of the calling thread's stack mapping that are in memory: the pages it has touched
/// (with the C library's thread data at the top), which stay resident while the thread lives
/// unless given back (`give_back_unused_stack`). `None` where the stack cannot be found.
pub fn own_stack_resident() -> Option<usize> {
    let (base, size) = own_stack()?;
    let page = page_size()?;
    // The range must start on a page.
    let start = base & !(page - 1);
    let length = base + size - start;
    let mut pages = vec![0u8; length.div_ceil(page)];
    // SAFETY: mincore writes one byte per page of the range into `pages`, sized for it; the
    // range is this thread's own stack mapping.
    let status = unsafe { libc::mincore(start as *mut libc::c_void, length, pages.as_mut_ptr()) };
    (status == 0).then(|| pages.iter().filter(|&&p| p & 1 == 1).count() * page)
}

/// Gives the calling thread's stack pages below those in use now back to the system: a stream
/// went deep once (its set-up, a burst) and then waits, shallow, for hours; the pages it touched
/// would stay resident in every one of thousands of threads. One page below the caller's frame
/// is kept for the call itself. The next call that goes as deep finds zeroed pages again.
#[inline(never)]
pub fn give_back_unused_stack() {
    let (Some((base, _)), Some(page)) = (own_stack(), page_size()) else {
        return;
    };
    let here = std::hint::black_box(0u8);
    let here = std::ptr::addr_of!(here) as usize;
    // Stacks grow down: everything below `keep` is unused while this runs, and the page
    // between `keep` and this frame covers the call into the kernel.
    let keep = (here & !(page - 1)).saturating_sub(page);
    let start = (base + page - 1) & !(page - 1);
    if keep <= start {
        return;
    }
    // SAFETY: the range lies inside this thread's own stack, below the frames in use now (and
    // the page the call itself may use); MADV_DONTNEED leaves it mapped, reading as zeroes.
    unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            keep - start,
            libc::MADV_DONTNEED,
        );
    }
}

/// Has glibc's malloc give large blocks (a burst's write buffer, say) back to the system when
/// they are freed. By default it raises its threshold for mapping a block of its own to the
/// largest block freed so far, so after one burst every later one comes from the heap, which
/// is rarely given back; a fixed threshold keeps them separate. musl's allocator gives large
/// blocks back on its own.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Has glibc's malloc give the free pages inside its heaps back to the system: a stream's
/// deliveries are allocated on a broker connection's thread and freed on the stream's, and what
/// a burst left free stays in the heap otherwise. musl needs no asking.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, …)`, Linux 6.16 and later.
const PR_FUTEX_HASH: libc::c_int = 78;
const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;

/// Sizes this process's table of futex waiters to `slots` (a power of two). Since Linux 6.16 a
/// process hashes its waiting threads into a table of its own, sized for the CPUs (16 slots
/// here): with thousands of threads waiting, each wake walks a chain of hundreds, and every
/// stream's set-up and delivery pays for all the others. An older kernel answers `EINVAL` and
/// keeps its system-wide table.
pub fn size_futex_table(slots: usize) -> std::io::Result<()> {
    // SAFETY: this prctl takes integers and touches no memory of ours.
    let done = unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_SET_SLOTS,
            slots as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The soft limit on this user's processes and threads (`RLIMIT_NPROC`); `None` when unlimited
/// or unknown.
pub fn threads_limit() -> Option<u64> {
    // SAFETY: getrlimit writes the rlimit we own.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) != 0
            || limit.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        Some(limit.rlim_cur as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches about `depth` bytes of stack below the caller, then answers what is resident.
    #[inline(never)]
    fn go_deep(depth: usize) -> Option<usize> {
        let mut block = [0u8; 4096];
        std::hint::black_box(&mut block);
        if depth > block.len() {
            go_deep(depth - block.len())
        } else {
            own_stack_resident()
        }
    }

    #[test]
    fn a_thread_gives_back_the_stack_it_no_longer_uses() {
        let answer = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let deep = go_deep(96 * 1024)?;
                let kept = std::hint::black_box([7u8; 64]);
                give_back_unused_stack();
                let after = own_stack_resident()?;
                // What the caller's frame holds is untouched.
                assert_eq!(kept, [7u8; 64]);
                Some((deep, after))
            })
            .expect("a thread starts")
            .join()
            .expect("the thread ends");
        let Some((deep, after)) = answer else {
            eprintln!("SKIPPED: this system does not say where a thread's stack is");
            return;
        };
        assert!(deep >= 96 * 1024, "{deep} bytes resident after going deep");
        assert!(
            after + 64 * 1024 <= deep,
            "{after} bytes resident after giving back, {deep} before"
        );
    }
}
