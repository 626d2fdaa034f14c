//! The crate's single error type.

use time::OffsetDateTime;

/// Every failure the PKI crate can report; `category()` gives a short stable label for metrics/logs.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The CA configuration is inconsistent.
    #[error("invalid CA configuration: {0}")]
    InvalidConfig(String),
    /// A key algorithm name was not recognised.
    #[error(
        "unknown key algorithm {0:?} (expected rsa-2048, rsa-3072, rsa-4096, ecdsa-p256 or ecdsa-p384)"
    )]
    UnknownKeyAlgorithm(String),
    /// Key generation failed in the crypto library.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    /// A private key could not be parsed (PKCS#1, PKCS#8 and SEC1 are accepted).
    #[error("private key cannot be parsed: {0}")]
    InvalidKey(String),
    /// The private key does not belong to the certificate.
    #[error("private key does not match the CA certificate's public key")]
    KeyMismatch,
    /// No CERTIFICATE block was found where one is required.
    #[error("no CERTIFICATE PEM block found in {0}")]
    NoCertificate(&'static str),
    /// A certificate or PEM block could not be parsed.
    #[error("certificate cannot be parsed: {0}")]
    CertificateParse(String),
    /// The certificate offered as CA is not a CA (basicConstraints CA:TRUE missing).
    #[error("certificate {cn:?} is not a CA (basicConstraints CA:TRUE missing)")]
    NotCa {
        /// Subject CN of the offending certificate.
        cn: String,
    },
    /// The CA certificate has expired (or expires at the evaluation time).
    #[error("CA certificate {cn:?} expired at {not_after}")]
    CaExpired {
        /// Subject CN of the CA.
        cn: String,
        /// Its notAfter.
        not_after: OffsetDateTime,
    },
    /// `intermediate-ca.crt` must hold exactly one certificate.
    #[error("intermediate-ca.crt must contain exactly one certificate, found {found}")]
    IntermediateCount {
        /// Number of certificates found.
        found: usize,
    },
    /// The subject name cannot be reproduced exactly (multi-valued RDN or repeated attribute).
    #[error("unsupported distinguished name: {0}")]
    UnsupportedName(String),
    /// A serving request is invalid.
    #[error("invalid serving certificate request: {0}")]
    InvalidRequest(String),
    /// Building or signing a certificate failed.
    #[error("certificate signing failed: {0}")]
    Sign(String),
    /// The issued certificate's issuer bytes differ from the CA's subject bytes.
    #[error("issued certificate's issuer does not equal the CA subject byte-for-byte")]
    IssuerMismatch,
    /// The key pool's worker threads are gone.
    #[error("key pool is closed")]
    PoolClosed,
}

impl PkiError {
    /// Short, stable, snake_case label for this error kind.
    pub fn category(&self) -> &'static str {
        match self {
            PkiError::InvalidConfig(_) => "invalid_config",
            PkiError::UnknownKeyAlgorithm(_) => "unknown_key_algorithm",
            PkiError::KeyGeneration(_) => "key_generation",
            PkiError::InvalidKey(_) => "invalid_key",
            PkiError::KeyMismatch => "key_mismatch",
            PkiError::NoCertificate(_) => "no_certificate",
            PkiError::CertificateParse(_) => "certificate_parse",
            PkiError::NotCa { .. } => "not_ca",
            PkiError::CaExpired { .. } => "ca_expired",
            PkiError::IntermediateCount { .. } => "intermediate_count",
            PkiError::UnsupportedName(_) => "unsupported_name",
            PkiError::InvalidRequest(_) => "invalid_request",
            PkiError::Sign(_) => "sign",
            PkiError::IssuerMismatch => "issuer_mismatch",
            PkiError::PoolClosed => "pool_closed",
        }
    }
}
