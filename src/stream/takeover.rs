//! Taking a queue from the stream that holds it on another instance (`takeover`, or `share`
//! when that instance relays nothing): asking it, through the broker, to let go, and waiting
//! until the queue has no consumer; for a quorum queue, until its lock (`amqp::holder`) is
//! free.

use crate::amqp::broker::{BrokerError, Calls, Lease};
use crate::amqp::{control, holder, queue};
use crate::refusal::Refusal;
use crate::stream::registry::Conflict;
use crate::stream::session::StreamContext;
use amiquip::{Channel, FieldTable};
use log::warn;
use std::time::{Duration, Instant};

/// How long a takeover waits for the old stream to hand its queue back.
pub(super) const TAKEOVER_WAIT: Duration = Duration::from_secs(2);
/// How often a takeover across instances looks whether the holder has let go.
pub(super) const TAKEOVER_POLL: Duration = Duration::from_millis(20);
/// How long a takeover of a locked queue waits before asking the holder again.
const ASK_AGAIN: Duration = Duration::from_millis(500);

/// Waits until `name` has no consumer (the holder has handed its messages back), at most until
/// `deadline`; with `instance`, asks the other instances, through the broker, to let go of it.
/// The queue is declared to count its consumers (with `arguments`, as every declaration): a
/// request waiting for a lock may find it not declared yet.
pub(super) fn no_consumer_left(
    channel: &Channel,
    calls: &Calls,
    name: &str,
    arguments: &FieldTable,
    instance: Option<&str>,
    deadline: Instant,
) -> Result<(), Refusal> {
    let failed = |e: amiquip::Error| {
        warn!("queue {name:?}: asking for a takeover failed: {e}");
        Refusal::BrokerFailed
    };
    let mut asked: Option<Instant> = None;
    loop {
        // Again every `ASK_AGAIN`: the word is not confirmed, and may be lost with a node.
        if let Some(instance) =
            instance.filter(|_| asked.is_none_or(|at| at.elapsed() >= ASK_AGAIN))
        {
            calls
                .during(|| control::ask_release(channel, instance, name))
                .map_err(failed)?;
            asked = Some(Instant::now());
        }
        if calls
            .during(|| queue::declare(channel, name, arguments))
            .map_err(failed)?
            == 0
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Refusal::QueueHeld);
        }
        std::thread::sleep(TAKEOVER_POLL);
    }
}

/// Takes the lock of `name` (see `amqp::holder`) and returns the channel that holds it. When
/// another instance holds it: `queue.conflict: reject` refuses; `takeover` asks the holder,
/// through the broker, to let go (again every `ASK_AGAIN`, as a word may be lost with a node),
/// waits until the queue has no consumer, and tries again, until `TAKEOVER_WAIT` has passed.
pub(super) fn hold(
    name: &str,
    context: &StreamContext,
    conflict: Conflict,
) -> Result<Lease, Refusal> {
    let unavailable = |e: BrokerError| {
        warn!("stream {name:?}: {e}");
        e.refusal()
    };
    let deadline = Instant::now() + TAKEOVER_WAIT;
    let mut asked: Option<Instant> = None;
    loop {
        let lease = context.broker.open_channel().map_err(unavailable)?;
        match lease.calls.during(|| holder::take(&lease.channel, name)) {
            Ok(()) => return Ok(lease),
            // The refusal closed that channel.
            Err(e) if holder::is_held(&e) => {}
            Err(e) => {
                warn!("queue {name:?}: taking its lock failed: {e}");
                return Err(Refusal::BrokerFailed);
            }
        }
        match conflict {
            Conflict::Reject => return Err(Refusal::QueueTaken),
            // Held on another instance, which relays the stream instead of letting go.
            Conflict::Share => return Err(Refusal::QueueHeld),
            Conflict::Takeover => {}
        }
        if Instant::now() >= deadline {
            return Err(Refusal::QueueHeld);
        }
        // The holder lets go of the lock as its stream ends: wait for that on a channel that
        // a taken lock does not close.
        let ask = asked.is_none_or(|at| at.elapsed() >= ASK_AGAIN);
        if ask {
            asked = Some(Instant::now());
        }
        let lease = context.broker.open_channel().map_err(unavailable)?;
        let instance = ask.then(|| context.broker.instance());
        no_consumer_left(
            &lease.channel,
            &lease.calls,
            name,
            &context.settings.arguments,
            instance,
            deadline,
        )?;
        std::thread::sleep(TAKEOVER_POLL);
    }
}
