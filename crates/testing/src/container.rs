//! Running the service-ca binary the way the shipped Deployment's container runs it, without a
//! kubelet: the container's `args` and `env` from the rendered `deploy/base`, in-cluster
//! configuration (the `KUBERNETES_SERVICE_*` variables and the ServiceAccount files), and the
//! HTTP probes the kubelet would send. Shared by the e2e tests of the deployed binary and of the
//! release image. Test support: these helpers panic (fail the test) with a message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value `fieldRef: metadata.name` resolves to (a real Pod's name would be like it).
pub const POD_NAME: &str = "service-ca-5f7c9d8b6d-e2e01";

/// Where kube-rs's in-cluster configuration reads the token, `ca.crt` and `namespace`, relative
/// to `/var/run` (fixed in kube-client 5.0.0 `config/incluster_config.rs`; no environment
/// variable overrides it).
pub const SERVICEACCOUNT_DIR: &str = "secrets/kubernetes.io/serviceaccount";

/// The API server as a Pod would reach it, from the kubeconfig testenv writes: its serving
/// certificate is issued by the kubeconfig's CA for 127.0.0.1 (and `kubernetes.default.svc`).
pub struct ApiServer {
    /// `KUBERNETES_SERVICE_HOST` (an IP address: in-cluster configuration resolves no names).
    pub host: String,
    /// `KUBERNETES_SERVICE_PORT`.
    pub port: u16,
    /// The ServiceAccount mount's `ca.crt`.
    pub ca_pem: Vec<u8>,
}

impl ApiServer {
    /// The server, port and CA of the first cluster in `kubeconfig`.
    pub fn from_kubeconfig(kubeconfig: &Path) -> Self {
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
        Self {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port: port.parse().expect("a numeric API server port"),
            ca_pem: ca.0,
        }
    }

    /// Writes the ServiceAccount mount (`token`, `ca.crt`, `namespace`) into `dir`, creating it.
    pub fn write_service_account_files(&self, dir: &Path, token: &str, namespace: &str) {
        std::fs::create_dir_all(dir).expect("service account dir");
        std::fs::write(dir.join("token"), token).expect("token file");
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).expect("ca.crt file");
        std::fs::write(dir.join("namespace"), namespace).expect("namespace file");
    }
}

/// The `service-ca` container of the Deployment in a rendering of `deploy/base`.
pub struct ShippedContainer {
    /// The rendered Deployment.
    pub deployment: Deployment,
    /// Its namespace (the Pod's).
    pub namespace: String,
    /// The pod template's ServiceAccount.
    pub service_account: String,
    /// The container named `service-ca`.
    pub container: Container,
}

impl ShippedContainer {
    /// Finds the Deployment and its `service-ca` container among the rendered `objects`.
    pub fn from_objects(objects: &[Value]) -> Self {
        let deployment: Deployment = serde_json::from_value(
            objects
                .iter()
                .find(|o| o["kind"] == "Deployment")
                .expect("deploy/base renders a Deployment")
                .clone(),
        )
        .expect("the rendered Deployment parses");
        let namespace = deployment
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
        Self {
            deployment,
            namespace,
            service_account,
            container,
        }
    }

    /// The container's args, and the admin (probe) address they configure. If that port is taken
    /// on this machine, only that address is replaced (same host, a free port), and it says so.
    pub fn args_and_admin_address(&self) -> (Vec<String>, SocketAddr) {
        let mut args = self.container.args.clone().unwrap_or_default();
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
        let probe_port = self
            .container
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
            "{addr} is in use on this machine; overriding only the admin address with {free}"
        );
        args[value_index] = if value_index == position {
            format!("--admin-addr={free}")
        } else {
            free.to_string()
        };
        (args, free)
    }

    /// The container's env, with `fieldRef: metadata.name` resolved to [`POD_NAME`].
    pub fn env(&self) -> Vec<(String, String)> {
        self.container
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

    /// The HTTP path of the container's readiness probe.
    pub fn readiness_path(&self) -> String {
        probe_path(self.container.readiness_probe.as_ref(), "readiness")
    }

    /// The HTTP path of the container's liveness probe.
    pub fn liveness_path(&self) -> String {
        probe_path(self.container.liveness_probe.as_ref(), "liveness")
    }
}

fn probe_path(probe: Option<&k8s_openapi::api::core::v1::Probe>, which: &str) -> String {
    probe
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
        .unwrap_or_else(|| panic!("the container has an HTTP {which} probe"))
}

/// Probes `path` on `addr` like the kubelet's readiness probe until it answers 200; fails the
/// test when the process exits first or `timeout` passes. Returns how long it took.
pub async fn wait_until_ready(
    child: &mut tokio::process::Child,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("service-ca exited before it was ready: {status}");
        }
        if let Some((200, _)) = http_get(addr, path).await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{path} on {addr} did not answer 200 within {timeout:?}: {:?}",
            http_get(addr, path).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends SIGTERM to `child` and waits at most `timeout` for it to exit with status 0.
pub async fn terminate(child: &mut tokio::process::Child, timeout: Duration) {
    let pid = child.id().expect("service-ca is running");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}: {kill}");
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .unwrap_or_else(|_| panic!("service-ca did not exit within {timeout:?} of SIGTERM"))
        .expect("wait for service-ca");
    assert!(
        status.success(),
        "service-ca exited with {status} on SIGTERM"
    );
}

/// The address to connect to for a listener bound to `addr` (unspecified → loopback).
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

/// A plain HTTP/1.1 GET; the status code and the whole response, or None if it failed.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
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

/// A scratch directory under the system's temporary directory, removed when dropped.
pub struct Scratch {
    /// The directory.
    pub path: PathBuf,
}

impl Scratch {
    /// A new, empty directory named after `prefix`, this process and the clock.
    pub fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Self { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Prints the file (a child's output) when the test fails.
pub struct DumpOnPanic(pub PathBuf);

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

/// Fails the test if the log of a run has key material, an error or a refused request (every
/// permission the binary needs is in deploy/base/rbac.yaml). Returns the log.
pub fn check_log(path: &Path) -> String {
    let output = std::fs::read_to_string(path).expect("read the log");
    assert!(
        !output.is_empty(),
        "service-ca logged nothing (expected JSON logs)"
    );
    if let Some(line) = output.lines().find(|l| l.contains("PRIVATE KEY")) {
        panic!("key material in the log: {line}");
    }
    if let Some(line) = output
        .lines()
        .find(|l| l.contains(r#""level":"ERROR""#) || l.to_lowercase().contains("forbidden"))
    {
        panic!("service-ca logged an error or a refused request: {line}");
    }
    output
}
