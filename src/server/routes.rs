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

/// The operational documents' paths.
const OPERATIONAL: [&str; 4] = ["/debug/vars", "/metrics", "/healthz", "/readyz"];

/// What every worker shares.
pub struct Routes {
    pub stream: StreamContext,
    pub pattern: Pattern,
    /// With `auth.secret`: what stream requests must be signed with.
    pub signing: Option<auth::Signing>,
    /// True when the operational documents have an address of their own.
    pub admin_apart: bool,
}

impl Handler for Routes {
    fn handle(&self, request: Request) {
        let Request { mut client, head } = request;
        let responder = &self.stream.responder;
        debug!("{} from {}", responder.describe(&head), client.peer);
        match head.method.as_str() {
            "GET" => {}
            "OPTIONS" => return responder.options(&mut client),
            _ => return responder.method_not_allowed(&mut client),
        }
        // With an admin address, it serves the operational documents and nothing else, and
        // the public address does not serve them.
        let operational = OPERATIONAL.contains(&head.path());
        if self.admin_apart && operational != client.admin {
            return responder.not_found(&mut client);
        }
        if operational {
            return self.operational(&mut client, &head);
        }
        match self.queue_of(&head) {
            Ok(queue) => {
                // Debug builds only: a queue named by this variable panics its worker, so the
                // tests can show that a panic ends one request and nothing else.
                #[cfg(debug_assertions)]
                if std::env::var("EVENTSOURCED_TEST_PANIC_QUEUE").is_ok_and(|q| q == queue) {
                    panic!("test panic for queue {queue:?}");
                }
                stream::serve(client, head, &queue, &self.stream)
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
    /// `/debug/vars`, `/metrics`, `/healthz`, `/readyz`.
    fn operational(&self, client: &mut Client, head: &RequestHead) {
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
            _ => responder.not_found(client),
        }
    }

    /// The queue a stream request names, or why it is refused.
    fn queue_of(&self, head: &RequestHead) -> Result<String, Refusal> {
        if self.stream.metrics.draining.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let queue = self.pattern.resolve(&RequestParts::of(head))?;
        if let Some(signing) = &self.signing {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            signing.check(&queue, head, now)?;
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
