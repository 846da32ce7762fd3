//! The client side of the wire, on raw sockets: one request and its whole answer, and an SSE
//! stream read frame by frame. The bytes it reads are exactly what a browser would get, so
//! tests assert those bytes.

use super::WAIT;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A complete answer to a request that is not a stream.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let split = find(&raw, b"\r\n\r\n").expect("a complete response head");
    let (status, headers) = parse_head(&raw[..split]);
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// An SSE client on a raw socket: the bytes it reads are exactly what a browser would get.
pub struct Stream {
    socket: TcpStream,
    /// The TLS session, for a stream over HTTPS.
    tls: Option<rustls::ClientConnection>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body bytes read so far and not yet taken.
    pending: Vec<u8>,
    /// Every body byte read since the head.
    pub body: Vec<u8>,
    /// Set when the body comes in chunks (a proxy speaking HTTP/1.1 to us, as nginx does).
    chunks: Option<Dechunker>,
}

impl Stream {
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Stream {
        Stream::try_open(addr, target, headers).expect("a response head from the server")
    }

    /// Opens a stream from a socket made by `connect`: the response head, or `None` when the
    /// connection fails or closes first.
    pub fn try_open_with(
        connect: impl FnOnce() -> std::io::Result<TcpStream>,
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Option<Stream> {
        let socket = connect().ok()?;
        Stream::try_open_on(socket, None, addr, target, headers)
    }

    /// Opens a stream over HTTPS on a socket made by `connect`, trusting only `ca` (a PEM
    /// file) and checking the server's certificate against `name`.
    pub fn try_open_tls(
        connect: impl FnOnce() -> std::io::Result<TcpStream>,
        addr: SocketAddr,
        name: &str,
        ca: &std::path::Path,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Option<Stream> {
        let socket = connect().ok()?;
        Stream::try_open_on(socket, Some(tls_client(name, ca)), addr, target, headers)
    }

    fn try_open_on(
        socket: TcpStream,
        tls: Option<rustls::ClientConnection>,
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Option<Stream> {
        let mut text =
            format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        let mut stream = Stream {
            socket,
            tls,
            status: 0,
            headers: Vec::new(),
            pending: Vec::new(),
            body: Vec::new(),
            chunks: None,
        };
        socket_write(&mut stream.socket, stream.tls.as_mut(), text.as_bytes()).ok()?;
        let end = Instant::now() + WAIT;
        let mut raw = Vec::new();
        let split = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            if Instant::now() >= end || stream.fill(&mut raw, end) == Fill::Closed {
                return None;
            }
        };
        let (status, headers) = parse_head(&raw[..split]);
        stream.status = status;
        stream.headers = headers;
        let chunked = stream
            .header("Transfer-Encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        stream.chunks = chunked.then(Dechunker::default);
        stream.absorb(&raw[split + 4..]);
        Some(stream)
    }

    pub fn try_open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Option<Stream> {
        Stream::try_open_with(|| TcpStream::connect(addr), addr, target, headers)
    }

    /// The socket, for tests that change its options.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// The certificate the server presented, over HTTPS.
    pub fn server_certificate(&self) -> Option<Vec<u8>> {
        let certs = self.tls.as_ref()?.peer_certificates()?;
        Some(certs.first()?.as_ref().to_vec())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes into `into`, waiting at most until `end`.
    /// Takes bytes read from the socket into the body, decoding chunks when the body is chunked.
    fn absorb(&mut self, raw: &[u8]) {
        let decoded = match &mut self.chunks {
            Some(chunks) => chunks.decode(raw),
            None => raw.to_vec(),
        };
        self.body.extend_from_slice(&decoded);
        self.pending.extend_from_slice(&decoded);
    }

    fn fill(&mut self, into: &mut Vec<u8>, end: Instant) -> Fill {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 16 * 1024];
        match socket_read(&mut self.socket, self.tls.as_mut(), &mut chunk) {
            Ok(0) => Fill::Closed,
            Ok(n) => {
                into.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Fill::Timeout
            }
            Err(_) => Fill::Closed,
        }
    }

    /// The next frame (event or comment, without its final empty line) within `within`:
    /// `Ok(None)` when the server closed the stream, `Err(())` on the deadline.
    pub fn next_frame_within(&mut self, within: Duration) -> Result<Option<String>, ()> {
        let end = Instant::now() + within;
        loop {
            if let Some(i) = find(&self.pending, b"\n\n") {
                let frame = String::from_utf8_lossy(&self.pending[..i]).to_string();
                self.pending.drain(..i + 2);
                return Ok(Some(frame));
            }
            let mut more = Vec::new();
            match self.fill(&mut more, end) {
                Fill::Closed => return Ok(None),
                Fill::Timeout if Instant::now() >= end => return Err(()),
                _ => {}
            }
            self.absorb(&more);
        }
    }

    /// The next frame, or `None` when the server closed the stream; panics after `WAIT`.
    pub fn next_frame(&mut self) -> Option<String> {
        self.next_frame_within(WAIT)
            .expect("timed out reading the stream")
    }

    /// The next event within `within`, skipping comments: `Ok(None)` at end of stream.
    pub fn next_event_within(&mut self, within: Duration) -> Result<Option<Event>, ()> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.next_frame_within(left)? {
                None => return Ok(None),
                Some(frame) => {
                    let event = parse_event(&frame);
                    if event.data.is_some() {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    /// The next event's data (lines joined with `\n`), skipping comments.
    pub fn next_data(&mut self) -> Option<String> {
        loop {
            let event = parse_event(&self.next_frame()?);
            if let Some(data) = event.data {
                return Some(data);
            }
        }
    }

    /// The next event, skipping comments.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let event = parse_event(&self.next_frame()?);
            if event.data.is_some() {
                return Some(event);
            }
        }
    }

    /// The next `count` events, skipping comments; panics when the stream ends first.
    pub fn next_events(&mut self, count: usize) -> Vec<Event> {
        (0..count)
            .map(|_| self.next_event().expect("another event"))
            .collect()
    }

    /// True when the server has closed the stream (reads until end of stream or deadline).
    pub fn closed_by_server(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        let mut rest = Vec::new();
        while Instant::now() < end {
            let left = end
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match socket_read(&mut self.socket, self.tls.as_mut(), &mut chunk) {
                Ok(0) => {
                    self.absorb(&rest);
                    return true;
                }
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        self.absorb(&rest);
        false
    }

    /// Closes the socket with RST, as the kernel of a client that crashed with unread data does.
    pub fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a pointer to a live linger of the size passed, on our socket.
        unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }

    /// Closes the socket with FIN, as a tab being closed does.
    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads from the socket, through TLS when the stream has a session.
fn socket_read(
    socket: &mut TcpStream,
    tls: Option<&mut rustls::ClientConnection>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match tls {
        Some(tls) => rustls::Stream::new(tls, socket).read(buf),
        None => socket.read(buf),
    }
}

fn socket_write(
    socket: &mut TcpStream,
    tls: Option<&mut rustls::ClientConnection>,
    bytes: &[u8],
) -> std::io::Result<()> {
    match tls {
        Some(tls) => {
            let mut stream = rustls::Stream::new(tls, socket);
            stream.write_all(bytes)?;
            stream.flush()
        }
        None => socket.write_all(bytes),
    }
}

/// A TLS client that trusts only the CA in `ca` and checks the server's name against `name`.
pub fn tls_client(name: &str, ca: &std::path::Path) -> rustls::ClientConnection {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("the test CA") {
        roots.add(cert.expect("a PEM certificate")).expect("a CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("a server name");
    rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Data,
    Timeout,
    Closed,
}

/// One event as `EventSource` sees it: its fields, the `data:` lines joined with `\n`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

/// The event in `frame` (a frame without its final empty line); a comment has no data.
pub fn parse_event(frame: &str) -> Event {
    let mut event = Event::default();
    for line in frame.split('\n') {
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => event.id = Some(value.to_string()),
            "event" => event.event = Some(value.to_string()),
            "data" => match &mut event.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => event.data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    event
}

/// Opens one stream per queue, all at the same moment, each reading until it has `messages`
/// distinct events (or its stream ends). Returns what each queue's stream received, and the
/// time from the common start until the last stream had everything.
pub fn read_many(
    addr: SocketAddr,
    queues: &[String],
    messages: usize,
) -> (Vec<BTreeSet<String>>, Duration) {
    let start = Arc::new(std::sync::Barrier::new(queues.len() + 1));
    let readers: Vec<_> = queues
        .iter()
        .map(|queue| {
            let (target, start) = (format!("/?id={queue}"), Arc::clone(&start));
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    start.wait();
                    let mut seen = BTreeSet::new();
                    let Some(mut stream) = Stream::try_open(addr, &target, &[]) else {
                        return seen;
                    };
                    while seen.len() < messages {
                        match stream.next_event_within(WAIT) {
                            Ok(Some(event)) => {
                                seen.insert(event.data.unwrap_or_default());
                            }
                            _ => break,
                        }
                    }
                    seen
                })
                .expect("a reader thread")
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let received = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    (received, began.elapsed())
}

/// Opens `count` streams of `target` at the same moment, spread in turn over `servers`; returns
/// each answer (a stream, or `None` when the connection closed before a head).
pub fn open_at_once(servers: &[SocketAddr], target: &str, count: usize) -> Vec<Option<Stream>> {
    let start = Arc::new(std::sync::Barrier::new(count));
    let openers: Vec<_> = (0..count)
        .map(|i| {
            let (addr, target, start) = (
                servers[i % servers.len()],
                target.to_string(),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                start.wait();
                Stream::try_open(addr, &target, &[])
            })
        })
        .collect();
    openers
        .into_iter()
        .map(|o| o.join().expect("an opener thread"))
        .collect()
}

/// Of answers to simultaneous requests for one queue with `queue.conflict: reject`, the one
/// stream served; every other answer must be the original's `503 server: max consumers
/// exceeded`. `what` names the attempt in a failure.
pub fn the_one_served(answers: Vec<Option<Stream>>, what: &str) -> Stream {
    let (mut served, refused): (Vec<Stream>, Vec<Stream>) = answers
        .into_iter()
        .map(|answer| answer.expect("an answer"))
        .partition(|stream| stream.status == 200);
    for stream in &refused {
        assert_eq!(stream.status, 503, "{what}: {:?}", stream.headers);
        assert_eq!(
            stream.header("X-Status-Reason"),
            Some("server: max consumers exceeded")
        );
    }
    assert_eq!(served.len(), 1, "{what}: {} streams", served.len());
    served.remove(0)
}

/// The consumers a `rabbitmqctl list_consumers queue_name active` listing shows for `queue`,
/// each as its `active` column (`true`, `false`).
pub fn consumers_listed(listing: &str, queue: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next().unwrap_or("").to_string())
        })
        .collect()
}

/// `Transfer-Encoding: chunked`, decoded as bytes arrive: a size line, that many bytes, CRLF.
#[derive(Default)]
struct Dechunker {
    state: ChunkState,
    size_line: Vec<u8>,
}

#[derive(Default)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataEnd,
    Done,
}

impl Dechunker {
    fn decode(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((&byte, rest)) = input.split_first() {
            match self.state {
                ChunkState::Size => {
                    input = rest;
                    if byte != b'\n' {
                        self.size_line.push(byte);
                        continue;
                    }
                    let line = String::from_utf8_lossy(&self.size_line).to_string();
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16).unwrap_or(0);
                    self.size_line.clear();
                    self.state = if size == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    input = rest;
                    if byte == b'\n' {
                        self.state = ChunkState::Size;
                    }
                }
                ChunkState::Done => break,
            }
        }
        out
    }
}

/// Shrinks a socket's receive buffer, so that a client that stops reading is felt quickly.
pub fn set_receive_buffer(socket: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to a live int of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
