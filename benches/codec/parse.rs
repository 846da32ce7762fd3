//! The AMQP frame parser alone: one delivery as RabbitMQ sends it (basic.deliver, a content
//! header with the properties a publisher sets, a 100-byte body) parsed again and again.
//! `scripts/bench-codec` builds this file twice, against the codec of an earlier commit and
//! against today's, and prints both: the same bytes, the same loop, the same machine.

use amq_protocol::frame::parse_frame;
use std::hint::black_box;
use std::time::Instant;

fn short(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
    out
}

/// basic.deliver, its content header and its body, as three frames on channel 7.
fn delivery() -> [Vec<u8>; 3] {
    let mut deliver = vec![0, 60, 0, 60];
    short(&mut deliver, "amq.ctag-3f9a1c2be4d54a7e8a1b2c3d4e5f6a7b");
    deliver.extend_from_slice(&123_456u64.to_be_bytes());
    deliver.push(0); // redelivered
    short(&mut deliver, "amq.topic");
    short(&mut deliver, "user.alice.orders");
    let body = [b'x'; 100];
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&(body.len() as u64).to_be_bytes());
    // content-type, headers, delivery-mode, message-id, timestamp, type, app-id
    let flags: u16 = (1 << 15) | (1 << 13) | (1 << 12) | (1 << 7) | (1 << 6) | (1 << 5) | (1 << 3);
    header.extend_from_slice(&flags.to_be_bytes());
    short(&mut header, "application/json");
    let mut table = Vec::new();
    short(&mut table, "trace");
    table.push(b'S');
    table.extend_from_slice(&16u32.to_be_bytes());
    table.extend_from_slice(b"0af7651916cd43dd");
    header.extend_from_slice(&(table.len() as u32).to_be_bytes());
    header.extend_from_slice(&table);
    header.push(2);
    short(&mut header, "order-2026-000123");
    header.extend_from_slice(&1_765_000_000u64.to_be_bytes());
    short(&mut header, "order.created");
    short(&mut header, "shop");
    [frame(1, 7, &deliver), frame(2, 7, &header), frame(3, 7, &body)]
}

fn main() {
    let frames = delivery();
    for f in &frames {
        let (rest, _) = parse_frame(&f[..]).expect("the codec parses the delivery");
        assert!(rest.is_empty());
    }
    let rounds = 3;
    let count = 300_000;
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let began = Instant::now();
        for _ in 0..count {
            for f in &frames {
                black_box(parse_frame(black_box(&f[..])).is_ok());
            }
        }
        best = best.min(began.elapsed().as_secs_f64() * 1e9 / count as f64);
    }
    println!("{best:.0}");
}
