//! Why a configuration was refused: one enum, so that a caller can tell a missing file from a bad
//! value without reading the message, and every message names where to look.

use std::fmt;
use std::path::PathBuf;

/// Why the configuration was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file named with `--config` (or `auth.secret_file`) could not be read.
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file or variable is not valid YAML, has an unknown key, or a value that fails its check.
    /// The message carries the key and, for files, the line and column.
    Invalid { source: String, message: String },
    /// One layer sets both `auth.secret` and `auth.secret_file` (across layers, the last one
    /// that names a secret decides).
    TwoSecrets { sources: String },
    /// The secret in force is empty: signed URLs would be signed with nothing.
    EmptySecret { sources: String },
    /// `queue.prefetch + queue.replay_window` does not fit the broker's prefetch count.
    QosTooLarge { prefetch: u16, replay_window: u16 },
    /// `auth.previous_secret` without a secret in force.
    PreviousWithoutSecret { sources: String },
    /// Only one of a certificate and its key is set (`section` is `server.tls` or `broker.tls`).
    HalfTls {
        section: &'static str,
        sources: String,
    },
    /// A `queue.arguments` name over AMQP's 255 bytes for a field-table key.
    ArgumentNameTooLong { sources: String, length: usize },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            ConfigError::Invalid { source, message } => write!(f, "{source}: {message}"),
            ConfigError::TwoSecrets { sources } => {
                write!(f, "{sources}: auth: set secret or secret_file, not both")
            }
            ConfigError::EmptySecret { sources } => {
                write!(f, "{sources}: auth: the secret is empty")
            }
            ConfigError::PreviousWithoutSecret { sources } => write!(
                f,
                "{sources}: auth: previous_secret is set but no secret is: set the new secret too"
            ),
            ConfigError::HalfTls { section, sources } => write!(
                f,
                "{sources}: {section}: cert and key go together: set both, or neither"
            ),
            ConfigError::ArgumentNameTooLong { sources, length } => write!(
                f,
                "{sources}: queue.arguments: a name of {length} bytes is over AMQP's 255"
            ),
            ConfigError::QosTooLarge {
                prefetch,
                replay_window,
            } => write!(
                f,
                "queue.prefetch ({prefetch}) + queue.replay_window ({replay_window}) is {}, over \
                 65535: a stream asks the broker for both at once, and RabbitMQ's prefetch is a \
                 16-bit count",
                u32::from(*prefetch) + u32::from(*replay_window)
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
