//! Independent checks of issued material with rustls/webpki: the chain verifies against a
//! bundle for a DNS name, and the private key matches the certificate.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

/// Verifies `chain_pem` (leaf first) against the trust anchors in `bundle_pem` for `dns_name`,
/// at the current time.
pub fn verify_chain(
    bundle_pem: impl AsRef<[u8]>,
    chain_pem: &[u8],
    dns_name: &str,
) -> Result<(), String> {
    let bundle_pem = bundle_pem.as_ref();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in certs(bundle_pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("bad trust anchor: {e}"))?;
    }
    let chain = certs(chain_pem)?;
    let (leaf, intermediates) = chain.split_first().ok_or("empty chain")?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(dns_name.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| format!("{dns_name}: {e}"))
}

/// Checks that `key_pem` is the private key of the first certificate in `chain_pem`.
pub fn verify_key_matches(chain_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("bad key PEM: {e}"))?;
    CertifiedKey::from_der(certs(chain_pem)?, key, &provider)
        .map(|_| ())
        .map_err(|e| format!("key does not match certificate: {e}"))
}
