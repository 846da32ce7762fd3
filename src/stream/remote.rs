//! Following a stream another instance holds (`queue.conflict: share`, the queue consumed
//! elsewhere): this instance asks the holder, through the control exchange, to relay its stream
//! to a private queue (`relay`), writes what arrives to its client, and tells the relay how far
//! its client's TCP has acknowledged it.
//!
//! Its stream ends when the relay says so (the holder's stream ended: the browser comes back and
//! is served by whichever stream holds the queue then), when the relay goes silent for
//! `SILENCE`, or when the relay's queue is gone (a message to it comes back).

use crate::amqp::control;
use crate::http::sse;
use crate::http::{Client, RequestHead};
use crate::stream::relay;
use crate::stream::session::{self, End, StreamContext, FOREVER, SETTLE_INTERVAL};
use crate::stream::unacknowledged::Unacknowledged;
use crate::sys;
use amiquip::{AmqpProperties, Channel, ConsumerMessage, Delivery, Publish};
use crossbeam_channel::{select, Receiver};
use log::{debug, info, warn};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long the holder has to answer: an instance relays at once; a consumer that is not an
/// eventsourced instance never does (the request then asks it to let go, as `takeover` does).
const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// How long a relay that answered may take to start: its stream may be resuming.
const READY_WAIT: Duration = Duration::from_secs(6);
/// A relay silent for this long is taken for gone.
const SILENCE: Duration = Duration::from_secs(5);

/// Serves `client` from the stream that another instance holds for `queue`, when that instance
/// relays it; `false` (nothing sent to the client) when nobody answered, or the holder cannot
/// place the client's last event. With `declare`, the queue is declared and bound first, as on
/// every request (a refusal for a bad request value is sent then, and is `true`).
pub fn follow(
    client: &mut Client,
    head: &RequestHead,
    queue: &str,
    context: &StreamContext,
    declare: bool,
) -> bool {
    let lease = match context.broker.open_channel() {
        Ok(lease) => lease,
        Err(e) => {
            warn!("stream {queue:?}: following it on another instance: {e}");
            return false;
        }
    };
    if declare {
        let declared = lease
            .calls
            .during(|| session::declare(&lease.channel, queue, head, &context.settings));
        if let Err(refusal) = declared {
            let _ = lease.channel.close();
            context.responder.refuse(client, Some(head), refusal);
            return true;
        }
    }
    let last_event_id = context
        .settings
        .event_ids
        .then(|| head.last_event_id())
        .flatten();
    let user = lease.user.as_deref();
    let (served, keep) = ask_and_serve(&lease.channel, user, client, queue, last_event_id, context);
    if let Err(e) = lease.channel.close() {
        debug!("closing the following channel of {queue:?}: {e}");
    }
    drop(keep);
    served
}

/// What must outlive the channel: a consumer's receiver (see `session::serve` on amiquip's
/// cancel-ok) and the returns' (whose late messages amiquip would otherwise log).
type Keep = (
    Option<Receiver<ConsumerMessage>>,
    Option<Receiver<amiquip::Return>>,
);

fn ask_and_serve(
    channel: &Channel,
    user: Option<&str>,
    client: &mut Client,
    queue: &str,
    last_event_id: Option<String>,
    context: &StreamContext,
) -> (bool, Keep) {
    let failed = |e: amiquip::Error| {
        warn!("stream {queue:?}: following it on another instance: {e}");
        (false, (None, None))
    };
    let returned = match channel.listen_for_returns() {
        Ok(returned) => returned,
        Err(e) => return failed(e),
    };
    let (private, consumer) = match control::private_queue(channel) {
        Ok(private) => private,
        Err(e) => return failed(e),
    };
    let instance = context.broker.instance();
    let asked = control::ask_follow(
        channel,
        instance,
        user,
        queue,
        &private,
        last_event_id.as_deref(),
    );
    let served = match asked {
        Ok(()) => serve_relayed(
            channel,
            client,
            queue,
            last_event_id,
            context,
            &consumer,
            &returned,
            user,
        ),
        Err(e) => failed(e).0,
    };
    let keep = (Some(consumer.receiver().clone()), Some(returned));
    drop(consumer);
    (served, keep)
}

/// Waits for the relay's first message, then serves the client from it.
// What `ask_and_serve` set up, passed on as it is: bundling it would only rename it.
#[allow(clippy::too_many_arguments)]
fn serve_relayed(
    channel: &Channel,
    client: &mut Client,
    queue: &str,
    last_event_id: Option<String>,
    context: &StreamContext,
    consumer: &amiquip::Consumer<'_>,
    returned: &Receiver<amiquip::Return>,
    user: Option<&str>,
) -> bool {
    let asked = Instant::now();
    let mut deadline = asked + ANSWER_WAIT;
    let ours = |delivery: &Delivery| {
        user.is_none() || delivery.properties.user_id().as_ref().map(|s| s.as_str()) == user
    };
    let start = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.receiver().recv_timeout(left) {
            Ok(ConsumerMessage::Delivery(delivery)) if !ours(&delivery) => {}
            Ok(ConsumerMessage::Delivery(delivery)) if kind(&delivery) == Some(relay::START) => {
                break delivery;
            }
            // The holder cannot place the client's last event: the queue is taken over.
            Ok(ConsumerMessage::Delivery(delivery)) if kind(&delivery) == Some(relay::END) => {
                return false;
            }
            // The relay is there, waiting for its stream to be ready (a resume).
            Ok(ConsumerMessage::Delivery(_)) => deadline = asked + READY_WAIT,
            _ => return false,
        }
    };
    let Some(acks_to) = start.properties.reply_to().clone() else {
        return false;
    };
    let peer = client.peer;
    let started = Instant::now();
    info!(
        "stream {queue:?} opened for {peer}, following the stream another instance holds{}",
        session::resuming(last_event_id.as_deref())
    );
    let _open = context.metrics.followers.count();
    let watch = session::watch_hangups(context, client, queue);
    let never = crossbeam_channel::never();
    let gone = watch.as_ref().map_or(&never, |w| &w.gone);
    let mut stream = Remote {
        client,
        channel,
        user,
        acks_to: acks_to.to_string(),
        context,
        written: 0,
        delivered: 0,
        unacknowledged: Unacknowledged::default(),
    };
    let end = stream.run(&start, consumer.receiver(), returned, gone);
    let delivered = stream.delivered;
    drop(watch);
    client.finish(std::net::Shutdown::Both, !matches!(end, End::ClientGone(_)));
    info!(
        "stream {queue:?} closed for {peer} after {:.1} s and {delivered} messages: {end}",
        started.elapsed().as_secs_f32()
    );
    true
}

