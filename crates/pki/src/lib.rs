//! Pure PKI for service-ca: the signing CA, serving certificates, bundles and rotation.
//!
//! No Kubernetes, no I/O; the clock is always passed in as an [`OffsetDateTime`](time::OffsetDateTime).

mod ca;
mod der;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
mod key;
mod pkcs12;
mod serving;

pub use ca::{CaConfig, DEFAULT_CN_PREFIX, Rotation, SigningCa};
pub use error::PkiError;
pub use inspect::{
    CertInfo, ReissueReason, cert_pem, needs_reissue, parse_pem_certs, pem_cert_ders, rfc3339,
    verify_serving_secret,
};
pub use key::{KeyAlgorithm, KeyPool, PrivateKey, generate_key};
pub use pkcs12::{
    DEFAULT_STORE_PASSWORD, KEYSTORE_ALIAS, keystore_p12, password_hash, store_digest,
    truststore_alias, truststore_p12,
};
pub use serving::{
    ChainOrder, DEFAULT_SERVING_LIFETIME, IssuedCert, SERVICE_UID_OID, ServingRequest,
    issue_serving, serving_dns_names,
};
