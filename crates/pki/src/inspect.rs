//! Certificate inspection (x509-parser) and the serving-cert reissue check (docs/behavior.md §7.3).

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::PkiError;
use crate::ca::SigningCa;
use crate::key::PrivateKey;

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

impl CertInfo {
    /// Value of the Service UID extension ([`SERVICE_UID_OID`](crate::SERVICE_UID_OID)), if the
    /// certificate has one whose value is a DER PrintableString or UTF8String.
    pub fn service_uid(&self) -> Option<String> {
        let (_, cert) = X509Certificate::from_der(&self.der).ok()?;
        service_uid_of(&cert)
    }
}

fn service_uid_of(cert: &X509Certificate<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::{Any, Tag};
    let ext = cert.extensions().iter().find(|e| {
        e.oid
            .iter()
            .is_some_and(|arcs| arcs.eq(crate::SERVICE_UID_OID.iter().copied()))
    })?;
    let (rest, any) = Any::from_der(ext.value).ok()?;
    if !rest.is_empty() {
        return None;
    }
    match any.header.tag() {
        Tag::PrintableString | Tag::Utf8String => {
            std::str::from_utf8(any.data).ok().map(str::to_string)
        }
        _ => None,
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
    /// The leaf's signature does not verify with the current CA's key (nor with the key of a
    /// certificate in the current bundle carrying the leaf's authority key id).
    BadSignature,
    /// `tls.key` is missing or empty.
    KeyMissing,
    /// `tls.key` cannot be parsed as an RSA, P-256 or P-384 private key.
    KeyUnparsable,
    /// `tls.key` does not belong to the leaf's public key.
    KeyMismatch,
    /// The leaf's Service UID extension is missing or differs from the expected UID.
    UidMismatch,
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
            ReissueReason::BadSignature => "bad_signature",
            ReissueReason::KeyMissing => "key_missing",
            ReissueReason::KeyUnparsable => "key_unparsable",
            ReissueReason::KeyMismatch => "key_mismatch",
            ReissueReason::UidMismatch => "uid_mismatch",
        }
    }
}

impl fmt::Display for ReissueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The leaf (first certificate) of a serving Secret's `tls.crt`.
fn leaf_of(tls_crt: Option<&[u8]>) -> Result<CertInfo, ReissueReason> {
    let bytes = match tls_crt {
        Some(b) if !b.iter().all(|c| c.is_ascii_whitespace()) => b,
        _ => return Err(ReissueReason::Missing),
    };
    parse_pem_certs(bytes)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or(ReissueReason::Unparsable)
}

/// docs/behavior.md §7.3: AKID equals the CA's SKID, or (legacy CA without SKID) the issuer CN matches.
fn issued_by_ca(leaf: &CertInfo, ca: &SigningCa) -> bool {
    match ca.skid_opt() {
        Some(skid) => leaf.akid.as_deref() == Some(skid),
        None => leaf.issuer_cn == ca.subject_cn(),
    }
}

fn names_match(leaf: &CertInfo, expected_names: &[String]) -> bool {
    let mut have: Vec<&str> = leaf.dns_names.iter().map(String::as_str).collect();
    let mut want: Vec<&str> = expected_names.iter().map(String::as_str).collect();
    have.sort_unstable();
    have.dedup();
    want.sort_unstable();
    want.dedup();
    have == want
}

fn time_reason(
    leaf: &CertInfo,
    renew_before: Duration,
    now: OffsetDateTime,
) -> Option<ReissueReason> {
    if now >= leaf.not_after {
        return Some(ReissueReason::Expired);
    }
    if leaf.not_after - now < renew_before {
        return Some(ReissueReason::NearExpiry);
    }
    None
}

/// RFC 3339 in UTC with whole seconds and a `Z` suffix (`2028-11-28T14:20:41Z`): the format of
/// the expiry annotations and of every time the CLI prints.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// docs/behavior.md §7.3 check plus an expiry check read from the certificate itself.
///
/// Does not verify the leaf's signature nor look at `tls.key`; see [`verify_serving_secret`].
pub fn needs_reissue(
    tls_crt: Option<&[u8]>,
    ca: &SigningCa,
    expected_names: &[String],
    renew_before: Duration,
    now: OffsetDateTime,
) -> Option<ReissueReason> {
    let leaf = match leaf_of(tls_crt) {
        Ok(l) => l,
        Err(r) => return Some(r),
    };
    if !issued_by_ca(&leaf, ca) {
        return Some(ReissueReason::WrongIssuer);
    }
    if !names_match(&leaf, expected_names) {
        return Some(ReissueReason::WrongNames);
    }
    time_reason(&leaf, renew_before, now)
}

