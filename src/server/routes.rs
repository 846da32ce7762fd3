//! Which answer a request gets: the operational documents, a refusal, or a stream. Everything
//! here decides; the stream layer serves.

use crate::amqp::Broker;
use crate::auth;
use crate::http::reception::Request;
use crate::http::{Client, RequestHead};
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::server::pool::Handler;
use crate::stream::pattern::{Pattern, RequestParts};
use crate::stream::{self, StreamContext};
use log::debug;
use std::sync::atomic::Ordering;

/// What every worker shares.
pub struct Routes {
    pub stream: StreamContext,
    pub pattern: Pattern,
    /// With `auth.secret`: the key stream requests must be signed with.
    pub auth_key: Option<Vec<u8>>,
}

impl Handler for Routes {
    fn handle(&self, request: Request) {
        let Request { mut client, head } = request;
        debug!("{} {} from {}", head.method, head.target, client.peer);
        let responder = &self.stream.responder;
        match head.method.as_str() {
            "GET" => {}
            "OPTIONS" => return responder.options(&mut client),
            _ => return responder.method_not_allowed(&mut client),
        }
        if self.operational(&mut client, &head) {
            return;
        }
        match self.queue_of(&head) {
            Ok(queue) => {
                // Debug builds only: a queue named by this variable panics its worker, so the
                // tests can show that a panic ends one request and nothing else.
                #[cfg(debug_assertions)]
                if std::env::var("EVENTSOURCED_TEST_PANIC_QUEUE").is_ok_and(|q| q == queue) {
                    panic!("test panic for queue {queue:?}");
                }
                stream::serve(client, &head, &queue, &self.stream)
            }
            Err(refusal) => responder.refuse(&mut client, Some(&head), refusal),
        }
    }

    fn refuse(&self, request: Request, refusal: Refusal) {
        let Request { mut client, head } = request;
        self.stream
            .responder
            .refuse(&mut client, Some(&head), refusal);
    }
}

impl Routes {
    /// `/debug/vars`, `/metrics`, `/healthz`, `/readyz`: true when `head` asked for one.
    fn operational(&self, client: &mut Client, head: &RequestHead) -> bool {
        let metrics: &Metrics = &self.stream.metrics;
        let responder = &self.stream.responder;
        match head.path() {
            "/debug/vars" => responder.document(
                client,
                200,
                "application/json; charset=utf-8",
                &metrics.debug_vars_json(),
            ),
            "/metrics" => responder.document(
                client,
                200,
                "text/plain; version=0.0.4",
                &metrics.prometheus_text(),
            ),
            "/healthz" => responder.document(client, 200, "text/plain", "ok\n"),
            "/readyz" => match readiness(metrics, &self.stream.broker) {
                Ok(()) => responder.document(client, 200, "text/plain", "ready\n"),
                Err(reason) => {
                    responder.document(client, 503, "text/plain", &format!("{reason}\n"))
                }
            },
            _ => return false,
        }
        true
    }

    /// The queue a stream request names, or why it is refused.
    fn queue_of(&self, head: &RequestHead) -> Result<String, Refusal> {
        if self.stream.metrics.draining.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let queue = self.pattern.resolve(&RequestParts::of(head))?;
        if let Some(key) = &self.auth_key {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            auth::check(key, &queue, head, now)?;
        }
        Ok(queue)
    }
}

fn readiness(metrics: &Metrics, broker: &Broker) -> Result<(), &'static str> {
    if metrics.draining.load(Ordering::Acquire) {
        return Err("server: draining");
    }
    broker.readiness()
}
