//! `eventsourced publish QUEUE [MESSAGE]`: a message into a client's queue, confirmed by the
//! broker before the command returns, for demos and scripts.
//!
//! A quorum queue in a leader election nacks a publish, and a channel whose first publish fell
//! in the election may be nacked for good while a new channel is acked at once (measured on
//! RabbitMQ 3.10). So a nacked or unconfirmed message is published again on a fresh channel,
//! and a connection that fails is replaced by one to the next `broker.node`: at most `ATTEMPTS`
//! times within `GIVE_UP_AFTER`. A message may then be stored twice (its first confirm lost),
//! never silently not at all.

use crate::amqp::queue;
use crate::amqp::BrokerUrl;
use crate::cli::PublishArgs;
use crate::config::Config;
use amiquip::{
    AmqpProperties, Confirm, Connection, ConnectionTuning, FieldTable, Publish, ShortString,
};
use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

/// Channels a message is published on at most.
const ATTEMPTS: u32 = 6;
/// Time after which no new attempt starts.
const GIVE_UP_AFTER: Duration = Duration::from_secs(20);
/// How long one attempt waits for the broker's confirm.
const CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// The pause before the second attempt, doubled for each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub enum PublishError {
    NoBroker,
    Stdin(std::io::Error),
    /// The broker refused the queue for good (its arguments differ, access denied).
    Refused {
        broker: String,
        message: String,
    },
    /// Every attempt failed; the last failure, and how many attempts over how long.
    NotConfirmed {
        queue: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    Tls(crate::tls::TlsError),
    /// A queue name, `--id` or `--type` over AMQP's 255 bytes for a short string.
    TooLong {
        what: &'static str,
        length: usize,
    },
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::NoBroker => f.write_str("broker.node lists no broker"),
            PublishError::Stdin(e) => write!(f, "cannot read the message from standard input: {e}"),
            PublishError::Refused { broker, message } => write!(f, "broker {broker}: {message}"),
            PublishError::Tls(e) => write!(f, "broker.tls: {e}"),
            PublishError::TooLong { what, length } => {
                write!(f, "the {what} is {length} bytes; AMQP allows 255")
            }
            PublishError::NotConfirmed {
                queue,
                attempts,
                elapsed,
                last,
            } => write!(
                f,
                "the broker did not confirm the message to {queue:?} after {attempts} attempts \
                 over {:.1} s (last: {last}); it may or may not have been stored",
                elapsed.as_secs_f32()
            ),
        }
    }
}

impl std::error::Error for PublishError {}

/// How one attempt failed.
enum Failure {
    /// The broker nacked the message: try a fresh channel.
    Nacked,
    /// No confirm in time: try a fresh channel.
    Unconfirmed,
    /// The channel failed: try a fresh one.
    Channel(String),
    /// The connection failed: try the next node.
    Connection(String),
    /// Trying again cannot help.
    Refused(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Nacked => f.write_str("nacked by the broker"),
            Failure::Unconfirmed => write!(f, "no confirm within {} s", CONFIRM_WAIT.as_secs()),
            Failure::Channel(e) | Failure::Connection(e) | Failure::Refused(e) => f.write_str(e),
        }
    }
}

/// What one attempt publishes.
struct Message<'a> {
    queue: &'a str,
    arguments: FieldTable,
    body: &'a [u8],
    properties: AmqpProperties,
}

