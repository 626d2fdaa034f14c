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

/// How long the control plane stays down.
const OUTAGE: Duration = Duration::from_secs(2);

/// Removes the control plane's data directory when dropped (also when the test panics); declared
/// before the `TestEnv`s so that they stop first.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
    let _remove_dir = RemoveDir(dir.clone());
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
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    request_certificate(&services, "before", "before-tls").await;
    let secrets: Api<Secret> = Api::namespaced(env.client().await.unwrap(), ns);
    let before = issued(&secrets, "before-tls").await;
    let before_svc = common::wait_service(&services, "before", "signed-by", |s| {
        common::annotation(&s.metadata, names::SIGNED_BY_BETA).is_some()
    })
    .await;

    env.stop();
    drop(env);
    // The outage is real for its whole length: every request fails.
    let namespaces = Api::<Namespace>::all(admin);
    common::holds_for(OUTAGE, "the API server is down", || async {
        namespaces.get_opt(ns).await.is_err()
    })
    .await;
    let env = TestEnv::start(Some(&dir)).unwrap();
    let admin = env.client().await.unwrap();
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin, ns);
    request_certificate(&services, "after", "after-tls").await;
    issued(&secrets, "after-tls").await;
    // The Secret issued before the restart, and its Service, are left alone (observed for a
    // window once the controller has proven it works again): two certificates issued in all.
    common::holds_for(
        Duration::from_secs(3),
        "nothing valid re-issued after the restart",
        || async {
            let kept = secrets.get("before-tls").await.unwrap();
            let svc = services.get("before").await.unwrap();
            kept.resource_version() == before.resource_version()
                && svc.resource_version() == before_svc.resource_version()
                && running.metrics.issued_total() == 2
        },
    )
    .await;
    running.stop().await;
    env.stop();
    drop(env);
}
