//! Injection beyond the original (README "Beyond the original"), against a real kube-apiserver,
//! each feature with the shipped RBAC and admission policy in force, and each also in its absence:
//! non-destructive ConfigMap injection (`service-ca.dev/inject-mode: merge`), the bundle in
//! Secrets (`service-ca.dev/inject-cabundle`), and the bundle ConfigMap in every namespace
//! (`--namespace-bundle-name`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{controller, current_bundle, holds_for, wait_configmap, wait_for_event};
use k8s_openapi::api::core::v1::ConfigMap;
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
