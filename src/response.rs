//! HTTP answers: the short ones through tiny_http, and the head of an event stream, which we
//! write ourselves so that every frame after it can be flushed on its own.

use crate::clock::Civil;
use crate::config::HeaderConfig;
use log::warn;
use std::collections::BTreeMap;
use tiny_http::{Header, Request, Response, StatusCode};

/// Headers sent on every answer, rendered once at start.
pub struct Answers {
    cors: Vec<Header>,
    /// The stream's status line and headers, without `Date` and the final empty line.
    stream_head: Vec<u8>,
}

/// Why a stream request was turned down.
pub struct Refusal<'a> {
    pub reason: &'a str,
    /// Seconds after which trying again makes sense (`Retry-After`), for passing conditions.
    pub retry_after: Option<u32>,
}

impl Answers {
    pub fn new(headers: &HeaderConfig) -> Answers {
        let cors = headers
            .cors
            .iter()
            .filter_map(|(name, value)| Header::from_bytes(name.as_bytes(), value.as_bytes()).ok())
            .collect();
        // SSE headers first, then CORS, as the original sets them: CORS wins a name both have.
        let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
        merged.extend(headers.sse.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        merged.extend(headers.cors.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut stream_head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for (name, value) in merged {
            // The body ends when the connection closes, as Go's server does for
            // `Transfer-Encoding: identity`: the header itself is not sent (proxies refuse it).
            if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("connection")
            {
                continue;
            }
            stream_head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        stream_head.extend_from_slice(b"Connection: close\r\n");
        Answers { cors, stream_head }
    }

    /// The bytes that open an event stream.
    pub fn stream_head(&self) -> Vec<u8> {
        let mut head = self.stream_head.clone();
        head.extend_from_slice(format!("Date: {}\r\n\r\n", Civil::now().http_date()).as_bytes());
        head
    }

    fn with_cors(&self, mut response: Response<std::io::Empty>) -> Response<std::io::Empty> {
        for header in &self.cors {
            response.add_header(header.clone());
        }
        response
    }

    /// 204 to a CORS preflight.
    pub fn options(&self, request: Request) {
        let _ = request.respond(self.with_cors(Response::empty(StatusCode(204))));
    }

    /// 405 to any method but GET and OPTIONS.
    pub fn method_not_allowed(&self, request: Request) {
        let _ = request.respond(self.with_cors(Response::empty(StatusCode(405))));
    }

    /// 503 with the reason in `X-Status-Reason`, logged: the one place a refusal is answered.
    pub fn refuse(&self, request: Request, refusal: &Refusal<'_>) {
        warn!(
            "refused {} {} from {}: {}",
            request.method(),
            request.url(),
            peer(&request),
            refusal.reason
        );
        let mut response = self.with_cors(Response::empty(StatusCode(503)));
        if let Ok(h) = Header::from_bytes(&b"X-Status-Reason"[..], refusal.reason.as_bytes()) {
            response.add_header(h);
        }
        if let Some(seconds) = refusal.retry_after {
            if let Ok(h) = Header::from_bytes(&b"Retry-After"[..], seconds.to_string().as_bytes()) {
                response.add_header(h);
            }
        }
        let _ = request.respond(response);
    }

    /// 200 with a JSON document.
    pub fn json(&self, request: Request, body: String) {
        let mut response = Response::from_string(body);
        if let Ok(h) = Header::from_bytes(
            &b"Content-Type"[..],
            &b"application/json; charset=utf-8"[..],
        ) {
            response.add_header(h);
        }
        let _ = request.respond(response);
    }
}

/// The client's address, for logs.
pub fn peer(request: &Request) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), ToString::to_string)
}
