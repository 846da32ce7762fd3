//! Configuration: the defaults, then files, then environment variables, merged into one
//! validated `Config` that the rest of the program trusts.
//!
//! The structs below are the whole description: their `Default` is the defaults, their serde
//! derives are what a file may say (and what `-c` prints), and the environment variables are
//! derived from them. `layers` stacks what was read; `values` holds the checks on single values.

mod error;
mod layers;
mod values;

pub use crate::amqp::queue::Argument;
use crate::amqp::BrokerUrl;
pub use crate::stream::pattern::Binding;
use crate::stream::pattern::Pattern;
use crate::stream::registry::Conflict;
pub use error::ConfigError;
pub use layers::environment_variable;
use layers::Layer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
pub use values::canonical_header_name;

/// The files read when no `--config` is given, each merged over the ones before.
pub const SYSTEM_CONFIG: &str = "/etc/eventsourced/config.yml";

/// The validated configuration; serialised, it is the `-c` dump.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[serde(deserialize_with = "values::section")]
    pub server: ServerConfig,
    #[serde(deserialize_with = "values::section")]
    pub broker: BrokerConfig,
    #[serde(deserialize_with = "values::section")]
    pub queue: QueueConfig,
    #[serde(deserialize_with = "values::section")]
    pub header: HeaderConfig,
    #[serde(
        deserialize_with = "values::section",
        skip_serializing_if = "AuthConfig::is_unset"
    )]
    pub auth: AuthConfig,
    /// Where the values came from, in the order applied (for the start-up log).
    #[serde(skip)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to listen on.
    #[serde(deserialize_with = "values::address")]
    pub address: String,
    /// The most streams served at once; one worker thread each.
    #[serde(deserialize_with = "values::workers")]
    pub workers: usize,
    /// Seconds without a message after which a comment frame is sent; 0 sends none.
    pub keepalive: u64,
    /// Seconds a client may take to send its request head.
    #[serde(deserialize_with = "values::timeout_seconds")]
    pub request_timeout: u64,
    /// Seconds a write to a client may block before the client is dropped.
    #[serde(deserialize_with = "values::timeout_seconds")]
    pub write_timeout: u64,
    /// Whether frames carry `id:` (off: byte-exact frames of the original).
    pub event_ids: bool,
    /// Whether the AMQP `type` property becomes the frame's `event:` (off by default: a named
    /// event does not reach `onmessage` in browsers).
    pub event_types: bool,
    /// Milliseconds sent once as `retry:` at stream start; 0 sends none.
    pub retry: u32,
    /// Percent by which `retry` is moved at random, up or down, per stream.
    #[serde(deserialize_with = "values::percent")]
    pub retry_jitter: u8,
    /// Whether an EventSource client refused for a passing reason gets a 200 event stream that
    /// tells it to come back (a browser gives up on a 503 for good); off answers the original's
    /// 503.
    pub retry_refusals: bool,
    /// Seconds open streams are left running after SIGTERM while new ones are refused.
    pub drain: u64,
    /// Where `/metrics`, `/debug/vars`, `/healthz` and `/readyz` are served instead of on
    /// `address` (which then answers them 404); empty: on `address`.
    #[serde(deserialize_with = "values::optional_address")]
    pub admin_address: String,
    /// Request parameters whose values never reach a log line (signed URLs' `token`).
    pub redact: Vec<String>,
    /// HTTPS on `address` when a certificate and key are given.
    #[serde(deserialize_with = "values::section")]
    pub tls: ListenerTlsConfig,
}

/// The HTTPS listener's PEM files, re-read on SIGHUP; both empty: plain HTTP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// The certificate, then its chain.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl ListenerTlsConfig {
    /// The two files, when both are set.
    pub fn files(&self) -> Option<(PathBuf, PathBuf)> {
        (!self.cert.is_empty() && !self.key.is_empty())
            .then(|| (PathBuf::from(&self.cert), PathBuf::from(&self.key)))
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            address: "0.0.0.0:2069".into(),
            workers: 1024,
            keepalive: 15,
            request_timeout: 5,
            write_timeout: 30,
            event_ids: true,
            event_types: false,
            retry: 0,
            retry_jitter: 20,
            retry_refusals: true,
            drain: 0,
            admin_address: String::new(),
            redact: vec!["token".into()],
            tls: ListenerTlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub node: Vec<BrokerUrl>,
    /// AMQP heartbeat in seconds; a silent broker is declared dead after two of them.
    pub heartbeat: u16,
    /// For `amqps://` nodes: what their certificates are checked against, and this client's
    /// own certificate.
    #[serde(deserialize_with = "values::section")]
    pub tls: BrokerTlsConfig,
}

