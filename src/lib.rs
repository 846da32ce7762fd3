//! eventsourced: pushes RabbitMQ messages to browsers as Server-Sent Events, one durable queue
//! per client. The layers, from the outside in (see ARCHITECTURE.md):
//!
//! - [`config`] turns files and environment variables into one validated [`config::Config`];
//!   only [`server`] and the commands read it.
//! - [`server`] accepts connections, routes requests and runs the worker pool.
//! - [`http`] reads request heads (on the reception thread) and writes answers and SSE frames.
//! - [`stream`] is one client's session: claim the queue, consume it, write, ack.
//! - [`amqp`] keeps the broker connections up and declares queues.
//! - [`sys`] holds every call into libc.

pub mod amqp;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod publish;
pub mod random;
pub mod refusal;
pub mod server;
pub mod signals;
pub mod stream;
pub mod sys;
pub mod tls;

#[cfg(test)]
mod property_tests;

/// The long version string `-v` prints.
pub const VERSION: &str = concat!(
    "eventsourced ",
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EVENTSOURCED_COMMIT"),
    ", ",
    env!("EVENTSOURCED_TARGET"),
    ")"
);
