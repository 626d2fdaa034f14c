//! Injection beyond the original (README "Beyond the original"), against a real kube-apiserver,
//! each feature with the shipped RBAC and admission policy in force, and each also in its absence:
//! non-destructive ConfigMap injection (`service-ca.dev/inject-mode: merge`), the bundle in
//! Secrets (`service-ca.dev/inject-cabundle`), and the bundle ConfigMap in every namespace
//! (`--namespace-bundle-name`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    WAIT, controller, current_bundle, data, holds_for, request_certificate, wait_configmap,
    wait_for_event, wait_secret,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use service_ca_controller::names;
use service_ca_testing::TestContext;

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn configmap(name: &str, annotations: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(string_map(annotations)),
            ..Default::default()
        },
        data: Some(string_map(data)),
        ..Default::default()
    }
}

fn cm_data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

/// The data fields each field manager owns through server-side apply.
fn applied_data_fields(cm: &ConfigMap, manager: &str) -> Vec<String> {
    cm.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some("Apply")
        })
        .filter_map(|e| e.fields_v1.as_ref()?.0.get("f:data")?.as_object().cloned())
        .flat_map(|d| d.keys().cloned().collect::<Vec<_>>())
        .filter(|k| k != ".")
        .collect()
}

/// Runs the controller as its ServiceAccount, under the shipped RBAC and admission policy.
async fn fenced_controller(
    ctx: &TestContext,
    tweak: impl FnOnce(&mut service_ca_controller::Config),
) -> service_ca_controller::Running {
    let sa = common::service_account_client(ctx).await;
    common::admission_policy(ctx, &sa, &[]).await;
    controller(ctx, tweak).await
}

async fn merge_patch(cms: &Api<ConfigMap>, name: &str, body: serde_json::Value) {
    cms.patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .unwrap_or_else(|e| panic!("patching {name}: {e}"));
}

/// Merge mode keeps every other key (also ones added later), owns only `service-ca.crt`, restores
/// it when tampered with, and switching back to the default replaces data as the original does.
/// Next to it, a ConfigMap without the mode gets the original's replace.
#[tokio::test]
async fn merge_mode_keeps_other_keys_and_default_still_replaces() {
    let ctx = TestContext::new("inj-merge").await.unwrap();
    let cms: Api<ConfigMap> = ctx.api();
    let pp = PostParams::default();
    let merge = [
        (names::INJECT_BETA, "true"),
        (names::INJECT_MODE, names::INJECT_MODE_MERGE),
    ];
    cms.create(&pp, &configmap("merged", &merge, &[("app.conf", "x=1")]))
        .await
        .unwrap();
    cms.create(
        &pp,
        &configmap(
            "replaced",
            &[(names::INJECT_BETA, "true")],
            &[("app.conf", "x=1")],
        ),
    )
    .await
    .unwrap();
    let running = fenced_controller(&ctx, |_| {}).await;
    let bundle = current_bundle(&running);

    let merged = wait_configmap(&cms, "merged", "merge-mode injection", |c| {
        cm_data(c).get(names::SERVICE_CA_CRT) == Some(&bundle)
    })
    .await;
    assert_eq!(
        cm_data(&merged).get("app.conf").map(String::as_str),
        Some("x=1")
    );
    assert_eq!(
        applied_data_fields(&merged, names::FIELD_MANAGER),
        ["f:service-ca.crt"],
        "service-ca owns exactly data.service-ca.crt"
    );
    // Without the mode: the original's replace, and its Event.
    wait_configmap(&cms, "replaced", "default injection", |c| {
        cm_data(c) == string_map(&[(names::SERVICE_CA_CRT, &bundle)])
    })
    .await;
    wait_for_event(
        &ctx,
        &ctx.namespace,
        "replaced",
        "CABundleInjectionReplacedData",
        "app.conf",
    )
    .await;

    // Other writers change and add keys: kept; a tampered service-ca.crt is restored.
    merge_patch(
        &cms,
        "merged",
        json!({"data": {"app.conf": "x=2", "more": "y", names::SERVICE_CA_CRT: "tampered"}}),
    )
    .await;
    let merged = wait_configmap(&cms, "merged", "bundle restored, keys kept", |c| {
        cm_data(c).get(names::SERVICE_CA_CRT) == Some(&bundle)
    })
    .await;
    assert_eq!(
        cm_data(&merged),
        string_map(&[
            ("app.conf", "x=2"),
            ("more", "y"),
            (names::SERVICE_CA_CRT, &bundle)
        ])
    );
    holds_for(Duration::from_secs(2), "merged keys stay", || async {
        cms.get("merged")
            .await
            .is_ok_and(|c| cm_data(&c).len() == 3)
    })
    .await;

    // Back to the default: data replaced.
    merge_patch(
        &cms,
        "merged",
        json!({"metadata": {"annotations": {names::INJECT_MODE: null}}}),
    )
    .await;
    wait_configmap(&cms, "merged", "replaced after leaving merge mode", |c| {
        cm_data(c) == string_map(&[(names::SERVICE_CA_CRT, &bundle)])
    })
    .await;
    running.stop().await;
}

