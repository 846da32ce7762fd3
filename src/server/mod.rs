//! The server: one blocking accept loop hands each connection to the reception thread, which
//! reads its request head and passes the request to a worker of the bounded pool (`pool`); the
//! worker answers it or serves it as a stream (`routes`).

mod limits;
mod pool;
mod routes;
mod settings;

pub use pool::WORKER_STACK;
pub use settings::dial;

use crate::amqp::control::{self, FollowRequest};
use crate::amqp::Broker;
use crate::config::Config;
use crate::http::{reception, Client, Responder};
use crate::metrics::Metrics;
use crate::stream::hangup::HangupWatch;
use crate::stream::registry::{Conflict, Registry};
use crate::stream::relay;
use crate::stream::{StreamContext, StreamSettings};
use crate::sys;
use crate::tls::{ListenerTls, TlsError};
use log::{error, info, warn};
use pool::Pool;
use routes::Routes;
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
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
    /// A thread the server needs (the hang-up watch) could not be started.
    Threads(std::io::Error),
    /// A certificate or key in `server.tls` or `broker.tls` could not be used.
    Tls(&'static str, TlsError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { address, error } => {
                write!(f, "cannot listen on {address}: {error}")
            }
            ServerError::Reception(e) => write!(f, "cannot start reading requests: {e}"),
            ServerError::Threads(e) => write!(f, "cannot start watching streams: {e}"),
            ServerError::Tls(section, e) => write!(f, "{section}: {e}"),
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
    /// The HTTPS listener's certificate, when `server.tls` is set.
    https: Option<Arc<ListenerTls>>,
}

/// Handle to re-read what may change under a running server (the HTTPS certificate).
pub struct Reloader {
    https: Option<Arc<ListenerTls>>,
}

impl Reloader {
    /// Re-reads `server.tls`; new connections get the new certificate, open streams keep theirs.
    /// On an error the certificate in use stays, and the error is logged.
    pub fn reload(&self) {
        let Some(https) = &self.https else {
            info!("nothing to reload: server.tls is not set");
            return;
        };
        match https.reload() {
            Ok(()) => info!(
                "server.tls: reloaded {}; open streams keep the certificate they started with",
                https.cert_path().display()
            ),
            Err(e) => error!("server.tls: {e}; still serving the certificate loaded before"),
        }
    }
}

