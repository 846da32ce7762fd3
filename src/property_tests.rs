//! Property tests over random input for the code that meets the outside world: the request-head
//! parser, request -> queue name, and message -> SSE frame. `make test` runs a few thousand cases;
//! `make fuzz` runs many more (`EVENTSOURCED_PROPERTY_CASES`).

use crate::http::head as http;
use crate::http::sse;
use crate::stream::pattern::{Pattern, RequestParts};

fn cases() -> u64 {
    std::env::var("EVENTSOURCED_PROPERTY_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// xorshift64*: small, seeded, reproducible.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Bytes biased towards what breaks parsers: separators, escapes, controls, UTF-8 pieces.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const INTERESTING: &[&[u8]] = &[
            b"%",
            b"%2",
            b"%41",
            b"%zz",
            b"%00",
            b"%FF",
            b"+",
            b"&",
            b"=",
            b";",
            b"\"",
            b"\\",
            b"\r",
            b"\n",
            b"\r\n",
            b" ",
            b"\t",
            b"\0",
            b"amq.",
            b"AMQ.",
            b":",
            b"${",
            b"}",
            "é".as_bytes(),
            &[0xff],
            &[0xc3],
            b"id",
            b"sid",
            b"data: ",
        ];
        let len = self.below(max + 1);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            if self.below(3) == 0 {
                out.extend_from_slice(INTERESTING[self.below(INTERESTING.len())]);
            } else {
                out.push(self.next() as u8);
            }
        }
        out
    }

    fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(&self.bytes(max)).to_string()
    }
}

#[test]
fn request_heads_parse_or_refuse_never_panic() {
    let mut random = Random::new(1);
    for _ in 0..cases() {
        let mut input = match random.below(3) {
            0 => b"GET /?id=".to_vec(),
            1 => b"GET / HTTP/1.1\r\n".to_vec(),
            _ => Vec::new(),
        };
        input.extend(random.bytes(200));
        if random.below(2) == 0 {
            input.extend_from_slice(b"\r\n\r\n");
        }
        if let Ok(Some(head)) = http::parse_head(&input) {
            assert!(
                head.method.bytes().all(|b| b.is_ascii_uppercase()),
                "{head:?}"
            );
            assert!(head.target.starts_with('/'), "{head:?}");
            for (name, value) in &head.headers {
                assert!(!name.is_empty() && !name.contains([' ', ':']), "{head:?}");
                assert!(
                    !value.chars().any(|c| c.is_control() && c != '\t'),
                    "{head:?}"
                );
            }
        }
    }
}

#[test]
fn every_queue_name_a_request_can_produce_is_safe() {
    let mut random = Random::new(2);
    let patterns = [
        Pattern::parse("${query:id}").unwrap(),
        Pattern::parse("q-${query:id}-${cookie:sid}").unwrap(),
        Pattern::parse("${header:X-User}.${query:id}").unwrap(),
    ];
    for _ in 0..cases() {
        let query = format!(
            "{}id={}&{}",
            random.text(20),
            random.text(300),
            random.text(10)
        );
        let cookie = format!("a=b; sid={}; {}", random.text(30), random.text(10));
        let user = random.text(30);
        let headers = [("Cookie".to_string(), cookie), ("X-User".to_string(), user)];
        for pattern in &patterns {
            let parts = RequestParts {
                query: &query,
                headers: &headers,
            };
            if let Ok(name) = pattern.resolve(&parts) {
                assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
                assert!(!name.chars().any(char::is_control), "{name:?}");
                assert!(!name.to_ascii_lowercase().starts_with("amq."), "{name:?}");
            }
        }
    }
}

#[test]
fn every_message_becomes_well_formed_frames() {
    let mut random = Random::new(3);
    for _ in 0..cases() {
        let body = random.bytes(300);
        let id = (random.below(2) == 0).then(|| random.text(20));
        let kind = (random.below(2) == 0).then(|| random.text(20));
        let mut out = Vec::new();
        let event = sse::Event {
            id: id.as_deref(),
            event: kind.as_deref(),
            data: &body,
        };
        sse::push_event(&mut out, &event);
        assert!(out.ends_with(b"\n\n"));
        assert!(!out.contains(&b'\r'));
        let frame = &out[..out.len() - 2];
        let mut lines = frame.split(|&b| b == b'\n').peekable();
        if id.is_some() {
            assert!(lines.next().is_some_and(|l| l.starts_with(b"id: ")));
        }
        if kind.is_some() {
            assert!(lines.next().is_some_and(|l| l.starts_with(b"event: ")));
        }
        let mut data = Vec::new();
        for (i, line) in lines.enumerate() {
            let rest = line.strip_prefix(b"data: ");
            assert!(
                rest.is_some(),
                "line without data: {:?}",
                String::from_utf8_lossy(line)
            );
            if i > 0 {
                data.push(b'\n');
            }
            data.extend_from_slice(rest.unwrap_or_default());
        }
        // What a browser reassembles is the body with CRs gone and its edges trimmed.
        let mut expected: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'\r' if body.get(i + 1) == Some(&b'\n') => {
                    expected.push(b'\n');
                    i += 1;
                }
                b'\r' => {}
                b => expected.push(b),
            }
            i += 1;
        }
        let edge = |b: &u8| *b == b' ' || *b == b'\n';
        let start = expected
            .iter()
            .position(|b| !edge(b))
            .unwrap_or(expected.len());
        let end = expected
            .iter()
            .rposition(|b| !edge(b))
            .map_or(start, |e| e + 1);
        assert_eq!(data, &expected[start..end]);
    }
}