/// PEM files for `amqps://` nodes; empty: not set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerTlsConfig {
    /// The only CA a broker's certificate may lead to; empty: the system's store, else the
    /// built-in Mozilla roots.
    pub ca: String,
    /// A client certificate, for brokers that ask for one (`auth_mechanism=external`).
    pub cert: String,
    /// The client certificate's private key.
    pub key: String,
}

impl BrokerTlsConfig {
    fn path(value: &str) -> Option<PathBuf> {
        (!value.is_empty()).then(|| PathBuf::from(value))
    }

    pub fn ca(&self) -> Option<PathBuf> {
        Self::path(&self.ca)
    }

    pub fn cert(&self) -> Option<PathBuf> {
        Self::path(&self.cert)
    }

    pub fn key(&self) -> Option<PathBuf> {
        Self::path(&self.key)
    }
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        // The original lists the local node twice, and `-c` prints what it prints.
        let local = BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672/")
            .expect("the default broker URL is valid");
        BrokerConfig {
            node: vec![local.clone(), local],
            heartbeat: 10,
            tls: BrokerTlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    pub pattern: Pattern,
    /// Seconds a queue survives without a consumer. The seed README writes `expire`, the
    /// original's code reads `expires`: both are taken.
    #[serde(alias = "expire", deserialize_with = "values::expires")]
    pub expires: u32,
    /// Deliveries the broker may have in flight to one stream before it waits for acks.
    #[serde(deserialize_with = "values::prefetch")]
    pub prefetch: u16,
    /// Written deliveries held unacked at most per stream, until the client can be taken to
    /// have them.
    pub replay_window: u16,
    /// Bytes of frames held unacked at most per stream.
    pub replay_bytes: u64,
    /// Seconds after which a held delivery is acked, however few are held.
    #[serde(deserialize_with = "values::age_seconds")]
    pub replay_age: u64,
    /// What a request for a queue that is being streamed gets.
    pub conflict: Conflict,
    /// Bytes of the newest frames a stream keeps in memory for other readers of its queue
    /// (`conflict: share`): a reader whose last event is older gets the stream by a takeover.
    pub shared_bytes: usize,
    /// Exchanges the client's queue is bound to on every connect.
    pub bind: Vec<Binding>,
    /// Extra arguments of the queue declaration (`x-queue-type`, `x-max-length`, ...).
    pub arguments: BTreeMap<String, Argument>,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            pattern: Pattern::parse("${query:id}").expect("the default pattern is valid"),
            expires: 1800,
            prefetch: 256,
            replay_window: 4096,
            replay_bytes: 4 << 20,
            replay_age: 120,
            conflict: Conflict::Share,
            shared_bytes: 64 << 10,
            bind: Vec::new(),
            arguments: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderConfig {
    #[serde(deserialize_with = "values::headers")]
    pub cors: BTreeMap<String, String>,
    #[serde(deserialize_with = "values::headers")]
    pub sse: BTreeMap<String, String>,
}

impl Default for HeaderConfig {
    fn default() -> HeaderConfig {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|&(name, value)| (name.to_string(), value.to_string()))
                .collect()
        };
        HeaderConfig {
            cors: map(&[
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Methods", "GET, OPTIONS"),
                (
                    "Access-Control-Allow-Headers",
                    "Content-Type, Accept, Cache-Control",
                ),
            ]),
            sse: map(&[
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("Transfer-Encoding", "identity"),
                ("X-Accel-Buffering", "no"),
            ]),
        }
    }
}

/// Signed URLs: with a secret, every stream request must carry a valid token. Off by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The secret being replaced: tokens signed with it are still accepted while clients move
    /// over to the new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    /// The longest a token may still be valid when it is presented, in seconds; 0: no limit.
    pub max_ttl: u64,
    /// The secret in force: `secret`, or the contents of `secret_file`.
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
}

impl AuthConfig {
    fn is_unset(&self) -> bool {
        self.secret.is_none()
            && self.secret_file.is_none()
            && self.previous_secret.is_none()
            && self.max_ttl == 0
    }

