//! The accept loop and the worker pool: one blocking accept loop hands each connection to a
//! worker thread of a bounded pool (or refuses it at once when every worker is busy); the
//! worker reads the request and answers it, or serves it as a stream.

use crate::broker::Broker;
use crate::config::Config;
use crate::http::RequestHead;
use crate::metrics::Metrics;
use crate::pattern::{Pattern, RequestParts};
use crate::reception::{self, Request};
use crate::registry::Registry;
use crate::response::{Answers, Client, Refusal};
use crate::stream::{self, StreamContext, StreamSettings};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, error, info, warn};
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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
    /// The reception thread could not be started.
    Reception(std::io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { address, error } => {
                write!(f, "cannot listen on {address}: {error}")
            }
            ServerError::Reception(e) => write!(f, "cannot start reading requests: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Handle to stop a running server from another thread.
#[derive(Clone)]
pub struct Stopper {
    stopping: Arc<AtomicBool>,
    /// Where to connect to wake the accept loop.
    wake: Arc<Mutex<Option<SocketAddr>>>,
    metrics: Arc<Metrics>,
}

impl Stopper {
    /// Not ready any more, and new streams are refused; open streams go on.
    pub fn drain(&self) {
        self.metrics.draining.store(true, Ordering::Release);
    }

    /// Stops accepting, ends every stream, and makes `run` return.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let wake = self.wake.lock().ok().and_then(|w| *w);
        if let Some(addr) = wake {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

pub struct Server {
    config: Config,
    stopper: Stopper,
    metrics: Arc<Metrics>,
}

impl Server {
    pub fn new(config: Config) -> Server {
        let metrics = Arc::new(Metrics::default());
        Server {
            config,
            stopper: Stopper {
                stopping: Arc::new(AtomicBool::new(false)),
                wake: Arc::new(Mutex::new(None)),
                metrics: Arc::clone(&metrics),
            },
            metrics,
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
        let local = listener.local_addr().map_err(|error| ServerError::Bind {
            address: config.server.address.clone(),
            error,
        })?;
        widen_backlog(&listener);
        if let Ok(mut wake) = self.stopper.wake.lock() {
            *wake = Some(loopback_of(local));
        }
        let metrics = self.metrics;
        metrics
            .workers_limit
            .store(config.server.workers, Ordering::Relaxed);
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<()>(0);
        let context = Arc::new(Context {
            stream: StreamContext {
                broker: Broker::start(
                    &config.broker.node,
                    config.broker.heartbeat,
                    Arc::clone(&metrics),
                ),
                metrics: Arc::clone(&metrics),
                registry: Registry::default(),
                answers: Arc::new(Answers::new(&config.header, Arc::clone(&metrics))),
                settings: StreamSettings {
                    arguments: crate::queue::arguments(
                        &config.queue.arguments,
                        crate::queue::expires_ms(config.queue.expires),
                    ),
                    bind: config.queue.bind.clone(),
                    event_types: config.server.event_types,
                    retry: config.server.retry,
                    retry_jitter: config.server.retry_jitter,
                    prefetch: config.queue.prefetch,
                    replay_window: config.queue.replay_window,
                    event_ids: config.server.event_ids,
                    conflict: config.queue.conflict,
                    keepalive: (config.server.keepalive > 0)
                        .then(|| Duration::from_secs(config.server.keepalive)),
                },
                shutdown: shutdown_rx,
            },
            pattern: config.queue.pattern.clone(),
            auth_key: config.auth.key.clone(),
        });
        let mut pool = Pool::new(config.server.workers, Arc::clone(&context));
        let doorbell = reception::start(
            Duration::from_secs(config.server.request_timeout),
            Arc::clone(&context.stream.answers),
            move |request| pool.dispatch(request),
        )
        .map_err(ServerError::Reception)?;
        info!(
            "listening on {local} ({} workers at most, ready in {} ms)",
            config.server.workers,
            started.elapsed().as_millis()
        );

        let write_timeout = Duration::from_secs(config.server.write_timeout);
        while !self.stopper.stopping() {
            match listener.accept() {
                Ok(_) if self.stopper.stopping() => break,
                Ok((socket, peer)) => {
                    tune(&socket, write_timeout);
                    if !doorbell.admit(Client { socket, peer }) {
                        error!("reception has stopped; stopping");
                        break;
                    }
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset while queued: keep serving.
                    error!("accepting a connection failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }

        info!(
            "shutting down: ending {} streams",
            metrics.consumers.load(Ordering::Relaxed)
        );
        drop(listener);
        drop(doorbell);
        drop(shutdown_tx);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while metrics.workers_busy.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        context.stream.broker.shutdown();
        info!("stopped");
        Ok(())
    }
}

/// Socket options of an accepted connection. Frames go out as written (no Nagle); a client
/// that stops reading fails the write after `write_timeout`; a peer that vanished without a
/// word (a partition) fails the next write once TCP has retried for `write_timeout`, found
/// by the keep-alive frames at the latest.
fn tune(socket: &TcpStream, write_timeout: Duration) {
    use std::os::fd::AsRawFd;
    let _ = socket.set_nodelay(true);
    let _ = socket.set_write_timeout(Some(write_timeout));
    let millis = libc::c_uint::try_from(write_timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with pointers to live values of the sizes passed, on a socket we own;
    // a failure leaves the default, which only makes dead peers slower to notice.
    unsafe {
        let fd = socket.as_raw_fd();
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

/// std listens with a backlog of 128; a burst of browsers reconnecting after a restart is
/// larger, and connections beyond the backlog wait a whole SYN retry (a second or more).
/// Linux takes a second `listen` on a listening socket as a new backlog.
fn widen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a socket we own; failure leaves the old backlog, which still works.
    unsafe {
        libc::listen(listener.as_raw_fd(), 4096);
    }
}

/// The address that reaches a listener bound to `local` from this host.
fn loopback_of(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// What every worker shares.
struct Context {
    stream: StreamContext,
    pattern: Pattern,
    /// With `auth.secret`: the key stream requests must be signed with.
    auth_key: Option<Vec<u8>>,
}

/// Answers a request, or serves it as a stream.
fn handle(request: Request, context: &Context) {
    let Request { mut client, head } = request;
    let answers = &context.stream.answers;
    let metrics = &context.stream.metrics;
    debug!("{} {} from {}", head.method, head.target, client.peer);
    match head.method.as_str() {
        "GET" => {}
        "OPTIONS" => return answers.options(&mut client),
        _ => return answers.method_not_allowed(&mut client),
    }
    match head.path() {
        "/debug/vars" => return answers.json(&mut client, &metrics.debug_vars_json()),
        "/metrics" => {
            return answers.text(
                &mut client,
                200,
                "text/plain; version=0.0.4",
                &metrics.prometheus_text(),
            )
        }
        "/healthz" => return answers.text(&mut client, 200, "text/plain", "ok\n"),
        "/readyz" => {
            let ready = if metrics.draining.load(Ordering::Acquire) {
                Err("server: draining")
            } else {
                context.stream.broker.readiness()
            };
            return match ready {
                Ok(()) => answers.text(&mut client, 200, "text/plain", "ready\n"),
                Err(reason) => answers.text(&mut client, 503, "text/plain", &format!("{reason}\n")),
            };
        }
        _ => {}
    }
    let what = format!("GET {}", head.target);
    if metrics.draining.load(Ordering::Acquire) {
        let refusal = Refusal {
            reason: "server: draining",
            retry_after: Some(1),
        };
        return answers.refuse(&mut client, &what, 503, &refusal);
    }
    match queue_of(&head, &context.pattern) {
        Ok(queue) => {
            // Debug builds only: a queue named by this variable panics its worker, so the tests
            // can show that a panic ends one request and nothing else.
            #[cfg(debug_assertions)]
            if std::env::var("EVENTSOURCED_TEST_PANIC_QUEUE").is_ok_and(|q| q == queue) {
                panic!("test panic for queue {queue:?}");
            }
            if let Some(key) = &context.auth_key {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if let Err(denied) = crate::auth::check(key, &queue, &head, now) {
                    let refusal = Refusal {
                        reason: denied.reason(),
                        retry_after: None,
                    };
                    return answers.refuse(&mut client, &what, 403, &refusal);
                }
            }
            stream::serve(client, &head, &queue, &context.stream)
        }
        Err(reason) => answers.refuse(
            &mut client,
            &what,
            503,
            &Refusal {
                reason,
                retry_after: None,
            },
        ),
    }
}

fn queue_of(head: &RequestHead, pattern: &Pattern) -> Result<String, &'static str> {
    let headers = head.header_pairs();
    pattern
        .resolve(&RequestParts {
            query: head.query(),
            headers: &headers,
        })
        .map_err(|refusal| refusal.reason())
}

/// Worker threads, started on demand up to a bound.
struct Pool {
    jobs: Sender<Request>,
    idle_jobs: Receiver<Request>,
    limit: usize,
    context: Arc<Context>,
}

impl Pool {
    fn new(limit: usize, context: Arc<Context>) -> Pool {
        // A rendezvous channel: a send succeeds only when a worker is waiting for work.
        let (jobs, idle_jobs) = crossbeam_channel::bounded(0);
        Pool {
            jobs,
            idle_jobs,
            limit,
            context,
        }
    }

    fn dispatch(&mut self, request: Request) {
        let request = match self.jobs.try_send(request) {
            Ok(()) => return,
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => r,
        };
        if self
            .context
            .stream
            .metrics
            .workers_live
            .load(Ordering::Acquire)
            >= self.limit
        {
            return self.refuse_busy(request);
        }
        self.spawn(request);
    }

    /// Every worker is busy: answer 503 at once, counted, so the client retries later.
    fn refuse_busy(&self, request: Request) {
        let Request { mut client, head } = request;
        let metrics = &self.context.stream.metrics;
        metrics.refusals_busy.fetch_add(1, Ordering::Relaxed);
        let refusal = Refusal {
            reason: "server: too many streams",
            retry_after: Some(1),
        };
        let what = format!("{} {}", head.method, head.target);
        self.context
            .stream
            .answers
            .refuse(&mut client, &what, 503, &refusal);
    }

    fn spawn(&mut self, first: Request) {
        let jobs = self.idle_jobs.clone();
        let metrics = Arc::clone(&self.context.stream.metrics);
        let context = Arc::clone(&self.context);
        metrics.workers_live.fetch_add(1, Ordering::AcqRel);
        metrics.workers_busy.fetch_add(1, Ordering::AcqRel);
        let spawned = thread::Builder::new()
            .name("worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let mut next = Some(first);
                while let Some(request) = next.take() {
                    let peer = request.client.peer;
                    // A panic ends only this client's request; the worker lives on.
                    if catch_unwind(AssertUnwindSafe(|| handle(request, &context))).is_err() {
                        error!("the request from {peer} ended by an internal error");
                    }
                    metrics.workers_busy.fetch_sub(1, Ordering::AcqRel);
                    if let Ok(request) = jobs.recv_timeout(WORKER_IDLE) {
                        metrics.workers_busy.fetch_add(1, Ordering::AcqRel);
                        next = Some(request);
                    }
                }
                metrics.workers_live.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            self.context
                .stream
                .metrics
                .workers_live
                .fetch_sub(1, Ordering::AcqRel);
            self.context
                .stream
                .metrics
                .workers_busy
                .fetch_sub(1, Ordering::AcqRel);
            warn!("cannot start a worker thread: {e}");
        }
    }
}
