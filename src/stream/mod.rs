//! One client's stream: which queue a request names, who holds it, the session that consumes
//! it and writes frames, and the window of deliveries held unacked until the client has them.

pub mod chunk_queue;
pub mod event_id;
pub mod feed;
pub mod follower;
pub mod frames;
pub mod hangup;
pub mod pattern;
pub mod registry;
pub mod relay;
pub mod remote;
pub mod resume;
pub mod session;
pub mod takeover;
pub mod unacknowledged;
pub mod window;

pub use session::{serve, StreamContext, StreamSettings};
