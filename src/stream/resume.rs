//! Resuming after `Last-Event-ID`: of the deliveries a resumed stream gathers first, the
//! redeliveries (the previous connection's held tail, older) go before fresh messages, and the
//! redeliveries up to and including the client's last event are acked without being sent.
//!
//! Redeliveries can arrive after fresh ones: a stream on another server ends by cancelling its
//! consumer and only then closing its channel, which is what hands its held messages back.

/// What to do with the deliveries a resumed stream gathered.
#[derive(Debug, PartialEq, Eq)]
pub struct ResumePlan<T> {
    /// Already with the client: ack, don't send.
    pub skip: Vec<T>,
    /// Send, in this order.
    pub send: Vec<T>,
}

/// Splits `gathered` (in the order received) for a client whose last event is the one for
/// which `is_last` holds.
pub fn plan<T>(
    gathered: Vec<T>,
    redelivered: impl Fn(&T) -> bool,
    is_last: impl Fn(&T) -> bool,
) -> ResumePlan<T> {
    let (mut replayed, fresh): (Vec<T>, Vec<T>) = gathered.into_iter().partition(redelivered);
    let skip = match replayed.iter().position(is_last) {
        Some(position) => replayed.drain(..=position).collect(),
        None => Vec::new(),
    };
    replayed.extend(fresh);
    ResumePlan {
        skip,
        send: replayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (id, redelivered)
    fn run(gathered: &[(&str, bool)], last: &str) -> (Vec<String>, Vec<String>) {
        let plan = plan(gathered.to_vec(), |d| d.1, |d| d.0 == last);
        let ids = |v: Vec<(&str, bool)>| v.into_iter().map(|d| d.0.to_string()).collect();
        (ids(plan.skip), ids(plan.send))
    }

    #[test]
    fn what_the_client_has_is_skipped_and_the_rest_sent_in_order() {
        let (skip, send) = run(&[("1", true), ("2", true), ("3", true)], "2");
        assert_eq!(skip, ["1", "2"]);
        assert_eq!(send, ["3"]);
    }

    #[test]
    fn late_redeliveries_go_before_fresh_messages() {
        let (skip, send) = run(&[("4", false), ("1", true), ("2", true), ("5", false)], "1");
        assert_eq!(skip, ["1"]);
        assert_eq!(send, ["2", "4", "5"]);
    }

    #[test]
    fn an_unknown_last_id_skips_nothing() {
        let (skip, send) = run(&[("1", true), ("2", false)], "9");
        assert!(skip.is_empty());
        assert_eq!(send, ["1", "2"]);
    }

    #[test]
    fn a_fresh_message_with_the_last_id_is_not_taken_for_the_clients() {
        // Only redeliveries can be what the client already read.
        let (skip, send) = run(&[("1", false)], "1");
        assert!(skip.is_empty());
        assert_eq!(send, ["1"]);
    }
}