/// True when `leaf` carries a valid signature by the current CA's key, or by the key of a
/// certificate in the CA's current bundle whose subject is the leaf's issuer and whose SKID is
/// the leaf's AKID.
fn signed_by_ca(leaf: &X509Certificate<'_>, ca: &SigningCa) -> bool {
    let verifies = |signer_der: &[u8]| {
        X509Certificate::from_der(signer_der)
            .is_ok_and(|(_, s)| leaf.verify_signature(Some(s.public_key())).is_ok())
    };
    if verifies(&ca.cert_info().der) {
        return true;
    }
    let akid = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref(),
            _ => None,
        })
        .map(|k| k.0);
    let Ok(bundle) = parse_pem_certs(ca.bundle_pem().as_bytes()) else {
        return false;
    };
    bundle.iter().any(|c| {
        c.subject_raw == leaf.issuer().as_raw()
            && akid.is_some()
            && c.skid.as_deref() == akid
            && verifies(&c.der)
    })
}

/// Full check of an existing serving Secret: is its content still fine to keep?
///
/// Pure: everything is passed in. Returns the first reason found, in this order:
///
/// 1. `tls.crt` missing ([`Missing`](ReissueReason::Missing)) or no parsable leaf
///    ([`Unparsable`](ReissueReason::Unparsable));
/// 2. not issued by the current CA per docs/behavior.md §7.3 (AKID/SKID, legacy CN), or the leaf's issuer name
///    is not the CA subject byte-for-byte ([`WrongIssuer`](ReissueReason::WrongIssuer));
/// 3. the leaf's signature does not verify with the current CA's key, or with the key of a
///    certificate of the current bundle with the leaf's issuer name and AKID
///    ([`BadSignature`](ReissueReason::BadSignature));
/// 4. DNS SAN set differs ([`WrongNames`](ReissueReason::WrongNames));
/// 5. `expected_uid` given and the Service UID extension is missing or different
///    ([`UidMismatch`](ReissueReason::UidMismatch));
/// 6. `tls.key` missing/empty ([`KeyMissing`](ReissueReason::KeyMissing)), not parsable
///    ([`KeyUnparsable`](ReissueReason::KeyUnparsable)), or not the leaf's key
///    ([`KeyMismatch`](ReissueReason::KeyMismatch));
/// 7. expired or within `renew_before` of notAfter ([`Expired`](ReissueReason::Expired),
///    [`NearExpiry`](ReissueReason::NearExpiry)).
///
/// A Secret that passes [`verify_serving_secret`] also passes [`needs_reissue`] with the same
/// arguments.
pub fn verify_serving_secret(
    tls_crt: Option<&[u8]>,
    tls_key: Option<&[u8]>,
    ca: &SigningCa,
    expected_names: &[String],
    expected_uid: Option<&str>,
    renew_before: Duration,
    now: OffsetDateTime,
) -> Option<ReissueReason> {
    let leaf = match leaf_of(tls_crt) {
        Ok(l) => l,
        Err(r) => return Some(r),
    };
    if !issued_by_ca(&leaf, ca) || leaf.issuer_raw != ca.cert_info().subject_raw {
        return Some(ReissueReason::WrongIssuer);
    }
    let Ok((_, x)) = X509Certificate::from_der(&leaf.der) else {
        return Some(ReissueReason::Unparsable);
    };
    if !signed_by_ca(&x, ca) {
        return Some(ReissueReason::BadSignature);
    }
    if !names_match(&leaf, expected_names) {
        return Some(ReissueReason::WrongNames);
    }
    if let Some(uid) = expected_uid
        && service_uid_of(&x).as_deref() != Some(uid)
    {
        return Some(ReissueReason::UidMismatch);
    }
    let key_bytes = match tls_key {
        Some(k) if !k.iter().all(|c| c.is_ascii_whitespace()) => k,
        _ => return Some(ReissueReason::KeyMissing),
    };
    let Some(key) = std::str::from_utf8(key_bytes)
        .ok()
        .and_then(|t| PrivateKey::from_pem(t).ok())
    else {
        return Some(ReissueReason::KeyUnparsable);
    };
    if x.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Some(ReissueReason::KeyMismatch);
    }
    time_reason(&leaf, renew_before, now)
}
