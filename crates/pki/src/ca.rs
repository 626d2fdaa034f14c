//! The signing CA: creation, adoption, rotation with cross-signing (docs/behavior.md §4, §5.2, §5.4, §9.3).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;
use zeroize::Zeroizing;

use crate::PkiError;
use crate::der::{is_printable, rsa_modulus};
use crate::inspect::{CertInfo, cert_pem};
use crate::key::{KeyAlgorithm, PrivateKey, generate_key};

const DAY: u64 = 24 * 60 * 60;

/// Lifetimes and thresholds of the signing CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// CN prefix; the CN is `<prefix>@<unix seconds at first creation>`.
    pub cn_prefix: String,
    /// CA certificate lifetime.
    pub lifetime: Duration,
    /// Rotate when less than this validity remains.
    pub rotation_threshold: Duration,
    /// Minimum validity of the cross-signed certificate A (OLD under NEW) from the rotation time.
    pub trust_bridge_min: Duration,
    /// Key algorithm for new CA keys.
    pub key_algorithm: KeyAlgorithm,
}

/// Default CN prefix (upstream value).
pub const DEFAULT_CN_PREFIX: &str = "openshift-service-serving-signer";

impl Default for CaConfig {
    /// Documentation rule (docs/behavior.md §14): 790-day CA, rotate with less than 6 months (183 days) left.
    fn default() -> Self {
        CaConfig {
            cn_prefix: DEFAULT_CN_PREFIX.to_string(),
            lifetime: Duration::from_secs(790 * DAY),
            rotation_threshold: Duration::from_secs(183 * DAY),
            trust_bridge_min: Duration::from_secs(183 * DAY),
            key_algorithm: KeyAlgorithm::Rsa2048,
        }
    }
}

impl CaConfig {
    /// Upstream code values: 790 d lifetime, 395 d threshold and trust bridge.
    pub fn upstream() -> Self {
        CaConfig {
            rotation_threshold: Duration::from_secs(395 * DAY),
            trust_bridge_min: Duration::from_secs(395 * DAY),
            ..Self::default()
        }
    }

    /// Short-rotation preset (docs/behavior.md §6): 2h30m lifetime, 1h15m threshold and trust bridge.
    pub fn short_rotation() -> Self {
        CaConfig {
            lifetime: Duration::from_secs(150 * 60),
            rotation_threshold: Duration::from_secs(75 * 60),
            trust_bridge_min: Duration::from_secs(75 * 60),
            ..Self::default()
        }
    }

    /// Check the configuration is usable.
    pub fn validate(&self) -> Result<(), PkiError> {
        let bad = |m: &str| Err(PkiError::InvalidConfig(m.to_string()));
        if self.cn_prefix.trim().is_empty() {
            return bad("cn_prefix must not be empty");
        }
        if self.lifetime < Duration::from_secs(60) {
            return bad("lifetime must be at least 1 minute");
        }
        if self.lifetime > Duration::from_secs(100 * 365 * DAY) {
            return bad("lifetime must be at most 100 years");
        }
        if self.rotation_threshold.is_zero() || self.rotation_threshold >= self.lifetime {
            return bad("rotation_threshold must be > 0 and < lifetime");
        }
        if self.trust_bridge_min.is_zero() || self.trust_bridge_min > self.lifetime {
            return bad("trust_bridge_min must be > 0 and <= lifetime");
        }
        Ok(())
    }
}

/// The content of the CA Secret (docs/behavior.md §4).
#[derive(Debug)]
pub struct SigningCa {
    cert: CertInfo,
    tls_crt_pem: String,
    tls_crt_ders: Vec<Vec<u8>>,
    key: PrivateKey,
    ca_bundle_pem: Option<String>,
    intermediate: Option<(Vec<u8>, String)>,
}

/// Result of a rotation.
#[derive(Debug)]
pub struct Rotation {
    /// New CA Secret content: NEW cert/key, bundle `[NEW, A]`, intermediate B.
    pub ca: SigningCa,
    /// A.notAfter: until when clients of the previous CA keep working with new leaves and vice versa.
    pub previous_trusted_until: OffsetDateTime,
}

pub(crate) fn add(t: OffsetDateTime, d: Duration) -> Result<OffsetDateTime, PkiError> {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d))
        .ok_or_else(|| PkiError::InvalidConfig("duration out of range".into()))
}

