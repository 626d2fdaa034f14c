//! CA bundle injection into cluster-scoped kinds: APIServices, CRD conversion webhooks and
//! mutating/validating webhook configurations (docs/behavior.md §10.4–§10.6). One test, because these objects
//! are cluster-wide and only one controller may inject them at a time.

mod common;

use std::time::Duration;

use common::{controller, current_bundle, wait_for_new_bundle};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use service_ca_controller::names;
use service_ca_testing::{TestContext, eventually};

const WAIT: Duration = common::WAIT;

fn webhook(name: &str, ns: &str) -> Value {
    json!({
        "name": name,
        "clientConfig": {"service": {"namespace": ns, "name": "webhook", "port": 443}},
        "rules": [{"apiGroups": ["service-ca.test"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["widgets"]}],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    })
}

fn crd(plural: &str, strategy_webhook: bool, ns: &str, annotate: &str) -> CustomResourceDefinition {
    let mut spec = json!({
        "group": "service-ca.test",
        "names": {"plural": plural, "singular": plural.trim_end_matches('s'), "kind": format!("K{plural}")},
        "scope": "Namespaced",
        "versions": [{"name": "v1", "served": true, "storage": true,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
    });
    if strategy_webhook {
        spec["conversion"] = json!({"strategy": "Webhook", "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": {"service": {"namespace": ns, "name": "conv", "port": 443}}}});
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("{plural}.service-ca.test"), "annotations": {names::INJECT_BETA: annotate}},
        "spec": spec,
    }))
    .expect("static CRD")
}

fn bytes(b: Option<&k8s_openapi::ByteString>) -> Option<&[u8]> {
    b.map(|b| b.0.as_slice())
}

async fn all_injected(client: &kube::Client, suffix: &str, bundle: &[u8]) -> Option<()> {
    let aps = Api::<APIService>::all(client.clone())
        .get(&format!("v1.{suffix}.service-ca.test"))
        .await
        .ok()?;
    let ok_api = bytes(aps.spec.as_ref()?.ca_bundle.as_ref()) == Some(bundle);
    let c = Api::<CustomResourceDefinition>::all(client.clone())
        .get(&format!("convs{suffix}.service-ca.test"))
        .await
        .ok()?;
    let ok_crd = bytes(
        c.spec
            .conversion
            .as_ref()?
            .webhook
            .as_ref()?
            .client_config
            .as_ref()?
            .ca_bundle
            .as_ref(),
    ) == Some(bundle);
    let m = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(&format!("mut-{suffix}"))
        .await
        .ok()?;
    let ok_m = m
        .webhooks
        .as_ref()?
        .iter()
        .all(|w| bytes(w.client_config.ca_bundle.as_ref()) == Some(bundle));
    let v = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(&format!("val-{suffix}"))
        .await
        .ok()?;
    // Once its annotation is removed, the validating configuration keeps what the user wrote.
    let released = !v.annotations().contains_key(names::INJECT_BETA);
    let ok_v = released
        || v.webhooks
            .as_ref()?
            .iter()
            .all(|w| bytes(w.client_config.ca_bundle.as_ref()) == Some(bundle));
    (ok_api && ok_crd && ok_m && ok_v).then_some(())
}

