//! Readable descriptions of certificates, and which certificate verifies which.
//!
//! Certificates are parsed with the pki crate ([`parse_pem_certs`], [`CertInfo`]). The pki crate
//! exposes no general "does X verify Y" check, so verification is done here with x509-parser (the
//! library the pki crate uses): a certificate is *verified by* another when its issuer name equals
//! the other's subject byte-for-byte **and** its signature verifies with the other's public key.
//! Key ids (SKID/AKID) are shown but are not what decides.

use std::fmt::Write as _;

use serde::Serialize;
use service_ca_pki::{CertInfo, parse_pem_certs};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::cli_support::{Paint, relative, rfc3339};

/// One parsed certificate with the names and key type spelled out.
#[derive(Clone, Debug)]
pub struct Cert {
    /// What the pki crate parsed.
    pub info: CertInfo,
    /// Full subject, e.g. `CN=openshift-service-serving-signer@1700000000`.
    pub subject: String,
    /// Full issuer.
    pub issuer: String,
    /// Key type, e.g. `RSA 2048`, `ECDSA P-256`.
    pub key: String,
}

/// Parses every CERTIFICATE block of a PEM text.
pub fn parse_pem(pem: &[u8]) -> anyhow::Result<Vec<Cert>> {
    Ok(parse_pem_certs(pem)?
        .into_iter()
        .map(Cert::from_info)
        .collect())
}

/// DER of every CERTIFICATE block; empty when the text holds none or does not parse.
pub fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    service_ca_pki::pem_cert_ders(pem).unwrap_or_default()
}

/// Whether two PEM texts hold the same certificates in the same order (compared as DER, so PEM
/// line wrapping does not matter). Two texts without any certificate are not "the same".
pub fn same_certs(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (ders(a), ders(b));
    !a.is_empty() && a == b
}

impl Cert {
    /// Describes a parsed certificate.
    pub fn from_info(info: CertInfo) -> Self {
        let (subject, issuer, key) = match X509Certificate::from_der(&info.der) {
            Ok((_, x)) => (
                x.subject().to_string(),
                x.issuer().to_string(),
                key_type(&x),
            ),
            Err(_) => (
                format!("CN={}", info.subject_cn),
                format!("CN={}", info.issuer_cn),
                "unknown".into(),
            ),
        };
        Self {
            info,
            subject,
            issuer,
            key,
        }
    }

    /// True when `signer` issued this certificate: the issuer name is `signer`'s subject and
    /// the signature verifies with `signer`'s public key.
    pub fn verified_by(&self, signer: &Cert) -> bool {
        if self.info.issuer_raw != signer.info.subject_raw {
            return false;
        }
        let (Ok((_, me)), Ok((_, them))) = (
            X509Certificate::from_der(&self.info.der),
            X509Certificate::from_der(&signer.info.der),
        ) else {
            return false;
        };
        me.verify_signature(Some(them.public_key())).is_ok()
    }

    /// Self-signed: verified by its own key.
    pub fn self_signed(&self) -> bool {
        self.verified_by(self)
    }

    /// `leaf`, `CA (self-signed)` or `CA (cross-signed)`.
    pub fn role(&self) -> &'static str {
        match (self.info.is_ca, self.self_signed()) {
            (false, _) => "leaf",
            (true, true) => "CA (self-signed)",
            (true, false) => "CA (cross-signed)",
        }
    }

    /// A serializable view, with `verified_by` already worked out.
    pub fn view(&self, index: usize, verified_by: Vec<String>, now: OffsetDateTime) -> CertView {
        let validity = if now >= self.info.not_after {
            format!("expired {}", relative(self.info.not_after, now))
        } else if now < self.info.not_before {
            format!(
                "not yet valid (starts {})",
                relative(self.info.not_before, now)
            )
        } else {
            format!("valid, expires {}", relative(self.info.not_after, now))
        };
        CertView {
            index,
            role: self.role().into(),
            subject: self.subject.clone(),
            issuer: self.issuer.clone(),
            dns_names: self.info.dns_names.clone(),
            serial: self.info.serial_hex.clone(),
            not_before: rfc3339(self.info.not_before),
            not_after: rfc3339(self.info.not_after),
            validity,
            key: self.key.clone(),
            subject_key_id: self.info.skid.as_deref().map(hex_colon),
            authority_key_id: self.info.akid.as_deref().map(hex_colon),
            is_ca: self.info.is_ca,
            verified_by,
        }
    }

    /// `CN=... (serial ...)`: how to name this certificate in a line.
    pub fn short(&self) -> String {
        format!("{} (serial {})", self.subject, self.info.serial_hex)
    }
}

/// The subjectPublicKey bits of a DER certificate (to compare with a private key's public half).
pub fn public_key_bits(der: &[u8]) -> Option<Vec<u8>> {
    let (_, x) = X509Certificate::from_der(der).ok()?;
    Some(x.public_key().subject_public_key.data.to_vec())
}

