//! What the server answers: the short answers (204, 405, refusals, documents) and the head of an
//! event stream. Headers are rendered once at start.

use crate::clock::UtcTime;
use crate::http::head::{self, RequestHead};
use crate::http::sse;
use crate::http::Client;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use log::warn;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How far the delay a refused EventSource client is given is moved at random, in percent.
const RETRY_JITTER_PERCENT: u8 = 20;

pub struct Responder {
    metrics: Arc<Metrics>,
    /// Whether EventSource clients refused for a passing reason are told to come back.
    retry_refusals: bool,
    /// Request parameters whose values never reach a log line.
    redact: Vec<String>,
    cors: Vec<(String, String)>,
    /// The stream's status line and headers, without `Date` and the final empty line.
    stream_head: Vec<u8>,
}

impl Responder {
    /// `cors` goes on every answer; `sse` and `cors` together on an event stream's head. With
    /// `retry_refusals`, a passing refusal to a client that accepts an event stream is an event
    /// stream telling it when to come back (see `refuse`).
    pub fn new(
        cors: &BTreeMap<String, String>,
        sse: &BTreeMap<String, String>,
        retry_refusals: bool,
        redact: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Responder {
        // SSE headers first, then CORS, as the original sets them: CORS wins a name both have.
        let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
        merged.extend(sse.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        merged.extend(cors.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut stream_head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for (name, value) in merged {
            // The body ends when the connection closes, as Go's server does for
            // `Transfer-Encoding: identity`: that header itself is not sent (proxies refuse it).
            if ["transfer-encoding", "content-length", "connection"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                continue;
            }
            stream_head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        stream_head.extend_from_slice(b"Connection: close\r\n");
        Responder {
            metrics,
            retry_refusals,
            redact,
            cors: cors.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            stream_head,
        }
    }

    /// The bytes that open an event stream.
    pub fn stream_head(&self) -> Vec<u8> {
        let mut head = self.stream_head.clone();
        head.extend_from_slice(format!("Date: {}\r\n\r\n", UtcTime::now().http_date()).as_bytes());
        head
    }

    fn send(&self, client: &mut Client, status: u16, extra: &[(&str, &str)], body: &[u8]) {
        let mut headers: Vec<(&str, &str)> = self
            .cors
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.extend_from_slice(extra);
        client.send_and_close(&head::answer(status, &headers, body));
    }

    /// 204 to a CORS preflight.
    pub fn options(&self, client: &mut Client) {
        self.send(client, 204, &[], b"");
    }

    /// `METHOD target` for a log line, secrets hidden.
    pub fn describe(&self, head: &RequestHead) -> String {
        format!("{} {}", head.method, head.loggable_target(&self.redact))
    }

    /// 404: the operational documents on the public address when they have an address of
    /// their own, and anything but them on that address.
    pub fn not_found(&self, client: &mut Client) {
        self.send(client, 404, &[], b"");
    }

    /// 405 to any method but GET and OPTIONS.
    pub fn method_not_allowed(&self, client: &mut Client) {
        self.send(client, 405, &[], b"");
    }

    /// The one place a refusal is answered, logged and counted.
    ///
    /// A browser's EventSource gives up for good on any status but 200, whatever `Retry-After`
    /// says. So a client that accepts an event stream, refused for a reason that passes (a full
    /// pool, the broker away, the queue still held elsewhere), gets a `200 text/event-stream`
    /// that sets its reconnection delay (`retry:`), says why in a comment, and ends: the browser
    /// comes back after that delay, with its `Last-Event-ID`. Everything else gets the
    /// original's answer: the status, `X-Status-Reason`, and `Retry-After` when it passes.
    pub fn refuse(&self, client: &mut Client, request: Option<&RequestHead>, refusal: Refusal) {
        let what = request.map_or_else(|| "a request".to_string(), |head| self.describe(head));
        warn!("refused {what} from {}: {refusal}", client.peer);
        self.metrics.refused(refusal);
        let come_back = self.retry_refusals
            && refusal.passes()
            && request.is_some_and(RequestHead::accepts_event_stream);
        if let (true, Some(seconds)) = (come_back, refusal.retry_after()) {
            return self.come_back_later(client, refusal, seconds);
        }
        let retry = refusal.retry_after().map(|s| s.to_string());
        let mut extra = vec![("X-Status-Reason", refusal.reason())];
        if let Some(seconds) = &retry {
            extra.push(("Retry-After", seconds));
        }
        self.send(client, refusal.status(), &extra, b"");
    }

    /// `refuse` for a connection whose request has not arrived yet: it is taken for an
    /// EventSource (what this server's clients are), so that a browser comes back.
    pub fn refuse_unread(&self, client: &mut Client, refusal: Refusal) {
        match (self.retry_refusals, refusal.retry_after()) {
            (true, Some(seconds)) => {
                warn!("refused a connection from {}: {refusal}", client.peer);
                self.metrics.refused(refusal);
                self.come_back_later(client, refusal, seconds);
            }
            _ => self.refuse(client, None, refusal),
        }
    }

    /// An event stream that only tells the client when to come back, and why.
    fn come_back_later(&self, client: &mut Client, refusal: Refusal, seconds: u32) {
        let mut bytes = self.stream_head.clone();
        bytes.extend_from_slice(
            format!(
                "X-Status-Reason: {}\r\nDate: {}\r\n\r\n",
                refusal.reason(),
                UtcTime::now().http_date()
            )
            .as_bytes(),
        );
        // Moved at random, so that browsers refused together do not all come back together.
        let millis = crate::random::jitter(f64::from(seconds) * 1000.0, RETRY_JITTER_PERCENT);
        sse::push_retry(&mut bytes, millis.round() as u32);
        sse::push_comment(&mut bytes, refusal.reason());
        client.send_and_close(&bytes);
    }

    /// A plain document, such as `/metrics` or `/healthz`.
    pub fn document(&self, client: &mut Client, status: u16, content_type: &str, body: &str) {
        let ct = [("Content-Type", content_type)];
        client.send_and_close(&head::answer(status, &ct, body.as_bytes()));
    }
}
