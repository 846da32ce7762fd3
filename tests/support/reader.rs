//! A client that reads one queue the way a browser's EventSource does: across reconnects,
//! sending the last id it saw as `Last-Event-ID`. Over plain HTTP, or over HTTPS trusting a CA.

use super::client::Stream;
use super::numbered::has_all;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// The longest `read_all` waits for its messages.
pub const READ_ALL_DEADLINE: Duration = Duration::from_secs(60);

/// A client's view of one queue across reconnects.
#[derive(Default)]
pub struct Reader {
    pub received: Vec<String>,
    pub last_id: Option<String>,
    /// Over HTTPS: the CA to trust (the server must be `localhost` to it).
    tls_ca: Option<PathBuf>,
}

impl Reader {
    /// A reader over HTTPS that trusts only `ca`.
    pub fn over_tls(ca: PathBuf) -> Reader {
        Reader {
            tls_ca: Some(ca),
            ..Reader::default()
        }
    }

    /// Reads from `stream` until it ends, `stop` holds, or `within` passes.
    pub fn drain(
        &mut self,
        stream: &mut Stream,
        within: Duration,
        stop: impl Fn(&[String]) -> bool,
    ) {
        let end = Instant::now() + within;
        while !stop(&self.received) {
            let left = end.saturating_duration_since(Instant::now());
            match stream.next_event_within(left) {
                Ok(Some(event)) => {
                    self.received.push(event.data.unwrap_or_default());
                    self.last_id = event.id.or(self.last_id.take());
                }
                Ok(None) | Err(()) => return,
            }
        }
    }

    /// Connects (again), as EventSource does, sending the last id it has; `None` unless the
    /// answer is a `200` stream.
    pub fn connect(&self, addr: SocketAddr, queue: &str) -> Option<Stream> {
        self.connect_with(addr, queue, || TcpStream::connect(addr))
    }

    /// `connect` on a socket made by `connect` (with options of the test's choosing).
    pub fn connect_with(
        &self,
        addr: SocketAddr,
        queue: &str,
        connect: impl FnOnce() -> std::io::Result<TcpStream>,
    ) -> Option<Stream> {
        let headers: Vec<(&str, &str)> = self
            .last_id
            .iter()
            .map(|id| ("Last-Event-ID", id.as_str()))
            .collect();
        let target = format!("/?id={queue}");
        match &self.tls_ca {
            Some(ca) => Stream::try_open_tls(connect, addr, "localhost", ca, &target, &headers),
            None => Stream::try_open_with(connect, addr, &target, &headers),
        }
        .filter(|s| s.status == 200)
    }

    /// Reads with reconnects until every message of `expected` arrived or the deadline passed.
    pub fn read_all(&mut self, addr: impl Fn() -> SocketAddr, queue: &str, expected: &[String]) {
        let end = Instant::now() + READ_ALL_DEADLINE;
        while !has_all(&self.received, expected) && Instant::now() < end {
            match self.connect(addr(), queue) {
                Some(mut stream) => {
                    let left = end.saturating_duration_since(Instant::now());
                    self.drain(&mut stream, left, |got| has_all(got, expected));
                }
                // Refused or unreachable: EventSource waits a moment and tries again.
                None => thread::sleep(Duration::from_millis(300)),
            }
        }
    }
}
