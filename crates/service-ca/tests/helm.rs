//! The Helm chart (`deploy/helm/service-ca`) and the monitoring files (`deploy/monitoring`).
//!
//! 1. `helm lint` passes with the defaults and with a namespaced variant.
//! 2. `helm template` with the defaults renders the same objects as `kubectl kustomize deploy/base`:
//!    the same set of (kind, namespace, name), and the same content once the chart's extra
//!    labels are set aside (so the Deployment runs with the same arguments, the RBAC rules and
//!    the admission policy are the same).
//! 3. A namespaced variant (watchNamespace, CA settings, metrics and the admission policy off)
//!    maps the values to the binary's flags and to Roles instead of ClusterRoles, like
//!    `deploy/overlays/namespaced`.
//! 4. The default rendering applies cleanly (server-side apply, object by object) to a dedicated
//!    control plane.
//! 5. The alerts and the dashboard name only series that `metrics.rs` exports.
//!
//! helm is built from its Go module by `hack/tools/build.sh helm` (cached), or taken from
//! `SERVICE_CA_HELM_BIN`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kube::{Api, Client};
use serde_json::Value;
use service_ca_testing::{TestEnv, workspace_root};

/// (kind, namespace, name) of a rendered object.
type Id = (String, String, String);

/// The helm binary: `SERVICE_CA_HELM_BIN`, else built (once, cached) by hack/tools/build.sh.
fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SERVICE_CA_HELM_BIN") {
            return PathBuf::from(bin);
        }
        let output = Command::new("bash")
            .arg(workspace_root().join("hack/tools/build.sh"))
            .arg("helm")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run hack/tools/build.sh helm");
        assert!(output.status.success(), "hack/tools/build.sh helm failed");
        let stdout = String::from_utf8(output.stdout).expect("UTF-8 path");
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build.sh prints the path")
                .trim(),
        )
    })
}

/// helm with its own, empty config, cache and data directories (nothing read from or written to
/// the user's).
fn helm(args: &[&str]) -> String {
    let home = std::env::temp_dir().join(format!("service-ca-helm-test-{}", std::process::id()));
    let output = Command::new(helm_binary())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .current_dir(workspace_root())
        .output()
        .expect("run helm");
    assert!(
        output.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn chart() -> String {
    workspace_root()
        .join("deploy/helm/service-ca")
        .display()
        .to_string()
}

fn parse(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("rendered documents parse");
    docs.into_iter().filter(|v| !v.is_null()).collect()
}

/// `helm template` of the chart with extra arguments.
fn render_chart(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "service-ca", chart.as_str()];
    args.extend_from_slice(extra);
    let objects = parse(&helm(&args));
    assert!(!objects.is_empty(), "the chart renders no objects");
    objects
}

fn id(object: &Value) -> Id {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        s(&object["kind"]),
        s(&object["metadata"]["namespace"]),
        s(&object["metadata"]["name"]),
    )
}

fn ids(objects: &[Value]) -> BTreeSet<Id> {
    objects.iter().map(id).collect()
}

fn by_id(objects: &[Value]) -> BTreeMap<Id, Value> {
    objects.iter().map(|o| (id(o), o.clone())).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, namespace: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| id(o) == (kind.to_string(), namespace.to_string(), name.to_string()))
}

fn container_args(objects: &[Value]) -> Vec<String> {
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("a string argument").to_string())
        .collect()
}

/// The object without what the chart adds on purpose: its labels (app.kubernetes.io/*,
/// helm.sh/chart; the `app` label and the selectors are the base's) and the image pull policy;
/// runs of whitespace in strings as one space (kustomize re-folds the policy's long CEL
/// expressions with extra line breaks).
fn normalized(object: &Value) -> Value {
    fn squash(value: &mut Value) {
        match value {
            Value::String(s) => *s = s.split_whitespace().collect::<Vec<_>>().join(" "),
            Value::Array(items) => items.iter_mut().for_each(squash),
            Value::Object(map) => map.values_mut().for_each(squash),
            _ => {}
        }
    }
    let mut object = object.clone();
    squash(&mut object);
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("labels");
    }
    if object["kind"] == "Deployment" {
        let template = &mut object["spec"]["template"];
        if let Some(meta) = template["metadata"].as_object_mut() {
            meta.remove("labels");
        }
        if let Some(c) = template["spec"]["containers"][0].as_object_mut() {
            c.remove("imagePullPolicy");
        }
    }
    object
}

