//! Security behaviour against a real kube-apiserver: a CA whose certificate field holds a key is
//! refused, tampered and mismatched serving Secrets are re-issued, system Services and denied
//! namespaces get nothing, a forced rotation can drop the trust bridge, and an immutable
//! ConfigMap holding an old bundle is reported.

mod common;

use std::time::Duration;

use common::{
    WAIT, controller, current_bundle, data, holds_for, request_certificate, service_account_client,
    test_config, wait_for_new_bundle, wait_secret,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::names;
use service_ca_pki::{CaConfig, KeyAlgorithm, SigningCa};
use service_ca_testing::TestContext;
use service_ca_testing::tls::verify_chain;

fn is_issued(s: &Secret) -> bool {
    data(s, names::TLS_CRT).is_some_and(|c| !c.is_empty())
}

fn serial(s: &Secret) -> String {
    let crt = data(s, names::TLS_CRT).unwrap_or_default();
    service_ca_pki::parse_pem_certs(&crt)
        .ok()
        .and_then(|c| c.first().map(|c| c.serial_hex.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_ca_whose_certificate_field_holds_a_key_is_refused() {
    let ctx = TestContext::new("sec-combined").await.unwrap();
    let cfg = CaConfig {
        key_algorithm: KeyAlgorithm::EcdsaP256,
        ..CaConfig::default()
    };
    let ca = SigningCa::create(&cfg, time::OffsetDateTime::now_utc()).unwrap();
    // A combined PEM, as often produced by hand: certificate and key in tls.crt.
    let combined = format!("{}{}", ca.tls_crt_pem(), ca.tls_key_pem().as_str());
    let secrets: Api<Secret> = ctx.api();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("signing-key".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (
                    names::TLS_CRT.to_string(),
                    ByteString(combined.into_bytes()),
                ),
                (
                    names::TLS_KEY.to_string(),
                    ByteString(ca.tls_key_pem().as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let client = service_account_client(&ctx).await;
    let running = service_ca_controller::start(client, test_config(&ctx)).unwrap();
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "signing-key",
        "ServiceCAInvalid",
        "tls.crt",
    )
    .await;
    let configmaps: Api<ConfigMap> = ctx.api();
    holds_for(
        Duration::from_secs(3),
        "nothing published, Secret untouched",
        || async {
            running.ca.borrow().is_none()
                && configmaps
                    .get_opt("signing-cabundle")
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                && secrets
                    .get("signing-key")
                    .await
                    .ok()
                    .map(|s| s.resource_version())
                    == Some(created.resource_version())
        },
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn tampered_and_mismatched_secrets_are_reissued() {
    let ctx = TestContext::new("sec-verify").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "tampered", "tampered-tls").await;
    request_certificate(&services, "mismatched", "mismatched-tls").await;
    let tampered = wait_secret(&secrets, "tampered-tls", "issued", is_issued).await;
    let mismatched = wait_secret(&secrets, "mismatched-tls", "issued", is_issued).await;

    // The leaf keeps the CA's name and key id, but its signature no longer verifies.
    let chain = data(&tampered, names::TLS_CRT).unwrap();
    let mut ders = service_ca_pki::pem_cert_ders(&chain).unwrap();
    if let Some(byte) = ders[0].last_mut() {
        *byte ^= 1;
    }
    let forged: String = ders.iter().map(|d| service_ca_pki::cert_pem(d)).collect();
    secrets
        .patch(
            "tampered-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {names::TLS_CRT: ByteString(forged.into_bytes())}})),
        )
        .await
        .unwrap();
    wait_secret(&secrets, "tampered-tls", "re-issued", |s| {
        serial(s) != serial(&tampered)
    })
    .await;
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "tampered",
        "ServingCertRenewed",
        "bad_signature",
    )
    .await;

    // A key that belongs to another certificate.
    let other_key = data(&tampered, names::TLS_KEY).unwrap();
    secrets
        .patch(
            "mismatched-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {names::TLS_KEY: ByteString(other_key)}})),
        )
        .await
        .unwrap();
    let renewed = wait_secret(&secrets, "mismatched-tls", "re-issued", |s| {
        serial(s) != serial(&mismatched)
    })
    .await;
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "mismatched",
        "ServingCertRenewed",
        "key_mismatch",
    )
    .await;
    service_ca_testing::tls::verify_key_matches(
        &data(&renewed, names::TLS_CRT).unwrap(),
        &data(&renewed, names::TLS_KEY).unwrap(),
    )
    .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn system_services_and_denied_namespaces_get_nothing() {
    let ctx = TestContext::new("sec-system").await.unwrap();
    // A controller that watches `default` (its CA lives in the test namespace).
    let running = controller(&ctx, |cfg| cfg.watch_namespace = Some("default".into())).await;
    let defaults: Api<Service> = Api::namespaced(ctx.client.clone(), "default");
    let annotate = |value: Option<&str>| {
        Patch::Merge(json!({"metadata": {"annotations": {names::SECRET_NAME_BETA: value}}}))
    };
    defaults
        .patch(
            "kubernetes",
            &PatchParams::default(),
            &annotate(Some("apiserver-tls")),
        )
        .await
        .unwrap();
    common::wait_for_event(
        &ctx,
        "default",
        "kubernetes",
        "ServingCertFailed",
        "API server",
    )
    .await;
    let default_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), "default");
    holds_for(
        Duration::from_secs(2),
        "no certificate for the API server's name",
        || async {
            default_secrets
                .get_opt("apiserver-tls")
                .await
                .ok()
                .flatten()
                .is_none()
        },
    )
    .await;
    defaults
        .patch("kubernetes", &PatchParams::default(), &annotate(None))
        .await
        .unwrap();
    running.stop().await;

    // A namespace on the deny list.
    let running = controller(&ctx, |cfg| {
        cfg.denied_namespaces = vec![ctx.namespace.clone()]
    })
    .await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "denied", "denied-tls").await;
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "denied",
        "ServingCertFailed",
        "deny list",
    )
    .await;
    holds_for(
        Duration::from_secs(2),
        "no Secret in a denied namespace",
        || async { secrets.get_opt("denied-tls").await.ok().flatten().is_none() },
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn forced_rotation_without_a_bridge_distrusts_the_old_ca() {
    let ctx = TestContext::new("sec-nobridge").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "web", "web-tls").await;
    let before = wait_secret(&secrets, "web-tls", "issued", is_issued).await;
    let old_bundle = current_bundle(&running);
    secrets
        .patch(
            "signing-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                names::FORCE_ROTATION_REQUEST: "no-bridge: key found in a public repository"
            }}})),
        )
        .await
        .unwrap();
    let new_bundle = wait_for_new_bundle(&running, &old_bundle, WAIT).await;
    assert_eq!(
        service_ca_pki::pem_cert_ders(new_bundle.as_bytes())
            .unwrap()
            .len(),
        1
    );
    let ca_secret = secrets.get("signing-key").await.unwrap();
    assert!(data(&ca_secret, names::INTERMEDIATE_CA_CRT).is_none());
    assert!(data(&ca_secret, names::CA_BUNDLE_CRT).is_none());
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "signing-key",
        "ServiceCARotated",
        "without a trust bridge",
    )
    .await;
    // The old leaf is no longer trusted; the re-issued one is.
    let old_chain = data(&before, names::TLS_CRT).unwrap();
    let dns = format!("web.{}.svc", ctx.namespace);
    assert!(verify_chain(&new_bundle, &old_chain, &dns).is_err());
    let after = wait_secret(&secrets, "web-tls", "re-issued by the new CA", |s| {
        serial(s) != serial(&before)
    })
    .await;
    verify_chain(&new_bundle, &data(&after, names::TLS_CRT).unwrap(), &dns).unwrap();
    running.stop().await;
}

#[tokio::test]
async fn an_immutable_configmap_with_an_old_bundle_is_reported() {
    let ctx = TestContext::new("sec-immutable").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let configmaps: Api<ConfigMap> = ctx.api();
    let frozen = ConfigMap {
        metadata: ObjectMeta {
            name: Some("frozen".into()),
            annotations: Some([(names::INJECT_BETA.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        data: Some([(names::SERVICE_CA_CRT.to_string(), "old bundle".to_string())].into()),
        immutable: Some(true),
        ..Default::default()
    };
    configmaps
        .create(&PostParams::default(), &frozen)
        .await
        .unwrap();
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "frozen",
        "CABundleInjectionBlocked",
        "immutable",
    )
    .await;
    assert!(
        running
            .metrics
            .encode()
            .contains("service_ca_injection_blocked_total{controller=\"configmap\"} 1")
    );
    running.stop().await;
}
