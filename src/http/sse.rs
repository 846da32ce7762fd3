//! Server-Sent Events framing: the one place that turns a message into the bytes a client reads.
//!
//! Byte for byte the original's: CRLF becomes LF, a lone CR is dropped, leading and trailing spaces
//! and newlines are trimmed, every line becomes `data: LINE\n`, and an empty line ends the event.

/// Sent first on every stream, so the client knows the stream is open before any message exists.
pub const BANNER: &[u8] = b": SSE stream\n\n";

/// What an event's id line starts with: its frame's first bytes when it has one.
pub const ID_FIELD: &[u8] = b"id: ";

/// What each line of a body starts with.
const DATA_FIELD: &[u8] = b"data: ";

/// One event: an optional `id:` and `event:` field, then the message body as `data:` lines.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub id: Option<&'a str>,
    pub event: Option<&'a str>,
    pub data: &'a [u8],
}

/// Appends `event` to `out`.
pub fn push_event(out: &mut Vec<u8>, event: &Event<'_>) {
    if let Some(id) = event.id {
        push_field(out, ID_FIELD, id.as_bytes());
    }
    if let Some(name) = event.event {
        push_field(out, b"event: ", name.as_bytes());
    }
    // Written straight into `out`, with no copy of the body: a frame per delivery, thousands a
    // second. CRLF becoming LF and a lone CR being dropped is every CR dropped; and as a CR is
    // either dropped or becomes a newline, trimming spaces, CRs and newlines from the raw body
    // leaves what trimming the normalised one would.
    out.extend_from_slice(DATA_FIELD);
    for &b in trim(event.data) {
        match b {
            b'\r' => {}
            b'\n' => {
                out.push(b'\n');
                out.extend_from_slice(DATA_FIELD);
            }
            b => out.push(b),
        }
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends a frame that sets the client's reconnection delay, in milliseconds.
pub fn push_retry(out: &mut Vec<u8>, millis: u32) {
    out.extend_from_slice(format!("retry: {millis}\n\n").as_bytes());
}

/// The event type of a gap: the client's `Last-Event-ID` names an event the server no longer
/// holds, so what came after it may be lost. A page handles it by reloading its state.
pub const GAP_EVENT: &str = "gap";

/// Appends the gap event: `event: gap`, an empty `id:` (so that the browser's next reconnect
/// names no event it was told is gone), and a line of text (an event without data is not
/// dispatched).
pub fn push_gap(out: &mut Vec<u8>) {
    push_field(out, b"event: ", GAP_EVENT.as_bytes());
    out.extend_from_slice(b"id\n");
    push_field(
        out,
        DATA_FIELD,
        b"the stream cannot resume after Last-Event-ID",
    );
    out.push(b'\n');
}

/// Appends a comment frame (`: text`), which clients ignore: used as a keep-alive.
pub fn push_comment(out: &mut Vec<u8>, text: &str) {
    push_field(out, b": ", text.as_bytes());
    out.push(b'\n');
}

/// A single-line field. Any CR or LF in the value would end the field early and let the rest
/// pose as another field, so they are left out.
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend(value.iter().filter(|&&b| b != b'\r' && b != b'\n'));
    out.push(b'\n');
}

fn trim(data: &[u8]) -> &[u8] {
    let is_trimmed = |b: &u8| matches!(b, b' ' | b'\n' | b'\r');
    let start = data
        .iter()
        .position(|b| !is_trimmed(b))
        .unwrap_or(data.len());
    let end = data
        .iter()
        .rposition(|b| !is_trimmed(b))
        .map_or(start, |i| i + 1);
    &data[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &[u8]) -> String {
        let mut out = Vec::new();
        push_event(
            &mut out,
            &Event {
                id: None,
                event: None,
                data,
            },
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_original_smoke_fixture_byte_for_byte() {
        let mut out = BANNER.to_vec();
        for body in [
            &b"{ do not touch whitespaces }"[..],
            b"{ in this fixture }",
            b"{ odd message\ndata: !\n :\n! }",
        ] {
            push_event(
                &mut out,
                &Event {
                    id: None,
                    event: None,
                    data: body,
                },
            );
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ": SSE stream\n\ndata: { do not touch whitespaces }\n\ndata: { in this fixture }\n\n\
             data: { odd message\ndata: data: !\ndata:  :\ndata: ! }\n\n"
        );
    }

    #[test]
    fn carriage_returns_and_edges() {
        assert_eq!(frame(b"a\r\nb\rc"), "data: a\ndata: bc\n\n");
        assert_eq!(frame(b" \n\r\n x \n "), "data: x\n\n");
        assert_eq!(frame(b"\ta\t"), "data: \ta\t\n\n");
        assert_eq!(frame(b""), "data: \n\n");
        assert_eq!(frame(b"a\n\nb"), "data: a\ndata: \ndata: b\n\n");
    }

    #[test]
    fn fields_cannot_smuggle_lines() {
        let mut out = Vec::new();
        let event = Event {
            id: Some("7\n\ndata: x"),
            event: Some("t\r\nid: 9"),
            data: b"m",
        };
        push_event(&mut out, &event);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 7data: x\nevent: tid: 9\ndata: m\n\n"
        );
    }

    #[test]
    fn comments_are_one_line() {
        let mut out = Vec::new();
        push_comment(&mut out, "keep-alive");
        assert_eq!(out, b": keep-alive\n\n");
    }
}