fn kind(delivery: &Delivery) -> Option<&str> {
    delivery.properties.kind().as_ref().map(|s| s.as_str())
}

/// The feed entry after a relayed message's last frame.
fn next_of(delivery: &Delivery) -> Option<u64> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str())?
        .parse()
        .ok()
}

struct Remote<'a> {
    client: &'a mut Client,
    channel: &'a Channel,
    /// The broker user of both instances, when known: messages from any other are not the
    /// relay's (RabbitMQ checks `user_id` against the publisher's login).
    user: Option<&'a str>,
    /// The relay's queue, for what the client's TCP has acknowledged.
    acks_to: String,
    context: &'a StreamContext,
    written: u64,
    delivered: u64,
    unacknowledged: Unacknowledged,
}

impl Remote<'_> {
    fn ours(&self, delivery: &Delivery) -> bool {
        self.user.is_none()
            || delivery.properties.user_id().as_ref().map(|s| s.as_str()) == self.user
    }

    fn run(
        &mut self,
        start: &Delivery,
        relayed: &Receiver<ConsumerMessage>,
        returned: &Receiver<amiquip::Return>,
        client_gone: &Receiver<()>,
    ) -> End {
        let head = session::opening(self.context);
        if let Err(e) = self.send(&head) {
            return End::ClientGone(e);
        }
        drop(head);
        if let Err(end) = self.write(start) {
            return end;
        }
        let keepalive = self.context.settings.keepalive.unwrap_or(FOREVER);
        let mut last_write = Instant::now();
        let mut heard = Instant::now();
        loop {
            let until_acknowledged = if self.unacknowledged.is_empty() {
                FOREVER
            } else {
                SETTLE_INTERVAL
            };
            let idle = keepalive
                .saturating_sub(last_write.elapsed())
                .min(until_acknowledged)
                .min(SILENCE.saturating_sub(heard.elapsed()));
            select! {
                recv(relayed) -> message => match message {
                    Ok(ConsumerMessage::Delivery(delivery)) if !self.ours(&delivery) => {}
                    Ok(ConsumerMessage::Delivery(delivery)) => {
                        heard = Instant::now();
                        match kind(&delivery) {
                            Some(relay::FRAMES) => {
                                if let Err(end) = self.write(&delivery) {
                                    return end;
                                }
                                last_write = Instant::now();
                            }
                            Some(relay::END) => return End::HolderEnded,
                            _ => {}
                        }
                    }
                    _ => return End::ChannelClosed("the relay's channel closed".into()),
                },
                recv(returned) -> _ => return End::HolderEnded,
                recv(self.context.shutdown) -> _ => return End::Shutdown,
                recv(client_gone) -> _ => return End::ClientGone(session::closed()),
                default(idle) => {
                    if heard.elapsed() >= SILENCE {
                        return End::HolderEnded;
                    }
                    if last_write.elapsed() >= keepalive {
                        let mut comment = Vec::new();
                        sse::push_comment(&mut comment, "keep-alive");
                        if let Err(e) = self.send(&comment) {
                            return End::ClientGone(e);
                        }
                        last_write = Instant::now();
                    }
                    if let Err(end) = self.acknowledge() {
                        return end;
                    }
                }
            }
        }
    }

    /// Writes a relayed message's frames.
    fn write(&mut self, delivery: &Delivery) -> Result<(), End> {
        let Some(after) = next_of(delivery) else {
            return Ok(());
        };
        if delivery.body.is_empty() {
            return Ok(());
        }
        self.send(&delivery.body).map_err(End::ClientGone)?;
        let frames = delivery
            .body
            .windows(2)
            .filter(|pair| pair == b"\n\n")
            .count() as u64;
        self.delivered += frames;
        self.context.metrics.record_deliveries(frames);
        self.unacknowledged.push(self.written, after);
        self.acknowledge()
    }

    /// Tells the relay how far the client's TCP has acknowledged what was written.
    fn acknowledge(&mut self) -> Result<(), End> {
        let received = self
            .written
            .saturating_sub(sys::unacknowledged_bytes(&self.client.socket));
        let upto = self.unacknowledged.acknowledged(received);
        let Some(upto) = upto else {
            return Ok(());
        };
        let body = upto.to_string();
        let mut properties = AmqpProperties::default();
        if let Some(user) = self.user {
            properties = properties.with_user_id(user.to_string().into());
        }
        let mut message =
            Publish::with_properties(body.as_bytes(), self.acks_to.clone(), properties);
        message.mandatory = true;
        self.channel
            .basic_publish("", message)
            .map_err(|e| End::ChannelClosed(e.to_string()))
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.written += self.client.send(bytes)?;
        self.context
            .metrics
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
