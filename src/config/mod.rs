//! Configuration: files, then environment variables, merged over the defaults into one validated
//! `Config` that the rest of the program trusts.
//!
//! Every check runs while a file is read, so a refusal names the file, the key and the line.

pub use crate::amqp::queue::Argument;
use crate::amqp::BrokerUrl;
pub use crate::stream::pattern::Binding;
use crate::stream::pattern::Pattern;
use crate::stream::registry::Conflict;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The files read when no `--config` is given, each merged over the ones before.
pub const SYSTEM_CONFIG: &str = "/etc/eventsourced/config.yml";

/// The longest `queue.expires` whose milliseconds still fit the original's signed 32-bit
/// `x-expires` argument.
const MAX_EXPIRES_SECS: u32 = (i32::MAX / 1000) as u32;

/// The validated configuration; serialised, it is the `-c` dump.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub broker: BrokerConfig,
    pub queue: QueueConfig,
    pub header: HeaderConfig,
    #[serde(skip_serializing_if = "AuthConfig::is_off")]
    pub auth: AuthConfig,
    /// Where the values came from, in the order applied (for the start-up log).
    #[serde(skip)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// `host:port` to listen on.
    pub address: String,
    /// The most streams served at once; one worker thread each.
    pub workers: usize,
    /// Seconds without a message after which a comment frame is sent; 0 sends none.
    pub keepalive: u64,
    /// Seconds a client may take to send its request head.
    pub request_timeout: u64,
    /// Seconds a write to a client may block before the client is dropped.
    pub write_timeout: u64,
    /// Whether frames carry `id:` (off: byte-exact frames of the original).
    pub event_ids: bool,
    /// Whether the AMQP `type` property becomes the frame's `event:` (off by default: a named
    /// event does not reach `onmessage` in browsers).
    pub event_types: bool,
    /// Milliseconds sent once as `retry:` at stream start; 0 sends none.
    pub retry: u32,
    /// Percent by which `retry` is moved at random, up or down, per stream.
    pub retry_jitter: u8,
    /// Seconds open streams are left running after SIGTERM while new ones are refused.
    pub drain: u64,
    /// EventSource clients refused for a passing reason get a 200 event stream that tells them
    /// to come back; false answers the original's 503.
    pub retry_refusals: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerConfig {
    pub node: Vec<BrokerUrl>,
    /// AMQP heartbeat in seconds; a silent broker is declared dead after two of them.
    pub heartbeat: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueConfig {
    pub pattern: Pattern,
    /// Seconds a queue survives without a consumer.
    pub expires: u32,
    /// Deliveries the broker may have in flight to one stream before it waits for acks.
    pub prefetch: u16,
    /// Messages held unacked per stream at most.
    pub replay_window: u16,
    /// Bytes of frames held unacked per stream at most.
    pub replay_bytes: u64,
    /// Seconds after which a held message is acked.
    pub replay_age: u64,
    /// What a request for a queue that is being streamed gets.
    pub conflict: Conflict,
    /// Exchanges the client's queue is bound to on every connect.
    pub bind: Vec<Binding>,
    /// Extra arguments of the queue declaration (`x-queue-type`, `x-max-length`, ...).
    pub arguments: BTreeMap<String, Argument>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderConfig {
    pub cors: BTreeMap<String, String>,
    pub sse: BTreeMap<String, String>,
}

/// Signed URLs: with a secret, every stream request must carry a valid token.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The secret in force: `secret`, or the contents of `secret_file`.
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
}

impl AuthConfig {
    fn is_off(&self) -> bool {
        self.key.is_none()
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_configured())
    }
}

/// `-c` prints URLs as configured, password included: its output is a config file.
impl Serialize for BrokerUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_configured())
    }
}

impl Serialize for Conflict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Conflict::Takeover => "takeover",
            Conflict::Reject => "reject",
        })
    }
}

