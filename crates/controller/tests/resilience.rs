//! Resilience against a real kube-apiserver: a part of the CA pass that fails (here the bundle
//! copy) never withholds the CA from the controllers.

mod common;

use common::{controller, data, request_certificate, wait_secret};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use service_ca_controller::names;
use service_ca_testing::TestContext;

#[tokio::test]
async fn a_failing_bundle_copy_does_not_block_issuance() {
    let ctx = TestContext::new("res-publish").await.unwrap();
    // The copy goes to a namespace that does not exist: every publication fails.
    let target = ("no-such-namespace-res".to_string(), "copy".to_string());
    let running = controller(&ctx, |cfg| cfg.publish_bundle_to = Some(target)).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "web", "web-tls").await;
    let issued = wait_secret(
        &secrets,
        "web-tls",
        "issued despite the failing copy",
        |s| data(s, names::TLS_CRT).is_some(),
    )
    .await;
    assert!(data(&issued, names::TLS_KEY).is_some());
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "signing-key",
        "BundlePublishFailed",
        "",
    )
    .await;
    assert!(
        running.metrics.encode().contains(
            "service_ca_reconcile_errors_total{controller=\"ca\",category=\"not_found\"}"
        )
    );
    running.stop().await;
}

/// Runs `fight` every 300 ms until the returned handle is aborted.
fn keep_fighting<F, Fut>(mut fight: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            fight().await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    })
}

#[tokio::test]
async fn write_fights_are_detected_and_bounded() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use kube::api::{Patch, PatchParams, PostParams};
    use serde_json::json;
    use std::time::Duration;

    let ctx = TestContext::new("res-fight").await.unwrap();
    let running = controller(&ctx, |cfg| cfg.cluster_scoped_injection = true).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "web", "web-tls").await;
    wait_secret(&secrets, "web-tls", "issued", |s| {
        data(s, names::TLS_CRT).is_some()
    })
    .await;

    // Another writer keeps overwriting the Secret's label; the controller keeps repairing it.
    let fighter = PatchParams {
        field_manager: Some("label-stripper".into()),
        ..Default::default()
    };
    let strip =
        Patch::Merge(json!({"metadata": {"labels": {names::MANAGED_BY_LABEL: "kustomize"}}}));
    let writes_before = running.metrics.writes_of("serving");
    let (api, pp) = (secrets.clone(), fighter.clone());
    let label_fight = keep_fighting(move || {
        let (api, pp, strip) = (api.clone(), pp.clone(), strip.clone());
        async move {
            let _ = api.patch("web-tls", &pp, &strip).await;
        }
    });

    // A GitOps-like tool keeps resetting an injected webhook's caBundle.
    let name = format!("fight-{}", ctx.namespace);
    ctx.delete_on_drop::<ValidatingWebhookConfiguration>(name.clone());
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(ctx.client.clone());
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {names::INJECT_BETA: "true"}},
        "webhooks": [{
            "name": "fight.service-ca.test",
            "clientConfig": {"service": {"namespace": ctx.namespace, "name": "webhook", "port": 443}},
            "rules": [{"apiGroups": ["service-ca.test"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["widgets"]}],
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        }],
    }))
    .unwrap();
    webhooks
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    let reset = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Z2FyYmFnZQ=="}
        ]))
        .unwrap(),
    );
    let gitops = PatchParams {
        field_manager: Some("gitops-tool".into()),
        ..Default::default()
    };
    let (api, hook) = (webhooks.clone(), name.clone());
    let bundle_fight = keep_fighting(move || {
        let (api, hook, reset, pp) = (api.clone(), hook.clone(), reset.clone(), gitops.clone());
        async move {
            let _ = api.patch(&hook, &pp, &reset).await;
        }
    });

    // A fight over the Secret (reported on its Service) and one over the webhook, each naming
    // the other writer.
    common::wait_for_event(
        &ctx,
        &ctx.namespace,
        "web",
        "WriteFightDetected",
        "label-stripper",
    )
    .await;
    common::wait_for_event(&ctx, "default", &name, "WriteFightDetected", "gitops-tool").await;
    // Both fights go on, but the controller has stopped answering them: its write rate is
    // bounded by the fight limit (5 writes per object), not by the other writer.
    let serving = running.metrics.writes_of("serving");
    let injecting = running.metrics.writes_of("validatingwebhookconfiguration");
    common::holds_for(
        Duration::from_secs(5),
        "no more writes while fighting",
        || async {
            running.metrics.writes_of("serving") == serving
                && running.metrics.writes_of("validatingwebhookconfiguration") == injecting
        },
    )
    .await;
    assert!(
        serving - writes_before <= 5,
        "{} serving writes",
        serving - writes_before
    );
    assert!(injecting <= 6, "{injecting} webhook writes");
    eprintln!(
        "fight: serving writes {}, webhook writes {injecting}",
        serving - writes_before
    );
    label_fight.abort();
    bundle_fight.abort();
    running.stop().await;
}

/// Rewrites for service-ca's own reasons are not fights: six CA rotations in a row (more than
/// the fight limit of 5 writes in 10 minutes) re-issue the serving Secret and re-inject the
/// ConfigMap every time, with no `WriteFightDetected`. Found by a soak without restarts, where
/// forced rotations every 100 s left every injected ConfigMap and serving Secret alone.
#[tokio::test]
async fn repeated_ca_rotations_are_not_write_fights() {
    use k8s_openapi::api::core::v1::{ConfigMap, Event};
    use kube::api::{ListParams, PostParams};
    use serde_json::json;
    use std::time::Duration;

    let ctx = TestContext::new("res-rotations").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let configmaps: Api<ConfigMap> = ctx.api();
    request_certificate(&services, "web", "web-tls").await;
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "trust", "annotations": {names::INJECT_BETA: "true"}}}),
    )
    .unwrap();
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let mut bundle = common::current_bundle(&running);
    for round in 1..=6 {
        common::force_rotation(&secrets, &format!("round-{round}")).await;
        bundle = common::wait_for_new_bundle(&running, &bundle, Duration::from_secs(60)).await;
        let skid = running.ca.borrow().as_ref().expect("CA loaded").skid();
        common::wait_configmap(&configmaps, "trust", &format!("bundle {round}"), |c| {
            c.data
                .as_ref()
                .and_then(|d| d.get(names::SERVICE_CA_CRT))
                .is_some_and(|b| *b == bundle)
        })
        .await;
        wait_secret(&secrets, "web-tls", &format!("re-issued {round}"), |s| {
            data(s, names::TLS_CRT)
                .and_then(|crt| service_ca_pki::parse_pem_certs(&crt).ok())
                .and_then(|certs| certs.into_iter().next())
                .is_some_and(|leaf| leaf.akid.as_deref() == Some(skid.as_slice()))
        })
        .await;
    }
    let events: Api<Event> = ctx.api();
    let fights: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("WriteFightDetected"))
        .map(|e| e.message.unwrap_or_default())
        .collect();
    assert!(fights.is_empty(), "{fights:?}");
    running.stop().await;
}
