//! Drop-in fidelity against a real kube-apiserver: an expired CA is rotated, the alpha/beta
//! pairing rule (docs/behavior.md §3.2, §8.2 step 3), a reset error counter retries at once, and
//! a persistent problem's Warning is not repeated on every retry.

mod common;

use std::time::Duration;

use common::{WAIT, annotation, controller, data, holds_for, service, wait_secret, wait_service};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret, Service};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::names;
use service_ca_pki::{CaConfig, KeyAlgorithm, SigningCa};
use service_ca_testing::{TestContext, eventually};

fn is_issued(s: &Secret) -> bool {
    data(s, names::TLS_CRT).is_some_and(|c| !c.is_empty())
}

fn leaf(s: &Secret) -> service_ca_pki::CertInfo {
    let crt = data(s, names::TLS_CRT).unwrap_or_default();
    service_ca_pki::parse_pem_certs(&crt).unwrap().remove(0)
}

async fn warnings_about(ctx: &TestContext, name: &str, reason: &str) -> i32 {
    Api::<Event>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.count.unwrap_or(1).max(1))
        .sum()
}

#[tokio::test]
async fn an_expired_ca_is_rotated_with_a_bridge() {
    let ctx = TestContext::new("fid-expired").await.unwrap();
    let cfg = CaConfig {
        key_algorithm: KeyAlgorithm::EcdsaP256,
        ..CaConfig::short_rotation()
    };
    // A CA that expired a day ago: the cluster was switched off for longer than its life.
    let now = time::OffsetDateTime::now_utc();
    let expired = SigningCa::create(&cfg, now - cfg.lifetime - time::Duration::days(1)).unwrap();
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
                    ByteString(expired.tls_crt_pem().into()),
                ),
                (
                    names::TLS_KEY.to_string(),
                    ByteString(expired.tls_key_pem().as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let running = controller(&ctx, |_| {}).await;
    let rotated = wait_secret(&secrets, "signing-key", "the expired CA rotated", |s| {
        data(s, names::INTERMEDIATE_CA_CRT).is_some()
    })
    .await;
    let ca = leaf(&rotated);
    assert!(ca.not_after > now + time::Duration::days(700), "a fresh CA");
    assert_eq!(ca.subject_cn, expired.subject_cn(), "the subject is kept");
    // The old key signed the bridge: the intermediate is the new CA under the old one.
    let bridge =
        service_ca_pki::parse_pem_certs(&data(&rotated, names::INTERMEDIATE_CA_CRT).unwrap())
            .unwrap()
            .remove(0);
    assert_eq!(bridge.akid.as_deref(), Some(expired.skid().as_slice()));
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "signing-key",
        "ServiceCARotated",
        "expired",
    )
    .await;

    // It issues again.
    let services: Api<Service> = ctx.api();
    common::request_certificate(&services, "after", "after-tls").await;
    let issued = wait_secret(&secrets, "after-tls", "issued by the rotated CA", is_issued).await;
    assert_eq!(leaf(&issued).akid, ca.skid);
    running.stop().await;
}

