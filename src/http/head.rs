//! Request heads (bounded in size; the reception thread bounds them in time) and the short
//! answers that close the connection.
//!
//! Owning the socket is what lets a stream end visibly (the client sees EOF), lets us set
//! timeouts and check whether the peer has gone, and keeps one thread per client.

use crate::clock::UtcTime;
use crate::http::query;
use crate::refusal::Refusal;
use std::fmt;
use std::io::Write;
use std::net::TcpStream;

/// The largest request head we read; browsers send a few hundred bytes, cookies a few KiB.
pub const MAX_HEAD: usize = 16 * 1024;

/// A parsed request line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The path and query, as sent (`/?id=a%20b`); an absolute URI is reduced to this.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    /// The raw query string, between `?` and any `#`.
    pub fn query(&self) -> &str {
        self.target
            .split_once('?')
            .map_or("", |(_, q)| q.split('#').next().unwrap_or(""))
    }

    /// The first value of header `name`, of any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        query::header_value(&self.headers, name)
    }

    /// Whether the client takes an event stream as an answer: EventSource sends
    /// `Accept: text/event-stream`.
    pub fn accepts_event_stream(&self) -> bool {
        self.header("Accept")
            .is_some_and(|accept| accept.to_ascii_lowercase().contains("text/event-stream"))
    }

    /// The last event the client has: the `Last-Event-ID` header browsers send on reconnect, or
    /// the `lastEventId` query parameter EventSource polyfills send instead.
    pub fn last_event_id(&self) -> Option<String> {
        let from_query = || {
            query::query_value(self.query(), "lastEventId").and_then(|v| String::from_utf8(v).ok())
        };
        self.header("Last-Event-ID")
            .map(str::to_string)
            .or_else(from_query)
            .filter(|id| !id.is_empty())
    }
}

/// Why no request could be read. Each has the status a client is answered with, if any.
#[derive(Debug)]
pub enum HttpError {
    /// The head exceeds `MAX_HEAD`.
    TooLarge,
    /// Not an HTTP/1.x request head; the text says what is wrong.
    Malformed(&'static str),
    /// The head did not arrive before the deadline.
    Timeout,
    /// The client closed before sending a whole head.
    Closed,
    Io(std::io::Error),
}

impl HttpError {
    /// The refusal to answer with; `None` when nobody is listening.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            HttpError::TooLarge => Some(Refusal::HeadTooLarge),
            HttpError::Malformed(why) => Some(Refusal::Malformed(why)),
            HttpError::Timeout => Some(Refusal::HeadTimeout),
            HttpError::Closed | HttpError::Io(_) => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::TooLarge => write!(f, "request head over {MAX_HEAD} bytes"),
            HttpError::Malformed(why) => f.write_str(why),
            HttpError::Timeout => f.write_str("request head not received in time"),
            HttpError::Closed => f.write_str("client closed before sending a request"),
            HttpError::Io(e) => write!(f, "reading the request: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Parses a request head at the start of `buffer`: `Ok(None)` while it is incomplete.
pub fn parse_head(buffer: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let Some(end) = find_head_end(buffer) else {
        return if buffer.len() > MAX_HEAD {
            Err(HttpError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(HttpError::TooLarge);
    }
    let text = std::str::from_utf8(&buffer[..end])
        .map_err(|_| HttpError::Malformed("request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed("malformed method"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::Malformed("unsupported HTTP version"));
    }
    let target = origin_form(target).ok_or(HttpError::Malformed("malformed request target"))?;
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("malformed header"))?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(HttpError::Malformed("malformed header name"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(HttpError::Malformed("control character in a header"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some(RequestHead {
        method: method.to_string(),
        target,
        headers,
    }))
}

/// Index just past the empty line that ends the head (CRLF or bare LF line ends).
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = buffer[i..].iter().position(|&b| b == b'\n') {
        let at = i + offset;
        let rest = &buffer[at + 1..];
        if rest.starts_with(b"\n") {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

/// `/p?q` stays; `http://host/p?q` becomes `/p?q`; anything else is refused.
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_string());
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    let path = &rest[path_at..];
    Some(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// A complete short answer: status line, `headers`, `Date`, `Content-Length`,
/// `Connection: close`, then `body`.
pub fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", status_text(status)).into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "Date: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            UtcTime::now().http_date(),
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

/// Writes `bytes` and closes our side, so the client reads the answer and then EOF.
pub fn send_and_close(socket: &mut TcpStream, bytes: &[u8]) {
    if socket
        .write_all(bytes)
        .and_then(|()| socket.flush())
        .is_ok()
    {
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead>, HttpError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn reads_a_browser_request() {
        let head = parse("GET /events?id=a%20b HTTP/1.1\r\nHost: x\r\nCookie: sid=1\r\nLast-Event-ID:  7 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.path(), "/events");
        assert_eq!(head.query(), "id=a%20b");
        assert_eq!(head.headers[1], ("Cookie".to_string(), "sid=1".to_string()));
        assert_eq!(
            head.headers[2],
            ("Last-Event-ID".to_string(), "7".to_string())
        );
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(parse("GET / HTTP/1.0\n\n").unwrap().is_some());
    }

    #[test]
    fn absolute_targets_become_paths() {
        let head = parse("GET http://h:1/p?id=1 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.target, "/p?id=1");
        let head = parse("GET http://h?id=1 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.query(), "id=1");
    }

    #[test]
    fn refuses_what_is_not_http() {
        for bad in [
            "GET /\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET x HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HttpError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_head(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_oversized_heads() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&long), Err(HttpError::TooLarge)));
        assert!(matches!(
            parse(&format!("{long}\r\n")),
            Err(HttpError::TooLarge)
        ));
    }

    #[test]
    fn every_status_the_server_sends_has_its_phrase() {
        for status in [200, 204, 400, 403, 405, 408, 431, 503] {
            assert_ne!(status_text(status), "Unknown", "{status}");
        }
    }

    #[test]
    fn answers_close_the_connection() {
        let text = String::from_utf8(answer(503, &[("X-Status-Reason", "r")], b"")).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\nX-Status-Reason: r\r\nDate: ")
        );
        assert!(text.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"));
    }
}
