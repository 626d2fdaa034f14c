//! CA lifecycle against a real kube-apiserver: creation, adoption, corruption, automatic, manual
//! and forced rotation with trust kept across it (docs/behavior.md §9), plus leader election and the admin
//! endpoints.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{
    WAIT, controller, current_bundle, data, request_certificate, service_account_client,
    test_config, wait_for_new_bundle, wait_secret,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, Service};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::{LeaseTiming, Metrics, RunOptions, names};
use service_ca_testing::tls::verify_chain;
use service_ca_testing::{TestContext, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pp() -> PostParams {
    PostParams::default()
}

fn is_issued(s: &Secret) -> bool {
    data(s, names::TLS_CRT).is_some_and(|c| !c.is_empty())
}

/// A `signing-key` Secret with the given content, as an administrator would create it.
fn ca_secret_with(crt: &[u8], key: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("signing-key".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt".to_string(), ByteString(crt.to_vec())),
                ("tls.key".to_string(), ByteString(key.to_vec())),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

async fn ca_secret(ctx: &TestContext) -> Secret {
    let secrets: Api<Secret> = ctx.api();
    wait_secret(&secrets, "signing-key", "CA secret", is_issued).await
}

#[tokio::test]
async fn first_start_creates_the_ca_and_restart_adopts_it() {
    let ctx = TestContext::new("ca-create").await.unwrap();
    let copy = (ctx.namespace.clone(), "published-copy".to_string());
    let running = controller(&ctx, |cfg| cfg.publish_bundle_to = Some(copy.clone())).await;
    let secret = ca_secret(&ctx).await;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["tls.crt", "tls.key"]);
    let crt = data(&secret, names::TLS_CRT).unwrap();
    let key = String::from_utf8(data(&secret, names::TLS_KEY).unwrap()).unwrap();
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let info = &service_ca_pki::parse_pem_certs(&crt).unwrap()[0];
    assert!(info.is_ca);
    assert!(
        info.subject_cn
            .starts_with("openshift-service-serving-signer@")
    );
    // Lifetime 790 days.
    let days = (info.not_after - info.not_before).whole_days();
    assert!((789..=790).contains(&days), "{days}");
    let cms: Api<ConfigMap> = ctx.api();
    let cm = common::wait_configmap(&cms, "signing-cabundle", "bundle ConfigMap", |c| {
        c.data
            .as_ref()
            .is_some_and(|d| d.contains_key(names::CA_BUNDLE_CRT))
    })
    .await;
    assert_eq!(
        cm.data.unwrap()[names::CA_BUNDLE_CRT].as_bytes(),
        crt.as_slice()
    );
    // The optional published copy (docs/behavior.md §16 O-8) has the same content, and is reconciled.
    let holds_ca = |c: &ConfigMap| {
        c.data
            .as_ref()
            .and_then(|d| d.get(names::CA_BUNDLE_CRT))
            .is_some_and(|b| b.as_bytes() == crt.as_slice())
    };
    common::wait_configmap(&cms, "published-copy", "published copy", holds_ca).await;
    cms.patch(
        "published-copy",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {names::CA_BUNDLE_CRT: "edited"}})),
    )
    .await
    .unwrap();
    common::wait_configmap(&cms, "published-copy", "published copy restored", holds_ca).await;
    let metrics = running.metrics.encode();
    let expiry_line = metrics
        .lines()
        .find(|l| l.starts_with("service_ca_expiry_time_seconds "))
        .unwrap();
    assert_eq!(
        expiry_line.rsplit(' ').next().unwrap(),
        info.not_after.unix_timestamp().to_string()
    );
    running.stop().await;

    let running = controller(&ctx, |_| {}).await;
    let again = ca_secret(&ctx).await;
    assert_eq!(again.resource_version(), secret.resource_version());
    assert_eq!(
        running
            .ca
            .borrow()
            .as_ref()
            .unwrap()
            .tls_crt_pem()
            .as_bytes(),
        crt.as_slice()
    );
    running.stop().await;
}

