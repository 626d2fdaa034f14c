//! Witnesses for the fault tests (docs/reliability.md): a [`Recorder`] that watches every Secret,
//! ConfigMap, Service and Event of a namespace for the whole test and keeps every version it sees
//! (and counts the re-lists, where versions may have been missed), and [`converged`], a check of
//! the final state against the CA in force.
//!
//! [`Recorder::violations`] checks every version seen, not only the final state: no half-written
//! Secret (`tls.crt` without its `tls.key`, or a key that is not the certificate's), no CA Secret
//! the controller would not adopt, no serving certificate that fails to verify against the bundle
//! published when it was written, and no injected bundle that was never published. "When" is the
//! resourceVersion order: resourceVersions are etcd revisions, one sequence for every kind.
//!
//! The names used here (annotations, data keys) are the fixed OpenShift ones; the testing crate
//! does not depend on the controller crate, whose tests use it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, Service};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use service_ca_pki::{CertInfo, SigningCa};

const SECRET_NAME_ANNOTATION: &str = "service.beta.openshift.io/serving-cert-secret-name";
const INJECT_ANNOTATION: &str = "service.beta.openshift.io/inject-cabundle";
const FORCED_ROTATION_REASON: &str = "service-ca.operators.openshift.io/forced-rotation-reason";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_BUNDLE_CRT: &str = "ca-bundle.crt";
const INTERMEDIATE_CA_CRT: &str = "intermediate-ca.crt";
const SERVICE_CA_CRT: &str = "service-ca.crt";
const ORIGINATING_SERVICE: &str = "service.beta.openshift.io/originating-service-name";
/// The bundle ConfigMap (the fixed OpenShift name): what clients trust.
const BUNDLE_CONFIGMAP: &str = "signing-cabundle";
/// How long a failed list or watch waits before it is retried (an outage is watched closely, so
/// that the re-list after it comes as soon as the API server is back).
const RETRY: Duration = Duration::from_millis(100);

/// One observed version of an object.
#[derive(Clone, Debug)]
pub struct Change {
    /// When the recorder saw it.
    pub at: Instant,
    /// `Secret`, `ConfigMap`, `Service` or `Event`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// Its resourceVersion.
    pub resource_version: String,
    /// A deletion.
    pub deleted: bool,
}

#[derive(Default)]
struct Record {
    changes: Vec<Change>,
    last_version: BTreeMap<(&'static str, String), String>,
    /// Per Secret: every distinct `tls.crt` it held, in the order seen.
    certificates: BTreeMap<String, Vec<Vec<u8>>>,
    /// CA Secret versions that the pki crate does not adopt.
    ca_problems: Vec<String>,
    /// CA Secret versions seen (adoptable or not).
    ca_versions: usize,
    relists: u32,
    /// Invalid versions found as they were seen (no ordering needed).
    problems: Vec<String>,
    /// Serving Secret versions: (resourceVersion, Secret, DNS name, tls.crt).
    serving_versions: Vec<(u64, String, String, Vec<u8>)>,
    /// Bundle ConfigMap versions: (resourceVersion, ca-bundle.crt).
    bundles: Vec<(u64, String)>,
    /// Injected ConfigMap versions: (resourceVersion, ConfigMap, service-ca.crt).
    injected: Vec<(u64, String, String)>,
    namespace: String,
}

impl Record {
    fn observe(&mut self, kind: &'static str, meta: &kube::api::ObjectMeta, deleted: bool) -> bool {
        let name = meta.name.clone().unwrap_or_default();
        let version = meta.resource_version.clone().unwrap_or_default();
        let key = (kind, name.clone());
        if !deleted && self.last_version.get(&key) == Some(&version) {
            return false;
        }
        self.last_version.insert(key, version.clone());
        self.changes.push(Change {
            at: Instant::now(),
            kind,
            name,
            resource_version: version,
            deleted,
        });
        true
    }

