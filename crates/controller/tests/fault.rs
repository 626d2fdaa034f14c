//! Faults: the API server (with etcd and the controller manager) is restarted under a running
//! controller; the controller reconnects and keeps working, and re-issues nothing that is valid.

mod common;

use std::time::Duration;

use common::{data, request_certificate};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use service_ca_controller::{Config, names};
use service_ca_testing::{TestEnv, eventually};

const WAIT: Duration = Duration::from_secs(90);

async fn issued(secrets: &Api<Secret>, name: &str) -> Secret {
    eventually(WAIT, name, || async {
        secrets
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(|s| data(s, names::TLS_CRT).is_some())
    })
    .await
}

#[tokio::test]
async fn controller_survives_an_api_server_restart() {
    let dir = std::env::temp_dir().join(format!("service-ca-fault-{}", std::process::id()));
    let env = TestEnv::start(Some(&dir)).unwrap();
    let admin = env.client().await.unwrap();
    let ns = "fault";
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let cfg = Config {
        namespace: ns.into(),
        watch_namespace: Some(ns.into()),
        cluster_scoped_injection: false,
        key_pool_size: 2,
        ..Config::default()
    };
    // The controller's client is built once and outlives the restart, as in a real pod.
    let controller_client = service_ca_testing::client_from_kubeconfig(env.kubeconfig(), None)
        .await
        .unwrap();
    let running = service_ca_controller::start(controller_client, cfg).unwrap();
    let services: Api<Service> = Api::namespaced(admin, ns);
    request_certificate(&services, "before", "before-tls").await;
    let secrets: Api<Secret> = Api::namespaced(env.client().await.unwrap(), ns);
    let before = issued(&secrets, "before-tls").await;

    env.stop();
    drop(env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let env = TestEnv::start(Some(&dir)).unwrap();
    let admin = env.client().await.unwrap();
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin, ns);
    request_certificate(&services, "after", "after-tls").await;
    issued(&secrets, "after-tls").await;
    // The Secret issued before the restart was left alone.
    let kept = secrets.get("before-tls").await.unwrap();
    assert_eq!(kept.resource_version(), before.resource_version());
    running.stop().await;
    env.stop();
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}
