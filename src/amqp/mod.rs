//! The broker side: URLs, the connections and their supervisors, queue declarations.

pub mod broker;
pub mod control;
pub mod dial;
pub mod holder;
pub mod queue;
pub mod url;

pub use broker::Broker;
pub use dial::Dial;
pub use url::BrokerUrl;

#[cfg(test)]
mod tests {
    /// A consumer's channel keeps a block of 31 of these for as long as the stream lives
    /// (vendor/amiquip/CHANGED.md): one stream in thousands must not pay kilobytes for it.
    #[test]
    fn a_consumer_message_is_two_words() {
        assert!(std::mem::size_of::<amiquip::ConsumerMessage>() <= 16);
    }
}
