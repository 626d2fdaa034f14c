//! The pure decision of the serving-certificate controller: given a Service, the Secret it asks
//! for (if any), the current CA, the configuration and the time, what must happen (docs/behavior.md §7, §8).
//!
//! The signer's and the updater's rules are merged into one decision, so both can never disagree.

use std::collections::BTreeMap;
use std::time::Duration;

use service_ca_pki::{KeyAlgorithm, ReissueReason, SigningCa};
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
    /// The password of the PKCS#12 stores, as read from the Secret the Service names
    /// (names::KEYSTORE_PASSWORD_SECRET); the decision never reads Secrets itself.
    pub(crate) keystore_password: StorePassword<'a>,
}

/// The outcome of reading the password Secret a Service names for its PKCS#12 stores.
#[derive(Clone, Copy, Default)]
pub(crate) enum StorePassword<'a> {
    /// Not read (no stores requested, or no password Secret named).
    #[default]
    NotRead,
    /// The named Secret's key.
    Read(&'a str),
    /// The named Secret or key is missing or unusable: why, for the Service's error annotation.
    Unavailable(&'a str),
}

/// Never prints the password.
impl std::fmt::Debug for StorePassword<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorePassword::NotRead => f.write_str("NotRead"),
            StorePassword::Read(_) => f.write_str("Read(<redacted>)"),
            StorePassword::Unavailable(why) => f.debug_tuple("Unavailable").field(why).finish(),
        }
    }
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
    /// Secret labels.
    pub(crate) labels: Option<&'a BTreeMap<String, String>>,
    /// `data["ca.crt"]` (only kept when the Service asks for it).
    pub(crate) ca_crt: Option<&'a [u8]>,
    /// `data["tls-combined.pem"]` (only kept when the Service asks for it).
    pub(crate) combined_pem: Option<&'a [u8]>,
    /// `data["keystore.p12"]` (only kept when the Service asks for it).
    pub(crate) keystore_p12: Option<&'a [u8]>,
    /// `data["truststore.p12"]` (only kept when the Service asks for it).
    pub(crate) truststore_p12: Option<&'a [u8]>,
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
            .field("labels", &self.labels)
            .field("has_ca_crt", &self.ca_crt.is_some())
            .field("has_combined_pem", &self.combined_pem.is_some())
            .field("has_keystore_p12", &self.keystore_p12.is_some())
            .field("has_truststore_p12", &self.truststore_p12.is_some())
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
    /// Wildcard extra DNS names outside the Service's own domain are allowed.
    pub(crate) allow_external_wildcards: bool,
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
    /// The key's algorithm is not the one the Service asks for (names::KEY_ALGORITHM).
    KeyAlgorithm,
}

impl IssueReason {
    /// Whether this issuance undoes what another writer did to a Secret service-ca wrote (its
    /// data damaged or replaced): only such writes count toward a write fight. Re-issues for
    /// service-ca's own reasons (a new CA, renewal, the Service's own changes, a request) never
    /// do, and a deleted Secret is always re-created: deletion is the documented way to re-issue.
    pub(crate) fn undoes_another_writer(&self) -> bool {
        match self {
            IssueReason::Missing | IssueReason::Requested | IssueReason::KeyAlgorithm => false,
            IssueReason::Certificate(reason) => matches!(
                reason,
                ReissueReason::Missing
                    | ReissueReason::Unparsable
                    | ReissueReason::BadSignature
                    | ReissueReason::KeyMissing
                    | ReissueReason::KeyUnparsable
                    | ReissueReason::KeyMismatch
            ),
        }
    }

    /// Short stable name, used in logs and Events.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            IssueReason::Missing => "missing",
            IssueReason::Certificate(r) => r.as_str(),
            IssueReason::Requested => "requested",
            IssueReason::KeyAlgorithm => "key_algorithm",
        }
    }
}

/// Metadata repairs that need no new certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tidy {
    /// Data keys to remove (docs/behavior.md §8.2 step 5).
    pub(crate) remove_keys: Vec<String>,
    /// Requested extra data keys (`ca.crt`, `tls-combined.pem`, and the PKCS#12 stores that are
    /// stale) to (re)write from the current bundle and the Secret's own `tls.crt`/`tls.key`.
    pub(crate) write_keys: Vec<String>,
    /// The ownerReference to the Service is missing or stale.
    pub(crate) owner_reference: bool,
    /// Informational/expiry annotations or the managed-by label are missing or stale.
    pub(crate) metadata: bool,
}

impl Tidy {
    /// Whether this repair undoes another writer's change (keys added, the label, annotations
    /// or ownerReference altered); rewriting stale extra keys after a CA change does not.
    pub(crate) fn undoes_another_writer(&self) -> bool {
        !self.remove_keys.is_empty() || self.owner_reference || self.metadata
    }

    fn is_empty(&self) -> bool {
        self.remove_keys.is_empty()
            && self.write_keys.is_empty()
            && !self.owner_reference
            && !self.metadata
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
    /// A `service-ca.dev/*` request annotation on the Service is invalid (the text says which).
    InvalidRequest(String),
    /// The password Secret of the PKCS#12 stores (names::KEYSTORE_PASSWORD_SECRET) or its key is
    /// missing or unusable (the text says which).
    StorePassword(String),
}

impl Refusal {
    /// Error text written to the Service's error annotation.
    pub(crate) fn message(&self, namespace: &str, secret: &str, uid: &str) -> String {
        match self {
            Refusal::InvalidSecretName(why) => {
                format!("invalid secret name {secret:?} in annotation: {why}")
            }
            Refusal::InvalidRequest(why) | Refusal::StorePassword(why) => why.clone(),
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
            Refusal::InvalidRequest(_) => "invalid_request",
            Refusal::StorePassword(_) => "keystore_password",
        }
    }

