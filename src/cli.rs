//! The command line, as the user types it. `main` turns it into actions.

use argh::FromArgs;
use std::path::PathBuf;

/// Pushes RabbitMQ messages to browsers as Server-Sent Events, one durable queue per client.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// print the effective configuration as YAML and exit
    #[argh(switch, short = 'c')]
    pub print_config: bool,

    /// with -c: print broker passwords and auth secrets as configured instead of ***
    #[argh(switch)]
    pub show_secrets: bool,

    /// print the version and git commit, and exit
    #[argh(switch, short = 'v')]
    pub version: bool,

    /// read this configuration file instead of /etc/eventsourced/config.yml and config.yml
    /// beside the executable
    #[argh(option)]
    pub config: Option<PathBuf>,

    /// log level: error, warn, info, debug or trace (default: RUST_LOG, else info)
    #[argh(option)]
    pub log_level: Option<String>,

    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Publish(PublishArgs),
    Token(TokenArgs),
}

/// Print the query string (`expires=…&token=…`) that signs a stream request for a queue, with
/// the configured auth.secret.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "token")]
pub struct TokenArgs {
    /// the queue name the request resolves to
    #[argh(positional)]
    pub queue: String,

    /// seconds the token stays valid (default 3600)
    #[argh(option, default = "3600")]
    pub ttl: u64,

    /// a request value that queue.bind takes and the token signs, as category:name=VALUE
    /// (query:user=alice); one for each that `token` asks for
    #[argh(option)]
    pub value: Vec<String>,
}

/// Publish a message to a client's queue on the configured brokers, declaring the queue
/// the way the server does (so it waits there until the client connects).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "publish")]
pub struct PublishArgs {
    /// the queue name, as the client's request names it (for example its `id`)
    #[argh(positional)]
    pub queue: String,

    /// the message body; read from standard input when left out
    #[argh(positional)]
    pub message: Option<String>,

    /// the AMQP `message_id` property
    #[argh(option)]
    pub id: Option<String>,

    /// the AMQP `type` property
    #[argh(option, long = "type")]
    pub kind: Option<String>,
}
