//! Rolling restarts (docs/behavior.md §17) against a real API server and kube-controller-manager:
//! workloads annotated `service-ca.dev/restart-on-change: "true"` get the hash of the serving
//! Secrets and injected bundles they mount in their pod template, the Deployment controller rolls
//! a new ReplicaSet when it changes (no kubelet: pods never run, templates and ReplicaSets are
//! what is asserted), workloads without the annotation are never written, and restarts are paced.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{WAIT, data, wait_configmap, wait_secret};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use service_ca_controller::material::{self, Desired};
use service_ca_controller::{RestartPace, names};
use service_ca_testing::{TestContext, eventually};

/// The Deployment and ReplicaSet controllers, next to the shared control plane (whose
/// kube-controller-manager runs only the garbage-collector, namespace and ServiceAccount
/// controllers): a second kube-controller-manager from the same testenv binary, stopped when this
/// is dropped (also on panic). Two tests running them at once is harmless (ReplicaSet names are
/// derived from the template, a duplicate create is refused).
struct WorkloadControllers(std::process::Child);

impl WorkloadControllers {
    fn start(ctx: &TestContext) -> Self {
        let binary = service_ca_testing::testenv_binary().expect("testenv binary");
        let child = std::process::Command::new(binary)
            .arg("kube-controller-manager")
            .arg(format!("--kubeconfig={}", ctx.kubeconfig.display()))
            .arg("--controllers=deployment-controller,replicaset-controller")
            .args([
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--v=0",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start kube-controller-manager");
        Self(child)
    }
}

impl Drop for WorkloadControllers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pp() -> PostParams {
    PostParams::default()
}

fn pace(restarts: u32, per: Duration) -> impl FnOnce(&mut service_ca_controller::Config) {
    move |cfg| cfg.restart_pace = RestartPace { restarts, per }
}

/// A pod template of one container mounting `volumes`, labelled `app: name`.
fn template(name: &str, volumes: Value) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.invalid/app:1",
                "volumeMounts": volumes.as_array().unwrap().iter()
                    .map(|v| json!({"name": v["name"], "mountPath": format!("/etc/{}", v["name"].as_str().unwrap())}))
                    .collect::<Vec<_>>(),
            }],
            "volumes": volumes,
        },
    })
}

fn metadata(name: &str, opted_in: bool) -> Value {
    let annotations = if opted_in {
        json!({names::RESTART_ON_CHANGE: "true"})
    } else {
        json!({})
    };
    json!({"name": name, "annotations": annotations})
}

fn deployment(name: &str, opted_in: bool, volumes: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": metadata(name, opted_in),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, volumes),
        },
    }))
    .expect("static Deployment manifest")
}

fn statefulset(name: &str, volumes: Value) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": metadata(name, true),
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, volumes),
        },
    }))
    .expect("static StatefulSet manifest")
}

fn secret_volume(secret: &str) -> Value {
    json!([{"name": "tls", "secret": {"secretName": secret}}])
}

fn template_hash(template: Option<&PodTemplateSpec>) -> Option<String> {
    template?
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(names::MATERIAL_HASH)
        .cloned()
}

fn deployment_hash(d: &Deployment) -> Option<String> {
    template_hash(d.spec.as_ref().map(|s| &s.template))
}

/// Waits until the Deployment's template hash satisfies `check`; returns it.
async fn wait_deployment_hash(
    api: &Api<Deployment>,
    name: &str,
    what: &str,
    check: impl Fn(Option<&str>) -> bool,
) -> Option<String> {
    eventually(WAIT, what, || async {
        let d = api.get_opt(name).await.ok().flatten()?;
        let hash = deployment_hash(&d);
        check(hash.as_deref()).then_some(hash)
    })
    .await
}

/// Waits until the Deployment controller made a ReplicaSet for the template carrying `hash`.
async fn wait_replicaset(ctx: &TestContext, deployment: &str, hash: &str) {
    let replicasets: Api<ReplicaSet> = ctx.api();
    eventually(
        WAIT,
        &format!("a ReplicaSet of {deployment} for hash {hash}"),
        || async {
            let list = replicasets
                .list(&ListParams::default().labels(&format!("app={deployment}")))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|rs| {
                    rs.owner_references().iter().any(|o| o.name == deployment)
                        && template_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()))
                            .as_deref()
                            == Some(hash)
                })
                .then_some(())
        },
    )
    .await;
}

/// Never written by service-ca: no hash, no field manager of ours, generation 1.
fn untouched(d: &Deployment) -> bool {
    deployment_hash(d).is_none()
        && d.metadata.generation == Some(1)
        && !d
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some(names::FIELD_MANAGER))
}

/// What the hash should be now, computed by the same function `service-ca status` uses.
async fn desired_hash(ctx: &TestContext, d: &Deployment) -> Option<String> {
    let spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    match material::desired(&ctx.client, &ctx.namespace, spec).await {
        Ok(Desired::Hash(h)) => Some(h),
        _ => None,
    }
}

