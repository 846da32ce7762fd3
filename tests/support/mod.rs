//! What every integration test needs: the private test broker, the real server binary on a
//! port of its own, a raw-socket HTTP/SSE client, and a publisher. Every wait has a deadline.
#![allow(dead_code)]

use amiquip::{
    AmqpProperties, AmqpValue, Channel, Connection, FieldTable, Publish, QueueDeclareOptions,
};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const WAIT: Duration = Duration::from_secs(20);

/// The broker `make test` started, e.g. `amqp://guest:guest@127.0.0.1:5673/`.
pub fn broker_url() -> String {
    std::env::var("EVENTSOURCED_TEST_AMQP").unwrap_or_else(|_| {
        panic!("EVENTSOURCED_TEST_AMQP is not set: run the integration tests with `make test`, which starts a private broker")
    })
}

/// A queue name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "test-{name}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// Waits until `condition` holds, or panics with `what` at the deadline.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !condition() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The server binary, running with a config file of its own and the given environment
/// overrides (`EVENTSOURCED_SECTION_KEY`). Killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<(Mutex<String>, Condvar)>,
    _dir: TempDir,
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_with_broker(&broker_url(), env)
    }

    pub fn start_with_broker(broker: &str, env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new("server");
        let config = dir.path.join("config.yml");
        std::fs::write(
            &config,
            format!("server:\n  address: 127.0.0.1:0\n  keepalive: 0\nbroker:\n  node:\n    - {broker}\n"),
        )
        .expect("write test config");
        // EVENTSOURCED_BIN runs another build (the static one, say) under the same tests.
        let binary = std::env::var("EVENTSOURCED_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_eventsourced").to_string());
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the server binary");
        let stderr = child.stderr.take().expect("server stderr");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let quiet = std::env::var_os("EVENTSOURCED_QUIET_SERVER").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !quiet {
                    eprintln!("server| {line}");
                }
                let (text, changed) = &*sink;
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
                changed.notify_all();
            }
        });
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
            _dir: dir,
        };
        let line = server.wait_log("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("listening address in the log");
        server.addr = addr;
        server
    }

    /// Waits until a log line contains `needle`, and returns that line.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_count(needle, 1)
    }

    /// Waits until `count` log lines contain `needle`; returns the last of them.
    pub fn wait_log_count(&self, needle: &str, count: usize) -> String {
        let (text, changed) = &*self.log;
        let end = Instant::now() + WAIT;
        let mut guard = text.lock().unwrap();
        loop {
            let lines: Vec<&str> = guard.lines().filter(|l| l.contains(needle)).collect();
            if lines.len() >= count {
                return lines[count - 1].to_string();
            }
            let now = Instant::now();
            assert!(
                now < end,
                "server never logged {count} x {needle:?}; log:\n{guard}"
            );
            guard = changed.wait_timeout(guard, end - now).unwrap().0;
        }
    }

    pub fn log_text(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until the server has a broker connection.
    pub fn ready(self) -> Server {
        self.wait_log("connected to broker");
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` and waits for the exit, returning the status and how long it took.
    pub fn stop_with(&mut self, signal: i32) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < WAIT,
                "server did not exit after signal {signal}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "GET", target, headers)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(&format!("eventsourced-{name}")));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

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
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body bytes read so far and not yet taken.
    pending: Vec<u8>,
    /// Every body byte read since the head.
    pub body: Vec<u8>,
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
        let mut socket = connect().ok()?;
        let mut text =
            format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        socket.write_all(text.as_bytes()).ok()?;
        let mut stream = Stream {
            socket,
            status: 0,
            headers: Vec::new(),
            pending: Vec::new(),
            body: Vec::new(),
        };
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
        stream.pending = raw[split + 4..].to_vec();
        stream.body = stream.pending.clone();
        Some(stream)
    }

    pub fn try_open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Option<Stream> {
        Stream::try_open_with(|| TcpStream::connect(addr), addr, target, headers)
    }

    /// The socket, for tests that change its options.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes into `into`, waiting at most until `end`.
    fn fill(&mut self, into: &mut Vec<u8>, end: Instant) -> Fill {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 16 * 1024];
        match self.socket.read(&mut chunk) {
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
            self.body.extend_from_slice(&more);
            self.pending.extend_from_slice(&more);
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
            match self.socket.read(&mut chunk) {
                Ok(0) => {
                    self.body.extend_from_slice(&rest);
                    self.pending.extend_from_slice(&rest);
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
        self.body.extend_from_slice(&rest);
        self.pending.extend_from_slice(&rest);
        false
    }

    /// Closes the socket with FIN, as a tab being closed does.
    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Data,
    Timeout,
    Closed,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

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

/// A connection to the test broker with `TCP_NODELAY` (amiquip's own dialling leaves Nagle on,
/// which makes every synchronous method wait for a delayed ACK).
pub fn amqp_connection() -> Connection {
    amqp_connection_to(broker_port()).expect("connect to the test broker")
}

/// A connection to the broker on 127.0.0.1:`port`, or why there is none.
pub fn amqp_connection_to(port: u16) -> Result<Connection, String> {
    let socket = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    let socket = mio::net::TcpStream::from_stream(socket).map_err(|e| e.to_string())?;
    let options = amiquip::ConnectionOptions::<amiquip::Auth>::default();
    Connection::insecure_open_stream(socket, options, amiquip::ConnectionTuning::default())
        .map_err(|e| e.to_string())
}

/// A publisher on its own connection to the test broker.
pub struct Amqp {
    connection: Option<Connection>,
    channel: Option<Channel>,
    confirms: Option<crossbeam_channel::Receiver<amiquip::Confirm>>,
}

impl Amqp {
    pub fn connect() -> Amqp {
        Amqp::connect_to(broker_port()).expect("connect to the test broker")
    }

    /// A publisher on the broker at 127.0.0.1:`port`.
    pub fn connect_to(port: u16) -> Result<Amqp, String> {
        let mut connection = amqp_connection_to(port)?;
        let channel = connection.open_channel(None).map_err(|e| e.to_string())?;
        Ok(Amqp {
            connection: Some(connection),
            channel: Some(channel),
            confirms: None,
        })
    }

    /// A publisher whose messages are persistent and confirmed by the broker one by one.
    pub fn confirming(port: u16) -> Result<Amqp, String> {
        let mut amqp = Amqp::connect_to(port)?;
        let channel = amqp.channel();
        channel
            .enable_publisher_confirms()
            .map_err(|e| e.to_string())?;
        amqp.confirms = Some(
            channel
                .listen_for_publisher_confirms()
                .map_err(|e| e.to_string())?,
        );
        Ok(amqp)
    }

    /// Publishes a persistent message and waits for the broker's confirm.
    pub fn publish_confirmed(&self, queue: &str, body: &str) -> Result<(), String> {
        let properties = AmqpProperties::default().with_delivery_mode(2);
        self.channel()
            .basic_publish(
                "",
                Publish::with_properties(body.as_bytes(), queue, properties),
            )
            .map_err(|e| e.to_string())?;
        let confirms = self.confirms.as_ref().ok_or("not a confirming publisher")?;
        match confirms.recv_timeout(Duration::from_secs(5)) {
            Ok(amiquip::Confirm::Ack(_)) => Ok(()),
            other => Err(format!("not confirmed: {other:?}")),
        }
    }

    fn channel(&self) -> &Channel {
        self.channel.as_ref().expect("open channel")
    }

    /// Declares `queue` exactly as the server does (so messages wait in it).
    pub fn declare(&self, queue: &str) {
        let mut arguments = FieldTable::default();
        arguments.insert("x-expires".to_string(), AmqpValue::LongInt(1_800_000));
        let options = QueueDeclareOptions {
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
        };
        self.channel()
            .queue_declare(queue, options)
            .expect("declare the queue");
    }

    pub fn publish(&self, queue: &str, body: &str) {
        self.publish_with(queue, body.as_bytes(), AmqpProperties::default());
    }

    pub fn publish_with(&self, queue: &str, body: &[u8], properties: AmqpProperties) {
        self.channel()
            .basic_publish("", Publish::with_properties(body, queue, properties))
            .expect("publish");
    }

    /// Declares an exchange of `kind` (fanout, topic, direct), not durable.
    pub fn exchange(&self, name: &str, kind: amiquip::ExchangeType) {
        self.channel()
            .exchange_declare(kind, name, amiquip::ExchangeDeclareOptions::default())
            .expect("declare the exchange");
    }

    /// Publishes `body` to `exchange` with `routing_key`.
    pub fn publish_to(&self, exchange: &str, routing_key: &str, body: &str) {
        self.channel()
            .basic_publish(exchange, Publish::new(body.as_bytes(), routing_key))
            .expect("publish to the exchange");
    }

    /// Messages ready in `queue` (not delivered to any consumer).
    pub fn ready(&self, queue: &str) -> u32 {
        self.channel()
            .queue_declare_passive(queue)
            .expect("passive declare")
            .declared_message_count()
            .unwrap_or(0)
    }

    /// Consumers of `queue`.
    pub fn consumers(&self, queue: &str) -> u32 {
        self.channel()
            .queue_declare_passive(queue)
            .expect("passive declare")
            .declared_consumer_count()
            .unwrap_or(0)
    }

    pub fn delete(&self, queue: &str) {
        self.channel()
            .queue_delete(queue, amiquip::QueueDeleteOptions::default())
            .expect("delete the queue");
    }

    /// Takes every ready message of `queue` (acking them), returning their bodies.
    pub fn drain(&self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        while let Some(get) = self.channel().basic_get(queue, true).expect("basic.get") {
            bodies.push(String::from_utf8_lossy(&get.delivery.body).to_string());
        }
        bodies
    }
}

impl Drop for Amqp {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            let _ = channel.close();
        }
        if let Some(connection) = self.connection.take() {
            let _ = connection.close();
        }
    }
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

/// Runs `rabbitmqctl` against the test broker.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let dir = std::env::var("EVENTSOURCED_TEST_BROKER_DIR")
        .expect("EVENTSOURCED_TEST_BROKER_DIR is not set: run the tests with `make test`");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq");
    let output = Command::new(script)
        .arg("ctl")
        .arg(dir)
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

pub fn broker_port() -> u16 {
    let url = broker_url();
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in the broker URL")
}

/// Local ports of the TCP connections process `pid` has open to the test broker.
pub fn broker_connection_ports(pid: i32) -> Vec<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let broker = broker_port();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            let remote = u16::from_str_radix(cols.get(2)?.rsplit(':').next()?, 16).ok()?;
            (remote == broker && inodes.contains(*cols.get(9)?)).then_some(local)
        })
        .collect()
}

/// Makes the broker close every AMQP connection of process `pid`.
pub fn close_broker_connections_of(pid: i32) {
    let ports = broker_connection_ports(pid);
    assert!(!ports.is_empty(), "process {pid} has no broker connection");
    let listing = rabbitmqctl(&["list_connections", "pid", "peer_port", "--no-table-headers"]);
    let mut closed = 0;
    for line in listing.lines() {
        let mut cols = line.split_whitespace();
        let (Some(connection), Some(port)) = (cols.next(), cols.next()) else {
            continue;
        };
        if port.parse().is_ok_and(|p: u16| ports.contains(&p)) {
            rabbitmqctl(&["close_connection", connection, "closed by a test"]);
            closed += 1;
        }
    }
    assert_eq!(closed, ports.len(), "connections listed:\n{listing}");
}

/// A TCP relay to 127.0.0.1:`target` that can go silent: while frozen it moves no bytes but
/// keeps every connection open, as a network partition does.
pub struct Relay {
    pub port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    pub fn to(target: u16) -> Relay {
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay listener");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (f, s) = (Arc::clone(&frozen), Arc::clone(&stop));
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let (f, s) = (Arc::clone(&f), Arc::clone(&s));
                    thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
                        let mut buffer = [0u8; 16 * 1024];
                        while !s.load(Ordering::Relaxed) {
                            if f.load(Ordering::Relaxed) {
                                thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                            match from.read(&mut buffer) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buffer[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, frozen, stop }
    }

    pub fn freeze(&self, silent: bool) {
        self.frozen.store(silent, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
