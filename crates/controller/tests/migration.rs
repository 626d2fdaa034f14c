//! Migration from OpenShift's service CA, tested with fixtures produced by the original's own code
//! (issue 10, item 6).
//!
//! `hack/openshift-fixtures` (openshift/library-go's crypto plus a function-by-function mirror of
//! service-ca-operator's CA manager, signer and injector; see its README) writes what an OpenShift
//! cluster holds after one CA rotation. These tests create exactly those objects, as written, in a
//! fresh namespace that serves as both the CA namespace and the watched namespace, and only then
//! start service-ca on them, as the deployment's ServiceAccount with the real RBAC:
//!
//! * `adopting_openshift_state_reissues_nothing` (scenario `adopt-rotated`): no certificate is
//!   re-issued, no key changes, every bundle stays byte-identical, and each serving Secret gets at
//!   most one metadata write.
//! * `secret_from_before_the_rotation_is_reissued_once` (plus scenario `trust-bridge`): the one
//!   Secret still issued by the pre-rotation CA is re-issued exactly once, as upstream would.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{WAIT, data};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, Service};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::Value;
use service_ca_controller::{Running, names};
use service_ca_testing::tls::{verify_chain, verify_key_matches};
use service_ca_testing::{TestContext, eventually};

/// How long the "nothing happens" observation lasts once the controller has done its first pass.
const WINDOW: Duration = Duration::from_secs(10);

/// Event reasons that would mean service-ca re-issued, rotated, replaced or refused something.
const WRITE_EVENTS: &[&str] = &[
    "ServingCertIssued",
    "ServingCertRenewed",
    "ServingCertFailed",
    "ServiceCACreated",
    "ServiceCARotated",
    "ServiceCAInvalid",
    "CABundleInjectionReplacedData",
];

// ---------------------------------------------------------------------------------------------
// The fixture generator
// ---------------------------------------------------------------------------------------------

/// Builds the generator once per test process with `hack/openshift-fixtures/build.sh` (cached by
/// input hash outside the repository; needs Go) and returns the binary's path.
fn generator() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BIN.get_or_init(|| {
        let script = service_ca_testing::workspace_root().join("hack/openshift-fixtures/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} exited with {} (it needs Go 1.25+ and access to the Go module proxy; its \
                 output is above)",
                script.display(),
                output.status
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let bin = stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| format!("{} printed no path", script.display()))?;
        if !bin.is_file() {
            return Err(format!(
                "{} printed {}, which is not a file",
                script.display(),
                bin.display()
            ));
        }
        Ok(bin)
    });
    match built {
        Ok(bin) => bin,
        Err(e) => panic!("cannot build the OpenShift fixture generator: {e}"),
    }
}

/// A scratch directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One run of the generator: its output directory and `fixtures.json`.
struct Fixtures {
    dir: PathBuf,
    index: Value,
}

