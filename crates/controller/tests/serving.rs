//! Serving-certificate controller against a real kube-apiserver: one test per row of the
//! decision tables in docs/behavior.md §7.4 and §8.2, plus bad input, restarts and a burst of Services.

mod common;

use std::time::{Duration, Instant};

use common::{
    WAIT, annotation, controller, current_bundle, data, request_certificate, service,
    wait_for_new_bundle, wait_secret, wait_service,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret, Service};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::names;
use service_ca_testing::tls::{verify_chain, verify_key_matches};
use service_ca_testing::{TestContext, eventually};

const ALPHA: &str = names::SECRET_NAME_ALPHA;

fn pp() -> PostParams {
    PostParams::default()
}

fn is_issued(s: &Secret) -> bool {
    data(s, names::TLS_CRT).is_some_and(|c| !c.is_empty())
        && data(s, names::TLS_KEY).is_some_and(|k| !k.is_empty())
}

fn leaf_serial(s: &Secret) -> String {
    let crt = data(s, names::TLS_CRT).unwrap_or_default();
    service_ca_pki::parse_pem_certs(&crt)
        .ok()
        .and_then(|c| c.first().map(|c| c.serial_hex.clone()))
        .unwrap_or_default()
}

fn leaf_names(s: &Secret) -> Vec<String> {
    let crt = data(s, names::TLS_CRT).unwrap_or_default();
    service_ca_pki::parse_pem_certs(&crt)
        .ok()
        .and_then(|c| c.first().map(|c| c.dns_names.clone()))
        .unwrap_or_default()
}

/// Waits until an Event with `reason` about the object `name` exists in the test namespace.
async fn wait_event(ctx: &TestContext, name: &str, reason: &str) {
    eventually(WAIT, reason, || async {
        events_for(ctx, name)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason))
            .then_some(())
    })
    .await
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

#[tokio::test]
async fn annotated_service_gets_a_valid_tls_secret() {
    let ctx = TestContext::new("serving-create").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let svc = request_certificate(&services, "api", "api-tls").await;

    let secret = wait_secret(&secrets, "api-tls", "serving secret", is_issued).await;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        secret.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["tls.crt", "tls.key"]
    );
    let crt = data(&secret, names::TLS_CRT).unwrap();
    let key = data(&secret, names::TLS_KEY).unwrap();
    let bundle = current_bundle(&running);
    for name in [
        format!("api.{}.svc", ctx.namespace),
        format!("api.{}.svc.cluster.local", ctx.namespace),
    ] {
        verify_chain(&bundle, &crt, &name).unwrap();
    }
    assert!(verify_chain(&bundle, &crt, "other.svc").is_err());
    verify_key_matches(&crt, &key).unwrap();
    assert!(String::from_utf8_lossy(&key).starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    let meta = &secret.metadata;
    assert_eq!(
        annotation(meta, names::ORIGINATING_UID_BETA),
        svc.uid().as_deref()
    );
    assert_eq!(annotation(meta, names::ORIGINATING_NAME_BETA), Some("api"));
    assert_eq!(annotation(meta, names::ORIGINATING_UID_ALPHA), None);
    assert!(annotation(meta, names::EXPIRY_BETA).is_some_and(|e| e.ends_with('Z')));
    assert_eq!(
        annotation(meta, names::EXPIRY_BETA),
        annotation(meta, names::EXPIRY_ALPHA)
    );
    let owners = meta.owner_references.as_ref().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Service", "api")
    );
    assert_eq!(Some(&owners[0].uid), svc.uid().as_ref());

    let cn = running.ca.borrow().as_ref().unwrap().subject_cn();
    let svc = wait_service(&services, "api", "signed-by", |s| {
        annotation(&s.metadata, names::SIGNED_BY_BETA).is_some()
    })
    .await;
    assert_eq!(
        annotation(&svc.metadata, names::SIGNED_BY_BETA),
        Some(cn.as_str())
    );
    assert_eq!(
        annotation(&svc.metadata, names::SIGNED_BY_ALPHA),
        Some(cn.as_str())
    );
    // The Event is recorded after the writes it reports on.
    wait_event(&ctx, "api", "ServingCertIssued").await;
    running.stop().await;
}

