//! Certificate inspection (x509-parser) and the serving-cert reissue check (spec §7.3).

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::PkiError;
use crate::ca::SigningCa;

/// Parsed facts about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// First CN of the subject ("" if none).
    pub subject_cn: String,
    /// First CN of the issuer ("" if none).
    pub issuer_cn: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// dNSName SANs in certificate order.
    pub dns_names: Vec<String>,
    /// Subject Key Identifier bytes.
    pub skid: Option<Vec<u8>>,
    /// Authority Key Identifier keyIdentifier bytes.
    pub akid: Option<Vec<u8>>,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// Serial number, lowercase hex without leading zeros.
    pub serial_hex: String,
    /// DER of the subject Name.
    pub subject_raw: Vec<u8>,
    /// DER of the issuer Name.
    pub issuer_raw: Vec<u8>,
    /// The whole certificate DER.
    pub der: Vec<u8>,
}

fn first_cn(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl CertInfo {
    /// Parse one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::CertificateParse(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PkiError::CertificateParse(
                "trailing data after certificate".into(),
            ));
        }
        let mut info = CertInfo {
            subject_cn: first_cn(cert.subject()),
            issuer_cn: first_cn(cert.issuer()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            dns_names: Vec::new(),
            skid: None,
            akid: None,
            is_ca: false,
            serial_hex: format!("{:x}", cert.serial),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            der: der.to_vec(),
        };
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => info.skid = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    info.akid = a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                ParsedExtension::BasicConstraints(bc) => info.is_ca = bc.ca,
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        if let GeneralName::DNSName(d) = n {
                            info.dns_names.push((*d).to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

/// DER bodies of every CERTIFICATE block (blocks of other types or with PEM headers are skipped).
pub fn pem_cert_ders(pem_bytes: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks =
        pem::parse_many(pem_bytes).map_err(|e| PkiError::CertificateParse(e.to_string()))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE" && b.headers().iter().next().is_none())
        .map(|b| b.into_contents())
        .collect())
}

/// Parse every CERTIFICATE block of a PEM text.
pub fn parse_pem_certs(pem_bytes: &[u8]) -> Result<Vec<CertInfo>, PkiError> {
    pem_cert_ders(pem_bytes)?
        .iter()
        .map(|d| CertInfo::from_der(d))
        .collect()
}

/// PEM-encode a DER certificate (64 columns, LF, trailing newline).
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Why a serving certificate must be (re)issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReissueReason {
    /// No `tls.crt` or it is empty.
    Missing,
    /// A CERTIFICATE block fails to parse or none is present.
    Unparsable,
    /// The leaf was not issued by the current CA (AKID != CA SKID, or CN mismatch for legacy CAs).
    WrongIssuer,
    /// DNS SAN set differs from the expected set.
    WrongNames,
    /// Less than the renewal margin remains.
    NearExpiry,
    /// Already expired.
    Expired,
}

impl ReissueReason {
    /// Short stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReissueReason::Missing => "missing",
            ReissueReason::Unparsable => "unparsable",
            ReissueReason::WrongIssuer => "wrong_issuer",
            ReissueReason::WrongNames => "wrong_names",
            ReissueReason::NearExpiry => "near_expiry",
            ReissueReason::Expired => "expired",
        }
    }
}

impl fmt::Display for ReissueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Spec §7.3 check plus an expiry check read from the certificate itself.
pub fn needs_reissue(
    tls_crt: Option<&[u8]>,
    ca: &SigningCa,
    expected_names: &[String],
    renew_before: Duration,
    now: OffsetDateTime,
) -> Option<ReissueReason> {
    let bytes = match tls_crt {
        Some(b) if !b.iter().all(|c| c.is_ascii_whitespace()) => b,
        _ => return Some(ReissueReason::Missing),
    };
    let certs = match parse_pem_certs(bytes) {
        Ok(c) if !c.is_empty() => c,
        _ => return Some(ReissueReason::Unparsable),
    };
    let leaf = &certs[0];
    let issued_by_ca = match ca.skid_opt() {
        Some(skid) => leaf.akid.as_deref() == Some(skid),
        None => leaf.issuer_cn == ca.subject_cn(),
    };
    if !issued_by_ca {
        return Some(ReissueReason::WrongIssuer);
    }
    let mut have: Vec<&str> = leaf.dns_names.iter().map(String::as_str).collect();
    let mut want: Vec<&str> = expected_names.iter().map(String::as_str).collect();
    have.sort_unstable();
    have.dedup();
    want.sort_unstable();
    want.dedup();
    if have != want {
        return Some(ReissueReason::WrongNames);
    }
    if now >= leaf.not_after {
        return Some(ReissueReason::Expired);
    }
    if leaf.not_after - now < renew_before {
        return Some(ReissueReason::NearExpiry);
    }
    None
}