#[tokio::test]
async fn reissued_serving_secret_rolls_the_opted_in_deployment_only() {
    let ctx = TestContext::new("rst-secret").await.unwrap();
    let _kcm = WorkloadControllers::start(&ctx);
    let running = common::controller(&ctx, pace(100, Duration::from_secs(1))).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let deployments: Api<Deployment> = ctx.api();
    common::request_certificate(&services, "web", "web-tls").await;
    let issued = wait_secret(&secrets, "web-tls", "web-tls issued", |s| {
        data(s, names::TLS_CRT).is_some()
    })
    .await;
    for d in [
        deployment("web", true, secret_volume("web-tls")),
        deployment("plain", false, secret_volume("web-tls")),
        deployment(
            "nothing",
            true,
            json!([{"name": "scratch", "emptyDir": {}}]),
        ),
    ] {
        deployments
            .create(&pp(), &d)
            .await
            .expect("create Deployment");
    }

    // First sight of an opted-in workload: the hash is set (one rollout, documented).
    let first = wait_deployment_hash(&deployments, "web", "hash set on opt-in", |h| h.is_some())
        .await
        .unwrap();
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        desired_hash(&ctx, &web).await.as_deref(),
        Some(first.as_str())
    );
    wait_replicaset(&ctx, "web", &first).await;

    // Delete the Secret: service-ca re-issues it, and the Deployment rolls to the new material.
    secrets
        .delete("web-tls", &DeleteParams::default())
        .await
        .unwrap();
    let reissued = wait_secret(&secrets, "web-tls", "web-tls re-issued", |s| {
        data(s, names::TLS_CRT).is_some_and(|c| Some(c) != data(&issued, names::TLS_CRT))
    })
    .await;
    let second = wait_deployment_hash(&deployments, "web", "hash follows the re-issue", |h| {
        h.is_some_and(|h| h != first)
    })
    .await
    .unwrap();
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        desired_hash(&ctx, &web).await.as_deref(),
        Some(second.as_str())
    );
    wait_replicaset(&ctx, "web", &second).await;
    assert!(data(&reissued, names::TLS_CRT).is_some());

    // It settles: no further writes while nothing changes.
    common::holds_for(Duration::from_secs(3), "web's hash", || async {
        deployments
            .get("web")
            .await
            .ok()
            .and_then(|d| deployment_hash(&d))
            == Some(second.clone())
    })
    .await;
    // Without the annotation (or mounting nothing of service-ca's): never written.
    for name in ["plain", "nothing"] {
        let d = deployments.get(name).await.unwrap();
        assert!(untouched(&d), "{name} was written: {:?}", d.metadata);
    }
    assert!(running.metrics.writes_of("restart") >= 2);
    running.stop().await;
}

#[tokio::test]
async fn ca_rotation_rolls_workloads_mounting_the_injected_bundle() {
    let ctx = TestContext::new("rst-rotate").await.unwrap();
    let _kcm = WorkloadControllers::start(&ctx);
    let running = common::controller(&ctx, pace(100, Duration::from_secs(1))).await;
    let bundle = common::current_bundle(&running);
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let cms: Api<ConfigMap> = ctx.api();
    let deployments: Api<Deployment> = ctx.api();
    let statefulsets: Api<StatefulSet> = ctx.api();
    let trust: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "trust", "annotations": {names::INJECT_BETA: "true"}},
    }))
    .unwrap();
    cms.create(&pp(), &trust).await.unwrap();
    wait_configmap(&cms, "trust", "bundle injected", |cm| {
        cm.data.as_ref().and_then(|d| d.get(names::SERVICE_CA_CRT)) == Some(&bundle)
    })
    .await;
    common::request_certificate(&services, "db", "db-tls").await;
    wait_secret(&secrets, "db-tls", "db-tls issued", |s| {
        data(s, names::TLS_CRT).is_some()
    })
    .await;
    deployments
        .create(
            &pp(),
            &deployment(
                "client",
                true,
                json!([{"name": "trust", "configMap": {"name": "trust"}}]),
            ),
        )
        .await
        .unwrap();
    // A StatefulSet with both, as projected sources.
    statefulsets
        .create(
            &pp(),
            &statefulset(
                "db",
                json!([{"name": "certs", "projected": {"sources": [
                    {"secret": {"name": "db-tls"}},
                    {"configMap": {"name": "trust"}},
                ]}}]),
            ),
        )
        .await
        .unwrap();
    let sts_hash = |s: &StatefulSet| template_hash(s.spec.as_ref().map(|s| &s.template));
    let first = wait_deployment_hash(&deployments, "client", "client hash set", |h| h.is_some())
        .await
        .unwrap();
    wait_replicaset(&ctx, "client", &first).await;
    let db_first = eventually(WAIT, "db hash set", || async {
        sts_hash(&statefulsets.get("db").await.ok()?)
    })
    .await;

    // Rotate the CA as an administrator does (ca.rs): the bundle is re-injected, the serving
    // Secret re-issued, and both workloads roll.
    secrets
        .patch(
            names::DEFAULT_CA_SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                names::FORCE_ROTATION_REQUEST: "restart e2e"
            }}})),
        )
        .await
        .unwrap();
    let rotated = common::wait_for_new_bundle(&running, &bundle, WAIT).await;
    wait_configmap(&cms, "trust", "rotated bundle injected", |cm| {
        cm.data.as_ref().and_then(|d| d.get(names::SERVICE_CA_CRT)) == Some(&rotated)
    })
    .await;
    let second = eventually(WAIT, "client follows the rotated bundle", || async {
        let d = deployments.get("client").await.ok()?;
        let hash = deployment_hash(&d)?;
        (hash != first && desired_hash(&ctx, &d).await.as_deref() == Some(hash.as_str()))
            .then_some(hash)
    })
    .await;
    wait_replicaset(&ctx, "client", &second).await;
    eventually(WAIT, "db follows the rotation", || async {
        let s = statefulsets.get("db").await.ok()?;
        let spec = s.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let desired = material::desired(&ctx.client, &ctx.namespace, spec)
            .await
            .ok()?;
        let hash = sts_hash(&s)?;
        (hash != db_first && desired == Desired::Hash(hash)).then_some(())
    })
    .await;
    running.stop().await;
}

