//! Entry points of the fuzz targets under `fuzz/` (docs/reliability.md, "Fuzzing"). Not an API.
//!
//! Each function decodes one input into what the controllers read from the cluster (annotation
//! values, a CA Secret's data, a serving Secret) and runs the same pure decisions the controllers
//! run; it must not panic on any input, and its `assert!`s state what the controllers rely on.
//! `tests/fuzz_corpus.rs` replays the committed corpus through these functions.
//!
//! Input format, chosen so that seeds stay readable and mutations stay meaningful: fields are
//! separated by NUL bytes; an annotation or label map is `key=value` lines.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use service_ca_pki::fuzzing as pki;
use service_ca_pki::{KeyAlgorithm, SigningCa};

use crate::ca::decide::{self as ca_decide, CaSecretView, CaStep, RotationReason};
use crate::names;
use crate::serving::decide::{self as serving, DecideConfig, Decision, SecretView, ServiceView};

/// The fields of an input, split at NUL bytes.
fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0).collect()
}

/// Annotation values are strings: invalid UTF-8 is replaced, as the API server never stores it.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `key=value` lines (a line without `=` is a key with an empty value).
fn map(bytes: &[u8]) -> BTreeMap<String, String> {
    text(bytes)
        .lines()
        .map(|line| match line.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect()
}

/// Target `annotations`: fields `name`, `namespace`, `cluster domain`, then alternating
/// annotation keys and values (so values may hold any character but NUL). Runs every reader of
/// the annotations of Services, ConfigMaps and the CA Secret.
pub fn annotations(data: &[u8]) {
    let fields = fields(data);
    let field = |i: usize| fields.get(i).map(|f| text(f)).unwrap_or_default();
    let (name, namespace, domain) = (field(0), field(1), field(2));
    let annotations: BTreeMap<String, String> = fields
        .get(3..)
        .unwrap_or_default()
        .chunks(2)
        .map(|kv| (text(kv[0]), kv.get(1).map(|v| text(v)).unwrap_or_default()))
        .collect();
    let a = Some(&annotations);
    let svc = ServiceView {
        name: &name,
        namespace: &namespace,
        uid: pki::SERVICE_UID,
        headless: false,
        annotations: a,
        keystore_password: Default::default(),
    };
    if let Some(secret) = serving::requested_secret_name(&svc) {
        let _ = serving::validate_secret_name(secret);
    }
    let _ = serving::paired_alpha_secret_name(&svc);
    let _ = serving::renew_request(&svc);
    let _ = serving::empty_request(&svc);
    let _ = serving::uses_beta_flavour(&svc);
    let cap = Duration::from_secs(3600);
    assert!(serving::retry_delay(serving::failure_count(a), cap) <= cap);
    let _ = serving::counter_reset(a);

    let cfg = |allow_external_wildcards| DecideConfig {
        cluster_domain: &domain,
        renew_before: Duration::from_secs(30 * 86_400),
        denied_namespaces: &[],
        allow_external_wildcards,
    };
    let strict = serving::extras(&svc, &cfg(false));
    let lax = serving::extras(&svc, &cfg(true));
    if let Ok(strict) = &strict {
        // Allowing external wildcards only ever accepts more.
        assert_eq!(lax.as_ref().ok(), Some(strict));
    }
    if let Ok(extras) = &lax {
        let _ = extras.data_keys();
        // Issuance encodes every extra name as an IA5String (rcgen refuses anything else).
        assert!(extras.extra_dns_names.iter().all(|n| n.is_ascii()));
    }

    let meta = kube::api::ObjectMeta {
        name: Some(name.clone()),
        annotations: Some(annotations.clone()),
        ..Default::default()
    };
    let standard = crate::inject::selected::<ConfigMap>(&meta);
    let _ = crate::inject::selected::<APIService>(&meta);
    // The legacy injector stands down wherever the standard one serves.
    assert!(!(standard && crate::inject::legacy_selected(&meta)));

    if let Some(reason) = annotations.get(names::FORCE_ROTATION_REQUEST) {
        let reason = RotationReason::Forced(reason.clone());
        let _ = reason.describe(&pki::fast_ca_config());
        let _ = reason.without_bridge();
    }
}

/// Target `ca_secret`: fields `tls.crt`, `tls.key`, `ca-bundle.crt`, `intermediate-ca.crt` (an
/// empty field is an absent key, as the CA manager reads them) and the Secret's annotations.
/// Runs the CA manager's decision, then checks every CA it accepts
/// ([`service_ca_pki::fuzzing::check_loaded_ca`]).
pub fn ca_secret(data: &[u8]) {
    let fields = fields(data);
    let get = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let annotations = map(get(4).unwrap_or_default());
    let view = CaSecretView {
        tls_crt: get(0),
        tls_key: get(1),
        ca_bundle: get(2),
        intermediate: get(3),
        annotations: Some(&annotations),
    };
    let cfg = pki::fast_ca_config();
    let now = pki::now();
    match ca_decide::decide(Some(&view), &cfg, now) {
        CaStep::Create => panic!("an existing Secret is never created again"),
        CaStep::Refill => assert!(view.tls_crt.is_none()),
        CaStep::Corrupt(err) => {
            let _ = err.to_string();
        }
        CaStep::Rotate { current, reason } => {
            let _ = reason.describe(&cfg);
            let _ = reason.forced();
            pki::check_loaded_ca(&current, now);
        }
        CaStep::UpToDate { ca, next_check } => {
            assert!((Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&next_check));
            pki::check_loaded_ca(&ca, now);
        }
    }
}

/// The CA of the `serving_secret` target, from a file in the `ca_secret` format (fixed, so that
/// seeds can carry certificates it signed).
pub fn serving_ca(data: &[u8]) -> Option<SigningCa> {
    let fields = fields(data);
    let get = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    SigningCa::from_secret_data(get(0)?, get(1)?, get(2), get(3), pki::now()).ok()
}

/// Target `serving_secret`: Service `shop/api` and the Secret it asks for. Fields: `tls.crt`,
/// `tls.key`, the Service's annotations, the Secret's annotations, the Secret's labels,
/// `headless` (or anything else), `ca.crt`, `tls-combined.pem`. Runs the serving decision
/// against `ca`; whenever it says "issue", issues as the controller would and checks that the new
/// certificate passes the reuse check (else the Service's certificate would be re-issued forever).
pub fn serving_secret(ca: &SigningCa, data: &[u8]) {
    let fields = fields(data);
    let get = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let svc_annotations = map(get(2).unwrap_or_default());
    let secret_annotations = map(get(3).unwrap_or_default());
    let labels = map(get(4).unwrap_or_default());
    let svc = ServiceView {
        name: "api",
        namespace: "shop",
        uid: pki::SERVICE_UID,
        headless: get(5) == Some(b"headless"),
        annotations: Some(&svc_annotations),
        keystore_password: Default::default(),
    };
    let (ca_crt, combined_pem) = (get(6), get(7));
    let extra_keys = [
        (names::CA_CRT, ca_crt),
        (names::TLS_COMBINED_PEM, combined_pem),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|_| k))
    .collect();
    let secret = SecretView {
        type_: Some(names::TLS_SECRET_TYPE),
        annotations: Some(&secret_annotations),
        owners: vec![("v1", "Service", "api", pki::SERVICE_UID)],
        tls_crt: get(0),
        tls_key: get(1),
        extra_keys,
        labelled: labels.get(names::MANAGED_BY_LABEL).map(String::as_str)
            == Some(names::MANAGED_BY_VALUE),
        labels: Some(&labels),
        ca_crt,
        combined_pem,
        keystore_p12: None,
        truststore_p12: None,
    };
    let cfg = DecideConfig {
        cluster_domain: "cluster.local",
        renew_before: Duration::from_secs(30 * 86_400),
        denied_namespaces: &[],
        allow_external_wildcards: false,
    };
    let now = pki::now();
    let secret_name = serving::requested_secret_name(&svc).unwrap_or("api-tls");
    match serving::decide(&svc, secret_name, Some(&secret), ca, &cfg, now) {
        Decision::Issue(reason) => {
            let _ = reason.as_str();
            let extras = serving::extras(&svc, &cfg).expect("decide issues only valid requests");
            check_issued_is_reusable(ca, &svc, &cfg, &extras);
        }
        Decision::Tidy { not_after, .. } => assert!(not_after > now),
        Decision::UpToDate {
            renew_at,
            not_after,
        } => assert!(renew_at <= not_after && not_after > now),
        Decision::Refuse(refusal) => {
            let _ = refusal.message(svc.namespace, secret_name, svc.uid);
            let _ = refusal.category();
        }
    }
}