impl Fixtures {
    /// Runs the generator into `out` with the CA and the Services both in `namespace`.
    fn generate(out: &Path, namespace: &str, now: &str, uids: &BTreeMap<String, String>) -> Self {
        let bin = generator();
        let mut cmd = Command::new(bin);
        cmd.arg("-out").arg(out).args([
            "-namespace",
            namespace,
            "-ca-namespace",
            namespace,
            "-now",
            now,
        ]);
        for (service, uid) in uids {
            cmd.arg(format!("-uid-{service}")).arg(uid);
        }
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
        assert!(
            output.status.success(),
            "the fixture generator failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let index = read_json(&out.join("fixtures.json"));
        Self {
            dir: out.to_path_buf(),
            index,
        }
    }

    /// A manifest as JSON.
    fn json(&self, file: &str) -> Value {
        read_json(&self.dir.join(file))
    }

    /// A manifest's raw bytes.
    fn bytes(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// A manifest as a typed object (Secret data decoded from base64).
    fn typed<K: serde::de::DeserializeOwned>(&self, file: &str) -> K {
        serde_json::from_value(self.json(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// The files of a scenario, in apply order.
    fn scenario(&self, name: &str) -> Vec<String> {
        self.index["scenarios"][name]
            .as_array()
            .unwrap_or_else(|| panic!("fixtures.json has no scenario {name}"))
            .iter()
            .map(|f| f.as_str().expect("file name").to_string())
            .collect()
    }

    /// The `objects[]` entry of a file.
    fn object(&self, file: &str) -> &Value {
        self.index["objects"]
            .as_array()
            .expect("fixtures.json objects")
            .iter()
            .find(|o| o["file"] == file)
            .unwrap_or_else(|| panic!("fixtures.json lists no object for {file}"))
    }

    /// `facts.caCommonName`: the CN upstream writes to `serving-cert-signed-by`.
    fn ca_common_name(&self) -> String {
        self.index["facts"]["caCommonName"]
            .as_str()
            .expect("facts.caCommonName")
            .to_string()
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Creates one manifest exactly as written (a POST of the file's JSON, every field preserved).
async fn create_manifest(ctx: &TestContext, fixtures: &Fixtures, file: &str) -> DynamicObject {
    let kind = fixtures.object(file)["kind"]
        .as_str()
        .expect("kind")
        .to_string();
    let resource = match kind.as_str() {
        "Secret" => ApiResource::erase::<Secret>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        other => panic!("{file}: kind {other} is not expected in these scenarios"),
    };
    let manifest = fixtures.json(file);
    assert_eq!(
        manifest["metadata"]["namespace"], ctx.namespace,
        "{file} is not in the test namespace"
    );
    let object: DynamicObject =
        serde_json::from_value(manifest).unwrap_or_else(|e| panic!("{file}: {e}"));
    Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {file}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Setting up what an OpenShift cluster holds
// ---------------------------------------------------------------------------------------------

/// Service manifests by Service name.
const SERVICES: &[(&str, &str)] = &[
    ("web", "services/service-web.json"),
    ("db", "services/service-db.json"),
    ("legacy", "trust-bridge/service-legacy.json"),
];

/// The cluster after the fixtures were created, before service-ca starts.
struct Migrated {
    /// The second generator run (UIDs of the live Services): every object created comes from it.
    fixtures: Fixtures,
    /// Kept until the test ends.
    _scratch: ScratchDir,
}

/// Runs the generator twice (the second time with the live Services' UIDs) and creates the
/// objects of `adopt-rotated`, plus the `legacy` Service and its Secret issued by the
/// pre-rotation CA when `with_legacy`.
async fn create_openshift_state(ctx: &TestContext, with_legacy: bool) -> Migrated {
    let ns = &ctx.namespace;
    let scratch = ScratchDir(std::env::temp_dir().join(format!("service-ca-migration-{ns}")));
    let now = service_ca_pki::rfc3339(time::OffsetDateTime::now_utc());

    // 1. Service manifests first: the API server assigns the UIDs the Secrets must carry.
    let first = Fixtures::generate(&scratch.0.join("first"), ns, &now, &BTreeMap::new());
    let services: Vec<(&str, &str)> = SERVICES
        .iter()
        .copied()
        .filter(|(name, _)| with_legacy || *name != "legacy")
        .collect();
    let mut uids = BTreeMap::new();
    for (name, file) in &services {
        let created = create_manifest(ctx, &first, file).await;
        uids.insert(
            name.to_string(),
            created.uid().expect("uid of a created Service"),
        );
    }

    // 2. Everything else from one run that knows those UIDs (same -now, so the Service
    //    manifests are byte-identical, which the generator promises and we check).
    let fixtures = Fixtures::generate(&scratch.0.join("second"), ns, &now, &uids);
    for (_, file) in &services {
        assert_eq!(
            first.bytes(file),
            fixtures.bytes(file),
            "{file} differs between the two generator runs"
        );
    }
    assert_eq!(fixtures.index["uids"]["web"], uids["web"]);

    // 3. The scenario, in the order fixtures.json gives. The namespace already exists (the test
    //    namespace is the CA namespace too) and the Services were created in step 1.
    let mut files = fixtures.scenario("adopt-rotated");
    if with_legacy {
        files.extend(fixtures.scenario("trust-bridge"));
    }
    for file in files {
        let object = fixtures.object(&file);
        if object["stage"] == "namespaces" || object["kind"] == "Service" {
            continue;
        }
        create_manifest(ctx, &fixtures, &file).await;
    }

    // What the API server stored is what the files say (nothing defaulted away or added).
    let secrets: Api<Secret> = ctx.api();
    let mut serving = vec!["web-tls", "db-tls"];
    if with_legacy {
        serving.push("legacy-tls");
    }
    for name in serving.iter().copied().chain(["signing-key"]) {
        let live = secrets.get(name).await.expect("created Secret");
        let file = fixture_file(&fixtures, "Secret", name);
        let want: Secret = fixtures.typed(&file);
        assert_eq!(live.data, want.data, "{name}: data as written");
        assert_eq!(live.type_, want.type_, "{name}: type as written");
        assert_eq!(
            live.metadata.annotations, want.metadata.annotations,
            "{name}: annotations as written"
        );
        assert_eq!(
            live.metadata.owner_references, want.metadata.owner_references,
            "{name}: ownerReferences as written"
        );
        assert_eq!(
            live.metadata.labels, None,
            "{name}: upstream writes no label"
        );
    }
    let configmaps: Api<ConfigMap> = ctx.api();
    for name in ["signing-cabundle", "ca-bundle"] {
        let live = configmaps.get(name).await.expect("created ConfigMap");
        let want: ConfigMap = fixtures.typed(&fixture_file(&fixtures, "ConfigMap", name));
        assert_eq!(live.data, want.data, "{name}: data as written");
        assert_eq!(live.binary_data, None, "{name}: no binaryData");
        assert_eq!(
            live.metadata.annotations, want.metadata.annotations,
            "{name}: annotations as written"
        );
    }
    Migrated {
        fixtures,
        _scratch: scratch,
    }
}

/// The file of the object `kind`/`name` (the rotated CA for `signing-key`/`signing-cabundle`).
fn fixture_file(fixtures: &Fixtures, kind: &str, name: &str) -> String {
    fixtures.index["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["kind"] == kind && o["name"] == name)
        .filter(|o| o["stage"] != "ca-initial")
        .map(|o| o["file"].as_str().expect("file").to_string())
        .next()
        .unwrap_or_else(|| panic!("fixtures.json has no {kind} {name}"))
}

// ---------------------------------------------------------------------------------------------
// Observing writes
// ---------------------------------------------------------------------------------------------

/// Every change the API server reports after the fixtures were created, per `Kind/name`: the
/// object as it was after each MODIFIED (or DELETED) event. Each entry is one write.
#[derive(Clone, Default)]
struct Changes(Arc<Mutex<BTreeMap<String, Vec<Value>>>>);

impl Changes {
    fn of(&self, kind: &str, name: &str) -> Vec<Value> {
        self.0
            .lock()
            .expect("changes lock")
            .get(&format!("{kind}/{name}"))
            .cloned()
            .unwrap_or_default()
    }

    fn count(&self, kind: &str, name: &str) -> usize {
        self.of(kind, name).len()
    }
}

/// Watches `K` in the test namespace from the current resourceVersion and records every change.
async fn record_changes<K>(ctx: &TestContext, changes: &Changes) -> tokio::task::JoinHandle<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = ctx.api();
    let from = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let kind = K::kind(&Default::default()).to_string();
    let changes = changes.clone();
    tokio::spawn(async move {
        let stream = api
            .watch(&WatchParams::default().timeout(290), &from)
            .await
            .expect("watch");
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let object = match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => o,
                Ok(WatchEvent::Bookmark(_)) => continue,
                Ok(WatchEvent::Error(e)) => panic!("watch of {kind}: {e:?}"),
                Err(e) => panic!("watch of {kind}: {e}"),
            };
            let key = format!("{kind}/{}", object.name_any());
            let value = serde_json::to_value(&object).expect("object to JSON");
            changes
                .0
                .lock()
                .expect("changes lock")
                .entry(key)
                .or_default()
                .push(value);
        }
    })
}

/// Records changes of Secrets, ConfigMaps and Services; the handles abort the watches on drop.
struct Recorder {
    changes: Changes,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    async fn start(ctx: &TestContext) -> Self {
        let changes = Changes::default();
        let tasks = vec![
            record_changes::<Secret>(ctx, &changes).await,
            record_changes::<ConfigMap>(ctx, &changes).await,
            record_changes::<Service>(ctx, &changes).await,
        ];
        Self { changes, tasks }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Whether the serving controller has finished with `secret`: the expiry gauge is set when a
/// Secret is found up to date (after any metadata repair) or when it is issued.
fn serving_pass_done(running: &Running, namespace: &str, secret: &str) -> bool {
    running.metrics.encode().lines().any(|l| {
        l.starts_with("service_ca_serving_cert_expiry_time_seconds{")
            && l.contains(&format!("namespace=\"{namespace}\""))
            && l.contains(&format!("secret=\"{secret}\""))
    })
}

/// Whether the ConfigMap injector has looked at its (only) target at least once.
fn configmap_pass_done(running: &Running) -> bool {
    running.metrics.encode().lines().any(|l| {
        l.starts_with("service_ca_reconciles_total{controller=\"configmap\"}")
            && l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
    })
}

/// Events in the test namespace whose reason means a certificate or CA was (re-)written.
async fn write_events(ctx: &TestContext) -> Vec<(String, String)> {
    Api::<Event>::namespaced(ctx.client.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| {
            let reason = e.reason.unwrap_or_default();
            WRITE_EVENTS.contains(&reason.as_str()).then(|| {
                (
                    reason,
                    e.involved_object.name.unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

fn leaf(secret: &Secret) -> service_ca_pki::CertInfo {
    let crt = data(secret, names::TLS_CRT).expect("tls.crt");
    service_ca_pki::parse_pem_certs(&crt)
        .expect("tls.crt parses")
        .into_iter()
        .next()
        .expect("a leaf")
}

/// The annotations, labels and ownerReferences after service-ca's pass keep everything upstream
/// wrote: ownerReferences and originating annotations are unchanged, and so are the expiry
/// annotations unless the certificate was re-issued (then they give the new leaf's notAfter); the
/// only additions are the managed-by label (and the informational annotations, already present).
fn assert_metadata_kept(name: &str, before: &Secret, after: &Secret, reissued: bool) {
    assert_eq!(after.type_, before.type_, "{name}: type");
    assert_eq!(
        after.metadata.owner_references, before.metadata.owner_references,
        "{name}: ownerReferences unchanged"
    );
    let labels = after.metadata.labels.clone().unwrap_or_default();
    for (key, value) in &labels {
        assert!(
            key == names::MANAGED_BY_LABEL && value == names::MANAGED_BY_VALUE,
            "{name}: unexpected label {key}={value}"
        );
    }
    let old = before.metadata.annotations.clone().unwrap_or_default();
    let new = after.metadata.annotations.clone().unwrap_or_default();
    for (key, value) in &old {
        match key.as_str() {
            // Informational (docs/behavior.md §3.1 #16): written on every write of the Secret;
            // service-ca puts its own text there when it repairs metadata.
            names::DESCRIPTION => assert!(
                new.get(key).is_some_and(|v| !v.is_empty()),
                "{name}: {key} kept non-empty"
            ),
            names::EXPIRY_BETA | names::EXPIRY_ALPHA if reissued => assert_eq!(
                new.get(key),
                Some(&service_ca_pki::rfc3339(leaf(after).not_after)),
                "{name}: {key} gives the new leaf's notAfter"
            ),
            _ => assert_eq!(
                new.get(key),
                Some(value),
                "{name}: annotation {key} unchanged"
            ),
        }
    }
    let added: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    assert!(
        added
            .iter()
            .all(|k| *k == names::OWNING_COMPONENT || *k == names::DESCRIPTION),
        "{name}: only informational annotations may be added, got {added:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The `adopt-rotated` scenario: an OpenShift cluster right after one CA rotation, with two
/// serving Secrets (ClusterIP `web`, headless `db`) issued by the rotated CA and one injected
/// ConfigMap. service-ca with its default settings (rotation threshold 183 d, renewal margin 30 d;
/// the fixture CA and leaves are fresh, so nothing is due) must adopt it all as it is.
#[tokio::test]
async fn adopting_openshift_state_reissues_nothing() {
    let ctx = TestContext::new("migration").await.unwrap();
    let ns = ctx.namespace.clone();
    let state = create_openshift_state(&ctx, false).await;
    let fixtures = &state.fixtures;
    let secrets: Api<Secret> = ctx.api();
    let configmaps: Api<ConfigMap> = ctx.api();
    let services: Api<Service> = ctx.api();

    let before: BTreeMap<&str, Secret> = {
        let mut m = BTreeMap::new();
        for name in ["web-tls", "db-tls", "signing-key"] {
            m.insert(name, secrets.get(name).await.unwrap());
        }
        m
    };
    let cm_before: BTreeMap<&str, ConfigMap> = {
        let mut m = BTreeMap::new();
        for name in ["signing-cabundle", "ca-bundle"] {
            m.insert(name, configmaps.get(name).await.unwrap());
        }
        m
    };
    let fixture_secret =
        |name: &str| -> Secret { fixtures.typed(&fixture_file(fixtures, "Secret", name)) };
    let fixture_cm =
        |name: &str| -> ConfigMap { fixtures.typed(&fixture_file(fixtures, "ConfigMap", name)) };

    let recorder = Recorder::start(&ctx).await;
    let running = common::controller(&ctx, |cfg| {
        // The defaults an administrator deploys with (docs/behavior.md §6), not upstream's.
        assert_eq!(cfg.ca.rotation_threshold, Duration::from_secs(183 * 86400));
        assert_eq!(cfg.renew_before, Duration::from_secs(30 * 86400));
    })
    .await;

    // Wait until every controller has looked at every object once.
    eventually(
        WAIT,
        "the serving controller's pass over web-tls and db-tls",
        || async {
            (serving_pass_done(&running, &ns, "web-tls")
                && serving_pass_done(&running, &ns, "db-tls"))
            .then_some(())
        },
    )
    .await;
    eventually(
        WAIT,
        "the ConfigMap injector's pass over ca-bundle",
        || async { configmap_pass_done(&running).then_some(()) },
    )
    .await;

    // Then watch it for a while: nothing re-issued, no key or bundle byte changed, at most one
    // write per serving Secret, none anywhere else.
    let seen_versions: Mutex<BTreeMap<String, BTreeSet<String>>> = Mutex::default();
    common::holds_for(WINDOW, "adopted OpenShift state left as it is", || async {
        let mut problems = Vec::new();
        for name in ["web-tls", "db-tls", "signing-key"] {
            let live = secrets.get(name).await.unwrap();
            if live.data != fixture_secret(name).data {
                problems.push(format!("{name}: data changed"));
            }
            seen_versions
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_default()
                .insert(live.resource_version().unwrap_or_default());
        }
        for name in ["signing-cabundle", "ca-bundle"] {
            let live = configmaps.get(name).await.unwrap();
            if live.data != fixture_cm(name).data || live.binary_data.is_some() {
                problems.push(format!("{name}: data changed"));
            }
            seen_versions
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_default()
                .insert(live.resource_version().unwrap_or_default());
        }
        for (name, versions) in seen_versions.lock().unwrap().iter() {
            // web-tls and db-tls: the fixture's version and at most one metadata write.
            let allowed = if name.ends_with("-tls") { 2 } else { 1 };
            if versions.len() > allowed {
                problems.push(format!("{name}: resourceVersions {versions:?}"));
            }
        }
        let m = &running.metrics;
        if m.issued_total() != 0 {
            problems.push(format!("{} certificates issued", m.issued_total()));
        }
        if m.writes_of("serving") > 2 || m.writes_of("configmap") != 0 {
            problems.push(format!(
                "writes: serving {}, configmap {}",
                m.writes_of("serving"),
                m.writes_of("configmap")
            ));
        }
        for problem in &problems {
            eprintln!("migration: {problem}");
        }
        problems.is_empty()
    })
    .await;

    let changes = &recorder.changes;
    let serving_writes = running.metrics.writes_of("serving");
    let configmap_writes = running.metrics.writes_of("configmap");
    let issued = running.metrics.issued_total();
    eprintln!(
        "migration (adopt-rotated): certificates issued {issued}; API writes: serving {serving_writes}, \
         configmap {configmap_writes}; changes seen by a watch: web-tls {}, db-tls {}, \
         signing-key {}, signing-cabundle {}, ca-bundle {}, Service web {}, Service db {}",
        changes.count("Secret", "web-tls"),
        changes.count("Secret", "db-tls"),
        changes.count("Secret", "signing-key"),
        changes.count("ConfigMap", "signing-cabundle"),
        changes.count("ConfigMap", "ca-bundle"),
        changes.count("Service", "web"),
        changes.count("Service", "db"),
    );
    for name in ["web-tls", "db-tls"] {
        let after = secrets.get(name).await.unwrap();
        let meta = |s: &Secret| {
            (
                common::annotation(&s.metadata, names::DESCRIPTION).map(str::to_owned),
                s.metadata.labels.clone().unwrap_or_default(),
            )
        };
        let (old_description, _) = meta(&before[name]);
        let (new_description, labels) = meta(&after);
        eprintln!(
            "migration (adopt-rotated): {name} labels now {labels:?}; description {}",
            if old_description == new_description {
                "kept"
            } else {
                "replaced by service-ca's text"
            }
        );
    }

    // Zero certificates re-issued, zero keys changed.
    assert_eq!(issued, 0, "no certificate issued");
    for name in ["web-tls", "db-tls"] {
        let after = secrets.get(name).await.unwrap();
        let fixture = fixture_secret(name);
        assert_eq!(
            data(&after, names::TLS_CRT),
            data(&fixture, names::TLS_CRT),
            "{name}: tls.crt byte-identical to what OpenShift wrote"
        );
        assert_eq!(
            data(&after, names::TLS_KEY),
            data(&fixture, names::TLS_KEY),
            "{name}: tls.key byte-identical to what OpenShift wrote"
        );
        assert_eq!(
            after.data, fixture.data,
            "{name}: no data key added or removed"
        );
        // At most one metadata write. Why one may happen: service-ca labels every serving Secret
        // it manages with `app.kubernetes.io/managed-by: service-ca` (names::MANAGED_BY_LABEL,
        // docs/behavior.md §2, §3.1), which the original never writes, so `metadata_in_order`
        // in serving/decide.rs finds the label missing and repairs it with one merge patch of
        // metadata (`Decision::Tidy`): no new certificate, data untouched.
        let writes = changes.of("Secret", name);
        assert!(
            writes.len() <= 1,
            "{name}: at most one write, saw {}",
            writes.len()
        );
        assert!(
            writes.iter().all(
                |w| w["data"] == fixtures.json(&fixture_file(fixtures, "Secret", name))["data"]
            ),
            "{name}: no write touched the data"
        );
        assert_metadata_kept(name, &before[name], &after, false);
    }
    assert!(
        serving_writes <= 2,
        "at most one write per serving Secret: {serving_writes}"
    );
    assert_eq!(configmap_writes, 0, "the injected ConfigMap is up to date");

    // Every bundle byte-identical, and not even rewritten with the same bytes.
    let signing_key = secrets.get("signing-key").await.unwrap();
    assert_eq!(signing_key.data, fixture_secret("signing-key").data);
    assert_eq!(
        signing_key.metadata.annotations,
        before["signing-key"].metadata.annotations
    );
    assert_eq!(
        changes.count("Secret", "signing-key"),
        0,
        "signing-key not written"
    );
    for name in ["signing-cabundle", "ca-bundle"] {
        let live = configmaps.get(name).await.unwrap();
        assert_eq!(
            live.data,
            fixture_cm(name).data,
            "{name}: data byte-identical"
        );
        assert_eq!(
            live.metadata.annotations, cm_before[name].metadata.annotations,
            "{name}: annotations"
        );
        assert_eq!(changes.count("ConfigMap", name), 0, "{name} not written");
    }
    let bundle = &fixture_cm("signing-cabundle").data.unwrap()[names::CA_BUNDLE_CRT];
    assert_eq!(
        configmaps.get("ca-bundle").await.unwrap().data.unwrap()[names::SERVICE_CA_CRT],
        *bundle,
        "the injected bundle is the published bundle"
    );
    assert_eq!(
        common::current_bundle(&running),
        *bundle,
        "service-ca serves OpenShift's bundle as it is"
    );

    // The Services keep their annotations; signed-by stays the CA's CN (the rotation copied it).
    let cn = fixtures.ca_common_name();
    for (name, file) in &SERVICES[..2] {
        let live = services.get(name).await.unwrap();
        let fixture: Service = fixtures.typed(file);
        let annotations = live.metadata.annotations.clone().unwrap_or_default();
        for (key, value) in fixture.metadata.annotations.iter().flatten() {
            assert_eq!(annotations.get(key), Some(value), "Service {name}: {key}");
        }
        assert_eq!(annotations.get(names::SIGNED_BY_BETA), Some(&cn));
        assert_eq!(annotations.get(names::SIGNED_BY_ALPHA), Some(&cn));
        assert!(!annotations.contains_key(names::ERROR_BETA));
        assert_eq!(
            changes.count("Service", name),
            0,
            "Service {name} not written"
        );
    }

    assert_eq!(
        write_events(&ctx).await,
        vec![],
        "no issuance, rotation or replacement Events"
    );
    running.stop().await;
}

/// The `trust-bridge` scenario on top of `adopt-rotated`: `legacy-tls` was issued by the CA before
/// the rotation (leaf AKID = OLD's SKID), so upstream restarted on the rotated CA re-issues exactly
/// that Secret, and so must service-ca: once, with a new serial and key, signed by the current CA.
#[tokio::test]
async fn secret_from_before_the_rotation_is_reissued_once() {
    let ctx = TestContext::new("migration-legacy").await.unwrap();
    let ns = ctx.namespace.clone();
    let state = create_openshift_state(&ctx, true).await;
    let fixtures = &state.fixtures;
    let secrets: Api<Secret> = ctx.api();
    let services: Api<Service> = ctx.api();
    let fixture_secret =
        |name: &str| -> Secret { fixtures.typed(&fixture_file(fixtures, "Secret", name)) };
    let old = fixture_secret("legacy-tls");
    let old_leaf = leaf(&old);
    let ca = fixture_secret("signing-key");
    let new_ca = leaf(&ca);
    assert_ne!(
        old_leaf.akid, new_ca.skid,
        "the fixture's legacy leaf predates the rotation"
    );

    let recorder = Recorder::start(&ctx).await;
    let running = common::controller(&ctx, |_| {}).await;

    let reissued = common::wait_secret(&secrets, "legacy-tls", "legacy-tls re-issued", |s| {
        leaf(s).serial_hex != old_leaf.serial_hex
    })
    .await;
    eventually(
        WAIT,
        "the serving controller's pass over every Secret",
        || async {
            ["web-tls", "db-tls", "legacy-tls"]
                .iter()
                .all(|s| serving_pass_done(&running, &ns, s))
                .then_some(())
        },
    )
    .await;

    // Re-issued by the current CA, with a new key, for the same Service.
    let new_leaf = leaf(&reissued);
    assert_eq!(new_leaf.akid, new_ca.skid, "signed by the current CA");
    assert_eq!(new_leaf.issuer_raw, new_ca.subject_raw);
    assert_ne!(
        data(&reissued, names::TLS_KEY),
        data(&old, names::TLS_KEY),
        "a new key"
    );
    let crt = data(&reissued, names::TLS_CRT).unwrap();
    let key = data(&reissued, names::TLS_KEY).unwrap();
    verify_key_matches(&crt, &key).unwrap();
    let dns = format!("legacy.{ns}.svc");
    let rotated_bundle = std::fs::read(fixtures.dir.join("pem/bundle-rotated.crt")).unwrap();
    let initial_bundle = std::fs::read(fixtures.dir.join("pem/bundle-initial.crt")).unwrap();
    verify_chain(&rotated_bundle, &crt, &dns).expect("trusted with the current bundle");
    verify_chain(&initial_bundle, &crt, &dns).expect("trusted with the pre-rotation bundle");
    assert_eq!(
        reissued.data.as_ref().map(BTreeMap::len),
        Some(2),
        "tls.crt and tls.key only"
    );
    assert_metadata_kept("legacy-tls", &old, &reissued, true);

    // Exactly once: it stays as re-issued, and web-tls and db-tls stay as OpenShift wrote them.
    common::holds_for(
        WINDOW,
        "one re-issue of legacy-tls, nothing else",
        || async {
            let legacy = secrets.get("legacy-tls").await.unwrap();
            let mut ok = legacy.data == reissued.data && running.metrics.issued_total() == 1;
            for name in ["web-tls", "db-tls"] {
                ok &= secrets.get(name).await.unwrap().data == fixture_secret(name).data;
            }
            ok
        },
    )
    .await;

    let changes = &recorder.changes;
    let legacy_writes = changes.of("Secret", "legacy-tls");
    let distinct_data: BTreeSet<String> = legacy_writes
        .iter()
        .map(|w| w["data"].to_string())
        .collect();
    let serving_writes = running.metrics.writes_of("serving");
    eprintln!(
        "migration (trust-bridge): certificates issued {}; API writes: serving {serving_writes}, \
         configmap {}; changes seen by a watch: legacy-tls {}, web-tls {}, db-tls {}, Service \
         legacy {}",
        running.metrics.issued_total(),
        running.metrics.writes_of("configmap"),
        legacy_writes.len(),
        changes.count("Secret", "web-tls"),
        changes.count("Secret", "db-tls"),
        changes.count("Service", "legacy"),
    );
    assert_eq!(
        running.metrics.issued_total(),
        1,
        "exactly one certificate issued"
    );
    assert_eq!(distinct_data.len(), 1, "legacy-tls data written once");
    assert_eq!(
        legacy_writes.len(),
        1,
        "legacy-tls written once (data and label together)"
    );
    assert!(
        serving_writes <= 3,
        "one issue plus at most one metadata write each for web-tls and db-tls: {serving_writes}"
    );
    for name in ["web-tls", "db-tls"] {
        assert!(
            changes.count("Secret", name) <= 1,
            "{name}: at most one metadata write"
        );
    }

    // The legacy Service keeps its annotations: the rotation kept the CA's CN, so signed-by is
    // already right and is not rewritten.
    let cn = fixtures.ca_common_name();
    let legacy = services.get("legacy").await.unwrap();
    let annotations = legacy.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get(names::SIGNED_BY_BETA), Some(&cn));
    assert_eq!(annotations.get(names::SIGNED_BY_ALPHA), Some(&cn));
    assert_eq!(
        changes.count("Service", "legacy"),
        0,
        "Service legacy not written"
    );

    let events = write_events(&ctx).await;
    assert_eq!(
        events,
        vec![("ServingCertRenewed".to_string(), "legacy".to_string())],
        "one renewal Event, on the Service"
    );
    running.stop().await;
}
