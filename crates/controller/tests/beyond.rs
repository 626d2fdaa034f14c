//! Opt-in features beyond the original (README "Beyond the original"), against a real
//! kube-apiserver: `ca.crt` and `tls-combined.pem` in the serving Secret, the key algorithm, extra
//! DNS names and a metadata template, each requested per Service with a `service-ca.dev/*`
//! annotation; and the proof that a Service without them gets exactly the original's Secret.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    WAIT, annotation, controller, current_bundle, data, service, wait_for_new_bundle, wait_secret,
    wait_service,
};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Event, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::names;
use service_ca_pki::{KeyAlgorithm, PrivateKey};
use service_ca_testing::tls::{verify_chain, verify_key_matches};
use service_ca_testing::{TestContext, eventually};

const BETA: &str = names::SECRET_NAME_BETA;

fn is_issued(s: &Secret) -> bool {
    data(s, names::TLS_CRT).is_some_and(|c| !c.is_empty())
        && data(s, names::TLS_KEY).is_some_and(|k| !k.is_empty())
}

fn leaf(s: &Secret) -> service_ca_pki::CertInfo {
    let crt = data(s, names::TLS_CRT).unwrap_or_default();
    service_ca_pki::parse_pem_certs(&crt).unwrap().remove(0)
}

fn key_algorithm(s: &Secret) -> KeyAlgorithm {
    let key = data(s, names::TLS_KEY).unwrap();
    PrivateKey::from_pem(std::str::from_utf8(&key).unwrap())
        .unwrap()
        .algorithm()
}

fn data_keys(s: &Secret) -> Vec<String> {
    s.data
        .as_ref()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

async fn create(services: &Api<Service>, name: &str, annotations: &[(&str, &str)]) -> Service {
    services
        .create(&PostParams::default(), &service(name, annotations, false))
        .await
        .expect("create Service")
}

async fn annotate(services: &Api<Service>, name: &str, annotations: serde_json::Value) {
    services
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .expect("annotate Service");
}

async fn events_for(ctx: &TestContext, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

/// Waits for a `ServingCertFailed` Event on `name` whose message contains `text`, and checks the
/// error annotation carries the same problem; no Secret `secret` exists.
async fn wait_refused(ctx: &TestContext, name: &str, secret: &str, text: &str) {
    eventually(WAIT, "ServingCertFailed event", || async {
        events_for(ctx, name)
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ServingCertFailed")
                    && e.message.as_deref().is_some_and(|m| m.contains(text))
            })
            .then_some(())
    })
    .await;
    let services: Api<Service> = ctx.api();
    let svc = services.get(name).await.unwrap();
    assert!(
        annotation(&svc.metadata, names::ERROR_BETA).is_some_and(|e| e.contains(text)),
        "error annotation on {name}: {:?}",
        annotation(&svc.metadata, names::ERROR_BETA)
    );
    let secrets: Api<Secret> = ctx.api();
    assert!(
        secrets.get_opt(secret).await.unwrap().is_none(),
        "no Secret {secret}"
    );
}

#[tokio::test]
async fn without_the_annotations_the_secret_is_the_originals() {
    let ctx = TestContext::new("beyond-default").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    create(&services, "api", &[(BETA, "api-tls")]).await;
    let secret = wait_secret(&secrets, "api-tls", "serving secret", is_issued).await;
    assert_eq!(data_keys(&secret), ["tls.crt", "tls.key"]);
    let annotations: BTreeSet<&str> = secret
        .metadata
        .annotations
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        annotations,
        BTreeSet::from([
            names::ORIGINATING_UID_BETA,
            names::ORIGINATING_NAME_BETA,
            names::EXPIRY_BETA,
            names::EXPIRY_ALPHA,
            names::OWNING_COMPONENT,
            names::DESCRIPTION,
        ])
    );
    let labels: Vec<(&str, &str)> = secret
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, [(names::MANAGED_BY_LABEL, names::MANAGED_BY_VALUE)]);
    let ns = &ctx.namespace;
    assert_eq!(
        leaf(&secret).dns_names,
        [
            format!("api.{ns}.svc"),
            format!("api.{ns}.svc.cluster.local")
        ]
    );
    assert_eq!(key_algorithm(&secret), KeyAlgorithm::Rsa2048);
    running.stop().await;
}