pub(crate) fn random_serial() -> Result<SerialNumber, PkiError> {
    loop {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).map_err(|e| PkiError::Sign(format!("rng: {e}")))?;
        b[0] &= 0x7f;
        let v = u64::from_be_bytes(b);
        if v != 0 {
            let bytes = v.to_be_bytes();
            let skip = bytes.iter().take_while(|x| **x == 0).count();
            return Ok(SerialNumber::from_slice(&bytes[skip..]));
        }
    }
}

/// SKID: SHA-1 of the RSA modulus (docs/behavior.md §5.1), or SHA-256[..20] of the EC point (docs/behavior.md §5.6).
pub(crate) fn compute_skid(key: &PrivateKey) -> Result<Vec<u8>, PkiError> {
    use aws_lc_rs::digest;
    if key.algorithm().is_rsa() {
        let m = rsa_modulus(key.public_key_raw())?;
        Ok(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &m)
            .as_ref()
            .to_vec())
    } else {
        Ok(digest::digest(&digest::SHA256, key.public_key_raw()).as_ref()[..20].to_vec())
    }
}

/// A single-CN name, PrintableString when possible, otherwise UTF8String.
pub(crate) fn cn_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    let value = if is_printable(cn) {
        rcgen::string::PrintableString::try_from(cn.to_string())
            .map(DnValue::PrintableString)
            .unwrap_or_else(|_| DnValue::Utf8String(cn.to_string()))
    } else {
        DnValue::Utf8String(cn.to_string())
    };
    dn.push(DnType::CommonName, value);
    dn
}

