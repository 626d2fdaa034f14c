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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, Secret, Service};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use service_ca_controller::names;
use service_ca_testing::{TestEnv, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait of this test is bounded by this.
const WAIT: Duration = Duration::from_secs(60);
/// How long the process may take to exit after SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// The value `fieldRef: metadata.name` would give in a real Pod.
const POD_NAME: &str = "service-ca-5f7c9d8b6d-e2e01";
/// Field manager of the test's server-side applies.
const FIELD_MANAGER: &str = "service-ca-deployed-test";
/// Where kube-rs's in-cluster configuration reads the token, `ca.crt` and `namespace` (fixed in
/// kube-client 5.0.0 `config/incluster_config.rs`; no environment variable overrides it).
const SERVICEACCOUNT_DIR: &str = "secrets/kubernetes.io/serviceaccount";
/// The namespaces issuance and injection are checked in.
const APP_NAMESPACES: [&str; 2] = ["deployed-app-one", "deployed-app-two"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_deployment_runs_in_cluster() {
    let started = Instant::now();
    // A dedicated control plane, never SERVICE_CA_TEST_KUBECONFIG: see the module docs.
    let env = TestEnv::start(None).expect("a dedicated testenv control plane");
    let admin = env.client().await.expect("admin client");
    let server = api_server(env.kubeconfig());

    // 1. Render and apply deploy/base.
    let objects = render_base();
    apply_all(&admin, &objects).await;
    let deployment: Deployment = serde_json::from_value(
        objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("deploy/base renders a Deployment")
            .clone(),
    )
    .expect("the rendered Deployment parses");
    let pod_namespace = deployment
        .metadata
        .namespace
        .clone()
        .expect("the Deployment has a namespace");
    let pod_spec = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("the Deployment has a pod template");
    let service_account = pod_spec
        .service_account_name
        .clone()
        .expect("the pod template names its ServiceAccount");
    let container = pod_spec
        .containers
        .iter()
        .find(|c| c.name == "service-ca")
        .expect("the pod template has a container `service-ca`")
        .clone();
    pod_template_is_admitted(&admin, &deployment, &pod_namespace).await;

    // 2. The process, as the container would run it.
    let args = container.args.clone().unwrap_or_default();
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespace")),
        "the Deployment is expected to run cluster-wide: {args:?}"
    );
    let (args, admin_addr) = admin_address(&container, args);
    let pod_env = container_env(&container);
    let token =
        service_ca_testing::service_account_token(&admin, &pod_namespace, &service_account).await;
    let scratch = Scratch::new();
    let root = scratch.path.join("var-run");
    let sa_dir = root.join(SERVICEACCOUNT_DIR);
    std::fs::create_dir_all(&sa_dir).expect("service account dir");
    std::fs::write(sa_dir.join("token"), &token).expect("token file");
    std::fs::write(sa_dir.join("ca.crt"), &server.ca_pem).expect("ca.crt file");
    std::fs::write(sa_dir.join("namespace"), &pod_namespace).expect("namespace file");
    let home = scratch.path.join("home");
    std::fs::create_dir_all(&home).expect("empty HOME");
    let isolation = Isolation::find(&root);

    let log_path = scratch.path.join("service-ca.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // The test-profile build of the same source (cargo builds it for this crate's integration
    // tests): CI does not spend its budget on a separate `--release` build for this one test.
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
        .envs(pod_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn service-ca under unshare");
    let _dump = DumpOnPanic(log_path.clone());

    // 3. Ready, then issuance and injection in two namespaces.
    let probe_addr = loopback(admin_addr);
    let readiness = http_probe_path(&container, "readiness");
    let liveness = http_probe_path(&container, "liveness");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("service-ca exited before it was ready: {status}");
        }
        if let Some((200, _)) = http_get(probe_addr, &readiness).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{readiness} on {probe_addr} did not answer 200 within {WAIT:?}: {:?}",
            http_get(probe_addr, &readiness).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let pid = child.id().expect("service-ca is running");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}: {kill}");
    let status = tokio::time::timeout(EXIT_WAIT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("service-ca did not exit within {EXIT_WAIT:?} of SIGTERM"))
        .expect("wait for service-ca");
    assert!(
        status.success(),
        "service-ca exited with {status} on SIGTERM"
    );
    let holder = lease_holder(&leases).await;
    assert!(
        holder.as_deref().unwrap_or_default().is_empty(),
        "the Lease is released on shutdown, holder is {holder:?}"
    );

    let output = std::fs::read_to_string(&log_path).expect("read the log");
    assert!(
        !output.is_empty(),
        "service-ca logged nothing (expected JSON logs)"
    );
    if let Some(line) = output.lines().find(|l| l.contains("PRIVATE KEY")) {
        panic!("key material in the log: {line}");
    }
    // Every permission the binary needs cluster-wide is in deploy/base/rbac.yaml.
    if let Some(line) = output
        .lines()
        .find(|l| l.contains(r#""level":"ERROR""#) || l.to_lowercase().contains("forbidden"))
    {
        panic!("service-ca logged an error or a refused request: {line}");
    }
    eprintln!(
        "deployed: testenv {:.1}s, ready after {:.1}s, checks done after {:.1}s, total {:.1}s ({})",
        env.startup.as_secs_f64(),
        ready_after.as_secs_f64(),
        checked_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        isolation.describe(),
    );
}

/// The API server as the Pod would reach it, from the kubeconfig testenv writes: its serving
/// certificate is issued by the kubeconfig's CA for 127.0.0.1 (and `kubernetes.default.svc`).
struct ApiServer {
    host: String,
    port: u16,
    ca_pem: Vec<u8>,
}

fn api_server(kubeconfig: &Path) -> ApiServer {
    let text = std::fs::read_to_string(kubeconfig).expect("read the testenv kubeconfig");
    let config: Value = serde_saphyr::from_str(&text).expect("the kubeconfig parses");
    let cluster = &config["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("a server URL");
    let authority = server
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("an https server URL: {server}"))
        .trim_end_matches('/');
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("a host:port server URL: {server}"));
    let ca: k8s_openapi::ByteString =
        serde_json::from_value(cluster["certificate-authority-data"].clone())
            .expect("base64 certificate-authority-data in the kubeconfig");
    ApiServer {
        host: host.trim_start_matches('[').trim_end_matches(']').into(),
        port: port.parse().expect("a numeric API server port"),
        ca_pem: ca.0,
    }
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

/// The admin address from the container's args. If its port is taken on this machine, only that
/// address is replaced (same host, a free port) and the test says so.
fn admin_address(container: &Container, mut args: Vec<String>) -> (Vec<String>, SocketAddr) {
    let position = args
        .iter()
        .position(|a| a == "--admin-addr" || a.starts_with("--admin-addr="))
        .expect("the Deployment sets --admin-addr (the default binds to 127.0.0.1 only)");
    let value_index = if args[position] == "--admin-addr" {
        position + 1
    } else {
        position
    };
    let raw = args[value_index]
        .trim_start_matches("--admin-addr=")
        .to_string();
    let addr: SocketAddr = raw
        .parse()
        .unwrap_or_else(|e| panic!("--admin-addr {raw}: {e}"));
    let probe_port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("admin"))
        .map(|p| p.container_port)
        .expect("the container declares the `admin` port the probes use");
    assert_eq!(
        i32::from(addr.port()),
        probe_port,
        "--admin-addr and the `admin` containerPort disagree"
    );
    if std::net::TcpListener::bind(addr).is_ok() {
        return (args, addr);
    }
    let free = std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    eprintln!(
        "deployed: {addr} is in use on this machine; overriding only the admin address with {free}"
    );
    args[value_index] = if value_index == position {
        format!("--admin-addr={free}")
    } else {
        free.to_string()
    };
    (args, free)
}

/// The container's env, with `fieldRef: metadata.name` resolved to [`POD_NAME`].
fn container_env(container: &Container) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from))
                    if from.field_ref.as_ref().map(|f| f.field_path.as_str())
                        == Some("metadata.name") =>
                {
                    POD_NAME.to_string()
                }
                (None, None) => String::new(),
                (None, Some(from)) => {
                    panic!(
                        "env {}: valueFrom {from:?} is not supported by this test",
                        var.name
                    )
                }
            };
            (var.name.clone(), value)
        })
        .collect()
}

/// The HTTP path of the container's readiness or liveness probe.
fn http_probe_path(container: &Container, which: &str) -> String {
    let probe = match which {
        "readiness" => container.readiness_probe.as_ref(),
        _ => container.liveness_probe.as_ref(),
    };
    probe
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
        .unwrap_or_else(|| panic!("the container has an HTTP {which} probe"))
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

/// A scratch directory, removed when the test ends.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "service-ca-deployed-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Self { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Prints the child's output when the test fails.
struct DumpOnPanic(PathBuf);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let output = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!(
                "----- service-ca output -----\n{output}----- end of service-ca output -----"
            );
        }
    }
}

/// The address to connect to for a listener bound to `addr` (unspecified → loopback).
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        ip if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// A plain HTTP/1.1 GET; the status code and the whole response, or None if it failed.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}
