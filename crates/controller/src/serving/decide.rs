//! The pure decision of the serving-certificate controller: given a Service, the Secret it asks
//! for (if any), the current CA, the configuration and the time, what must happen (docs/behavior.md §7, §8).
//!
//! The signer's and the updater's rules are merged into one decision, so both can never disagree.

use std::collections::BTreeMap;
use std::time::Duration;

use service_ca_pki::{ReissueReason, SigningCa};
use time::OffsetDateTime;

use crate::names::{self, first_non_empty};

/// What the decision needs to know about a Service.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceView<'a> {
    /// Service name.
    pub(crate) name: &'a str,
    /// Service namespace.
    pub(crate) namespace: &'a str,
    /// Service UID.
    pub(crate) uid: &'a str,
    /// `spec.clusterIP == "None"`.
    pub(crate) headless: bool,
    /// Service annotations.
    pub(crate) annotations: Option<&'a BTreeMap<String, String>>,
}

/// What the decision needs to know about the requested Secret.
#[derive(Clone, Default)]
pub(crate) struct SecretView<'a> {
    /// Secret type.
    pub(crate) type_: Option<&'a str>,
    /// Secret annotations.
    pub(crate) annotations: Option<&'a BTreeMap<String, String>>,
    /// `(apiVersion, kind, name, uid)` of each ownerReference.
    pub(crate) owners: Vec<(&'a str, &'a str, &'a str, &'a str)>,
    /// `data["tls.crt"]`.
    pub(crate) tls_crt: Option<&'a [u8]>,
    /// `data["tls.key"]`.
    pub(crate) tls_key: Option<&'a [u8]>,
    /// Names of data keys other than `tls.crt` and `tls.key`.
    pub(crate) extra_keys: Vec<&'a str>,
    /// Whether the Secret carries the managed-by label.
    pub(crate) labelled: bool,
}

/// Never prints the key.
impl std::fmt::Debug for SecretView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretView")
            .field("type_", &self.type_)
            .field("annotations", &self.annotations)
            .field("owners", &self.owners)
            .field("has_tls_crt", &self.tls_crt.is_some())
            .field("has_tls_key", &self.tls_key.is_some())
            .field("extra_keys", &self.extra_keys)
            .field("labelled", &self.labelled)
            .finish()
    }
}

/// Settings the decision depends on.
#[derive(Clone, Debug)]
pub(crate) struct DecideConfig<'a> {
    /// Cluster DNS domain.
    pub(crate) cluster_domain: &'a str,
    /// Renewal margin.
    pub(crate) renew_before: Duration,
    /// Namespaces whose Services never get a certificate.
    pub(crate) denied_namespaces: &'a [String],
}

/// Why a Secret is being (re-)issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IssueReason {
    /// The Secret does not exist.
    Missing,
    /// Its certificate needs re-issuing.
    Certificate(ReissueReason),
    /// A user asked for a new certificate (`service-ca renew`, names::RENEW_REQUEST).
    Requested,
}

impl IssueReason {
    /// Short stable name, used in logs and Events.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            IssueReason::Missing => "missing",
            IssueReason::Certificate(r) => r.as_str(),
            IssueReason::Requested => "requested",
        }
    }
}

/// Metadata repairs that need no new certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tidy {
    /// Data keys to remove (docs/behavior.md §8.2 step 5).
    pub(crate) remove_keys: Vec<String>,
    /// The ownerReference to the Service is missing or stale.
    pub(crate) owner_reference: bool,
    /// Informational/expiry annotations or the managed-by label are missing or stale.
    pub(crate) metadata: bool,
}

impl Tidy {
    fn is_empty(&self) -> bool {
        self.remove_keys.is_empty() && !self.owner_reference && !self.metadata
    }
}

/// Why the controller refuses to write the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The annotation names a Secret that cannot exist.
    InvalidSecretName(String),
    /// A Secret with that name exists and does not belong to this Service.
    ForeignSecret,
    /// Our Secret has a type other than `kubernetes.io/tls` (immutable, cannot be fixed in place).
    WrongType(String),
    /// `default/kubernetes`: a certificate for the API server's own name is never issued.
    SystemService,
    /// The Service's namespace is on the administrator's deny list.
    DeniedNamespace,
}

