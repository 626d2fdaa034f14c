//! Proves the harness talks to a real kube-apiserver with etcd, the garbage collector and RBAC:
//! watches, server-side apply, optimistic concurrency, ownerReference GC, authorization denials and
//! persistence across a control-plane restart.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
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

    let mut stream = watcher(secrets.clone(), watcher::Config::default()).boxed();
    // Create only once the initial list is complete, so the Secret can only arrive as a watch
    // event (an object created earlier would come with the initial list and prove nothing).
    let seen = async {
        while let Some(event) = stream.try_next().await.unwrap() {
            match event {
                watcher::Event::InitDone => {
                    secrets
                        .create(&PostParams::default(), &secret("web-tls"))
                        .await
                        .unwrap();
                }
                watcher::Event::InitApply(obj) => {
                    assert_ne!(obj.name_any(), "web-tls", "listed before it was created")
                }
                watcher::Event::Apply(obj) if obj.name_any() == "web-tls" => return obj,
                _ => {}
            }
        }
        panic!("watch ended");
    };
    let seen = tokio::time::timeout(Duration::from_secs(20), seen)
        .await
        .expect("secret seen through the watch");
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
async fn dropping_the_context_deletes_its_cluster_scoped_objects() {
    let ctx = TestContext::new("harness-cleanup").await.unwrap();
    let ns = ctx.namespace.clone();
    let suffix = ns.rsplit('-').next().unwrap().to_string();
    let roles: Api<ClusterRole> = Api::all(ctx.client.clone());
    let role = |name: &str| ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    // Registered explicitly (its name does not contain the namespace).
    let registered = format!("harness-registered-{suffix}");
    ctx.delete_on_drop::<ClusterRole>(registered.clone());
    // Named after the namespace (as the controller tests name their per-namespace RBAC).
    let named = format!("harness-{ns}");
    // Neither: it must survive; a second context owns it so it is removed too.
    let keeper = TestContext::new("harness-keeper").await.unwrap();
    let kept = format!("harness-kept-{suffix}");
    keeper.delete_on_drop::<ClusterRole>(kept.clone());
    for name in [&registered, &named, &kept] {
        roles
            .create(&PostParams::default(), &role(name))
            .await
            .unwrap();
    }
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("harness-{ns}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": named},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
    }))
    .unwrap();
    let bindings: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    drop(ctx);
    // Deleted when the context was dropped: the drop blocks until the deletes were sent.
    for name in [&registered, &named] {
        assert!(
            roles.get_opt(name).await.unwrap().is_none(),
            "{name} left behind"
        );
    }
    assert!(
        bindings
            .get_opt(&format!("harness-{ns}"))
            .await
            .unwrap()
            .is_none()
    );
    let namespace = Api::<Namespace>::all(keeper.client.clone())
        .get_opt(&ns)
        .await
        .unwrap();
    assert!(
        namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace {ns} not being deleted"
    );
    assert!(
        roles.get_opt(&kept).await.unwrap().is_some(),
        "{kept} deleted too"
    );
    drop(keeper);
    assert!(roles.get_opt(&kept).await.unwrap().is_none());
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
