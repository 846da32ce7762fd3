//! Dialling a broker node: TCP, TLS for `amqps://`, the AMQP handshake; and the backoff between
//! dials that the broker's supervisors wait.

use crate::amqp::url::BrokerUrl;
use crate::tls::BrokerTls;
use amiquip::{Auth, Connection, ConnectionOptions, ConnectionTuning};
use std::net::ToSocketAddrs;
use std::time::Duration;

/// How long a TCP connect plus AMQP handshake may take before the dial counts as failed.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// How connections to brokers are opened: the heartbeat asked for, and TLS for `amqps://` nodes.
#[derive(Clone)]
pub struct Dial {
    pub heartbeat: u16,
    /// Set when any node is `amqps://`.
    pub tls: Option<BrokerTls>,
}

/// Opens an AMQP connection to `url`: TCP with a connect timeout and `TCP_NODELAY` (amiquip's
/// own dialling leaves Nagle on, which costs a delayed-ACK wait, about 40 ms, on each
/// synchronous AMQP method), TLS for `amqps://`, then the AMQP handshake. Errors never carry
/// the password.
pub fn connect(
    url: &BrokerUrl,
    dial: &Dial,
    tuning: ConnectionTuning,
) -> Result<Connection, String> {
    let timeout = Duration::from_millis(
        url.option("connection_timeout")
            .unwrap_or(CONNECT_TIMEOUT_MS),
    );
    let addresses = (url.host(), url.port())
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.address()))?;
    let mut last = format!("{} resolves to no address", url.address());
    for address in addresses {
        let socket = match std::net::TcpStream::connect_timeout(&address, timeout) {
            Ok(socket) => socket,
            Err(e) => {
                last = format!("cannot connect to {address}: {e}");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let mut options = ConnectionOptions::<Auth>::default()
            .virtual_host(url.vhost())
            .heartbeat(url.option("heartbeat").map_or(dial.heartbeat, |h| h as u16))
            .connection_timeout(Some(timeout));
        if url.external_auth() {
            options = options.auth(Auth::External);
        } else if let Some((username, password)) = url.credentials() {
            options = options.auth(Auth::Plain {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if let Some(channel_max) = url.option("channel_max") {
            options = options.channel_max(channel_max as u16);
        }
        let opened = if url.tls() {
            let tls = dial
                .tls
                .as_ref()
                .ok_or_else(|| format!("{}: TLS is not set up", url.address()))?;
            let stream = tls
                .handshake(socket, url.host(), timeout)
                .map_err(|e| format!("{}: {e}", url.address()))?;
            Connection::insecure_open_stream(stream, options, tuning)
        } else {
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            let socket = mio::net::TcpStream::from_std(socket);
            Connection::insecure_open_stream(socket, options, tuning)
        };
        return opened.map_err(|e| url.scrub(&e.to_string()));
    }
    Err(last)
}

/// 1 s doubling to 30 s, each delay moved by up to ±20 % so that many servers do not re-dial
/// a recovering broker in the same instant.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const LAST: Duration = Duration::from_secs(30);

    pub(super) fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::LAST);
        Duration::from_secs_f64(crate::random::jitter(base.as_secs_f64(), 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_thirty_seconds_with_jitter() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(
            delays[0] >= Duration::from_millis(800) && delays[0] <= Duration::from_millis(1200)
        );
        assert!(
            delays[1] >= Duration::from_millis(1600) && delays[1] <= Duration::from_millis(2400)
        );
        for d in &delays[5..] {
            assert!(
                *d >= Duration::from_secs(24) && *d <= Duration::from_secs(36),
                "{d:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(1200));
    }
}