impl Refusal {
    /// Error text written to the Service's error annotation.
    pub(crate) fn message(&self, namespace: &str, secret: &str, uid: &str) -> String {
        match self {
            Refusal::InvalidSecretName(why) => {
                format!("invalid secret name {secret:?} in annotation: {why}")
            }
            // Same text as the original, so existing tooling that greps for it keeps working.
            Refusal::ForeignSecret => {
                format!("secret {namespace}/{secret} does not have corresponding service UID {uid}")
            }
            Refusal::SystemService => format!(
                "service {namespace}/kubernetes is the API server's own: service-ca never issues a certificate for its name"
            ),
            Refusal::DeniedNamespace => format!(
                "namespace {namespace} is on service-ca's deny list (--deny-namespaces); ask the administrator"
            ),
            Refusal::WrongType(t) => format!(
                "secret {namespace}/{secret} has type {t:?}, not {}; delete it to let service-ca recreate it",
                names::TLS_SECRET_TYPE
            ),
        }
    }

    /// Stable category for metrics.
    pub(crate) fn category(&self) -> &'static str {
        match self {
            Refusal::InvalidSecretName(_) => "invalid_secret_name",
            Refusal::ForeignSecret => "foreign_secret",
            Refusal::WrongType(_) => "wrong_secret_type",
            Refusal::SystemService => "system_service",
            Refusal::DeniedNamespace => "denied_namespace",
        }
    }

    /// Whether waiting can help (a foreign Secret may be deleted or garbage-collected); the
    /// others need the user to change the Service or the Secret.
    pub(crate) fn may_resolve_by_itself(&self) -> bool {
        matches!(self, Refusal::ForeignSecret)
    }
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Issue a certificate and create or rewrite the Secret.
    Issue(IssueReason),
    /// The certificate is fine; fix metadata only.
    Tidy {
        /// What to repair.
        tidy: Tidy,
        /// The certificate's notAfter (for the expiry annotations).
        not_after: OffsetDateTime,
    },
    /// Everything is in order; look again at `renew_at`.
    UpToDate {
        /// When the certificate enters the renewal window.
        renew_at: OffsetDateTime,
        /// The certificate's notAfter.
        not_after: OffsetDateTime,
    },
    /// Do not touch the Secret; report the problem on the Service.
    Refuse(Refusal),
}

/// The Secret name a Service requests: beta if non-empty, else alpha (docs/behavior.md §3.2).
pub(crate) fn requested_secret_name<'a>(svc: &ServiceView<'a>) -> Option<&'a str> {
    requested_secret_name_in(svc.annotations)
}

/// [`requested_secret_name`] from a Service's annotations.
pub(crate) fn requested_secret_name_in(
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<&str> {
    first_non_empty(
        annotations,
        &[names::SECRET_NAME_BETA, names::SECRET_NAME_ALPHA],
    )
}

/// The alpha secret name when both secret-name annotations are set and differ: the original's
/// updater keeps renewing an existing Secret of that name too (docs/behavior.md §3.2).
pub(crate) fn paired_alpha_secret_name<'a>(svc: &ServiceView<'a>) -> Option<&'a str> {
    let beta = first_non_empty(svc.annotations, &[names::SECRET_NAME_BETA])?;
    let alpha = first_non_empty(svc.annotations, &[names::SECRET_NAME_ALPHA])?;
    (alpha != beta).then_some(alpha)
}

/// The renew token a user set on the Service (`service-ca renew`), if any.
pub(crate) fn renew_request<'a>(svc: &ServiceView<'a>) -> Option<&'a str> {
    first_non_empty(svc.annotations, &[names::RENEW_REQUEST])
}

/// Whether a secret-name annotation is present but every one of them is empty: the user asked
/// for a certificate but named no Secret (the original silently ignores this).
pub(crate) fn empty_request(svc: &ServiceView<'_>) -> bool {
    let Some(a) = svc.annotations else {
        return false;
    };
    let values: Vec<&String> = [names::SECRET_NAME_BETA, names::SECRET_NAME_ALPHA]
        .iter()
        .filter_map(|k| a.get(*k))
        .collect();
    !values.is_empty() && values.iter().all(|v| v.trim().is_empty())
}

/// Whether the Secret names the Service as its origin (either UID flavour).
pub(crate) fn secret_belongs_to(secret: &SecretView<'_>, uid: &str) -> bool {
    let Some(a) = secret.annotations else {
        return false;
    };
    [names::ORIGINATING_UID_BETA, names::ORIGINATING_UID_ALPHA]
        .iter()
        .any(|k| a.get(*k).map(String::as_str) == Some(uid))
}