/// Why the configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// A file named with `--config` (or `auth.secret_file`) could not be read.
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file or variable is not valid YAML, has an unknown key, or a value that fails its check.
    /// The message carries the key and, for files, the line and column.
    Invalid { source: String, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            ConfigError::Invalid { source, message } => write!(f, "{source}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where to read configuration from.
pub enum Search {
    /// `--config FILE`: exactly this file, which must exist.
    File(PathBuf),
    /// The original's order: the system file, then `config.yml` beside the executable.
    Default,
}

/// Reads the files and environment variables and returns the validated result.
pub fn load(search: Search) -> Result<Config, ConfigError> {
    let mut merged = FileConfig::default();
    let mut sources = Vec::new();
    let files: Vec<(PathBuf, bool)> = match search {
        Search::File(path) => vec![(path, true)],
        Search::Default => {
            let mut files = vec![(PathBuf::from(SYSTEM_CONFIG), false)];
            let beside = std::env::current_exe().ok();
            if let Some(dir) = beside.as_deref().and_then(Path::parent) {
                files.push((dir.join("config.yml"), false));
            }
            files
        }
    };
    for (path, required) in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ConfigError::Read { path, error }),
        };
        let name = path.display().to_string();
        merged = FileConfig::parse(&text, &name)?.merged_over(merged);
        sources.push(name);
    }
    for (name, layer) in environment_layers()? {
        merged = layer.merged_over(merged);
        sources.push(format!("environment variable {name}"));
    }
    merged.resolve(sources)
}