    /// Whether waiting can help (a foreign Secret may be deleted or garbage-collected, a password
    /// Secret may be created, with back-off retries besides its own watch event); the others need
    /// the user to change the Service or the Secret.
    pub(crate) fn may_resolve_by_itself(&self) -> bool {
        matches!(self, Refusal::ForeignSecret | Refusal::StorePassword(_))
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

/// The opt-in extras a Service asks for with `service-ca.dev/*` annotations (README "Beyond the
/// original"). A Service without them gets exactly the original's Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    /// `ca.crt` = the CA bundle (names::INCLUDE_CA).
    pub(crate) include_ca: bool,
    /// `tls-combined.pem` = key + chain (names::FORMATS).
    pub(crate) combined_pem: bool,
    /// `keystore.p12` = PKCS#12 key + chain (names::FORMATS).
    pub(crate) keystore: bool,
    /// `truststore.p12` = PKCS#12 CA bundle (names::FORMATS).
    pub(crate) truststore: bool,
    /// `(secret, key)` holding the stores' password (names::KEYSTORE_PASSWORD_SECRET); None: the
    /// default password.
    pub(crate) password_secret: Option<(String, String)>,
    /// The serving key's algorithm (names::KEY_ALGORITHM); None: the configured default.
    pub(crate) key_algorithm: Option<KeyAlgorithm>,
    /// Validated DNS names added to the standard ones (names::EXTRA_DNS_NAMES).
    pub(crate) extra_dns_names: Vec<String>,
    /// Labels copied onto the Secret (names::SECRET_LABELS).
    pub(crate) secret_labels: BTreeMap<String, String>,
    /// Annotations copied onto the Secret (names::SECRET_ANNOTATIONS).
    pub(crate) secret_annotations: BTreeMap<String, String>,
}

impl Extras {
    /// The data keys beyond `tls.crt`/`tls.key` the Secret carries.
    pub(crate) fn data_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.include_ca {
            keys.push(names::CA_CRT);
        }
        if self.combined_pem {
            keys.push(names::TLS_COMBINED_PEM);
        }
        if self.keystore {
            keys.push(names::KEYSTORE_P12);
        }
        if self.truststore {
            keys.push(names::TRUSTSTORE_P12);
        }
        keys
    }

    /// Whether the Service asks for a PKCS#12 store.
    pub(crate) fn wants_stores(&self) -> bool {
        self.keystore || self.truststore
    }

    /// The password Secret to read (only when a store is requested).
    pub(crate) fn password_secret_to_read(&self) -> Option<(&str, &str)> {
        self.password_secret
            .as_ref()
            .filter(|_| self.wants_stores())
            .map(|(s, k)| (s.as_str(), k.as_str()))
    }
}

/// The formats names::FORMATS accepts, in the order error messages list them.
const KNOWN_FORMATS: [&str; 3] = [
    names::TLS_COMBINED_PEM,
    names::KEYSTORE_P12,
    names::TRUSTSTORE_P12,
];

/// The stores' password: the named Secret's, or the documented default when none is named. A
/// named Secret that could not be read is a refusal (nothing is written with a password the user
/// did not choose).
pub(crate) fn store_password<'a>(
    extras: &Extras,
    svc: &ServiceView<'a>,
) -> Result<&'a str, Refusal> {
    let Some((secret, key)) = extras.password_secret_to_read() else {
        return Ok(service_ca_pki::DEFAULT_STORE_PASSWORD);
    };
    match svc.keystore_password {
        StorePassword::Read(password) => Ok(password),
        StorePassword::Unavailable(why) => Err(Refusal::StorePassword(why.to_string())),
        StorePassword::NotRead => Err(Refusal::StorePassword(format!(
            "the keystore password in secret {}/{secret} key {key:?} was not read",
            svc.namespace
        ))),
    }
}

/// The salt of the stores' password digest: the serving Secret's namespace and name.
pub(crate) fn password_salt(namespace: &str, secret_name: &str) -> String {
    format!("{namespace}/{secret_name}")
}

/// The digest recorded for `keystore.p12` (names::KEYSTORE_DIGEST): what it was built from and
/// its own bytes.
pub(crate) fn keystore_digest(tls_crt: &[u8], tls_key: &[u8], p12: &[u8]) -> String {
    service_ca_pki::store_digest(&[b"keystore.p12", tls_crt, tls_key, p12])
}

/// The digest recorded for `truststore.p12` (names::TRUSTSTORE_DIGEST).
pub(crate) fn truststore_digest(bundle: &[u8], p12: &[u8]) -> String {
    service_ca_pki::store_digest(&[b"truststore.p12", bundle, p12])
}

/// What the stores in a Secret were built from, to judge whether they are current.
pub(crate) struct StoreInputs<'a> {
    /// `tls.crt` of the Secret.
    pub(crate) tls_crt: &'a [u8],
    /// `tls.key` of the Secret.
    pub(crate) tls_key: &'a [u8],
    /// The current CA bundle (only needed, and only encoded, for a truststore).
    pub(crate) bundle: &'a str,
    /// The password the stores must have.
    pub(crate) password: &'a str,
    /// [`password_salt`] of the Secret.
    pub(crate) salt: &'a str,
}

/// The requested stores that must be (re)built: absent, built from another certificate, key or
/// bundle, with another password, or changed by someone else since service-ca wrote them.
pub(crate) fn stale_stores(
    extras: &Extras,
    secret: &SecretView<'_>,
    inputs: &StoreInputs<'_>,
) -> Vec<&'static str> {
    let annotation = |k: &str| {
        secret
            .annotations
            .and_then(|a| a.get(k))
            .map(String::as_str)
    };
    let password_current = annotation(names::KEYSTORE_PASSWORD_HASH)
        == Some(service_ca_pki::password_hash(inputs.salt, inputs.password).as_str());
    let mut stale = Vec::new();
    if extras.keystore {
        let current = password_current
            && secret.keystore_p12.is_some_and(|p12| {
                annotation(names::KEYSTORE_DIGEST)
                    == Some(keystore_digest(inputs.tls_crt, inputs.tls_key, p12).as_str())
            });
        if !current {
            stale.push(names::KEYSTORE_P12);
        }
    }
    if extras.truststore {
        let current = password_current
            && secret.truststore_p12.is_some_and(|p12| {
                annotation(names::TRUSTSTORE_DIGEST)
                    == Some(truststore_digest(inputs.bundle.as_bytes(), p12).as_str())
            });
        if !current {
            stale.push(names::TRUSTSTORE_P12);
        }
    }
    stale
}