/// Validates a Secret name as a DNS-1123 subdomain, as the API server will.
pub(crate) fn validate_secret_name(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("longer than 253 characters ({})", name.len()));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if let Some(c) = name.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "character {c:?} is not allowed (lowercase letters, digits, '-' and '.' only)"
        ));
    }
    for label in name.split('.') {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !alnum(label.chars().next()) || !alnum(label.chars().last()) {
            return Err("each part must start and end with a letter or digit".into());
        }
    }
    Ok(())
}

/// Decides what to do for one Service (docs/behavior.md §7.2–§7.4, §8.2, with the documented improvements:
/// foreign Secrets are never touched, metadata of our Secrets is preserved, expiry is read from
/// the certificate itself).
pub(crate) fn decide(
    svc: &ServiceView<'_>,
    secret_name: &str,
    secret: Option<&SecretView<'_>>,
    ca: &SigningCa,
    cfg: &DecideConfig<'_>,
    now: OffsetDateTime,
) -> Decision {
    if svc.namespace == "default" && svc.name == "kubernetes" {
        return Decision::Refuse(Refusal::SystemService);
    }
    if cfg.denied_namespaces.iter().any(|ns| ns == svc.namespace) {
        return Decision::Refuse(Refusal::DeniedNamespace);
    }
    if let Err(why) = validate_secret_name(secret_name) {
        return Decision::Refuse(Refusal::InvalidSecretName(why));
    }
    let Some(secret) = secret else {
        return Decision::Issue(IssueReason::Missing);
    };
    if !secret_belongs_to(secret, svc.uid) {
        return Decision::Refuse(Refusal::ForeignSecret);
    }
    let expected = service_ca_pki::serving_dns_names(
        svc.name,
        svc.namespace,
        svc.headless,
        cfg.cluster_domain,
    );
    let leaf = secret
        .tls_crt
        .and_then(|crt| service_ca_pki::parse_pem_certs(crt).ok())
        .and_then(|certs| certs.into_iter().next());
    let margin = leaf
        .as_ref()
        .map_or(cfg.renew_before, |l| effective_margin(cfg.renew_before, l));
    // Verified reuse: the leaf must verify against the CA, carry this Service's UID, and
    // tls.key must parse and match it (docs/behavior.md §7.3, with this project's additions).
    let reissue = service_ca_pki::verify_serving_secret(
        secret.tls_crt,
        secret.tls_key,
        ca,
        &expected,
        Some(svc.uid),
        margin,
        now,
    );
    let type_ = secret.type_.unwrap_or("Opaque");
    if type_ != names::TLS_SECRET_TYPE {
        return Decision::Refuse(Refusal::WrongType(type_.to_string()));
    }
    if let Some(reason) = reissue {
        return Decision::Issue(IssueReason::Certificate(reason));
    }
    if let Some(token) = renew_request(svc)
        && secret
            .annotations
            .and_then(|a| a.get(names::RENEWED_FOR))
            .map(String::as_str)
            != Some(token)
    {
        return Decision::Issue(IssueReason::Requested);
    }
    let Some(leaf) = leaf else {
        return Decision::Issue(IssueReason::Certificate(ReissueReason::Unparsable));
    };
    let tidy = Tidy {
        remove_keys: secret.extra_keys.iter().map(|k| k.to_string()).collect(),
        owner_reference: !secret.owners.iter().any(|(api, kind, name, uid)| {
            *api == "v1" && *kind == "Service" && *name == svc.name && *uid == svc.uid
        }),
        metadata: !metadata_in_order(svc, secret, leaf.not_after),
    };
    if !tidy.is_empty() {
        return Decision::Tidy {
            tidy,
            not_after: leaf.not_after,
        };
    }
    Decision::UpToDate {
        renew_at: leaf.not_after - margin,
        not_after: leaf.not_after,
    }
}

/// The renewal margin for one certificate: the configured margin, but never more than half of
/// the certificate's own lifetime. A leaf capped by a CA that expires soon (or a short-lived test
/// configuration) is thus renewed in the second half of its life, never in a loop.
pub(crate) fn effective_margin(
    renew_before: Duration,
    leaf: &service_ca_pki::CertInfo,
) -> Duration {
    margin_for_lifetime(renew_before, leaf.not_after - leaf.not_before)
}

