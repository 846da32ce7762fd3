//! Property tests over random input for the code that meets the outside world: the request-head
//! parser, request -> queue name, and message -> SSE frame. proptest shrinks a failure to a
//! small case and saves its seed in `proptest-regressions/`, where later runs try it first.
//! `make test` runs a thousand cases of each; `make fuzz` many more (`PROPTEST_CASES`).

use crate::http::head as http;
use crate::http::sse;
use crate::stream::pattern::{Pattern, RequestParts};
use proptest::prelude::*;
use proptest::test_runner::{contextualize_config, FileFailurePersistence};

/// A thousand cases unless `PROPTEST_CASES` (or another `PROPTEST_*` variable) says otherwise.
fn config() -> ProptestConfig {
    contextualize_config(ProptestConfig {
        cases: 1_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })
}

/// Pieces of what breaks parsers: separators, escapes, controls, UTF-8 pieces.
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
    b"\x1b",
    b"\x7f",
    b"amq.",
    b"AMQ.",
    b":",
    b"${",
    b"}",
    "é".as_bytes(),
    "\u{85}".as_bytes(),
    &[0xff],
    &[0xc3],
    b"id",
    b"sid",
    b"data: ",
    b".",
    b"*",
    b"#",
    b"%23",
    b"%2A",
    b"%2e",
];

/// Up to about `max` bytes, a third of the pieces from `INTERESTING`.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        2 => any::<u8>().prop_map(|b| vec![b]),
        1 => prop::sample::select(INTERESTING).prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..=max).prop_map(|pieces| pieces.concat())
}

fn text(max: usize) -> impl Strategy<Value = String> {
    bytes(max).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Characters of well-formed text: visible ASCII and a few non-ASCII ones (no controls).
fn visible(max: usize) -> impl Strategy<Value = String> {
    let one = prop_oneof![
        8 => (0x21u8..=0x7e).prop_map(char::from),
        1 => prop::sample::select(vec!['é', '中', '😀', '\u{a0}']),
    ];
    prop::collection::vec(one, 0..=max).prop_map(String::from_iter)
}

/// A well-formed request head: its bytes as a client may send them, and what it parses to.
fn well_formed_head() -> impl Strategy<Value = (Vec<u8>, http::RequestHead)> {
    let token = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}";
    let value = (
        " {0,2}",
        visible(40),
        "[ \t]{0,2}",
        visible(10),
        "[ \t]{0,2}",
    );
    (
        "[A-Z]{1,10}",
        visible(60),
        prop::option::of("[a-z0-9.-]{1,20}(:[0-9]{1,5})?"),
        any::<bool>(),
        prop::collection::vec((token, value, any::<bool>()), 0..12),
        any::<bool>(),
    )
        .prop_map(|(method, path, host, v11, headers, crlf)| {
            let target = format!("/{path}");
            let sent_target = match &host {
                Some(host) => format!("http://{host}{target}"),
                None => target.clone(),
            };
            let end = |crlf: bool| if crlf { "\r\n" } else { "\n" };
            let version = if v11 { "HTTP/1.1" } else { "HTTP/1.0" };
            let mut text = format!("{method} {sent_target} {version}{}", end(crlf));
            let mut parsed = Vec::new();
            for (name, (lead, a, middle, b, trail), crlf) in headers {
                let value = format!("{a}{middle}{b}");
                text.push_str(&format!("{name}:{lead}{value}{trail}{}", end(crlf)));
                parsed.push((name, value.trim().to_string()));
            }
            text.push_str(end(crlf));
            let head = http::RequestHead {
                method,
                target,
                headers: parsed,
            };
            (text.into_bytes(), head)
        })
}

