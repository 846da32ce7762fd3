//! The private test broker as a test talks to it over AMQP: where it is, connections to it, and
//! a publisher that declares queues exactly as the server does.

use amiquip::{AmqpProperties, Channel, Connection, ConnectionTuning, Publish};
use eventsourced::amqp::{dial, queue, BrokerUrl};
use std::collections::BTreeMap;
use std::time::Duration;

/// The server's default `queue.expires`, in seconds: a queue declared here with any other
/// `x-expires` would be refused when the server declares it (PRECONDITION_FAILED).
const EXPIRES_SECS: u32 = 1800;

/// The broker `make test` started, e.g. `amqp://guest:guest@127.0.0.1:5673/`.
pub fn broker_url() -> String {
    std::env::var("EVENTSOURCED_TEST_AMQP").unwrap_or_else(|_| {
        panic!("EVENTSOURCED_TEST_AMQP is not set: run the integration tests with `make test`, which starts a private broker")
    })
}

/// The test broker's port on 127.0.0.1.
pub fn broker_port() -> u16 {
    BrokerUrl::parse(&broker_url())
        .expect("EVENTSOURCED_TEST_AMQP is a broker URL")
        .port()
}

/// A connection to the test broker, dialled as the server dials (with `TCP_NODELAY`).
pub fn amqp_connection() -> Connection {
    amqp_connection_to(broker_port()).expect("connect to the test broker")
}

/// A connection to the broker on 127.0.0.1:`port`, or why there is none.
pub fn amqp_connection_to(port: u16) -> Result<Connection, String> {
    let url = BrokerUrl::parse(&format!("amqp://guest:guest@127.0.0.1:{port}/"))
        .map_err(|e| e.to_string())?;
    // amiquip's own default heartbeat.
    let how = dial::Dial {
        heartbeat: 60,
        tls: None,
    };
    dial::connect(&url, &how, ConnectionTuning::default())
}

/// `queue.arguments` for quorum queues, as the environment of a server gives them.
pub const QUORUM: (&str, &str) = ("EVENTSOURCED_QUEUE_ARGUMENTS", "{x-queue-type: quorum}");

/// The declaration arguments of a quorum queue, as the server makes them from `QUORUM`.
pub fn quorum_arguments() -> amiquip::FieldTable {
    let configured = BTreeMap::from([(
        "x-queue-type".to_string(),
        queue::Argument::Text("quorum".into()),
    )]);
    queue::arguments(&configured, queue::expires_ms(EXPIRES_SECS))
}

/// A publisher on its own connection to the test broker.
pub struct Amqp {
    connection: Option<Connection>,
    channel: Option<Channel>,
    confirms: Option<crossbeam_channel::Receiver<amiquip::Confirm>>,
}

impl Amqp {
    pub fn connect() -> Amqp {
        Amqp::connect_to(broker_port()).expect("connect to the test broker")
    }

    /// A publisher on the broker at 127.0.0.1:`port`.
    pub fn connect_to(port: u16) -> Result<Amqp, String> {
        let mut connection = amqp_connection_to(port)?;
        let channel = connection.open_channel(None).map_err(|e| e.to_string())?;
        Ok(Amqp {
            connection: Some(connection),
            channel: Some(channel),
            confirms: None,
        })
    }

    /// A publisher whose messages are persistent and confirmed by the broker one by one.
    pub fn confirming(port: u16) -> Result<Amqp, String> {
        let mut amqp = Amqp::connect_to(port)?;
        let channel = amqp.channel();
        channel
            .enable_publisher_confirms()
            .map_err(|e| e.to_string())?;
        amqp.confirms = Some(
            channel
                .listen_for_publisher_confirms()
                .map_err(|e| e.to_string())?,
        );
        Ok(amqp)
    }

    /// Publishes a persistent message and waits for the broker's confirm.
    pub fn publish_confirmed(&self, queue: &str, body: &str) -> Result<(), String> {
        let properties = AmqpProperties::default().with_delivery_mode(2);
        self.channel()
            .basic_publish(
                "",
                Publish::with_properties(body.as_bytes(), queue, properties),
            )
            .map_err(|e| e.to_string())?;
        let confirms = self.confirms.as_ref().ok_or("not a confirming publisher")?;
        match confirms.recv_timeout(Duration::from_secs(5)) {
            Ok(amiquip::Confirm::Ack(_)) => Ok(()),
            other => Err(format!("not confirmed: {other:?}")),
        }
    }

    pub fn channel(&self) -> &Channel {
        self.channel.as_ref().expect("open channel")
    }

    /// Declares `queue` as the server does with the default settings (so messages wait in it).
    pub fn declare(&self, name: &str) {
        let arguments = queue::arguments(&BTreeMap::new(), queue::expires_ms(EXPIRES_SECS));
        queue::declare(self.channel(), name, &arguments).expect("declare the queue");
    }

    /// Declares `queue` as the server does with `queue.arguments: {x-queue-type: quorum}`.
    pub fn declare_quorum(&self, name: &str) {
        queue::declare(self.channel(), name, &quorum_arguments()).expect("declare the queue");
    }

    /// Publishes each of `bodies`, in order.
    pub fn publish_all(&self, queue: &str, bodies: &[String]) {
        for body in bodies {
            self.publish(queue, body);
        }
    }

    pub fn publish(&self, queue: &str, body: &str) {
        self.publish_with(queue, body.as_bytes(), AmqpProperties::default());
    }

    pub fn publish_with(&self, queue: &str, body: &[u8], properties: AmqpProperties) {
        self.channel()
            .basic_publish("", Publish::with_properties(body, queue, properties))
            .expect("publish");
    }

    /// Declares an exchange of `kind` (fanout, topic, direct), not durable.
    pub fn exchange(&self, name: &str, kind: amiquip::ExchangeType) {
        self.channel()
            .exchange_declare(kind, name, amiquip::ExchangeDeclareOptions::default())
            .expect("declare the exchange");
    }

    /// Publishes `body` to `exchange` with `routing_key`.
    pub fn publish_to(&self, exchange: &str, routing_key: &str, body: &str) {
        self.channel()
            .basic_publish(exchange, Publish::new(body.as_bytes(), routing_key))
            .expect("publish to the exchange");
    }

    /// Messages ready in `queue` (not delivered to any consumer).
    pub fn ready(&self, queue: &str) -> u32 {
        self.channel()
            .queue_declare_passive(queue)
            .expect("passive declare")
            .declared_message_count()
            .unwrap_or(0)
    }

    /// Consumers of `queue`.
    pub fn consumers(&self, queue: &str) -> u32 {
        self.channel()
            .queue_declare_passive(queue)
            .expect("passive declare")
            .declared_consumer_count()
            .unwrap_or(0)
    }

    pub fn delete(&self, queue: &str) {
        self.channel()
            .queue_delete(queue, amiquip::QueueDeleteOptions::default())
            .expect("delete the queue");
    }

    /// Takes every ready message of `queue` (acking them), returning their bodies.
    pub fn drain(&self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        while let Some(get) = self.channel().basic_get(queue, true).expect("basic.get") {
            bodies.push(String::from_utf8_lossy(&get.delivery.body).to_string());
        }
        bodies
    }
}

impl Drop for Amqp {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            let _ = channel.close();
        }
        if let Some(connection) = self.connection.take() {
            let _ = connection.close();
        }
    }
}