/// [`effective_margin`] for a certificate of the given lifetime.
pub(crate) fn margin_for_lifetime(renew_before: Duration, lifetime: time::Duration) -> Duration {
    renew_before.min(Duration::try_from(lifetime / 2).unwrap_or(Duration::ZERO))
}

/// Whether the Secret's informational metadata matches what an issuance would write.
fn metadata_in_order(
    svc: &ServiceView<'_>,
    secret: &SecretView<'_>,
    not_after: OffsetDateTime,
) -> bool {
    let Some(a) = secret.annotations else {
        return false;
    };
    let expiry = format_expiry(not_after);
    let has = |k: &str, v: &str| a.get(k).map(String::as_str) == Some(v);
    let non_empty = |k: &str| a.get(k).is_some_and(|v| !v.is_empty());
    let name_key = if uses_beta_flavour(svc) {
        names::ORIGINATING_NAME_BETA
    } else {
        names::ORIGINATING_NAME_ALPHA
    };
    secret.labelled
        && has(names::EXPIRY_BETA, &expiry)
        && has(names::EXPIRY_ALPHA, &expiry)
        && has(name_key, svc.name)
        && non_empty(names::OWNING_COMPONENT)
        && non_empty(names::DESCRIPTION)
}

/// Beta-flavoured originating annotations when the beta secret-name key is present (docs/behavior.md §3.2).
pub(crate) fn uses_beta_flavour(svc: &ServiceView<'_>) -> bool {
    svc.annotations
        .is_some_and(|a| a.contains_key(names::SECRET_NAME_BETA))
}

