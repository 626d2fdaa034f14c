//! Soak (`make soak`, hack/soak.sh; ignored by `cargo test`): `SOAK_MINUTES` (default 20) of
//! churn against one control plane and the binary in `SERVICE_CA_BIN` (the release build):
//! Services created, deleted and annotation-edited, serving Secrets deleted, ConfigMaps created
//! and annotated for injection, a forced CA rotation every 100 s and a controller restart every
//! `SOAK_RESTART_SECONDS` (default 150; 0: one process for the whole run, which is what shows a
//! slow leak), SIGTERM and SIGKILL in turn. The controller's RSS, open file descriptors, threads
//! and CPU time are sampled every 5 s, and the first and last quarter of the samples compared.
//! At the end the churn stops and every invariant of the fault tests is checked: everything
//! converges, no invalid version was ever written, no Secret the churn did not touch was issued
//! twice by one CA, and only Secrets the churn deleted (or whose Service it deleted) went away.
//! A summary is printed; `SOAK_SEED` replays the same churn.

mod faults;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use faults::{binary, create_injected, create_namespace, force_rotation};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use service_ca_controller::names;
use service_ca_testing::TestEnv;
use service_ca_testing::container::http_get;
use service_ca_testing::replica::{Replica, Rng, Usage};
use service_ca_testing::witness::Recorder;

const NS: &str = "soak";
const ROTATE_EVERY: Duration = Duration::from_secs(100);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// One churn action per tick.
const TICK: Duration = Duration::from_millis(500);
const MAX_SERVICES: usize = 200;
const MAX_CONFIGMAPS: usize = 30;
const CONVERGE: Duration = Duration::from_secs(600);

/// The controller process of the moment, and what the ones before it used.
struct Controller {
    replica: Option<Replica>,
    /// CPU time of the processes that ended (their last sample).
    cpu_before: Duration,
    last: Usage,
    peak_rss: u64,
    samples: Vec<(Duration, Usage, Duration)>,
    restarts: u32,
    unhealthy: u32,
}

impl Controller {
    fn spawn(env: &TestEnv, log: &std::path::Path) -> Replica {
        let args = faults::run_args(NS, &[]);
        Replica::spawn(&binary(), env.kubeconfig(), "soak", &args, log)
    }

    async fn sample(&mut self, since: Instant) {
        let Some(replica) = &self.replica else { return };
        if let Some(usage) = replica.usage() {
            self.last = usage;
            self.peak_rss = self.peak_rss.max(usage.peak_rss);
            let total = self.cpu_before + usage.cpu;
            self.samples.push((since.elapsed(), usage, total));
        }
        if !matches!(http_get(replica.admin, "/healthz").await, Some((200, _))) {
            self.unhealthy += 1;
        }
    }

    async fn restart(&mut self, env: &TestEnv, log: &std::path::Path, kill: bool) {
        if let Some(replica) = self.replica.take() {
            if let Some(usage) = replica.usage() {
                self.last = usage;
            }
            self.cpu_before += self.last.cpu;
            if kill {
                replica.kill().await;
            } else {
                let status = replica.terminate(Duration::from_secs(15)).await;
                assert!(
                    status.is_some_and(|s| s.success()),
                    "exit on SIGTERM: {status:?}"
                );
            }
        }
        self.replica = Some(Self::spawn(env, log));
        self.restarts += 1;
    }
}

#[derive(Default)]
struct Churn {
    next_service: usize,
    live_services: Vec<usize>,
    configmaps: usize,
    /// Serving Secrets the churn deleted, or whose Service it deleted.
    touched: BTreeSet<String>,
    actions: BTreeMap<&'static str, u32>,
}

impl Churn {
    async fn create_service(&mut self, services: &Api<Service>) {
        let i = self.next_service;
        self.next_service += 1;
        services
            .create(
                &PostParams::default(),
                &faults::service(&format!("s{i}"), i.is_multiple_of(3)),
            )
            .await
            .unwrap_or_else(|e| panic!("create Service s{i}: {e}"));
        self.live_services.push(i);
    }