/// The Secret annotations that record stores just built (`built`: data key and bytes): the
/// password digest and each store's digest.
pub(crate) fn store_annotations(
    built: &[(&'static str, Vec<u8>)],
    inputs: &StoreInputs<'_>,
) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    for (key, p12) in built {
        let (annotation, digest) = match *key {
            names::KEYSTORE_P12 => (
                names::KEYSTORE_DIGEST,
                keystore_digest(inputs.tls_crt, inputs.tls_key, p12),
            ),
            _ => (
                names::TRUSTSTORE_DIGEST,
                truststore_digest(inputs.bundle.as_bytes(), p12),
            ),
        };
        annotations.insert(annotation.to_string(), digest);
    }
    if !built.is_empty() {
        annotations.insert(
            names::KEYSTORE_PASSWORD_HASH.to_string(),
            service_ca_pki::password_hash(inputs.salt, inputs.password),
        );
    }
    annotations
}

/// The store annotations a Secret must no longer carry: those of stores no longer requested.
pub(crate) fn unwanted_store_annotations(extras: &Extras) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if !extras.keystore {
        keys.push(names::KEYSTORE_DIGEST);
    }
    if !extras.truststore {
        keys.push(names::TRUSTSTORE_DIGEST);
    }
    if !extras.wants_stores() {
        keys.push(names::KEYSTORE_PASSWORD_HASH);
    }
    keys
}

/// The requested extra data: `ca.crt` = `bundle`; `tls-combined.pem` = `tls_key` then `tls_crt`.
pub(crate) fn extra_data(
    extras: &Extras,
    bundle: &str,
    tls_crt: &[u8],
    tls_key: &[u8],
) -> Vec<(&'static str, Vec<u8>)> {
    let mut data = Vec::new();
    if extras.include_ca {
        data.push((names::CA_CRT, bundle.as_bytes().to_vec()));
    }
    if extras.combined_pem {
        let mut combined = tls_key.to_vec();
        if !combined.is_empty() && !combined.ends_with(b"\n") {
            combined.push(b'\n');
        }
        combined.extend_from_slice(tls_crt);
        data.push((names::TLS_COMBINED_PEM, combined));
    }
    data
}

/// The algorithm of a PEM private key, if it parses.
fn key_algorithm_of(tls_key: Option<&[u8]>) -> Option<KeyAlgorithm> {
    let text = std::str::from_utf8(tls_key?).ok()?;
    service_ca_pki::PrivateKey::from_pem(text)
        .ok()
        .map(|k| k.algorithm())
}

/// Most extra DNS names one Service may ask for.
const MAX_EXTRA_DNS_NAMES: usize = 100;