    /// The keys a token may be signed with: the secret in force, then the previous one.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let previous = self.previous_secret.as_ref().map(|s| s.as_bytes().to_vec());
        self.key.iter().cloned().chain(previous).collect()
    }

    /// The secret in force, read from `secret_file` if that is how it is given.
    fn key(&self, sources: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let key = match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::TwoSecrets {
                    sources: sources.to_string(),
                })
            }
            (Some(secret), None) => Some(secret.as_bytes().to_vec()),
            (None, Some(path)) => {
                let text = std::fs::read(path).map_err(|error| ConfigError::Read {
                    path: path.clone(),
                    error,
                })?;
                // A trailing newline from `echo secret > file` is not part of the secret.
                let end = text
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(0, |i| i + 1);
                Some(text[..end].to_vec())
            }
            (None, None) => None,
        };
        if key.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::EmptySecret {
                sources: sources.to_string(),
            });
        }
        Ok(key)
    }
}

/// Where to read configuration from.
pub enum Search {
    /// `--config FILE`: exactly this file, which must exist.
    File(PathBuf),
    /// The original's order: the system file, then `config.yml` beside the executable.
    Default,
}

/// Reads the files and environment variables and returns the validated result.
pub fn load(search: Search) -> Result<Config, ConfigError> {
    let mut layers = layers::files(search)?;
    layers.extend(Layer::from_environment(|name| std::env::var(name).ok())?);
    Config::from_layers(layers)
}

impl Config {
    /// The effective configuration as YAML, in the original's layout (`-c`), with broker
    /// passwords and secrets shown as `***`: a dump gets pasted into tickets and chats.
    pub fn to_yaml(&self) -> String {
        let mut dump = match yaml_serde::to_value(self) {
            Ok(dump) => dump,
            Err(e) => return format!("# cannot print: {e}\n"),
        };
        dump["broker"]["node"] = self
            .broker
            .node
            .iter()
            .map(|url| yaml_serde::Value::String(url.to_string()))
            .collect::<Vec<_>>()
            .into();
        if let Some(auth) = dump.get_mut("auth").and_then(|a| a.as_mapping_mut()) {
            for key in ["secret", "previous_secret"] {
                if let Some(secret) = auth.get_mut(key) {
                    *secret = "***".into();
                }
            }
        }
        yaml_serde::to_string(&dump).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// The effective configuration as YAML with every secret as configured: a config file
    /// (`-c --show-secrets`).
    pub fn to_yaml_with_secrets(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// Every layer passed the checks on single values as it was read; what is left is what
    /// only the whole can break.
    fn from_layers(layers: Vec<Layer>) -> Result<Config, ConfigError> {
        let sources: Vec<String> = layers.iter().map(|layer| layer.source.clone()).collect();
        let joined = sources.join(", ");
        let mut config: Config =
            yaml_serde::from_value(layers::merged(layers)).map_err(|e| ConfigError::Invalid {
                source: joined.clone(),
                message: e.to_string(),
            })?;
        config.auth.key = config.auth.key(&joined)?;
        if config.auth.key.is_none() && config.auth.previous_secret.is_some() {
            return Err(ConfigError::PreviousWithoutSecret { sources: joined });
        }
        let server_tls = &config.server.tls;
        let broker_tls = &config.broker.tls;
        for (section, cert, key) in [
            ("server.tls", &server_tls.cert, &server_tls.key),
            ("broker.tls", &broker_tls.cert, &broker_tls.key),
        ] {
            if cert.is_empty() != key.is_empty() {
                return Err(ConfigError::HalfTls {
                    section,
                    sources: joined,
                });
            }
        }
        if let Some(name) = config.queue.arguments.keys().find(|name| name.len() > 255) {
            return Err(ConfigError::ArgumentNameTooLong {
                sources: joined,
                length: name.len(),
            });
        }
        let (prefetch, replay_window) = (config.queue.prefetch, config.queue.replay_window);
        if prefetch.checked_add(replay_window).is_none() {
            return Err(ConfigError::QosTooLarge {
                prefetch,
                replay_window,
            });
        }
        config.sources = sources;
        Ok(config)
    }
}

impl QueueConfig {
    /// The request values a signed URL's token covers besides the queue name: each placeholder
    /// of `queue.bind` whose value the name does not fix (the name fixes the value of a
    /// pattern's only placeholder), as `category:name`, sorted, once each. Without them a valid
    /// token could widen a binding.
    pub fn signed_values(&self) -> Vec<String> {
        let named = self.pattern.placeholders();
        let fixed = |p: &String| named.len() == 1 && *p == named[0];
        let mut values: Vec<String> = self
            .bind
            .iter()
            .flat_map(|b| [&b.exchange, &b.routing_key])
            .flat_map(|pattern| pattern.placeholders())
            .filter(|p| !fixed(p))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

#[cfg(test)]
mod tests;
