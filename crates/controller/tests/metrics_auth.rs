//! `/metrics` behind authentication (issue 12), against a real kube-apiserver:
//!
//! - the metrics port opens only once the certificate files exist; the certificate is the metrics
//!   Service's own serving Secret, issued by the controller under test for the Service in
//!   `deploy/base/service.yaml`, verified by the client against the service CA bundle;
//! - bearer tokens are reviewed with TokenReview + SubjectAccessReview, which needs the
//!   `system:auth-delegator` binding of `deploy/base/metrics-rbac.yaml` (503 without it); a
//!   ServiceAccount bound to `service-ca-metrics-reader` gets 200, another 403, no or a garbage
//!   token 401; a revoked binding is refused once the cached verdict expires;
//! - plain HTTP gets no HTTP answer on the metrics port; the probes stay plain HTTP on their own
//!   port, which does not serve `/metrics`;
//! - a re-issued certificate is picked up from the files without a restart;
//! - the probe listener caps its connections and closes connections that do not send a request.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{WAIT, service_account_client, test_config, wait_secret};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use service_ca_controller::{LeaseTiming, Metrics, MetricsOptions, RunOptions, names};
use service_ca_testing::{TestContext, eventually, workspace_root};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The Service and Secret of `deploy/base/service.yaml`.
const METRICS_SERVICE: &str = "service-ca-metrics";
const METRICS_SECRET: &str = "service-ca-metrics-tls";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A replica as the binary runs it, as the test namespace's `service-ca` ServiceAccount.
fn start_replica(
    client: Client,
    ctx: &TestContext,
    admin_port: u16,
    metrics: Option<MetricsOptions>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let opts = RunOptions {
        identity: "replica-a".into(),
        lease_namespace: ctx.namespace.clone(),
        lease_name: "service-ca-controller-lock".into(),
        lease_timing: LeaseTiming::default(),
        admin_addr: Some(local(admin_port)),
        metrics,
    };
    let run = service_ca_controller::run(
        client,
        test_config(ctx),
        opts,
        Arc::new(Metrics::new()),
        shutdown.clone(),
    );
    let task = tokio::spawn(async move {
        run.await.expect("valid configuration");
    });
    (shutdown, task)
}

/// What came back from one exchange.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    if !text.starts_with("HTTP/1.") {
        return None;
    }
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some(Response {
        status: head.split_whitespace().nth(1)?.parse().ok()?,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// Sends `request` and reads until the server closes (errors after some bytes keep those bytes).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> Vec<u8> {
    let mut raw = Vec::new();
    if stream.write_all(request.as_bytes()).await.is_err() {
        return raw;
    }
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

fn get_request(path: &str, authorization: Option<&str>) -> String {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

/// Plain HTTP GET; the raw bytes the server sent back (empty if the connection failed).
async fn http_raw(port: u16, path: &str) -> Vec<u8> {
    let exchange = async {
        let Ok(mut stream) = TcpStream::connect(local(port)).await else {
            return Vec::new();
        };
        exchange(&mut stream, &get_request(path, None)).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_default()
}

async fn http_get(port: u16, path: &str) -> Option<Response> {
    parse_response(&http_raw(port, path).await)
}

/// HTTPS GET `/metrics` trusting only `bundle_pem`, for `server_name`; the response and the leaf
/// certificate the server presented. Err: the connection or the handshake failed.
async fn https_get(
    port: u16,
    bundle_pem: &str,
    server_name: &str,
    authorization: Option<&str>,
) -> Result<(Option<Response>, CertificateDer<'static>), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let attempt = async {
        let tcp = TcpStream::connect(local(port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
            .ok_or("no peer certificate")?;
        let raw = exchange(&mut tls, &get_request("/metrics", authorization)).await;
        Ok((parse_response(&raw), leaf))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The status of an authorized-or-not HTTPS GET `/metrics` (None: no HTTP response).
async fn metrics_status(
    port: u16,
    bundle: &str,
    server_name: &str,
    authorization: Option<&str>,
) -> Option<Response> {
    https_get(port, bundle, server_name, authorization)
        .await
        .unwrap_or_else(|e| panic!("HTTPS /metrics: {e}"))
        .0
}

/// A token of ServiceAccount `name` from the TokenRequest API, as the kubelet would project it.
async fn token_for(ctx: &TestContext, name: &str) -> String {
    let sas: Api<ServiceAccount> = ctx.api();
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).expect("service account"),
    )
    .await
    .unwrap_or_else(|e| panic!("ServiceAccount {name}: {e}"));
    service_ca_testing::service_account_token(&ctx.client, &ctx.namespace, name).await
}

fn rbac_resource(kind: &str) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "rbac.authorization.k8s.io".into(),
        version: "v1".into(),
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    }
}

/// Applies `deploy/base/metrics-rbac.yaml` for the test namespace: cluster-scoped names get the
/// namespace as a suffix (the context deletes them at the end), subjects move to the namespace.
/// Returns the name of the metrics-reader ClusterRole.
async fn apply_metrics_rbac(ctx: &TestContext) -> String {
    let path = workspace_root().join("deploy/base/metrics-rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/metrics-rbac.yaml");
    let ns = &ctx.namespace;
    let pp = PatchParams::apply("service-ca-test").force();
    let mut reader = None;
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).expect("metrics-rbac.yaml parses");
    for mut value in docs {
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let original = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = format!("{original}-{ns}");
        value["metadata"]["name"] = json!(name);
        if let Some(subjects) = value.get_mut("subjects").and_then(|s| s.as_array_mut()) {
            for subject in subjects {
                subject["namespace"] = json!(ns);
            }
        }
        if kind == "ClusterRole" && original == "service-ca-metrics-reader" {
            reader = Some(name.clone());
        }
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &rbac_resource(&kind));
        api.patch(&name, &pp, &Patch::Apply(value))
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }
    reader.expect("metrics-rbac.yaml defines the ClusterRole service-ca-metrics-reader")
}

/// Binds ServiceAccount `sa` of the test namespace to ClusterRole `role`; returns the binding name.
async fn bind(ctx: &TestContext, sa: &str, role: &str) -> String {
    let name = format!("{sa}-metrics-{}", ctx.namespace);
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ctx.namespace}],
    });
    let api: Api<DynamicObject> =
        Api::all_with(ctx.client.clone(), &rbac_resource("ClusterRoleBinding"));
    api.patch(
        &name,
        &PatchParams::apply("service-ca-test").force(),
        &Patch::Apply(binding),
    )
    .await
    .unwrap_or_else(|e| panic!("ClusterRoleBinding {name}: {e}"));
    name
}

