//! Serving (leaf) certificates (docs/behavior.md §5.3, §5.7).

use std::time::Duration;

use rcgen::{
    CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::PkiError;
use crate::ca::{SigningCa, add, check_issuer, cn_dn, compute_skid, issuer_for, random_serial};
use crate::der::der_string;
use crate::inspect::{CertInfo, cert_pem};
use crate::key::PrivateKey;

/// OID of the Service UID extension.
pub const SERVICE_UID_OID: [u64; 11] = [1, 3, 6, 1, 4, 1, 2312, 17, 100, 2, 1];

/// Default leaf lifetime (730 days).
pub const DEFAULT_SERVING_LIFETIME: Duration = Duration::from_secs(730 * 24 * 3600);

/// Order of the certificates in a serving Secret's `tls.crt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChainOrder {
    /// `[leaf, B (intermediate), CA]`: works for OpenSSL clients holding a pre-rotation bundle.
    #[default]
    Portable,
    /// `[leaf, CA, B]`: upstream byte layout (docs/behavior.md §5.7).
    Upstream,
}

/// What to issue a serving certificate for.
#[derive(Debug, Clone)]
pub struct ServingRequest<'a> {
    /// Service name.
    pub service: &'a str,
    /// Service namespace.
    pub namespace: &'a str,
    /// Service UID, written into the custom extension.
    pub uid: &'a str,
    /// Headless Service (`clusterIP: None`): adds wildcard names.
    pub headless: bool,
    /// Cluster domain, normally `cluster.local`.
    pub cluster_domain: &'a str,
    /// Requested lifetime (capped at the CA's notAfter).
    pub lifetime: Duration,
    /// Chain order of `tls.crt`.
    pub chain_order: ChainOrder,
    /// DNS names added to the standard ones (`service-ca.dev/extra-dns-names`; validated by the
    /// caller). The subject CN stays the first standard name.
    pub extra_dns_names: &'a [String],
}

/// A freshly issued serving certificate.
#[derive(Clone)]
pub struct IssuedCert {
    /// `tls.crt`: the leaf followed by the CA chain.
    pub cert_chain_pem: String,
    /// `tls.key`: the leaf key PEM.
    pub key_pem: Zeroizing<String>,
    /// Leaf notAfter.
    pub not_after: OffsetDateTime,
}

/// Never prints the key.
impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The sorted DNS SANs for a Service (docs/behavior.md §5.3).
pub fn serving_dns_names(
    service: &str,
    namespace: &str,
    headless: bool,
    cluster_domain: &str,
) -> Vec<String> {
    let domain = cluster_domain.trim_matches('.');
    let base = format!("{service}.{namespace}.svc");
    let mut names = vec![format!("{base}.{domain}"), base.clone()];
    if headless {
        names.push(format!("*.{base}"));
        names.push(format!("*.{base}.{domain}"));
    }
    names.sort();
    names.dedup();
    names
}

fn leaf_key_usages(key: &PrivateKey) -> Vec<KeyUsagePurpose> {
    if key.algorithm().is_rsa() {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    }
}

/// Issue a serving certificate signed by the current CA with the given (fresh) key.
pub fn issue_serving(
    ca: &SigningCa,
    req: &ServingRequest<'_>,
    key: PrivateKey,
    now: OffsetDateTime,
) -> Result<IssuedCert, PkiError> {
    if req.service.is_empty() || req.namespace.is_empty() {
        return Err(PkiError::InvalidRequest(
            "service and namespace must not be empty".into(),
        ));
    }
    if req.cluster_domain.trim_matches('.').is_empty() {
        return Err(PkiError::InvalidRequest(
            "cluster_domain must not be empty".into(),
        ));
    }
    if req.lifetime.is_zero() {
        return Err(PkiError::InvalidRequest("lifetime must be positive".into()));
    }
    if now >= ca.not_after() {
        return Err(PkiError::CaExpired {
            cn: ca.subject_cn(),
            not_after: ca.not_after(),
        });
    }
    let standard = serving_dns_names(req.service, req.namespace, req.headless, req.cluster_domain);
    let cn = standard.first().cloned().unwrap_or_default();
    let mut names = standard;
    names.extend(req.extra_dns_names.iter().cloned());
    names.sort();
    names.dedup();
    let mut p = CertificateParams::default();
    p.distinguished_name = cn_dn(&cn);
    p.subject_alt_names = names
        .iter()
        .map(|n| {
            rcgen::string::Ia5String::try_from(n.clone())
                .map(SanType::DnsName)
                .map_err(|e| PkiError::InvalidRequest(format!("name {n:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    p.not_before = now - time::Duration::seconds(1);
    p.not_after = add(now, req.lifetime)
        .unwrap_or(ca.not_after())
        .min(ca.not_after());
    p.serial_number = Some(random_serial()?);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = leaf_key_usages(&key);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_identifier_method = KeyIdMethod::PreSpecified(compute_skid(&key)?);
    p.use_authority_key_identifier_extension = ca.skid_opt().is_some();
    p.custom_extensions = vec![CustomExtension::from_oid_content(
        &SERVICE_UID_OID,
        der_string(req.uid),
    )];
    let ca_der = ca.cert_info().der.as_slice();
    let issuer = issuer_for(ca_der, ca.key())?;
    let leaf = p
        .signed_by(&key.pair, &issuer)
        .map_err(|e| PkiError::Sign(e.to_string()))?;
    let info = CertInfo::from_der(leaf.der())?;
    check_issuer(&info, &ca.cert_info().subject_raw)?;

    let mut chain = cert_pem(leaf.der());
    let ca_certs: String = ca.tls_crt_ders().iter().map(|d| cert_pem(d)).collect();
    let inter = ca.intermediate_der().map(cert_pem).unwrap_or_default();
    match req.chain_order {
        ChainOrder::Portable => {
            chain.push_str(&inter);
            chain.push_str(&ca_certs);
        }
        ChainOrder::Upstream => {
            chain.push_str(&ca_certs);
            chain.push_str(&inter);
        }
    }
    Ok(IssuedCert {
        cert_chain_pem: chain,
        key_pem: Zeroizing::new(key.pem().to_string()),
        not_after: info.not_after,
    })
}
