//! The accept loop and the worker pool: requests that need no broker are answered on the accept
//! thread; each stream request goes to a worker thread of a bounded pool, or is refused at once
//! when every worker is busy.

use crate::broker::Broker;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pattern::{Pattern, RequestParts};
use crate::registry::Registry;
use crate::response::{Answers, Refusal};
use crate::stream::{self, StreamContext, StreamSettings};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{error, info, warn};
use std::fmt;
use std::net::TcpListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tiny_http::{Method, Request};

/// Stack of a worker thread: a stream needs little, and thousands of them are the point.
const WORKER_STACK: usize = 128 * 1024;
/// A worker with nothing to do for this long ends; the pool grows again on demand.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// How long shutdown waits for streams to hand their messages back before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Why the server could not run.
#[derive(Debug)]
pub enum ServerError {
    /// The listening address could not be bound.
    Bind {
        address: String,
        error: std::io::Error,
    },
    /// tiny_http refused the listener.
    Http(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { address, error } => {
                write!(f, "cannot listen on {address}: {error}")
            }
            ServerError::Http(e) => write!(f, "cannot start the HTTP server: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// A stream request on its way to a worker.
struct Job {
    request: Request,
    queue: String,
}

/// Handle to stop a running server from another thread.
#[derive(Clone)]
pub struct Stopper {
    stopping: Arc<AtomicBool>,
    http: Arc<std::sync::Mutex<Option<Arc<tiny_http::Server>>>>,
}

impl Stopper {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(http) = self.http.lock().ok().and_then(|h| h.clone()) {
            http.unblock();
        }
    }
}

pub struct Server {
    config: Config,
    stopper: Stopper,
}

impl Server {
    pub fn new(config: Config) -> Server {
        Server {
            config,
            stopper: Stopper {
                stopping: Arc::new(AtomicBool::new(false)),
                http: Arc::new(std::sync::Mutex::new(None)),
            },
        }
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves until stopped, then ends every stream and closes the broker connections.
    pub fn run(self) -> Result<(), ServerError> {
        let started = Instant::now();
        let config = self.config;
        let listener =
            TcpListener::bind(&config.server.address).map_err(|error| ServerError::Bind {
                address: config.server.address.clone(),
                error,
            })?;
        let local = listener
            .local_addr()
            .map_or_else(|_| config.server.address.clone(), |a| a.to_string());
        let metrics = Arc::new(Metrics::default());
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<()>(0);
        let context = Arc::new(StreamContext {
            broker: Broker::start(
                &config.broker.node,
                config.broker.heartbeat,
                Arc::clone(&metrics),
            ),
            metrics: Arc::clone(&metrics),
            registry: Registry::default(),
            answers: Answers::new(&config.header),
            settings: StreamSettings {
                expires_ms: crate::queue::expires_ms(config.queue.expires),
                prefetch: config.queue.prefetch,
                keepalive: (config.server.keepalive > 0)
                    .then(|| Duration::from_secs(config.server.keepalive)),
            },
            shutdown: shutdown_rx,
        });
        let mut pool = Pool::new(config.server.workers, Arc::clone(&context));
        info!(
            "listening on {local} ({} workers at most, ready in {} ms)",
            config.server.workers,
            started.elapsed().as_millis()
        );

        let pattern = &config.queue.pattern;
        loop {
            let http = start_http(&listener)?;
            if let Ok(mut slot) = self.stopper.http.lock() {
                *slot = Some(Arc::clone(&http));
            }
            while !self.stopper.stopping.load(Ordering::Acquire) {
                match http.recv() {
                    Ok(request) => route(request, pattern, &context, &mut pool),
                    Err(e) if self.stopper.stopping.load(Ordering::Acquire) => {
                        let _ = e;
                        break;
                    }
                    Err(e) => {
                        // tiny_http's accept thread has ended (for example on EMFILE); serve on
                        // with a new one on the same socket after a breath.
                        error!("accepting connections failed: {e}; resuming in 100 ms");
                        thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
            if self.stopper.stopping.load(Ordering::Acquire) {
                break;
            }
        }

        info!(
            "shutting down: ending {} streams",
            metrics.consumers.load(Ordering::Relaxed)
        );
        if let Ok(mut slot) = self.stopper.http.lock() {
            slot.take();
        }
        drop(shutdown_tx);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while pool.busy() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        context.broker.shutdown();
        info!("stopped");
        Ok(())
    }
}

fn start_http(listener: &TcpListener) -> Result<Arc<tiny_http::Server>, ServerError> {
    let listener = listener
        .try_clone()
        .map_err(|e| ServerError::Http(e.to_string()))?;
    tiny_http::Server::from_listener(listener, None)
        .map(Arc::new)
        .map_err(|e| ServerError::Http(e.to_string()))
}

/// Decides what a request is and answers everything that needs no broker.
fn route(request: Request, pattern: &Pattern, context: &Arc<StreamContext>, pool: &mut Pool) {
    let answers = &context.answers;
    match request.method() {
        Method::Get => {}
        Method::Options => return answers.options(request),
        _ => return answers.method_not_allowed(request),
    }
    let url = request.url();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let query = query.split('#').next().unwrap_or("");
    if path == "/debug/vars" {
        return answers.json(request, context.metrics.debug_vars_json());
    }
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
        .collect();
    let queue = pattern.resolve(&RequestParts {
        query,
        headers: &headers,
    });
    drop(headers);
    match queue {
        Ok(queue) => pool.dispatch(Job { request, queue }),
        Err(refusal) => answers.refuse(
            request,
            &Refusal {
                reason: refusal.reason(),
                retry_after: None,
            },
        ),
    }
}

/// Worker threads, started on demand up to a bound.
struct Pool {
    jobs: Sender<Job>,
    idle_jobs: Receiver<Job>,
    limit: usize,
    live: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    context: Arc<StreamContext>,
}

impl Pool {
    fn new(limit: usize, context: Arc<StreamContext>) -> Pool {
        // A rendezvous channel: a send succeeds only when a worker is waiting for work.
        let (jobs, idle_jobs) = crossbeam_channel::bounded(0);
        Pool {
            jobs,
            idle_jobs,
            limit,
            live: Arc::new(AtomicUsize::new(0)),
            busy: Arc::new(AtomicUsize::new(0)),
            context,
        }
    }

    fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    fn dispatch(&mut self, job: Job) {
        let job = match self.jobs.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
        };
        if self.live.load(Ordering::Acquire) >= self.limit {
            self.context
                .metrics
                .refusals_busy
                .fetch_add(1, Ordering::Relaxed);
            let refusal = Refusal {
                reason: "server: too many streams",
                retry_after: Some(1),
            };
            return self.context.answers.refuse(job.request, &refusal);
        }
        self.spawn(job);
    }

    fn spawn(&mut self, first: Job) {
        let jobs = self.idle_jobs.clone();
        let live = Arc::clone(&self.live);
        let busy = Arc::clone(&self.busy);
        let context = Arc::clone(&self.context);
        live.fetch_add(1, Ordering::AcqRel);
        busy.fetch_add(1, Ordering::AcqRel);
        let spawned = thread::Builder::new()
            .name("stream".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let mut job = Some(first);
                loop {
                    if let Some(Job { request, queue }) = job.take() {
                        // A panic ends only this stream; the worker lives on.
                        let served = catch_unwind(AssertUnwindSafe(|| {
                            stream::serve(request, &queue, &context)
                        }));
                        if served.is_err() {
                            error!("stream {queue:?} ended by an internal error");
                        }
                        busy.fetch_sub(1, Ordering::AcqRel);
                    }
                    match jobs.recv_timeout(WORKER_IDLE) {
                        Ok(next) => {
                            busy.fetch_add(1, Ordering::AcqRel);
                            job = Some(next);
                        }
                        Err(_) => break,
                    }
                }
                live.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            self.live.fetch_sub(1, Ordering::AcqRel);
            self.busy.fetch_sub(1, Ordering::AcqRel);
            warn!("cannot start a worker thread: {e}");
        }
    }
}
