//! Every annotation key, label, data key and default name service-ca reads or writes (docs/behavior.md §2–§4).

/// Requested Secret name on a Service (beta, preferred).
pub const SECRET_NAME_BETA: &str = "service.beta.openshift.io/serving-cert-secret-name";
/// Requested Secret name on a Service (alpha, legacy).
pub const SECRET_NAME_ALPHA: &str = "service.alpha.openshift.io/serving-cert-secret-name";
/// Subject CN of the CA that issued the Service's current certificate (beta).
pub const SIGNED_BY_BETA: &str = "service.beta.openshift.io/serving-cert-signed-by";
/// Subject CN of the CA that issued the Service's current certificate (alpha).
pub const SIGNED_BY_ALPHA: &str = "service.alpha.openshift.io/serving-cert-signed-by";
/// Text of the last issuance error (beta).
pub const ERROR_BETA: &str = "service.beta.openshift.io/serving-cert-generation-error";
/// Text of the last issuance error (alpha).
pub const ERROR_ALPHA: &str = "service.alpha.openshift.io/serving-cert-generation-error";
/// Count of consecutive issuance failures (beta).
pub const ERROR_NUM_BETA: &str = "service.beta.openshift.io/serving-cert-generation-error-num";
/// Count of consecutive issuance failures (alpha).
pub const ERROR_NUM_ALPHA: &str = "service.alpha.openshift.io/serving-cert-generation-error-num";
/// UID of the Service a serving Secret belongs to (beta).
pub const ORIGINATING_UID_BETA: &str = "service.beta.openshift.io/originating-service-uid";
/// UID of the Service a serving Secret belongs to (alpha).
pub const ORIGINATING_UID_ALPHA: &str = "service.alpha.openshift.io/originating-service-uid";
/// Name of the Service a serving Secret belongs to (beta).
pub const ORIGINATING_NAME_BETA: &str = "service.beta.openshift.io/originating-service-name";
/// Name of the Service a serving Secret belongs to (alpha).
pub const ORIGINATING_NAME_ALPHA: &str = "service.alpha.openshift.io/originating-service-name";
/// Leaf notAfter in RFC 3339 (beta).
pub const EXPIRY_BETA: &str = "service.beta.openshift.io/expiry";
/// Leaf notAfter in RFC 3339 (alpha).
pub const EXPIRY_ALPHA: &str = "service.alpha.openshift.io/expiry";
/// Informational owner annotation.
pub const OWNING_COMPONENT: &str = "openshift.io/owning-component";
/// Informational description annotation.
pub const DESCRIPTION: &str = "openshift.io/description";
/// Value of [`OWNING_COMPONENT`].
pub const COMPONENT: &str = "service-ca";
/// Request CA bundle injection (beta; every injectable kind).
pub const INJECT_BETA: &str = "service.beta.openshift.io/inject-cabundle";
/// Request CA bundle injection (alpha; ConfigMaps and APIServices only).
pub const INJECT_ALPHA: &str = "service.alpha.openshift.io/inject-cabundle";
/// Legacy ("vulnerable") injection request on ConfigMaps named [`LEGACY_CONFIGMAP_NAME`].
pub const INJECT_LEGACY: &str = "service.alpha.openshift.io/inject-vulnerable-legacy-cabundle";
/// The only ConfigMap name the legacy injector serves.
pub const LEGACY_CONFIGMAP_NAME: &str = "openshift-service-ca.crt";
/// Reason of the last forced CA rotation, recorded on the CA Secret.
pub const FORCED_ROTATION_REASON: &str = "service-ca.operators.openshift.io/forced-rotation-reason";
/// Requested forced-rotation reason, set by an administrator on the CA Secret (portable, docs/behavior.md §16 O-3).
pub const FORCE_ROTATION_REQUEST: &str = "service-ca.operators.openshift.io/force-rotation";
/// A forced-rotation reason starting with this prefix rotates without a trust bridge: a new,
/// unrelated CA (for a compromised CA key; docs/security.md).
pub const NO_BRIDGE_PREFIX: &str = "no-bridge:";

/// Label put on every Secret service-ca issues, so they can be found and watched cheaply.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "service-ca";

/// Field manager for every write.
pub const FIELD_MANAGER: &str = "service-ca";

/// Serving Secret: certificate chain.
pub const TLS_CRT: &str = "tls.crt";
/// Serving Secret / CA Secret: private key.
pub const TLS_KEY: &str = "tls.key";
/// CA Secret: bundle after a rotation.
pub const CA_BUNDLE_CRT: &str = "ca-bundle.crt";
/// CA Secret: current CA cross-signed by the previous one.
pub const INTERMEDIATE_CA_CRT: &str = "intermediate-ca.crt";
/// Injected ConfigMap data key.
pub const SERVICE_CA_CRT: &str = "service-ca.crt";
/// Secret type of serving and CA Secrets.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Default namespace of the CA Secret and bundle ConfigMap.
pub const DEFAULT_NAMESPACE: &str = "openshift-service-ca";
/// Default CA Secret name.
pub const DEFAULT_CA_SECRET: &str = "signing-key";
/// Default bundle ConfigMap name.
pub const DEFAULT_BUNDLE_CONFIGMAP: &str = "signing-cabundle";
/// Default leader-election Lease name.
pub const DEFAULT_LEASE: &str = "service-ca-controller-lock";