#[tokio::test]
async fn ca_crt_and_combined_pem_follow_the_ca() {
    let ctx = TestContext::new("beyond-cacrt").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    create(
        &services,
        "api",
        &[
            (BETA, "api-tls"),
            (names::INCLUDE_CA, "true"),
            (names::FORMATS, "tls-combined.pem"),
        ],
    )
    .await;
    let secret = wait_secret(&secrets, "api-tls", "serving secret", is_issued).await;
    assert_eq!(
        data_keys(&secret),
        ["ca.crt", "tls-combined.pem", "tls.crt", "tls.key"]
    );
    let bundle = current_bundle(&running);
    let crt = data(&secret, names::TLS_CRT).unwrap();
    let key = data(&secret, names::TLS_KEY).unwrap();
    assert_eq!(data(&secret, names::CA_CRT).unwrap(), bundle.as_bytes());
    let combined = data(&secret, names::TLS_COMBINED_PEM).unwrap();
    assert_eq!(combined, [key.clone(), crt.clone()].concat(), "key first");
    // ca.crt verifies the chain, as a client mounting the Secret would use it.
    let ca_crt = String::from_utf8(data(&secret, names::CA_CRT).unwrap()).unwrap();
    verify_chain(&ca_crt, &crt, &format!("api.{}.svc", ctx.namespace)).unwrap();
    verify_key_matches(&crt, &key).unwrap();

    // A stale ca.crt is repaired in place: same certificate and key, one write.
    let serial = leaf(&secret).serial_hex;
    let stale = secrets
        .patch(
            "api-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"ca.crt": "c3RhbGU="}})),
        )
        .await
        .unwrap();
    assert_eq!(data(&stale, names::CA_CRT).unwrap(), b"stale");
    let writes = secrets
        .watch(
            &WatchParams::default().fields("metadata.name=api-tls"),
            &stale.resource_version().unwrap(),
        )
        .await
        .unwrap();
    let repaired = wait_secret(&secrets, "api-tls", "ca.crt repaired", |s| {
        data(s, names::CA_CRT).is_some_and(|c| c == bundle.as_bytes())
    })
    .await;
    assert_eq!(leaf(&repaired).serial_hex, serial, "not re-issued");
    assert_eq!(data(&repaired, names::TLS_KEY).unwrap(), key);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut writes = std::pin::pin!(writes);
    let mut modified = 0;
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_millis(500), writes.try_next()).await
    {
        if matches!(event, WatchEvent::Modified(_)) {
            modified += 1;
        }
    }
    assert_eq!(modified, 1, "the repair is one write");

    // A CA rotation re-issues the leaf and brings the new bundle along.
    Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .patch(
            "signing-key",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {names::FORCE_ROTATION_REQUEST: "beyond"}}}),
            ),
        )
        .await
        .unwrap();
    let new_bundle = wait_for_new_bundle(&running, &bundle, WAIT).await;
    let rotated = wait_secret(&secrets, "api-tls", "ca.crt follows the CA", |s| {
        data(s, names::CA_CRT).is_some_and(|c| c == new_bundle.as_bytes())
            && leaf(s).serial_hex != serial
    })
    .await;
    let crt = data(&rotated, names::TLS_CRT).unwrap();
    let key = data(&rotated, names::TLS_KEY).unwrap();
    assert_eq!(
        data(&rotated, names::TLS_COMBINED_PEM).unwrap(),
        [key, crt].concat()
    );

    // No longer requested: the extra keys go, the certificate stays.
    let serial = leaf(&rotated).serial_hex;
    annotate(
        &services,
        "api",
        json!({names::INCLUDE_CA: null, names::FORMATS: null}),
    )
    .await;
    let plain = wait_secret(&secrets, "api-tls", "extra keys removed", |s| {
        data_keys(s) == ["tls.crt", "tls.key"]
    })
    .await;
    assert_eq!(leaf(&plain).serial_hex, serial);

    // An unknown format is refused, and nothing is written.
    create(
        &services,
        "web",
        &[(BETA, "web-tls"), (names::FORMATS, "keystore.jks")],
    )
    .await;
    wait_refused(&ctx, "web", "web-tls", "unknown format \"keystore.jks\"").await;
    running.stop().await;
}

