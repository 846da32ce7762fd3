//! `amqps://`: the TLS handshake with a broker, then a stream amiquip's I/O thread drives like a
//! TCP socket (`amiquip::IoStream`: read, write, and mio readiness of the socket underneath).

use super::{certificates, private_key, provider, roots, TlsError};
use crate::sys;
use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How this process speaks TLS to brokers: the roots it trusts and its own certificate, if any.
#[derive(Clone)]
pub struct BrokerTls {
    config: Arc<ClientConfig>,
    roots: &'static str,
}

/// Why a TLS session with a broker did not start.
#[derive(Debug)]
pub enum HandshakeError {
    /// The URL's host is not a DNS name or an IP address.
    Name(String),
    /// The socket failed or timed out during the handshake.
    Io(io::Error),
    /// The broker's certificate did not verify, or the handshake itself failed.
    Tls(rustls::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Name(host) => write!(f, "{host:?} is not a name TLS can verify"),
            HandshakeError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                f.write_str("TLS handshake failed: the broker did not answer in time")
            }
            HandshakeError::Io(e) => write!(f, "TLS handshake failed: {e}"),
            HandshakeError::Tls(e @ rustls::Error::InvalidCertificate(_)) => write!(
                f,
                "TLS handshake failed, the broker's certificate does not verify ({e}): \
                 broker.tls.ca names the CA to trust, and the certificate must name the URL's host"
            ),
            HandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl BrokerTls {
    /// `ca`: the only root to trust when set (see `roots`). `cert` and `key`: a client
    /// certificate, for brokers that ask for one (RabbitMQ's `EXTERNAL` authentication).
    pub fn new(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<BrokerTls, TlsError> {
        let (store, source) = roots(ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Refused("TLS versions".into(), e))?
            .with_root_certificates(store);
        let mut config = match (cert, key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| {
                    TlsError::Refused(format!("client certificate {}", cert.display()), e)
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::Incomplete("broker.tls")),
        };
        config.alpn_protocols = Vec::new();
        Ok(BrokerTls {
            config: Arc::new(config),
            roots: source,
        })
    }

    /// Where the trusted roots come from, for the start-up log.
    pub fn roots(&self) -> &'static str {
        self.roots
    }

    /// Runs the handshake on a connected socket, blocking for at most `timeout` per read or
    /// write, and checks the broker's certificate against `host` (a DNS name or an IP address).
    pub fn handshake(
        &self,
        mut socket: std::net::TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<TlsStream, HandshakeError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| HandshakeError::Name(host.to_string()))?;
        let mut tls =
            ClientConnection::new(self.config.clone(), name).map_err(HandshakeError::Tls)?;
        socket
            .set_read_timeout(Some(timeout))
            .and_then(|()| socket.set_write_timeout(Some(timeout)))
            .map_err(HandshakeError::Io)?;
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut socket) {
                // rustls reports a refused certificate as InvalidData wrapping its own error.
                return Err(
                    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                        Some(tls_error) => HandshakeError::Tls(tls_error.clone()),
                        None => HandshakeError::Io(e),
                    },
                );
            }
        }
        // The finished handshake may still have bytes to send (TLS 1.2's last flight).
        while tls.wants_write() {
            tls.write_tls(&mut socket).map_err(HandshakeError::Io)?;
        }
        socket
            .set_read_timeout(None)
            .and_then(|()| socket.set_write_timeout(None))
            .and_then(|()| socket.set_nonblocking(true))
            .map_err(HandshakeError::Io)?;
        let socket = mio::net::TcpStream::from_std(socket);
        Ok(TlsStream { tls, socket })
    }
}

/// How long a write waits for the socket to take the rest of what it encrypted.
const SEND_WAIT: Duration = Duration::from_secs(1);

/// A TLS session over a non-blocking socket, as amiquip's I/O thread uses a socket: it reads
/// until `WouldBlock` on each readable event and writes while it has bytes to send.
///
/// amiquip asks to hear of writability only while it holds unsent bytes. So `write` first
/// sends what an earlier call left encrypted in rustls, and answers `WouldBlock` (amiquip keeps
/// its bytes and waits for the socket) until that is out. Once it has taken and encrypted new
/// bytes, it waits for the socket (at most `SEND_WAIT`) until they are all out, since amiquip
/// may have nothing more to write that would push them. A broker that reads nothing for that
/// long gets the rest with the next read or write.
pub struct TlsStream {
    tls: ClientConnection,
    socket: mio::net::TcpStream,
}

impl TlsStream {
    /// Sends what rustls has encrypted; `WouldBlock` when the socket takes no more.
    fn send_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.socket)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// `send_pending` where a full socket is no error: the bytes wait for the next call.
    fn try_send_pending(&mut self) -> io::Result<()> {
        match self.send_pending() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_send_pending()?;
        loop {
            match self.tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Data, or the end the broker announced with close_notify.
                other => return other,
            }
            if self.tls.read_tls(&mut self.socket)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.tls.process_new_packets() {
                // The alert rustls prepared tells the broker why, if the socket takes it.
                let _ = self.try_send_pending();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Answers rustls owes the broker (a key update, an alert) go out with the next call.
            self.try_send_pending()?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_pending()?;
        let taken = self.tls.writer().write(buf)?;
        let deadline = Instant::now() + SEND_WAIT;
        loop {
            match self.send_pending() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
                Ok(()) => return Ok(taken),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !sys::wait_writable(self.socket.as_raw_fd(), left) {
                return Ok(taken);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

impl Source for TlsStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}

impl amiquip::IoStream for TlsStream {}