#[tokio::test]
async fn a_ca_made_by_openssl_is_adopted_and_used() {
    let dir = std::env::temp_dir().join(format!("service-ca-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1000",
            "-subj",
            "/CN=my-own-ca",
        ])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,digitalSignature"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.crt"))
        .status()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(status.success());
    let crt = std::fs::read(dir.join("ca.crt")).unwrap();
    let key = std::fs::read(dir.join("ca.key")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let ctx = TestContext::new("ca-openssl").await.unwrap();
    let secrets: Api<Secret> = ctx.api();
    secrets
        .create(&pp(), &ca_secret_with(&crt, &key))
        .await
        .unwrap();
    let running = controller(&ctx, |_| {}).await;
    assert_eq!(
        running.ca.borrow().as_ref().unwrap().subject_cn(),
        "my-own-ca"
    );
    let services: Api<Service> = ctx.api();
    request_certificate(&services, "web", "web-tls").await;
    let issued = wait_secret(&secrets, "web-tls", "serving secret", is_issued).await;
    verify_chain(
        &crt,
        &data(&issued, names::TLS_CRT).unwrap(),
        &format!("web.{}.svc", ctx.namespace),
    )
    .unwrap();
    // The adopted CA Secret is left exactly as it was (1000 days left: no rotation due).
    let ca = secrets.get("signing-key").await.unwrap();
    assert!(
        data(&ca, "tls.key").unwrap() == key,
        "adopted CA key was rewritten: {:?} {:?}",
        ca.metadata.annotations,
        ca.data
            .as_ref()
            .map(|d| d.keys().cloned().collect::<Vec<_>>())
    );
    assert!(
        data(&ca, "tls.crt").unwrap() == crt,
        "adopted CA certificate was rewritten"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_corrupt_ca_is_reported_never_replaced() {
    let ctx = TestContext::new("ca-corrupt").await.unwrap();
    let secrets: Api<Secret> = ctx.api();
    let corrupt = secrets
        .create(&pp(), &ca_secret_with(b"not a certificate", b"not a key"))
        .await
        .unwrap();
    let client = service_account_client(&ctx).await;
    let running = service_ca_controller::start(client, test_config(&ctx)).unwrap();
    eventually(WAIT, "ServiceCAInvalid event", || async {
        Api::<Event>::namespaced(ctx.client.clone(), &ctx.namespace)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ServiceCAInvalid"))
            .then_some(())
    })
    .await;
    // For a window: no CA loaded, the corrupt Secret never written, and not ready (readiness
    // needs a usable CA).
    let (_, ready) = tokio::join!(
        common::holds_for(
            Duration::from_secs(3),
            "corrupt CA Secret left as it is, no CA loaded",
            || async {
                let live = secrets.get("signing-key").await.unwrap();
                running.ca.borrow().is_none()
                    && live.resource_version() == corrupt.resource_version()
            },
        ),
        tokio::time::timeout(Duration::from_secs(3), running.wait_ready()),
    );
    assert!(ready.is_err(), "ready without a usable CA");
    let live = secrets.get("signing-key").await.unwrap();
    assert_eq!(data(&live, "tls.crt").unwrap(), b"not a certificate");
    assert!(running.metrics.encode().contains("category=\"ca_corrupt\""));

    // Deleting it is the way out: a new CA is created.
    secrets
        .delete("signing-key", &DeleteParams::default())
        .await
        .unwrap();
    let mut rx = running.ca.clone();
    tokio::time::timeout(WAIT, rx.wait_for(Option::is_some))
        .await
        .expect("new CA after delete")
        .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn automatic_rotation_keeps_old_and_new_clients_working() {
    let ctx = TestContext::new("ca-rotate").await.unwrap();
    // CA lives 150 s and rotates when less than 90 s remain: the first rotation ~60 s in.
    let running = controller(&ctx, |cfg| {
        cfg.ca.lifetime = Duration::from_secs(150);
        cfg.ca.rotation_threshold = Duration::from_secs(90);
        cfg.ca.trust_bridge_min = Duration::from_secs(90);
        cfg.leaf_lifetime = Duration::from_secs(3600);
    })
    .await;
    let old_bundle = current_bundle(&running);
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let cms: Api<ConfigMap> = ctx.api();
    cms.create(
        &pp(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("trust".into()),
                annotations: Some([(names::INJECT_BETA.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..3 {
        request_certificate(&services, &format!("r{i}"), &format!("r{i}-tls")).await;
    }
    let mut old_chains = vec![];
    for i in 0..3 {
        let s = wait_secret(&secrets, &format!("r{i}-tls"), "issued", is_issued).await;
        old_chains.push(data(&s, names::TLS_CRT).unwrap());
    }
    let old_subject = running.ca.borrow().as_ref().unwrap().subject_cn();

    let new_bundle = wait_for_new_bundle(&running, &old_bundle, Duration::from_secs(120)).await;
    let rotated = running.ca.borrow().as_ref().unwrap().clone();
    assert_eq!(
        rotated.subject_cn(),
        old_subject,
        "rotation keeps the subject"
    );
    assert!(rotated.intermediate_pem().is_some());
    let secret = ca_secret(&ctx).await;
    let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["ca-bundle.crt", "intermediate-ca.crt", "tls.crt", "tls.key"]
    );

    for (i, old_chain) in old_chains.iter().enumerate() {
        let name = format!("r{i}.{}.svc", ctx.namespace);
        // Every Secret is re-issued under the new CA...
        let new = wait_secret(
            &secrets,
            &format!("r{i}-tls"),
            "re-issued after rotation",
            |s| data(s, names::TLS_CRT).is_some_and(|c| &c != old_chain),
        )
        .await;
        let new_chain = data(&new, names::TLS_CRT).unwrap();
        // ...and both old and new clients trust both old and new servers.
        verify_chain(old_bundle.as_bytes(), old_chain, &name).unwrap();
        verify_chain(old_bundle.as_bytes(), &new_chain, &name).unwrap();
        verify_chain(new_bundle.as_bytes(), old_chain, &name).unwrap();
        verify_chain(new_bundle.as_bytes(), &new_chain, &name).unwrap();
    }
    for name in ["signing-cabundle"] {
        common::wait_configmap(&cms, name, "bundle ConfigMap updated", |c| {
            c.data.as_ref().and_then(|d| d.get(names::CA_BUNDLE_CRT)) == Some(&new_bundle)
        })
        .await;
    }
    common::wait_configmap(&cms, "trust", "injected bundle updated", |c| {
        c.data.as_ref().and_then(|d| d.get(names::SERVICE_CA_CRT)) == Some(&new_bundle)
    })
    .await;
    let events = Api::<Event>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(events.items.iter().any(|e| {
        e.reason.as_deref() == Some("ServiceCARotated")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("previous CA trusted until"))
    }));
    running.stop().await;
}

#[tokio::test]
async fn forced_rotation_rotates_once_per_request() {
    let ctx = TestContext::new("ca-forced").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let secrets: Api<Secret> = ctx.api();
    let first = ca_secret(&ctx).await;
    let first_crt = data(&first, names::TLS_CRT).unwrap();
    let request = |reason: &str| {
        Patch::Merge(json!({"metadata": {"annotations": {names::FORCE_ROTATION_REQUEST: reason}}}))
    };
    secrets
        .patch("signing-key", &PatchParams::default(), &request("r1"))
        .await
        .unwrap();
    let rotated = wait_secret(&secrets, "signing-key", "forced rotation", |s| {
        data(s, names::TLS_CRT).is_some_and(|c| c != first_crt)
    })
    .await;
    assert_eq!(
        common::annotation(&rotated.metadata, names::FORCED_ROTATION_REASON),
        Some("r1")
    );
    assert!(data(&rotated, names::INTERMEDIATE_CA_CRT).is_some());
    assert!(
        running
            .metrics
            .encode()
            .contains("service_ca_rotations_total 1"),
        "{}",
        running.metrics.encode()
    );
    // Same request again: nothing more happens (observed for a window: the CA Secret is not
    // written again and no second rotation is counted).
    let rotations =
        || common::metric_value(&running.metrics.encode(), "service_ca_rotations_total");
    common::holds_for(
        Duration::from_secs(3),
        "no second rotation for the same request",
        || async {
            let live = secrets.get("signing-key").await.unwrap();
            live.resource_version() == rotated.resource_version() && rotations() == Some(1.0)
        },
    )
    .await;
    let still = secrets.get("signing-key").await.unwrap();
    assert_eq!(data(&still, names::TLS_CRT), data(&rotated, names::TLS_CRT));
    // A new reason rotates again.
    let second_crt = data(&still, names::TLS_CRT).unwrap();
    secrets
        .patch("signing-key", &PatchParams::default(), &request("r2"))
        .await
        .unwrap();
    wait_secret(&secrets, "signing-key", "second forced rotation", |s| {
        data(s, names::TLS_CRT).is_some_and(|c| c != second_crt)
            && common::annotation(&s.metadata, names::FORCED_ROTATION_REASON) == Some("r2")
    })
    .await;
    running.stop().await;
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn two_replicas_one_leader_failover_and_admin_endpoints() {
    let ctx = TestContext::new("ca-leader").await.unwrap();
    let client = service_account_client(&ctx).await;
    let timing = LeaseTiming {
        duration: Duration::from_secs(4),
        retry: Duration::from_millis(500),
    };
    let mut replicas = vec![];
    for identity in ["replica-a", "replica-b"] {
        let port = free_port();
        let metrics = Arc::new(Metrics::new());
        let opts = RunOptions {
            identity: identity.into(),
            lease_namespace: ctx.namespace.clone(),
            lease_name: "service-ca-controller-lock".into(),
            lease_timing: timing.clone(),
            admin_addr: Some(([127, 0, 0, 1], port).into()),
            metrics: None,
        };
        let task = tokio::spawn(service_ca_controller::run(
            client.clone(),
            test_config(&ctx),
            opts,
            metrics.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
        replicas.push((identity, port, metrics, task));
    }
    let leases: Api<Lease> = ctx.api();
    let leader = eventually(WAIT, "a leader", || async {
        leases
            .get_opt("service-ca-controller-lock")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    })
    .await;
    let (leader_idx, follower_idx) = if leader == "replica-a" {
        (0, 1)
    } else {
        (1, 0)
    };

    // Admin endpoints: both alive and ready (the follower stands by), metrics exposed.
    for (_, port, _, _) in &replicas {
        let port = *port;
        eventually(WAIT, "ready", || async {
            matches!(http_get(port, "/readyz").await, Some((200, _))).then_some(())
        })
        .await;
        assert_eq!(http_get(port, "/healthz").await.map(|r| r.0), Some(200));
    }
    // /metrics is HTTPS behind TokenReview/SubjectAccessReview (tests/metrics_auth.rs): read the
    // replicas' metrics in-process here; the probe port no longer serves them.
    assert_eq!(
        http_get(replicas[leader_idx].1, "/metrics")
            .await
            .map(|r| r.0),
        Some(404)
    );
    let body = replicas[leader_idx].2.encode();
    assert!(body.contains("service_ca_leader 1"), "{body}");
    let expiry = body
        .lines()
        .find(|l| l.starts_with("service_ca_expiry_time_seconds "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    assert!(expiry > 0, "{body}");
    let follower_body = replicas[follower_idx].2.encode();
    assert!(
        follower_body.contains("service_ca_leader 0"),
        "{follower_body}"
    );
    // The follower reports the same CA expiry as the leader (no "expires soon" alert from it).
    let follower_metrics = replicas[follower_idx].2.clone();
    eventually(WAIT, "follower reports the CA expiry", || async {
        let body = follower_metrics.encode();
        (common::metric_value(&body, "service_ca_expiry_time_seconds") == Some(expiry as f64))
            .then_some(())
    })
    .await;

    // Only the leader writes.
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "one", "one-tls").await;
    wait_secret(&secrets, "one-tls", "issued by the leader", is_issued).await;
    assert!(replicas[leader_idx].2.issued_total() >= 1);
    assert_eq!(replicas[follower_idx].2.issued_total(), 0);
    assert_eq!(replicas[follower_idx].2.writes_of("serving"), 0);

    // The follower's watches are warm: its routing index already tracks the Service.
    let follower_metrics = replicas[follower_idx].2.clone();
    eventually(WAIT, "the follower's warm index", || async {
        let body = follower_metrics.encode();
        (common::metric_value(&body, "service_ca_tracked_services") == Some(1.0)).then_some(())
    })
    .await;

    // The leader dies without releasing the lease: the follower takes over within its duration.
    let (_, _, _, task) = replicas.remove(leader_idx);
    task.abort();
    let _ = task.await;
    let killed = std::time::Instant::now();
    let (follower, _, follower_metrics, follower_task) = replicas.remove(0);
    request_certificate(&services, "two", "two-tls").await;
    eventually(WAIT, "the follower holds the lease", || async {
        let holder = leases
            .get_opt("service-ca-controller-lock")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity);
        (holder.as_deref() == Some(follower)).then_some(())
    })
    .await;
    let acquired = std::time::Instant::now();
    wait_secret(&secrets, "two-tls", "issued by the new leader", is_issued).await;
    eprintln!(
        "failover: new leader issued {:?} after the kill, {:?} after taking the lease",
        killed.elapsed(),
        acquired.elapsed()
    );
    assert!(follower_metrics.issued_total() >= 1);
    let holder = leases
        .get("service-ca-controller-lock")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_ne!(holder.as_deref(), Some(leader.as_str()));
    follower_task.abort();
}

#[tokio::test]
async fn rbac_of_the_deployment_denies_what_it_does_not_grant() {
    let ctx = TestContext::new("ca-rbac").await.unwrap();
    let client = service_account_client(&ctx).await;
    // Outside its rules: deleting Secrets, reading Pods, writing Deployments.
    let err = Api::<Secret>::namespaced(client.clone(), &ctx.namespace)
        .delete("anything", &DeleteParams::default())
        .await
        .expect_err("delete must be denied");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    let err = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .expect_err("pods must be denied");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    // Inside them: listing Services works.
    Api::<Service>::namespaced(client, &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deposed_leader_stops_writing() {
    let ctx = TestContext::new("ca-deposed").await.unwrap();
    let client = service_account_client(&ctx).await;
    let timing = LeaseTiming {
        duration: Duration::from_secs(4),
        retry: Duration::from_millis(300),
    };
    let metrics = Arc::new(Metrics::new());
    let opts = RunOptions {
        identity: "replica-a".into(),
        lease_namespace: ctx.namespace.clone(),
        lease_name: "service-ca-controller-lock".into(),
        lease_timing: timing,
        admin_addr: None,
        metrics: None,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(service_ca_controller::run(
        client,
        test_config(&ctx),
        opts,
        metrics.clone(),
        shutdown.clone(),
    ));
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "before", "before-tls").await;
    wait_secret(&secrets, "before-tls", "issued while leading", is_issued).await;
    let leading = |m: &Metrics| common::metric_value(&m.encode(), "service_ca_leader");
    assert_eq!(leading(&metrics), Some(1.0));

    // Another identity takes the Lease (as a replica that judged ours expired would).
    let leases: Api<Lease> = ctx.api();
    let now = k8s_openapi::jiff::Timestamp::now();
    leases
        .patch(
            "service-ca-controller-lock",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "holderIdentity": "thief",
                "leaseDurationSeconds": 3600,
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
            }})),
        )
        .await
        .unwrap();
    eventually(WAIT, "the deposed leader steps down", || async {
        (leading(&metrics) == Some(0.0)).then_some(())
    })
    .await;

    // From now on it writes nothing: a new request stays unanswered for the whole window.
    let writes = |m: &Metrics| m.writes_of("serving") + m.writes_of("configmap");
    let before = writes(&metrics);
    request_certificate(&services, "after", "after-tls").await;
    common::holds_for(
        Duration::from_secs(5),
        "no Secret from a deposed leader",
        || async {
            secrets.get_opt("after-tls").await.ok().flatten().is_none()
                && writes(&metrics) == before
        },
    )
    .await;
    let lease = leases.get("service-ca-controller-lock").await.unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("thief"),
        "the deposed leader does not take the Lease back while it is valid"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
