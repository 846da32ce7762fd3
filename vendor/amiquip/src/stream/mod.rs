use mio::event::Source;
use mio::net::TcpStream;
use std::io::{Read, Write};

/// Combination trait for readable, writable streams that can be polled by mio (a TLS session
/// over a socket, say: the I/O thread registers it for readiness and reads and writes it).
pub trait IoStream: Read + Write + Source + Send + 'static {}

impl IoStream for TcpStream {}