/// The metrics Service of `deploy/base/service.yaml`, in the test namespace.
fn shipped_metrics_service() -> Service {
    let path = workspace_root().join("deploy/base/service.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/service.yaml");
    let mut service: Service = serde_saphyr::from_str(&text).expect("service.yaml parses");
    assert_eq!(service.metadata.name.as_deref(), Some(METRICS_SERVICE));
    service.metadata.namespace = None;
    service
}

/// Writes the Secret's `tls.crt` and `tls.key` into `dir` as the kubelet's atomic writer would
/// (each file replaced by a rename). Returns the certificate chain.
fn mount(secret: &Secret, dir: &Path) -> Vec<u8> {
    let data = secret.data.as_ref().expect("secret data");
    for key in [names::TLS_KEY, names::TLS_CRT] {
        let value = &data.get(key).unwrap_or_else(|| panic!("{key}")).0;
        let tmp = dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, value).expect("write");
        std::fs::rename(&tmp, dir.join(key)).expect("rename");
    }
    data[names::TLS_CRT].0.clone()
}

fn first_der(chain_pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .expect("a certificate")
        .expect("PEM")
}

/// A scratch directory, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "service-ca-{tag}-{}-{:08x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Self(path)
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn metrics_over_https_for_authorized_tokens_only() {
    let ctx = TestContext::new("metrics-auth").await.unwrap();
    let client = service_account_client(&ctx).await;
    let files = Scratch::new("metrics-tls");
    let (admin_port, metrics_port) = (free_port(), free_port());
    let (shutdown, task) = start_replica(
        client,
        &ctx,
        admin_port,
        Some(MetricsOptions {
            addr: local(metrics_port),
            cert_file: files.0.join(names::TLS_CRT),
            key_file: files.0.join(names::TLS_KEY),
        }),
    );

    // Probes: plain HTTP on their own port, which does not serve /metrics.
    eventually(WAIT, "/readyz 200", || async {
        http_get(admin_port, "/readyz")
            .await
            .filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(
        http_get(admin_port, "/healthz").await.map(|r| r.status),
        Some(200)
    );
    assert_eq!(
        http_get(admin_port, "/metrics").await.map(|r| r.status),
        Some(404)
    );
    // No certificate yet: nothing listens on the metrics port.
    assert!(
        TcpStream::connect(local(metrics_port)).await.is_err(),
        "the metrics port is open before a certificate exists"
    );

    // The metrics Service as shipped: service-ca issues its own serving Secret, the "kubelet"
    // mounts it.
    let services: Api<Service> = ctx.api();
    services
        .create(&PostParams::default(), &shipped_metrics_service())
        .await
        .unwrap();
    let secrets: Api<Secret> = ctx.api();
    let secret = wait_secret(
        &secrets,
        METRICS_SECRET,
        "the metrics serving Secret",
        |s| {
            s.data
                .as_ref()
                .is_some_and(|d| d.contains_key(names::TLS_CRT))
        },
    )
    .await;
    let chain = mount(&secret, &files.0);
    let bundles: Api<ConfigMap> = ctx.api();
    let bundle = eventually(WAIT, "the CA bundle", || async {
        bundles
            .get_opt(names::DEFAULT_BUNDLE_CONFIGMAP)
            .await
            .ok()
            .flatten()
            .and_then(|cm| cm.data?.get(names::CA_BUNDLE_CRT).cloned())
    })
    .await;
    let server_name = format!("{METRICS_SERVICE}.{}.svc", ctx.namespace);

    // HTTPS, verified against the service CA bundle for the Service's DNS name; no token: 401.
    let started = Instant::now();
    let (response, leaf) = eventually(WAIT, "the metrics port to serve TLS", || async {
        https_get(metrics_port, &bundle, &server_name, None)
            .await
            .ok()
    })
    .await;
    eprintln!(
        "metrics port open {:?} after the files were written",
        started.elapsed()
    );
    assert_eq!(leaf, first_der(&chain), "the mounted certificate is served");
    // A client that connects and never starts the TLS handshake is closed after the connection
    // deadline (10 s); checked at the end.
    let stalled = tokio::spawn(async move {
        let mut stream = TcpStream::connect(local(metrics_port)).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await;
        (read.map(|r| r.map(|n| n == 0)), started.elapsed())
    });
    let response = response.expect("an HTTP response");
    assert_eq!(response.status, 401, "{response:?}");
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{response:?}"
    );
    assert!(!response.body.contains("service_ca_"), "{response:?}");

    // A client that does not trust the service CA refuses the certificate.
    let other_ca = unrelated_ca();
    assert!(
        https_get(metrics_port, &other_ca, &server_name, None)
            .await
            .is_err()
    );

    // Plain HTTP to the metrics port gets no HTTP answer.
    let raw = http_raw(metrics_port, "/metrics").await;
    assert!(
        parse_response(&raw).is_none(),
        "plain HTTP answered on the metrics port: {:?}",
        String::from_utf8_lossy(&raw)
    );

    // Without system:auth-delegator the controller cannot review tokens: 503, not cached.
    let scraper = token_for(&ctx, "scraper").await;
    let scraper_auth = format!("Bearer {scraper}");
    let response = metrics_status(metrics_port, &bundle, &server_name, Some(&scraper_auth)).await;
    assert_eq!(response.map(|r| r.status), Some(503));

    // deploy/base/metrics-rbac.yaml: the controller may review, scrapers may be granted /metrics.
    let reader_role = apply_metrics_rbac(&ctx).await;
    let binding = bind(&ctx, "scraper", &reader_role).await;
    let response = eventually(WAIT, "200 for a metrics reader", || async {
        metrics_status(metrics_port, &bundle, &server_name, Some(&scraper_auth))
            .await
            .filter(|r| r.status == 200)
    })
    .await;
    assert!(
        response.body.contains("service_ca_leader 1"),
        "{response:?}"
    );
    assert!(
        response
            .body
            .contains("service_ca_serving_cert_expiry_time_seconds{"),
        "{response:?}"
    );
    assert!(
        response.head.to_ascii_lowercase().contains("openmetrics"),
        "{response:?}"
    );

    // Authenticated but not allowed: 403 naming the user.
    let bystander = token_for(&ctx, "bystander").await;
    let response = metrics_status(
        metrics_port,
        &bundle,
        &server_name,
        Some(&format!("Bearer {bystander}")),
    )
    .await
    .expect("an HTTP response");
    assert_eq!(response.status, 403, "{response:?}");
    assert!(
        response.body.contains(&format!(
            "system:serviceaccount:{}:bystander",
            ctx.namespace
        )),
        "{response:?}"
    );
    assert!(!response.body.contains("service_ca_"), "{response:?}");

    // Invalid tokens and other schemes: 401.
    for authorization in [
        "Bearer not-a-token",
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        &format!("Basic {scraper}"),
        "Bearer ",
    ] {
        let response = metrics_status(metrics_port, &bundle, &server_name, Some(authorization))
            .await
            .expect("an HTTP response");
        assert_eq!(response.status, 401, "{authorization:.20}: {response:?}");
    }

    // Revoked: refused once the cached verdict has expired (10 s).
    let api: Api<DynamicObject> =
        Api::all_with(ctx.client.clone(), &rbac_resource("ClusterRoleBinding"));
    api.delete(&binding, &DeleteParams::default())
        .await
        .unwrap();
    let revoked = Instant::now();
    eventually(WAIT, "403 after the binding is deleted", || async {
        metrics_status(metrics_port, &bundle, &server_name, Some(&scraper_auth))
            .await
            .filter(|r| r.status == 403)
    })
    .await;
    eprintln!("revocation effective after {:?}", revoked.elapsed());

    // A re-issued certificate is served without a restart.
    let old_leaf = leaf;
    let old_version = secret.metadata.resource_version.clone();
    secrets
        .delete(METRICS_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let reissued = wait_secret(&secrets, METRICS_SECRET, "the re-issued Secret", |s| {
        s.metadata.resource_version != old_version
            && s.data
                .as_ref()
                .is_some_and(|d| d.contains_key(names::TLS_CRT))
    })
    .await;
    let new_leaf = first_der(&mount(&reissued, &files.0));
    assert_ne!(new_leaf, old_leaf);
    eventually(WAIT, "the re-issued certificate is served", || async {
        let (_, leaf) = https_get(metrics_port, &bundle, &server_name, None)
            .await
            .ok()?;
        (leaf == new_leaf).then_some(())
    })
    .await;

    // Garbage in the files: the current certificate stays in use.
    std::fs::write(files.0.join(names::TLS_CRT), b"garbage").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, leaf) = https_get(metrics_port, &bundle, &server_name, None)
        .await
        .expect("still serving");
    assert_eq!(leaf, new_leaf);

    let (read, stalled_for) = stalled.await.unwrap();
    assert!(
        matches!(read, Ok(Ok(true)) | Ok(Err(_))),
        "a stalled TLS client is closed: {read:?}"
    );
    assert!(
        (Duration::from_secs(9)..=Duration::from_secs(12)).contains(&stalled_for),
        "a stalled TLS client was closed after {stalled_for:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run ends after shutdown")
        .unwrap();
    assert!(
        TcpStream::connect(local(metrics_port)).await.is_err(),
        "the metrics port is closed after shutdown"
    );
}

/// The PEM certificate of a CA that has nothing to do with the service CA.
fn unrelated_ca() -> String {
    let cfg = service_ca_pki::CaConfig {
        key_algorithm: service_ca_pki::KeyAlgorithm::EcdsaP256,
        ..service_ca_pki::CaConfig::default()
    };
    service_ca_pki::SigningCa::create(&cfg, time::OffsetDateTime::now_utc())
        .expect("a CA")
        .tls_crt_pem()
}

#[tokio::test]
async fn probe_port_caps_connections_and_drops_idle_ones() {
    let ctx = TestContext::new("metrics-probe").await.unwrap();
    let client = service_account_client(&ctx).await;
    let admin_port = free_port();
    let (shutdown, task) = start_replica(client, &ctx, admin_port, None);
    eventually(WAIT, "/healthz 200", || async {
        http_get(admin_port, "/healthz")
            .await
            .filter(|r| r.status == 200)
    })
    .await;

    // 64 connections that send nothing hold every slot: the next request waits, unaccepted.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(local(admin_port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        (http_get(admin_port, "/healthz").await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "a 65th connection was served");
    // One slot frees up: the waiting request is served.
    drop(idle.pop());
    let (response, took) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(response.map(|r| r.status), Some(200));
    assert!(took >= Duration::from_secs(1), "{took:?}");

    // Connections that do not complete their request headers are closed (5 s header timeout).
    let mut slow = TcpStream::connect(local(admin_port)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(12), slow.read(&mut buf))
        .await
        .expect("the server closes a connection that never completes its headers");
    let closed_after = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)) || !buf.starts_with(b"HTTP/1.1 200"),
        "{read:?}"
    );
    assert!(
        closed_after >= Duration::from_secs(4) && closed_after <= Duration::from_secs(11),
        "closed after {closed_after:?}"
    );
    eprintln!("slow client closed after {closed_after:?}");
    // The idle ones went the same way, and the probe still answers.
    for mut stream in idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection is still open: {read:?}"
        );
    }
    assert_eq!(
        http_get(admin_port, "/healthz").await.map(|r| r.status),
        Some(200)
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run ends after shutdown")
        .unwrap();
}
