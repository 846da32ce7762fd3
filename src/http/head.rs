//! Request heads (bounded in size; the reception thread bounds them in time) and the short
//! answers that close the connection.
//!
//! Owning the socket is what lets a stream end visibly (the client sees EOF), lets us set
//! timeouts and check whether the peer has gone, and keeps one thread per client.

use crate::clock::UtcTime;
use crate::http::query;
use crate::refusal::Refusal;
use std::fmt;

/// The largest request head we read; browsers send a few hundred bytes, cookies a few KiB.
pub const MAX_HEAD: usize = 16 * 1024;

/// The most header lines a head may have (browsers send about fifteen); more is `TooLarge`.
pub const MAX_HEADERS: usize = 64;

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

    /// The target as a log line may show it: the value of every query parameter named in
    /// `redact` (a signed URL's `token`) is `***`.
    pub fn loggable_target(&self, redact: &[String]) -> String {
        let Some((path, query)) = self.target.split_once('?') else {
            return self.target.clone();
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let (key, _) = pair.split_once('=').unwrap_or((pair, ""));
                let secret = query::form_decode(key)
                    .is_some_and(|k| redact.iter().any(|r| r.as_bytes() == k));
                if secret {
                    format!("{key}=***")
                } else {
                    pair.to_string()
                }
            })
            .collect();
        format!("{path}?{}", pairs.join("&"))
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
    /// The head exceeds `MAX_HEAD` bytes or `MAX_HEADERS` header lines.
    TooLarge,
    /// Not an HTTP/1.x request head; the text says what is wrong.
    Malformed(&'static str),
    /// The head did not arrive before the deadline.
    Timeout,
    /// The client closed before sending a whole head.
    Closed,
    /// Plain HTTP on an HTTPS listener.
    NotTls,
    Io(std::io::Error),
}

impl HttpError {
    /// The refusal to answer with; `None` when nobody is listening.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            HttpError::TooLarge => Some(Refusal::HeadTooLarge),
            HttpError::Malformed(why) => Some(Refusal::Malformed(why)),
            HttpError::Timeout => Some(Refusal::HeadTimeout),
            HttpError::NotTls => Some(Refusal::Malformed("this port speaks HTTPS")),
            HttpError::Closed | HttpError::Io(_) => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::TooLarge => write!(
                f,
                "request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers"
            ),
            HttpError::Malformed(why) => f.write_str(why),
            HttpError::Timeout => f.write_str("request head not received in time"),
            HttpError::Closed => f.write_str("client closed before sending a request"),
            HttpError::NotTls => f.write_str("plain HTTP sent to an HTTPS port"),
            HttpError::Io(e) => write!(f, "reading the request: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Parses a request head at the start of `buffer`: `Ok(None)` while it is incomplete.
///
/// httparse reads the request line and headers (CRLF or bare LF line ends, empty lines before
/// the request line skipped as RFC 9112 allows); our limits and stricter rules go around it.
pub fn parse_head(buffer: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let end = match request.parse(buffer) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
            return Err(HttpError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(refused(error, buffer)),
    };
    if end > MAX_HEAD {
        return Err(HttpError::TooLarge);
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Err(HttpError::Malformed("malformed request line"));
    };
    // httparse takes any token; every method we answer is an uppercase word.
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed("malformed method"));
    }
    // httparse refuses ASCII controls here; this catches the C1 controls of UTF-8 text too.
    if target.chars().any(char::is_control) {
        return Err(HttpError::Malformed(TARGET_CONTROL));
    }
    let target = origin_form(target).ok_or(HttpError::Malformed("malformed request target"))?;
    let mut headers = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::Malformed("request head is not UTF-8"))?;
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(HttpError::Malformed(HEADER_CONTROL));
        }
        headers.push((header.name.to_string(), value.trim().to_string()));
    }
    Ok(Some(RequestHead {
        method: method.to_string(),
        target,
        headers,
    }))
}

const TARGET_CONTROL: &str = "control character in the request target";
const HEADER_CONTROL: &str = "control character in a header";

/// Our answer to what httparse refused.
fn refused(error: httparse::Error, buffer: &[u8]) -> HttpError {
    HttpError::Malformed(match error {
        // More header lines than we keep room for: the head is too large, whatever its bytes
        // (431, as for one over MAX_HEAD), not malformed.
        httparse::Error::TooManyHeaders => return HttpError::TooLarge,
        httparse::Error::Token => request_line_fault(buffer),
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::HeaderName => "malformed header name",
        httparse::Error::HeaderValue => HEADER_CONTROL,
        httparse::Error::NewLine => "malformed line end",
        httparse::Error::Status => "malformed request line",
    })
}