/// RFC 3339, UTC, whole seconds, `Z` suffix (docs/behavior.md §3.1 #13).
pub(crate) fn format_expiry(t: OffsetDateTime) -> String {
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

/// Consecutive failures recorded on the Service: beta counter if non-empty, else alpha; a
/// non-integer counts as 0 (docs/behavior.md §3.2).
pub(crate) fn failure_count(annotations: Option<&BTreeMap<String, String>>) -> u32 {
    first_non_empty(
        annotations,
        &[names::ERROR_NUM_BETA, names::ERROR_NUM_ALPHA],
    )
    .and_then(|v| v.trim().parse().ok())
    .unwrap_or(0)
}

/// Whether someone reset the error counter to ask for a retry now: an error is recorded but the
/// counter reads 0. service-ca never writes that state itself (it writes the error and a counter
/// of at least 1 together, and removes both on success), so it only appears by a user's hand.
pub(crate) fn counter_reset(annotations: Option<&BTreeMap<String, String>>) -> bool {
    first_non_empty(annotations, &[names::ERROR_BETA, names::ERROR_ALPHA]).is_some()
        && failure_count(annotations) == 0
}

/// Retry delay after `failures` consecutive failures: 5 s doubling, capped at `cap`. Unlike the
/// original, which gives up after 10 failures, we keep retrying at the cap.
pub(crate) fn retry_delay(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(5);
    base.checked_mul(1u32 << failures.min(20))
        .unwrap_or(cap)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_ca_pki::{CaConfig, ChainOrder, KeyAlgorithm, ServingRequest};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);
    const UID: &str = "6f1c1d2e-0000-4000-8000-000000000001";
    const DAY: Duration = Duration::from_secs(86400);

    /// (what, secret, headless, requested name, now, expected decision)
    type Row<'a> = (
        &'static str,
        Option<SecretView<'a>>,
        bool,
        &'static str,
        OffsetDateTime,
        Decision,
    );

    struct Fixture {
        ca: SigningCa,
        crt: String,
        key: String,
        other_crt: String,
        other_key: String,
        annotations: BTreeMap<String, String>,
        svc_annotations: BTreeMap<String, String>,
    }

    fn issue(ca: &SigningCa, headless: bool, lifetime: Duration) -> (String, String) {
        let key = service_ca_pki::generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let issued = service_ca_pki::issue_serving(
            ca,
            &ServingRequest {
                service: "api",
                namespace: "shop",
                uid: UID,
                headless,
                cluster_domain: "cluster.local",
                lifetime,
                chain_order: ChainOrder::Portable,
                extra_dns_names: &[],
            },
            key,
            NOW,
        )
        .unwrap();
        (issued.cert_chain_pem, issued.key_pem.to_string())
    }

    fn fixture() -> Fixture {
        let cfg = CaConfig {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ..CaConfig::default()
        };
        let ca = SigningCa::create(&cfg, NOW).unwrap();
        let other_ca = SigningCa::create(&cfg, NOW).unwrap();
        let (crt, key) = issue(&ca, false, 730 * DAY);
        let (other_crt, other_key) = issue(&other_ca, false, 730 * DAY);
        let not_after = service_ca_pki::parse_pem_certs(crt.as_bytes()).unwrap()[0].not_after;
        let annotations = [
            (names::ORIGINATING_UID_BETA, UID.to_string()),
            (names::ORIGINATING_NAME_BETA, "api".to_string()),
            (names::EXPIRY_BETA, format_expiry(not_after)),
            (names::EXPIRY_ALPHA, format_expiry(not_after)),
            (names::OWNING_COMPONENT, "service-ca".to_string()),
            (names::DESCRIPTION, "x".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let svc_annotations = [(names::SECRET_NAME_BETA.to_string(), "api-tls".to_string())].into();
        Fixture {
            ca,
            crt,
            key,
            other_crt,
            other_key,
            annotations,
            svc_annotations,
        }
    }

    fn good<'a>(f: &'a Fixture) -> SecretView<'a> {
        SecretView {
            type_: Some(names::TLS_SECRET_TYPE),
            annotations: Some(&f.annotations),
            owners: vec![("v1", "Service", "api", UID)],
            tls_crt: Some(f.crt.as_bytes()),
            tls_key: Some(f.key.as_bytes()),
            extra_keys: vec![],
            labelled: true,
        }
    }

    fn run(
        f: &Fixture,
        secret: Option<&SecretView<'_>>,
        headless: bool,
        name: &str,
        now: OffsetDateTime,
    ) -> Decision {
        let svc = ServiceView {
            name: "api",
            namespace: "shop",
            uid: UID,
            headless,
            annotations: Some(&f.svc_annotations),
        };
        let cfg = DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces: &[],
        };
        decide(&svc, name, secret, &f.ca, &cfg, now)
    }

    #[test]
    fn decision_table() {
        let f = fixture();
        let other_uid: BTreeMap<String, String> = [(
            names::ORIGINATING_UID_BETA.to_string(),
            "someone-else".to_string(),
        )]
        .into();
        let alpha_uid: BTreeMap<String, String> = f
            .annotations
            .iter()
            .map(|(k, v)| {
                let k = if k == names::ORIGINATING_UID_BETA {
                    names::ORIGINATING_UID_ALPHA
                } else {
                    k
                };
                (k.to_string(), v.clone())
            })
            .collect();
        let garbage = b"-----BEGIN CERTIFICATE-----\nbm90\n-----END CERTIFICATE-----\n";
        let not_after = service_ca_pki::parse_pem_certs(f.crt.as_bytes()).unwrap()[0].not_after;
        let cert = |r| Decision::Issue(IssueReason::Certificate(r));
        let rows: Vec<Row<'_>> = vec![
            (
                "secret absent",
                None,
                false,
                "api-tls",
                NOW,
                Decision::Issue(IssueReason::Missing),
            ),
            (
                "invalid name",
                None,
                false,
                "invalid-${X}",
                NOW,
                Decision::Refuse(Refusal::InvalidSecretName(
                    "character '$' is not allowed (lowercase letters, digits, '-' and '.' only)"
                        .into(),
                )),
            ),
            (
                "user-made secret",
                Some(SecretView {
                    annotations: None,
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::Refuse(Refusal::ForeignSecret),
            ),
            (
                "another service's secret",
                Some(SecretView {
                    annotations: Some(&other_uid),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::Refuse(Refusal::ForeignSecret),
            ),
            (
                "wrong type",
                Some(SecretView {
                    type_: Some("Opaque"),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::Refuse(Refusal::WrongType("Opaque".into())),
            ),
            (
                "tls.crt missing",
                Some(SecretView {
                    tls_crt: None,
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                cert(ReissueReason::Missing),
            ),
            (
                "tls.crt corrupt",
                Some(SecretView {
                    tls_crt: Some(garbage),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                cert(ReissueReason::Unparsable),
            ),
            (
                "issued by another CA",
                Some(SecretView {
                    tls_crt: Some(f.other_crt.as_bytes()),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                cert(ReissueReason::WrongIssuer),
            ),
            (
                "service became headless",
                Some(good(&f)),
                true,
                "api-tls",
                NOW,
                cert(ReissueReason::WrongNames),
            ),
            (
                "near expiry",
                Some(good(&f)),
                false,
                "api-tls",
                not_after - time::Duration::days(29),
                cert(ReissueReason::NearExpiry),
            ),
            (
                "tls.key empty",
                Some(SecretView {
                    tls_key: Some(b""),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                cert(ReissueReason::KeyMissing),
            ),
            (
                "tls.key of another certificate",
                Some(SecretView {
                    tls_key: Some(f.other_key.as_bytes()),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                cert(ReissueReason::KeyMismatch),
            ),
            (
                "tls.key not a key",
                Some(SecretView {
                    tls_key: Some(
                        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                    ),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                cert(ReissueReason::KeyUnparsable),
            ),
            (
                "extra data keys",
                Some(SecretView {
                    extra_keys: vec!["extra"],
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::Tidy {
                    tidy: Tidy {
                        remove_keys: vec!["extra".into()],
                        ..Tidy::default()
                    },
                    not_after,
                },
            ),
            (
                "ownerReference missing",
                Some(SecretView {
                    owners: vec![],
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::Tidy {
                    tidy: Tidy {
                        owner_reference: true,
                        ..Tidy::default()
                    },
                    not_after,
                },
            ),
            (
                "ownerReference stale uid",
                Some(SecretView {
                    owners: vec![("v1", "Service", "api", "old")],
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::Tidy {
                    tidy: Tidy {
                        owner_reference: true,
                        ..Tidy::default()
                    },
                    not_after,
                },
            ),
            (
                "label missing",
                Some(SecretView {
                    labelled: false,
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::Tidy {
                    tidy: Tidy {
                        metadata: true,
                        ..Tidy::default()
                    },
                    not_after,
                },
            ),
            (
                "alpha UID is ours too",
                Some(SecretView {
                    annotations: Some(&alpha_uid),
                    ..good(&f)
                }),
                false,
                "api-tls",
                NOW,
                Decision::UpToDate {
                    renew_at: not_after - 30 * DAY,
                    not_after,
                },
            ),
            (
                "valid",
                Some(good(&f)),
                false,
                "api-tls",
                NOW,
                Decision::UpToDate {
                    renew_at: not_after - 30 * DAY,
                    not_after,
                },
            ),
        ];
        for (what, secret, headless, name, now, expected) in rows {
            assert_eq!(
                run(&f, secret.as_ref(), headless, name, now),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn a_renew_request_reissues_once() {
        let f = fixture();
        let cfg = DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces: &[],
        };
        let mut svc_annotations = f.svc_annotations.clone();
        svc_annotations.insert(names::RENEW_REQUEST.into(), "1700000000".into());
        let svc = ServiceView {
            name: "api",
            namespace: "shop",
            uid: UID,
            headless: false,
            annotations: Some(&svc_annotations),
        };
        let secret = good(&f);
        assert_eq!(
            decide(&svc, "api-tls", Some(&secret), &f.ca, &cfg, NOW),
            Decision::Issue(IssueReason::Requested)
        );
        let mut done = f.annotations.clone();
        done.insert(names::RENEWED_FOR.into(), "1700000000".into());
        let renewed = SecretView {
            annotations: Some(&done),
            ..good(&f)
        };
        assert!(matches!(
            decide(&svc, "api-tls", Some(&renewed), &f.ca, &cfg, NOW),
            Decision::UpToDate { .. }
        ));
    }

    #[test]
    fn system_services_and_denied_namespaces_are_refused() {
        let f = fixture();
        let denied = vec!["shop".to_string()];
        let svc = |namespace, name| ServiceView {
            name,
            namespace,
            uid: UID,
            headless: false,
            annotations: Some(&f.svc_annotations),
        };
        let cfg = |denied_namespaces| DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces,
        };
        let decide_for = |svc: ServiceView<'_>, cfg: DecideConfig<'_>| {
            decide(&svc, "api-tls", None, &f.ca, &cfg, NOW)
        };
        assert_eq!(
            decide_for(svc("default", "kubernetes"), cfg(&[])),
            Decision::Refuse(Refusal::SystemService)
        );
        assert_eq!(
            decide_for(svc("shop", "api"), cfg(&denied)),
            Decision::Refuse(Refusal::DeniedNamespace)
        );
        assert_eq!(
            decide_for(svc("shop", "api"), cfg(&[])),
            Decision::Issue(IssueReason::Missing)
        );
        assert_eq!(
            decide_for(svc("default", "api"), cfg(&denied)),
            Decision::Issue(IssueReason::Missing)
        );
    }

    #[test]
    fn counter_reset_is_an_error_with_a_zero_counter() {
        let with = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(!counter_reset(None));
        assert!(!counter_reset(Some(&with(&[
            (names::ERROR_BETA, "e"),
            (names::ERROR_NUM_BETA, "3")
        ]))));
        assert!(counter_reset(Some(&with(&[
            (names::ERROR_BETA, "e"),
            (names::ERROR_NUM_BETA, "0")
        ]))));
        assert!(counter_reset(Some(&with(&[(names::ERROR_ALPHA, "e")]))));
        assert!(!counter_reset(Some(&with(&[(names::ERROR_NUM_BETA, "0")]))));
        assert_eq!(
            failure_count(Some(&with(&[(names::ERROR_NUM_BETA, "4294967295")]))),
            u32::MAX
        );
    }

    #[test]
    fn margin_is_capped_at_half_the_lifetime() {
        let f = fixture();
        let (crt, key) = issue(&f.ca, false, Duration::from_secs(100));
        let secret = SecretView {
            tls_crt: Some(crt.as_bytes()),
            tls_key: Some(key.as_bytes()),
            ..good(&f)
        };
        let leaf = &service_ca_pki::parse_pem_certs(crt.as_bytes()).unwrap()[0];
        assert_eq!(
            effective_margin(30 * DAY, leaf),
            Duration::from_millis(50_500)
        );
        // Early in its life: not renewed (only metadata differs from the fixture's expiry).
        assert!(matches!(
            run(&f, Some(&secret), false, "api-tls", NOW),
            Decision::Tidy { .. }
        ));
        // In the second half: renewed.
        let later = NOW + time::Duration::seconds(60);
        assert_eq!(
            run(&f, Some(&secret), false, "api-tls", later),
            Decision::Issue(IssueReason::Certificate(ReissueReason::NearExpiry))
        );
    }

    #[test]
    fn names_counters_and_delays() {
        assert!(validate_secret_name("api-tls").is_ok());
        assert!(validate_secret_name("a.b-c.d").is_ok());
        assert!(validate_secret_name("Api").is_err());
        assert!(validate_secret_name("-api").is_err());
        assert!(validate_secret_name("").is_err());
        assert!(validate_secret_name(&"a".repeat(254)).is_err());

        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(failure_count(None), 0);
        assert_eq!(
            failure_count(Some(&ann(&[(names::ERROR_NUM_BETA, "3")]))),
            3
        );
        assert_eq!(
            failure_count(Some(&ann(&[
                (names::ERROR_NUM_BETA, ""),
                (names::ERROR_NUM_ALPHA, "7")
            ]))),
            7
        );
        assert_eq!(
            failure_count(Some(&ann(&[(names::ERROR_NUM_BETA, "x")]))),
            0
        );

        let cap = Duration::from_secs(600);
        assert_eq!(retry_delay(0, cap), Duration::from_secs(5));
        assert_eq!(retry_delay(3, cap), Duration::from_secs(40));
        assert_eq!(retry_delay(10, cap), cap);
        assert_eq!(retry_delay(u32::MAX, cap), cap);

        fn svc(a: &BTreeMap<String, String>) -> ServiceView<'_> {
            ServiceView {
                annotations: Some(a),
                ..ServiceView::default()
            }
        }
        let empty = ann(&[(names::SECRET_NAME_BETA, "")]);
        assert!(empty_request(&svc(&empty)));
        assert_eq!(requested_secret_name(&svc(&empty)), None);
        let both = ann(&[
            (names::SECRET_NAME_BETA, ""),
            (names::SECRET_NAME_ALPHA, "old"),
        ]);
        assert!(!empty_request(&svc(&both)));
        assert_eq!(requested_secret_name(&svc(&both)), Some("old"));
        assert!(!uses_beta_flavour(&svc(&ann(&[(
            names::SECRET_NAME_ALPHA,
            "old"
        )]))));
        assert!(uses_beta_flavour(&svc(&both)));

        assert_eq!(
            format_expiry(datetime!(2028-11-28 14:20:41.9 UTC)),
            "2028-11-28T14:20:41Z"
        );
    }
}