/// `RSA 2048`, `ECDSA P-256`: a key algorithm as [`Cert::key`] spells it.
pub fn algorithm_label(alg: service_ca_pki::KeyAlgorithm) -> String {
    use service_ca_pki::KeyAlgorithm as A;
    match alg {
        A::Rsa2048 => "RSA 2048",
        A::Rsa3072 => "RSA 3072",
        A::Rsa4096 => "RSA 4096",
        A::EcdsaP256 => "ECDSA P-256",
        A::EcdsaP384 => "ECDSA P-384",
    }
    .into()
}

/// Key type and size of a certificate's public key.
fn key_type(x: &X509Certificate<'_>) -> String {
    match x.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let modulus = rsa.modulus;
            let skip = modulus.iter().take_while(|b| **b == 0).count();
            let m = &modulus[skip..];
            let bits = m
                .first()
                .map(|b| m.len() * 8 - b.leading_zeros() as usize)
                .unwrap_or(0);
            format!("RSA {bits}")
        }
        Ok(PublicKey::EC(ec)) => match ec.key_size() {
            256 => "ECDSA P-256".into(),
            384 => "ECDSA P-384".into(),
            521 | 528 => "ECDSA P-521".into(),
            n => format!("ECDSA ({n} bits)"),
        },
        Ok(_) | Err(_) => x.public_key().algorithm.algorithm.to_id_string(),
    }
}

/// `ab:cd:ef`.
pub fn hex_colon(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A certificate as `inspect` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CertView {
    /// Position in its PEM text.
    pub index: usize,
    /// `leaf`, `CA (self-signed)`, `CA (cross-signed)`.
    pub role: String,
    /// Full subject.
    pub subject: String,
    /// Full issuer.
    pub issuer: String,
    /// dNSName SANs.
    pub dns_names: Vec<String>,
    /// Serial, lowercase hex.
    pub serial: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// `valid, expires in 729d` / `expired 2d ago`.
    pub validity: String,
    /// Key type and size.
    pub key: String,
    /// Subject key id.
    pub subject_key_id: Option<String>,
    /// Authority key id.
    pub authority_key_id: Option<String>,
    /// basicConstraints CA.
    pub is_ca: bool,
    /// Which certificates verify this one (issuer name and signature checked).
    pub verified_by: Vec<String>,
}

impl CertView {
    /// Writes the readable form, indented by `indent`.
    pub fn write_text(&self, out: &mut String, label: &str, paint: &Paint) {
        let _ = writeln!(
            out,
            "  [{}] {}  {}",
            self.index,
            paint.bold(&self.role),
            paint.bold(&self.subject)
        );
        let mut field = |name: &str, value: &str| {
            let _ = writeln!(out, "      {name:<18}{value}");
        };
        field("issuer", &self.issuer);
        if !self.dns_names.is_empty() {
            field("SANs", &self.dns_names.join(", "));
        }
        field("serial", &self.serial);
        field("not before", &self.not_before);
        field(
            "not after",
            &format!("{} ({})", self.not_after, self.validity),
        );
        field("key", &self.key);
        field(
            "subject key id",
            self.subject_key_id.as_deref().unwrap_or("none"),
        );
        field(
            "authority key id",
            self.authority_key_id.as_deref().unwrap_or("none"),
        );
        let verified = if self.verified_by.is_empty() {
            paint.bad(&format!(
                "nothing in {label} verifies this certificate (issuer name + signature checked)"
            ))
        } else {
            self.verified_by.join("; ")
        };
        field("verified by", &verified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_ca_pki::{CaConfig, KeyAlgorithm, SigningCa};

    #[test]
    fn verification_and_roles() {
        let now = OffsetDateTime::now_utc();
        let cfg = CaConfig {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ..CaConfig::default()
        };
        let old = SigningCa::create(&cfg, now).unwrap();
        let rotated = old.rotate(&cfg, now).unwrap().ca;
        let old_cert = parse_pem(old.tls_crt_pem().as_bytes()).unwrap().remove(0);
        let bundle = parse_pem(rotated.bundle_pem().as_bytes()).unwrap();
        assert_eq!(bundle.len(), 2);
        let (new, a) = (&bundle[0], &bundle[1]);
        assert_eq!(new.role(), "CA (self-signed)");
        assert_eq!(a.role(), "CA (cross-signed)");
        assert!(a.verified_by(new));
        assert!(!a.verified_by(&old_cert));
        assert!(!new.verified_by(&old_cert));
        assert_eq!(new.key, "ECDSA P-256");
        assert!(same_certs(
            rotated.bundle_pem().as_bytes(),
            rotated.ca_bundle_pem().unwrap().as_bytes()
        ));
        assert!(!same_certs(b"", b""));
    }

    #[test]
    fn rsa_key_size() {
        let now = OffsetDateTime::now_utc();
        let ca = SigningCa::create(&CaConfig::default(), now).unwrap();
        let cert = parse_pem(ca.tls_crt_pem().as_bytes()).unwrap().remove(0);
        assert_eq!(cert.key, "RSA 2048");
        assert!(
            cert.subject
                .starts_with("CN=openshift-service-serving-signer@")
        );
    }
}
