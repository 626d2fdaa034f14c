//! e2e: the shipped deployment (`deploy/base`) on a real control plane, with the real binary
//! configured exactly as the Deployment configures it.
//!
//! 1. `kubectl kustomize deploy/base` is applied object by object with server-side apply to a
//!    control plane of this test binary's own (it installs cluster-scoped objects and uses the real
//!    `openshift-service-ca` namespace, so it never runs against a shared or existing cluster).
//! 2. The `service-ca` binary runs with the container's `args` and `env`, cluster-wide, with
//!    in-cluster configuration: a TokenRequest token of the Deployment's ServiceAccount, the
//!    `KUBERNETES_SERVICE_*` variables, and the token, `ca.crt` and `namespace` files at the fixed
//!    path kube-rs reads (`/var/run/secrets/kubernetes.io/serviceaccount`), provided by a bind
//!    mount in a private mount namespace of the child only (`unshare`), so the machine is never
//!    touched. No kubeconfig is reachable by the child, so in-cluster is its only configuration.
//! 3. Once `/readyz` answers 200 on the admin address, issuance and injection are checked in two
//!    namespaces, along with the CA Secret, the bundle ConfigMap and the Lease.
//! 4. SIGTERM: the process exits 0 within seconds and releases the Lease.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use service_ca_controller::names;
use service_ca_testing::container::{
    ApiServer, DumpOnPanic, POD_NAME, SERVICEACCOUNT_DIR, Scratch, ShippedContainer, check_log,
    http_get, loopback, terminate, wait_until_ready,
};
use service_ca_testing::{TestEnv, eventually};

