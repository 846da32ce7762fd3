//! `eventsourced publish QUEUE [MESSAGE]`: a message into a client's queue, confirmed by the
//! broker before the command returns, for demos and scripts.

use crate::amqp::queue;
use crate::amqp::BrokerUrl;
use crate::cli::PublishArgs;
use crate::config::Config;
use amiquip::{AmqpProperties, ConnectionTuning, Publish};
use std::fmt;
use std::io::Read;

#[derive(Debug)]
pub enum PublishError {
    NoBroker,
    Stdin(std::io::Error),
    Amqp { broker: String, message: String },
    NotConfirmed(String),
    Tls(crate::tls::TlsError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::NoBroker => f.write_str("broker.node lists no broker"),
            PublishError::Stdin(e) => write!(f, "cannot read the message from standard input: {e}"),
            PublishError::Amqp { broker, message } => write!(f, "broker {broker}: {message}"),
            PublishError::Tls(e) => write!(f, "broker.tls: {e}"),
            PublishError::NotConfirmed(queue) => {
                write!(f, "the broker did not confirm the message to {queue:?}")
            }
        }
    }
}

impl std::error::Error for PublishError {}

pub fn publish(config: &Config, args: &PublishArgs) -> Result<(), PublishError> {
    let url: &BrokerUrl = config.broker.node.first().ok_or(PublishError::NoBroker)?;
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
    let amqp = |e: amiquip::Error| PublishError::Amqp {
        broker: url.to_string(),
        message: url.scrub(&e.to_string()),
    };
    let dial = crate::server::dial(&config.broker).map_err(PublishError::Tls)?;
    let mut connection = crate::amqp::broker::connect(url, &dial, ConnectionTuning::default())
        .map_err(|message| PublishError::Amqp {
            broker: url.to_string(),
            message,
        })?;
    let channel = connection.open_channel(None).map_err(amqp)?;
    queue::declare(
        &channel,
        &args.queue,
        &queue::arguments(
            &config.queue.arguments,
            queue::expires_ms(config.queue.expires),
        ),
    )
    .map_err(amqp)?;
    channel.enable_publisher_confirms().map_err(amqp)?;
    let confirms = channel.listen_for_publisher_confirms().map_err(amqp)?;
    let mut properties = AmqpProperties::default().with_delivery_mode(2);
    if let Some(id) = &args.id {
        properties = properties.with_message_id(id.clone());
    }
    if let Some(kind) = &args.kind {
        properties = properties.with_type_(kind.clone());
    }
    channel
        .basic_publish(
            "",
            Publish::with_properties(&body, args.queue.as_str(), properties),
        )
        .map_err(amqp)?;
    let confirmed = matches!(confirms.recv(), Ok(amiquip::Confirm::Ack(_)));
    let _ = connection.close();
    if !confirmed {
        return Err(PublishError::NotConfirmed(args.queue.clone()));
    }
    println!(
        "published {} bytes to queue {:?} on {}",
        body.len(),
        args.queue,
        url
    );
    Ok(())
}
