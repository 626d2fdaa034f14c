//! ConfigMap CA bundle injection against a real kube-apiserver (docs/behavior.md §10.1–§10.3).

mod common;

use std::time::Duration;

use futures::StreamExt;

use common::{controller, current_bundle, wait_configmap, wait_for_new_bundle};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::names;
use service_ca_testing::{TestContext, eventually};

fn configmap(name: &str, annotations: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn injected(cm: &ConfigMap, bundle: &str) -> bool {
    cm.data.as_ref().is_some_and(|d| {
        d.len() == 1 && d.get(names::SERVICE_CA_CRT).map(String::as_str) == Some(bundle)
    })
}

#[tokio::test]
async fn configmaps_get_the_bundle_and_keep_it() {
    let ctx = TestContext::new("inject-cm").await.unwrap();
    let cms: Api<ConfigMap> = ctx.api();
    // Created already annotated, before the controller starts, with data and binaryData.
    let mut with_data = configmap("with-data", &[(names::INJECT_BETA, "true")]);
    with_data.data = Some([("user-key".to_string(), "user value".to_string())].into());
    with_data.binary_data = Some([("blob".to_string(), ByteString(vec![0, 1, 2]))].into());
    cms.create(&PostParams::default(), &with_data)
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &configmap("alpha-upper", &[(names::INJECT_ALPHA, "TRUE")]),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &configmap("not-selected", &[(names::INJECT_BETA, "false")]),
    )
    .await
    .unwrap();

    let running = controller(&ctx, |_| {}).await;
    let bundle = current_bundle(&running);

    let cm = wait_configmap(&cms, "with-data", "injected", |c| injected(c, &bundle)).await;
    // docs/behavior.md §10.3: data replaced, binaryData kept.
    assert_eq!(
        cm.binary_data.as_ref().unwrap()["blob"],
        ByteString(vec![0, 1, 2])
    );
    assert_eq!(
        cm.annotations()
            .get(names::OWNING_COMPONENT)
            .map(String::as_str),
        Some("service-ca")
    );
    wait_configmap(&cms, "alpha-upper", "alpha, any case", |c| {
        injected(c, &bundle)
    })
    .await;
    eventually(common::WAIT, "data replacement event", || async {
        Api::<Event>::namespaced(ctx.client.clone(), &ctx.namespace)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("CABundleInjectionReplacedData")
                    && e.involved_object.name.as_deref() == Some("with-data")
                    && e.message.as_deref().is_some_and(|m| m.contains("user-key"))
            })
            .then_some(())
    })
    .await;

    // Annotated later: injected.
    cms.create(&PostParams::default(), &configmap("later", &[]))
        .await
        .unwrap();
    cms.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {names::INJECT_BETA: "True"}}})),
    )
    .await
    .unwrap();
    wait_configmap(&cms, "later", "annotated later", |c| injected(c, &bundle)).await;

    // Edited by hand: restored.
    cms.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {names::SERVICE_CA_CRT: "tampered"}})),
    )
    .await
    .unwrap();
    wait_configmap(&cms, "later", "restored", |c| injected(c, &bundle)).await;

    // Up to date: no further writes. Four injections were made (with-data, alpha-upper, later,
    // later restored); from then on the counter and every ConfigMap's resourceVersion hold for
    // the whole window, and the one not selected stays without data.
    let writes = eventually(common::WAIT, "the four injections counted", || async {
        let writes = running.metrics.writes_of("configmap");
        (writes >= 4).then_some(writes)
    })
    .await;
    let versions = || async {
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| (c.name_any(), c.resource_version(), c.data.is_some()))
            .collect::<Vec<_>>()
    };
    let before = versions().await;
    assert!(
        before
            .iter()
            .any(|(name, _, data)| name == "not-selected" && !data),
        "{before:?}"
    );
    common::holds_for(
        Duration::from_secs(3),
        "no writes once up to date",
        || async { running.metrics.writes_of("configmap") == writes && versions().await == before },
    )
    .await;

    // Annotation removed: no further updates.
    cms.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {names::INJECT_BETA: null}}, "data": {names::SERVICE_CA_CRT: "mine now"}})),
    )
    .await
    .unwrap();

    // CA changes: every injected ConfigMap follows, without a restart.
    Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .delete("signing-key", &DeleteParams::default())
        .await
        .unwrap();
    let new_bundle = wait_for_new_bundle(&running, &bundle, common::WAIT).await;
    for name in ["with-data", "alpha-upper"] {
        wait_configmap(&cms, name, "re-injected after CA change", |c| {
            injected(c, &new_bundle)
        })
        .await;
    }
    common::holds_for(
        Duration::from_secs(2),
        "a ConfigMap whose annotation was removed must not be updated",
        || async {
            let released = cms.get("later").await.unwrap();
            released.data.unwrap()[names::SERVICE_CA_CRT] == "mine now"
        },
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_thousand_configmaps() {
    let ctx = TestContext::new("inject-many").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let bundle = current_bundle(&running);
    let cms: Api<ConfigMap> = ctx.api();
    let started = std::time::Instant::now();
    let creates = (0..1000).map(|i| {
        let cms = cms.clone();
        async move {
            cms.create(
                &PostParams::default(),
                &configmap(&format!("cm-{i}"), &[(names::INJECT_BETA, "true")]),
            )
            .await
            .unwrap();
        }
    });
    futures::stream::iter(creates)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eventually(
        Duration::from_secs(300),
        "1000 injected ConfigMaps",
        || async {
            let list = cms.list(&ListParams::default()).await.ok()?;
            (list.items.iter().filter(|c| injected(c, &bundle)).count() == 1000).then_some(())
        },
    )
    .await;
    eprintln!("1000 ConfigMaps injected in {:?}", started.elapsed());
    running.stop().await;
}

#[tokio::test]
async fn legacy_injector_serves_only_its_configmap_and_stands_down() {
    let ctx = TestContext::new("inject-legacy").await.unwrap();
    let sa_ca = "-----BEGIN CERTIFICATE-----\nU0EgQ0E=\n-----END CERTIFICATE-----\n";
    let file = std::env::temp_dir().join(format!("service-ca-legacy-{}.crt", ctx.namespace));
    std::fs::write(&file, sa_ca).unwrap();
    let cms: Api<ConfigMap> = ctx.api();
    let legacy = (names::INJECT_LEGACY, "true");
    cms.create(
        &PostParams::default(),
        &configmap(names::LEGACY_CONFIGMAP_NAME, &[legacy]),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &configmap("other-name", &[legacy]))
        .await
        .unwrap();
    let running = controller(&ctx, |cfg| {
        cfg.legacy_injector = true;
        cfg.legacy_ca_file = Some(file.clone());
    })
    .await;
    let bundle = current_bundle(&running);
    let legacy_bundle = format!("{bundle}{sa_ca}\n");
    wait_configmap(&cms, names::LEGACY_CONFIGMAP_NAME, "legacy bundle", |c| {
        injected(c, &legacy_bundle)
    })
    .await;
    assert!(cms.get("other-name").await.unwrap().data.is_none());

    // The preferred annotation takes over; the legacy injector never fights back.
    cms.patch(
        names::LEGACY_CONFIGMAP_NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {names::INJECT_BETA: "true"}}})),
    )
    .await
    .unwrap();
    wait_configmap(
        &cms,
        names::LEGACY_CONFIGMAP_NAME,
        "preferred bundle",
        |c| injected(c, &bundle),
    )
    .await;
    // The legacy injector made its one write; nothing writes the ConfigMap again.
    eventually(common::WAIT, "the preferred injection counted", || async {
        (running.metrics.writes_of("configmap") >= 1).then_some(())
    })
    .await;
    let legacy_writes = running.metrics.writes_of("configmap-legacy");
    let writes = running.metrics.writes_of("configmap");
    assert_eq!(legacy_writes, 1);
    let settled = cms.get(names::LEGACY_CONFIGMAP_NAME).await.unwrap();
    common::holds_for(
        Duration::from_secs(3),
        "the legacy injector stands down and leaves other names alone",
        || async {
            let live = cms.get(names::LEGACY_CONFIGMAP_NAME).await.unwrap();
            injected(&live, &bundle)
                && live.resource_version() == settled.resource_version()
                && running.metrics.writes_of("configmap-legacy") == legacy_writes
                && running.metrics.writes_of("configmap") == writes
                && cms.get("other-name").await.unwrap().data.is_none()
        },
    )
    .await;
    running.stop().await;
    let _ = std::fs::remove_file(&file);
}