/// Rebuild an rcgen name from raw DER, keeping string types; refuses what rcgen cannot represent.
pub(crate) fn dn_from_raw(raw: &[u8]) -> Result<DistinguishedName, PkiError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let (_, name) =
        X509Name::from_der(raw).map_err(|e| PkiError::CertificateParse(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    let mut seen = Vec::new();
    let unsupported = |m: &str| PkiError::UnsupportedName(m.to_string());
    for rdn in name.iter() {
        let attrs: Vec<_> = rdn.iter().collect();
        let [attr] = attrs.as_slice() else {
            return Err(unsupported("multi-valued RDN"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("attribute OID"))?
            .collect();
        if seen.contains(&oid) {
            return Err(unsupported("repeated attribute type"));
        }
        seen.push(oid.clone());
        let data = attr.attr_value().data;
        let s = std::str::from_utf8(data).map_err(|_| unsupported("non-UTF-8 attribute"))?;
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => rcgen::string::PrintableString::try_from(s.to_string())
                .map(DnValue::PrintableString)
                .map_err(|_| unsupported("invalid PrintableString"))?,
            Tag::Ia5String => rcgen::string::Ia5String::try_from(s.to_string())
                .map(DnValue::Ia5String)
                .map_err(|_| unsupported("invalid IA5String"))?,
            Tag::Utf8String => DnValue::Utf8String(s.to_string()),
            _ => return Err(unsupported("unsupported string type")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

fn ca_key_usages(alg: KeyAlgorithm) -> Vec<KeyUsagePurpose> {
    if alg.is_rsa() {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ]
    } else {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ]
    }
}

fn sign_err(e: rcgen::Error) -> PkiError {
    PkiError::Sign(e.to_string())
}

/// Issuer handle for a CA certificate: name and AKID source are read from the certificate.
pub(crate) fn issuer_for<'a>(
    ca_der: &[u8],
    key: &'a PrivateKey,
) -> Result<Issuer<'static, &'a rcgen::KeyPair>, PkiError> {
    Issuer::from_ca_cert_der(&ca_der.to_vec().into(), &key.pair).map_err(sign_err)
}

/// Check the issued certificate's issuer equals the CA subject byte-for-byte.
pub(crate) fn check_issuer(issued: &CertInfo, ca_subject_raw: &[u8]) -> Result<(), PkiError> {
    if issued.issuer_raw == ca_subject_raw {
        Ok(())
    } else {
        Err(PkiError::IssuerMismatch)
    }
}

fn self_signed_ca(
    dn: DistinguishedName,
    key: &PrivateKey,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(random_serial()?);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = ca_key_usages(key.algorithm());
    p.key_identifier_method = KeyIdMethod::PreSpecified(compute_skid(key)?);
    p.use_authority_key_identifier_extension = true;
    Ok(p.self_signed(&key.pair).map_err(sign_err)?.der().to_vec())
}

/// Parameters re-creating `template` (subject, notBefore, SKID, keyUsage, basicConstraints).
fn template_params(
    template_der: &[u8],
    template_key: &PrivateKey,
) -> Result<CertificateParams, PkiError> {
    let (_, x) = X509Certificate::from_der(template_der)
        .map_err(|e| PkiError::CertificateParse(e.to_string()))?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn_from_raw(x.subject().as_raw())?;
    p.not_before = x.validity().not_before.to_datetime();
    p.not_after = x.validity().not_after.to_datetime();
    p.serial_number = Some(random_serial()?);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = ca_key_usages(template_key.algorithm());
    let mut skid = None;
    for ext in x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => skid = Some(k.0.to_vec()),
            ParsedExtension::BasicConstraints(bc) => {
                p.is_ca = match bc.path_len_constraint {
                    Some(n) => IsCa::Ca(BasicConstraints::Constrained(n.min(255) as u8)),
                    None => IsCa::Ca(BasicConstraints::Unconstrained),
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                let mut v = Vec::new();
                let map = [
                    (ku.digital_signature(), KeyUsagePurpose::DigitalSignature),
                    (ku.non_repudiation(), KeyUsagePurpose::ContentCommitment),
                    (ku.key_encipherment(), KeyUsagePurpose::KeyEncipherment),
                    (ku.data_encipherment(), KeyUsagePurpose::DataEncipherment),
                    (ku.key_agreement(), KeyUsagePurpose::KeyAgreement),
                    (ku.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
                    (ku.crl_sign(), KeyUsagePurpose::CrlSign),
                    (ku.encipher_only(), KeyUsagePurpose::EncipherOnly),
                    (ku.decipher_only(), KeyUsagePurpose::DecipherOnly),
                ];
                for (on, purpose) in map {
                    if on {
                        v.push(purpose);
                    }
                }
                p.key_usages = v;
            }
            _ => {}
        }
    }
    let skid = match skid {
        Some(s) => s,
        None => compute_skid(template_key)?,
    };
    p.key_identifier_method = KeyIdMethod::PreSpecified(skid);
    Ok(p)
}

/// Cross-sign `template` (with its key's public half) by `issuer_der`/`issuer_key`.
fn cross_sign(
    template_der: &[u8],
    template_key: &PrivateKey,
    issuer_der: &[u8],
    issuer_info: &CertInfo,
    issuer_key: &PrivateKey,
    not_after: Option<OffsetDateTime>,
) -> Result<CertInfo, PkiError> {
    let mut p = template_params(template_der, template_key)?;
    if let Some(na) = not_after {
        p.not_after = na;
    }
    p.use_authority_key_identifier_extension = issuer_info.skid.is_some();
    let issuer = issuer_for(issuer_der, issuer_key)?;
    let cert = p.signed_by(&template_key.pair, &issuer).map_err(sign_err)?;
    let info = CertInfo::from_der(cert.der())?;
    check_issuer(&info, &issuer_info.subject_raw)?;
    Ok(info)
}

fn concat_pem<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    ders.into_iter().map(cert_pem).collect()
}

/// DER bodies of the CERTIFICATE blocks of a certificate field of the CA Secret.
///
/// Any block with another label (a private key, say) is refused, and so is a CERTIFICATE block
/// that does not parse: these fields are published to every tenant. CERTIFICATE blocks with PEM
/// headers are skipped, as in [`crate::pem_cert_ders`].
fn cert_field_ders(pem_bytes: &[u8], field: &'static str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(pem_bytes)
        .map_err(|e| PkiError::CertificateParse(format!("{field}: {e}")))?;
    let mut ders = Vec::with_capacity(blocks.len());
    for b in blocks {
        if b.tag() != "CERTIFICATE" {
            return Err(PkiError::NonCertificateInCertField {
                field,
                label: b.tag().to_string(),
            });
        }
        if b.headers().iter().next().is_none() {
            let der = b.into_contents();
            // Everything here is published: a block that is not a certificate would reach every
            // client's trust bundle (found by the fuzz target ca_secret).
            CertInfo::from_der(&der)
                .map_err(|e| PkiError::CertificateParse(format!("{field}: {e}")))?;
            ders.push(der);
        }
    }
    Ok(ders)
}

/// Whether the certificate declares the key's algorithm (and curve). The raw key bytes alone can
/// match under another declared algorithm; such a CA would sign leaves that no client, nor our
/// own reuse check, can verify, so every leaf would be re-issued on every pass (found by the
/// fuzz target ca_secret).
fn declares_algorithm(cert: &X509Certificate<'_>, alg: KeyAlgorithm) -> bool {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    };
    let spki = &cert.public_key().algorithm;
    let curve = match alg {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            return spki.algorithm == OID_PKCS1_RSAENCRYPTION;
        }
        KeyAlgorithm::EcdsaP256 => OID_EC_P256,
        KeyAlgorithm::EcdsaP384 => OID_NIST_EC_P384,
    };
    spki.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .parameters()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|oid| oid == curve)
}

