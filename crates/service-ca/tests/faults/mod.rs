//! Shared by the tests that run the real binary through faults (`kill.rs`, `failover.rs`,
//! `soak.rs`; docs/reliability.md): the binary, its arguments, and the objects the tests make.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use service_ca_controller::names;

/// The binary under test: `SERVICE_CA_BIN` (the soak runs the release build), else the build
/// cargo made for these tests.
pub fn binary() -> PathBuf {
    std::env::var_os("SERVICE_CA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_service-ca")))
}

/// `run` arguments for a controller confined to `namespace` (CA, Lease and the objects it
/// serves all live there), with extra `args`.
pub fn run_args<'a>(namespace: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--namespace",
        namespace,
        "--watch-namespace",
        namespace,
        "--cluster-scoped-injection=false",
    ];
    all.extend_from_slice(args);
    all
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace"),
        )
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

/// A Service `name` requesting Secret `<name>-tls`; headless when `headless`.
pub fn service(name: &str, headless: bool) -> Service {
    let mut spec = json!({"ports": [{"name": "https", "port": 443, "targetPort": 8443}]});
    if headless {
        spec["clusterIP"] = json!("None");
    }
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": {names::SECRET_NAME_BETA: format!("{name}-tls")},
        },
        "spec": spec,
    }))
    .expect("a Service")
}

/// Creates Services `s<i>` for every `i` in `range` (every other one headless), 16 at a time.
pub async fn create_services(services: &Api<Service>, range: std::ops::Range<usize>) {
    futures::stream::iter(range)
        .map(|i| async move {
            services
                .create(
                    &PostParams::default(),
                    &service(&format!("s{i}"), i % 2 == 0),
                )
                .await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the Services");
}

/// Creates ConfigMap `name` asking for the bundle.
pub async fn create_injected(configmaps: &Api<ConfigMap>, name: &str) {
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {
                "name": name,
                "annotations": {names::INJECT_BETA: "true"},
            }}))
            .expect("a ConfigMap"),
        )
        .await
        .unwrap_or_else(|e| panic!("ConfigMap {name}: {e}"));
}

/// Asks for a CA rotation (the annotation an administrator sets on the CA Secret).
pub async fn force_rotation(client: &Client, namespace: &str, reason: &str) {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            names::DEFAULT_CA_SECRET,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {names::FORCE_ROTATION_REQUEST: reason}}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("force rotation {reason}: {e}"));
}

/// The Lease holder, if any.
pub async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(names::DEFAULT_LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// Waits up to `timeout` for a Lease holder other than `not`.
pub async fn wait_holder(
    client: &Client,
    namespace: &str,
    not: Option<&str>,
    timeout: Duration,
) -> String {
    service_ca_testing::eventually(timeout, "a Lease holder", || async {
        lease_holder(client, namespace)
            .await
            .filter(|h| Some(h.as_str()) != not)
    })
    .await
}

/// Milliseconds, for the reports.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}