/// What is wrong with a request line that httparse refused as an "invalid token".
fn request_line_fault(buffer: &[u8]) -> &'static str {
    let start = buffer
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buffer.len());
    let line = buffer[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    if method.is_empty() || !method.iter().all(u8::is_ascii_uppercase) {
        "malformed method"
    } else if target.iter().any(u8::is_ascii_control) {
        TARGET_CONTROL
    } else if std::str::from_utf8(target).is_err() {
        "request head is not UTF-8"
    } else {
        "malformed request line"
    }
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
    fn logged_targets_hide_secret_parameters() {
        let head = parse("GET /?id=q&expires=9&tok%65n=s3cret&token=x HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        let redact = ["token".to_string()];
        assert_eq!(
            head.loggable_target(&redact),
            "/?id=q&expires=9&tok%65n=***&token=***"
        );
        let plain = parse("GET /p HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(plain.loggable_target(&redact), "/p");
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

    fn refusal(bytes: &[u8]) -> Option<&'static str> {
        match parse_head(bytes) {
            Err(HttpError::Malformed(why)) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn says_what_is_wrong() {
        for (bad, why) in [
            ("get / HTTP/1.1\r\n\r\n", "malformed method"),
            ("G@T / HTTP/1.1\r\n\r\n", "malformed method"),
            ("GET / HTTP/2.0\r\n\r\n", "unsupported HTTP version"),
            ("HELLO\r\n\r\n", "malformed request line"),
            ("GET /\r\n\r\n", "malformed request line"),
            ("GET  / HTTP/1.1\r\n\r\n", "malformed request line"),
            ("GET x HTTP/1.1\r\n\r\n", "malformed request target"),
            (
                "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "malformed header name",
            ),
            ("GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", HEADER_CONTROL),
            ("GET / HTTP/1.1\r\nX: a\u{85}b\r\n\r\n", HEADER_CONTROL),
        ] {
            assert_eq!(refusal(bad.as_bytes()), Some(why), "{bad:?}");
        }
        for bad in [
            &b"GET /\xff HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
        ] {
            assert_eq!(refusal(bad), Some("request head is not UTF-8"), "{bad:?}");
        }
    }

    #[test]
    fn refuses_control_characters_in_the_target() {
        for control in ["\x1b", "\x7f", "\0", "\x01", "\t", "\r", "\u{85}", "\u{9b}"] {
            for target in [
                format!("/a{control}b"),
                format!("/a{control}"),
                format!("http://h/?id={control}"),
            ] {
                let text = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
                assert_eq!(refusal(text.as_bytes()), Some(TARGET_CONTROL), "{text:?}");
                // An ASCII control is refused as soon as it arrives, before the rest of the head
                // (a CR that may be a line end says only that the line is malformed).
                let start = format!("GET {target}");
                if control.is_ascii() && !start.ends_with('\r') {
                    assert_eq!(refusal(start.as_bytes()), Some(TARGET_CONTROL), "{start:?}");
                }
            }
        }
    }

    #[test]
    fn refuses_more_headers_than_it_keeps() {
        let head = |count: usize| {
            let headers: String = (0..count).map(|i| format!("X-{i}: {i}\r\n")).collect();
            format!("GET / HTTP/1.1\r\n{headers}\r\n")
        };
        let most = parse(&head(MAX_HEADERS)).unwrap().unwrap();
        assert_eq!(most.headers.len(), MAX_HEADERS);
        // One more is "too large" (431), as a head over MAX_HEAD bytes is, complete or not.
        assert!(matches!(
            parse(&head(MAX_HEADERS + 1)),
            Err(HttpError::TooLarge)
        ));
        let unfinished = head(MAX_HEADERS + 1);
        let unfinished = unfinished.strip_suffix("\r\n").unwrap_or_default();
        assert!(matches!(parse(unfinished), Err(HttpError::TooLarge)));
    }

    #[test]
    fn skips_empty_lines_before_the_request_line() {
        // RFC 9112 section 2.2: a server should ignore them.
        let head = parse("\r\n\nGET /p HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.target, "/p");
        assert!(parse("\r\n\r\n").unwrap().is_none());
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