impl Config {
    /// The effective configuration as YAML, in the original's layout (`-c`).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// One layer as written in a file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<FileServer>,
    broker: Option<FileBroker>,
    queue: Option<FileQueue>,
    header: Option<FileHeader>,
    auth: Option<FileAuth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    address: Option<Address>,
    workers: Option<Workers>,
    keepalive: Option<u64>,
    request_timeout: Option<Seconds>,
    write_timeout: Option<Seconds>,
    event_ids: Option<bool>,
    event_types: Option<bool>,
    retry: Option<u32>,
    retry_jitter: Option<Percent>,
    drain: Option<u64>,
    retry_refusals: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBroker {
    node: Option<Vec<BrokerUrl>>,
    heartbeat: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQueue {
    pattern: Option<Pattern>,
    /// The seed README writes `expire`, the original's code reads `expires`: both are taken.
    #[serde(alias = "expire")]
    expires: Option<Expires>,
    prefetch: Option<Prefetch>,
    replay_window: Option<u16>,
    replay_bytes: Option<u64>,
    replay_age: Option<u64>,
    conflict: Option<ConflictSetting>,
    bind: Option<Vec<Binding>>,
    arguments: Option<BTreeMap<String, Argument>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHeader {
    cors: Option<BTreeMap<HeaderName, HeaderValue>>,
    sse: Option<BTreeMap<HeaderName, HeaderValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

impl FileConfig {
    fn parse(text: &str, source: &str) -> Result<FileConfig, ConfigError> {
        // An empty file (or one holding only comments) sets nothing.
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(FileConfig::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError::Invalid {
            source: source.to_string(),
            message: e.to_string(),
        })
    }

    /// `self` over `base`: scalars and lists replace, maps merge key by key (as the original's
    /// YAML decoder does when it reads into an existing value).
    fn merged_over(self, base: FileConfig) -> FileConfig {
        FileConfig {
            server: merge_option(base.server, self.server, |b, o| FileServer {
                address: o.address.or(b.address),
                workers: o.workers.or(b.workers),
                keepalive: o.keepalive.or(b.keepalive),
                request_timeout: o.request_timeout.or(b.request_timeout),
                write_timeout: o.write_timeout.or(b.write_timeout),
                event_ids: o.event_ids.or(b.event_ids),
                event_types: o.event_types.or(b.event_types),
                retry: o.retry.or(b.retry),
                retry_jitter: o.retry_jitter.or(b.retry_jitter),
                drain: o.drain.or(b.drain),
                retry_refusals: o.retry_refusals.or(b.retry_refusals),
            }),
            broker: merge_option(base.broker, self.broker, |b, o| FileBroker {
                node: o.node.or(b.node),
                heartbeat: o.heartbeat.or(b.heartbeat),
            }),
            queue: merge_option(base.queue, self.queue, |b, o| FileQueue {
                pattern: o.pattern.or(b.pattern),
                expires: o.expires.or(b.expires),
                prefetch: o.prefetch.or(b.prefetch),
                replay_window: o.replay_window.or(b.replay_window),
                replay_bytes: o.replay_bytes.or(b.replay_bytes),
                replay_age: o.replay_age.or(b.replay_age),
                conflict: o.conflict.or(b.conflict),
                bind: o.bind.or(b.bind),
                arguments: maps(b.arguments, o.arguments),
            }),
            header: merge_option(base.header, self.header, |b, o| FileHeader {
                cors: maps(b.cors, o.cors),
                sse: maps(b.sse, o.sse),
            }),
            // The last layer that names a secret decides, whichever form it uses.
            auth: merge_option(base.auth, self.auth, |b, o| {
                if o.secret.is_some() || o.secret_file.is_some() {
                    o
                } else {
                    b
                }
            }),
        }
    }

    fn resolve(self, sources: Vec<String>) -> Result<Config, ConfigError> {
        let server = self.server.unwrap_or_default();
        let broker = self.broker.unwrap_or_default();
        let queue = self.queue.unwrap_or_default();
        let header = self.header.unwrap_or_default();
        let auth = self.auth.unwrap_or_default();
        let headers = |map: Option<BTreeMap<HeaderName, HeaderValue>>,
                       defaults: &[(&str, &str)]| {
            let mut out: BTreeMap<String, String> = defaults
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.extend(map.unwrap_or_default().into_iter().map(|(k, v)| (k.0, v.0)));
            out
        };
        let key = match (&auth.secret, &auth.secret_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    source: sources.join(", "),
                    message: "auth: set secret or secret_file, not both".into(),
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
            return Err(ConfigError::Invalid {
                source: sources.join(", "),
                message: "auth: the secret is empty".into(),
            });
        }
        Ok(Config {
            server: ServerConfig {
                address: server
                    .address
                    .map_or_else(|| "0.0.0.0:2069".to_string(), |a| a.0),
                workers: server.workers.map_or(1024, |w| w.0),
                keepalive: server.keepalive.unwrap_or(15),
                request_timeout: server.request_timeout.map_or(5, |s| s.0),
                write_timeout: server.write_timeout.map_or(30, |s| s.0),
                event_ids: server.event_ids.unwrap_or(true),
                event_types: server.event_types.unwrap_or(false),
                retry: server.retry.unwrap_or(0),
                retry_jitter: server.retry_jitter.map_or(20, |p| p.0),
                drain: server.drain.unwrap_or(0),
                retry_refusals: server.retry_refusals.unwrap_or(true),
            },
            broker: BrokerConfig {
                node: broker.node.unwrap_or_else(|| {
                    let local = "amqp://guest:guest@127.0.0.1:5672/";
                    let url = BrokerUrl::parse(local).expect("the default broker URL is valid");
                    vec![url.clone(), url]
                }),
                heartbeat: broker.heartbeat.unwrap_or(10),
            },
            queue: QueueConfig {
                pattern: queue.pattern.unwrap_or_else(|| {
                    Pattern::parse("${query:id}").expect("the default pattern is valid")
                }),
                expires: queue.expires.map_or(1800, |e| e.0),
                prefetch: queue.prefetch.map_or(256, |p| p.0),
                replay_window: queue.replay_window.unwrap_or(4096),
                replay_bytes: queue.replay_bytes.unwrap_or(4 << 20),
                replay_age: queue.replay_age.unwrap_or(120),
                conflict: queue.conflict.map_or(Conflict::Takeover, |c| c.0),
                bind: queue.bind.unwrap_or_default(),
                arguments: queue.arguments.unwrap_or_default(),
            },
            header: HeaderConfig {
                cors: headers(
                    header.cors,
                    &[
                        ("Access-Control-Allow-Origin", "*"),
                        ("Access-Control-Allow-Methods", "GET, OPTIONS"),
                        (
                            "Access-Control-Allow-Headers",
                            "Content-Type, Accept, Cache-Control",
                        ),
                    ],
                ),
                sse: headers(
                    header.sse,
                    &[
                        ("Content-Type", "text/event-stream; charset=utf-8"),
                        ("Cache-Control", "no-cache"),
                        ("Transfer-Encoding", "identity"),
                        ("X-Accel-Buffering", "no"),
                    ],
                ),
            },
            auth: AuthConfig {
                secret: auth.secret,
                secret_file: auth.secret_file,
                key,
            },
            sources,
        })
    }
}

fn maps<K: Ord, V>(
    base: Option<BTreeMap<K, V>>,
    over: Option<BTreeMap<K, V>>,
) -> Option<BTreeMap<K, V>> {
    merge_option(base, over, |mut b, o| {
        b.extend(o);
        b
    })
}

fn merge_option<T>(base: Option<T>, over: Option<T>, merge: impl FnOnce(T, T) -> T) -> Option<T> {
    match (base, over) {
        (Some(b), Some(o)) => Some(merge(b, o)),
        (b, o) => o.or(b),
    }
}

/// Environment variables, one layer each, applied after the files in a fixed order:
/// `EVENTSOURCED_<SECTION>_<KEY>`, the value read as YAML (`broker.node`: comma-separated URLs).
pub const ENVIRONMENT_KEYS: &[(&str, &str)] = &[
    ("server", "address"),
    ("server", "workers"),
    ("server", "keepalive"),
    ("server", "request_timeout"),
    ("server", "write_timeout"),
    ("server", "event_ids"),
    ("server", "event_types"),
    ("server", "retry"),
    ("server", "retry_jitter"),
    ("server", "drain"),
    ("server", "retry_refusals"),
    ("broker", "node"),
    ("broker", "heartbeat"),
    ("queue", "pattern"),
    ("queue", "expires"),
    ("queue", "prefetch"),
    ("queue", "replay_window"),
    ("queue", "replay_bytes"),
    ("queue", "replay_age"),
    ("queue", "conflict"),
    ("queue", "bind"),
    ("queue", "arguments"),
    ("header", "cors"),
    ("header", "sse"),
    ("auth", "secret"),
    ("auth", "secret_file"),
];

/// Keys whose value is taken as a plain string, never parsed as YAML.
const STRING_KEYS: &[&str] = &["address", "pattern", "conflict", "secret", "secret_file"];

pub fn environment_variable(section: &str, key: &str) -> String {
    format!(
        "EVENTSOURCED_{}_{}",
        section.to_uppercase(),
        key.to_uppercase()
    )
}

fn environment_layers() -> Result<Vec<(String, FileConfig)>, ConfigError> {
    let mut layers = Vec::new();
    for (section, key) in ENVIRONMENT_KEYS {
        let name = environment_variable(section, key);
        let Ok(raw) = std::env::var(&name) else {
            continue;
        };
        let invalid = |message: String| ConfigError::Invalid {
            source: format!("environment variable {name}"),
            message,
        };
        let value: serde_yaml::Value = if (*section, *key) == ("broker", "node") {
            raw.split(',')
                .map(|url| serde_yaml::Value::String(url.trim().to_string()))
                .collect::<Vec<_>>()
                .into()
        } else if STRING_KEYS.contains(key) {
            serde_yaml::Value::String(raw.clone())
        } else {
            serde_yaml::from_str(&raw).map_err(|e| invalid(e.to_string()))?
        };
        let mut inner = serde_yaml::Mapping::new();
        inner.insert((*key).into(), value);
        let mut outer = serde_yaml::Mapping::new();
        outer.insert((*section).into(), inner.into());
        let layer = serde_yaml::from_value(outer.into()).map_err(|e| invalid(e.to_string()))?;
        layers.push((name, layer));
    }
    Ok(layers)
}

// Validated values: each check runs inside deserialisation, so serde_yaml reports the key
// path and the line of the offending value.

#[derive(Debug)]
struct Address(String);
#[derive(Debug)]
struct Workers(usize);
#[derive(Debug)]
struct Expires(u32);
#[derive(Debug)]
struct ConflictSetting(Conflict);
/// A timeout in whole seconds, at least one.
#[derive(Debug)]
struct Seconds(u64);
/// A percentage, 0 to 100.
#[derive(Debug)]
struct Percent(u8);
#[derive(Debug)]
struct Prefetch(u16);
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct HeaderName(String);
#[derive(Debug)]
struct HeaderValue(String);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_u64(d, |n| match u8::try_from(n) {
            Ok(p @ 0..=100) => Ok(Percent(p)),
            _ => Err(format!("{n} must be a percentage from 0 to 100")),
        })
    }
}

/// Runs `check` on a string while the YAML scalar is still being read, so that a refusal
/// carries that value's key path and line (an error raised after `String::deserialize` has
/// returned is reported at the enclosing mapping instead).
fn checked_str<'de, D, T>(d: D, check: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Checked<T>(fn(&str) -> Result<T, String>);
    impl<T> serde::de::Visitor<'_> for Checked<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Checked(check))
}

/// As `checked_str`, for whole numbers.
fn checked_u64<'de, D, T>(d: D, check: fn(u64) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Checked<T>(fn(u64) -> Result<T, String>);
    impl<T> serde::de::Visitor<'_> for Checked<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_u64(Checked(check))
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| match text.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => Ok(Address(text.to_string())),
            _ => Err(format!(
                "address {text:?} must be HOST:PORT, like 0.0.0.0:2069"
            )),
        })
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_u64(d, |n| match n {
            1..=100_000 => Ok(Workers(n as usize)),
            n => Err(format!("workers {n} must be from 1 to 100000")),
        })
    }
}