/// Reads and validates the Service's `service-ca.dev/*` requests; the error names the annotation
/// and what is wrong with it.
pub(crate) fn extras(svc: &ServiceView<'_>, cfg: &DecideConfig<'_>) -> Result<Extras, String> {
    let get = |key: &str| {
        svc.annotations
            .and_then(|a| a.get(key))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let invalid = |key: &str, why: String| format!("invalid annotation {key}: {why}");
    let mut extras = Extras {
        include_ca: get(names::INCLUDE_CA).is_some_and(|v| v.eq_ignore_ascii_case("true")),
        ..Extras::default()
    };
    for format in get(names::FORMATS).into_iter().flat_map(|v| v.split(',')) {
        match format.trim() {
            "" => {}
            names::TLS_COMBINED_PEM => extras.combined_pem = true,
            names::KEYSTORE_P12 => extras.keystore = true,
            names::TRUSTSTORE_P12 => extras.truststore = true,
            other => {
                return Err(invalid(
                    names::FORMATS,
                    format!(
                        "unknown format {other:?} (known: {})",
                        KNOWN_FORMATS.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(v) = get(names::KEYSTORE_PASSWORD_SECRET) {
        extras.password_secret = Some(
            parse_password_secret(v)
                .map_err(|why| invalid(names::KEYSTORE_PASSWORD_SECRET, why))?,
        );
    }
    if let Some(v) = get(names::KEY_ALGORITHM) {
        let alg = v.parse::<KeyAlgorithm>().map_err(|_| {
            let known: Vec<&str> = KeyAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
            invalid(
                names::KEY_ALGORITHM,
                format!("unknown algorithm {v:?} (known: {})", known.join(", ")),
            )
        })?;
        extras.key_algorithm = Some(alg);
    }
    for name in get(names::EXTRA_DNS_NAMES)
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        validate_extra_dns_name(name, svc, cfg)
            .map_err(|why| invalid(names::EXTRA_DNS_NAMES, format!("{name:?}: {why}")))?;
        extras.extra_dns_names.push(name.to_string());
    }
    extras.extra_dns_names.sort();
    extras.extra_dns_names.dedup();
    if extras.extra_dns_names.len() > MAX_EXTRA_DNS_NAMES {
        return Err(invalid(
            names::EXTRA_DNS_NAMES,
            format!("more than {MAX_EXTRA_DNS_NAMES} names"),
        ));
    }
    if let Some(v) = get(names::SECRET_LABELS) {
        extras.secret_labels =
            parse_pairs(v, true).map_err(|why| invalid(names::SECRET_LABELS, why))?;
    }
    if let Some(v) = get(names::SECRET_ANNOTATIONS) {
        extras.secret_annotations =
            parse_pairs(v, false).map_err(|why| invalid(names::SECRET_ANNOTATIONS, why))?;
    }
    Ok(extras)
}

/// `<secret>/<key>`: a valid Secret name and a valid Secret data key.
fn parse_password_secret(value: &str) -> Result<(String, String), String> {
    let Some((secret, key)) = value.split_once('/') else {
        return Err(format!("{value:?} is not <secret>/<key>"));
    };
    let (secret, key) = (secret.trim(), key.trim());
    validate_secret_name(secret).map_err(|why| format!("secret name {secret:?}: {why}"))?;
    let key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || key.len() > 253 || !key.chars().all(key_char) {
        return Err(format!(
            "key {key:?} is not a Secret data key (1 to 253 letters, digits, '-', '_' and '.')"
        ));
    }
    Ok((secret.to_string(), key.to_string()))
}

/// An extra DNS name: a DNS-1123 subdomain of at least two labels, optionally with a leading
/// `*.`. A name in the cluster's Service namespace (`….svc`, `….<cluster domain>`) must be the
/// Service's own (`<svc>.<ns>.svc…` or below), so no Service can claim another's name; a wildcard
/// must be inside the Service's own domain unless the administrator allows external wildcards.
fn validate_extra_dns_name(
    name: &str,
    svc: &ServiceView<'_>,
    cfg: &DecideConfig<'_>,
) -> Result<(), String> {
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    validate_secret_name(rest)?;
    if name.split('.').any(|label| label.len() > 63) {
        return Err("a part is longer than 63 characters".into());
    }
    if !rest.contains('.') {
        return Err("a single-label name is not allowed".into());
    }
    let domain = cfg.cluster_domain.trim_matches('.');
    let base = format!("{}.{}.svc", svc.name, svc.namespace);
    let full = format!("{base}.{domain}");
    let within = |n: &str, d: &str| n == d || n.ends_with(&format!(".{d}"));
    let own = within(rest, &base) || within(rest, &full);
    let cluster_internal = within(rest, "svc") || within(rest, domain);
    if cluster_internal && !own {
        return Err(format!(
            "a cluster-internal name outside this Service's own domain ({base}, {full})"
        ));
    }
    if wildcard && !own && !cfg.allow_external_wildcards {
        return Err(format!(
            "a wildcard outside this Service's own domain ({base}, {full}); the administrator can allow it with --allow-external-wildcards"
        ));
    }
    Ok(())
}

/// Label and annotation keys service-ca writes itself: a template never sets them.
fn reserved_key(key: &str) -> bool {
    key == names::MANAGED_BY_LABEL
        || key == names::OWNING_COMPONENT
        || key == names::DESCRIPTION
        || [
            "service.beta.openshift.io/",
            "service.alpha.openshift.io/",
            names::PROJECT_PREFIX,
        ]
        .iter()
        .any(|p| key.starts_with(p))
}

/// `k=v,k2=v2` with Kubernetes-valid keys (and, for labels, values), none of them service-ca's own.
fn parse_pairs(text: &str, labels: bool) -> Result<BTreeMap<String, String>, String> {
    let mut pairs = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("{item:?} is not key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        validate_qualified_name(key).map_err(|why| format!("key {key:?}: {why}"))?;
        if reserved_key(key) {
            return Err(format!("key {key:?} is service-ca's own"));
        }
        if labels {
            if value.len() > 63 {
                return Err(format!("value of {key:?} is longer than 63 characters"));
            }
            if !value.is_empty() {
                validate_name_part(value).map_err(|why| format!("value of {key:?}: {why}"))?;
            }
        }
        pairs.insert(key.to_string(), value.to_string());
    }
    Ok(pairs)
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
fn validate_qualified_name(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            validate_secret_name(prefix).map_err(|why| format!("prefix: {why}"))?;
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 {
        return Err("the name part must have 1 to 63 characters".into());
    }
    validate_name_part(name)
}

/// Letters, digits, `-`, `_`, `.`; starting and ending with a letter or digit.
fn validate_name_part(part: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if let Some(c) = part.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "character {c:?} is not allowed (letters, digits, '-', '_' and '.')"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(part.chars().next()) || !alnum(part.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Whether every requested template label and annotation is on the Secret.
fn template_in_order(extras: &Extras, secret: &SecretView<'_>) -> bool {
    let has = |map: Option<&BTreeMap<String, String>>, wanted: &BTreeMap<String, String>| {
        wanted
            .iter()
            .all(|(k, v)| map.and_then(|m| m.get(k)) == Some(v))
    };
    has(secret.labels, &extras.secret_labels) && has(secret.annotations, &extras.secret_annotations)
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
    if let Some(refusal) = refusal_of_request(svc, secret_name, cfg) {
        return Decision::Refuse(refusal);
    }
    let extras = match extras(svc, cfg) {
        Ok(extras) => extras,
        Err(why) => return Decision::Refuse(Refusal::InvalidRequest(why)),
    };
    let password = match store_password(&extras, svc) {
        Ok(password) => password,
        Err(refusal) => return Decision::Refuse(refusal),
    };
    let Some(secret) = secret else {
        return Decision::Issue(IssueReason::Missing);
    };
    if !secret_belongs_to(secret, svc.uid) {
        return Decision::Refuse(Refusal::ForeignSecret);
    }
    let type_ = secret.type_.unwrap_or("Opaque");
    if type_ != names::TLS_SECRET_TYPE {
        return Decision::Refuse(Refusal::WrongType(type_.to_string()));
    }
    let leaf = secret
        .tls_crt
        .and_then(|crt| service_ca_pki::parse_pem_certs(crt).ok())
        .and_then(|certs| certs.into_iter().next());
    let margin = leaf
        .as_ref()
        .map_or(cfg.renew_before, |l| effective_margin(cfg.renew_before, l));
    let check = ReuseCheck {
        ca,
        cfg,
        margin,
        now,
    };
    if let Some(reason) = reissue_reason(svc, secret, &extras, &check) {
        return Decision::Issue(reason);
    }
    let Some(leaf) = leaf else {
        return Decision::Issue(IssueReason::Certificate(ReissueReason::Unparsable));
    };
    let salt = password_salt(svc.namespace, secret_name);
    let tidy = repairs(svc, secret, &extras, ca, leaf.not_after, (password, &salt));
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

/// Requests refused before any Secret is read: the API server's own Service, a denied
/// namespace, a Secret name that cannot exist.
fn refusal_of_request(
    svc: &ServiceView<'_>,
    secret_name: &str,
    cfg: &DecideConfig<'_>,
) -> Option<Refusal> {
    if svc.namespace == "default" && svc.name == "kubernetes" {
        return Some(Refusal::SystemService);
    }
    if cfg.denied_namespaces.iter().any(|ns| ns == svc.namespace) {
        return Some(Refusal::DeniedNamespace);
    }
    validate_secret_name(secret_name)
        .err()
        .map(Refusal::InvalidSecretName)
}

/// What judging an existing certificate needs besides the Service and the Secret.
struct ReuseCheck<'a> {
    ca: &'a SigningCa,
    cfg: &'a DecideConfig<'a>,
    margin: Duration,
    now: OffsetDateTime,
}

/// Why our Secret's certificate must be issued again, if it must.
fn reissue_reason(
    svc: &ServiceView<'_>,
    secret: &SecretView<'_>,
    extras: &Extras,
    check: &ReuseCheck<'_>,
) -> Option<IssueReason> {
    let mut expected = service_ca_pki::serving_dns_names(
        svc.name,
        svc.namespace,
        svc.headless,
        check.cfg.cluster_domain,
    );
    expected.extend(extras.extra_dns_names.iter().cloned());
    expected.sort();
    expected.dedup();
    // Verified reuse: the leaf must verify against the CA, carry this Service's UID, and
    // tls.key must parse and match it (docs/behavior.md §7.3, with this project's additions).
    if let Some(reason) = service_ca_pki::verify_serving_secret(
        secret.tls_crt,
        secret.tls_key,
        check.ca,
        &expected,
        Some(svc.uid),
        check.margin,
        check.now,
    ) {
        return Some(IssueReason::Certificate(reason));
    }
    if let Some(token) = renew_request(svc)
        && secret
            .annotations
            .and_then(|a| a.get(names::RENEWED_FOR))
            .map(String::as_str)
            != Some(token)
    {
        return Some(IssueReason::Requested);
    }
    if let Some(wanted) = extras.key_algorithm
        && key_algorithm_of(secret.tls_key) != Some(wanted)
    {
        return Some(IssueReason::KeyAlgorithm);
    }
    None
}

/// Metadata and opt-in data repairs of a Secret whose certificate is fine.
fn repairs(
    svc: &ServiceView<'_>,
    secret: &SecretView<'_>,
    extras: &Extras,
    ca: &SigningCa,
    not_after: OffsetDateTime,
    (password, salt): (&str, &str),
) -> Tidy {
    let wanted_keys = extras.data_keys();
    // The bundle is only encoded for Services that ask for it.
    let bundle = if extras.include_ca || extras.truststore {
        ca.bundle_pem()
    } else {
        String::new()
    };
    let current = extra_data(
        extras,
        &bundle,
        secret.tls_crt.unwrap_or_default(),
        secret.tls_key.unwrap_or_default(),
    );
    let inputs = StoreInputs {
        tls_crt: secret.tls_crt.unwrap_or_default(),
        tls_key: secret.tls_key.unwrap_or_default(),
        bundle: &bundle,
        password,
        salt,
    };
    let leftover_annotations = unwanted_store_annotations(extras)
        .into_iter()
        .any(|k| secret.annotations.is_some_and(|a| a.contains_key(k)));
    Tidy {
        remove_keys: secret
            .extra_keys
            .iter()
            .filter(|k| !wanted_keys.contains(k))
            .map(|k| k.to_string())
            .collect(),
        write_keys: current
            .iter()
            .filter(|(k, v)| {
                let have = match *k {
                    names::CA_CRT => secret.ca_crt,
                    _ => secret.combined_pem,
                };
                have != Some(v.as_slice())
            })
            .map(|(k, _)| k.to_string())
            .chain(
                stale_stores(extras, secret, &inputs)
                    .into_iter()
                    .map(str::to_string),
            )
            .collect(),
        owner_reference: !secret.owners.iter().any(|(api, kind, name, uid)| {
            *api == "v1" && *kind == "Service" && *name == svc.name && *uid == svc.uid
        }),
        metadata: !metadata_in_order(svc, secret, not_after)
            || !template_in_order(extras, secret)
            || leftover_annotations,
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

/// The expiry annotations' format (docs/behavior.md §3.1 #13).
pub(crate) fn format_expiry(t: OffsetDateTime) -> String {
    service_ca_pki::rfc3339(t)
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
    const DEFAULT_PW: &str = service_ca_pki::DEFAULT_STORE_PASSWORD;

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
            labels: None,
            ca_crt: None,
            combined_pem: None,
            keystore_p12: None,
            truststore_p12: None,
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
            keystore_password: StorePassword::NotRead,
        };
        let cfg = DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces: &[],
            allow_external_wildcards: false,
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
            allow_external_wildcards: false,
        };
        let mut svc_annotations = f.svc_annotations.clone();
        svc_annotations.insert(names::RENEW_REQUEST.into(), "1700000000".into());
        let svc = ServiceView {
            name: "api",
            namespace: "shop",
            uid: UID,
            headless: false,
            annotations: Some(&svc_annotations),
            keystore_password: StorePassword::NotRead,
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
            keystore_password: StorePassword::NotRead,
        };
        let cfg = |denied_namespaces| DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces,
            allow_external_wildcards: false,
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

    /// (what, extra Service annotations, secret, external wildcards allowed, expected decision)
    type ExtrasRow<'a> = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        SecretView<'a>,
        bool,
        Decision,
    );

    /// `decide` for the fixture's Service with extra annotations and a Secret.
    fn run_with(
        f: &Fixture,
        extra: &[(&str, &str)],
        secret: Option<&SecretView<'_>>,
        allow_external_wildcards: bool,
    ) -> Decision {
        let mut a = f.svc_annotations.clone();
        a.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let svc = ServiceView {
            name: "api",
            namespace: "shop",
            uid: UID,
            headless: false,
            annotations: Some(&a),
            keystore_password: StorePassword::NotRead,
        };
        let cfg = DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces: &[],
            allow_external_wildcards,
        };
        decide(&svc, "api-tls", secret, &f.ca, &cfg, NOW)
    }

    #[test]
    fn extras_table() {
        let f = fixture();
        let not_after = service_ca_pki::parse_pem_certs(f.crt.as_bytes()).unwrap()[0].not_after;
        let bundle = f.ca.bundle_pem();
        let combined = format!("{}{}", f.key, f.crt);
        let tidy = |t: Tidy| Decision::Tidy { tidy: t, not_after };
        let write = |keys: &[&str]| {
            tidy(Tidy {
                write_keys: keys.iter().map(|k| k.to_string()).collect(),
                ..Tidy::default()
            })
        };
        let refused = |d: &Decision| matches!(d, Decision::Refuse(Refusal::InvalidRequest(_)));
        let labels: BTreeMap<String, String> = [
            (
                names::MANAGED_BY_LABEL.to_string(),
                "service-ca".to_string(),
            ),
            ("team".to_string(), "a".to_string()),
        ]
        .into();
        let mut with_template = f.annotations.clone();
        with_template.insert("example.com/owner".into(), "ops".into());
        let rows: Vec<ExtrasRow<'_>> = vec![
            (
                "ca.crt requested, absent",
                vec![(names::INCLUDE_CA, "true")],
                good(&f),
                false,
                write(&[names::CA_CRT]),
            ),
            (
                "ca.crt requested, stale bundle",
                vec![(names::INCLUDE_CA, "True")],
                SecretView {
                    ca_crt: Some(b"old"),
                    extra_keys: vec![names::CA_CRT],
                    ..good(&f)
                },
                false,
                write(&[names::CA_CRT]),
            ),
            (
                "ca.crt requested, current",
                vec![(names::INCLUDE_CA, "true")],
                SecretView {
                    ca_crt: Some(bundle.as_bytes()),
                    extra_keys: vec![names::CA_CRT],
                    ..good(&f)
                },
                false,
                Decision::UpToDate {
                    renew_at: not_after - 30 * DAY,
                    not_after,
                },
            ),
            (
                "ca.crt no longer requested",
                vec![(names::INCLUDE_CA, "false")],
                SecretView {
                    ca_crt: Some(bundle.as_bytes()),
                    extra_keys: vec![names::CA_CRT],
                    ..good(&f)
                },
                false,
                tidy(Tidy {
                    remove_keys: vec![names::CA_CRT.into()],
                    ..Tidy::default()
                }),
            ),
            (
                "combined requested, absent",
                vec![(names::FORMATS, " tls-combined.pem ,")],
                good(&f),
                false,
                write(&[names::TLS_COMBINED_PEM]),
            ),
            (
                "combined requested, current",
                vec![(names::FORMATS, "tls-combined.pem")],
                SecretView {
                    combined_pem: Some(combined.as_bytes()),
                    extra_keys: vec![names::TLS_COMBINED_PEM],
                    ..good(&f)
                },
                false,
                Decision::UpToDate {
                    renew_at: not_after - 30 * DAY,
                    not_after,
                },
            ),
            (
                "unknown format",
                vec![(names::FORMATS, "jks")],
                good(&f),
                false,
                Decision::Refuse(Refusal::InvalidRequest(
                    "invalid annotation service-ca.dev/formats: unknown format \"jks\" (known: tls-combined.pem, keystore.p12, truststore.p12)".into(),
                )),
            ),
            (
                "key algorithm matches (fixture keys are P-256)",
                vec![(names::KEY_ALGORITHM, "ecdsa-p256")],
                good(&f),
                false,
                Decision::UpToDate {
                    renew_at: not_after - 30 * DAY,
                    not_after,
                },
            ),
            (
                "key algorithm differs",
                vec![(names::KEY_ALGORITHM, "rsa-3072")],
                good(&f),
                false,
                Decision::Issue(IssueReason::KeyAlgorithm),
            ),
            (
                "extra DNS name not in the certificate",
                vec![(names::EXTRA_DNS_NAMES, "api.example.com")],
                good(&f),
                false,
                Decision::Issue(IssueReason::Certificate(ReissueReason::WrongNames)),
            ),
            (
                "extra names that are the standard ones",
                vec![(names::EXTRA_DNS_NAMES, "api.shop.svc,api.shop.svc.cluster.local")],
                good(&f),
                false,
                Decision::UpToDate {
                    renew_at: not_after - 30 * DAY,
                    not_after,
                },
            ),
            (
                "template label missing",
                vec![(names::SECRET_LABELS, "team=a")],
                good(&f),
                false,
                tidy(Tidy {
                    metadata: true,
                    ..Tidy::default()
                }),
            ),
            (
                "template in place",
                vec![
                    (names::SECRET_LABELS, "team=a"),
                    (names::SECRET_ANNOTATIONS, "example.com/owner=ops"),
                ],
                SecretView {
                    labels: Some(&labels),
                    annotations: Some(&with_template),
                    ..good(&f)
                },
                false,
                Decision::UpToDate {
                    renew_at: not_after - 30 * DAY,
                    not_after,
                },
            ),
        ];
        for (what, extra, secret, allow, expected) in rows {
            assert_eq!(
                run_with(&f, &extra, Some(&secret), allow),
                expected,
                "{what}"
            );
        }
        // Refused before anything is written, Secret or not.
        for (what, extra, allow) in [
            (
                "bad key algorithm",
                vec![(names::KEY_ALGORITHM, "dsa-1024")],
                false,
            ),
            (
                "uppercase name",
                vec![(names::EXTRA_DNS_NAMES, "API.example.com")],
                false,
            ),
            (
                "single label",
                vec![(names::EXTRA_DNS_NAMES, "localhost")],
                false,
            ),
            (
                "another Service's name",
                vec![(names::EXTRA_DNS_NAMES, "db.shop.svc")],
                false,
            ),
            (
                "another namespace",
                vec![(names::EXTRA_DNS_NAMES, "api.bank.svc.cluster.local")],
                true,
            ),
            (
                "external wildcard",
                vec![(names::EXTRA_DNS_NAMES, "*.example.com")],
                false,
            ),
            (
                "wildcard in the middle",
                vec![(names::EXTRA_DNS_NAMES, "a.*.example.com")],
                true,
            ),
            (
                "label without =",
                vec![(names::SECRET_LABELS, "team")],
                false,
            ),
            (
                "bad label value",
                vec![(names::SECRET_LABELS, "team=a b")],
                false,
            ),
            (
                "managed-by label",
                vec![(names::SECRET_LABELS, "app.kubernetes.io/managed-by=me")],
                false,
            ),
            (
                "our annotation",
                vec![(
                    names::SECRET_ANNOTATIONS,
                    "service.beta.openshift.io/expiry=x",
                )],
                false,
            ),
        ] {
            assert!(refused(&run_with(&f, &extra, None, allow)), "{what}");
            assert!(
                refused(&run_with(&f, &extra, Some(&good(&f)), allow)),
                "{what}"
            );
        }
        // Allowed names: own wildcards always, external wildcards when the administrator says so.
        for (what, extra, allow) in [
            (
                "own wildcard",
                vec![(names::EXTRA_DNS_NAMES, "*.api.shop.svc")],
                false,
            ),
            (
                "own sub-wildcard",
                vec![(names::EXTRA_DNS_NAMES, "*.v1.api.shop.svc.cluster.local")],
                false,
            ),
            (
                "external wildcard allowed",
                vec![(names::EXTRA_DNS_NAMES, "*.example.com")],
                true,
            ),
            (
                "annotation with a free value",
                vec![(names::SECRET_ANNOTATIONS, "example.com/note=any thing: ok")],
                false,
            ),
        ] {
            assert_eq!(
                run_with(&f, &extra, None, allow),
                Decision::Issue(IssueReason::Missing),
                "{what}"
            );
        }
        let mut a = f.svc_annotations.clone();
        a.insert(
            names::EXTRA_DNS_NAMES.into(),
            "b.example.com, a.example.com,b.example.com".into(),
        );
        let svc = ServiceView {
            name: "api",
            namespace: "shop",
            uid: UID,
            headless: false,
            annotations: Some(&a),
            keystore_password: StorePassword::NotRead,
        };
        let cfg = DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces: &[],
            allow_external_wildcards: false,
        };
        assert_eq!(
            extras(&svc, &cfg).unwrap().extra_dns_names,
            ["a.example.com", "b.example.com"]
        );
        // A Service without the annotations asks for nothing extra.
        let plain = ServiceView {
            annotations: Some(&f.svc_annotations),
            ..svc
        };
        assert_eq!(extras(&plain, &cfg).unwrap(), Extras::default());
    }

    /// `decide` for the fixture's Service asking for PKCS#12 stores.
    fn run_stores(
        f: &Fixture,
        extra: &[(&str, &str)],
        password: StorePassword<'_>,
        secret: Option<&SecretView<'_>>,
    ) -> Decision {
        let mut a = f.svc_annotations.clone();
        a.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let svc = ServiceView {
            name: "api",
            namespace: "shop",
            uid: UID,
            headless: false,
            annotations: Some(&a),
            keystore_password: password,
        };
        let cfg = DecideConfig {
            cluster_domain: "cluster.local",
            renew_before: 30 * DAY,
            denied_namespaces: &[],
            allow_external_wildcards: false,
        };
        decide(&svc, "api-tls", secret, &f.ca, &cfg, NOW)
    }

    #[test]
    fn stores_table() {
        let f = fixture();
        let not_after = service_ca_pki::parse_pem_certs(f.crt.as_bytes()).unwrap()[0].not_after;
        let bundle = f.ca.bundle_pem();
        let salt = password_salt("shop", "api-tls");
        let both = (names::FORMATS, "keystore.p12, truststore.p12");
        let named = (names::KEYSTORE_PASSWORD_SECRET, "jks-pw/password");
        // Stand-ins for the stores: the decision never opens them, it compares digests.
        let (ks, ts) = (b"KEYSTORE".as_slice(), b"TRUSTSTORE".as_slice());
        let recorded = |password: &str, crt: &str, bundle: &str| {
            let inputs = StoreInputs {
                tls_crt: crt.as_bytes(),
                tls_key: f.key.as_bytes(),
                bundle,
                password,
                salt: &salt,
            };
            let built = [
                (names::KEYSTORE_P12, ks.to_vec()),
                (names::TRUSTSTORE_P12, ts.to_vec()),
            ];
            let mut a = f.annotations.clone();
            a.extend(store_annotations(&built, &inputs));
            a
        };
        let current = recorded(DEFAULT_PW, &f.crt, &bundle);
        let other_pw = recorded("s3cret", &f.crt, &bundle);
        let old_bundle = recorded(DEFAULT_PW, &f.crt, "OLD BUNDLE");
        let old_cert = recorded(DEFAULT_PW, &f.other_crt, &bundle);
        let with = |annotations, keystore: &'static [u8]| SecretView {
            annotations: Some(annotations),
            keystore_p12: Some(keystore),
            truststore_p12: Some(ts),
            extra_keys: vec![names::KEYSTORE_P12, names::TRUSTSTORE_P12],
            ..good(&f)
        };
        let up_to_date = Decision::UpToDate {
            renew_at: not_after - 30 * DAY,
            not_after,
        };
        let write = |keys: &[&str]| Decision::Tidy {
            tidy: Tidy {
                write_keys: keys.iter().map(|k| k.to_string()).collect(),
                ..Tidy::default()
            },
            not_after,
        };
        let both_stores = [names::KEYSTORE_P12, names::TRUSTSTORE_P12];
        let unavailable = "keystore password secret shop/jks-pw not found";
        type StoreRow<'a> = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            StorePassword<'a>,
            Option<SecretView<'a>>,
            Decision,
        );
        let rows: Vec<StoreRow<'_>> = vec![
            (
                "no Secret yet: issued with the default password",
                vec![both],
                StorePassword::NotRead,
                None,
                Decision::Issue(IssueReason::Missing),
            ),
            (
                "no Secret yet, password read",
                vec![both, named],
                StorePassword::Read("s3cret"),
                None,
                Decision::Issue(IssueReason::Missing),
            ),
            (
                "password Secret missing: nothing written",
                vec![both, named],
                StorePassword::Unavailable(unavailable),
                None,
                Decision::Refuse(Refusal::StorePassword(unavailable.into())),
            ),
            (
                "password Secret missing, certificate fine: still refused",
                vec![both, named],
                StorePassword::Unavailable(unavailable),
                Some(good(&f)),
                Decision::Refuse(Refusal::StorePassword(unavailable.into())),
            ),
            (
                "password Secret named but not read",
                vec![(names::FORMATS, "truststore.p12"), named],
                StorePassword::NotRead,
                None,
                Decision::Refuse(Refusal::StorePassword(
                    "the keystore password in secret shop/jks-pw key \"password\" was not read"
                        .into(),
                )),
            ),
            (
                "password Secret named, no store requested: not needed",
                vec![named],
                StorePassword::NotRead,
                Some(good(&f)),
                up_to_date.clone(),
            ),
            (
                "stores requested, absent",
                vec![both],
                StorePassword::NotRead,
                Some(good(&f)),
                write(&both_stores),
            ),
            (
                "stores current",
                vec![both],
                StorePassword::NotRead,
                Some(with(&current, ks)),
                up_to_date.clone(),
            ),
            (
                "stores current with the named password",
                vec![both, named],
                StorePassword::Read("s3cret"),
                Some(with(&other_pw, ks)),
                up_to_date.clone(),
            ),
            (
                "password changed: both rebuilt",
                vec![both, named],
                StorePassword::Read("n3w"),
                Some(with(&other_pw, ks)),
                write(&both_stores),
            ),
            (
                "password Secret removed from the Service: back to the default",
                vec![both],
                StorePassword::NotRead,
                Some(with(&other_pw, ks)),
                write(&both_stores),
            ),
            (
                "CA bundle changed: only the truststore",
                vec![both],
                StorePassword::NotRead,
                Some(with(&old_bundle, ks)),
                write(&[names::TRUSTSTORE_P12]),
            ),
            (
                "built from another certificate: only the keystore",
                vec![both],
                StorePassword::NotRead,
                Some(with(&old_cert, ks)),
                write(&[names::KEYSTORE_P12]),
            ),
            (
                "keystore changed by someone else",
                vec![both],
                StorePassword::NotRead,
                Some(with(&current, b"TAMPERED")),
                write(&[names::KEYSTORE_P12]),
            ),
            (
                "truststore only: the keystore is removed, its record too",
                vec![(names::FORMATS, "truststore.p12")],
                StorePassword::NotRead,
                Some(with(&current, ks)),
                Decision::Tidy {
                    tidy: Tidy {
                        remove_keys: vec![names::KEYSTORE_P12.into()],
                        metadata: true,
                        ..Tidy::default()
                    },
                    not_after,
                },
            ),
            (
                "stores no longer requested",
                vec![],
                StorePassword::NotRead,
                Some(with(&current, ks)),
                Decision::Tidy {
                    tidy: Tidy {
                        remove_keys: both_stores.iter().map(|k| k.to_string()).collect(),
                        metadata: true,
                        ..Tidy::default()
                    },
                    not_after,
                },
            ),
            (
                "combined with tls-combined.pem",
                vec![(names::FORMATS, "tls-combined.pem,keystore.p12")],
                StorePassword::NotRead,
                None,
                Decision::Issue(IssueReason::Missing),
            ),
        ];
        for (what, extra, password, secret, expected) in rows {
            assert_eq!(
                run_stores(&f, &extra, password, secret.as_ref()),
                expected,
                "{what}"
            );
        }
        for bad in [
            "jks-pw",
            "jks-pw/",
            "/password",
            "JKS/password",
            "jks-pw/pass word",
        ] {
            let d = run_stores(
                &f,
                &[both, (names::KEYSTORE_PASSWORD_SECRET, bad)],
                StorePassword::Read("x"),
                None,
            );
            assert!(
                matches!(&d, Decision::Refuse(Refusal::InvalidRequest(m)) if m.contains(names::KEYSTORE_PASSWORD_SECRET)),
                "{bad}: {d:?}"
            );
        }
        assert!(Refusal::StorePassword(String::new()).may_resolve_by_itself());
        assert_eq!(
            format!("{:?}", StorePassword::Read("s3cret")),
            "Read(<redacted>)"
        );
    }

    #[test]
    fn store_annotations_record_only_what_was_built() {
        let inputs = StoreInputs {
            tls_crt: b"CRT",
            tls_key: b"KEY",
            bundle: "BUNDLE",
            password: "pw",
            salt: "shop/api-tls",
        };
        assert!(store_annotations(&[], &inputs).is_empty());
        let only_trust = store_annotations(&[(names::TRUSTSTORE_P12, b"TS".to_vec())], &inputs);
        assert_eq!(
            only_trust.keys().map(String::as_str).collect::<Vec<_>>(),
            [names::KEYSTORE_PASSWORD_HASH, names::TRUSTSTORE_DIGEST]
        );
        assert_eq!(
            only_trust[names::TRUSTSTORE_DIGEST],
            truststore_digest(b"BUNDLE", b"TS")
        );
        assert!(!only_trust.values().any(|v| v.contains("pw")));
        assert_eq!(
            unwanted_store_annotations(&Extras {
                keystore: true,
                ..Extras::default()
            }),
            [names::TRUSTSTORE_DIGEST]
        );
    }

    #[test]
    fn extra_data_puts_the_key_first() {
        let extras = Extras {
            include_ca: true,
            combined_pem: true,
            ..Extras::default()
        };
        let data = extra_data(&extras, "BUNDLE", b"CHAIN\n", b"KEY");
        assert_eq!(
            data,
            [
                (names::CA_CRT, b"BUNDLE".to_vec()),
                (names::TLS_COMBINED_PEM, b"KEY\nCHAIN\n".to_vec())
            ]
        );
        assert!(extra_data(&Extras::default(), "BUNDLE", b"C", b"K").is_empty());
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

    #[test]
    fn only_repairs_of_another_writers_damage_count_toward_a_fight() {
        use ReissueReason as R;
        let table = [
            (IssueReason::Missing, false),
            (IssueReason::Requested, false),
            (IssueReason::KeyAlgorithm, false),
            (IssueReason::Certificate(R::WrongIssuer), false),
            (IssueReason::Certificate(R::NearExpiry), false),
            (IssueReason::Certificate(R::Expired), false),
            (IssueReason::Certificate(R::WrongNames), false),
            (IssueReason::Certificate(R::UidMismatch), false),
            (IssueReason::Certificate(R::Missing), true),
            (IssueReason::Certificate(R::Unparsable), true),
            (IssueReason::Certificate(R::BadSignature), true),
            (IssueReason::Certificate(R::KeyMissing), true),
            (IssueReason::Certificate(R::KeyUnparsable), true),
            (IssueReason::Certificate(R::KeyMismatch), true),
        ];
        for (reason, counts) in table {
            assert_eq!(reason.undoes_another_writer(), counts, "{reason:?}");
        }
        let stale_store = Tidy {
            write_keys: vec![names::TRUSTSTORE_P12.into()],
            ..Tidy::default()
        };
        assert!(!stale_store.undoes_another_writer());
        let label_stripped = Tidy {
            metadata: true,
            ..Tidy::default()
        };
        assert!(label_stripped.undoes_another_writer());
    }
}
