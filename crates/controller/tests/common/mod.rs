//! Shared helpers of the controller e2e tests: start the controllers scoped to a test namespace
//! (the CA lives there too, so tests run in parallel without sharing a CA), build objects, wait.

#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Api;
use serde_json::json;
use service_ca_controller::{Config, Running};
use service_ca_testing::TestContext;

/// How long e2e waits may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Applies `deploy/base/rbac.yaml` for a ServiceAccount `service-ca` in the test's namespace (the
/// ClusterRole and its binding get a per-namespace name) and returns a client impersonating it.
/// Every controller e2e test runs with exactly the permissions the deployment grants.
pub async fn service_account_client(ctx: &TestContext) -> kube::Client {
    use kube::api::{Patch, PatchParams};
    let path = service_ca_testing::workspace_root().join("deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/rbac.yaml");
    let ns = &ctx.namespace;
    let unique = format!("service-ca-{ns}");
    let pp = PatchParams::apply("service-ca-test").force();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = ctx.api();
    sas.patch(
        "service-ca",
        &pp,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "service-ca"}})),
    )
    .await
    .expect("service account");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut value: serde_json::Value =
            serde::Deserialize::deserialize(doc).expect("rbac.yaml parses");
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let cluster_scoped = kind.starts_with("Cluster");
        if cluster_scoped {
            value["metadata"]["name"] = json!(unique);
        } else {
            value["metadata"]["namespace"] = json!(ns);
        }
        if let Some(subjects) = value.get_mut("subjects").and_then(|s| s.as_array_mut()) {
            for subject in subjects {
                subject["namespace"] = json!(ns);
            }
        }
        if kind == "ClusterRoleBinding" {
            value["roleRef"]["name"] = json!(unique);
        }
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let resource = kube::api::ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: kind.clone(),
            plural: format!("{}s", kind.to_lowercase()),
        };
        let api: Api<kube::api::DynamicObject> = if cluster_scoped {
            Api::all_with(ctx.client.clone(), &resource)
        } else {
            Api::namespaced_with(ctx.client.clone(), ns, &resource)
        };
        api.patch(&name, &pp, &Patch::Apply(value))
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }
    let user = format!("system:serviceaccount:{ns}:service-ca");
    service_ca_testing::client_from_kubeconfig(&ctx.kubeconfig, Some(&user))
        .await
        .expect("impersonating client")
}

/// The configuration every controller test starts from: CA and watches in the test namespace.
pub fn test_config(ctx: &TestContext) -> Config {
    Config {
        namespace: ctx.namespace.clone(),
        watch_namespace: Some(ctx.namespace.clone()),
        cluster_scoped_injection: false,
        key_pool_size: 4,
        ..Config::default()
    }
}

/// Starts the controllers for the test's namespace, as the deployment's ServiceAccount, and waits
/// until the CA is loaded.
pub async fn controller(ctx: &TestContext, tweak: impl FnOnce(&mut Config)) -> Running {
    let client = service_account_client(ctx).await;
    let mut cfg = Config {
        namespace: ctx.namespace.clone(),
        watch_namespace: Some(ctx.namespace.clone()),
        cluster_scoped_injection: false,
        key_pool_size: 4,
        ..Config::default()
    };
    tweak(&mut cfg);
    let running = service_ca_controller::start(client, cfg).expect("valid config");
    tokio::time::timeout(WAIT, running.wait_ready())
        .await
        .expect("CA loaded and caches synced in time");
    running
}

/// A ClusterIP (or headless) Service with the given annotations.
pub fn service(name: &str, annotations: &[(&str, &str)], headless: bool) -> Service {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut spec = json!({"ports": [{"name": "https", "port": 443, "targetPort": 8443}], "selector": {"app": name}});
    if headless {
        spec["clusterIP"] = json!("None");
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }))
    .expect("static Service manifest")
}

/// Data value of a Secret as bytes.
pub fn data(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

/// Waits until the Secret exists and `check` accepts it.
pub async fn wait_secret(
    api: &Api<Secret>,
    name: &str,
    what: &str,
    check: impl Fn(&Secret) -> bool,
) -> Secret {
    service_ca_testing::eventually(WAIT, what, || async {
        api.get_opt(name).await.ok().flatten().filter(|s| check(s))
    })
    .await
}

/// Waits until the Service's annotations satisfy `check`.
pub async fn wait_service(
    api: &Api<Service>,
    name: &str,
    what: &str,
    check: impl Fn(&Service) -> bool,
) -> Service {
    service_ca_testing::eventually(WAIT, what, || async {
        api.get_opt(name).await.ok().flatten().filter(|s| check(s))
    })
    .await
}

/// Waits until the ConfigMap exists and `check` accepts it.
pub async fn wait_configmap(
    api: &Api<ConfigMap>,
    name: &str,
    what: &str,
    check: impl Fn(&ConfigMap) -> bool,
) -> ConfigMap {
    service_ca_testing::eventually(WAIT, what, || async {
        api.get_opt(name).await.ok().flatten().filter(|s| check(s))
    })
    .await
}

/// The annotation value, if set.
pub fn annotation<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Creates a Service requesting a serving certificate in Secret `secret` (beta annotation).
pub async fn request_certificate(services: &Api<Service>, name: &str, secret: &str) -> Service {
    services
        .create(
            &kube::api::PostParams::default(),
            &service(
                name,
                &[(service_ca_controller::names::SECRET_NAME_BETA, secret)],
                false,
            ),
        )
        .await
        .expect("create Service")
}

/// The CA bundle the controllers currently inject and publish.
pub fn current_bundle(running: &Running) -> String {
    running
        .ca
        .borrow()
        .as_ref()
        .expect("CA loaded")
        .bundle_pem()
}

/// Waits (up to `timeout`) until the CA bundle differs from `old`, and returns the new one.
pub async fn wait_for_new_bundle(running: &Running, old: &str, timeout: Duration) -> String {
    let mut rx = running.ca.clone();
    tokio::time::timeout(
        timeout,
        rx.wait_for(|ca| ca.as_ref().is_some_and(|ca| ca.bundle_pem() != old)),
    )
    .await
    .expect("the CA changed in time")
    .expect("CA channel open");
    current_bundle(running)
}

/// Observes for `window` that `holds` stays true (checked every 100 ms), and fails the test the
/// moment it does not: a "nothing happens" check that looks for the whole window, not once.
pub async fn holds_for<F, Fut>(window: Duration, what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        assert!(holds().await, "{what}: changed within {window:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled metric in the text exposition, if present.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