#[tokio::test]
async fn cluster_scoped_kinds_get_the_bundle() {
    let ctx = TestContext::new("inject-cluster").await.unwrap();
    let ns = ctx.namespace.clone();
    let suffix = ns.rsplit('-').next().unwrap().to_string();
    let client = ctx.client.clone();
    let pp = PostParams::default();
    // Cluster-scoped: not removed with the test namespace. Deleted when `ctx` is dropped, at the
    // end of the test or when it panics (an unavailable aggregated API left behind would slow
    // discovery for everyone).
    ctx.delete_on_drop::<APIService>(format!("v1.{suffix}.service-ca.test"));
    for plural in ["convs", "plains", "laters"] {
        ctx.delete_on_drop::<CustomResourceDefinition>(format!("{plural}{suffix}.service-ca.test"));
    }
    ctx.delete_on_drop::<MutatingWebhookConfiguration>(format!("mut-{suffix}"));
    ctx.delete_on_drop::<ValidatingWebhookConfiguration>(format!("val-{suffix}"));
    ctx.delete_on_drop::<ValidatingWebhookConfiguration>(format!("val-alpha-{suffix}"));

    // APIService annotated with the alpha key (accepted for this kind).
    let apiservice: APIService = serde_json::from_value(json!({
        "metadata": {"name": format!("v1.{suffix}.service-ca.test"), "annotations": {names::INJECT_ALPHA: "true"}},
        "spec": {"group": format!("{suffix}.service-ca.test"), "version": "v1",
                 "service": {"namespace": ns, "name": "api", "port": 443},
                 "groupPriorityMinimum": 1000, "versionPriority": 15},
    }))
    .unwrap();
    Api::<APIService>::all(client.clone())
        .create(&pp, &apiservice)
        .await
        .unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.create(&pp, &crd(&format!("convs{suffix}"), true, &ns, "true"))
        .await
        .unwrap();
    crds.create(&pp, &crd(&format!("plains{suffix}"), false, &ns, "true"))
        .await
        .unwrap();
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("mut-{suffix}"), "annotations": {names::INJECT_BETA: "true"}},
        "webhooks": [webhook("a.service-ca.test", &ns), webhook("b.service-ca.test", &ns)],
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &mutating)
        .await
        .unwrap();
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("val-{suffix}"), "annotations": {names::INJECT_BETA: "TRUE"}},
        "webhooks": [webhook("a.service-ca.test", &ns), webhook("b.service-ca.test", &ns), webhook("c.service-ca.test", &ns)],
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &validating)
        .await
        .unwrap();
    // The alpha key is not accepted on webhook configurations.
    let alpha_only: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("val-alpha-{suffix}"), "annotations": {names::INJECT_ALPHA: "true"}},
        "webhooks": [webhook("a.service-ca.test", &ns)],
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &alpha_only)
        .await
        .unwrap();

    // A CRD annotated only after the controller runs.
    crds.create(&pp, &crd(&format!("laters{suffix}"), true, &ns, "false"))
        .await
        .unwrap();

    let running = controller(&ctx, |cfg| cfg.cluster_scoped_injection = true).await;
    let bundle = current_bundle(&running);
    eventually(WAIT, "all kinds injected", || {
        all_injected(&client, &suffix, bundle.as_bytes())
    })
    .await;

    // A webhook added later gets the bundle too.
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            &format!("mut-{suffix}"),
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "add", "path": "/webhooks/-", "value": webhook("c.service-ca.test", &ns)}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    eventually(WAIT, "added webhook injected", || async {
        let m = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get(&format!("mut-{suffix}"))
            .await
            .ok()?;
        let hooks = m.webhooks?;
        (hooks.len() == 3
            && hooks
                .iter()
                .all(|w| bytes(w.client_config.ca_bundle.as_ref()) == Some(bundle.as_bytes())))
        .then_some(())
    })
    .await;

    let later = format!("laters{suffix}.service-ca.test");
    crds.patch(
        &later,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {names::INJECT_BETA: "true"}}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "CRD annotated later injected", || async {
        let c = crds.get(&later).await.ok()?;
        let cc = c.spec.conversion?.webhook?.client_config?;
        (bytes(cc.ca_bundle.as_ref()) == Some(bundle.as_bytes())).then_some(())
    })
    .await;

    // Annotation removed from a webhook configuration: later edits are left alone.
    let validating_api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let released = format!("val-{suffix}");
    validating_api
        .patch(
            &released,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {names::INJECT_BETA: null}}})),
        )
        .await
        .unwrap();
    let mut edited = validating_api.get(&released).await.unwrap();
    for hook in edited.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(b"mine".to_vec()));
    }
    validating_api
        .replace(&released, &PostParams::default(), &edited)
        .await
        .unwrap();

    // Hand edit of an injected field: restored.
    Api::<APIService>::all(client.clone())
        .patch(
            &format!("v1.{suffix}.service-ca.test"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"caBundle": "dGFtcGVyZWQ="}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "APIService restored", || {
        all_injected(&client, &suffix, bundle.as_bytes())
    })
    .await;

    // CRD without webhook conversion, and the alpha-only webhook configuration: left alone, and
    // no error loop (observed for a window).
    let plain_name = format!("plains{suffix}.service-ca.test");
    let alpha_name = format!("val-alpha-{suffix}");
    let plain_before = crds.get(&plain_name).await.unwrap();
    let alpha_api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let alpha_before = alpha_api.get(&alpha_name).await.unwrap();
    assert!(
        plain_before
            .spec
            .conversion
            .as_ref()
            .is_none_or(|c| c.webhook.is_none())
    );
    assert!(
        alpha_before.webhooks.as_ref().unwrap()[0]
            .client_config
            .ca_bundle
            .is_none()
    );
    common::holds_for(
        Duration::from_secs(3),
        "plain CRD and alpha-only configuration left alone, no error loop",
        || async {
            let plain = crds.get(&plain_name).await.unwrap();
            let alpha = alpha_api.get(&alpha_name).await.unwrap();
            let metrics = running.metrics.encode();
            plain.resource_version() == plain_before.resource_version()
                && alpha.resource_version() == alpha_before.resource_version()
                && !metrics.contains(
                    "service_ca_reconcile_errors_total{controller=\"customresourcedefinition\"",
                )
        },
    )
    .await;

    // CA changes: everything follows.
    Api::<Secret>::namespaced(client.clone(), &ns)
        .delete("signing-key", &DeleteParams::default())
        .await
        .unwrap();
    let new_bundle = wait_for_new_bundle(&running, &bundle, WAIT).await;
    eventually(WAIT, "all kinds re-injected", || {
        all_injected(&client, &suffix, new_bundle.as_bytes())
    })
    .await;
    let kept_before = validating_api.get(&released).await.unwrap();
    common::holds_for(
        Duration::from_secs(2),
        "a configuration whose annotation was removed must not be updated",
        || async {
            let kept = validating_api.get(&released).await.unwrap();
            kept.resource_version() == kept_before.resource_version()
                && kept
                    .webhooks
                    .unwrap()
                    .iter()
                    .all(|w| bytes(w.client_config.ca_bundle.as_ref()) == Some(&b"mine"[..]))
        },
    )
    .await;
    running.stop().await;
    // `ctx` is dropped here: the cluster-scoped objects registered above are deleted.
}
