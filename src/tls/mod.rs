//! TLS with rustls (pure Rust, so the static musl binary needs no OpenSSL): `amqps://` brokers
//! (`broker.rs`) and an HTTPS listener (`listener.rs`). This file reads what both need from disk:
//! certificates, keys and the roots a broker's certificate is checked against.

mod broker;
mod listener;

pub use broker::{BrokerTls, TlsStream};
pub use listener::ListenerTls;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS could not be set up. The texts name files and nodes, never a file's content.
#[derive(Debug)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    Read(PathBuf, std::io::Error),
    /// A file holds no PEM certificate, or one that is not valid PEM.
    NoCertificate(PathBuf),
    /// A file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    NoKey(PathBuf),
    /// Only one of a certificate and its key is configured.
    Incomplete(&'static str),
    /// rustls refused the certificate, the key or the pair.
    Refused(String, rustls::Error),
    /// No root certificate to check a broker against: none in the system store and the
    /// built-in ones left out.
    NoRoots,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            TlsError::NoCertificate(path) => {
                write!(
                    f,
                    "{} holds no PEM certificate, or a broken one",
                    path.display()
                )
            }
            TlsError::NoKey(path) => write!(
                f,
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                path.display()
            ),
            TlsError::Incomplete(what) => write!(f, "{what}: set both the certificate and the key"),
            TlsError::Refused(what, e) => write!(f, "{what}: {e}"),
            TlsError::NoRoots => f.write_str("no trusted root certificate was found"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The cryptography every connection uses: `ring`, which builds for every target we ship.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))
}

/// Every certificate in a PEM file, in order (a server's own first, then its chain).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    // A broken certificate in a chain is refused, not skipped: the chain served would be short.
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoCertificate(path.to_path_buf()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey(path.to_path_buf()))
}

/// Where a broker's certificate chain must lead.
///
/// A configured CA file is the only root when set: a private broker's CA, and nothing a public
/// authority signed for the same name. Otherwise the system's store (with `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` honoured), and when there is none, as in a `FROM scratch` image, Mozilla's
/// roots built into the binary.
pub fn roots(ca: Option<&Path>) -> Result<(RootCertStore, &'static str), TlsError> {
    let mut store = RootCertStore::empty();
    if let Some(path) = ca {
        for cert in certificates(path)? {
            store
                .add(cert)
                .map_err(|e| TlsError::Refused(format!("CA file {}", path.display()), e))?;
        }
        return Ok((store, "the configured CA file"));
    }
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        log::warn!("reading the system's certificate store: {error}");
    }
    let (added, _) = store.add_parsable_certificates(system.certs);
    if added > 0 {
        return Ok((store, "the system's certificate store"));
    }
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if store.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok((store, "the built-in Mozilla roots"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let err = certificates(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("cannot read /nonexistent/ca.pem"));
    }

    #[test]
    fn a_file_without_pem_is_refused_without_its_content() {
        let dir = std::env::temp_dir().join(format!("es-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notes.txt");
        std::fs::write(&path, "secret-looking text, not a certificate").unwrap();
        let cert = certificates(&path).unwrap_err().to_string();
        let key = private_key(&path).unwrap_err().to_string();
        assert!(cert.contains("holds no PEM certificate"), "{cert}");
        assert!(key.contains("holds no PEM private key"), "{key}");
        assert!(!cert.contains("secret") && !key.contains("secret"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_a_ca_file_some_roots_are_trusted() {
        let (store, source) = roots(None).unwrap();
        assert!(!store.is_empty(), "{source}");
    }
}
