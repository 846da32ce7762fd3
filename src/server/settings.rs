//! The one place the server's parts are built from the configuration: below `server/`, nothing
//! reads `Config`.

use crate::amqp::{queue, Dial};
use crate::auth::Signing;
use crate::config::{BrokerConfig, Config};
use crate::stream::window::Bounds;
use crate::stream::StreamSettings;
use crate::tls::{BrokerTls, ListenerTls, TlsError};
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
            shared_bytes: config.queue.shared_bytes,
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
        values: config.queue.signed_values(),
    })
}

/// How to open broker connections; reads the TLS files when any node is `amqps://`.
pub fn dial(broker: &BrokerConfig) -> Result<Dial, TlsError> {
    let tls = match broker.node.iter().any(|url| url.tls()) {
        true => {
            let tls = &broker.tls;
            let tls = BrokerTls::new(
                tls.ca().as_deref(),
                tls.cert().as_deref(),
                tls.key().as_deref(),
            )?;
            log::info!(
                "amqps: broker certificates are checked against {}",
                tls.roots()
            );
            Some(tls)
        }
        false => {
            let tls = &broker.tls;
            if !(tls.ca.is_empty() && tls.cert.is_empty() && tls.key.is_empty()) {
                log::warn!("broker.tls is set but no broker.node is amqps://: it is not used");
            }
            None
        }
    };
    Ok(Dial {
        heartbeat: broker.heartbeat,
        tls,
    })
}

/// The HTTPS listener's certificate, when `server.tls` names one.
pub fn listener_tls(config: &Config) -> Result<Option<ListenerTls>, TlsError> {
    match config.server.tls.files() {
        Some((cert, key)) => ListenerTls::new(&cert, &key).map(Some),
        None => Ok(None),
    }
}
