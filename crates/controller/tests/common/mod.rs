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
    let path = service_ca_testing::workspace_root().join("deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/rbac.yaml");
    let rbac: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).expect("deploy/base/rbac.yaml parses");
    let rbac: Vec<serde_json::Value> = rbac.into_iter().filter(|v| !v.is_null()).collect();
    service_account_client_with(ctx, &rbac).await
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

/// Asks for a CA rotation with `reason` (the annotation an administrator sets on the CA Secret).
pub async fn force_rotation(secrets: &Api<Secret>, reason: &str) {
    secrets
        .patch(
            service_ca_controller::names::DEFAULT_CA_SECRET,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                service_ca_controller::names::FORCE_ROTATION_REQUEST: reason
            }}})),
        )
        .await
        .unwrap_or_else(|e| panic!("force rotation {reason}: {e}"));
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

/// `kubectl kustomize deploy/<dir>` with the control plane's kubectl: the rendered objects.
pub fn kustomize(dir: &str) -> Vec<serde_json::Value> {
    service_ca_testing::kustomize(&format!("deploy/{dir}"))
}

/// Like [`service_account_client`], with the RBAC objects given (e.g. the Roles an overlay
/// renders) instead of `deploy/base/rbac.yaml`: namespaced objects move to the test's namespace,
/// cluster-scoped ones get a per-namespace name, ServiceAccount subjects point at the test's
/// `service-ca`. Returns a client impersonating it.
pub async fn service_account_client_with(
    ctx: &TestContext,
    rbac: &[serde_json::Value],
) -> kube::Client {
    use kube::api::{Patch, PatchParams};
    let ns = &ctx.namespace;
    let pp = PatchParams::apply("service-ca-test").force();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = ctx.api();
    sas.patch(
        "service-ca",
        &pp,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "service-ca"}})),
    )
    .await
    .expect("service account");
    for object in rbac {
        let mut value = object.clone();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        assert!(
            ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"].contains(&kind.as_str()),
            "not an RBAC object: {kind}"
        );
        let cluster_scoped = kind.starts_with("Cluster");
        if cluster_scoped {
            let name = value["metadata"]["name"].as_str().unwrap_or_default();
            value["metadata"]["name"] = json!(format!("{name}-{ns}"));
        } else {
            value["metadata"]["namespace"] = json!(ns);
        }
        if let Some(subjects) = value.get_mut("subjects").and_then(|s| s.as_array_mut()) {
            for subject in subjects {
                subject["namespace"] = json!(ns);
            }
        }
        if kind == "ClusterRoleBinding" {
            let role = value["roleRef"]["name"].as_str().unwrap_or_default();
            value["roleRef"]["name"] = json!(format!("{role}-{ns}"));
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

/// Name of the admission policy (and its binding) [`admission_policy`] makes for a test.
pub fn admission_policy_name(ctx: &TestContext) -> String {
    format!("service-ca-writes-{}", ctx.namespace)
}

/// Applies `deploy/base/admission-policy.yaml` (the ValidatingAdmissionPolicy and its binding)
/// adjusted to the test's namespace, as [`service_account_client`] does for RBAC: a per-namespace
/// name, the match condition naming the test's `service-ca` ServiceAccount, `caNamespace` the
/// test's namespace and `publishedCopies` the given `namespace/name`s. Both objects are deleted
/// when `ctx` is dropped (also on panic). Returns the policy's name once it is in force for `sa`
/// (a client impersonating that ServiceAccount): policies take a moment to become effective, so
/// this polls until a known-abusive write (a dry-run Opaque Secret) is denied.
pub async fn admission_policy(
    ctx: &TestContext,
    sa: &kube::Client,
    published: &[String],
) -> String {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::api::{Patch, PatchParams, PostParams};
    const SHIPPED_USER: &str = "system:serviceaccount:openshift-service-ca:service-ca";
    let path = service_ca_testing::workspace_root().join("deploy/base/admission-policy.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/admission-policy.yaml");
    let ns = &ctx.namespace;
    let name = admission_policy_name(ctx);
    ctx.delete_on_drop::<ValidatingAdmissionPolicyBinding>(name.clone());
    ctx.delete_on_drop::<ValidatingAdmissionPolicy>(name.clone());
    let pp = PatchParams::apply("service-ca-test").force();
    let quoted: Vec<String> = published.iter().map(|p| format!("'{p}'")).collect();
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).expect("admission-policy.yaml parses");
    for mut value in docs {
        value["metadata"]["name"] = json!(name);
        match value["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => {
                let conditions = value["spec"]["matchConditions"]
                    .as_array_mut()
                    .expect("the policy has match conditions");
                let mut names_user = false;
                for condition in conditions {
                    let expression = condition["expression"].as_str().unwrap_or_default();
                    names_user |= expression.contains(SHIPPED_USER);
                    condition["expression"] = json!(expression.replace(
                        SHIPPED_USER,
                        &format!("system:serviceaccount:{ns}:service-ca")
                    ));
                }
                assert!(names_user, "a match condition names {SHIPPED_USER}");
                let variables = value["spec"]["variables"]
                    .as_array_mut()
                    .expect("the policy has variables");
                for (variable, expression) in [
                    ("caNamespace", format!("'{ns}'")),
                    ("publishedCopies", format!("[{}]", quoted.join(", "))),
                ] {
                    let slot = variables
                        .iter_mut()
                        .find(|v| v["name"] == variable)
                        .unwrap_or_else(|| panic!("the policy has a variable {variable}"));
                    slot["expression"] = json!(expression);
                }
                Api::<ValidatingAdmissionPolicy>::all(ctx.client.clone())
                    .patch(&name, &pp, &Patch::Apply(value))
                    .await
                    .unwrap_or_else(|e| panic!("applying ValidatingAdmissionPolicy {name}: {e}"));
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                value["spec"]["policyName"] = json!(name);
                Api::<ValidatingAdmissionPolicyBinding>::all(ctx.client.clone())
                    .patch(&name, &pp, &Patch::Apply(value))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("applying ValidatingAdmissionPolicyBinding {name}: {e}")
                    });
            }
            other => panic!("unexpected object in admission-policy.yaml: {other:?}"),
        }
    }
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), ns);
    let probe: Secret = serde_json::from_value(json!({
        "metadata": {"name": "admission-probe"},
        "type": "Opaque",
        "stringData": {"a": "b"},
    }))
    .expect("static Secret manifest");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    service_ca_testing::eventually(WAIT, "the admission policy in force", || async {
        match secrets.create(&dry_run, &probe).await {
            Err(kube::Error::Api(status)) if status.message.contains(&name) => Some(()),
            _ => None,
        }
    })
    .await;
    name
}

/// Waits until an Event with `reason` about the object `name` in `namespace` has a message
/// containing `text`, and returns it.
pub async fn wait_for_event(
    ctx: &TestContext,
    namespace: &str,
    name: &str,
    reason: &str,
    text: &str,
) -> k8s_openapi::api::core::v1::Event {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(ctx.client.clone(), namespace);
    service_ca_testing::eventually(
        WAIT,
        &format!("a {reason} Event about {name} mentioning {text:?}"),
        || async {
            events
                .list(&kube::api::ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.involved_object.name.as_deref() == Some(name)
                        && e.reason.as_deref() == Some(reason)
                        && e.message.as_deref().is_some_and(|m| m.contains(text))
                })
        },
    )
    .await
}
