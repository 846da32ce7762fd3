//! The one place the server's parts are built from the configuration: below `server/`, nothing
//! reads `Config`.

use crate::amqp::queue;
use crate::auth::Signing;
use crate::config::Config;
use crate::stream::window::Bounds;
use crate::stream::StreamSettings;
use std::time::Duration;

impl From<&Config> for StreamSettings {
    fn from(config: &Config) -> StreamSettings {
        StreamSettings {
            arguments: queue::arguments(
                &config.queue.arguments,
                queue::expires_ms(config.queue.expires),
            ),
            bind: config.queue.bind.clone(),
            event_types: config.server.event_types,
            retry: config.server.retry,
            retry_jitter: config.server.retry_jitter,
            prefetch: config.queue.prefetch,
            window: Bounds {
                messages: usize::from(config.queue.replay_window),
                bytes: config.queue.replay_bytes,
                age: Duration::from_secs(config.queue.replay_age),
            },
            event_ids: config.server.event_ids,
            conflict: config.queue.conflict,
            keepalive: (config.server.keepalive > 0)
                .then(|| Duration::from_secs(config.server.keepalive)),
        }
    }
}

/// What stream requests must be signed with; `None` without `auth.secret`.
pub fn signing(config: &Config) -> Option<Signing> {
    config.auth.key.as_ref()?;
    Some(Signing {
        keys: config.auth.keys(),
        max_ttl: (config.auth.max_ttl > 0).then_some(config.auth.max_ttl),
    })
}