#[test]
fn chart_lints() {
    let chart = chart();
    helm(&["lint", "--strict", &chart]);
    helm(&[
        "lint",
        "--strict",
        &chart,
        "--set",
        "watchNamespace=tenant",
        "--set",
        "metrics.enabled=false",
        "--set",
        "admissionPolicy.enabled=false",
    ]);
}

#[test]
fn default_values_render_the_kustomize_base() {
    let chart = render_chart(&[]);
    let base = service_ca_testing::kustomize("deploy/base");
    assert_eq!(
        ids(&chart),
        ids(&base),
        "the chart's defaults and deploy/base render different (kind, namespace, name) sets"
    );
    let chart = by_id(&chart);
    for (id, object) in by_id(&base) {
        let (ours, theirs) = (normalized(&chart[&id]), normalized(&object));
        if ours != theirs {
            let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON");
            let (ours, theirs) = (pretty(&ours), pretty(&theirs));
            let first = ours
                .lines()
                .zip(theirs.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let around = |t: &str| {
                t.lines()
                    .skip(first.saturating_sub(3))
                    .take(8)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "{id:?} differs between the chart and deploy/base, from line {first}:\n--- chart\n{}\n--- base\n{}",
                around(&ours),
                around(&theirs)
            );
        }
    }
}

#[test]
fn namespaced_values_map_to_flags_and_roles() {
    let objects = render_chart(&[
        "--namespace",
        "ignored",
        "--set",
        "namespace=certs",
        "--set",
        "watchNamespace=tenant",
        "--set",
        "image.tag=0.2.0",
        "--set",
        "replicas=1",
        "--set",
        "ca.lifetime=400d",
        "--set",
        "ca.rotationThreshold=100d",
        "--set",
        "ca.keyAlgorithm=ecdsa-p256",
        "--set",
        "leaf.lifetime=90d",
        "--set",
        "leaf.renewBefore=14d",
        "--set",
        "leaf.keyAlgorithm=ecdsa-p256",
        "--set",
        "legacyInjector.enabled=true",
        "--set",
        "denyNamespaces={kube-system,kube-public}",
        "--set",
        "metrics.enabled=false",
        "--set",
        "admissionPolicy.enabled=false",
        "--set",
        "podDisruptionBudget.enabled=false",
    ]);
    let args = container_args(&objects);
    for flag in [
        "--namespace=certs",
        "--watch-namespace=tenant",
        "--cluster-scoped-injection=false",
        "--ca-lifetime=400d",
        "--rotation-threshold=100d",
        "--ca-key-algorithm=ecdsa-p256",
        "--leaf-lifetime=90d",
        "--renew-before=14d",
        "--leaf-key-algorithm=ecdsa-p256",
        "--legacy-injector=true",
        "--deny-namespaces=kube-system,kube-public",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--metrics")),
        "metrics disabled, yet {args:?}"
    );
    let deployment = find(&objects, "Deployment", "certs", "service-ca").expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/service-ca/service-ca:0.2.0"
    );
    // Roles, in the CA namespace and the watched one; nothing cluster-wide, nothing disabled.
    for ns in ["certs", "tenant"] {
        assert!(find(&objects, "Role", ns, "service-ca-namespaced").is_some());
        assert!(find(&objects, "RoleBinding", ns, "service-ca-namespaced").is_some());
    }
    let kinds: BTreeSet<String> = ids(&objects).into_iter().map(|(k, _, _)| k).collect();
    for absent in [
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(!kinds.contains(absent), "{absent} rendered: {kinds:?}");
    }
    assert!(
        objects.iter().all(|o| o["metadata"]["namespace"].is_null()
            || o["metadata"]["namespace"] != "openshift-service-ca"),
        "an object left in openshift-service-ca"
    );

    // In the CA's own namespace, the chart's namespaced mode is deploy/overlays/namespaced, except
    // that it keeps the metrics authentication's cluster-wide grants (the overlay drops every
    // ClusterRole(Binding), so its scrapes are refused).
    let chart = ids(&render_chart(&[
        "--set",
        "watchNamespace=openshift-service-ca",
    ]));
    let mut overlay = ids(&service_ca_testing::kustomize("deploy/overlays/namespaced"));
    overlay.insert((
        "ClusterRole".into(),
        String::new(),
        "service-ca-metrics-reader".into(),
    ));
    overlay.insert((
        "ClusterRoleBinding".into(),
        String::new(),
        "service-ca-auth-delegator".into(),
    ));
    assert_eq!(
        chart, overlay,
        "namespaced chart vs deploy/overlays/namespaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_render_applies_to_a_control_plane() {
    let objects = render_chart(&[]);
    // A dedicated control plane: the chart installs cluster-scoped objects.
    let env = TestEnv::start(None).expect("a dedicated testenv control plane");
    let client = env.client().await.expect("admin client");
    let failures = service_ca_testing::apply_all(&client, &objects, "service-ca-helm-test").await;
    assert!(
        failures.is_empty(),
        "the chart does not apply cleanly:\n  {}",
        failures.join("\n  ")
    );
    check_applied(&client).await;
}

/// A few of the applied objects, read back.
async fn check_applied(client: &Client) {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployment = Api::<Deployment>::namespaced(client.clone(), "openshift-service-ca")
        .get("service-ca")
        .await
        .expect("the Deployment exists");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(2));
}

