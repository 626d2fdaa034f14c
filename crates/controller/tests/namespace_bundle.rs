//! The CA bundle in every namespace (`--namespace-bundle-name`, docs/behavior.md §10.8) against a
//! real kube-apiserver, under the shipped RBAC (base plus `deploy/components/namespace-bundle`)
//! and admission policy. Its own test binary (its own control plane): the controller watches the
//! whole cluster here, which would disturb other tests' namespaces. One test, in steps: absence
//! first, then the feature, then turning it off.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{WAIT, holds_for, wait_for_event};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::{Config, names};
use service_ca_testing::{TestContext, eventually};

const NAME: &str = "service-ca.crt";

fn rbac() -> Vec<serde_json::Value> {
    let mut objects = Vec::new();
    for file in [
        "deploy/base/rbac.yaml",
        "deploy/components/namespace-bundle/rbac.yaml",
    ] {
        let text = std::fs::read_to_string(service_ca_testing::workspace_root().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        objects.extend(docs.into_iter().filter(|v| !v.is_null()));
    }
    objects
}

async fn create_namespace(ctx: &TestContext, name: &str, labels: serde_json::Value) {
    ctx.delete_on_drop::<Namespace>(name.to_string());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(ctx.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

fn cms(ctx: &TestContext, ns: &str) -> Api<ConfigMap> {
    Api::namespaced(ctx.client.clone(), ns)
}

fn holds_bundle(cm: &ConfigMap, bundle: &str) -> bool {
    let data = cm.data.clone().unwrap_or_default();
    data.len() == 1
        && data.get(names::SERVICE_CA_CRT).map(String::as_str) == Some(bundle)
        && cm
            .labels()
            .get(names::NAMESPACE_BUNDLE_LABEL)
            .map(String::as_str)
            == Some("true")
        && cm.labels().get(names::MANAGED_BY_LABEL).map(String::as_str)
            == Some(names::MANAGED_BY_VALUE)
}

async fn wait_bundle(ctx: &TestContext, ns: &str, bundle: &str, what: &str) -> ConfigMap {
    let api = cms(ctx, ns);
    eventually(WAIT, what, || async {
        api.get_opt(NAME)
            .await
            .ok()
            .flatten()
            .filter(|c| holds_bundle(c, bundle))
    })
    .await
}

async fn wait_gone(ctx: &TestContext, ns: &str, what: &str) {
    let api = cms(ctx, ns);
    eventually(WAIT, what, || async {
        matches!(api.get_opt(NAME).await, Ok(None)).then_some(())
    })
    .await;
}

async fn start(
    ctx: &TestContext,
    client: &kube::Client,
    tweak: impl FnOnce(&mut Config),
) -> service_ca_controller::Running {
    let mut cfg = Config {
        namespace: ctx.namespace.clone(),
        key_pool_size: 4,
        ..Config::default()
    };
    tweak(&mut cfg);
    let running = service_ca_controller::start(client.clone(), cfg).expect("valid config");
    tokio::time::timeout(WAIT, running.wait_ready())
        .await
        .expect("ready in time");
    running
}

#[tokio::test]
async fn bundle_configmap_in_every_matching_namespace_and_cleaned_up_when_off() {
    let ctx = TestContext::new("nsb").await.unwrap();
    let suffix = ctx.namespace.rsplit('-').next().unwrap_or("x").to_string();
    let ns = |tag: &str| format!("nsb-{tag}-{suffix}");
    let (a, b, c, d) = (ns("a"), ns("b"), ns("c"), ns("d"));
    create_namespace(&ctx, &a, json!({"team": "x"})).await;
    create_namespace(&ctx, &b, json!({"team": "x"})).await;
    create_namespace(&ctx, &c, json!({})).await;
    // b already has a ConfigMap of that name, not service-ca's.
    let theirs: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": NAME}, "data": {names::SERVICE_CA_CRT: "theirs"}}),
    )
    .unwrap();
    cms(&ctx, &b)
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let sa = common::service_account_client_with(&ctx, &rbac()).await;
    let policy = common::admission_policy(&ctx, &sa, &[]).await;
    // The policy's configuration variable, as the component sets it.
    let policies = Api::<ValidatingAdmissionPolicy>::all(ctx.client.clone());
    let mut vap = policies.get(&policy).await.unwrap();
    let variables = vap
        .spec
        .as_mut()
        .and_then(|s| s.variables.as_mut())
        .unwrap();
    let slot = variables
        .iter_mut()
        .find(|v| v.name == "namespaceBundleName")
        .expect("the policy has namespaceBundleName");
    slot.expression = format!("'{NAME}'");
    policies
        .replace(&policy, &PostParams::default(), &vap)
        .await
        .unwrap();

    // Absence: without the option, no ConfigMap anywhere.
    let running = start(&ctx, &sa, |_| {}).await;
    holds_for(
        Duration::from_secs(3),
        "no namespace bundle without the option",
        || async { matches!(cms(&ctx, &a).get_opt(NAME).await, Ok(None)) },
    )
    .await;
    running.stop().await;

    // On, for namespaces labelled team=x. The policy change may take a moment: the controller
    // retries refused creations.
    let on = |cfg: &mut Config| {
        cfg.namespace_bundle_name = Some(NAME.into());
        cfg.namespace_bundle_selector = Some("team=x".into());
    };
    let running = start(&ctx, &sa, on).await;
    let bundle = common::current_bundle(&running);
    wait_bundle(&ctx, &a, &bundle, "bundle ConfigMap in a").await;
    wait_for_event(
        &ctx,
        &b,
        NAME,
        "NamespaceBundleConflict",
        "not created by service-ca",
    )
    .await;
    let kept = cms(&ctx, &b).get(NAME).await.unwrap();
    assert_eq!(
        kept.data.unwrap_or_default(),
        BTreeMap::from([(names::SERVICE_CA_CRT.to_string(), "theirs".to_string())])
    );
    assert!(
        matches!(cms(&ctx, &c).get_opt(NAME).await, Ok(None)),
        "c does not match"
    );

    // A new namespace gets it within seconds.
    let created = Instant::now();
    create_namespace(&ctx, &d, json!({"team": "x"})).await;
    wait_bundle(&ctx, &d, &bundle, "bundle ConfigMap in a new namespace").await;
    let latency = created.elapsed();
    eprintln!("new namespace got its bundle ConfigMap after {latency:?}");
    assert!(latency < Duration::from_secs(10), "{latency:?}");

    // Tampered: repaired; deleted: recreated.
    cms(&ctx, &a)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {names::SERVICE_CA_CRT: "x", "extra": "y"}})),
        )
        .await
        .unwrap();
    wait_bundle(&ctx, &a, &bundle, "tampered bundle ConfigMap repaired").await;
    cms(&ctx, &a)
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    wait_bundle(&ctx, &a, &bundle, "deleted bundle ConfigMap recreated").await;

    // The namespace stops matching: ours is deleted there.
    Api::<Namespace>::all(ctx.client.clone())
        .patch(
            &a,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .unwrap();
    wait_gone(
        &ctx,
        &a,
        "bundle ConfigMap removed from a namespace that no longer matches",
    )
    .await;
    running.stop().await;

    // Off again (a restart without the option): only ours are deleted.
    let running = start(&ctx, &sa, |_| {}).await;
    wait_gone(&ctx, &d, "bundle ConfigMap deleted when the option is off").await;
    let kept = cms(&ctx, &b).get(NAME).await.unwrap();
    assert_eq!(
        kept.data
            .unwrap_or_default()
            .get(names::SERVICE_CA_CRT)
            .map(String::as_str),
        Some("theirs"),
        "the foreign ConfigMap is never touched"
    );
    running.stop().await;
}
