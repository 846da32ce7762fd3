//! Every way a request can be turned down, in one enum: its status, the `X-Status-Reason` text
//! (the original's wording where it had one), `Retry-After`, the metric label, and whether the
//! condition passes (so that a browser must be told to come back rather than to give up).

use std::fmt;

/// Why a request was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A placeholder of `queue.pattern` has no value in the request.
    MissingParameter,
    /// The name is empty, over 255 bytes, reserved (`amq.`), or not clean UTF-8 text.
    InvalidQueueName,
    /// A request value holds what AMQP routing treats specially (`*`, `#`; `.` in a binding).
    Wildcard,
    /// `auth.secret` is set and the request carries no `expires` and `token`.
    TokenMissing,
    /// The token's `expires` has passed.
    TokenExpired,
    /// The token does not sign this queue and expiry with the secret.
    TokenInvalid,
    /// The token stays valid for longer than `auth.max_ttl` allows.
    TokenTooLong,
    /// Another stream holds the queue and `queue.conflict: reject` keeps it (the original's rule).
    QueueTaken,
    /// Another stream holds the queue and did not let go within the takeover wait.
    QueueHeld,
    /// Every worker is serving a stream.
    TooManyStreams,
    /// So many connections are waiting for their request head that no more are read.
    TooManyWaiting,
    /// SIGTERM with `server.drain`: open streams go on, new ones go elsewhere.
    Draining,
    /// No broker connection is up.
    BrokerUnavailable,
    /// Broker connections are up but none answers.
    BrokerNotAnswering,
    /// The broker refused or failed a call; the detail is logged, never sent.
    BrokerFailed,
    /// The request head is larger than the server reads.
    HeadTooLarge,
    /// The request head did not arrive in time.
    HeadTimeout,
    /// Not an HTTP/1.x request head; the text says what is wrong.
    Malformed(&'static str),
}

impl Refusal {
    /// The HTTP status of the refusal's plain answer.
    pub fn status(self) -> u16 {
        match self {
            Refusal::TokenMissing
            | Refusal::TokenExpired
            | Refusal::TokenInvalid
            | Refusal::TokenTooLong => 403,
            Refusal::HeadTooLarge => 431,
            Refusal::Wildcard => 400,
            Refusal::HeadTimeout => 408,
            Refusal::Malformed(_) => 400,
            // The original answers every other error 503, with its reason in a header.
            _ => 503,
        }
    }

    /// The `X-Status-Reason` text.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MissingParameter => "request parameter(s) missing",
            Refusal::InvalidQueueName => "invalid queue name",
            Refusal::Wildcard => "request value holds a routing wildcard",
            Refusal::TokenMissing => "auth: token missing",
            Refusal::TokenExpired => "auth: token expired",
            Refusal::TokenInvalid => "auth: token invalid",
            Refusal::TokenTooLong => "auth: token valid for too long",
            Refusal::QueueTaken | Refusal::QueueHeld => "server: max consumers exceeded",
            Refusal::TooManyStreams => "server: too many streams",
            Refusal::TooManyWaiting => "server: too many connections waiting",
            Refusal::Draining => "server: draining",
            Refusal::BrokerUnavailable => "broker: no connection available",
            Refusal::BrokerNotAnswering => "broker: not answering",
            Refusal::BrokerFailed => "broker: request failed",
            Refusal::HeadTooLarge => "request head too large",
            Refusal::HeadTimeout => "request not received in time",
            Refusal::Malformed(why) => why,
        }
    }

    /// Whether the condition passes by itself: the client should come back, not give up.
    pub fn passes(self) -> bool {
        matches!(
            self,
            Refusal::QueueHeld
                | Refusal::TooManyStreams
                | Refusal::TooManyWaiting
                | Refusal::Draining
                | Refusal::BrokerUnavailable
                | Refusal::BrokerNotAnswering
                | Refusal::BrokerFailed
        )
    }

    /// Seconds after which trying again makes sense (`Retry-After`), for passing conditions.
    pub fn retry_after(self) -> Option<u32> {
        self.passes().then_some(1)
    }

    /// The `reason` label of `eventsourced_refusals_total`: a fixed set, whatever the request.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "bad request",
            Refusal::QueueHeld => "queue held",
            other => other.reason(),
        }
    }

    /// Every refusal with a fixed label, for the metric's documentation and tests.
    pub const ALL: [Refusal; 18] = [
        Refusal::MissingParameter,
        Refusal::InvalidQueueName,
        Refusal::Wildcard,
        Refusal::TokenMissing,
        Refusal::TokenExpired,
        Refusal::TokenInvalid,
        Refusal::TokenTooLong,
        Refusal::QueueTaken,
        Refusal::QueueHeld,
        Refusal::TooManyStreams,
        Refusal::TooManyWaiting,
        Refusal::Draining,
        Refusal::BrokerUnavailable,
        Refusal::BrokerNotAnswering,
        Refusal::BrokerFailed,
        Refusal::HeadTooLarge,
        Refusal::HeadTimeout,
        Refusal::Malformed("bad request"),
    ];
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct() {
        let mut labels: Vec<&str> = Refusal::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }

    #[test]
    fn passing_conditions_say_when_to_come_back() {
        for refusal in Refusal::ALL {
            assert_eq!(
                refusal.retry_after().is_some(),
                refusal.passes(),
                "{refusal}"
            );
        }
        assert!(
            !Refusal::QueueTaken.passes(),
            "reject keeps the original's 503"
        );
        assert!(Refusal::QueueHeld.passes());
        assert_eq!(Refusal::TokenExpired.status(), 403);
        assert_eq!(Refusal::Malformed("x").reason(), "x");
    }
}
