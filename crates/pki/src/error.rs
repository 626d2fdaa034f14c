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
    /// A certificate field of the CA Secret holds a PEM block that is not a certificate (e.g. the
    /// private key pasted into `tls.crt`). Refused so that it is never published to tenants.
    #[error(
        "{field} contains a PEM block of type {label:?}; only CERTIFICATE blocks are allowed there, \
         because {field} is published to every tenant: remove the {label} block from {field} \
         (a CA private key belongs only in tls.key)"
    )]
    NonCertificateInCertField {
        /// Secret data key: `tls.crt`, `ca-bundle.crt` or `intermediate-ca.crt`.
        field: &'static str,
        /// The offending PEM label, e.g. `RSA PRIVATE KEY` (never the block's content).
        label: String,
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
    /// A PKCS#12 keystore or truststore could not be built.
    #[error("PKCS#12 store: {0}")]
    Pkcs12(String),
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
            PkiError::NonCertificateInCertField { .. } => "non_certificate_pem",
            PkiError::IntermediateCount { .. } => "intermediate_count",
            PkiError::UnsupportedName(_) => "unsupported_name",
            PkiError::InvalidRequest(_) => "invalid_request",
            PkiError::Sign(_) => "sign",
            PkiError::IssuerMismatch => "issuer_mismatch",
            PkiError::PoolClosed => "pool_closed",
            PkiError::Pkcs12(_) => "pkcs12",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_stable_snake_case_and_unique() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let all = [
            (PkiError::InvalidConfig(String::new()), "invalid_config"),
            (
                PkiError::UnknownKeyAlgorithm(String::new()),
                "unknown_key_algorithm",
            ),
            (PkiError::KeyGeneration(String::new()), "key_generation"),
            (PkiError::InvalidKey(String::new()), "invalid_key"),
            (PkiError::KeyMismatch, "key_mismatch"),
            (PkiError::NoCertificate("tls.crt"), "no_certificate"),
            (
                PkiError::CertificateParse(String::new()),
                "certificate_parse",
            ),
            (PkiError::NotCa { cn: String::new() }, "not_ca"),
            (
                PkiError::CaExpired {
                    cn: String::new(),
                    not_after: t,
                },
                "ca_expired",
            ),
            (
                PkiError::NonCertificateInCertField {
                    field: "tls.crt",
                    label: "PRIVATE KEY".into(),
                },
                "non_certificate_pem",
            ),
            (
                PkiError::IntermediateCount { found: 2 },
                "intermediate_count",
            ),
            (PkiError::UnsupportedName(String::new()), "unsupported_name"),
            (PkiError::InvalidRequest(String::new()), "invalid_request"),
            (PkiError::Sign(String::new()), "sign"),
            (PkiError::IssuerMismatch, "issuer_mismatch"),
            (PkiError::PoolClosed, "pool_closed"),
            (PkiError::Pkcs12(String::new()), "pkcs12"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (e, want) in &all {
            let c = e.category();
            assert_eq!(c, *want);
            assert!(
                c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{c}"
            );
            assert!(seen.insert(c), "duplicate category {c}");
        }
    }

    #[test]
    fn non_certificate_message_names_field_and_fix() {
        let e = PkiError::NonCertificateInCertField {
            field: "ca-bundle.crt",
            label: "RSA PRIVATE KEY".into(),
        };
        assert_eq!(
            e.to_string(),
            "ca-bundle.crt contains a PEM block of type \"RSA PRIVATE KEY\"; only CERTIFICATE \
             blocks are allowed there, because ca-bundle.crt is published to every tenant: remove \
             the RSA PRIVATE KEY block from ca-bundle.crt (a CA private key belongs only in tls.key)"
        );
    }
}