/// Every wait of this test is bounded by this.
const WAIT: Duration = Duration::from_secs(60);
/// How long the process may take to exit after SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// Field manager of the test's server-side applies.
const FIELD_MANAGER: &str = "service-ca-deployed-test";
/// The namespaces issuance and injection are checked in.
const APP_NAMESPACES: [&str; 2] = ["deployed-app-one", "deployed-app-two"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_deployment_runs_in_cluster() {
    let started = Instant::now();
    // A dedicated control plane, never SERVICE_CA_TEST_KUBECONFIG: see the module docs.
    let env = TestEnv::start(None).expect("a dedicated testenv control plane");
    let admin = env.client().await.expect("admin client");
    let server = ApiServer::from_kubeconfig(env.kubeconfig());

    // 1. Render and apply deploy/base.
    let objects = render_base();
    apply_all(&admin, &objects).await;
    let shipped = ShippedContainer::from_objects(&objects);
    let pod_namespace = shipped.namespace.clone();
    pod_template_is_admitted(&admin, &shipped.deployment, &pod_namespace).await;

    // 2. The process, as the container would run it.
    let (args, admin_addr) = shipped.args_and_admin_address();
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespace")),
        "the Deployment is expected to run cluster-wide: {args:?}"
    );
    let token =
        service_ca_testing::service_account_token(&admin, &pod_namespace, &shipped.service_account)
            .await;
    let scratch = Scratch::new("service-ca-deployed");
    let root = scratch.path.join("var-run");
    server.write_service_account_files(&root.join(SERVICEACCOUNT_DIR), &token, &pod_namespace);
    let home = scratch.path.join("home");
    std::fs::create_dir_all(&home).expect("empty HOME");
    let isolation = Isolation::find(&root);

    let log_path = scratch.path.join("service-ca.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // The test-profile build of the same source (cargo builds it for this crate's integration
    // tests): CI does not spend its budget on a separate `--release` build for this one test
    // (tests/image.rs runs the release build, from the image).
    let binary = env!("CARGO_BIN_EXE_service-ca");
    let mut command = isolation.command(&root, Path::new(binary), &args);
    command
        // Nothing from the test's environment: no KUBECONFIG, no ~/.kube/config (HOME is empty),
        // no SERVICE_CA_* variables; the in-cluster variables and the container's env only.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("KUBERNETES_SERVICE_HOST", &server.host)
        .env("KUBERNETES_SERVICE_PORT", server.port.to_string())
        .envs(shipped.env())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn service-ca under unshare");
    let _dump = DumpOnPanic(log_path.clone());

    // 3. Ready, then issuance and injection in two namespaces.
    let probe_addr = loopback(admin_addr);
    let readiness = shipped.readiness_path();
    let liveness = shipped.liveness_path();
    wait_until_ready(&mut child, probe_addr, &readiness, WAIT).await;
    let ready_after = started.elapsed();
    assert_eq!(
        http_get(probe_addr, &liveness).await.map(|(s, _)| s),
        Some(200),
        "liveness probe {liveness}"
    );

    for ns in APP_NAMESPACES {
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace"),
            )
            .await
            .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
        let services: Api<Service> = Api::namespaced(admin.clone(), ns);
        let service = json!({
            "metadata": {"name": "api", "annotations": {names::SECRET_NAME_BETA: "api-tls"}},
            "spec": {
                "ports": [{"name": "https", "port": 443, "targetPort": 8443}],
                "selector": {"app": "api"},
            },
        });
        services
            .create(
                &PostParams::default(),
                &serde_json::from_value(service).expect("service"),
            )
            .await
            .unwrap_or_else(|e| panic!("service {ns}/api: {e}"));
        let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
        let configmap = json!({
            "metadata": {"name": "trust", "annotations": {names::INJECT_BETA: "true"}},
        });
        configmaps
            .create(
                &PostParams::default(),
                &serde_json::from_value(configmap).expect("configmap"),
            )
            .await
            .unwrap_or_else(|e| panic!("configmap {ns}/trust: {e}"));
    }

    let ca_secrets: Api<Secret> = Api::namespaced(admin.clone(), &pod_namespace);
    // A replica that has not (yet) won the Lease is ready too ("a follower standing by"), so
    // readiness alone does not mean the CA exists yet.
    let ca_secret_name = format!("{pod_namespace}/{}", names::DEFAULT_CA_SECRET);
    eventually(WAIT, &format!("the CA Secret {ca_secret_name}"), || {
        let api = ca_secrets.clone();
        async move {
            let secret = api.get_opt(names::DEFAULT_CA_SECRET).await.ok().flatten()?;
            let data = secret.data.as_ref()?;
            (secret.type_.as_deref() == Some(names::TLS_SECRET_TYPE)
                && data.contains_key(names::TLS_CRT)
                && data.contains_key(names::TLS_KEY))
            .then_some(())
        }
    })
    .await;
    let ca_bundle = eventually(WAIT, "the bundle ConfigMap", || {
        let api: Api<ConfigMap> = Api::namespaced(admin.clone(), &pod_namespace);
        async move {
            api.get_opt(names::DEFAULT_BUNDLE_CONFIGMAP)
                .await
                .ok()
                .flatten()
                .and_then(|cm| cm.data?.get(names::CA_BUNDLE_CRT).cloned())
        }
    })
    .await;

    for ns in APP_NAMESPACES {
        let (chain, key) = eventually(WAIT, &format!("Secret {ns}/api-tls"), || {
            let api: Api<Secret> = Api::namespaced(admin.clone(), ns);
            async move {
                let secret = api.get_opt("api-tls").await.ok().flatten()?;
                if secret.type_.as_deref() != Some(names::TLS_SECRET_TYPE) {
                    return None;
                }
                let data = secret.data?;
                Some((
                    data.get(names::TLS_CRT)?.0.clone(),
                    data.get(names::TLS_KEY)?.0.clone(),
                ))
            }
        })
        .await;
        let bundle = eventually(
            WAIT,
            &format!("{} in {ns}/trust", names::SERVICE_CA_CRT),
            || {
                let api: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
                async move {
                    api.get_opt("trust")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|cm| cm.data?.get(names::SERVICE_CA_CRT).cloned())
                }
            },
        )
        .await;
        let dns_name = format!("api.{ns}.svc");
        service_ca_testing::tls::verify_chain(&bundle, &chain, &dns_name)
            .unwrap_or_else(|e| panic!("{ns}/api-tls against the injected bundle: {e}"));
        service_ca_testing::tls::verify_chain(&ca_bundle, &chain, &dns_name)
            .unwrap_or_else(|e| panic!("{ns}/api-tls against signing-cabundle: {e}"));
        service_ca_testing::tls::verify_key_matches(&chain, &key)
            .unwrap_or_else(|e| panic!("{ns}/api-tls: {e}"));
    }

    let leases: Api<Lease> = Api::namespaced(admin.clone(), &pod_namespace);
    let holder = lease_holder(&leases).await;
    assert_eq!(
        holder.as_deref(),
        Some(POD_NAME),
        "the Lease is held by the POD_NAME the Deployment's env sets"
    );
    // As the leader, ready means a usable CA and synced caches.
    assert_eq!(
        http_get(probe_addr, &readiness).await.map(|(s, _)| s),
        Some(200),
        "readiness probe {readiness} of the leader"
    );
    let checked_after = started.elapsed();

    // 4. SIGTERM: exit 0 within seconds, Lease released.
    terminate(&mut child, EXIT_WAIT).await;
    let holder = lease_holder(&leases).await;
    assert!(
        holder.as_deref().unwrap_or_default().is_empty(),
        "the Lease is released on shutdown, holder is {holder:?}"
    );

    // Every permission the binary needs cluster-wide is in deploy/base/rbac.yaml.
    check_log(&log_path);
    eprintln!(
        "deployed: testenv {:.1}s, ready after {:.1}s, checks done after {:.1}s, total {:.1}s ({})",
        env.startup.as_secs_f64(),
        ready_after.as_secs_f64(),
        checked_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        isolation.describe(),
    );
}

