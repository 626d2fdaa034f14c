//! A leader frozen with SIGSTOP in the middle of a CA rotation (docs/reliability.md): two
//! replicas of the real binary; the leader is stopped once the new CA is written and part of the
//! serving Secrets are re-issued; the follower takes the Lease once it has observed it unchanged
//! for the lease duration and finishes the rotation. Then the old leader is resumed with SIGCONT,
//! its term still open and its in-flight reconciles ready to write: it must notice that it lost
//! the Lease and write nothing.
//!
//! "Nothing" is observed, not assumed: the old leader is resumed only once the new leader has
//! converged and written nothing for a while, so any version the recorder sees after SIGCONT
//! (Secrets, ConfigMaps, Services, Events) would be the old leader's, or an answer to it.

mod faults;

use std::time::{Duration, Instant};

use faults::{binary, create_injected, create_namespace, create_services, force_rotation, ms};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use service_ca_controller::names;
use service_ca_testing::container::{DumpOnPanic, Scratch};
use service_ca_testing::replica::Replica;
use service_ca_testing::witness::Recorder;
use service_ca_testing::{TestEnv, eventually};

/// Leaf keys are ECDSA P-256, so issuance is bound by API writes, not key generation: when the
/// leader is frozen, a concurrency's worth of reconciles are between two writes (Secret, Service
/// annotations, Event), and those writes are ready the moment it is resumed, racing its elector.
const SERVICES: usize = 300;
const INJECTED: usize = 5;
const WAIT: Duration = Duration::from_secs(120);
/// The binary's lease duration (not configurable): a follower takes over after observing the
/// Lease unchanged this long, and its next retry (2 s).
const LEASE: Duration = Duration::from_secs(15);
/// How long the resumed old leader is watched.
const WATCH_RESUMED: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_mid_rotation_writes_nothing_once_resumed() {
    let started = Instant::now();
    let env = TestEnv::start(None).expect("a testenv control plane");
    let client = env.client().await.expect("admin client");
    let ns = "failover";
    create_namespace(&client, ns).await;
    let recorder = Recorder::start(client.clone(), ns, names::DEFAULT_CA_SECRET).await;
    let scratch = Scratch::new("service-ca-failover");
    let args = faults::run_args(ns, &["--leaf-key-algorithm", "ecdsa-p256"]);
    let bin = binary();
    let mut replicas = Vec::new();
    let mut dumps = Vec::new();
    for identity in ["replica-a", "replica-b"] {
        let log = scratch.path.join(format!("{identity}.log"));
        dumps.push(DumpOnPanic(log.clone()));
        replicas.push(Replica::spawn(
            &bin,
            env.kubeconfig(),
            identity,
            &args,
            &log,
        ));
    }
    let leader_name = faults::wait_holder(&client, ns, None, WAIT).await;
    let (mut old, mut new) = {
        let b = replicas.pop().expect("two replicas");
        let a = replicas.pop().expect("two replicas");
        if a.identity == leader_name {
            (a, b)
        } else {
            (b, a)
        }
    };
    for replica in [&mut old, &mut new] {
        replica.wait_ready(WAIT).await;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    create_services(&services, 0..SERVICES).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..INJECTED {
        create_injected(&configmaps, &format!("trust{i}")).await;
    }
    let first = recorder
        .converged(&client, ns, names::DEFAULT_BUNDLE_CONFIGMAP, WAIT)
        .await;
    assert_eq!((first.serving, first.injected), (SERVICES, INJECTED));

    // Rotation; the leader is frozen once the new CA is out and a tenth of the Secrets re-issued.
    // (The recorder is polled every 100 ms, so the freeze lands at a random point of the fan-out.)
    force_rotation(&client, ns, "sigstop").await;
    let reissued = |r: &Recorder| r.serving_secrets().values().filter(|&&c| c >= 2).count();
    let at_stop = eventually(WAIT, "the rotation under way", || async {
        let n = reissued(&recorder);
        (recorder.ca_certificates().len() == 2 && n >= SERVICES / 10).then_some(n)
    })
    .await;
    old.signal("STOP");
    // Taken once every thread is stopped: `kill` takes milliseconds under load, and what the
    // leader decided in that time is legitimately before the freeze.
    old.wait_stopped().await;
    let stopped_at = Timestamp::now();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen_with = reissued(&recorder);
    assert!(
        frozen_with < SERVICES,
        "the freeze must come during the rotation, but all {SERVICES} were re-issued"
    );

    // The follower takes over and finishes the rotation.
    let holder = faults::wait_holder(&client, ns, Some(&old.identity), LEASE * 4).await;
    assert_eq!(holder, new.identity);
    let took_over = stopped.elapsed();
    let done = recorder
        .converged(&client, ns, names::DEFAULT_BUNDLE_CONFIGMAP, WAIT)
        .await;
    let finished = stopped.elapsed();
    assert_eq!((done.serving, done.injected), (SERVICES, INJECTED));
    assert_eq!(done.forced_rotation_reason.as_deref(), Some("sigstop"));
    // The new leader is done: nothing written for two seconds.
    eventually(WAIT, "the new leader idle", || async {
        let since = Instant::now() - Duration::from_secs(2);
        recorder.changes_since(since).is_empty().then_some(())
    })
    .await;

    // Resume the old leader: it may only read, notice the Lease is another's, and stand by.
    let resumed = Instant::now();
    old.signal("CONT");
    tokio::time::sleep(WATCH_RESUMED).await;
    // No Secret, ConfigMap or Service is written. An Event may arrive late: one the old leader
    // published just before the freeze, its request already past the write gate and queued in
    // the client when the process stopped (Events carry no precondition; docs/reliability.md).
    // Its eventTime (or its series' lastObservedTime), set when it was published, then predates
    // the freeze; an Event decided after the resume would fail this.
    let after: Vec<_> = recorder.changes_since(resumed);
    let (events, state): (Vec<_>, Vec<_>) = after.into_iter().partition(|c| c.kind == "Event");
    assert!(
        state.is_empty(),
        "writes after the old leader was resumed: {state:#?}"
    );
    let event_api: Api<Event> = Api::namespaced(client.clone(), ns);
    for change in &events {
        let event = event_api
            .get(&change.name)
            .await
            .unwrap_or_else(|e| panic!("Event {}: {e}", change.name));
        let decided = event
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.clone())
            .or(event.event_time.clone())
            .map(|t| t.0);
        assert!(
            decided.is_some_and(|t| t < stopped_at),
            "Event {} ({:?}) written after the resume was decided at {decided:?}, after the freeze at {stopped_at}",
            change.name,
            event.reason
        );
    }
    let late_events = events.len();
    assert!(old.running(), "the old leader keeps running as a follower");
    assert!(new.running());
    assert_eq!(
        faults::lease_holder(&client, ns).await.as_deref(),
        Some(new.identity.as_str())
    );
    let lost = old.log_lines("leadership lost");
    assert!(
        !lost.is_empty(),
        "the old leader logs that it lost leadership"
    );
    let refused = old.log_lines("write skipped: not leading").len();

    recorder.assert_no_violations();
    recorder.assert_reissued_once_by(&done.ca.skid());
    assert!(recorder.deleted_secrets().is_empty());
    for replica in [old, new] {
        let status = replica.terminate(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "exit on SIGTERM: {status:?}"
        );
    }
    eprintln!(
        "failover: {SERVICES} Services (ECDSA P-256), {INJECTED} injected; leader frozen at {at_stop} re-issued \
         ({frozen_with} half a second later); follower held the Lease {} ms after SIGSTOP; rotation \
         finished {} ms after SIGSTOP; after SIGCONT: 0 writes in {} s ({late_events} Events published before the freeze delivered late), {refused} writes refused by the \
         old leader's gate (log lines), it logged the lost leadership; total {:.1}s",
        ms(took_over),
        ms(finished),
        WATCH_RESUMED.as_secs(),
        started.elapsed().as_secs_f64(),
    );
}
