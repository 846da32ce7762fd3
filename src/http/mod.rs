//! The little HTTP/1.1 this server speaks: request heads read on the reception thread, short
//! answers that close the connection, and the bytes of an event stream.

pub mod answer;
pub mod client;
pub mod head;
pub mod query;
pub mod reception;
pub mod sse;

pub use answer::Responder;
pub use client::Client;
pub use head::{HttpError, RequestHead};
