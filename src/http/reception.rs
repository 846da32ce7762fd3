//! Reception: one thread that reads the request heads of every new connection at once (epoll,
//! through mio), so that a client sending its request slowly holds no worker. A complete head
//! goes to the pool; a head that is late, too large or not HTTP is answered and dropped.

use crate::http::client::NotTls;
use crate::http::head::{self, HttpError, RequestHead};
use crate::http::{Client, Responder};
use crate::refusal::Refusal;
use crossbeam_channel::Receiver;
use log::debug;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections waiting for their request head, at least; `start` is given the number.
pub const MIN_PENDING: usize = 8192;
const WAKE: Token = Token(0);

/// A connection whose request head has been read.
pub struct Request {
    pub client: Client,
    pub head: RequestHead,
}

/// Hands new connections to the reception thread (from each listener's accept loop).
#[derive(Clone)]
pub struct Reception {
    connections: crossbeam_channel::Sender<Client>,
    ring: Arc<Waker>,
}

impl Reception {
    /// Queues `client` for reading; false when reception has ended.
    pub fn admit(&self, client: Client) -> bool {
        let sent = self.connections.send(client).is_ok();
        let _ = self.ring.wake();
        sent
    }
}

struct Pending {
    client: Client,
    buffer: Vec<u8>,
    deadline: Instant,
}

/// Starts reading heads; each complete request is passed to `deliver` on the reception thread.
pub fn start(
    request_timeout: Duration,
    max_pending: usize,
    responder: Arc<Responder>,
    mut deliver: impl FnMut(Request) + Send + 'static,
) -> std::io::Result<Reception> {
    let mut poll = Poll::new()?;
    let ring = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (connections, arrivals) = crossbeam_channel::unbounded::<Client>();
    std::thread::Builder::new()
        .name("reception".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let limits = Limits {
                request_timeout,
                max_pending,
            };
            run(&mut poll, &arrivals, limits, &responder, &mut deliver);
        })?;
    Ok(Reception { connections, ring })
}

/// How long a head may take, and how many may be awaited at once.
struct Limits {
    request_timeout: Duration,
    max_pending: usize,
}

fn run(
    poll: &mut Poll,
    arrivals: &Receiver<Client>,
    limits: Limits,
    responder: &Responder,
    deliver: &mut dyn FnMut(Request),
) {
    let mut pending: HashMap<Token, Pending> = HashMap::new();
    let mut next_token = 1usize;
    let mut events = Events::with_capacity(1024);
    let mut open = true;
    while open || !pending.is_empty() {
        let now = Instant::now();
        let wait = pending
            .values()
            .map(|p| p.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::error!("reception: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        for event in &events {
            let token = event.token();
            if token == WAKE {
                continue;
            }
            let Some(mut waiting) = pending.remove(&token) else {
                continue;
            };
            match read_more(&mut waiting) {
                Ok(Some(head)) => {
                    deregister(poll, &waiting.client);
                    if waiting.client.socket.set_nonblocking(false).is_ok() {
                        deliver(Request {
                            client: waiting.client,
                            head,
                        });
                    }
                }
                Ok(None) => {
                    pending.insert(token, waiting);
                }
                Err(e) => {
                    deregister(poll, &waiting.client);
                    turn_away(waiting.client, &e, responder);
                }
            }
        }
        // New connections: register each, and read what may already have arrived.
        loop {
            match arrivals.try_recv() {
                Ok(client) => {
                    if client.socket.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if pending.len() >= limits.max_pending {
                        answer_at_once(client, responder);
                        continue;
                    }
                    let token = Token(next_token);
                    next_token = next_token.wrapping_add(1).max(1);
                    let fd = client.socket.as_raw_fd();
                    // A TLS handshake writes too; its flights are small, but the socket may
                    // refuse one.
                    let interest = match client.is_tls() {
                        true => Interest::READABLE | Interest::WRITABLE,
                        false => Interest::READABLE,
                    };
                    if poll
                        .registry()
                        .register(&mut SourceFd(&fd), token, interest)
                        .is_err()
                    {
                        continue;
                    }
                    pending.insert(
                        token,
                        Pending {
                            client,
                            buffer: Vec::new(),
                            deadline: Instant::now() + limits.request_timeout,
                        },
                    );
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Late requests are answered 408 and dropped: slow clients cost a socket, not a worker.
        let now = Instant::now();
        let late: Vec<Token> = pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            if let Some(waiting) = pending.remove(&token) {
                deregister(poll, &waiting.client);
                turn_away(waiting.client, &HttpError::Timeout, responder);
            }
        }
        if !open {
            // Shutting down: nobody will serve what is still arriving.
            pending.clear();
        }
    }
}

fn deregister(poll: &Poll, client: &Client) {
    let _ = poll
        .registry()
        .deregister(&mut SourceFd(&client.socket.as_raw_fd()));
}

/// Reads what the socket has; the head once complete.
fn read_more(waiting: &mut Pending) -> Result<Option<RequestHead>, HttpError> {
    let mut chunk = [0u8; 4096];
    loop {
        match waiting.client.read_request(&mut chunk) {
            Ok(0) => return Err(HttpError::Closed),
            Ok(n) => {
                waiting.buffer.extend_from_slice(&chunk[..n]);
                if let Some(head) = head::parse_head(&waiting.buffer)? {
                    return Ok(Some(head));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.get_ref().is_some_and(|e| e.is::<NotTls>()) => {
                return Err(HttpError::NotTls)
            }
            Err(e) => return Err(HttpError::Io(e)),
        }
    }
}

/// A connection beyond `max_pending`: refused with what has arrived of its request (usually all
/// of it). An EventSource, or a client whose request is not there yet, is told to come back.
/// Over HTTPS nothing can be said before a handshake, and the connection is closed.
fn answer_at_once(client: Client, responder: &Responder) {
    if client.is_tls() {
        debug!("{}: closed, too many connections waiting", client.peer);
        return;
    }
    let mut waiting = Pending {
        client,
        buffer: Vec::new(),
        deadline: Instant::now(),
    };
    let head = read_more(&mut waiting).ok().flatten();
    let mut client = ready_to_answer(waiting.client);
    match head {
        Some(head) => responder.refuse(&mut client, Some(&head), Refusal::TooManyWaiting),
        None => responder.refuse_unread(&mut client, Refusal::TooManyWaiting),
    }
}

fn turn_away(client: Client, error: &HttpError, responder: &Responder) {
    match error.refusal() {
        // A TLS client still in its handshake cannot be answered in HTTP.
        Some(_) if !client.can_answer() => debug!("{}: {error}", client.peer),
        Some(refusal) => responder.refuse(&mut ready_to_answer(client), None, refusal),
        None => debug!("{}: {error}", client.peer),
    }
}

/// A connection taken off the reception thread's poll, to be answered with a blocking write
/// that waits at most a second.
fn ready_to_answer(client: Client) -> Client {
    let _ = client.socket.set_nonblocking(false);
    let _ = client
        .socket
        .set_write_timeout(Some(Duration::from_secs(1)));
    client
}