#[tokio::test]
async fn alpha_annotation_and_headless_service() {
    let ctx = TestContext::new("serving-alpha").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    services
        .create(&pp(), &service("db", &[(ALPHA, "db-tls")], true))
        .await
        .unwrap();
    let secret = wait_secret(&secrets, "db-tls", "alpha secret", is_issued).await;
    assert!(annotation(&secret.metadata, names::ORIGINATING_UID_ALPHA).is_some());
    assert!(annotation(&secret.metadata, names::ORIGINATING_UID_BETA).is_none());
    let ns = &ctx.namespace;
    let mut expected = vec![
        format!("*.db.{ns}.svc"),
        format!("*.db.{ns}.svc.cluster.local"),
        format!("db.{ns}.svc"),
        format!("db.{ns}.svc.cluster.local"),
    ];
    expected.sort();
    let mut got = leaf_names(&secret);
    got.sort();
    assert_eq!(got, expected);
    let crt = data(&secret, names::TLS_CRT).unwrap();
    verify_chain(
        current_bundle(&running),
        &crt,
        &format!("pod-0.db.{ns}.svc"),
    )
    .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn valid_secret_causes_no_writes_even_after_restart() {
    let ctx = TestContext::new("serving-idle").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    for i in 0..3 {
        request_certificate(&services, &format!("s{i}"), &format!("s{i}-tls")).await;
    }
    for i in 0..3 {
        wait_secret(&secrets, &format!("s{i}-tls"), "secret", is_issued).await;
        wait_service(&services, &format!("s{i}"), "signed-by", |s| {
            annotation(&s.metadata, names::SIGNED_BY_BETA).is_some()
        })
        .await;
    }
    let versions = || async {
        let secrets = secrets
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=service-ca"))
            .await
            .unwrap()
            .items;
        let services = services.list(&ListParams::default()).await.unwrap().items;
        secrets
            .iter()
            .map(|s| (format!("Secret {}", s.name_any()), s.resource_version()))
            .chain(
                services
                    .iter()
                    .map(|s| (format!("Service {}", s.name_any()), s.resource_version())),
            )
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = versions().await;
    assert_eq!(before.len(), 6, "{before:?}");
    running.stop().await;

    // A fresh controller looks at every Service again and must find nothing to do: observed from
    // its start until its three reconciles are done, and for a window after them.
    let running = controller(&ctx, |_| {}).await;
    let untouched = || async {
        running.metrics.writes_of("serving") == 0
            && running.metrics.issued_total() == 0
            && versions().await == before
    };
    eventually(WAIT, "three reconciles after restart", || async {
        assert!(untouched().await, "a write after the restart");
        let text = running.metrics.encode();
        let reconciled = text
            .lines()
            .find(|l| l.starts_with("service_ca_reconciles_total{controller=\"serving\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        (reconciled >= 3).then_some(())
    })
    .await;
    common::holds_for(
        Duration::from_secs(3),
        "no writes, no issuance, every resourceVersion kept after the restart",
        untouched,
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn foreign_secret_is_never_touched_and_reported() {
    let ctx = TestContext::new("serving-foreign").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..Default::default()
        },
        data: Some([("user".to_string(), ByteString(b"precious".to_vec()))].into()),
        ..Default::default()
    };
    let foreign = secrets.create(&pp(), &foreign).await.unwrap();
    request_certificate(&services, "web", "taken").await;
    let svc = wait_service(&services, "web", "error annotation", |s| {
        annotation(&s.metadata, names::ERROR_BETA).is_some()
    })
    .await;
    let error = annotation(&svc.metadata, names::ERROR_BETA).unwrap();
    assert!(
        error.contains("does not have corresponding service UID"),
        "{error}"
    );
    assert_eq!(annotation(&svc.metadata, names::ERROR_ALPHA), Some(error));
    assert_eq!(annotation(&svc.metadata, names::ERROR_NUM_BETA), Some("1"));
    let live = secrets.get("taken").await.unwrap();
    assert_eq!(live.resource_version(), foreign.resource_version());
    assert_eq!(data(&live, "user").as_deref(), Some(&b"precious"[..]));
    wait_event(&ctx, "web", "ServingCertFailed").await;

    // No hot loop: the failure is retried with back-off, not on our own writes; and the foreign
    // Secret is never touched.
    let writes = running.metrics.writes_of("serving");
    common::holds_for(
        Duration::from_secs(3),
        "at most one more write (a back-off retry), foreign Secret untouched",
        || async {
            let now = running.metrics.writes_of("serving");
            let live = secrets.get("taken").await.unwrap();
            now <= writes + 1 && live.resource_version() == foreign.resource_version()
        },
    )
    .await;

    // When the conflicting Secret goes away, the Service gets its Secret at once.
    let deleted_at = Instant::now();
    secrets
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    wait_secret(
        &secrets,
        "taken",
        "issued after conflict resolved",
        is_issued,
    )
    .await;
    eprintln!(
        "conflict resolved: secret issued {:?} after the foreign one was deleted",
        deleted_at.elapsed()
    );
    let svc = wait_service(&services, "web", "errors cleared", |s| {
        annotation(&s.metadata, names::ERROR_BETA).is_none()
            && annotation(&s.metadata, names::SIGNED_BY_BETA).is_some()
    })
    .await;
    assert_eq!(annotation(&svc.metadata, names::ERROR_NUM_BETA), None);
    running.stop().await;
}

#[tokio::test]
async fn bad_input_is_reported_without_a_hot_loop() {
    let ctx = TestContext::new("serving-bad").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "bad-name", "invalid-${SECRET_NAME}").await;
    request_certificate(&services, "empty", "").await;
    for name in ["bad-name", "empty"] {
        let svc = wait_service(&services, name, "error annotation", |s| {
            annotation(&s.metadata, names::ERROR_BETA).is_some()
        })
        .await;
        let error = annotation(&svc.metadata, names::ERROR_BETA).unwrap();
        assert!(error.contains("secret name"), "{name}: {error}");
    }
    // Each refusal was one write (the error annotations); nothing more follows.
    let writes = eventually(WAIT, "both refusals counted", || async {
        let writes = running.metrics.writes_of("serving");
        (writes >= 2).then_some(writes)
    })
    .await;
    let versions = || async {
        let mut versions = vec![];
        for name in ["bad-name", "empty"] {
            versions.push(services.get(name).await.unwrap().resource_version());
        }
        versions
    };
    let before = versions().await;
    common::holds_for(
        Duration::from_secs(3),
        "no hot loop on bad input (writes and Services unchanged)",
        || async { running.metrics.writes_of("serving") == writes && versions().await == before },
    )
    .await;

    // Wrong type: replace our issued Secret by an Opaque one carrying our UID annotation.
    request_certificate(&services, "typed", "typed-tls").await;
    wait_secret(&secrets, "typed-tls", "typed secret", is_issued).await;
    let uid = services.get("typed").await.unwrap().uid().unwrap();
    secrets
        .delete("typed-tls", &DeleteParams::default())
        .await
        .unwrap();
    let opaque = Secret {
        metadata: ObjectMeta {
            name: Some("typed-tls".into()),
            annotations: Some([(names::ORIGINATING_UID_BETA.to_string(), uid)].into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([("tls.crt".to_string(), ByteString(b"garbage".to_vec()))].into()),
        ..Default::default()
    };
    // The controller may re-create the Secret between our delete and create; retry once then.
    if secrets.create(&pp(), &opaque).await.is_err() {
        secrets
            .delete("typed-tls", &DeleteParams::default())
            .await
            .unwrap();
        eventually(WAIT, "opaque secret created", || async {
            secrets.create(&pp(), &opaque).await.ok().map(|_| ())
        })
        .await;
    }
    let svc = wait_service(&services, "typed", "wrong-type error", |s| {
        annotation(&s.metadata, names::ERROR_BETA).is_some_and(|e| e.contains("type"))
    })
    .await;
    assert!(
        annotation(&svc.metadata, names::ERROR_BETA)
            .unwrap()
            .contains("Opaque")
    );
    common::holds_for(
        Duration::from_secs(2),
        "the wrong-type Secret is left as it is",
        || async { secrets.get("typed-tls").await.unwrap().type_.as_deref() == Some("Opaque") },
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn damaged_secrets_are_repaired() {
    let ctx = TestContext::new("serving-repair").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "app", "app-tls").await;
    let first = wait_secret(&secrets, "app-tls", "issued", is_issued).await;
    let serial = leaf_serial(&first);
    let pp_merge = PatchParams::default();

    // Extra data keys are removed; the certificate is kept.
    secrets
        .patch(
            "app-tls",
            &pp_merge,
            &Patch::Merge(
                json!({"data": {"extra": "eA=="}, "metadata": {"labels": {"mine": "yes"}}}),
            ),
        )
        .await
        .unwrap();
    let tidy = wait_secret(&secrets, "app-tls", "extra key removed", |s| {
        data(s, "extra").is_none()
    })
    .await;
    assert_eq!(leaf_serial(&tidy), serial);
    assert_eq!(tidy.labels().get("mine").map(String::as_str), Some("yes"));

    // Corrupt tls.crt: re-issued, metadata others wrote is kept.
    secrets
        .patch(
            "app-tls",
            &pp_merge,
            &Patch::Merge(json!({"data": {"tls.crt": "bm90IGEgY2VydA=="}})),
        )
        .await
        .unwrap();
    let fixed = wait_secret(&secrets, "app-tls", "corrupt cert re-issued", |s| {
        !leaf_serial(s).is_empty() && leaf_serial(s) != serial
    })
    .await;
    assert_eq!(fixed.labels().get("mine").map(String::as_str), Some("yes"));
    verify_key_matches(
        &data(&fixed, names::TLS_CRT).unwrap(),
        &data(&fixed, names::TLS_KEY).unwrap(),
    )
    .unwrap();
    let serial = leaf_serial(&fixed);

    // Empty tls.key (the API refuses a kubernetes.io/tls Secret without the key): re-issued.
    secrets
        .patch(
            "app-tls",
            &pp_merge,
            &Patch::Merge(json!({"data": {"tls.key": ""}})),
        )
        .await
        .unwrap();
    let rekeyed = wait_secret(&secrets, "app-tls", "missing key re-issued", |s| {
        data(s, names::TLS_KEY).is_some_and(|k| !k.is_empty()) && leaf_serial(s) != serial
    })
    .await;
    verify_key_matches(
        &data(&rekeyed, names::TLS_CRT).unwrap(),
        &data(&rekeyed, names::TLS_KEY).unwrap(),
    )
    .unwrap();

    // Deleted by the user: re-issued within seconds, with a new key.
    let old_key = data(&rekeyed, names::TLS_KEY).unwrap();
    secrets
        .delete("app-tls", &DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    let reissued = wait_secret(&secrets, "app-tls", "re-issued after delete", |s| {
        is_issued(s) && data(s, names::TLS_KEY).unwrap() != old_key
    })
    .await;
    eprintln!(
        "user-deleted secret re-issued after {:?}",
        started.elapsed()
    );
    assert!(
        verify_chain(
            current_bundle(&running),
            &data(&reissued, names::TLS_CRT).unwrap(),
            &format!("app.{}.svc", ctx.namespace)
        )
        .is_ok()
    );

    // Service deleted: the Secret is garbage-collected through its ownerReference.
    services
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "secret garbage-collected", || async {
        secrets
            .get_opt("app-tls")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    running.stop().await;
}

/// Changes a Service's clusterIP the only way the API allows: through type ExternalName and back
/// to ClusterIP with `cluster_ip` ("None" for headless, None for an allocated address).
async fn switch_cluster_ip(services: &Api<Service>, name: &str, cluster_ip: Option<&str>) {
    let external = json!({"spec": {"type": "ExternalName", "externalName": "example.com",
        "clusterIP": null, "clusterIPs": null, "selector": null}});
    let cluster = json!({"spec": {"type": "ClusterIP", "externalName": null,
        "clusterIP": cluster_ip, "selector": {"app": name}}});
    for spec in [external, cluster] {
        services
            .patch(name, &PatchParams::default(), &Patch::Merge(spec))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn service_turning_headless_and_back_is_reissued() {
    let ctx = TestContext::new("serving-headless").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "flip", "flip-tls").await;
    let secret = wait_secret(&secrets, "flip-tls", "issued", is_issued).await;
    assert_eq!(leaf_names(&secret).len(), 2);

    // clusterIP is immutable; going through ExternalName is the API's way to make it headless.
    switch_cluster_ip(&services, "flip", Some("None")).await;
    let secret = wait_secret(&secrets, "flip-tls", "headless SANs", |s| {
        leaf_names(s).len() == 4
    })
    .await;
    assert!(leaf_names(&secret)[0].starts_with("*."));

    // And back: through ExternalName again to a ClusterIP Service with an allocated address.
    switch_cluster_ip(&services, "flip", None).await;
    let secret = wait_secret(&secrets, "flip-tls", "non-headless SANs again", |s| {
        leaf_names(s).len() == 2
    })
    .await;
    assert!(!leaf_names(&secret)[0].starts_with("*."));
    running.stop().await;
}

#[tokio::test]
async fn near_expiry_is_renewed() {
    let ctx = TestContext::new("serving-expiry").await.unwrap();
    // Leaves live 16 s; the 1 h margin is capped at half their life: renewal after ~8 s.
    let running = controller(&ctx, |cfg| {
        cfg.leaf_lifetime = Duration::from_secs(16);
        cfg.renew_before = Duration::from_secs(3600);
    })
    .await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "short", "short-tls").await;
    let first = wait_secret(&secrets, "short-tls", "issued", is_issued).await;
    let serial = leaf_serial(&first);
    wait_secret(&secrets, "short-tls", "renewed", |s| {
        is_issued(s) && leaf_serial(s) != serial
    })
    .await;
    wait_event(&ctx, "short", "ServingCertRenewed").await;
    running.stop().await;
}

#[tokio::test]
async fn ca_change_reissues_every_secret() {
    let ctx = TestContext::new("serving-ca").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    for i in 0..3 {
        request_certificate(&services, &format!("c{i}"), &format!("c{i}-tls")).await;
    }
    let old_bundle = current_bundle(&running);
    for i in 0..3 {
        wait_secret(&secrets, &format!("c{i}-tls"), "issued", is_issued).await;
    }
    // Manual rotation: deleting the CA Secret creates a brand-new CA.
    secrets
        .delete("signing-key", &DeleteParams::default())
        .await
        .unwrap();
    let new_bundle = wait_for_new_bundle(&running, &old_bundle, WAIT).await;
    for i in 0..3 {
        let name = format!("c{i}.{}.svc", ctx.namespace);
        let secret = wait_secret(
            &secrets,
            &format!("c{i}-tls"),
            "re-issued under new CA",
            |s| {
                data(s, names::TLS_CRT)
                    .is_some_and(|crt| verify_chain(&new_bundle, &crt, &name).is_ok())
            },
        )
        .await;
        assert!(verify_chain(&old_bundle, &data(&secret, names::TLS_CRT).unwrap(), &name).is_err());
    }
    running.stop().await;
}

#[tokio::test]
async fn two_hundred_services_at_once() {
    let ctx = TestContext::new("serving-burst").await.unwrap();
    let running = controller(&ctx, |cfg| cfg.key_pool_size = 32).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let started = Instant::now();
    let creates = (0..200).map(|i| {
        let services = services.clone();
        async move {
            request_certificate(&services, &format!("b{i}"), &format!("b{i}-tls")).await;
        }
    });
    futures::future::join_all(creates).await;
    let bundle = current_bundle(&running);
    let all = eventually(Duration::from_secs(300), "200 secrets", || async {
        let list = secrets
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=service-ca"))
            .await
            .ok()?;
        (list.items.iter().filter(|s| is_issued(s)).count() == 200).then_some(list.items)
    })
    .await;
    let took = started.elapsed();
    for secret in &all {
        let svc = secret.name_any().trim_end_matches("-tls").to_string();
        verify_chain(
            &bundle,
            &data(secret, names::TLS_CRT).unwrap(),
            &format!("{svc}.{}.svc", ctx.namespace),
        )
        .unwrap();
    }
    eprintln!("200 services: all secrets issued and verified in {took:?}");
    running.stop().await;
}

#[tokio::test]
async fn derived_state_follows_deletes() {
    let ctx = TestContext::new("serving-forget").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let tracked = || common::metric_value(&running.metrics.encode(), "service_ca_tracked_services");
    assert_eq!(tracked(), Some(0.0));

    request_certificate(&services, "kept", "kept-tls").await;
    request_certificate(&services, "gone", "gone-tls").await;
    wait_secret(&secrets, "kept-tls", "issued", is_issued).await;
    wait_secret(&secrets, "gone-tls", "issued", is_issued).await;
    let series = |secret: &str| format!("secret=\"{secret}\"");
    assert!(running.metrics.encode().contains(&series("gone-tls")));
    assert_eq!(tracked(), Some(2.0));

    // Deleting the Service drops its expiry series (no stale "expires soon" alert) and its entry.
    services
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        WAIT,
        "expiry series of the deleted Service gone",
        || async { (!running.metrics.encode().contains(&series("gone-tls"))).then_some(()) },
    )
    .await;
    assert!(running.metrics.encode().contains(&series("kept-tls")));
    assert_eq!(tracked(), Some(1.0));

    // Removing the annotation stops management the same way.
    services
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {names::SECRET_NAME_BETA: null}}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "series of the unmanaged Secret gone", || async {
        (!running.metrics.encode().contains(&series("kept-tls"))).then_some(())
    })
    .await;

    // Churn: the index returns to its starting size.
    for i in 0..10 {
        request_certificate(&services, &format!("churn-{i}"), &format!("churn-{i}-tls")).await;
    }
    eventually(WAIT, "ten tracked", || async {
        (tracked() == Some(10.0)).then_some(())
    })
    .await;
    for i in 0..10 {
        services
            .delete(&format!("churn-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    eventually(WAIT, "index back to its start", || async {
        (tracked() == Some(0.0)).then_some(())
    })
    .await;
    running.stop().await;
}

/// Objects that exist before the controller starts are all reconciled: on a cold start (no CA
/// yet) and on a restart with the CA in place and every Secret deleted while it was down. Warm
/// caches hand a new term the whole cache; before that fix, whichever objects the cache held when
/// the CA arrived were the only ones reconciled (a 2,000-Service cold start issued one Secret).
#[tokio::test]
async fn services_and_configmaps_that_exist_before_the_start_are_all_served() {
    let ctx = TestContext::new("serving-preexisting").await.unwrap();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    const N: usize = 40;
    for i in 0..N {
        request_certificate(&services, &format!("pre-{i}"), &format!("pre-{i}-tls")).await;
        let cm = serde_json::from_value(json!({
            "metadata": {"name": format!("pre-{i}"), "annotations": {names::INJECT_BETA: "true"}},
        }))
        .unwrap();
        configmaps.create(&pp(), &cm).await.unwrap();
    }
    let all_served = || async {
        for i in 0..N {
            wait_secret(
                &secrets,
                &format!("pre-{i}-tls"),
                "pre-existing Service served",
                is_issued,
            )
            .await;
            common::wait_configmap(
                &configmaps,
                &format!("pre-{i}"),
                "pre-existing ConfigMap injected",
                |c| {
                    c.data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(names::SERVICE_CA_CRT))
                },
            )
            .await;
        }
    };
    let running = controller(&ctx, |c| c.key_pool_size = N).await;
    all_served().await;
    running.stop().await;

    // Down: every serving Secret and every injected bundle disappears.
    secrets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app.kubernetes.io/managed-by=service-ca"),
        )
        .await
        .unwrap();
    for i in 0..N {
        configmaps
            .patch(
                &format!("pre-{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": null})),
            )
            .await
            .unwrap();
    }
    let running = controller(&ctx, |c| c.key_pool_size = N).await;
    all_served().await;
    running.stop().await;
}
