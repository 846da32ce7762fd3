//! Worker threads, started on demand up to a bound: each serves one request at a time (a whole
//! stream), then waits for the next; an idle worker ends after a while.

use crate::http::reception::Request;
use crate::metrics::{Metrics, OwnedCount};
use crate::refusal::Refusal;
use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use log::{error, warn};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Stack of a worker thread: a stream needs little, and thousands of them are the point.
pub const WORKER_STACK: usize = 128 * 1024;
/// A worker with nothing to do for this long ends; the pool grows again on demand.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// How long a request waits, with every worker started, for one that is not busy to be back
/// waiting for work (it has just ended a stream).
/// Short: the wait holds up the reception thread, and a worker is back within microseconds.
const RETURNING_WORKER_WAIT: Duration = Duration::from_millis(20);
/// What a worker does with a request, and how the pool refuses one when every worker is busy.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request);
    fn refuse(&self, request: Request, refusal: Refusal);
}

pub struct Pool<H: Handler> {
    jobs: Sender<Request>,
    idle_jobs: Receiver<Request>,
    limit: usize,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
}

impl<H: Handler> Pool<H> {
    pub fn new(limit: usize, handler: Arc<H>, metrics: Arc<Metrics>) -> Pool<H> {
        // A rendezvous channel: a send succeeds only when a worker is waiting for work.
        let (jobs, idle_jobs) = crossbeam_channel::bounded(0);
        Pool {
            jobs,
            idle_jobs,
            limit,
            handler,
            metrics,
        }
    }

    /// Hands `request` to an idle worker, or a new one, or refuses it when the pool is full.
    pub fn dispatch(&mut self, request: Request) {
        let request = match self.jobs.try_send(request) {
            Ok(()) => return,
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => r,
        };
        if self.metrics.workers_live.get() >= self.limit as u64 {
            // A worker whose stream just ended is on its way back to wait for work: this
            // request is its, not a refusal.
            let request = if self.metrics.workers_busy.get() < self.metrics.workers_live.get() {
                match self.jobs.send_timeout(request, RETURNING_WORKER_WAIT) {
                    Ok(()) => return,
                    Err(SendTimeoutError::Timeout(r) | SendTimeoutError::Disconnected(r)) => r,
                }
            } else {
                request
            };
            self.metrics
                .refusals_busy
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.handler.refuse(request, Refusal::TooManyStreams);
        }
        self.spawn(request);
    }

    fn spawn(&mut self, first: Request) {
        let jobs = self.idle_jobs.clone();
        let metrics = Arc::clone(&self.metrics);
        let handler = Arc::clone(&self.handler);
        // Counted before the thread runs, so that a burst cannot start more than `limit`; a
        // thread that fails to start drops the count with its closure.
        let live = OwnedCount::new(&self.metrics, |m| &m.workers_live);
        let spawned = thread::Builder::new()
            .name("worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let _live = live;
                let mut next = Some(first);
                while let Some(request) = next.take() {
                    let _busy = metrics.workers_busy.count();
                    let peer = request.client.peer;
                    // A panic ends only this client's request; the worker lives on.
                    if catch_unwind(AssertUnwindSafe(|| handler.handle(request))).is_err() {
                        error!("the request from {peer} ended by an internal error");
                    }
                    drop(_busy);
                    // An idle worker keeps only the stack it waits on.
                    metrics.note_stack_and_give_back();
                    // Quiet for a moment: what the ended streams freed is given back (by one
                    // worker of those that ended together, after the last of them).
                    next = match jobs.recv_timeout(crate::memory::QUIET) {
                        Ok(request) => Some(request),
                        Err(RecvTimeoutError::Timeout) => {
                            crate::memory::give_back_now_and_then();
                            jobs.recv_timeout(WORKER_IDLE.saturating_sub(crate::memory::QUIET))
                                .ok()
                        }
                        Err(RecvTimeoutError::Disconnected) => None,
                    };
                }
                drop(_live);
                // What the workers that ended before this one freed with their threads.
                crate::memory::give_back_now_and_then();
            });
        if let Err(e) = spawned {
            warn!("cannot start a worker thread: {e}");
        }
    }
}
