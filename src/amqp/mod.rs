//! The broker side: URLs, the connections and their supervisors, queue declarations.

pub mod broker;
pub mod control;
pub mod holder;
pub mod queue;
pub mod url;

pub use broker::{Broker, Dial};
pub use url::BrokerUrl;