#[tokio::test]
async fn key_algorithm_per_service() {
    let ctx = TestContext::new("beyond-keyalg").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    create(
        &services,
        "api",
        &[(BETA, "api-tls"), (names::KEY_ALGORITHM, "ecdsa-p384")],
    )
    .await;
    let secret = wait_secret(&secrets, "api-tls", "serving secret", is_issued).await;
    assert_eq!(key_algorithm(&secret), KeyAlgorithm::EcdsaP384);
    let crt = data(&secret, names::TLS_CRT).unwrap();
    verify_key_matches(&crt, &data(&secret, names::TLS_KEY).unwrap()).unwrap();
    verify_chain(
        current_bundle(&running),
        &crt,
        &format!("api.{}.svc", ctx.namespace),
    )
    .unwrap();

    // Another algorithm: re-issued once with it.
    annotate(&services, "api", json!({names::KEY_ALGORITHM: "rsa-3072"})).await;
    let secret = wait_secret(&secrets, "api-tls", "re-issued with RSA 3072", |s| {
        key_algorithm(s) == KeyAlgorithm::Rsa3072
    })
    .await;
    let version = secret.resource_version();
    common::holds_for(Duration::from_secs(3), "no further re-issue", || async {
        secrets.get("api-tls").await.unwrap().resource_version() == version
    })
    .await;

    // Removing the request keeps the key: only an explicit request is enforced.
    annotate(&services, "api", json!({names::KEY_ALGORITHM: null})).await;
    common::holds_for(Duration::from_secs(3), "key kept", || async {
        secrets.get("api-tls").await.unwrap().resource_version() == version
    })
    .await;

    create(
        &services,
        "web",
        &[(BETA, "web-tls"), (names::KEY_ALGORITHM, "dsa-1024")],
    )
    .await;
    wait_refused(&ctx, "web", "web-tls", "unknown algorithm \"dsa-1024\"").await;
    running.stop().await;
}

#[tokio::test]
async fn extra_dns_names() {
    let ctx = TestContext::new("beyond-names").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let ns = ctx.namespace.clone();
    let own_wildcard = format!("*.api.{ns}.svc");
    create(
        &services,
        "api",
        &[
            (BETA, "api-tls"),
            (
                names::EXTRA_DNS_NAMES,
                &format!("api.example.com, {own_wildcard}"),
            ),
        ],
    )
    .await;
    let secret = wait_secret(&secrets, "api-tls", "serving secret", is_issued).await;
    let mut want = vec![
        own_wildcard.clone(),
        "api.example.com".to_string(),
        format!("api.{ns}.svc"),
        format!("api.{ns}.svc.cluster.local"),
    ];
    want.sort();
    assert_eq!(leaf(&secret).dns_names, want);
    assert_eq!(leaf(&secret).subject_cn, format!("api.{ns}.svc"));
    let crt = data(&secret, names::TLS_CRT).unwrap();
    let bundle = current_bundle(&running);
    verify_chain(&bundle, &crt, "api.example.com").unwrap();
    verify_chain(&bundle, &crt, &format!("v1.api.{ns}.svc")).unwrap();

    // Changed names: re-issued with the new set.
    annotate(
        &services,
        "api",
        json!({names::EXTRA_DNS_NAMES: "api.example.org"}),
    )
    .await;
    let secret = wait_secret(&secrets, "api-tls", "re-issued with new names", |s| {
        leaf(s).dns_names.contains(&"api.example.org".to_string())
    })
    .await;
    assert_eq!(leaf(&secret).dns_names.len(), 3);

    // Another Service's name and an external wildcard are refused.
    create(
        &services,
        "web",
        &[
            (BETA, "web-tls"),
            (names::EXTRA_DNS_NAMES, "api.kube-system.svc"),
        ],
    )
    .await;
    wait_refused(&ctx, "web", "web-tls", "cluster-internal name").await;
    create(
        &services,
        "wild",
        &[
            (BETA, "wild-tls"),
            (names::EXTRA_DNS_NAMES, "*.example.com"),
        ],
    )
    .await;
    wait_refused(&ctx, "wild", "wild-tls", "--allow-external-wildcards").await;
    running.stop().await;
}

