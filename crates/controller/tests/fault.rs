//! Faults: the API server (with etcd and the controller manager) is restarted under a running
//! controller; the controller reconnects and keeps working, and re-issues nothing that is valid.
//! Restarts land in the middle of a bulk issuance (500 Services) and of a CA rotation; a
//! recorder watches every version of every object throughout (docs/reliability.md).

mod common;

use std::time::Duration;

use common::{data, request_certificate};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use service_ca_controller::{Config, Running, names};
use service_ca_testing::witness::Recorder;
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

/// How long a bulk issuance or a rotation may take to converge after the restart.
const CONVERGE: Duration = Duration::from_secs(240);

/// A control plane with a data directory of its own (removed at the end), a namespace, and the
/// controllers for that namespace on a client built once, which outlives the restarts.
struct Restartable {
    dir: std::path::PathBuf,
    env: Option<TestEnv>,
    ns: &'static str,
    running: Option<Running>,
    /// Built once from the kubeconfig, which survives the restart (same data dir, same port).
    client: Client,
    _remove_dir: RemoveDir,
}

impl Restartable {
    async fn start(ns: &'static str) -> Restartable {
        let dir =
            std::env::temp_dir().join(format!("service-ca-fault-{ns}-{}", std::process::id()));
        let remove_dir = RemoveDir(dir.clone());
        let env = TestEnv::start(Some(&dir)).unwrap();
        let client = service_ca_testing::client_from_kubeconfig(env.kubeconfig(), None)
            .await
            .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        let cfg = Config {
            namespace: ns.into(),
            watch_namespace: Some(ns.into()),
            cluster_scoped_injection: false,
            ..Config::default()
        };
        let running = service_ca_controller::start(client.clone(), cfg).unwrap();
        tokio::time::timeout(WAIT, running.wait_ready())
            .await
            .expect("CA loaded and caches synced");
        Restartable {
            dir,
            env: Some(env),
            ns,
            running: Some(running),
            client,
            _remove_dir: remove_dir,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("controllers running")
    }

    /// Stops the control plane, keeps it down for [`OUTAGE`] and starts it again on the same data
    /// directory. Returns how long the API server was unreachable.
    async fn restart(&mut self) -> Duration {
        let stopping = std::time::Instant::now();
        if let Some(env) = self.env.take() {
            tokio::task::spawn_blocking(move || env.stop())
                .await
                .unwrap();
        }
        tokio::time::sleep(OUTAGE).await;
        let dir = self.dir.clone();
        let env = tokio::task::spawn_blocking(move || TestEnv::start(Some(&dir)))
            .await
            .unwrap()
            .unwrap();
        self.env = Some(env);
        stopping.elapsed()
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        if let Some(env) = self.env.take() {
            env.stop();
        }
    }
}

/// Creates Services `s0..s{n-1}` requesting Secrets `s<i>-tls`, every other one headless (both
/// SAN profiles), 16 at a time.
async fn create_services(services: &Api<Service>, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let name = format!("s{i}");
            let secret = format!("{name}-tls");
            services
                .create(
                    &PostParams::default(),
                    &common::service(&name, &[(names::SECRET_NAME_BETA, &secret)], i % 2 == 0),
                )
                .await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the Services");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_in_the_middle_of_500_issuances() {
    const N: usize = 500;
    let started = std::time::Instant::now();
    let mut cluster = Restartable::start("bulk").await;
    let ns = cluster.ns;
    let recorder = Recorder::start(cluster.client.clone(), ns, names::DEFAULT_CA_SECRET).await;
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    let creating = std::time::Instant::now();
    create_services(&services, N).await;
    let created = creating.elapsed();
    // The restart comes once a fifth of the certificates are out: well inside the issuance.
    let deadline = std::time::Instant::now() + CONVERGE;
    let before = loop {
        let issued = recorder.serving_secrets().len();
        if issued >= N / 5 {
            break issued;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {issued} Secrets seen ({} issued by the controller, {} Services tracked) {CONVERGE:?} after the creates",
            cluster.running().metrics.issued_total(),
            common::metric_value(
                &cluster.running().metrics.encode(),
                "service_ca_tracked_services"
            )
            .unwrap_or(-1.0),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let outage = cluster.restart().await;
    let back = std::time::Instant::now();
    let at_restart = recorder.serving_secrets().len();
    assert!(
        before < N,
        "the restart must come during the issuance, but all {N} were already issued"
    );
    let done = recorder
        .converged(
            &cluster.client,
            ns,
            names::DEFAULT_BUNDLE_CONFIGMAP,
            CONVERGE,
        )
        .await;
    let converged_after = creating.elapsed();
    assert_eq!(done.serving, N, "every Service has a valid Secret");

    // Quiet for a window: nothing more is issued, and the history holds no double issuance.
    let issued = cluster.running().metrics.issued_total();
    common::holds_for(
        Duration::from_secs(3),
        "no issuance after convergence",
        || async { cluster.running().metrics.issued_total() == issued },
    )
    .await;
    let per_secret = recorder.assert_one_certificate_per_ca();
    assert_eq!(per_secret.len(), N);
    assert!(
        per_secret.values().all(|&certs| certs == 1),
        "every Secret was issued exactly once: {:?}",
        per_secret
            .iter()
            .filter(|(_, c)| **c != 1)
            .collect::<Vec<_>>()
    );
    // Issued (and written) by this process at most once per Service; a write whose response was
    // lost in the restart is not counted, but its Secret was kept (one certificate each).
    assert!(issued <= N as u64, "{issued} issuances for {N} Services");
    recorder.assert_no_violations();
    assert!(recorder.deleted_secrets().is_empty());
    assert!(
        recorder.ca_problems().is_empty(),
        "{:?}",
        recorder.ca_problems()
    );
    assert_eq!(recorder.ca_certificates().len(), 1, "one CA, never rotated");
    // How the issuance after the restart went: when the Secrets first appeared, from the moment
    // the API server was back (a stall shows as a gap).
    let after: Vec<f64> = recorder
        .first_seen("Secret")
        .into_iter()
        .filter(|(_, at)| *at > back)
        .map(|(_, at)| (at - back).as_secs_f64())
        .collect();
    let gap = after.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    eprintln!(
        "bulk: after the restart {} Secrets first seen between {:.1}s and {:.1}s, longest pause {gap:.1}s",
        after.len(),
        after.first().copied().unwrap_or(0.0),
        after.last().copied().unwrap_or(0.0),
    );
    eprintln!(
        "bulk: {N} Services created in {:.1}s; restart at {before} issued ({at_restart} when it was back), \
         API server unreachable for {:.1}s; all {N} valid {:.1}s after the first create; \
         issued_total {issued}; recorder re-lists {}; CA Secret versions {}; total {:.1}s",
        created.as_secs_f64(),
        outage.as_secs_f64(),
        converged_after.as_secs_f64(),
        recorder.relists(),
        recorder.ca_versions(),
        started.elapsed().as_secs_f64(),
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_in_the_middle_of_a_ca_rotation() {
    const N: usize = 100;
    const INJECTED: usize = 10;
    let started = std::time::Instant::now();
    let mut cluster = Restartable::start("rotation").await;
    let ns = cluster.ns;
    let recorder = Recorder::start(cluster.client.clone(), ns, names::DEFAULT_CA_SECRET).await;
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    create_services(&services, N).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    for i in 0..INJECTED {
        configmaps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {
                    "name": format!("trust{i}"),
                    "annotations": {names::INJECT_BETA: "true"},
                }}))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let first = recorder
        .converged(
            &cluster.client,
            ns,
            names::DEFAULT_BUNDLE_CONFIGMAP,
            CONVERGE,
        )
        .await;
    assert_eq!((first.serving, first.injected), (N, INJECTED));
    let issued_before = cluster.running().metrics.issued_total();

    // Forced rotation; the API server goes down once the new CA is written and a fifth of the
    // serving certificates are re-issued: in the middle of the rotation's fan-out.
    let requesting = std::time::Instant::now();
    Api::<Secret>::namespaced(cluster.client.clone(), ns)
        .patch(
            names::DEFAULT_CA_SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {names::FORCE_ROTATION_REQUEST: "fault-restart"}}})),
        )
        .await
        .unwrap();
    let reissued = |r: &Recorder| r.serving_secrets().values().filter(|&&c| c >= 2).count();
    let before = eventually(CONVERGE, "the rotation under way", || async {
        let n = reissued(&recorder);
        (recorder.ca_certificates().len() == 2 && n >= N / 5).then_some(n)
    })
    .await;
    let outage = cluster.restart().await;
    assert!(
        before < N,
        "the restart must come during the rotation, but all {N} were already re-issued"
    );
    let done = recorder
        .converged(
            &cluster.client,
            ns,
            names::DEFAULT_BUNDLE_CONFIGMAP,
            CONVERGE,
        )
        .await;
    let converged_after = requesting.elapsed();
    assert_eq!((done.serving, done.injected), (N, INJECTED));
    assert_eq!(
        done.forced_rotation_reason.as_deref(),
        Some("fault-restart")
    );
    assert_ne!(
        done.ca.cert_info().der,
        first.ca.cert_info().der,
        "the CA was rotated"
    );

    // One rotation (two CA certificates in the Secret's whole history), every CA Secret version
    // adoptable, every serving Secret re-issued exactly once, under the new CA; no invalid
    // version written at any point (each checked against the bundle published at the time).
    recorder.assert_no_violations();
    assert!(recorder.deleted_secrets().is_empty());
    assert!(
        recorder.ca_problems().is_empty(),
        "{:?}",
        recorder.ca_problems()
    );
    assert_eq!(recorder.ca_certificates().len(), 2, "exactly one rotation");
    recorder.assert_reissued_once_by(&done.ca.skid());
    let issued = cluster.running().metrics.issued_total();
    assert!(
        issued - issued_before <= N as u64,
        "{} re-issuances for {N} Secrets",
        issued - issued_before
    );
    eprintln!(
        "rotation: {N} Services + {INJECTED} injected ConfigMaps; restart at {before} re-issued, API server \
         unreachable for {:.1}s; all re-issued and injected {:.1}s after the request; re-issued by this \
         process {}; recorder re-lists {}; CA Secret versions {}; total {:.1}s",
        outage.as_secs_f64(),
        converged_after.as_secs_f64(),
        issued - issued_before,
        recorder.relists(),
        recorder.ca_versions(),
        started.elapsed().as_secs_f64(),
    );
    cluster.stop().await;
}