    async fn act(&mut self, rng: &mut Rng, client: &kube::Client) {
        let services: Api<Service> = Api::namespaced(client.clone(), NS);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let pick = |rng: &mut Rng, live: &[usize]| live[rng.below(live.len() as u64) as usize];
        let action = match rng.below(100) {
            _ if self.live_services.len() < 10 => "create Service",
            0..30 if self.live_services.len() < MAX_SERVICES => "create Service",
            0..40 => "delete Service",
            40..65 => "edit Service annotation",
            65..80 => "delete Secret",
            _ if self.configmaps < MAX_CONFIGMAPS => "create injected ConfigMap",
            _ => "annotate ConfigMap",
        };
        match action {
            "create Service" => self.create_service(&services).await,
            "delete Service" => {
                let i = pick(rng, &self.live_services);
                self.live_services.retain(|&s| s != i);
                self.touched.insert(format!("s{i}-tls"));
                ignore_gone(
                    services
                        .delete(&format!("s{i}"), &DeleteParams::default())
                        .await,
                );
            }
            "edit Service annotation" => {
                // Not an input of the certificate: nothing may be re-issued for it.
                let i = pick(rng, &self.live_services);
                let patch = json!({"metadata": {"annotations": {"soak.example/edited": rng.next_u64().to_string()}}});
                ignore_gone(
                    services
                        .patch(
                            &format!("s{i}"),
                            &PatchParams::default(),
                            &Patch::Merge(patch),
                        )
                        .await,
                );
            }
            "delete Secret" => {
                let i = pick(rng, &self.live_services);
                self.touched.insert(format!("s{i}-tls"));
                ignore_gone(
                    secrets
                        .delete(&format!("s{i}-tls"), &DeleteParams::default())
                        .await,
                );
            }
            "create injected ConfigMap" => {
                create_injected(&configmaps, &format!("trust{}", self.configmaps)).await;
                self.configmaps += 1;
            }
            _ => {
                let i = rng.below(self.configmaps.max(1) as u64);
                let patch = json!({"metadata": {"annotations": {"soak.example/edited": rng.next_u64().to_string()}}});
                ignore_gone(
                    configmaps
                        .patch(
                            &format!("trust{i}"),
                            &PatchParams::default(),
                            &Patch::Merge(patch),
                        )
                        .await,
                );
            }
        }
        *self.actions.entry(action).or_default() += 1;
    }
}