    fn secret(&mut self, secret: &Secret, ca_secret: &str) {
        let name = secret.name_any();
        let crt = data(secret, TLS_CRT)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let history = self.certificates.entry(name.clone()).or_default();
        if !crt.is_empty() && history.last() != Some(&crt) {
            history.push(crt.clone());
        }
        let version = secret.resource_version().unwrap_or_default();
        if name == ca_secret {
            self.ca_versions += 1;
            if let Err(e) = adopt(secret) {
                self.ca_problems.push(format!("version {version}: {e}"));
            }
            return;
        }
        let key = data(secret, TLS_KEY);
        if crt.is_empty() && key.is_none() {
            return;
        }
        let whole = crate::tls::verify_key_matches(&crt, key.unwrap_or_default());
        if let Err(e) = whole {
            self.problems.push(format!(
                "Secret {name} version {version}: half-written: {e}"
            ));
        }
        match secret.annotations().get(ORIGINATING_SERVICE) {
            Some(service) => self.serving_versions.push((
                version.parse().unwrap_or(0),
                name,
                format!("{service}.{}.svc", self.namespace),
                crt,
            )),
            None => self.problems.push(format!(
                "Secret {name} version {version}: a certificate without {ORIGINATING_SERVICE}"
            )),
        }
    }

    fn configmap(&mut self, cm: &ConfigMap) {
        let version = cm
            .resource_version()
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        let value = |key: &str| cm.data.as_ref().and_then(|d| d.get(key)).cloned();
        if cm.name_any() == BUNDLE_CONFIGMAP {
            if let Some(bundle) = value(CA_BUNDLE_CRT) {
                self.bundles.push((version, bundle));
            }
        } else if let Some(injected) = value(SERVICE_CA_CRT) {
            self.injected.push((version, cm.name_any(), injected));
        }
    }

    /// Every invalid version seen (see the module docs).
    fn violations(&self) -> Vec<String> {
        let mut found = self.problems.clone();
        found.extend(self.ca_problems.iter().map(|p| format!("CA Secret {p}")));
        let mut bundles = self.bundles.clone();
        bundles.sort_by_key(|(rv, _)| *rv);
        // The bundle in force when resourceVersion `rv` was written: the last one before it.
        let in_force = |rv: u64| bundles.iter().rev().find(|(b, _)| *b < rv);
        for (rv, name, dns, crt) in &self.serving_versions {
            match in_force(*rv) {
                None => found.push(format!(
                    "Secret {name} version {rv}: written before any bundle was published"
                )),
                Some((brv, bundle)) => {
                    if let Err(e) = crate::tls::verify_chain(bundle, crt, dns) {
                        found.push(format!(
                            "Secret {name} version {rv}: does not verify against the bundle published at {brv}: {e}"
                        ));
                    }
                }
            }
        }
        for (rv, name, injected) in &self.injected {
            if !bundles
                .iter()
                .any(|(b, bundle)| b < rv && bundle == injected)
            {
                found.push(format!(
                    "ConfigMap {name} version {rv}: injected a bundle never published before it"
                ));
            }
        }
        found
    }
}

/// A data value of a Secret.
fn data<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| b.0.as_slice())
        .filter(|b| !b.is_empty())
}

/// The CA a CA Secret holds, as the controller would adopt it: certificate and key present and
/// matching, bundle and intermediate parsable. Any other state is a half-written CA Secret.
pub fn adopt(secret: &Secret) -> Result<SigningCa, String> {
    let crt = data(secret, TLS_CRT).ok_or("no tls.crt")?;
    let key = data(secret, TLS_KEY).ok_or("no tls.key")?;
    SigningCa::from_secret_data(
        crt,
        key,
        data(secret, CA_BUNDLE_CRT),
        data(secret, INTERMEDIATE_CA_CRT),
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string())
}

/// Watches every Secret, ConfigMap, Service and Event of one namespace until dropped, across API
/// server restarts (a failed list or watch is retried every 100 ms; a watch that cannot resume
/// is followed by a re-list, counted in [`Recorder::relists`]).
pub struct Recorder {
    record: Arc<Mutex<Record>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ca_secret: String,
}