fn non_empty(b: Option<&[u8]>) -> Option<&[u8]> {
    b.filter(|b| !b.iter().all(|c| c.is_ascii_whitespace()))
}

impl SigningCa {
    /// Create a new self-signed CA, CN `<prefix>@<unix secs of now>` (docs/behavior.md §5.2).
    pub fn create(cfg: &CaConfig, now: OffsetDateTime) -> Result<Self, PkiError> {
        cfg.validate()?;
        let key = generate_key(cfg.key_algorithm)?;
        let cn = format!("{}@{}", cfg.cn_prefix, now.unix_timestamp());
        let der = self_signed_ca(
            cn_dn(&cn),
            &key,
            now - time::Duration::seconds(1),
            add(now, cfg.lifetime)?,
        )?;
        Self::from_parts(der, key, None, None)
    }

    fn from_parts(
        der: Vec<u8>,
        key: PrivateKey,
        ca_bundle_pem: Option<String>,
        intermediate: Option<(Vec<u8>, String)>,
    ) -> Result<Self, PkiError> {
        let cert = CertInfo::from_der(&der)?;
        Ok(SigningCa {
            tls_crt_pem: cert_pem(&der),
            tls_crt_ders: vec![der],
            cert,
            key,
            ca_bundle_pem,
            intermediate,
        })
    }

    /// Adopt the data of an existing CA Secret.
    ///
    /// Certificate fields (`tls.crt`, `ca-bundle.crt`, `intermediate-ca.crt`) may hold only
    /// `CERTIFICATE` PEM blocks: any other block (a private key, say) is refused with
    /// [`PkiError::NonCertificateInCertField`]. Everything this CA publishes is re-encoded from
    /// the parsed DER (canonical PEM, see [`cert_pem`]), never copied from the input text; for
    /// standard PEM (as Go's `pem.Encode` writes it) that is byte-identical to the input. The key
    /// PEM (`tls.key`) is kept byte-for-byte.
    ///
    /// An expired CA is adopted like any other (use [`SigningCa::is_expired`] /
    /// [`SigningCa::needs_rotation`] and rotate it); `_now` is kept for API stability.
    pub fn from_secret_data(
        tls_crt: &[u8],
        tls_key: &[u8],
        ca_bundle: Option<&[u8]>,
        intermediate: Option<&[u8]>,
        _now: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let ders = cert_field_ders(tls_crt, "tls.crt")?;
        let first = ders.first().ok_or(PkiError::NoCertificate("tls.crt"))?;
        let cert = CertInfo::from_der(first)?;
        if !cert.is_ca {
            return Err(PkiError::NotCa {
                cn: cert.subject_cn,
            });
        }
        let key_text = std::str::from_utf8(tls_key)
            .map_err(|_| PkiError::InvalidKey("tls.key is not valid PEM text".into()))?;
        let key = PrivateKey::from_pem(key_text)?;
        let (_, x) = X509Certificate::from_der(first)
            .map_err(|e| PkiError::CertificateParse(e.to_string()))?;
        if x.public_key().subject_public_key.data.as_ref() != key.public_key_raw()
            || !declares_algorithm(&x, key.algorithm())
        {
            return Err(PkiError::KeyMismatch);
        }
        let ca_bundle_pem = match non_empty(ca_bundle) {
            Some(b) => {
                let bundle = cert_field_ders(b, "ca-bundle.crt")?;
                if bundle.is_empty() {
                    return Err(PkiError::NoCertificate("ca-bundle.crt"));
                }
                Some(concat_pem(bundle.iter().map(Vec::as_slice)))
            }
            None => None,
        };
        let intermediate = match non_empty(intermediate) {
            Some(b) => {
                let mut i = cert_field_ders(b, "intermediate-ca.crt")?;
                if i.len() != 1 {
                    return Err(PkiError::IntermediateCount { found: i.len() });
                }
                let der = i.remove(0);
                CertInfo::from_der(&der)?;
                let text = cert_pem(&der);
                Some((der, text))
            }
            None => None,
        };
        Ok(SigningCa {
            cert,
            tls_crt_pem: concat_pem(ders.iter().map(Vec::as_slice)),
            tls_crt_ders: ders,
            key,
            ca_bundle_pem,
            intermediate,
        })
    }

    /// `tls.crt`: the current CA certificate PEM (canonical, re-encoded from DER).
    pub fn tls_crt_pem(&self) -> String {
        self.tls_crt_pem.clone()
    }