/// What the rest of the server may take for granted in a parsed head.
fn is_clean(head: &http::RequestHead) -> Result<(), TestCaseError> {
    prop_assert!(!head.method.is_empty(), "{:?}", head);
    prop_assert!(
        head.method.bytes().all(|b| b.is_ascii_uppercase()),
        "{:?}",
        head
    );
    prop_assert!(head.target.starts_with('/'), "{:?}", head);
    prop_assert!(!head.target.chars().any(char::is_control), "{:?}", head);
    for (name, value) in &head.headers {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        prop_assert!(!name.is_empty() && name.bytes().all(token), "{:?}", head);
        prop_assert!(
            !value.chars().any(|c| c.is_control() && c != '\t'),
            "{:?}",
            head
        );
        prop_assert_eq!(value.trim(), value);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_heads_parse_or_refuse_never_panic(
        start in prop::sample::select(vec![&b"GET /?id="[..], b"GET / HTTP/1.1\r\nX: ", b""]),
        middle in bytes(200),
        end in prop::sample::select(vec![&b" HTTP/1.1\r\n\r\n"[..], b"\r\n\r\n", b""]),
    ) {
        if let Ok(Some(head)) = http::parse_head(&[start, &middle, end].concat()) {
            is_clean(&head)?;
        }
    }

    #[test]
    fn damaged_heads_parse_or_refuse_never_panic(
        (bytes, _) in well_formed_head(),
        at in any::<prop::sample::Index>(),
        removed in 0..3usize,
        inserted in bytes(3),
    ) {
        // A well-formed head with a few bytes gone or changed reaches every check of the parser.
        let at = at.index(bytes.len() + 1);
        let rest = &bytes[(at + removed).min(bytes.len())..];
        let input = [&bytes[..at], &inserted, rest].concat();
        if let Ok(Some(head)) = http::parse_head(&input) {
            is_clean(&head)?;
        }
    }

    #[test]
    fn well_formed_heads_round_trip(
        (bytes, expected) in well_formed_head(),
        cut in any::<prop::sample::Index>(),
        after in bytes(50),
    ) {
        prop_assert_eq!(http::parse_head(&bytes).ok().flatten(), Some(expected.clone()));
        // What follows the head is not part of it.
        let more = [&bytes[..], &after].concat();
        prop_assert_eq!(http::parse_head(&more).ok().flatten(), Some(expected));
        // Any part of it is a head still arriving, neither a request nor an error.
        let part = &bytes[..cut.index(bytes.len())];
        prop_assert!(matches!(http::parse_head(part), Ok(None)), "{:?}", part);
    }

    #[test]
    fn every_queue_name_a_request_can_produce_is_safe(
        (before, id, after) in (text(20), text(300), text(10)),
        (sid, other) in (text(30), text(10)),
        user in text(30),
    ) {
        let patterns = [
            Pattern::parse("${query:id}").unwrap(),
            Pattern::parse("q-${query:id}-${cookie:sid}").unwrap(),
            Pattern::parse("${header:X-User}.${query:id}").unwrap(),
        ];
        let query = format!("{before}id={id}&{after}");
        let cookie = format!("a=b; sid={sid}; {other}");
        let headers = [("Cookie".to_string(), cookie), ("X-User".to_string(), user)];
        for pattern in &patterns {
            let parts = RequestParts {
                query: &query,
                headers: &headers,
            };
            if let Ok(name) = pattern.resolve(&parts) {
                prop_assert!(!name.is_empty() && name.len() <= 255, "{:?}", name);
                prop_assert!(!name.chars().any(char::is_control), "{:?}", name);
                prop_assert!(!name.to_ascii_lowercase().starts_with("amq."), "{:?}", name);
                prop_assert!(!name.contains(['*', '#']), "{:?}", name);
            }
        }
    }

    #[test]
    fn no_request_value_widens_a_binding(
        (before, id, after) in (text(20), text(60), text(10)),
        topic in text(20),
    ) {
        // The README's per-user topic binding, and one with a second value.
        let key = Pattern::parse("user.${query:id}").unwrap();
        let nested = Pattern::parse("user.${query:id}.${query:topic}").unwrap();
        let exchange = Pattern::parse("${query:id}.events").unwrap();
        let query = format!("{before}id={id}&topic={topic}&{after}");
        let parts = RequestParts {
            query: &query,
            headers: &[],
        };
        if let Ok(resolved) = key.resolve_binding(&parts) {
            // Two words, the second a literal user id: no wildcard, no extra word.
            let words: Vec<&str> = resolved.split('.').collect();
            prop_assert_eq!(words.len(), 2, "{:?}", resolved);
            prop_assert!(!resolved.contains(['*', '#']), "{:?}", resolved);
        }
        if let Ok(resolved) = nested.resolve_binding(&parts) {
            prop_assert_eq!(resolved.split('.').count(), 3, "{:?}", resolved);
            prop_assert!(!resolved.contains(['*', '#']), "{:?}", resolved);
        }
        if let Ok(resolved) = exchange.resolve_binding(&parts) {
            prop_assert!(!resolved.to_ascii_lowercase().starts_with("amq."), "{:?}", resolved);
        }
    }

    #[test]
    fn every_message_becomes_well_formed_frames(
        body in bytes(300),
        id in prop::option::of(text(20)),
        kind in prop::option::of(text(20)),
    ) {
        let mut out = Vec::new();
        let event = sse::Event {
            id: id.as_deref(),
            event: kind.as_deref(),
            data: &body,
        };
        sse::push_event(&mut out, &event);
        prop_assert!(out.ends_with(b"\n\n"));
        prop_assert!(!out.contains(&b'\r'));
        let frame = &out[..out.len() - 2];
        let mut lines = frame.split(|&b| b == b'\n').peekable();
        if id.is_some() {
            prop_assert!(lines.next().is_some_and(|l| l.starts_with(b"id: ")));
        }
        if kind.is_some() {
            prop_assert!(lines.next().is_some_and(|l| l.starts_with(b"event: ")));
        }
        let mut data = Vec::new();
        for (i, line) in lines.enumerate() {
            let rest = line.strip_prefix(b"data: ");
            prop_assert!(
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
        prop_assert_eq!(data, &expected[start..end]);
    }
}