fn secret(
    name: &str,
    secret_type: &str,
    annotations: &[(&str, &str)],
    keys: &[(&str, &str)],
) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": string_map(annotations)},
        "type": secret_type,
        "stringData": string_map(keys),
    }))
    .unwrap()
}

/// The data fields of a Secret each field manager owns through server-side apply.
fn applied_secret_fields(s: &Secret, manager: &str) -> Vec<String> {
    s.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some("Apply")
        })
        .filter_map(|e| e.fields_v1.as_ref()?.0.get("f:data")?.as_object().cloned())
        .flat_map(|d| d.keys().cloned().collect::<Vec<_>>())
        .filter(|k| k != ".")
        .collect()
}

fn holds_bundle(s: &Secret, bundle: &str) -> bool {
    data(s, names::CA_CRT).as_deref() == Some(bundle.as_bytes())
}

/// A Secret annotated `service-ca.dev/inject-cabundle` gets `ca.crt` (only that key owned, the
/// others kept, restored when tampered with); one without the annotation is left alone; a
/// ServiceAccount token Secret and a serving Secret are refused with a Warning Event.
#[tokio::test]
async fn secrets_that_ask_get_ca_crt_and_refusals_are_reported() {
    let ctx = TestContext::new("inj-secret").await.unwrap();
    let secrets: Api<Secret> = ctx.api();
    let pp = PostParams::default();
    let ask = [(names::INJECT_SECRET, "true")];
    secrets
        .create(&pp, &secret("trust", "Opaque", &ask, &[("app", "x")]))
        .await
        .unwrap();
    secrets
        .create(&pp, &secret("plain", "Opaque", &[], &[("app", "x")]))
        .await
        .unwrap();
    let token_annotations = [
        (names::INJECT_SECRET, "TRUE"),
        ("kubernetes.io/service-account.name", "default"),
    ];
    secrets
        .create(
            &pp,
            &secret(
                "token",
                names::SERVICE_ACCOUNT_TOKEN_TYPE,
                &token_annotations,
                &[],
            ),
        )
        .await
        .unwrap();
    let running = fenced_controller(&ctx, |_| {}).await;
    let bundle = current_bundle(&running);

    let trust = wait_secret(&secrets, "trust", "ca.crt injected", |s| {
        holds_bundle(s, &bundle)
    })
    .await;
    assert_eq!(data(&trust, "app").as_deref(), Some(&b"x"[..]));
    assert_eq!(
        applied_secret_fields(&trust, names::FIELD_MANAGER),
        ["f:ca.crt"],
        "service-ca owns exactly data.ca.crt"
    );
    wait_for_event(
        &ctx,
        &ctx.namespace,
        "token",
        "CABundleInjectionRefused",
        "service-account-token",
    )
    .await;

    // A serving Secret of service-ca asking too: refused (its Service asks with include-ca).
    let services: Api<Service> = ctx.api();
    request_certificate(&services, "web", "web-tls").await;
    wait_secret(&secrets, "web-tls", "serving Secret", |s| {
        data(s, names::TLS_CRT).is_some()
    })
    .await;
    secrets
        .patch(
            "web-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {names::INJECT_SECRET: "true"}}})),
        )
        .await
        .unwrap();
    wait_for_event(
        &ctx,
        &ctx.namespace,
        "web-tls",
        "CABundleInjectionRefused",
        "include-ca",
    )
    .await;

    // Tampered ca.crt restored, keys added by others kept.
    secrets
        .patch(
            "trust",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {names::CA_CRT: "tampered", "more": "y"}})),
        )
        .await
        .unwrap();
    let trust = wait_secret(&secrets, "trust", "ca.crt restored", |s| {
        holds_bundle(s, &bundle) && data(s, "more").is_some()
    })
    .await;
    assert_eq!(data(&trust, "app").as_deref(), Some(&b"x"[..]));

    // Absence: no annotation, no ca.crt; the refused ones never got ours.
    holds_for(
        Duration::from_secs(2),
        "unannotated Secret untouched",
        || async {
            secrets
                .get("plain")
                .await
                .is_ok_and(|s| data(&s, names::CA_CRT).is_none())
        },
    )
    .await;
    for name in ["web-tls", "token"] {
        if let Some(s) = secrets.get_opt(name).await.unwrap() {
            assert!(!holds_bundle(&s, &bundle), "{name} must not get the bundle");
        }
    }
    running.stop().await;
    let _ = WAIT;
}
