//! A client connection: the socket we own, and on an HTTPS listener the TLS session over it.
//! Everything that reads a request or writes an answer or a stream goes through here, so that
//! the rest of the server does not care which of the two it is serving.

use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

/// A client connection: the socket, who is on the other end, and which listener it came through.
pub struct Client {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    /// True for a connection to `server.admin_address`.
    pub admin: bool,
    /// The TLS session, on an HTTPS listener (boxed: it is large, and most servers have none).
    tls: Option<Box<ServerConnection>>,
    /// Whether the connection's first byte has been looked at (plain HTTP or TLS).
    sniffed: bool,
}

/// What a connection to an HTTPS listener sent instead of a TLS handshake.
#[derive(Debug)]
pub struct NotTls;

impl std::fmt::Display for NotTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plain HTTP sent to an HTTPS port")
    }
}

impl std::error::Error for NotTls {}

impl Client {
    pub fn new(socket: TcpStream, peer: SocketAddr, admin: bool) -> Client {
        Client {
            socket,
            peer,
            admin,
            tls: None,
            sniffed: false,
        }
    }

    /// The same connection, to be spoken to through `session`.
    pub fn with_tls(mut self, session: ServerConnection) -> Client {
        self.tls = Some(Box::new(session));
        self
    }

    /// Whether the bytes on the wire are TLS records rather than what `send` is given.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether an HTTP answer can reach the client: not while a TLS handshake is under way.
    pub fn can_answer(&self) -> bool {
        self.tls.as_ref().is_none_or(|tls| !tls.is_handshaking())
    }

    /// Reads request bytes without blocking (the socket is non-blocking on the reception
    /// thread): plaintext into `buf`, `Ok(0)` when the client closed, `WouldBlock` when nothing
    /// more has arrived. Over TLS this also moves the handshake along. A connection to an HTTPS
    /// listener that starts with plain HTTP is answered in plain HTTP: the error is `NotTls`.
    pub fn read_request(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.socket.read(buf);
        };
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.socket) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            match tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if !self.sniffed {
                match first_byte(&self.socket)? {
                    None => return Ok(0),
                    // A TLS record starts with its content type (22: handshake); a request line
                    // with its method.
                    Some(byte) if byte.is_ascii_uppercase() => {
                        self.tls = None;
                        discard_waiting(&mut self.socket);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, NotTls));
                    }
                    Some(_) => self.sniffed = true,
                }
            }
            if tls.read_tls(&mut self.socket)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                // The alert rustls prepared, if the socket takes it.
                let _ = tls.write_tls(&mut self.socket);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Writes all of `bytes` (encrypted over HTTPS) on the blocking socket, within its write
    /// timeout. Returns how many bytes the kernel was handed: ciphertext over HTTPS, the unit
    /// in which the kernel counts what the client's TCP has not acknowledged yet.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let Some(tls) = self.tls.as_deref_mut() else {
            self.socket.write_all(bytes)?;
            return Ok(bytes.len() as u64);
        };
        let mut sent = 0u64;
        let mut rest = bytes;
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.socket)? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    n => sent += n as u64,
                }
            }
            if rest.is_empty() {
                return Ok(sent);
            }
            let taken = tls.writer().write(rest)?;
            rest = &rest[taken..];
        }
    }

    /// Ends our side of the connection after what was sent: TLS's close_notify, then FIN.
    /// `say_goodbye: false` skips the close_notify, for a client that stopped reading (whose
    /// write would only wait out the write timeout again).
    pub fn finish(&mut self, how: Shutdown, say_goodbye: bool) {
        if let (Some(tls), true) = (self.tls.as_deref_mut(), say_goodbye) {
            tls.send_close_notify();
            while tls.wants_write() {
                if !matches!(tls.write_tls(&mut self.socket), Ok(n) if n > 0) {
                    break;
                }
            }
        }
        let _ = self.socket.shutdown(how);
    }

    /// Sends a whole answer, then ends our side; the client sees the end of the body.
    pub fn send_and_close(&mut self, bytes: &[u8]) {
        if self.send(bytes).is_ok() {
            self.finish(Shutdown::Write, true);
        }
    }
}

/// The connection's first byte, left in place; `None` when the client closed; `WouldBlock`
/// when nothing has arrived.
fn first_byte(socket: &TcpStream) -> io::Result<Option<u8>> {
    let mut first = [0u8; 1];
    match socket.peek(&mut first)? {
        0 => Ok(None),
        _ => Ok(Some(first[0])),
    }
}

/// Reads and drops what a plain HTTP client has sent, so that closing after the answer is a
/// FIN, not a reset that could destroy the answer before the client reads it.
fn discard_waiting(socket: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(socket.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}