/// Issues for `svc` as the controller would (with a P-256 key: generating RSA keys per input
/// would make the target too slow) and checks the reuse check accepts the result.
fn check_issued_is_reusable(
    ca: &SigningCa,
    svc: &ServiceView<'_>,
    cfg: &DecideConfig<'_>,
    extras: &serving::Extras,
) {
    let Ok(key) = service_ca_pki::generate_key(KeyAlgorithm::EcdsaP256) else {
        return;
    };
    let mut request = pki::request(&extras.extra_dns_names);
    request.headless = svc.headless;
    let now = pki::now();
    let issued = service_ca_pki::issue_serving(ca, &request, key, now)
        .expect("a valid request must be issued");
    let mut expected = service_ca_pki::serving_dns_names(
        svc.name,
        svc.namespace,
        svc.headless,
        cfg.cluster_domain,
    );
    expected.extend(extras.extra_dns_names.iter().cloned());
    let margin = serving::margin_for_lifetime(cfg.renew_before, issued.not_after - now);
    assert_eq!(
        service_ca_pki::verify_serving_secret(
            Some(issued.cert_chain_pem.as_bytes()),
            Some(issued.key_pem.as_bytes()),
            ca,
            &expected,
            Some(svc.uid),
            margin,
            now,
        ),
        None,
        "a certificate just issued for a valid request must be reusable"
    );
}