/// Returns the value of the first non-empty annotation among `keys`.
pub fn first_non_empty<'a>(
    annotations: Option<&'a std::collections::BTreeMap<String, String>>,
    keys: &[&str],
) -> Option<&'a str> {
    let annotations = annotations?;
    keys.iter()
        .filter_map(|k| annotations.get(*k))
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

/// Prefix of the annotations this project adds beyond the original (opt-in features).
pub const PROJECT_PREFIX: &str = "service-ca.dev/";
/// On a Service: a token; when it differs from the one recorded on its Secret, the certificate
/// is re-issued once (`service-ca renew`), without deleting anything.
pub const RENEW_REQUEST: &str = "service-ca.dev/renew";
/// On a serving Secret: the renew token its certificate was issued for.
pub const RENEWED_FOR: &str = "service-ca.dev/renewed-for";
/// On a Service: `"true"` (any case) also puts the CA bundle into its serving Secret as [`CA_CRT`],
/// kept current when the CA changes.
pub const INCLUDE_CA: &str = "service-ca.dev/include-ca";
/// On a Service: comma-separated extra formats written into its serving Secret; known:
/// [`TLS_COMBINED_PEM`].
pub const FORMATS: &str = "service-ca.dev/formats";
/// On a Service: the serving key's algorithm (`ecdsa-p256`, `ecdsa-p384`, `rsa-2048`, `rsa-3072`,
/// `rsa-4096`) instead of the configured default.
pub const KEY_ALGORITHM: &str = "service-ca.dev/key-algorithm";
/// On a Service: comma-separated DNS names added to the certificate's standard names.
pub const EXTRA_DNS_NAMES: &str = "service-ca.dev/extra-dns-names";
/// On a Service: `k=v,k2=v2` labels copied onto its serving Secret.
pub const SECRET_LABELS: &str = "service-ca.dev/secret-labels";
/// On a Service: `k=v,k2=v2` annotations copied onto its serving Secret.
pub const SECRET_ANNOTATIONS: &str = "service-ca.dev/secret-annotations";
/// Serving Secret ([`INCLUDE_CA`]): the CA bundle.
pub const CA_CRT: &str = "ca.crt";
/// Serving Secret ([`FORMATS`]): the private key followed by the certificate chain, in one PEM.
pub const TLS_COMBINED_PEM: &str = "tls-combined.pem";
/// Serving Secret ([`FORMATS`]): PKCS#12 with the private key and the certificate chain.
pub const KEYSTORE_P12: &str = "keystore.p12";
/// Serving Secret ([`FORMATS`]): PKCS#12 with the CA bundle as trusted certificates.
pub const TRUSTSTORE_P12: &str = "truststore.p12";
/// On a Service: `<secret>/<key>`, the Secret (in the Service's namespace) and data key holding the
/// password of [`KEYSTORE_P12`] and [`TRUSTSTORE_P12`]; without it, `changeit`.
pub const KEYSTORE_PASSWORD_SECRET: &str = "service-ca.dev/keystore-password-secret";
/// On a serving Secret: a salted digest of the stores' password (never the password itself).
pub const KEYSTORE_PASSWORD_HASH: &str = "service-ca.dev/keystore-password-hash";
/// On a serving Secret: digest of `tls.crt`, `tls.key` and the [`KEYSTORE_P12`] built from them.
pub const KEYSTORE_DIGEST: &str = "service-ca.dev/keystore-digest";
/// On a serving Secret: digest of the CA bundle and the [`TRUSTSTORE_P12`] built from it.
pub const TRUSTSTORE_DIGEST: &str = "service-ca.dev/truststore-digest";
/// On a Deployment, StatefulSet or DaemonSet: `"true"` (any case) asks for a rolling restart when
/// a serving Secret or injected CA bundle ConfigMap its pods mount changes.
pub const RESTART_ON_CHANGE: &str = "service-ca.dev/restart-on-change";
/// On the pod template of an opted-in workload: a hash of the service-ca material its pods mount,
/// written by service-ca (changing it is what rolls the pods).
pub const MATERIAL_HASH: &str = "service-ca.dev/material-hash";
/// On an injected ConfigMap: `merge` (any case) keeps its other data keys; service-ca owns only
/// [`SERVICE_CA_CRT`] (server-side apply). Absent or any other value: the original's replace.
pub const INJECT_MODE: &str = "service-ca.dev/inject-mode";
/// Value of [`INJECT_MODE`] that keeps the other data keys.
pub const INJECT_MODE_MERGE: &str = "merge";
/// On a Secret: `"true"` (any case) injects the CA bundle as [`CA_CRT`], the other keys kept.
pub const INJECT_SECRET: &str = "service-ca.dev/inject-cabundle";
/// Secret type service-ca never injects into (the token controller owns its `ca.crt`).
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Label of the per-namespace bundle ConfigMaps (`--namespace-bundle-name`), with
/// [`MANAGED_BY_LABEL`]: only ConfigMaps carrying both are ever changed or deleted.
pub const NAMESPACE_BUNDLE_LABEL: &str = "service-ca.dev/namespace-bundle";