#[tokio::test]
async fn alpha_and_beta_pairing_rows() {
    let ctx = TestContext::new("fid-pairing").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let pp = PostParams::default();

    // Row: both annotations, same name: one Secret, beta-flavoured origin.
    let both_same = &[
        (names::SECRET_NAME_BETA, "same-tls"),
        (names::SECRET_NAME_ALPHA, "same-tls"),
    ];
    services
        .create(&pp, &service("same", both_same, false))
        .await
        .unwrap();
    let same = wait_secret(&secrets, "same-tls", "issued", is_issued).await;
    assert!(annotation(&same.metadata, names::ORIGINATING_UID_BETA).is_some());
    assert!(annotation(&same.metadata, names::ORIGINATING_UID_ALPHA).is_none());

    // Row: alpha only: alpha-flavoured origin.
    services
        .create(
            &pp,
            &service("alpha", &[(names::SECRET_NAME_ALPHA, "alpha-tls")], false),
        )
        .await
        .unwrap();
    let alpha = wait_secret(&secrets, "alpha-tls", "issued", is_issued).await;
    assert!(annotation(&alpha.metadata, names::ORIGINATING_UID_ALPHA).is_some());
    assert!(annotation(&alpha.metadata, names::ORIGINATING_UID_BETA).is_none());

    // Row: both set and different, no alpha-named Secret: only the beta one is created.
    let differ = &[
        (names::SECRET_NAME_BETA, "new-tls"),
        (names::SECRET_NAME_ALPHA, "old-tls"),
    ];
    services
        .create(&pp, &service("differ", differ, false))
        .await
        .unwrap();
    wait_secret(&secrets, "new-tls", "beta-named Secret issued", is_issued).await;
    holds_for(
        Duration::from_secs(3),
        "no alpha-named Secret is created",
        || async { secrets.get_opt("old-tls").await.ok().flatten().is_none() },
    )
    .await;

    // Row: both set and different, the alpha-named Secret exists and is this Service's (issued
    // while only the alpha annotation was set): it keeps being maintained. Here its certificate
    // is damaged and must be re-issued; the beta-named one stays as it is.
    services
        .create(
            &pp,
            &service("renamed", &[(names::SECRET_NAME_ALPHA, "was-tls")], false),
        )
        .await
        .unwrap();
    wait_secret(&secrets, "was-tls", "alpha-named Secret issued", is_issued).await;
    services
        .patch(
            "renamed",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {names::SECRET_NAME_BETA: "is-tls"}}}),
            ),
        )
        .await
        .unwrap();
    let beta = wait_secret(&secrets, "is-tls", "beta-named Secret issued", is_issued).await;
    secrets
        .patch(
            "was-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {names::TLS_CRT: ByteString(b"garbage".to_vec())}})),
        )
        .await
        .unwrap();
    let repaired = wait_secret(&secrets, "was-tls", "alpha-named Secret renewed", |s| {
        service_ca_pki::parse_pem_certs(&data(s, names::TLS_CRT).unwrap_or_default())
            .is_ok_and(|c| !c.is_empty())
    })
    .await;
    assert_eq!(leaf(&repaired).dns_names, leaf(&beta).dns_names);
    assert_eq!(
        secrets.get("is-tls").await.unwrap().resource_version(),
        beta.resource_version(),
        "the beta-named Secret was not touched"
    );
    running.stop().await;
}

#[tokio::test]
async fn resetting_the_error_counter_retries_now_and_warnings_are_not_repeated() {
    let ctx = TestContext::new("fid-reset").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    // A Secret of that name that is not the Service's: a persistent, reported problem.
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("taken-tls".into()),
            ..Default::default()
        },
        string_data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    common::request_certificate(&services, "taken", "taken-tls").await;
    let counter = |s: &Service| annotation(&s.metadata, names::ERROR_NUM_BETA).map(str::to_string);
    wait_service(&services, "taken", "first failure recorded", |s| {
        counter(s).as_deref() == Some("1")
    })
    .await;
    eventually(WAIT, "one Warning", || async {
        (warnings_about(&ctx, "taken", "ServingCertFailed").await == 1).then_some(())
    })
    .await;

    // The back-off retries 10 s later (count 2); the one after that is 20 s away. A user resets
    // the counter and expects an attempt now.
    wait_service(&services, "taken", "second failure recorded", |s| {
        counter(s).as_deref() == Some("2")
    })
    .await;
    services
        .patch(
            "taken",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                names::ERROR_NUM_BETA: "0", names::ERROR_NUM_ALPHA: "0"
            }}})),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    wait_service(&services, "taken", "a retry right after the reset", |s| {
        counter(s).as_deref() == Some("1")
    })
    .await;
    let waited = started.elapsed();
    eprintln!("retry after counter reset: {waited:?}");
    assert!(
        waited < Duration::from_secs(8),
        "the reset was answered by the back-off timer ({waited:?}), not at once"
    );
    // The problem did not change: neither the retries nor the reset published a second Warning.
    holds_for(Duration::from_secs(2), "no repeated Warning", || async {
        warnings_about(&ctx, "taken", "ServingCertFailed").await == 1
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_renew_request_reissues_exactly_once() {
    let ctx = TestContext::new("fid-renew").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    common::request_certificate(&services, "web", "web-tls").await;
    let before = wait_secret(&secrets, "web-tls", "issued", is_issued).await;
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {names::RENEW_REQUEST: "1"}}})),
        )
        .await
        .unwrap();
    let renewed = wait_secret(&secrets, "web-tls", "re-issued on request", |s| {
        annotation(&s.metadata, names::RENEWED_FOR) == Some("1")
    })
    .await;
    assert_ne!(leaf(&renewed).serial_hex, leaf(&before).serial_hex);
    assert_ne!(
        data(&renewed, names::TLS_KEY),
        data(&before, names::TLS_KEY)
    );
    holds_for(
        Duration::from_secs(3),
        "no second re-issue for the same token",
        || async {
            secrets
                .get("web-tls")
                .await
                .is_ok_and(|s| s.resource_version() == renewed.resource_version())
        },
    )
    .await;
    running.stop().await;
}
