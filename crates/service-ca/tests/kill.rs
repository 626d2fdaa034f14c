//! SIGKILL at random points (docs/reliability.md): the real `service-ca run` binary is killed 20
//! times against one control plane, at random delays after it starts (seeded; the seed is
//! printed, `KILL_SEED=<seed>` replays the same delays), during a bulk issuance (iterations
//! 0-9, each adding 20 Services) and during forced CA rotations (iterations 10-19, each asking
//! for another). Kills land before the Lease, while the CA is created or rotated, while the
//! bundle is published and in the middle of the fan-out of writes.
//!
//! A recorder watches every version of every object throughout; after each kill, no version
//! written so far may be invalid (half-written Secret, unadoptable CA Secret, certificate that
//! does not verify against the bundle published when it was written, injected bundle never
//! published). At the end one more start converges everything: every Service has a valid
//! Secret, the last rotation request is honoured, every injected ConfigMap holds the bundle, no
//! Secret was deleted (no lost certificate) and none held two certificates from one CA (nothing
//! valid was re-issued).
//!
//! Leaf keys are ECDSA P-256 here: restarts empty the RSA key pool, and the invariants are about
//! the order of writes, not the key type (RSA runs in `failover.rs` and the soak).

mod faults;

use std::time::{Duration, Instant};

use faults::{binary, create_injected, create_namespace, create_services, force_rotation, ms};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use service_ca_controller::names;
use service_ca_testing::TestEnv;
use service_ca_testing::container::{DumpOnPanic, Scratch};
use service_ca_testing::replica::{Replica, Rng};
use service_ca_testing::witness::Recorder;

const ITERATIONS: usize = 20;
/// Services added before each of the first ten starts.
const BATCH: usize = 40;
/// ConfigMaps asking for the bundle.
const INJECTED: usize = 5;
/// Kill delays are uniform in `[0, MAX_DELAY)` after the spawn: start-up (connect, Lease, caches,
/// CA) takes about half a second, a batch or a rotation's fan-out one to two more.
const MAX_DELAY: Duration = Duration::from_millis(3000);
const CONVERGE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_of_issuance_and_rotation() {
    let seed = Rng::seed_from_env("KILL_SEED");
    eprintln!("kill: seed {seed} (KILL_SEED={seed} replays these delays)");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let env = TestEnv::start(None).expect("a testenv control plane");
    let client = env.client().await.expect("admin client");
    let ns = "kill";
    create_namespace(&client, ns).await;
    let recorder = Recorder::start(client.clone(), ns, names::DEFAULT_CA_SECRET).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..INJECTED {
        create_injected(&configmaps, &format!("trust{i}")).await;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let scratch = Scratch::new("service-ca-kill");
    let log = scratch.path.join("service-ca.log");
    let _dump = DumpOnPanic(log.clone());
    let args = faults::run_args(ns, &["--leaf-key-algorithm", "ecdsa-p256"]);
    let bin = binary();

    let mut created = 0;
    let mut last_reason = None;
    let mut landed: std::collections::BTreeMap<&str, u32> = Default::default();
    for i in 0..ITERATIONS {
        let phase = if i < ITERATIONS / 2 {
            create_services(&services, created..created + BATCH).await;
            created += BATCH;
            "issuance"
        } else {
            let reason = format!("kill-{i}");
            force_rotation(&client, ns, &reason).await;
            last_reason = Some(reason);
            "rotation"
        };
        let secrets_before = recorder.serving_secrets();
        let cas_before = recorder.ca_certificates().len();
        let delay = rng.duration(Duration::ZERO, MAX_DELAY);
        let replica = Replica::spawn(&bin, env.kubeconfig(), "kill", &args, &log);
        tokio::time::sleep_until((replica.spawned + delay).into()).await;
        replica.kill().await;
        // The recorder catches up with what the process wrote before it died.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let found = recorder.violations();
        assert!(
            found.is_empty(),
            "after kill {i} ({phase}, {delay:?}): {} invalid versions, e.g. {:#?}",
            found.len(),
            &found[..found.len().min(10)]
        );
        let secrets_after = recorder.serving_secrets();
        let written = secrets_after
            .iter()
            .filter(|(name, n)| secrets_before.get(*name) != Some(n))
            .count();
        let cas_after = recorder.ca_certificates().len();
        let stale = recorder.stale_serving();
        // Where the kill landed: before this start wrote anything, in the middle of its work,
        // or after it was done.
        let started_work = written > 0 || cas_after > cas_before;
        let pending = if phase == "issuance" {
            created - secrets_after.len()
        } else {
            stale + usize::from(cas_after == cas_before)
        };
        let at = match (started_work, pending) {
            (_, 0) => "after the work was done",
            (false, _) => "before any write",
            (true, _) => "in the middle of the work",
        };
        *landed.entry(at).or_default() += 1;
        eprintln!(
            "kill {i:2} ({phase}): SIGKILL {} ms after the spawn, {at}; serving Secrets {} -> {} \
             ({written} written, {stale} under an older CA); CA certificates {cas_before} -> {cas_after}",
            ms(delay),
            secrets_before.len(),
            secrets_after.len(),
        );
    }

    // One more start, left running: everything converges from whatever the kills left.
    let restarted = Instant::now();
    let last = Replica::spawn(&bin, env.kubeconfig(), "kill", &args, &log);
    let done = recorder
        .converged(&client, ns, names::DEFAULT_BUNDLE_CONFIGMAP, CONVERGE)
        .await;
    let converged_after = restarted.elapsed();
    assert_eq!(
        (done.serving, done.injected),
        (created, INJECTED),
        "every Service has a valid Secret, every ConfigMap the bundle"
    );
    assert_eq!(
        done.forced_rotation_reason, last_reason,
        "the last rotation request is honoured"
    );
    // Quiet: nothing more is written once converged.
    let quiet = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late: Vec<_> = recorder
        .changes_since(quiet)
        .into_iter()
        .filter(|c| c.kind != "Event")
        .collect();
    assert!(late.is_empty(), "writes after convergence: {late:?}");
    recorder.assert_no_violations();
    let per_secret = recorder.assert_one_certificate_per_ca();
    assert_eq!(per_secret.len(), created);
    assert!(
        recorder.deleted_secrets().is_empty(),
        "Secrets deleted: {:?}",
        recorder.deleted_secrets()
    );
    let status = last.terminate(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the last process exits 0 on SIGTERM: {status:?}"
    );
    let certificates: usize = per_secret.values().sum();
    let (versions, bundles, injected) = recorder.checked();
    eprintln!(
        "kill: seed {seed}; {ITERATIONS} SIGKILLs; {created} Services, {INJECTED} injected ConfigMaps; \
         {} CAs in the CA Secret's history ({} versions); {certificates} serving certificates in all \
         ({:.1} per Secret); converged {:.1}s after the last start; versions checked: {versions} \
         serving Secret, {bundles} bundle, {injected} injected; recorder re-lists {}; kills landed {landed:?}; \
         total {:.1}s",
        recorder.ca_certificates().len(),
        recorder.ca_versions(),
        certificates as f64 / created as f64,
        converged_after.as_secs_f64(),
        recorder.relists(),
        started.elapsed().as_secs_f64(),
    );
}