impl<'de> Deserialize<'de> for ConflictSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| match text {
            "takeover" => Ok(ConflictSetting(Conflict::Takeover)),
            "reject" => Ok(ConflictSetting(Conflict::Reject)),
            other => Err(format!("conflict {other:?} must be takeover or reject")),
        })
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_u64(d, |n| match n {
            1..=86_400 => Ok(Seconds(n)),
            n => Err(format!("{n} must be from 1 to 86400 seconds")),
        })
    }
}

impl<'de> Deserialize<'de> for Expires {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_u64(d, |n| match u32::try_from(n) {
            Ok(n @ 1..=MAX_EXPIRES_SECS) => Ok(Expires(n)),
            _ => Err(format!(
                "expires {n} must be from 1 to {MAX_EXPIRES_SECS} seconds"
            )),
        })
    }
}

impl<'de> Deserialize<'de> for Prefetch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_u64(d, |n| match u16::try_from(n) {
            Ok(0) => {
                Err("prefetch 0 would let the broker send without limit: use 1 or more".into())
            }
            Ok(n) => Ok(Prefetch(n)),
            Err(_) => Err(format!("prefetch {n} must be at most 65535")),
        })
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            // The message must not carry the password: name the URL by its redacted form.
            BrokerUrl::parse(text).map_err(|e| format!("invalid broker URL {}: {e}", redact(text)))
        })
    }
}