    /// `tls.key`: the CA key PEM (original bytes when adopted).
    pub fn tls_key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.pem().to_string())
    }

    /// `ca-bundle.crt`, present after a rotation (canonical, re-encoded from DER).
    pub fn ca_bundle_pem(&self) -> Option<String> {
        self.ca_bundle_pem.clone()
    }

    /// `intermediate-ca.crt`, present after a rotation (canonical, re-encoded from DER).
    pub fn intermediate_pem(&self) -> Option<String> {
        self.intermediate.as_ref().map(|(_, p)| p.clone())
    }

    /// What clients trust: `ca-bundle.crt` if present, else `tls.crt`.
    pub fn bundle_pem(&self) -> String {
        self.ca_bundle_pem
            .clone()
            .unwrap_or_else(|| self.tls_crt_pem.clone())
    }

    /// CN of the CA subject.
    pub fn subject_cn(&self) -> String {
        self.cert.subject_cn.clone()
    }

    /// notAfter of the current CA certificate.
    pub fn not_after(&self) -> OffsetDateTime {
        self.cert.not_after
    }

    /// SKID of the current CA certificate (empty for legacy CAs without one).
    pub fn skid(&self) -> Vec<u8> {
        self.cert.skid.clone().unwrap_or_default()
    }

    /// SKID if the CA certificate has one.
    pub fn skid_opt(&self) -> Option<&[u8]> {
        self.cert.skid.as_deref()
    }

    /// Parsed current CA certificate.
    pub fn cert_info(&self) -> &CertInfo {
        &self.cert
    }

    /// The CA key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    pub(crate) fn tls_crt_ders(&self) -> &[Vec<u8>] {
        &self.tls_crt_ders
    }

    pub(crate) fn intermediate_der(&self) -> Option<&[u8]> {
        self.intermediate.as_ref().map(|(d, _)| d.as_slice())
    }

    /// True when the current CA certificate is no longer valid at `now` (`now >= notAfter`).
    ///
    /// An expired CA is still adopted by [`SigningCa::from_secret_data`] and can be rotated
    /// ([`SigningCa::rotate`]), but [`issue_serving`](crate::issue_serving) refuses to sign with it.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.cert.not_after
    }

    /// True when less than `cfg.rotation_threshold` of validity remains (always true once expired).
    pub fn needs_rotation(&self, cfg: &CaConfig, now: OffsetDateTime) -> bool {
        let remaining = self.cert.not_after - now;
        self.is_expired(now) || remaining < cfg.rotation_threshold
    }

    /// Rotate (docs/behavior.md §9.3): NEW keeps the subject; bundle `[NEW, A]`, intermediate B.
    ///
    /// Works the same way on an expired CA: its key still signs B (NEW under OLD), and A (OLD under
    /// NEW) gets notAfter = `max(OLD.notAfter, now + trust_bridge_min)`, i.e. a valid cross-signed
    /// copy of the old CA, so clients whose verifier ignores the validity of trust anchors keep
    /// accepting new chains through B (see docs/pki.md, "Expired CA").
    pub fn rotate(&self, cfg: &CaConfig, now: OffsetDateTime) -> Result<Rotation, PkiError> {
        cfg.validate()?;
        let new_key = generate_key(cfg.key_algorithm)?;
        let new_der = self_signed_ca(
            dn_from_raw(&self.cert.subject_raw)?,
            &new_key,
            now - time::Duration::seconds(1),
            add(now, cfg.lifetime)?,
        )?;
        let new_info = CertInfo::from_der(&new_der)?;
        if new_info.subject_raw != self.cert.subject_raw {
            return Err(PkiError::UnsupportedName(
                "subject could not be copied byte-for-byte".into(),
            ));
        }
        let a_not_after = self.cert.not_after.max(add(now, cfg.trust_bridge_min)?);
        let a = cross_sign(
            &self.cert.der,
            &self.key,
            &new_der,
            &new_info,
            &new_key,
            Some(a_not_after),
        )?;
        let b = cross_sign(
            &new_der,
            &new_key,
            &self.cert.der,
            &self.cert,
            &self.key,
            None,
        )?;
        let bundle = concat_pem([new_der.as_slice(), a.der.as_slice()]);
        let b_pem = cert_pem(&b.der);
        let ca = Self::from_parts(new_der, new_key, Some(bundle), Some((b.der, b_pem)))?;
        Ok(Rotation {
            ca,
            previous_trusted_until: a.not_after,
        })
    }
}
