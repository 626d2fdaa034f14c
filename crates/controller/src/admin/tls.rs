//! The metrics server's certificate: a PEM certificate chain and key read from files and re-read
//! when they change.
//!
//! In a cluster the files are the Service `service-ca-metrics`'s own serving Secret
//! (`service-ca-metrics-tls`, issued by service-ca itself through the usual annotation) mounted into
//! the pod, as OpenShift does for its own components: every replica, leader or not, presents the
//! same certificate, for `service-ca-metrics.<namespace>.svc`, verifiable with the service CA bundle.
//! The kubelet updates the mounted files when the Secret is re-issued (renewal, CA rotation); they
//! are polled every [`RELOAD_INTERVAL`] and a new pair is used for the next handshakes. A pair that
//! does not parse, or whose key does not match, is ignored (the previous one stays in use); files
//! that disappear leave the last loaded pair in use.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tracing::{info, warn};
use zeroize::Zeroizing;

/// How often the files are checked for a change.
pub(super) const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The current certificate of the metrics server, shared with rustls.
pub(super) struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    loaded: watch::Sender<bool>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// What the last look at the files found.
#[derive(PartialEq, Eq)]
enum Seen {
    Nothing,
    Missing,
    Invalid(Vec<u8>),
    Loaded(Vec<u8>),
}

impl Certificate {
    pub(super) fn new(cert_file: PathBuf, key_file: PathBuf) -> Self {
        Self {
            cert_file,
            key_file,
            current: RwLock::new(None),
            loaded: watch::Sender::new(false),
        }
    }

    /// Resolves once a certificate has been loaded.
    pub(super) async fn loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        let _ = loaded.wait_for(|loaded| *loaded).await;
    }

    /// Checks the files now and every [`RELOAD_INTERVAL`], forever.
    pub(super) async fn reload_forever(self: Arc<Self>) {
        let mut seen = Seen::Nothing;
        let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            seen = self.reload(seen).await;
        }
    }

    /// Reads both files; loads them if they changed since `seen`. Logs once per new situation.
    async fn reload(&self, seen: Seen) -> Seen {
        let (cert_file, key_file) = (self.cert_file.clone(), self.key_file.clone());
        // Two small files, off the async workers.
        let read = tokio::task::spawn_blocking(move || {
            (
                std::fs::read(cert_file),
                std::fs::read(key_file).map(Zeroizing::new),
            )
        })
        .await;
        let Ok(read) = read else {
            return seen;
        };
        let (cert, key) = match read {
            (Ok(cert), Ok(key)) => (cert, key),
            (cert, key) => {
                if seen == Seen::Nothing {
                    let error = cert.err().or(key.err()).map(|e| e.to_string());
                    info!(
                        cert_file = %self.cert_file.display(),
                        key_file = %self.key_file.display(),
                        error,
                        "waiting for the metrics serving certificate; /metrics is not served until it exists"
                    );
                }
                // Files that disappear after a load keep the loaded pair in use.
                return match seen {
                    Seen::Loaded(_) => seen,
                    _ => Seen::Missing,
                };
            }
        };
        // Compare both files' content without keeping the key: a digest of the pair.
        let fingerprint = {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&(cert.len() as u64).to_be_bytes());
            ctx.update(&cert);
            ctx.update(&key);
            ctx.finish().as_ref().to_vec()
        };
        if matches!(&seen, Seen::Loaded(f) | Seen::Invalid(f) if *f == fingerprint) {
            return seen;
        }
        match parse(&cert, &key) {
            Ok(certified) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Some(Arc::new(certified));
                }
                let first = !*self.loaded.borrow();
                self.loaded.send_replace(true);
                info!(
                    cert_file = %self.cert_file.display(),
                    "{} the metrics serving certificate",
                    if first { "loaded" } else { "reloaded" }
                );
                Seen::Loaded(fingerprint)
            }
            Err(error) => {
                warn!(
                    cert_file = %self.cert_file.display(),
                    key_file = %self.key_file.display(),
                    %error,
                    "ignoring the metrics serving certificate files (the previous certificate, if any, stays in use)"
                );
                Seen::Invalid(fingerprint)
            }
        }
    }
}

/// A certificate chain (leaf first) and its key from PEM, checked to belong together.
fn parse(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(|e| format!("certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("certificate file: no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => "key file: no private key".to_string(),
        e => format!("key file: {e}"),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| e.to_string())
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

/// TLS 1.2 and 1.3 with aws-lc-rs, HTTP/1.1 only, no client certificates, the certificate from
/// `certificate` at each handshake.
pub(super) fn server_config(certificate: Arc<Certificate>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_mismatched_material() {
        assert!(parse(b"", b"").is_err());
        assert!(parse(b"not pem", b"not pem").is_err());
    }
}
