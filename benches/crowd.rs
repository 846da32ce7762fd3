//! Thousands of SSE clients on one thread: each connects, asks for its queue's stream, reads
//! the frames, and comes back with `Last-Event-ID` after the stream's `retry:` (as a browser
//! does) when the server goes away. Non-blocking sockets on one mio poll, so that the load
//! client takes little of the CPU the server is measured on. Every wait is bounded.

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A browser's wait before it reconnects when the stream sent no `retry:` (Chromium's).
const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// One client, as its user would see it.
pub struct Client {
    pub queue: String,
    /// The status of the newest response, 0 before one arrived.
    pub status: u16,
    /// Every `data:` received, over all connections, in order.
    pub data: Vec<String>,
    /// The newest `id:`, sent back as `Last-Event-ID` on reconnecting.
    pub last_id: Option<String>,
    /// Connections that ended (the server closed or reset them).
    pub ended: u32,
    retry: Duration,
    socket: Option<TcpStream>,
    /// Bytes read and not yet parsed: the head, then incomplete frames.
    pending: Vec<u8>,
    in_body: bool,
    /// Whether the request is still to be written (the socket is connecting).
    unsent: bool,
    reconnect_at: Option<Instant>,
}

pub struct Crowd {
    addr: SocketAddr,
    poll: Poll,
    pub clients: Vec<Client>,
    /// Whether a client whose connection ended comes back (after its `retry`).
    pub come_back: bool,
}

impl Crowd {
    pub fn new(addr: SocketAddr) -> Crowd {
        Crowd {
            addr,
            poll: Poll::new().expect("an epoll instance"),
            clients: Vec::new(),
            come_back: false,
        }
    }

    /// Adds a client of `queue` and starts its connection.
    pub fn open(&mut self, queue: &str) {
        self.clients.push(Client {
            queue: queue.to_string(),
            status: 0,
            data: Vec::new(),
            last_id: None,
            ended: 0,
            retry: DEFAULT_RETRY,
            socket: None,
            pending: Vec::new(),
            in_body: false,
            unsent: false,
            reconnect_at: None,
        });
        self.connect(self.clients.len() - 1);
    }

    fn connect(&mut self, index: usize) {
        let client = &mut self.clients[index];
        client.pending.clear();
        client.in_body = false;
        client.status = 0;
        client.reconnect_at = None;
        match TcpStream::connect(self.addr) {
            Ok(mut socket) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                if self
                    .poll
                    .registry()
                    .register(&mut socket, Token(index), interest)
                    .is_ok()
                {
                    client.socket = Some(socket);
                    client.unsent = true;
                    return;
                }
                client.reconnect_at = Some(Instant::now() + client.retry);
            }
            Err(_) => client.reconnect_at = Some(Instant::now() + client.retry),
        }
    }

    /// Runs the clients until `done` holds for every one, or until `deadline`; answers whether
    /// all were done.
    pub fn run_until(&mut self, deadline: Instant, done: impl Fn(&Client) -> bool) -> bool {
        let mut events = Events::with_capacity(4096);
        let mut next_check = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_check {
                if self.clients.iter().all(&done) {
                    return true;
                }
                self.reconnect_due(now);
                next_check = now + Duration::from_millis(20);
            }
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            if self.poll.poll(&mut events, Some(wait)).is_err() {
                continue;
            }
            for event in events.iter() {
                let Token(index) = event.token();
                if index < self.clients.len() {
                    self.serve(index, event);
                }
            }
        }
    }

    fn reconnect_due(&mut self, now: Instant) {
        if !self.come_back {
            return;
        }
        for index in 0..self.clients.len() {
            if self.clients[index].reconnect_at.is_some_and(|at| at <= now) {
                self.connect(index);
            }
        }
    }

    fn serve(&mut self, index: usize, ready: &Event) {
        let client = &mut self.clients[index];
        let Some(socket) = client.socket.as_mut() else {
            return;
        };
        if (ready.is_writable() || ready.is_error()) && client.unsent {
            let mut request = format!(
                "GET /?id={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
                client.queue, self.addr
            );
            if let Some(id) = &client.last_id {
                request.push_str(&format!("Last-Event-ID: {id}\r\n"));
            }
            request.push_str("\r\n");
            match socket.write(request.as_bytes()) {
                Ok(_) => client.unsent = false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return self.ended(index),
            }
        }
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let Some(socket) = self.clients[index].socket.as_mut() else {
                return;
            };
            match socket.read(&mut buffer) {
                Ok(0) => return self.ended(index),
                Ok(n) => {
                    let client = &mut self.clients[index];
                    client.pending.extend_from_slice(&buffer[..n]);
                    client.parse();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.ended(index),
            }
        }
    }

    fn ended(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if let Some(mut socket) = client.socket.take() {
            let _ = self.poll.registry().deregister(&mut socket);
        }
        client.ended += 1;
        client.reconnect_at = Some(Instant::now() + client.retry);
    }

    /// Closes every connection at once.
    pub fn close_all(&mut self) {
        for client in &mut self.clients {
            client.socket = None;
            client.reconnect_at = None;
        }
    }
}

impl Client {
    /// Whether this client's newest connection is a stream that is open.
    pub fn streaming(&self) -> bool {
        self.socket.is_some() && self.status == 200 && self.in_body
    }

    fn parse(&mut self) {
        if !self.in_body {
            let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
            self.status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            self.pending.drain(..end + 4);
            self.in_body = true;
        }
        while let Some(end) = find(&self.pending, b"\n\n") {
            let frame: Vec<u8> = self.pending.drain(..end + 2).collect();
            let mut data: Option<String> = None;
            for line in String::from_utf8_lossy(&frame).lines() {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "id" => self.last_id = Some(value.to_string()),
                    "data" => data = Some(value.to_string()),
                    "retry" => {
                        if let Ok(ms) = value.parse() {
                            self.retry = Duration::from_millis(ms);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(data) = data {
                self.data.push(data);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
