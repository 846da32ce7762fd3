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
mod tests {
    use super::layers::{self, Reading};
    use super::*;
    use yaml_serde::Value;

    fn parse(text: &str) -> Result<Option<Layer>, ConfigError> {
        Layer::from_file(text, "test.yml")
    }

    /// Files, then variables, as `load` stacks them, without touching the process environment
    /// (which every test shares).
    fn stacked(files: &[&str], variables: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut layers = Vec::new();
        for text in files {
            layers.extend(parse(text)?);
        }
        layers.extend(Layer::from_environment(|name| {
            variables
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| value.to_string())
        })?);
        Config::from_layers(layers)
    }

    fn resolve(files: &[&str]) -> Config {
        stacked(files, &[]).unwrap()
    }

    fn from_environment(variables: &[(&str, &str)]) -> Config {
        stacked(&[], variables).unwrap()
    }

    fn error_of(text: &str) -> String {
        match parse(text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    fn environment_error(variables: &[(&str, &str)]) -> String {
        match stacked(&[], variables) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {variables:?}"),
        }
    }

    #[test]
    fn defaults_are_the_originals() {
        let config = resolve(&[]);
        assert_eq!(config.server.address, "0.0.0.0:2069");
        assert_eq!(config.broker.node.len(), 2);
        assert_eq!(config.queue.pattern.as_configured(), "${query:id}");
        assert_eq!(config.queue.expires, 1800);
        assert_eq!(config.header.cors["Access-Control-Allow-Origin"], "*");
        assert_eq!(config.header.sse["X-Accel-Buffering"], "no");
        assert_eq!(config.to_yaml(), Config::default().to_yaml());
        assert!(config.sources.is_empty());
    }

    #[test]
    fn later_files_win_and_header_maps_merge() {
        let config = resolve(&[
            "server: {address: '127.0.0.1:1'}\nqueue: {expire: 10}\nheader: {cors: {x-one: a}}",
            "queue: {expires: 20}\nheader: {cors: {X-Two: b}}",
        ]);
        assert_eq!(config.server.address, "127.0.0.1:1");
        assert_eq!(config.queue.expires, 20);
        assert_eq!(config.header.cors["X-One"], "a");
        assert_eq!(config.header.cors["X-Two"], "b");
        assert_eq!(
            config.header.cors["Access-Control-Allow-Methods"],
            "GET, OPTIONS"
        );
    }

    #[test]
    fn spellings_of_one_key_are_one_key_across_files() {
        let config = resolve(&[
            "queue: {expires: 10}\nheader: {sse: {x-foo: a}}",
            "queue: {expire: 20}\nheader: {sse: {X-FOO: b}}",
            "header: {sse: {x-foo: c, cache-control: no-store}}",
        ]);
        assert_eq!(config.queue.expires, 20);
        assert_eq!(config.header.sse["X-Foo"], "c");
        assert_eq!(config.header.sse["Cache-Control"], "no-store");
        assert_eq!(config.header.sse.len(), 5);
    }

    #[test]
    fn arguments_merge_key_by_key_and_lists_replace() {
        let config = resolve(&[
            "queue: {arguments: {x-queue-type: quorum}, bind: [{exchange: a}, {exchange: b}]}",
            "queue: {arguments: {x-max-length: 5}, bind: [{exchange: c}]}",
        ]);
        assert_eq!(config.queue.arguments.len(), 2);
        assert_eq!(config.queue.bind.len(), 1);
        assert_eq!(config.queue.bind[0].exchange.as_configured(), "c");
    }

    #[test]
    fn empty_and_comment_only_files_set_nothing() {
        assert!(parse("").is_ok());
        assert!(parse("# nothing\n\n").is_ok());
        assert!(parse("").unwrap().is_none());
        assert!(parse("# nothing\n\n").unwrap().is_none());
    }

    #[test]
    fn text_values_keep_their_spelling_whatever_yaml_makes_of_them() {
        let config = resolve(&[
            "header: {cors: {Access-Control-Max-Age: 600}}\nauth: {secret: 1.50}\nqueue: {pattern: 0x1F}",
        ]);
        assert_eq!(config.header.cors["Access-Control-Max-Age"], "600");
        assert_eq!(config.auth.key.as_deref(), Some(&b"1.50"[..]));
        assert_eq!(config.queue.pattern.as_configured(), "0x1F");
    }

    #[test]
    fn a_section_with_every_key_commented_out_sets_nothing() {
        let config = resolve(&["server:\n  # address: 127.0.0.1:1\nqueue:\n  expires: 5\n"]);
        assert_eq!(config.server.address, "0.0.0.0:2069");
        assert_eq!(config.queue.expires, 5);
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let message = error_of("server:\n  address: 0.0.0.0:1\n  adress: x\n");
        assert!(
            message.starts_with("test.yml: server: unknown field `adress`"),
            "{message}"
        );
        assert!(message.contains("line 3"), "{message}");
        let message = error_of("server: {}\nservre: {}\n");
        assert!(message.contains("unknown field `servre`"), "{message}");
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let message = error_of("queue:\n  pattern: ${query:id}\n  expires: soon\n");
        assert!(message.contains("queue.expires"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn invalid_broker_urls_are_refused_without_their_password() {
        let message =
            error_of("broker:\n  node:\n    - amqp://u:secret@h:5672/\n    - http://u:secret@h/\n");
        assert!(message.contains("broker.node[1]"), "{message}");
        assert!(message.contains("line 4"), "{message}");
        assert!(message.contains("\"http\""), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(error_of("queue: {expires: 0}").contains("queue.expires"));
        assert!(error_of("queue: {expires: 2147484}").contains("from 1 to 2147483"));
        assert!(error_of("queue: {pattern: '${path:x}'}").contains("queue.pattern"));
        assert!(error_of("server: {address: nowhere}").contains("HOST:PORT"));
        assert!(error_of("header: {sse: {'Bad Name': x}}").contains("header name"));
    }

    #[test]
    fn dump_round_trips() {
        let config = resolve(&["queue: {expire: 60}"]);
        let text = config.to_yaml();
        assert!(text.contains("expires: 60"), "{text}");
        let again = resolve(&[&text]);
        assert_eq!(again.to_yaml(), text);
    }

    #[test]
    fn bindings_and_arguments_are_read_and_dumped() {
        let config = resolve(&[
            "queue:\n  bind:\n    - {exchange: amq.topic, routing_key: 'user.${query:id}'}\n    - {exchange: news}\n  arguments: {x-queue-type: quorum, x-max-length: 1000}",
        ]);
        assert_eq!(config.queue.bind.len(), 2);
        assert_eq!(config.queue.bind[1].routing_key.as_configured(), "");
        assert_eq!(config.queue.arguments["x-max-length"], Argument::Int(1000));
        assert_eq!(
            config.queue.arguments["x-queue-type"],
            Argument::Text("quorum".into())
        );
        let text = config.to_yaml();
        assert!(text.contains("routing_key: user.${query:id}"), "{text}");
        let message = error_of("queue:\n  arguments:\n    x-nested: {a: 1}\n");
        assert!(message.contains("queue.arguments"), "{message}");
        assert!(error_of("queue: {bind: [{exchange: x, key: y}]}").contains("unknown field `key`"));
    }

    #[test]
    fn a_previous_secret_needs_a_secret_and_both_sign() {
        let error = stacked(&["auth: {previous_secret: old}"], &[]).unwrap_err();
        assert!(
            matches!(error, ConfigError::PreviousWithoutSecret { .. }),
            "{error}"
        );
        let config = resolve(&["auth: {secret: new, previous_secret: old, max_ttl: 60}"]);
        assert_eq!(config.auth.keys(), vec![b"new".to_vec(), b"old".to_vec()]);
        assert_eq!(config.auth.max_ttl, 60);
        let dump = config.to_yaml();
        assert!(!dump.contains("new") && !dump.contains("old"), "{dump}");
    }

    #[test]
    fn a_token_covers_every_binding_value_the_queue_name_does_not_fix() {
        let fixed = "queue: {pattern: 'u-${query:id}', bind: [{exchange: amq.topic, routing_key: 'user.${query:id}.#'}]}";
        assert!(resolve(&[fixed]).queue.signed_values().is_empty());
        let devices = "queue: {pattern: 'u-${query:user}-${query:device}', bind: [{exchange: amq.topic, routing_key: 'user.${query:user}'}, {exchange: 'x-${cookie:team}', routing_key: '${query:user}'}]}";
        assert_eq!(
            resolve(&[devices]).queue.signed_values(),
            ["cookie:team", "query:user"]
        );
    }

    #[test]
    fn the_secret_comes_from_the_config_or_a_file_never_both() {
        let config = resolve(&["auth: {secret: s3cret}"]);
        assert_eq!(config.auth.key.as_deref(), Some(&b"s3cret"[..]));
        let dir = std::env::temp_dir().join(format!("es-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let config = resolve(&[&format!("auth: {{secret_file: {}}}", dir.display())]);
        assert_eq!(config.auth.key.as_deref(), Some(&b"from-file"[..]));
        let both = stacked(
            &[&format!(
                "auth: {{secret: a, secret_file: {}}}",
                dir.display()
            )],
            &[],
        );
        assert!(matches!(both, Err(ConfigError::TwoSecrets { .. })));
        // Across layers the last one that names a secret decides, whichever form it uses.
        let file_then_variable = stacked(
            &[&format!("auth: {{secret_file: {}}}", dir.display())],
            &[("EVENTSOURCED_AUTH_SECRET", "from-variable")],
        )
        .unwrap();
        assert_eq!(
            file_then_variable.auth.key.as_deref(),
            Some(&b"from-variable"[..])
        );
        let both_variables = from_environment(&[
            ("EVENTSOURCED_AUTH_SECRET", "a"),
            ("EVENTSOURCED_AUTH_SECRET_FILE", &dir.display().to_string()),
        ]);
        assert_eq!(both_variables.auth.key.as_deref(), Some(&b"from-file"[..]));
        let kept = resolve(&["auth: {secret: s3cret}", "auth: {}\nserver: {retry: 1}"]);
        assert_eq!(kept.auth.key.as_deref(), Some(&b"s3cret"[..]));
        let _ = std::fs::remove_file(&dir);
        assert!(resolve(&[]).auth.key.is_none());
        assert!(!resolve(&[]).to_yaml().contains("auth"));
        assert!(matches!(
            stacked(&["auth: {secret: ''}"], &[]),
            Err(ConfigError::EmptySecret { .. })
        ));
    }

    #[test]
    fn retry_jitter_is_a_percentage() {
        assert!(error_of("server: {retry_jitter: 101}").contains("percentage"));
        assert_eq!(
            resolve(&["server: {retry: 3000, retry_jitter: 10}"])
                .server
                .retry,
            3000
        );
    }

    #[test]
    fn the_dist_file_sets_exactly_the_defaults() {
        let dist = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yml-dist"));
        let written: Value = yaml_serde::from_str(dist).unwrap();
        let defaults = layers::defaults();
        let keys = |value: &Value| -> Vec<(String, String)> {
            let mut keys = Vec::new();
            for (section, values) in value.as_mapping().unwrap() {
                for key in values.as_mapping().unwrap().keys() {
                    keys.push((
                        section.as_str().unwrap().to_string(),
                        key.as_str().unwrap().to_string(),
                    ));
                }
            }
            keys
        };
        for (section, key) in keys(&written) {
            assert_eq!(
                written[section.as_str()].get(&key),
                defaults[section.as_str()].get(&key),
                "config.yml-dist sets {section}.{key} to something other than the default"
            );
        }
        let shown = keys(&written);
        for (section, key) in keys(&defaults) {
            assert!(
                shown.contains(&(section.clone(), key.clone())),
                "config.yml-dist does not show {section}.{key}"
            );
        }
        assert_eq!(resolve(&[dist]).to_yaml(), Config::default().to_yaml());
    }

    #[test]
    fn every_key_has_its_variable_read_by_the_type_of_its_default() {
        let keys = layers::environment_keys();
        let reading = |section: &str, key: &str| {
            keys.iter()
                .find(|k| k.section == section && k.key == key)
                .map(|k| k.reading)
        };
        let dump: Value = yaml_serde::from_str(&Config::default().to_yaml()).unwrap();
        for (section, values) in dump.as_mapping().unwrap() {
            for (key, value) in values.as_mapping().unwrap() {
                let (section, key) = (section.as_str().unwrap(), key.as_str().unwrap());
                if key == "tls" {
                    for sub in value.as_mapping().unwrap().keys() {
                        let key = format!("tls.{}", sub.as_str().unwrap());
                        assert_eq!(reading(section, &key), Some(Reading::Text), "{key}");
                    }
                    continue;
                }
                assert!(reading(section, key).is_some(), "{section}.{key}");
            }
        }
        let config = from_environment(&[
            ("EVENTSOURCED_SERVER_TLS_CERT", "/etc/ssl/site.pem"),
            ("EVENTSOURCED_SERVER_TLS_KEY", "/etc/ssl/site.key"),
            ("EVENTSOURCED_BROKER_TLS_CA", "/etc/ssl/broker-ca.pem"),
        ]);
        assert_eq!(config.server.tls.cert, "/etc/ssl/site.pem");
        assert_eq!(config.server.tls.key, "/etc/ssl/site.key");
        assert_eq!(config.broker.tls.ca, "/etc/ssl/broker-ca.pem");
        let half = environment_error(&[("EVENTSOURCED_BROKER_TLS_CERT", "/c.pem")]);
        assert!(
            half.contains("broker.tls: cert and key go together"),
            "{half}"
        );
        for text in [
            ("server", "address"),
            ("queue", "pattern"),
            ("queue", "conflict"),
        ] {
            assert_eq!(reading(text.0, text.1), Some(Reading::Text), "{text:?}");
        }
        assert_eq!(reading("auth", "secret"), Some(Reading::Text));
        assert_eq!(reading("auth", "secret_file"), Some(Reading::Text));
        assert_eq!(reading("broker", "node"), Some(Reading::CommaList));
        assert_eq!(reading("server", "workers"), Some(Reading::Yaml));
        assert_eq!(reading("header", "cors"), Some(Reading::Yaml));
        assert_eq!(
            environment_variable("queue", "replay_bytes"),
            "EVENTSOURCED_QUEUE_REPLAY_BYTES"
        );
    }

    #[test]
    fn variables_set_text_numbers_booleans_lists_and_maps() {
        let config = stacked(
            &["queue: {arguments: {x-queue-type: quorum}}\nheader: {cors: {X-From-File: f}}"],
            &[
                ("EVENTSOURCED_SERVER_ADDRESS", "127.0.0.1:9"),
                ("EVENTSOURCED_QUEUE_PATTERN", "user.${header:X-User}"),
                ("EVENTSOURCED_QUEUE_CONFLICT", "reject"),
                ("EVENTSOURCED_SERVER_WORKERS", "8"),
                ("EVENTSOURCED_QUEUE_REPLAY_BYTES", "65536"),
                ("EVENTSOURCED_SERVER_EVENT_IDS", "false"),
                ("EVENTSOURCED_SERVER_RETRY_REFUSALS", "false"),
                ("EVENTSOURCED_QUEUE_BIND", "[{exchange: news}]"),
                (
                    "EVENTSOURCED_BROKER_NODE",
                    "amqp://a:b@one:5672/, amqp://two/",
                ),
                (
                    "EVENTSOURCED_HEADER_CORS",
                    "{access-control-allow-origin: 'https://app.example'}",
                ),
                ("EVENTSOURCED_QUEUE_ARGUMENTS", "{x-max-length: 2}"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.address, "127.0.0.1:9");
        assert_eq!(
            config.queue.pattern.as_configured(),
            "user.${header:X-User}"
        );
        assert_eq!(config.queue.conflict, Conflict::Reject);
        assert_eq!(config.server.workers, 8);
        assert_eq!(config.queue.replay_bytes, 65536);
        assert!(!config.server.event_ids);
        assert!(!config.server.retry_refusals);
        assert_eq!(config.queue.bind.len(), 1);
        let nodes: Vec<&str> = config
            .broker
            .node
            .iter()
            .map(|u| u.as_configured())
            .collect();
        assert_eq!(nodes, ["amqp://a:b@one:5672/", "amqp://two/"]);
        assert_eq!(
            config.header.cors["Access-Control-Allow-Origin"],
            "https://app.example"
        );
        assert_eq!(config.header.cors["X-From-File"], "f");
        assert_eq!(
            config.header.cors["Access-Control-Allow-Methods"],
            "GET, OPTIONS"
        );
        assert_eq!(config.queue.arguments.len(), 2);
        assert_eq!(config.sources.len(), 12);
        assert_eq!(
            config.sources[1],
            "environment variable EVENTSOURCED_SERVER_ADDRESS"
        );
    }

    #[test]
    fn text_variables_are_not_read_as_yaml() {
        // As YAML, `123` is a number and `[x]` a list: as a secret they are text.
        let config = from_environment(&[("EVENTSOURCED_AUTH_SECRET", "123")]);
        assert_eq!(config.auth.key.as_deref(), Some(&b"123"[..]));
        let config = from_environment(&[("EVENTSOURCED_AUTH_SECRET", "[x]")]);
        assert_eq!(config.auth.key.as_deref(), Some(&b"[x]"[..]));
    }

    #[test]
    fn an_empty_variable_sets_nothing() {
        let config = from_environment(&[("EVENTSOURCED_SERVER_WORKERS", "")]);
        assert_eq!(config.server.workers, 1024);
        assert!(config.sources.is_empty());
    }

    #[test]
    fn a_bad_variable_is_named() {
        let message = environment_error(&[("EVENTSOURCED_SERVER_WORKERS", "lots")]);
        assert!(
            message.starts_with("environment variable EVENTSOURCED_SERVER_WORKERS: "),
            "{message}"
        );
        let message = environment_error(&[("EVENTSOURCED_SERVER_WORKERS", "0")]);
        assert!(message.contains("from 1 to 100000"), "{message}");
        let message = environment_error(&[("EVENTSOURCED_SERVER_EVENT_IDS", "{a: [")]);
        assert!(
            message.starts_with("environment variable EVENTSOURCED_SERVER_EVENT_IDS: "),
            "{message}"
        );
        let message =
            environment_error(&[("EVENTSOURCED_BROKER_NODE", "amqp://h/,http://u:pw@h/")]);
        assert!(message.contains("EVENTSOURCED_BROKER_NODE"), "{message}");
        assert!(!message.contains("pw"), "{message}");
    }

    #[test]
    fn the_new_keys_have_their_defaults_checks_and_dump() {
        let config = Config::default();
        assert_eq!(config.queue.replay_window, 4096);
        assert_eq!(config.queue.replay_bytes, 4_194_304);
        assert_eq!(config.queue.replay_age, 120);
        assert!(config.server.retry_refusals);
        let text = config.to_yaml();
        for line in [
            "  replay_window: 4096\n",
            "  replay_bytes: 4194304\n",
            "  replay_age: 120\n",
            "  retry_refusals: true\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        let config = resolve(&[
            "queue: {replay_window: 0, replay_bytes: 0, replay_age: 0}\nserver: {retry_refusals: false}",
        ]);
        assert_eq!(config.queue.replay_window, 0);
        assert_eq!(config.queue.replay_bytes, 0);
        assert_eq!(config.queue.replay_age, 0);
        assert!(!config.server.retry_refusals);
        let message = error_of("queue:\n  replay_age: 86401\n");
        assert!(message.contains("queue.replay_age"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(error_of("queue: {replay_window: 65536}").contains("queue.replay_window"));
        assert!(error_of("queue: {replay_bytes: -1}").contains("queue.replay_bytes"));
        assert!(error_of("server: {retry_refusals: maybe}").contains("server.retry_refusals"));
    }

    #[test]
    fn prefetch_and_the_replay_window_must_fit_one_prefetch_count() {
        let fits = resolve(&["queue: {prefetch: 255, replay_window: 65280}"]);
        assert_eq!(fits.queue.prefetch, 255);
        let over = stacked(
            &["queue: {prefetch: 256}"],
            &[("EVENTSOURCED_QUEUE_REPLAY_WINDOW", "65280")],
        );
        let Err(error) = over else {
            panic!("accepted a prefetch count over 65535");
        };
        assert!(matches!(
            error,
            ConfigError::QosTooLarge {
                prefetch: 256,
                replay_window: 65280
            }
        ));
        let message = error.to_string();
        assert!(message.contains("queue.prefetch"), "{message}");
        assert!(message.contains("queue.replay_window"), "{message}");
        assert!(message.contains("65536"), "{message}");
    }
}