/// A delete or patch of an object that is already gone (a Secret between deletion and
/// re-issue) is fine.
fn ignore_gone<T>(result: Result<T, kube::Error>) {
    match result {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("churn: {e}"),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: make soak"]
async fn soak() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(20.0);
    let length = Duration::from_secs_f64(minutes * 60.0);
    // Zero: never (the next restart lies beyond the end of the run).
    let restart_every = match std::env::var("SOAK_RESTART_SECONDS").map(|s| s.parse::<u64>()) {
        Err(_) => Duration::from_secs(150),
        Ok(Ok(0)) => length + Duration::from_secs(1),
        Ok(Ok(s)) => Duration::from_secs(s),
        Ok(Err(e)) => panic!("SOAK_RESTART_SECONDS: whole seconds: {e}"),
    };
    let seed = Rng::seed_from_env("SOAK_SEED");
    let mut rng = Rng::new(seed);
    let dir = std::env::var_os("SOAK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("service-ca-soak-{seed}")));
    std::fs::create_dir_all(&dir).expect("the soak directory");
    let log = dir.join("service-ca.log");
    eprintln!(
        "soak: {minutes} min, seed {seed} (SOAK_SEED), binary {}, controller log {}",
        binary().display(),
        log.display()
    );
    let env = TestEnv::start(None).expect("a testenv control plane");
    let client = env.client().await.expect("admin client");
    create_namespace(&client, NS).await;
    let recorder = Recorder::start(client.clone(), NS, names::DEFAULT_CA_SECRET).await;
    let mut controller = Controller {
        replica: Some(Controller::spawn(&env, &log)),
        cpu_before: Duration::ZERO,
        last: Usage::default(),
        peak_rss: 0,
        samples: Vec::new(),
        restarts: 0,
        unhealthy: 0,
    };
    if let Some(replica) = controller.replica.as_mut() {
        replica.wait_ready(Duration::from_secs(60)).await;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let mut churn = Churn::default();
    for _ in 0..50 {
        churn.create_service(&services).await;
    }

    let started = Instant::now();
    let (mut next_rotation, mut next_restart, mut next_sample) =
        (ROTATE_EVERY, restart_every, Duration::ZERO);
    let mut rotations = 0u32;
    while started.elapsed() < length {
        let now = started.elapsed();
        if now >= next_sample {
            controller.sample(started).await;
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_rotation {
            rotations += 1;
            force_rotation(&client, NS, &format!("soak-{rotations}")).await;
            next_rotation += ROTATE_EVERY;
        }
        if now >= next_restart {
            let kill = controller.restarts % 2 == 1;
            controller.restart(&env, &log, kill).await;
            next_restart += restart_every;
        }
        churn.act(&mut rng, &client).await;
        tokio::time::sleep(TICK).await;
    }
    controller.sample(started).await;

    // The churn stops: everything converges, and every invariant holds over the whole history.
    let stopping = Instant::now();
    let done = recorder
        .converged(&client, NS, names::DEFAULT_BUNDLE_CONFIGMAP, CONVERGE)
        .await;
    let converged_after = stopping.elapsed();
    controller.sample(started).await;
    let expected_reason = (rotations > 0).then(|| format!("soak-{rotations}"));
    assert_eq!(done.forced_rotation_reason, expected_reason);
    assert_eq!(done.serving, churn.live_services.len());
    recorder.assert_no_violations();
    let reissued = recorder.reissued_without_cause(&churn.touched);
    assert!(
        reissued.is_empty(),
        "issued twice without cause: {reissued:#?}"
    );
    let lost: Vec<_> = recorder
        .deleted_secrets()
        .into_iter()
        .filter(|s| !churn.touched.contains(s))
        .collect();
    assert!(lost.is_empty(), "Secrets lost: {lost:?}");
    assert_eq!(controller.unhealthy, 0, "/healthz failed at a sample");
    let final_usage = controller.last;
    let cpu_total = controller.cpu_before + final_usage.cpu;
    if let Some(replica) = controller.replica.take() {
        let status = replica.terminate(Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "exit on SIGTERM: {status:?}"
        );
    }

    let elapsed = started.elapsed();
    let certificates: usize = recorder.serving_secrets().values().sum();
    let (versions, bundles, injected) = recorder.checked();
    let usages: Vec<Usage> = controller.samples.iter().map(|(_, u, _)| *u).collect();
    let rss: Vec<u64> = usages.iter().map(|u| u.rss).collect();
    eprintln!("soak summary (seed {seed})");
    eprintln!(
        "  length {:.1} min of churn; converged {:.1}s after it stopped",
        length.as_secs_f64() / 60.0,
        converged_after.as_secs_f64()
    );
    eprintln!("  actions: {:?}", churn.actions);
    eprintln!(
        "  forced rotations {rotations}; controller restarts {} (SIGTERM and SIGKILL in turn)",
        controller.restarts
    );
    eprintln!(
        "  final: {} Services with valid Secrets, {} injected ConfigMaps; {} CAs in the CA Secret's history",
        done.serving,
        done.injected,
        recorder.ca_certificates().len()
    );
    eprintln!(
        "  serving certificates written {certificates}; versions checked: {versions} serving Secret, \
         {bundles} bundle, {injected} injected; violations 0; Secrets touched by the churn {}",
        churn.touched.len()
    );
    eprintln!(
        "  RSS: min {:.1} MiB, max {:.1} MiB, last {:.1} MiB, peak (VmHWM) {:.1} MiB over {} samples",
        mib(rss.iter().copied().min().unwrap_or(0)),
        mib(rss.iter().copied().max().unwrap_or(0)),
        mib(final_usage.rss),
        mib(controller.peak_rss),
        rss.len()
    );
    eprintln!(
        "  CPU: {:.1} s in {:.1} min ({:.1}% of one core)",
        cpu_total.as_secs_f64(),
        elapsed.as_secs_f64() / 60.0,
        100.0 * cpu_total.as_secs_f64() / elapsed.as_secs_f64()
    );
    eprintln!(
        "  trend, mean of the first vs the last quarter of the samples{}:",
        if controller.restarts == 0 {
            " (one process throughout)"
        } else {
            " (across restarts: SOAK_RESTART_SECONDS=0 shows slow growth)"
        }
    );
    for (what, value) in [
        ("RSS MiB", (|u: &Usage| mib(u.rss)) as fn(&Usage) -> f64),
        ("open fds", |u| u.open_fds as f64),
        ("threads", |u| u.threads as f64),
    ] {
        let (first, last) = quarter_means(&usages, value);
        eprintln!("    {what:<9} {first:>7.1} -> {last:>7.1}");
    }
    eprintln!("  samples (minute: RSS MiB, open fds, threads, CPU s so far):");
    let mut minute = 0;
    for (at, usage, cpu) in &controller.samples {
        if at.as_secs() / 60 >= minute {
            eprintln!(
                "    {:>5.1}: {:>6.1} {:>4} {:>3} {:>7.1}",
                at.as_secs_f64() / 60.0,
                mib(usage.rss),
                usage.open_fds,
                usage.threads,
                cpu.as_secs_f64()
            );
            minute = at.as_secs() / 60 + 1;
        }
    }
}

/// Mean of `value` over the first and over the last quarter of `samples`.
fn quarter_means(samples: &[Usage], value: fn(&Usage) -> f64) -> (f64, f64) {
    let quarter = (samples.len() / 4).max(1).min(samples.len());
    let mean = |part: &[Usage]| part.iter().map(value).sum::<f64>() / part.len().max(1) as f64;
    (
        mean(&samples[..quarter]),
        mean(&samples[samples.len() - quarter..]),
    )
}