/// `kubectl kustomize deploy/base` with the control plane's own kubectl.
fn render_base() -> Vec<Value> {
    let objects = service_ca_testing::kustomize("deploy/base");
    assert!(!objects.is_empty(), "deploy/base renders no objects");
    objects
}

/// Server-side applies every object in order; fails listing every object that did not apply.
async fn apply_all(client: &Client, objects: &[Value]) {
    let failures = service_ca_testing::apply_all(client, objects, FIELD_MANAGER).await;
    assert!(
        failures.is_empty(),
        "deploy/base does not apply cleanly:\n  {}",
        failures.join("\n  ")
    );
}

/// No kubelet runs here, so the Deployment never gets Pods: create one from its template with
/// dryRun to check that admission (the namespace's Pod Security level, the ServiceAccount) accepts
/// it, and that the namespace does enforce Pod Security (a privileged variant is refused).
async fn pod_template_is_admitted(client: &Client, deployment: &Deployment, namespace: &str) {
    let template = deployment
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .expect("a pod template");
    let mut pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        ..Default::default()
    };
    pod.metadata.name = Some(format!("{POD_NAME}-dry-run"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry_run, &pod)
        .await
        .unwrap_or_else(|e| panic!("admission refuses the Deployment's pod template: {e}"));
    let mut privileged = pod.clone();
    if let Some(spec) = privileged.spec.as_mut() {
        for c in &mut spec.containers {
            c.security_context = None;
        }
    }
    match pods.create(&dry_run, &privileged).await {
        Err(kube::Error::Api(e)) if e.message.contains("PodSecurity") => {}
        other => panic!(
            "namespace {namespace} should enforce Pod Security (a pod without container \
             securityContext must be refused), got {other:?}"
        ),
    }
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get(names::DEFAULT_LEASE)
        .await
        .unwrap_or_else(|e| panic!("Lease {}: {e}", names::DEFAULT_LEASE))
        .spec
        .and_then(|s| s.holder_identity)
}

/// How the child gets its own `/var/run` without touching the machine's.
#[derive(Clone, Copy)]
enum Isolation {
    /// A private mount namespace (root, or CAP_SYS_ADMIN).
    MountNamespace,
    /// A user namespace mapping the caller to root, with a private mount namespace inside.
    UserNamespace,
}

impl Isolation {
    /// Binds `$0` over `/var/run` inside the child's private mount namespace, then execs `$@`.
    const SCRIPT: &'static str = r#"mount --bind "$0" /var/run && exec "$@""#;

    fn flags(self) -> &'static [&'static str] {
        match self {
            Self::MountNamespace => &["--mount", "--propagation", "private"],
            Self::UserNamespace => &[
                "--user",
                "--map-root-user",
                "--mount",
                "--propagation",
                "private",
            ],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::MountNamespace => "unshare --mount",
            Self::UserNamespace => "unshare --user --map-root-user --mount",
        }
    }

    fn command(self, root: &Path, program: &Path, args: &[String]) -> tokio::process::Command {
        self.std_command(root, program, args).into()
    }

    fn std_command(self, root: &Path, program: &Path, args: &[String]) -> std::process::Command {
        let mut command = std::process::Command::new("unshare");
        command
            .args(self.flags())
            .args(["--", "sh", "-c", Self::SCRIPT])
            .arg(root)
            .arg(program)
            .args(args);
        command
    }

    /// The first mechanism that works here; fails the test (never skips it) when none does.
    fn find(root: &Path) -> Self {
        let host_view = Path::new("/var/run").join(SERVICEACCOUNT_DIR);
        let host_had_it = host_view.exists();
        let mut errors = Vec::new();
        for isolation in [Self::MountNamespace, Self::UserNamespace] {
            let check = format!("test -r /var/run/{SERVICEACCOUNT_DIR}/token");
            let output = isolation
                .std_command(root, Path::new("sh"), &["-c".into(), check])
                .output();
            assert_eq!(
                host_view.exists(),
                host_had_it,
                "the probe of `{}` changed the machine's /var/run",
                isolation.describe()
            );
            match output {
                Ok(o) if o.status.success() => return isolation,
                Ok(o) => errors.push(format!(
                    "{}: {} {}",
                    isolation.describe(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => errors.push(format!("{}: cannot run unshare: {e}", isolation.describe())),
            }
        }
        panic!(
            "cannot give service-ca its in-cluster files at /var/run/{SERVICEACCOUNT_DIR} without \
             touching this machine. This test needs unshare(1) and mount(8) from util-linux and \
             either root (CAP_SYS_ADMIN, for a private mount namespace) or unprivileged user \
             namespaces (user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1 where \
             that exists; container runtimes may need seccomp/AppArmor to allow unshare).\n  {}",
            errors.join("\n  ")
        );
    }
}
