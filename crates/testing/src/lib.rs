//! Test support for service-ca: a real kube-apiserver (the `testenv/` control plane) per test
//! process, a fresh `kube::Client` and a fresh namespace per test.
//!
//! Set `SERVICE_CA_TEST_KUBECONFIG` to run against an existing cluster instead. Set
//! `SERVICE_CA_TESTENV_BIN` to use a prebuilt testenv binary; otherwise `testenv/build.sh` builds
//! (or finds in its cache) the binary.

pub mod container;
pub mod replica;
pub mod tls;
pub mod witness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Errors of the test harness; they abort the test with a clear message.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The testenv binary could not be built or located.
    #[error("cannot build testenv: {0}")]
    Build(String),
    /// The control plane did not start.
    #[error("testenv did not start: {0}")]
    Start(String),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    /// An API call made by the harness failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

/// The workspace root (where the Makefile and testenv/ live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of the testenv binary, building it (once, cached outside the repo) if needed.
pub fn testenv_binary() -> Result<PathBuf, HarnessError> {
    if let Ok(bin) = std::env::var("SERVICE_CA_TESTENV_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let script = workspace_root().join("testenv/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| HarnessError::Build(format!("{}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(HarnessError::Build(format!(
            "{} exited with {}",
            script.display(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| HarnessError::Build("build.sh printed no path".into()))
}

/// A running local control plane. Dropping it (or the test process exiting) shuts it down:
/// testenv runs with `--exit-on-stdin-eof` and we hold its stdin.
pub struct TestEnv {
    child: Mutex<Option<(Child, ChildStdin)>>,
    kubeconfig: PathBuf,
    data_dir: Option<PathBuf>,
    /// Seconds from spawn to the "ready" line (kube-apiserver /readyz answered).
    pub startup: Duration,
}

impl TestEnv {
    /// Starts a control plane. With `data_dir` it keeps state there (restartable); without,
    /// testenv uses a temporary directory it removes on exit.
    pub fn start(data_dir: Option<&Path>) -> Result<Self, HarnessError> {
        let bin = testenv_binary()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("up").arg("--exit-on-stdin-eof");
        if let Some(dir) = data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| HarnessError::Start(format!("{}: {e}", bin.display())))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| HarnessError::Start("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Start("no stdout".into()))?;
        let mut kubeconfig = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| HarnessError::Start(e.to_string()))?;
            if let Some(rest) = line.strip_prefix("ready ") {
                kubeconfig = rest
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("kubeconfig="))
                    .map(PathBuf::from);
                break;
            }
        }
        let Some(kubeconfig) = kubeconfig else {
            let status = child.wait().ok();
            return Err(HarnessError::Start(format!(
                "testenv exited before it was ready ({status:?}); its stderr is above"
            )));
        };
        Ok(Self {
            child: Mutex::new(Some((child, stdin))),
            kubeconfig,
            data_dir: data_dir.map(Path::to_path_buf),
            startup: started.elapsed(),
        })
    }

    /// The admin kubeconfig written by testenv.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The data dir given to [`TestEnv::start`], if any.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Shuts the control plane down cleanly and waits for it to exit.
    pub fn stop(&self) {
        let taken = self.child.lock().map(|mut g| g.take()).ok().flatten();
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An admin client for this control plane.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        client_from_kubeconfig(&self.kubeconfig, None).await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds a client from a kubeconfig, optionally impersonating `user` (for RBAC tests).
pub async fn client_from_kubeconfig(
    path: &Path,
    impersonate: Option<&str>,
) -> Result<Client, HarnessError> {
    let config = config_from_kubeconfig(path, impersonate).await?;
    Ok(Client::try_from(config)?)
}

/// Loads a kube `Config` from a kubeconfig file, optionally impersonating `user`.
pub async fn config_from_kubeconfig(
    path: &Path,
    impersonate: Option<&str>,
) -> Result<Config, HarnessError> {
    let err = |message: String| HarnessError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    config.auth_info.impersonate = impersonate.map(str::to_owned);
    Ok(config)
}

enum Cluster {
    Local(TestEnv),
    Existing(PathBuf),
}

impl Cluster {
    fn kubeconfig(&self) -> &Path {
        match self {
            Cluster::Local(env) => env.kubeconfig(),
            Cluster::Existing(path) => path,
        }
    }
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The kubeconfig of the cluster shared by every test in this process: an existing one from
/// `SERVICE_CA_TEST_KUBECONFIG`, or a testenv started on first use.
pub fn shared_kubeconfig() -> Result<PathBuf, HarnessError> {
    let cluster = CLUSTER.get_or_init(|| {
        if let Ok(path) = std::env::var("SERVICE_CA_TEST_KUBECONFIG") {
            return Ok(Cluster::Existing(PathBuf::from(path)));
        }
        TestEnv::start(None)
            .map(|env| {
                eprintln!(
                    "testenv ready in {:.2}s: {}",
                    env.startup.as_secs_f64(),
                    env.kubeconfig().display()
                );
                Cluster::Local(env)
            })
            .map_err(|e| e.to_string())
    });
    cluster
        .as_ref()
        .map(|c| c.kubeconfig().to_path_buf())
        .map_err(|e| HarnessError::Start(e.clone()))
}

/// One test's view of the cluster: an admin client and a namespace of its own, deleted when the
/// context is dropped (also when the test panics).
///
/// Cluster-scoped objects do not go away with the namespace. When the context is dropped it also
/// deletes those registered with [`TestContext::delete_on_drop`], and every ClusterRole and
/// ClusterRoleBinding whose name contains the test's namespace (namespace names are random, so
/// such an object was made for this test: e.g. the RBAC the controller tests apply per namespace).
pub struct TestContext {
    /// Admin client.
    pub client: Client,
    /// The test's own namespace.
    pub namespace: String,
    /// Kubeconfig of the cluster (for starting controllers or impersonated clients).
    pub kubeconfig: PathBuf,
    cluster_scoped: Mutex<Vec<(ApiResource, String)>>,
}

impl TestContext {
    /// Creates a fresh namespace `<prefix>-<random>` on the shared cluster.
    pub async fn new(prefix: &str) -> Result<Self, HarnessError> {
        let kubeconfig = shared_kubeconfig()?;
        let client = client_from_kubeconfig(&kubeconfig, None).await?;
        let namespace = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(namespace.clone()),
                labels: Some([("service-ca-test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Self {
            client,
            namespace,
            kubeconfig,
            cluster_scoped: Mutex::new(Vec::new()),
        })
    }

    /// Registers a cluster-scoped object to delete when the context is dropped: at the end of the
    /// test, and also when it panics. Register before creating it; deleting an object that was
    /// never created is harmless. Objects are deleted in the reverse order of registration.
    pub fn delete_on_drop<K>(&self, name: impl Into<String>)
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        let resource = ApiResource::erase::<K>(&Default::default());
        if let Ok(mut registered) = self.cluster_scoped.lock() {
            registered.push((resource, name.into()));
        }
    }

    /// A namespaced API in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: delete from a thread
        // with its own small runtime. Best effort: the control plane goes away with the process.
        let kubeconfig = self.kubeconfig.clone();
        let namespace = self.namespace.clone();
        let registered = self
            .cluster_scoped
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = client_from_kubeconfig(&kubeconfig, None).await {
                    delete_cluster_scoped(&client, &namespace, registered).await;
                    let _ = Api::<Namespace>::all(client)
                        .delete(&namespace, &DeleteParams::background())
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Deletes the registered cluster-scoped objects (newest first) and the ClusterRoles and
/// ClusterRoleBindings named after `namespace`. Best effort: failures are reported, not fatal.
async fn delete_cluster_scoped(
    client: &Client,
    namespace: &str,
    registered: Vec<(ApiResource, String)>,
) {
    let dp = DeleteParams::background();
    let report = |kind: &str, name: &str, result: Result<(), kube::Error>| match result {
        Ok(()) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => eprintln!("test cleanup: deleting {kind} {name}: {e}"),
    };
    for (resource, name) in registered.into_iter().rev() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        report(
            &resource.kind,
            &name,
            api.delete(&name, &dp).await.map(|_| ()),
        );
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    if let Ok(list) = bindings.list(&ListParams::default()).await {
        for name in list.items.into_iter().filter_map(|b| b.metadata.name) {
            if name.contains(namespace) {
                report(
                    "ClusterRoleBinding",
                    &name,
                    bindings.delete(&name, &dp).await.map(|_| ()),
                );
            }
        }
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    if let Ok(list) = roles.list(&ListParams::default()).await {
        for name in list.items.into_iter().filter_map(|r| r.metadata.name) {
            if name.contains(namespace) {
                report(
                    "ClusterRole",
                    &name,
                    roles.delete(&name, &dp).await.map(|_| ()),
                );
            }
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kubectl kustomize <workspace>/<dir>` with the control plane's own kubectl: the rendered
/// objects. Panics (the test fails) with kubectl's message when rendering fails.
pub fn kustomize(dir: &str) -> Vec<serde_json::Value> {
    let testenv = testenv_binary().expect("the testenv binary");
    let kubectl = testenv.with_file_name("kubectl");
    let path = workspace_root().join(dir);
    let mut command = if kubectl.is_file() {
        Command::new(&kubectl)
    } else {
        let mut c = Command::new(&testenv);
        c.arg("kubectl");
        c
    };
    let output = command
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    serde_saphyr::from_multiple(&text).expect("the rendered documents parse")
}

/// Server-side applies every object in order (kinds found by discovery) as `field_manager`;
/// returns one line per object that did not apply, empty when all did.
pub async fn apply_all(
    client: &Client,
    objects: &[serde_json::Value],
    field_manager: &str,
) -> Vec<String> {
    use kube::api::{Patch, PatchParams};
    use kube::core::GroupVersionKind;
    use kube::discovery::Scope;
    let pp = PatchParams::apply(field_manager);
    let mut failures = Vec::new();
    for value in objects {
        let object: DynamicObject = match serde_json::from_value(value.clone()) {
            Ok(object) => object,
            Err(e) => {
                failures.push(format!("an object does not parse: {e}"));
                continue;
            }
        };
        let Some(types) = object.types.clone() else {
            failures.push("an object without apiVersion and kind".into());
            continue;
        };
        let what = format!(
            "{} {}/{}",
            types.kind,
            object.metadata.namespace.as_deref().unwrap_or("-"),
            object.metadata.name.as_deref().unwrap_or("?")
        );
        let resource = match GroupVersionKind::try_from(&types) {
            Ok(gvk) => kube::discovery::pinned_kind(client, &gvk).await,
            Err(e) => {
                failures.push(format!("{what}: invalid apiVersion: {e}"));
                continue;
            }
        };
        let (resource, caps) = match resource {
            Ok(found) => found,
            Err(e) => {
                failures.push(format!("{what}: not served by the API server: {e}"));
                continue;
            }
        };
        let api: Api<DynamicObject> = match (&caps.scope, &object.metadata.namespace) {
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => {
                failures.push(format!("{what}: namespaced but has no namespace"));
                continue;
            }
        };
        let name = object.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api.patch(&name, &pp, &Patch::Apply(value)).await {
            failures.push(format!("{what}: {e}"));
        }
    }
    failures
}

/// A token of ServiceAccount `namespace/name` from the TokenRequest API (one hour), as the
/// kubelet would project it.
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let response: TokenRequest = api
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
    response
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .expect("a token in the TokenRequest status")
}
