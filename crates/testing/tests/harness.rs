//! Proves the harness talks to a real kube-apiserver with etcd, the garbage collector and RBAC:
//! watches, server-side apply, optimistic concurrency, ownerReference GC, authorization denials and
//! persistence across a control-plane restart.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_testing::{TestContext, TestEnv, client_from_kubeconfig, eventually};

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 443, "targetPort": 8443}], "selector": {"app": name}}
    }))
    .expect("static Service manifest")
}

fn secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn watch_sees_created_secret() {
    let ctx = TestContext::new("harness-watch").await.unwrap();
    let secrets: Api<Secret> = ctx.api();
    let services: Api<Service> = ctx.api();
    services
        .create(&PostParams::default(), &service("web"))
        .await
        .unwrap();

    let mut stream = watcher(secrets.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    // Create after the watch is established by polling the stream concurrently.
    let creator = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        secrets
            .create(&PostParams::default(), &secret("web-tls"))
            .await
            .unwrap();
    };
    let seen = async {
        while let Some(obj) = stream.try_next().await.unwrap() {
            if obj.name_any() == "web-tls" {
                return obj;
            }
        }
        panic!("watch ended");
    };
    let (_, seen) = tokio::join!(creator, tokio::time::timeout(Duration::from_secs(20), seen));
    let seen = seen.expect("secret seen through the watch");
    assert_eq!(seen.namespace().as_deref(), Some(ctx.namespace.as_str()));
    assert_eq!(
        seen.data.unwrap().get("k").map(|b| b.0.clone()),
        Some(b"v".to_vec())
    );
}

/// Server-side applies ConfigMap `settings` with `data.a = value` as manager `service-ca-test`.
async fn apply_settings(cms: &Api<ConfigMap>, value: &str) -> ConfigMap {
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"a": value}
    });
    cms.patch(
        "settings",
        &PatchParams::apply("service-ca-test"),
        &Patch::Apply(body),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn server_side_apply_and_stale_update_conflict() {
    let ctx = TestContext::new("harness-ssa").await.unwrap();
    let cms: Api<ConfigMap> = ctx.api();
    let applied = apply_settings(&cms, "1").await;
    let managers: Vec<_> = applied
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"service-ca-test".to_string()),
        "{managers:?}"
    );

    // A second apply by the same manager changes the value in place.
    let updated = apply_settings(&cms, "2").await;
    assert_eq!(updated.data.as_ref().unwrap()["a"], "2");

    // Updating with the first, now stale, resourceVersion is refused with 409 Conflict.
    let mut stale = applied.clone();
    stale.data = Some([("a".to_string(), "3".to_string())].into());
    let err = cms
        .replace("settings", &PostParams::default(), &stale)
        .await
        .expect_err("stale resourceVersion must conflict");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("expected a 409, got {other:?}"),
    }
    assert_eq!(cms.get("settings").await.unwrap().data.unwrap()["a"], "2");
}

#[tokio::test]
async fn owned_secret_is_garbage_collected() {
    let ctx = TestContext::new("harness-gc").await.unwrap();
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let svc = services
        .create(&PostParams::default(), &service("owner"))
        .await
        .unwrap();
    let mut owned = secret("owned");
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.uid().unwrap(),
        ..Default::default()
    }]);
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("unowned"))
        .await
        .unwrap();

    services
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "garbage collection of the owned Secret",
        || async {
            secrets
                .get_opt("owned")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(secrets.get_opt("unowned").await.unwrap().is_some());
}

#[tokio::test]
async fn rbac_denies_unprivileged_service_account() {
    let ctx = TestContext::new("harness-rbac").await.unwrap();
    let sas: Api<ServiceAccount> = ctx.api();
    sas.create(
        &PostParams::default(),
        &ServiceAccount {
            metadata: ObjectMeta {
                name: Some("nobody".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let user = format!("system:serviceaccount:{}:nobody", ctx.namespace);
    let client = client_from_kubeconfig(&ctx.kubeconfig, Some(&user))
        .await
        .unwrap();
    let err = Api::<Secret>::namespaced(client, &ctx.namespace)
        .list(&Default::default())
        .await
        .expect_err("an unprivileged ServiceAccount must not list Secrets");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains(&user), "{}", status.message);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // The admin client in the same namespace is allowed: the denial is RBAC, not a broken setup.
    ctx.api::<Secret>().list(&Default::default()).await.unwrap();
}

#[tokio::test]
async fn restart_keeps_objects() {
    let dir = std::env::temp_dir().join(format!("service-ca-restart-{:08x}", rand_u32()));
    let env = TestEnv::start(Some(&dir)).unwrap();
    let client = env.client().await.unwrap();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("persist".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "persist");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("kept".into()),
            ..Default::default()
        },
        data: Some([("state".to_string(), "before-restart".to_string())].into()),
        ..Default::default()
    };
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let server_before = env.kubeconfig().to_path_buf();
    env.stop();
    drop(env);

    let env = TestEnv::start(Some(&dir)).unwrap();
    assert_eq!(env.kubeconfig(), server_before);
    let cms: Api<ConfigMap> = Api::namespaced(env.client().await.unwrap(), "persist");
    let after = cms.get("kept").await.unwrap();
    assert_eq!(after.data.as_ref().unwrap()["state"], "before-restart");
    assert_eq!(after.uid(), created.uid());
    env.stop();
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(0)
}