/// Every exported series name: counters with `_total`, histograms with `_bucket`, `_sum` and
/// `_count`, gauges as registered (read from crates/controller/src/metrics.rs).
fn exported_series() -> BTreeSet<String> {
    let source = std::fs::read_to_string(workspace_root().join("crates/controller/src/metrics.rs"))
        .expect("metrics.rs");
    let mut series = BTreeSet::new();
    let mut last_type = String::new();
    for line in source.lines() {
        let line = line.trim();
        if line.starts_with("let ") && line.contains('=') {
            last_type = line.to_string();
        }
        let Some(name) = line
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix("\","))
            .filter(|n| n.starts_with("service_ca_"))
        else {
            continue;
        };
        if last_type.contains("Histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{name}{suffix}"));
            }
        } else if last_type.contains("Counter") {
            series.insert(format!("{name}_total"));
        } else {
            series.insert(name.to_string());
        }
    }
    assert!(series.len() >= 10, "metrics.rs parsed poorly: {series:?}");
    series
}

fn referenced_series(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("service_ca_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        found.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    found
}

#[test]
fn monitoring_names_only_exported_series() {
    let exported = exported_series();
    let root = workspace_root().join("deploy/monitoring");
    let rules = std::fs::read_to_string(root.join("prometheusrule.yaml")).expect("rules");
    let dashboard_text = std::fs::read_to_string(root.join("dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard.json parses");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "the dashboard has panels"
    );
    // Only the expressions: comments may mention registered names.
    let rules: Value = serde_saphyr::from_str(&rules).expect("prometheusrule.yaml parses");
    assert_eq!(rules["kind"], "PrometheusRule");
    let mut expressions = String::new();
    let mut alerts = BTreeSet::new();
    for group in rules["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            expressions.push_str(rule["expr"].as_str().expect("expr"));
            alerts.insert(rule["alert"].as_str().expect("an alert").to_string());
            let severity = rule["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["warning", "critical"].contains(&severity),
                "{rule}: severity"
            );
        }
    }
    for alert in [
        "ServiceCARotationOverdue",
        "ServiceCAExpiringSoon",
        "ServiceCAServingCertExpiringSoon",
        "ServiceCAReconcileErrors",
        "ServiceCANoLeader",
        "ServiceCANotReady",
        "ServiceCAInjectionBlocked",
    ] {
        assert!(alerts.contains(alert), "{alert} missing: {alerts:?}");
    }
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push_str(target["expr"].as_str().unwrap_or(""));
            queries.push('\n');
        }
    }
    for (what, text) in [("alerts", &expressions), ("dashboard", &queries)] {
        let used = referenced_series(text);
        assert!(!used.is_empty(), "{what} names no service_ca series");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} name series service-ca does not export: {unknown:?} (exported: {exported:?})"
        );
    }
}
