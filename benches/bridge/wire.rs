//! The broker's own limit for one queue: a consumer that speaks just enough AMQP 0-9-1 to ask
//! for the queue with `no_ack`, then reads the socket in large reads and counts `basic.deliver`
//! frames, parsing nothing else. No client library's cost is in its rate: only the broker's and
//! the kernel's.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;

/// `host:port` of the test broker's URL (`amqp://user:pass@host:port/`).
fn broker_address() -> String {
    let url = std::env::var("EVENTSOURCED_TEST_AMQP").expect("EVENTSOURCED_TEST_AMQP");
    let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
    rest.trim_end_matches('/').to_string()
}

fn short(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// One method frame on `channel`: class, method, then its arguments.
fn method(channel: u16, class: u16, id: u16, arguments: &[u8]) -> Vec<u8> {
    let mut frame = vec![FRAME_METHOD];
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&(4 + arguments.len() as u32).to_be_bytes());
    frame.extend_from_slice(&class.to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(arguments);
    frame.push(FRAME_END);
    frame
}

/// Reads one whole frame: its type and payload.
fn read_frame(socket: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 7];
    socket.read_exact(&mut head)?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    socket.read_exact(&mut payload)?;
    payload.pop();
    Ok((head[0], payload))
}

/// Reads frames until the method `class.id` arrives.
fn expect(socket: &mut TcpStream, class: u16, id: u16) -> io::Result<Vec<u8>> {
    loop {
        let (kind, payload) = read_frame(socket)?;
        if kind == FRAME_METHOD && payload.len() >= 4 {
            let got = (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            );
            if got == (class, id) {
                return Ok(payload);
            }
            if got == (10, 50) || got == (20, 40) {
                return Err(io::Error::other(format!("the broker closed: {got:?}")));
            }
        }
    }
}

/// Consumes `count` messages of `queue` with no acks; the rate it read them at.
pub fn no_ack_rate(queue: &str, count: usize) -> io::Result<f64> {
    let mut socket = TcpStream::connect(broker_address())?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.write_all(b"AMQP\x00\x00\x09\x01")?;
    expect(&mut socket, 10, 10)?; // connection.start
    let mut start_ok = 0u32.to_be_bytes().to_vec(); // no client properties
    short(&mut start_ok, "PLAIN");
    long(&mut start_ok, b"\0guest\0guest");
    short(&mut start_ok, "en_US");
    socket.write_all(&method(0, 10, 11, &start_ok))?;
    let tune = expect(&mut socket, 10, 30)?;
    // tune-ok: the broker's channel_max, a frame_max of 128 KiB, no heartbeats.
    let mut tune_ok = tune.get(4..6).unwrap_or(&[0, 0]).to_vec();
    tune_ok.extend_from_slice(&131_072u32.to_be_bytes());
    tune_ok.extend_from_slice(&0u16.to_be_bytes());
    socket.write_all(&method(0, 10, 31, &tune_ok))?;
    let mut open = Vec::new();
    short(&mut open, "/");
    short(&mut open, "");
    open.push(0);
    socket.write_all(&method(0, 10, 40, &open))?;
    expect(&mut socket, 10, 41)?;
    socket.write_all(&method(1, 20, 10, &[0]))?;
    expect(&mut socket, 20, 11)?;
    let mut consume = 0u16.to_be_bytes().to_vec();
    short(&mut consume, queue);
    short(&mut consume, "");
    consume.push(0b0010); // no-local 0, no-ack 1, exclusive 0, no-wait 0
    consume.extend_from_slice(&0u32.to_be_bytes());
    let began = Instant::now();
    socket.write_all(&method(1, 60, 20, &consume))?;
    expect(&mut socket, 60, 21)?;

    // Frames from here on are walked in place: a deliver is a method frame starting 0x003C003C.
    let mut buffer = vec![0u8; 1 << 20];
    let (mut filled, mut at, mut delivered) = (0usize, 0usize, 0usize);
    while delivered < count && began.elapsed() < Duration::from_secs(120) {
        if filled - at < 7 || filled - at < 8 + frame_size(&buffer[at..]) {
            buffer.copy_within(at..filled, 0);
            filled -= at;
            at = 0;
            let read = socket.read(&mut buffer[filled..])?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += read;
            continue;
        }
        let size = frame_size(&buffer[at..]);
        if buffer[at] == FRAME_METHOD && buffer[at + 7..at + 11] == [0, 60, 0, 60] {
            delivered += 1;
        }
        at += 8 + size;
    }
    let rate = delivered as f64 / began.elapsed().as_secs_f64();
    let _ = socket.write_all(&method(0, 10, 50, &[0, 200, 0, 0, 0, 0, 0]));
    Ok(rate)
}

/// A frame's payload size, from its header (`buffer` holds at least 7 bytes).
fn frame_size(buffer: &[u8]) -> usize {
    if buffer.len() < 7 {
        return 0;
    }
    u32::from_be_bytes([buffer[3], buffer[4], buffer[5], buffer[6]]) as usize
}
