//! The HTTPS listener's certificate and key, read at start and again on SIGHUP (a renewal by
//! certbot or the like) without touching the streams already open.

use super::{certificates, private_key, provider, TlsError};
use rustls::{ServerConfig, ServerConnection};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// What a new HTTPS connection is served with; the streams that are open keep theirs.
pub struct ListenerTls {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Arc<ServerConfig>>,
}

impl ListenerTls {
    /// Reads `cert` (the server's certificate, then its chain) and `key`.
    pub fn new(cert: &Path, key: &Path) -> Result<ListenerTls, TlsError> {
        Ok(ListenerTls {
            current: Mutex::new(load(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert, &self.key)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The server side of a new connection's TLS session.
    pub fn session(&self) -> Result<ServerConnection, rustls::Error> {
        let config = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ServerConnection::new(config)
    }

    /// The certificate file, for log lines.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    let key = private_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Refused("TLS versions".into(), e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Refused(format!("certificate {}", cert.display()), e))?;
    // Event streams are HTTP/1.1; a client offering h2 is told so in the handshake.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