pub fn publish(config: &Config, args: &PublishArgs) -> Result<(), PublishError> {
    let nodes: &[BrokerUrl] = &config.broker.node;
    if nodes.is_empty() {
        return Err(PublishError::NoBroker);
    }
    let body = match &args.message {
        Some(message) => message.clone().into_bytes(),
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(PublishError::Stdin)?;
            body
        }
    };
    let short = |what: &'static str, text: &str| {
        ShortString::try_new(text).map_err(|_| PublishError::TooLong {
            what,
            length: text.len(),
        })
    };
    short("queue name", &args.queue)?;
    let mut properties = AmqpProperties::default().with_delivery_mode(2);
    if let Some(id) = &args.id {
        properties = properties.with_message_id(short("--id", id)?);
    }
    if let Some(kind) = &args.kind {
        properties = properties.with_type(short("--type", kind)?);
    }
    let message = Message {
        queue: &args.queue,
        arguments: queue::arguments(
            &config.queue.arguments,
            queue::expires_ms(config.queue.expires),
        ),
        body: &body,
        properties,
    };
    let dial = crate::server::dial(&config.broker).map_err(PublishError::Tls)?;
    let started = Instant::now();
    let mut node = 0;
    let mut connection: Option<Connection> = None;
    let mut attempts = 0;
    let mut pause = FIRST_PAUSE;
    let last = loop {
        let url = &nodes[node % nodes.len()];
        attempts += 1;
        let failure = match connection.as_mut() {
            Some(connection) => publish_once(connection, url, &message),
            None => match crate::amqp::dial::connect(url, &dial, ConnectionTuning::default()) {
                Ok(opened) => publish_once(connection.insert(opened), url, &message),
                Err(e) => Err(Failure::Connection(e)),
            },
        };
        let failure = match failure {
            Ok(()) => {
                if let Some(connection) = connection.take() {
                    let _ = connection.close();
                }
                println!(
                    "published {} bytes to queue {:?} on {url}",
                    body.len(),
                    args.queue
                );
                return Ok(());
            }
            Err(Failure::Refused(message)) => {
                return Err(PublishError::Refused {
                    broker: url.to_string(),
                    message,
                })
            }
            Err(failure) => failure,
        };
        if let Failure::Connection(_) = failure {
            // Its I/O thread has ended or will; the next attempt dials the next node.
            drop(connection.take());
            node += 1;
        }
        let last = format!("{url}: {failure}");
        if attempts >= ATTEMPTS || started.elapsed() + pause >= GIVE_UP_AFTER {
            break last;
        }
        eprintln!(
            "publish: attempt {attempts} failed ({last}); trying again on a fresh channel in {} ms",
            pause.as_millis()
        );
        std::thread::sleep(pause);
        pause *= 2;
    };
    if let Some(connection) = connection.take() {
        let _ = connection.close();
    }
    Err(PublishError::NotConfirmed {
        queue: args.queue.clone(),
        attempts,
        elapsed: started.elapsed(),
        last,
    })
}

/// Publishes `message` on a new channel of `connection` and waits for the broker's confirm.
fn publish_once(
    connection: &mut Connection,
    url: &BrokerUrl,
    message: &Message,
) -> Result<(), Failure> {
    let failed = |e: amiquip::Error| {
        let text = url.scrub(&e.to_string());
        match e {
            // The queue exists with other arguments, or the user may not use it.
            amiquip::Error::ServerClosedChannel {
                code: 403 | 406, ..
            } => Failure::Refused(text),
            amiquip::Error::ServerClosedChannel { .. } => Failure::Channel(text),
            _ => Failure::Connection(text),
        }
    };
    let channel = connection.open_channel(None).map_err(failed)?;
    queue::declare(&channel, message.queue, &message.arguments).map_err(failed)?;
    channel.enable_publisher_confirms().map_err(failed)?;
    let confirms = channel.listen_for_publisher_confirms().map_err(failed)?;
    channel
        .basic_publish(
            "",
            Publish::with_properties(message.body, message.queue, message.properties.clone()),
        )
        .map_err(failed)?;
    let outcome = match confirms.recv_timeout(CONFIRM_WAIT) {
        Ok(Confirm::Ack(_)) => Ok(()),
        Ok(Confirm::Nack(_)) => Err(Failure::Nacked),
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Failure::Unconfirmed),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Failure::Channel(
            "the channel closed before a confirm".into(),
        )),
    };
    let _ = channel.close();
    outcome
}