impl Recorder {
    /// Starts watching `namespace` (whose CA Secret is `ca_secret`) and returns once every kind
    /// has been listed.
    pub async fn start(client: Client, namespace: &str, ca_secret: &str) -> Recorder {
        let record = Arc::new(Mutex::new(Record {
            namespace: namespace.to_string(),
            ..Record::default()
        }));
        let mut tasks = Vec::new();
        let mut listed = Vec::new();
        let ca = ca_secret.to_string();
        let secret_hook = move |r: &mut Record, s: &Secret| r.secret(s, &ca);
        macro_rules! follow {
            ($kind:ty, $name:literal, $hook:expr) => {{
                let (tx, rx) = tokio::sync::oneshot::channel();
                let api: Api<$kind> = Api::namespaced(client.clone(), namespace);
                tasks.push(tokio::spawn(follow(api, $name, record.clone(), $hook, tx)));
                listed.push(rx);
            }};
        }
        follow!(Secret, "Secret", secret_hook);
        follow!(ConfigMap, "ConfigMap", |r: &mut Record, cm: &ConfigMap| r
            .configmap(cm));
        follow!(Service, "Service", |_: &mut Record, _: &Service| {});
        follow!(Event, "Event", |_: &mut Record, _: &Event| {});
        for rx in listed {
            let _ = rx.await;
        }
        Recorder {
            record,
            tasks,
            ca_secret: ca_secret.into(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every version seen after `since`.
    pub fn changes_since(&self, since: Instant) -> Vec<Change> {
        self.lock()
            .changes
            .iter()
            .filter(|c| c.at > since)
            .cloned()
            .collect()
    }

    /// When each object of `kind` was first seen, in order.
    pub fn first_seen(&self, kind: &str) -> Vec<(String, Instant)> {
        let r = self.lock();
        let mut seen = std::collections::BTreeSet::new();
        r.changes
            .iter()
            .filter(|c| c.kind == kind && !c.deleted && seen.insert(c.name.clone()))
            .map(|c| (c.name.clone(), c.at))
            .collect()
    }

    /// Every version seen of objects named `name` (any kind), one line each.
    pub fn history(&self, name: &str) -> Vec<String> {
        let r = self.lock();
        let start = r.changes.first().map(|c| c.at);
        r.changes
            .iter()
            .filter(|c| c.name == name)
            .map(|c| {
                let at = start.map_or(0.0, |s| (c.at - s).as_secs_f64());
                let what = if c.deleted { "deleted" } else { "version" };
                format!("{at:.1}s {} {what} {}", c.kind, c.resource_version)
            })
            .collect()
    }

    /// [`converged`], and on failure the recorded history of every Secret it names.
    pub async fn converged(
        &self,
        client: &Client,
        namespace: &str,
        bundle_configmap: &str,
        timeout: Duration,
    ) -> Converged {
        let deadline = Instant::now() + timeout;
        loop {
            match check_converged(client, namespace, &self.ca_secret, bundle_configmap).await {
                Ok(done) => return done,
                Err(why) if Instant::now() > deadline => {
                    let histories: Vec<String> = why
                        .split("(Secret ")
                        .skip(1)
                        .filter_map(|rest| rest.split(')').next())
                        .map(|secret| format!("{secret}: {:?}", self.history(secret)))
                        .collect();
                    panic!(
                        "not converged after {timeout:?}: {why}\nrecorded (re-lists {}): {histories:#?}",
                        self.relists()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Every distinct certificate (the first of `tls.crt`) Secret `name` held, in order.
    pub fn certificates(&self, name: &str) -> Vec<CertInfo> {
        self.lock()
            .certificates
            .get(name)
            .map(|all| all.iter().filter_map(|pem| first_cert(pem)).collect())
            .unwrap_or_default()
    }

    /// The serving Secrets seen (every Secret with a `tls.crt` but the CA Secret), with how many
    /// distinct certificates each held.
    pub fn serving_secrets(&self) -> BTreeMap<String, usize> {
        self.lock()
            .certificates
            .iter()
            .filter(|(name, certs)| **name != self.ca_secret && !certs.is_empty())
            .map(|(name, certs)| (name.clone(), certs.len()))
            .collect()
    }

    /// Every distinct CA certificate the CA Secret held, in order.
    pub fn ca_certificates(&self) -> Vec<CertInfo> {
        self.certificates(&self.ca_secret)
    }

    /// Serving Secrets whose latest certificate was not issued by the latest CA certificate the
    /// CA Secret held (a rotation's fan-out still to do).
    pub fn stale_serving(&self) -> usize {
        let Some(ca) = self.ca_certificates().pop() else {
            return 0;
        };
        self.serving_secrets()
            .keys()
            .filter(|name| {
                self.certificates(name)
                    .pop()
                    .is_some_and(|leaf| leaf.akid.is_none() || leaf.akid != ca.skid)
            })
            .count()
    }

    /// The CA Secret versions the pki crate would not adopt (a half-written CA), with the reason.
    pub fn ca_problems(&self) -> Vec<String> {
        self.lock().ca_problems.clone()
    }

    /// How many versions of the CA Secret were seen.
    pub fn ca_versions(&self) -> usize {
        self.lock().ca_versions
    }

    /// Every invalid intermediate state seen so far (see the module docs); empty when none.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations()
    }

    /// Asserts that [`Recorder::violations`] is empty, naming the first ten otherwise.
    pub fn assert_no_violations(&self) {
        let found = self.violations();
        assert!(
            found.is_empty(),
            "{} invalid versions written, e.g. {:#?}",
            found.len(),
            &found[..found.len().min(10)]
        );
    }

    /// How many versions of each kind were checked: (serving Secrets, bundles, injected
    /// ConfigMaps).
    pub fn checked(&self) -> (usize, usize, usize) {
        let r = self.lock();
        (r.serving_versions.len(), r.bundles.len(), r.injected.len())
    }

    /// Secrets that were deleted (names, in order), for tests that delete none themselves.
    pub fn deleted_secrets(&self) -> Vec<String> {
        self.lock()
            .changes
            .iter()
            .filter(|c| c.kind == "Secret" && c.deleted)
            .map(|c| c.name.clone())
            .collect()
    }

    /// Re-lists after the first list: each is a gap in which versions may have been missed
    /// (an object's final version is always seen).
    pub fn relists(&self) -> u32 {
        self.lock().relists
    }

    /// Serving Secrets (other than `except`) that held two certificates from one CA: issued again
    /// without cause (a new certificate needs one, and the only one these tests give is a CA
    /// rotation), with the serials.
    pub fn reissued_without_cause(
        &self,
        except: &std::collections::BTreeSet<String>,
    ) -> Vec<String> {
        let mut found = Vec::new();
        for name in self.serving_secrets().keys() {
            if except.contains(name) {
                continue;
            }
            let certs = self.certificates(name);
            let mut issuers: Vec<Option<Vec<u8>>> = certs.iter().map(|c| c.akid.clone()).collect();
            issuers.sort();
            issuers.dedup();
            if issuers.len() != certs.len() {
                found.push(format!(
                    "Secret {name} held {} certificates from only {} CAs (serials {:?})",
                    certs.len(),
                    issuers.len(),
                    certs.iter().map(|c| &c.serial_hex).collect::<Vec<_>>()
                ));
            }
        }
        found
    }

    /// Asserts that no Secret was issued twice by one CA ([`Recorder::reissued_without_cause`]
    /// is empty). Returns the number of distinct certificates per Secret.
    pub fn assert_one_certificate_per_ca(&self) -> BTreeMap<String, usize> {
        let found = self.reissued_without_cause(&Default::default());
        assert!(
            found.is_empty(),
            "issued twice without cause: {:#?}",
            &found[..found.len().min(10)]
        );
        self.serving_secrets()
    }

    /// Asserts that every serving Secret held exactly two certificates, one per CA, the second
    /// signed by the CA whose subject key id is `new_ca_skid`: one rotation re-issued each once.
    pub fn assert_reissued_once_by(&self, new_ca_skid: &[u8]) {
        let per_secret = self.assert_one_certificate_per_ca();
        let wrong: Vec<_> = per_secret.iter().filter(|(_, c)| **c != 2).collect();
        assert!(
            wrong.is_empty(),
            "every Secret re-issued exactly once: {wrong:?}"
        );
        for name in per_secret.keys() {
            let certs = self.certificates(name);
            assert_eq!(certs[1].akid.as_deref(), Some(new_ca_skid), "{name}");
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn first_cert(pem: &[u8]) -> Option<CertInfo> {
    service_ca_pki::parse_pem_certs(pem)
        .ok()?
        .into_iter()
        .next()
}

/// Lists, then watches from the list's resourceVersion; resumes the watch after a disconnect and
/// re-lists only when the API server cannot resume it (410 Gone).
async fn follow<K>(
    api: Api<K>,
    kind: &'static str,
    record: Arc<Mutex<Record>>,
    hook: impl Fn(&mut Record, &K),
    listed: tokio::sync::oneshot::Sender<()>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut listed = Some(listed);
    let lock = || {
        record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    loop {
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(_) => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        {
            let mut r = lock();
            if listed.is_none() {
                r.relists += 1;
            }
            for object in &list.items {
                if r.observe(kind, object.meta(), false) {
                    hook(&mut r, object);
                }
            }
        }
        if let Some(tx) = listed.take() {
            let _ = tx.send(());
        }
        let mut version = list.metadata.resource_version.unwrap_or_default();
        'resume: loop {
            let params = WatchParams::default().timeout(60);
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(status)) if status.code == 410 => break 'resume,
                Err(_) => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let mut stream = stream.boxed();
            loop {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Added(object) | WatchEvent::Modified(object))) => {
                        version = object.resource_version().unwrap_or(version);
                        let mut r = lock();
                        if r.observe(kind, object.meta(), false) {
                            hook(&mut r, &object);
                        }
                    }
                    Ok(Some(WatchEvent::Deleted(object))) => {
                        version = object.resource_version().unwrap_or(version);
                        lock().observe(kind, object.meta(), true);
                    }
                    Ok(Some(WatchEvent::Bookmark(mark))) => {
                        version = mark.metadata.resource_version;
                    }
                    Ok(Some(WatchEvent::Error(status))) if status.code == 410 => break 'resume,
                    Ok(Some(WatchEvent::Error(_))) | Ok(None) | Err(_) => {
                        tokio::time::sleep(RETRY).await;
                        continue 'resume;
                    }
                }
            }
        }
    }
}

/// One Service's Secret against the CA in force: the pki crate's full check, then rustls chain
/// verification against the bundle and a key/certificate match.
fn check_serving(
    svc: &Service,
    secret: Option<&Secret>,
    ca: &SigningCa,
    bundle: &str,
    namespace: &str,
    now: time::OffsetDateTime,
) -> Result<(), String> {
    let secret = secret.ok_or("no Secret")?;
    let name = svc.name_any();
    let headless = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None");
    let names = service_ca_pki::serving_dns_names(&name, namespace, headless, "cluster.local");
    let (crt, key) = (data(secret, TLS_CRT), data(secret, TLS_KEY));
    if let Some(reason) = service_ca_pki::verify_serving_secret(
        crt,
        key,
        ca,
        &names,
        svc.uid().as_deref(),
        Duration::from_secs(3600),
        now,
    ) {
        return Err(reason.as_str().to_string());
    }
    let (crt, key) = (crt.unwrap_or_default(), key.unwrap_or_default());
    crate::tls::verify_chain(bundle, crt, &format!("{name}.{namespace}.svc"))
        .and_then(|()| crate::tls::verify_key_matches(crt, key))
        .map_err(|e| format!("rustls: {e}"))
}

/// The final state, as [`converged`] found it.
pub struct Converged {
    /// The CA in force.
    pub ca: SigningCa,
    /// Serving Secrets checked (one per Service requesting one).
    pub serving: usize,
    /// Injected ConfigMaps checked.
    pub injected: usize,
    /// The CA Secret's forced-rotation-reason annotation (the last rotation request honoured).
    pub forced_rotation_reason: Option<String>,
}

/// Waits up to `timeout` until [`check_converged`] passes, and fails the test with its last
/// complaint otherwise.
pub async fn converged(
    client: &Client,
    namespace: &str,
    ca_secret: &str,
    bundle_configmap: &str,
    timeout: Duration,
) -> Converged {
    let deadline = Instant::now() + timeout;
    loop {
        match check_converged(client, namespace, ca_secret, bundle_configmap).await {
            Ok(done) => return done,
            Err(why) if Instant::now() > deadline => {
                panic!("not converged after {timeout:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Checks everything the controller owns in `namespace` against the CA in force:
/// - the CA Secret holds a CA the pki crate adopts;
/// - the bundle ConfigMap holds exactly that CA's bundle;
/// - every Service requesting a Secret has it, and it passes the pki crate's full check
///   (issuer, signature, names, Service UID, key) and, independently, rustls/webpki chain
///   verification against the bundle and a key/certificate match;
/// - every ConfigMap asking for injection holds the bundle.
pub async fn check_converged(
    client: &Client,
    namespace: &str,
    ca_secret: &str,
    bundle_configmap: &str,
) -> Result<Converged, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let failed = |what: &str, e: kube::Error| format!("{what}: {e}");
    let ca_object = secrets
        .get_opt(ca_secret)
        .await
        .map_err(|e| failed("CA Secret", e))?
        .ok_or("no CA Secret")?;
    let ca = adopt(&ca_object).map_err(|e| format!("CA Secret: {e}"))?;
    let bundle = ca.bundle_pem();
    let published = configmaps
        .get_opt(bundle_configmap)
        .await
        .map_err(|e| failed("bundle ConfigMap", e))?
        .and_then(|cm| cm.data?.get(CA_BUNDLE_CRT).cloned());
    if published.as_deref() != Some(bundle.as_str()) {
        return Err("the bundle ConfigMap does not hold the current CA's bundle".into());
    }
    let all_secrets: BTreeMap<String, Secret> = secrets
        .list(&ListParams::default())
        .await
        .map_err(|e| failed("Secrets", e))?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let now = time::OffsetDateTime::now_utc();
    let mut serving = 0;
    // Every Service is checked, so that a failure names all that are wrong, not only the first.
    let mut wrong = Vec::new();
    for svc in services
        .list(&ListParams::default())
        .await
        .map_err(|e| failed("Services", e))?
        .items
    {
        let Some(secret_name) = svc.annotations().get(SECRET_NAME_ANNOTATION) else {
            continue;
        };
        match check_serving(
            &svc,
            all_secrets.get(secret_name),
            &ca,
            &bundle,
            namespace,
            now,
        ) {
            Ok(()) => serving += 1,
            Err(why) => wrong.push(format!(
                "Service {} (Secret {secret_name}): {why}",
                svc.name_any()
            )),
        }
    }
    if !wrong.is_empty() {
        return Err(format!(
            "{} Services without a valid Secret: {}",
            wrong.len(),
            wrong[..wrong.len().min(10)].join("; ")
        ));
    }
    let mut injected = 0;
    for cm in configmaps
        .list(&ListParams::default())
        .await
        .map_err(|e| failed("ConfigMaps", e))?
        .items
    {
        if cm.annotations().get(INJECT_ANNOTATION).map(String::as_str) != Some("true") {
            continue;
        }
        let held = cm.data.as_ref().and_then(|d| d.get(SERVICE_CA_CRT));
        if held != Some(&bundle) {
            return Err(format!(
                "ConfigMap {} does not hold the bundle",
                cm.name_any()
            ));
        }
        injected += 1;
    }
    Ok(Converged {
        ca,
        serving,
        injected,
        forced_rotation_reason: ca_object.annotations().get(FORCED_ROTATION_REASON).cloned(),
    })
}

#[cfg(test)]
mod tests {
    //! The witness must be able to fail: each kind of invalid version is fed to a record and
    //! found.

    use super::*;
    use service_ca_pki::{CaConfig, ChainOrder, KeyAlgorithm, ServingRequest};

    fn ca() -> SigningCa {
        let cfg = CaConfig {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ..CaConfig::default()
        };
        SigningCa::create(&cfg, time::OffsetDateTime::now_utc()).unwrap()
    }

    /// (tls.crt, tls.key) for Service `svc` in namespace `ns`.
    fn leaf(ca: &SigningCa, svc: &str) -> (String, String) {
        let request = ServingRequest {
            service: svc,
            namespace: "ns",
            uid: "uid",
            headless: false,
            cluster_domain: "cluster.local",
            lifetime: Duration::from_secs(3600),
            chain_order: ChainOrder::Portable,
            extra_dns_names: &[],
        };
        let key = service_ca_pki::generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let issued =
            service_ca_pki::issue_serving(ca, &request, key, time::OffsetDateTime::now_utc())
                .unwrap();
        (issued.cert_chain_pem, issued.key_pem.to_string())
    }

    fn secret(name: &str, rv: u64, crt: &str, key: Option<&str>, svc: &str) -> Secret {
        let mut data =
            serde_json::json!({TLS_CRT: k8s_openapi::ByteString(crt.as_bytes().to_vec())});
        if let Some(key) = key {
            data[TLS_KEY] = serde_json::json!(k8s_openapi::ByteString(key.as_bytes().to_vec()));
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "resourceVersion": rv.to_string(),
                "annotations": {ORIGINATING_SERVICE: svc},
            },
            "data": data,
        }))
        .unwrap()
    }

    fn configmap(name: &str, rv: u64, key: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "resourceVersion": rv.to_string()},
            "data": {key: value},
        }))
        .unwrap()
    }

    fn record() -> Record {
        Record {
            namespace: "ns".into(),
            ..Record::default()
        }
    }

    #[test]
    fn valid_versions_pass() {
        let ca = ca();
        let (crt, key) = leaf(&ca, "a");
        let mut r = record();
        r.configmap(&configmap(
            BUNDLE_CONFIGMAP,
            10,
            CA_BUNDLE_CRT,
            &ca.bundle_pem(),
        ));
        r.secret(&secret("a-tls", 11, &crt, Some(&key), "a"), "signing-key");
        r.configmap(&configmap("trust", 12, SERVICE_CA_CRT, &ca.bundle_pem()));
        assert_eq!(r.violations(), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_invalid_version_is_found() {
        let (published, other) = (ca(), ca());
        let (crt, key) = leaf(&published, "a");
        let (_, wrong_key) = leaf(&published, "a");
        let (foreign_crt, foreign_key) = leaf(&other, "b");
        let mut r = record();
        // Before any bundle.
        r.secret(
            &secret("early-tls", 5, &crt, Some(&key), "a"),
            "signing-key",
        );
        r.configmap(&configmap(
            BUNDLE_CONFIGMAP,
            10,
            CA_BUNDLE_CRT,
            &published.bundle_pem(),
        ));
        // Half-written: no key, and another key.
        r.secret(&secret("nokey-tls", 11, &crt, None, "a"), "signing-key");
        r.secret(
            &secret("mismatch-tls", 12, &crt, Some(&wrong_key), "a"),
            "signing-key",
        );
        // Signed by a CA that was never published.
        r.secret(
            &secret("foreign-tls", 13, &foreign_crt, Some(&foreign_key), "b"),
            "signing-key",
        );
        // An injected bundle never published, and a CA Secret without its key.
        r.configmap(&configmap("trust", 14, SERVICE_CA_CRT, &other.bundle_pem()));
        r.secret(
            &secret("signing-key", 15, &other.tls_crt_pem(), None, ""),
            "signing-key",
        );
        let found = r.violations();
        for needle in [
            "early-tls version 5: written before any bundle",
            "nokey-tls version 11: half-written",
            "mismatch-tls version 12: half-written",
            "foreign-tls version 13: does not verify",
            "ConfigMap trust version 14",
            "CA Secret version 15",
        ] {
            assert!(
                found.iter().any(|f| f.contains(needle)),
                "{needle} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), 6, "{found:#?}");
    }
}