/// Hides whatever stands between `user:` and `@` in something that failed to parse as a URL.
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => match text[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &text[..s + 3], &text[at..]),
            None => text.to_string(),
        },
        _ => text.to_string(),
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            Pattern::parse(text).map_err(|e| format!("invalid pattern {text:?}: {e}"))
        })
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if text.is_empty() || !text.bytes().all(token) {
                return Err(format!("{text:?} is not a valid HTTP header name"));
            }
            Ok(HeaderName(canonical_header_name(text)))
        })
    }
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(format!("header value {text:?} holds a control character"));
            }
            Ok(HeaderValue(text.trim().to_string()))
        })
    }
}

/// `content-type` -> `Content-Type`, as Go's `Header.Set` writes names.
pub fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(text, "test.yml")
    }

    fn resolve(layers: &[&str]) -> Config {
        let mut merged = FileConfig::default();
        for text in layers {
            merged = parse(text).unwrap().merged_over(merged);
        }
        merged.resolve(Vec::new()).unwrap()
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
    fn empty_and_comment_only_files_set_nothing() {
        assert!(parse("").is_ok());
        assert!(parse("# nothing\n\n").is_ok());
    }

    fn error_of(text: &str) -> String {
        match parse(text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let message = error_of("server:\n  address: 0.0.0.0:1\n  adress: x\n");
        assert!(
            message.starts_with("test.yml: server: unknown field `adress`"),
            "{message}"
        );
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let message = error_of("queue:\n  pattern: ${query:id}\n  expires: soon\n");
        assert!(message.contains("queue.expires"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn invalid_broker_urls_are_refused_without_their_password() {
        let message = error_of(
            "broker:\n  node:\n    - amqp://u:secret@h:5672/\n    - amqps://u:secret@h/\n",
        );
        assert!(message.contains("broker.node[1]"), "{message}");
        assert!(message.contains("line 4"), "{message}");
        assert!(message.contains("amqps"), "{message}");
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
        let again = parse(&text)
            .unwrap()
            .merged_over(FileConfig::default())
            .resolve(Vec::new())
            .unwrap();
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
    fn the_secret_comes_from_the_config_or_a_file_never_both() {
        let config = resolve(&["auth: {secret: s3cret}"]);
        assert_eq!(config.auth.key.as_deref(), Some(&b"s3cret"[..]));
        let dir = std::env::temp_dir().join(format!("es-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let config = resolve(&[&format!("auth: {{secret_file: {}}}", dir.display())]);
        assert_eq!(config.auth.key.as_deref(), Some(&b"from-file"[..]));
        let both = parse(&format!(
            "auth: {{secret: a, secret_file: {}}}",
            dir.display()
        ))
        .unwrap()
        .resolve(Vec::new());
        assert!(both.is_err());
        let _ = std::fs::remove_file(&dir);
        assert!(resolve(&[]).auth.key.is_none());
        assert!(!resolve(&[]).to_yaml().contains("auth"));
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
    fn header_names_are_canonical() {
        assert_eq!(
            canonical_header_name("x-accel-BUFFERING"),
            "X-Accel-Buffering"
        );
    }
}