impl Server {
    /// Reads what the server needs besides the config (the HTTPS certificate), so that a
    /// mistake there is reported before anything starts.
    pub fn new(config: Config) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::default());
        let https = settings::listener_tls(&config)
            .map_err(|e| ServerError::Tls("server.tls", e))?
            .map(Arc::new);
        Ok(Server {
            config,
            https,
            stopper: Stopper {
                stopping: Arc::new(AtomicBool::new(false)),
                wake: Arc::new(Mutex::new(None)),
                metrics: Arc::clone(&metrics),
            },
            metrics,
        })
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn reloader(&self) -> Reloader {
        Reloader {
            https: self.https.clone(),
        }
    }

    /// Serves until stopped, then ends every stream and closes the broker connections.
    pub fn run(self) -> Result<(), ServerError> {
        let started = Instant::now();
        let config = self.config;
        let dial = settings::dial(&config.broker).map_err(|e| ServerError::Tls("broker.tls", e))?;
        let https = self.https;
        let listener = bind(&config.server.address)?;
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
        let responder = Arc::new(Responder::new(
            &config.header.cors,
            &config.header.sse,
            config.server.retry_refusals,
            config.server.redact.clone(),
            Arc::clone(&metrics),
        ));
        let registry = Arc::new(Registry::default());
        let releasing = Arc::clone(&registry);
        // Requests to relay a stream to another instance, served on threads of their own.
        let (follows_tx, follows_rx) = crossbeam_channel::bounded::<FollowRequest>(256);
        let routes = Arc::new(Routes {
            stream: StreamContext {
                broker: Broker::start(
                    &config.broker.node,
                    dial,
                    Arc::clone(&metrics),
                    Box::new(move |request| match request {
                        control::Request::Release(queue) => {
                            releasing.release(&queue);
                        }
                        control::Request::Follow(follow) => {
                            if follows_tx.try_send(follow).is_err() {
                                warn!("too many relays asked for at once: one is not started");
                            }
                        }
                    }),
                ),
                hangups: HangupWatch::start().map_err(ServerError::Threads)?,
                metrics: Arc::clone(&metrics),
                registry,
                responder: Arc::clone(&responder),
                settings: StreamSettings::from(&config),
                shutdown: shutdown_rx,
            },
            pattern: config.queue.pattern.clone(),
            signing: settings::signing(&config),
            admin_apart: !config.server.admin_address.is_empty(),
        });
        if !local.ip().is_loopback() && routes.signing.is_none() {
            warn!(
                "reachable beyond loopback ({local}) without auth.secret: anyone who can reach \
                 it and knows or guesses a client's id can read that client's queue, take over its \
                 stream, or create durable queues; set auth.secret (signed URLs), or listen on \
                 127.0.0.1 behind a proxy that checks who is asking (README: Security)"
            );
        }
        serve_follows(Arc::clone(&routes), follows_rx)?;
        let mut pool = Pool::new(
            config.server.workers,
            Arc::clone(&routes),
            Arc::clone(&metrics),
        );
        // Every stream's browser may come back at the same moment (a restart): their heads are
        // awaited together.
        let max_pending = reception::MIN_PENDING.max(config.server.workers.saturating_mul(2));
        limits::check(config.server.workers, max_pending);
        limits::fit_process(config.server.workers);
        let reception = reception::start(
            Duration::from_secs(config.server.request_timeout),
            max_pending,
            responder,
            move |request| pool.dispatch(request),
        )
        .map_err(ServerError::Reception)?;
        let write_timeout = Duration::from_secs(config.server.write_timeout);
        if !config.server.admin_address.is_empty() {
            let admin = bind(&config.server.admin_address)?;
            let address = admin.local_addr().map_err(|error| ServerError::Bind {
                address: config.server.admin_address.clone(),
                error,
            })?;
            accept_admin(admin, reception.clone(), write_timeout)?;
            info!("operational documents on {address} (404 on {local})");
        }
        info!(
            "listening on {local} ({}{} workers at most, ready in {} ms)",
            if https.is_some() { "HTTPS, " } else { "" },
            config.server.workers,
            started.elapsed().as_millis()
        );

        while !self.stopper.stopping() {
            match listener.accept() {
                Ok(_) if self.stopper.stopping() => break,
                Ok((socket, peer)) => {
                    tune(&socket, write_timeout);
                    let mut client = Client::new(socket, peer, false);
                    if let Some(https) = &https {
                        match https.session() {
                            Ok(session) => client = client.with_tls(session),
                            Err(e) => {
                                error!("{peer}: cannot start a TLS session: {e}");
                                continue;
                            }
                        }
                    }
                    if !reception.admit(client) {
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

        info!("shutting down: ending {} streams", metrics.consumers.get());
        drop(listener);
        drop(reception);
        drop(shutdown_tx);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while metrics.workers_busy.get() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        routes.stream.broker.shutdown();
        info!("stopped");
        Ok(())
    }
}

/// Starts a relay (`stream::relay`), on a thread of its own, for each request of another
/// instance to follow a stream held here.
fn serve_follows(
    routes: Arc<Routes>,
    requests: crossbeam_channel::Receiver<FollowRequest>,
) -> Result<(), ServerError> {
    // Only `share` keeps frames for followers; elsewhere the asking instance is told nothing,
    // and asks for the queue to be let go of instead.
    let sharing = routes.stream.settings.conflict == Conflict::Share;
    let dispatch = move || {
        for request in requests.iter().filter(|_| sharing) {
            let Some(feed) = routes.stream.registry.feed_of(&request.queue) else {
                continue;
            };
            let routes = Arc::clone(&routes);
            let started = thread::Builder::new()
                .name("relay".into())
                .stack_size(pool::WORKER_STACK)
                .spawn(move || relay::run(&feed, &request, &routes.stream));
            if let Err(e) = started {
                warn!("a relay to another instance could not start: {e}");
            }
        }
    };
    thread::Builder::new()
        .name("relays".into())
        .spawn(dispatch)
        .map(drop)
        .map_err(ServerError::Threads)
}

fn bind(address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address).map_err(|error| ServerError::Bind {
        address: address.to_string(),
        error,
    })
}

/// The admin address's accept loop, on a thread of its own: its connections are read and
/// served like the others, and marked so that they get the operational documents only.
fn accept_admin(
    listener: TcpListener,
    reception: reception::Reception,
    write_timeout: Duration,
) -> Result<(), ServerError> {
    let spawned = thread::Builder::new()
        .name("admin-accept".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            match listener.accept() {
                Ok((socket, peer)) => {
                    tune(&socket, write_timeout);
                    let client = Client::new(socket, peer, true);
                    if !reception.admit(client) {
                        return;
                    }
                }
                Err(e) => {
                    error!("accepting an admin connection failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        });
    spawned.map(drop).map_err(ServerError::Threads)
}

/// Socket options of an accepted connection. Frames go out as written (no Nagle); a client
/// that stops reading fails the write after `write_timeout`; a peer that vanished without a
/// word (a partition) fails the next write once TCP has retried for `write_timeout`, found
/// by the keep-alive frames at the latest.
fn tune(socket: &TcpStream, write_timeout: Duration) {
    let _ = socket.set_nodelay(true);
    let _ = socket.set_write_timeout(Some(write_timeout));
    sys::set_user_timeout_and_keepalive(socket, write_timeout);
}

/// std listens with a backlog of 128; a burst of browsers reconnecting after a restart is
/// larger, and connections beyond the backlog wait a whole SYN retry (a second or more).
fn widen_backlog(listener: &TcpListener) {
    sys::set_backlog(listener, 4096);
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