/// Pace 2 per 3 s, 8 opted-in Deployments appearing at once: the hash writes, as observed
/// through a watch, never put more than 2 in any 3 s window (less a margin for watch delivery),
/// and every Deployment is written in the end.
#[tokio::test]
async fn restarts_are_paced_cluster_wide() {
    const N: usize = 8;
    const PER: Duration = Duration::from_secs(3);
    let ctx = TestContext::new("rst-pace").await.unwrap();
    let cms: Api<ConfigMap> = ctx.api();
    let deployments: Api<Deployment> = ctx.api();
    let running = common::controller(&ctx, pace(2, PER)).await;
    let bundle = common::current_bundle(&running);
    let trust: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "trust", "annotations": {names::INJECT_BETA: "true"}},
    }))
    .unwrap();
    cms.create(&pp(), &trust).await.unwrap();
    wait_configmap(&cms, "trust", "bundle injected", |cm| {
        cm.data.as_ref().and_then(|d| d.get(names::SERVICE_CA_CRT)) == Some(&bundle)
    })
    .await;
    // Every change of a template hash, as a watch delivers it.
    type Writes = Arc<Mutex<Vec<(String, String, Instant)>>>;
    let writes: Writes = Arc::default();
    let recorder = {
        let (writes, api) = (writes.clone(), deployments.clone());
        tokio::spawn(async move {
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            let mut events = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(d)) = events.next().await {
                if let Some(hash) = deployment_hash(&d)
                    && last.get(&d.name_any()) != Some(&hash)
                {
                    last.insert(d.name_any(), hash.clone());
                    writes
                        .lock()
                        .unwrap()
                        .push((d.name_any(), hash, Instant::now()));
                }
            }
        })
    };
    for i in 0..N {
        deployments
            .create(
                &pp(),
                &deployment(
                    &format!("app-{i}"),
                    true,
                    json!([{"name": "trust", "configMap": {"name": "trust"}}]),
                ),
            )
            .await
            .unwrap();
    }
    eventually(WAIT, "every Deployment written", || async {
        let written: std::collections::BTreeSet<String> =
            writes.lock().unwrap().iter().map(|w| w.0.clone()).collect();
        (written.len() == N).then_some(())
    })
    .await;
    // Anything written late (a second write would be a bug, and counts against the pace).
    tokio::time::sleep(PER).await;
    recorder.abort();
    let writes = writes.lock().unwrap().clone();
    assert_eq!(writes.len(), N, "one write per Deployment: {writes:?}");
    let mut times: Vec<Instant> = writes.iter().map(|w| w.2).collect();
    times.sort();
    let offsets: Vec<f64> = times
        .iter()
        .map(|t| t.duration_since(times[0]).as_secs_f64())
        .collect();
    eprintln!("hash writes observed at {offsets:.2?} s");
    let margin = Duration::from_millis(700);
    for window in times.windows(3) {
        assert!(
            window[2] - window[0] >= PER - margin,
            "three restarts within {PER:?}: {offsets:.2?}"
        );
    }
    assert!(
        times[N - 1] - times[0] >= (PER - margin) * 3,
        "{N} restarts at 2 per {PER:?} take at least 3 intervals: {offsets:.2?}"
    );
    running.stop().await;
}