#[tokio::test]
async fn external_wildcards_when_the_administrator_allows_them() {
    let ctx = TestContext::new("beyond-wild").await.unwrap();
    let running = controller(&ctx, |c| c.allow_external_wildcards = true).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    create(
        &services,
        "wild",
        &[
            (BETA, "wild-tls"),
            (names::EXTRA_DNS_NAMES, "*.example.com"),
        ],
    )
    .await;
    let secret = wait_secret(&secrets, "wild-tls", "serving secret", is_issued).await;
    assert!(
        leaf(&secret)
            .dns_names
            .contains(&"*.example.com".to_string())
    );
    running.stop().await;
}

#[tokio::test]
async fn secret_metadata_template() {
    let ctx = TestContext::new("beyond-template").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    create(
        &services,
        "api",
        &[
            (BETA, "api-tls"),
            (names::SECRET_LABELS, "team=payments,example.com/tier=gold"),
            (
                names::SECRET_ANNOTATIONS,
                "reflector.example.com/allowed=true",
            ),
        ],
    )
    .await;
    let secret = wait_secret(&secrets, "api-tls", "serving secret", is_issued).await;
    let labels = secret.labels();
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        labels.get("example.com/tier").map(String::as_str),
        Some("gold")
    );
    assert_eq!(
        labels.get(names::MANAGED_BY_LABEL).map(String::as_str),
        Some(names::MANAGED_BY_VALUE)
    );
    assert_eq!(
        annotation(&secret.metadata, "reflector.example.com/allowed"),
        Some("true")
    );
    assert_eq!(
        annotation(&secret.metadata, names::OWNING_COMPONENT),
        Some(names::COMPONENT)
    );
    let serial = leaf(&secret).serial_hex;

    // A changed template is applied without re-issuing.
    annotate(
        &services,
        "api",
        json!({names::SECRET_LABELS: "team=billing"}),
    )
    .await;
    let secret = wait_secret(&secrets, "api-tls", "template applied", |s| {
        s.labels().get("team").map(String::as_str) == Some("billing")
    })
    .await;
    assert_eq!(leaf(&secret).serial_hex, serial);

    // service-ca's own keys cannot be overridden, and invalid labels are refused.
    create(
        &services,
        "web",
        &[
            (BETA, "web-tls"),
            (names::SECRET_LABELS, "app.kubernetes.io/managed-by=helm"),
        ],
    )
    .await;
    wait_refused(&ctx, "web", "web-tls", "is service-ca's own").await;
    create(
        &services,
        "bad",
        &[(BETA, "bad-tls"), (names::SECRET_LABELS, "team=a b")],
    )
    .await;
    wait_refused(&ctx, "bad", "bad-tls", "value of \"team\"").await;
    // Fixing the annotation clears the refusal.
    annotate(&services, "bad", json!({names::SECRET_LABELS: "team=a"})).await;
    wait_secret(&secrets, "bad-tls", "issued after the fix", is_issued).await;
    wait_service(&services, "bad", "error cleared", |s| {
        annotation(&s.metadata, names::ERROR_BETA).is_none()
    })
    .await;
    running.stop().await;
}
