//! Relaying a stream to a reader on another instance: when a request there finds the queue held
//! here (`control::Request::Follow`), a relay joins the holder's feed as one more follower and
//! publishes what it reads, as the frames' bytes, to that instance's private queue, where its
//! stream (`remote`) writes them to its client. That instance tells the relay, on a private
//! queue of the relay's, how far its client's TCP has acknowledged them: the relay's
//! acknowledgement is that, so the holder acks nothing the remote client may not have either.
//!
//! Every message the relay publishes is mandatory: one that comes back says the other
//! instance's queue (and so its stream) is gone, and the relay ends. It speaks at least every
//! `KEEPALIVE`, so that the other instance can take its silence for the end of the stream.

use crate::amqp::control::{self, FollowRequest};
use crate::http::sse;
use crate::stream::feed::{Feed, Follower, Read, Start};
use crate::stream::session::{StreamContext, RESUME_WAIT_MAX};
use amiquip::{AmqpProperties, Channel, ConsumerMessage, Publish};
use crossbeam_channel::select;
use log::{debug, info, warn};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The `type` of the first relayed message: its `reply_to` names the relay's queue.
pub const START: &str = "start";
/// Frames to write.
pub const FRAMES: &str = "frames";
/// Nothing new: the relay is still there.
pub const KEEPALIVE: &str = "keepalive";
/// The relayed stream ended.
pub const END: &str = "end";
/// How often the relay speaks at least.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// Relayed messages whose frames the other instance's client may not have yet, at most: its
/// consumer must never fill the in-memory channel of its connection (see `crates-notes`).
const IN_FLIGHT: usize = 4;

/// Relays the stream `feed` belongs to, as `request` asks, until either side ends.
pub fn run(feed: &Feed, request: &FollowRequest, context: &StreamContext) {
    let queue = &request.queue;
    let Some(following) = feed.follow() else {
        debug!("stream {queue:?} ended before it could be relayed");
        return;
    };
    let lease = match context.broker.open_channel() {
        Ok(lease) => lease,
        Err(e) => {
            warn!("relaying {queue:?} to another instance: {e}");
            return;
        }
    };
    info!("stream {queue:?} relayed to a reader on another instance");
    let _open = context.metrics.followers.count();
    let mut keep = Keep::default();
    let user = lease.user.as_deref();
    let end = relay(
        &lease.channel,
        user,
        &following,
        request,
        context,
        &mut keep,
    );
    info!("relay of {queue:?} to another instance ended: {end}");
    drop(following);
    if let Err(e) = lease.channel.close() {
        debug!("closing the relay channel of {queue:?}: {e}");
    }
    drop(keep);
}

/// What must outlive the channel: a consumer's receiver (see `session::serve` on amiquip's
/// cancel-ok) and the returns' (whose late messages amiquip would otherwise log).
#[derive(Default)]
struct Keep {
    _consumed: Option<crossbeam_channel::Receiver<ConsumerMessage>>,
    _returned: Option<crossbeam_channel::Receiver<amiquip::Return>>,
}

fn relay(
    channel: &Channel,
    user: Option<&str>,
    following: &Follower<'_>,
    request: &FollowRequest,
    context: &StreamContext,
    keep: &mut Keep,
) -> String {
    let failed = |e: amiquip::Error| format!("broker: {e}");
    let returned = match channel.listen_for_returns() {
        Ok(returned) => returned,
        Err(e) => return failed(e),
    };
    keep._returned = Some(returned.clone());
    let (acks, consumer) = match control::private_queue(channel) {
        Ok(private) => private,
        Err(e) => return failed(e),
    };
    keep._consumed = Some(consumer.receiver().clone());
    let deadline = Instant::now() + RESUME_WAIT_MAX + Duration::from_secs(2);
    let last = request.last_event_id.as_deref();
    let publish = |kind: &str, next: u64, body: &[u8], reply_to: Option<&str>| {
        let mut properties = AmqpProperties::default()
            .with_type(kind.to_string().into())
            .with_message_id(next.to_string().into());
        // Checked by the broker, and by the reader's instance: nobody else speaks for us.
        if let Some(user) = user {
            properties = properties.with_user_id(user.to_string().into());
        }
        if let Some(reply_to) = reply_to {
            properties = properties.with_reply_to(reply_to.to_string().into());
        }
        let mut message = Publish::with_properties(body, request.reply_to.clone(), properties);
        message.mandatory = true;
        channel.basic_publish("", message)
    };
    // At once: the reader's instance waits for the stream to be ready while it hears from us.
    if let Err(e) = publish(KEEPALIVE, 0, &[], None) {
        return failed(e);
    }
    let (mut next, gap) = match following.wait_start(last, deadline, &context.shutdown) {
        Some(Start::At { next, gap }) => (next, gap),
        // The reader's instance takes the queue over instead, and resumes from the broker.
        Some(Start::Takeover) => {
            let _ = publish(END, 0, &[], None);
            return "its reader's last event is not in the feed: it takes the queue over".into();
        }
        None => {
            let _ = publish(END, 0, &[], None);
            return "the relayed stream ended".into();
        }
    };
    let mut first = Vec::new();
    if gap {
        sse::push_gap(&mut first);
    }
    if let Err(e) = publish(START, next, &first, Some(&acks)) {
        return failed(e);
    }
    let batch_limit = usize::from(context.settings.prefetch).max(1);
    // Where each relayed message not yet acknowledged ends, in feed entries.
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut spoke = Instant::now();
    loop {
        if following.ended() {
            let _ = publish(END, next, &[], None);
            return "the relayed stream ended".into();
        }
        // Even while the feed keeps waking it, the reader's instance must hear from it.
        if spoke.elapsed() >= KEEPALIVE_EVERY {
            if let Err(e) = publish(KEEPALIVE, next, &[], None) {
                return failed(e);
            }
            spoke = Instant::now();
        }
        if in_flight.len() < IN_FLIGHT {
            let mut batch = Vec::new();
            match following.read(next, batch_limit, &mut batch) {
                Read::Frames { next: after, .. } => {
                    if let Err(e) = publish(FRAMES, after, &batch, None) {
                        return failed(e);
                    }
                    in_flight.push_back(after);
                    next = after;
                    spoke = Instant::now();
                    continue;
                }
                Read::Ended => {
                    let _ = publish(END, next, &[], None);
                    return "the relayed stream ended".into();
                }
                Read::Nothing => {}
            }
        }
        let quiet = KEEPALIVE_EVERY.saturating_sub(spoke.elapsed());
        select! {
            recv(following.woken) -> _ => {}
            recv(returned) -> _ => return "the reader's instance let go of it".into(),
            recv(context.shutdown) -> _ => {
                let _ = publish(END, next, &[], None);
                return "server shutting down".into();
            }
            recv(consumer.receiver()) -> message => match message {
                Ok(ConsumerMessage::Delivery(delivery)) => {
                    if user.is_some() && delivery.properties.user_id().as_ref().map(|s| s.as_str()) != user {
                        continue;
                    }
                    let acknowledged = std::str::from_utf8(&delivery.body)
                        .ok()
                        .and_then(|n| n.parse::<u64>().ok());
                    if let Some(upto) = acknowledged.filter(|&upto| upto <= next) {
                        following.acknowledge(upto);
                        while in_flight.front().is_some_and(|&end| end <= upto) {
                            in_flight.pop_front();
                        }
                    }
                }
                _ => return "its channel closed".into(),
            },
            default(quiet) => {
                if let Err(e) = publish(KEEPALIVE, next, &[], None) {
                    return failed(e);
                }
                spoke = Instant::now();
            }
        }
    }
}
