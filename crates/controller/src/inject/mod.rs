//! CA bundle injection: one generic controller, instantiated for ConfigMaps, APIServices, CRDs
//! and mutating/validating webhook configurations (docs/behavior.md §10).
//!
//! Every kind is watched metadata-only, and only objects carrying the injection annotation are
//! kept in the cache: memory follows the number of injection targets, not of ConfigMaps. The
//! full object is fetched when it is reconciled.

mod namespaces;
mod targets;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use k8s_openapi::api::core::v1::Secret;

use crate::ca::CaReceiver;
use crate::config::{Config, ConfigError};
use crate::events::{EventSink, WarningLimiter};
use crate::fights::{FightDetector, Verdict};
use crate::metrics::Metrics;
use crate::names;
use crate::plumbing::{self, ReconcileError, ReconcileMeasurer};
use crate::readiness::{CacheSync, Supervisor};
use crate::warm::WarmCache;

pub(crate) use namespaces::validate as validate_namespace_bundle;

/// How long a failed injection waits before the next attempt (conflicts retry sooner).
const RETRY: Duration = Duration::from_secs(30);

/// What injecting the bundle into one object takes.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The object already holds the bundle.
    UpToDate,
    /// The object cannot take a bundle; the reason is logged, nothing is retried.
    Skip(String),
    /// The object holds an outdated bundle and cannot be updated in place (an immutable
    /// ConfigMap): reported as a Warning Event and counted, since its consumers keep the old CA.
    Blocked(String),
    /// The object asks for the bundle but must not get it (a ServiceAccount token Secret, a
    /// serving Secret): a Warning Event, nothing written.
    Refused(String),
    /// A patch that injects the bundle.
    Patch {
        /// A JSON merge patch (with a resourceVersion precondition), or a JSON patch that
        /// touches only the `caBundle` fields (webhook configurations).
        body: PatchBody,
        /// ConfigMap data keys the patch deletes (docs/behavior.md §10.3), for the Event.
        removed_data_keys: Vec<String>,
    },
}

/// The two patch types the injectors send.
#[derive(Debug, PartialEq)]
pub(crate) enum PatchBody {
    /// `application/merge-patch+json`.
    Merge(serde_json::Value),
    /// `application/json-patch+json`: a list of operations.
    Json(serde_json::Value),
    /// `application/apply-patch+yaml`: server-side apply, forced, as the controller's field
    /// manager, so service-ca owns exactly the fields in the body (merge-mode ConfigMaps,
    /// Secrets).
    Apply(serde_json::Value),
}

impl Outcome {
    fn patch(body: serde_json::Value) -> Self {
        Outcome::Patch {
            body: PatchBody::Merge(body),
            removed_data_keys: vec![],
        }
    }
}

/// A kind the bundle can be injected into.
pub(crate) trait Target:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Controller name, used in logs and metrics.
    const KIND: &'static str;
    /// Whether the alpha annotation is honoured for this kind (docs/behavior.md §10.2).
    const ACCEPTS_ALPHA: bool;
    /// An API handle for objects in `namespace`, or all namespaces (cluster-scoped kinds ignore
    /// the namespace).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// The same scope, metadata only (what the watch uses).
    fn watch_api(client: Client, namespace: Option<&str>) -> Api<PartialObjectMeta<Self>>;
    /// What injecting `bundle` into this object takes.
    fn injection(&self, bundle: &str) -> Outcome;
    /// The injection, when the cached metadata alone decides it (no GET): `ours` says the
    /// object is as this process last wrote it. None: read the object first.
    fn injection_from_meta(
        _meta: &kube::api::ObjectMeta,
        _bundle: &str,
        _ours: bool,
    ) -> Option<Outcome> {
        None
    }
    /// Drops what the cache does not need from a watched object's managed fields.
    fn trim_cached(meta: &mut kube::api::ObjectMeta) {
        meta.managed_fields = None;
    }
}

/// Whether the injection annotation asks for this object: value `true`, any case (docs/behavior.md §10.1).
pub(crate) fn selected<K: Target>(meta: &kube::api::ObjectMeta) -> bool {
    let is_true = |key: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    is_true(names::INJECT_BETA) || (K::ACCEPTS_ALPHA && is_true(names::INJECT_ALPHA))
}

/// Errors of the injectors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InjectError {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {}", plumbing::api_message(.0))]
    Kube(#[from] kube::Error),
    /// A JSON patch this controller built is malformed (a bug).
    #[error("building the JSON patch: {0}")]
    JsonPatch(#[from] serde_json::Error),
}

impl ReconcileError for InjectError {
    fn category(&self) -> &'static str {
        match self {
            InjectError::Kube(e) => plumbing::kube_category(e),
            InjectError::JsonPatch(_) => "internal",
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, InjectError::Kube(e) if plumbing::status_code(e) == Some(409))
    }
}

/// Shared state of the injectors.
pub(crate) struct InjectContext {
    client: Client,
    ca: CaReceiver,
    events: EventSink,
    metrics: Arc<Metrics>,
    blocked: WarningLimiter,
}

impl InjectContext {
    /// Bundles what reconciles need.
    pub(crate) fn new(
        client: Client,
        ca: CaReceiver,
        events: EventSink,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            ca,
            events,
            metrics,
            // One Warning per blocked object per hour, and at once for a new bundle.
            blocked: WarningLimiter::new(Duration::from_secs(3600)),
        }
    }
}

/// Which objects one injector serves, and what it injects: the standard injector of a kind, or
/// the legacy ConfigMap injector (docs/behavior.md §10.7), which differs only in these two respects.
#[derive(Clone)]
pub(crate) struct Flavor {
    /// Name in logs and metrics.
    pub(crate) name: &'static str,
    /// Whether an object's metadata asks for this injector.
    pub(crate) selects: fn(&kube::api::ObjectMeta) -> bool,
    /// Appended to the CA bundle (legacy: the ServiceAccount CA and a newline).
    pub(crate) suffix: Option<Arc<str>>,
}

impl Flavor {
    /// The standard injector of kind `K`.
    pub(crate) fn standard<K: Target>() -> Self {
        Self {
            name: K::KIND,
            selects: selected::<K>,
            suffix: None,
        }
    }

    /// The legacy ConfigMap injector, appending `service_account_ca` (docs/behavior.md §10.7).
    pub(crate) fn legacy(service_account_ca: &str) -> Self {
        Self {
            name: "configmap-legacy",
            selects: legacy_selected,
            suffix: Some(format!("{service_account_ca}\n").into()),
        }
    }

    /// The legacy injector if the configuration turns it on, with the CA file it appends read.
    pub(crate) fn legacy_from_config(cfg: &Config) -> Result<Option<Self>, ConfigError> {
        if !cfg.legacy_injector {
            return Ok(None);
        }
        let path = cfg.legacy_ca_file.as_deref().ok_or_else(|| {
            ConfigError::Invalid("the legacy injector needs --legacy-ca-file".into())
        })?;
        let ca = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("legacy CA file {}: {e}", path.display())))?;
        Ok(Some(Self::legacy(&ca)))
    }

    fn bundle(&self, ca_bundle: String) -> String {
        match &self.suffix {
            Some(suffix) => ca_bundle + suffix,
            None => ca_bundle,
        }
    }
}

/// Secrets are selected by `service-ca.dev/inject-cabundle: "true"` (any case) alone: the
/// OpenShift keys never meant Secrets (docs/behavior.md §10.8).
pub(crate) fn secret_selected(meta: &kube::api::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(names::INJECT_SECRET))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl Flavor {
    /// The Secret injector.
    pub(crate) fn secret() -> Self {
        Self {
            name: "secret",
            selects: secret_selected,
            suffix: None,
        }
    }
}

/// One event of the serving controller's metadata-only Secret watch.
pub(crate) type SecretEvent = watcher::Event<PartialObjectMeta<Secret>>;

/// The Secret injector's side of the serving controller's Secret watch: there is one
/// metadata-only Secret watch per process, and its events are also handed here, stripped to what
/// the injector's cache keeps (a Secret that does not ask for the bundle becomes a deletion), so
/// Secret injection costs no second watch and caches no Secret data.
#[derive(Clone)]
pub(crate) struct SecretTee {
    tx: tokio::sync::mpsc::UnboundedSender<SecretEvent>,
}

/// The receiving end of [`SecretTee`], consumed by the Secret injector's cache.
pub(crate) struct SecretFeed {
    rx: tokio::sync::mpsc::UnboundedReceiver<SecretEvent>,
}

/// A connected [`SecretTee`] and [`SecretFeed`].
pub(crate) fn secret_tee() -> (SecretTee, SecretFeed) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (SecretTee { tx }, SecretFeed { rx })
}

impl SecretTee {
    /// Hands one watch event over (a closed feed, at shutdown, is ignored).
    pub(crate) fn observe(&self, event: &SecretEvent) {
        let strip = |secret: &PartialObjectMeta<Secret>| {
            let mut secret = secret.clone();
            secret.metadata.managed_fields = None;
            plumbing::keep_annotations(&mut secret.metadata, CACHED_ANNOTATIONS);
            secret
        };
        let forwarded = match event {
            watcher::Event::Init => Some(watcher::Event::Init),
            watcher::Event::InitDone => Some(watcher::Event::InitDone),
            watcher::Event::InitApply(s) => {
                secret_selected(&s.metadata).then(|| watcher::Event::InitApply(strip(s)))
            }
            watcher::Event::Apply(s) if secret_selected(&s.metadata) => {
                Some(watcher::Event::Apply(strip(s)))
            }
            // Not (or no longer) asking: a deletion keeps it out of the cache.
            watcher::Event::Apply(s) | watcher::Event::Delete(s) => {
                Some(watcher::Event::Delete(strip(s)))
            }
        };
        if let Some(event) = forwarded {
            let _ = self.tx.send(event);
        }
    }
}

/// The annotations the injectors' caches keep.
const CACHED_ANNOTATIONS: &[&str] = &[
    names::INJECT_BETA,
    names::INJECT_ALPHA,
    names::INJECT_LEGACY,
    names::INJECT_MODE,
    names::INJECT_SECRET,
    names::ORIGINATING_UID_BETA,
    names::ORIGINATING_UID_ALPHA,
    names::ORIGINATING_NAME_BETA,
    names::ORIGINATING_NAME_ALPHA,
    names::OWNING_COMPONENT,
];

/// The legacy injector serves ConfigMaps named `openshift-service-ca.crt` whose legacy annotation
/// is `true` (any case), and stands down as soon as either `inject-cabundle` key is present,
/// whatever its value, so the two injectors never fight (docs/behavior.md §10.7).
pub(crate) fn legacy_selected(meta: &kube::api::ObjectMeta) -> bool {
    let annotations = meta.annotations.as_ref();
    let has = |key: &str| annotations.is_some_and(|a| a.contains_key(key));
    meta.name.as_deref() == Some(names::LEGACY_CONFIGMAP_NAME)
        && annotations
            .and_then(|a| a.get(names::INJECT_LEGACY))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        && !has(names::INJECT_BETA)
        && !has(names::INJECT_ALPHA)
}

/// One injector: the shared state plus its flavor.
struct KindContext {
    shared: Arc<InjectContext>,
    flavor: Flavor,
    fights: FightDetector,
    written: WrittenVersions,
}

/// The resourceVersion each object had after this term's last write to it, and a hash of the
/// bundle written: an event carrying that version needs no GET (it is our own write coming
/// back, or a new CA to write over content we know).
struct WrittenVersions {
    versions: std::sync::Mutex<std::collections::HashMap<String, (String, u64)>>,
    /// Whether an object (by [`describe`]) is still in the cache, and how many are: bounds the
    /// map by the objects that still exist.
    exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
    cached: Box<dyn Fn() -> usize + Send + Sync>,
}

impl WrittenVersions {
    /// Versions of the objects in `store`.
    fn new<K: Target>(store: kube::runtime::reflector::Store<PartialObjectMeta<K>>) -> Self
    where
        PartialObjectMeta<K>: Resource<DynamicType = ()>,
    {
        let count = store.clone();
        Self {
            versions: Default::default(),
            exists: Box::new(move |object| {
                let reference = match object.split_once('/') {
                    Some((ns, name)) => ObjectRef::new(name).within(ns),
                    None => ObjectRef::new(object),
                };
                store.get(&reference).is_some()
            }),
            cached: Box::new(move || count.len()),
        }
    }

    /// How the object at `meta`'s resourceVersion relates to our last write.
    fn lookup(&self, object: &str, meta: &kube::api::ObjectMeta, bundle: &str) -> Written {
        let known = self
            .versions
            .lock()
            .ok()
            .and_then(|v| v.get(object).cloned());
        match known {
            Some((version, hash)) if meta.resource_version.as_deref() == Some(version.as_str()) => {
                if hash == bundle_hash(bundle) {
                    Written::Current
                } else {
                    Written::Outdated
                }
            }
            _ => Written::Unknown,
        }
    }

    /// Whether our last write to `object` put this same bundle there: writing it again means
    /// someone else changed it since (a new bundle after a CA change is not a fight).
    fn restores(&self, object: &str, bundle: &str) -> bool {
        self.versions
            .lock()
            .ok()
            .and_then(|v| v.get(object).map(|(_, hash)| *hash == bundle_hash(bundle)))
            .unwrap_or(false)
    }

    /// Records the version our write produced (None: forget the object).
    fn record(&self, object: &str, version: Option<String>, bundle: &str) {
        let Ok(mut versions) = self.versions.lock() else {
            return;
        };
        match version {
            Some(version) => {
                versions.insert(object.to_string(), (version, bundle_hash(bundle)));
            }
            None => {
                versions.remove(object);
            }
        }
        if versions.len() > 2 * (self.cached)() + 512 {
            versions.retain(|k, _| (self.exists)(k));
        }
    }
}

/// What [`WrittenVersions`] knows of an object.
#[derive(Debug, PartialEq)]
enum Written {
    /// Not as we last wrote it (or never written by this term).
    Unknown,
    /// As we last wrote it, holding the current bundle.
    Current,
    /// As we last wrote it, holding a previous bundle.
    Outdated,
}

fn bundle_hash(bundle: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bundle.hash(&mut h);
    h.finish()
}

/// Keeps only selected objects in the cache: an object that loses its annotation is turned into
/// a deletion, so the cache (and memory) holds exactly the injection targets.
fn keep_selected<K: Target>(
    selects: fn(&kube::api::ObjectMeta) -> bool,
    event: watcher::Event<PartialObjectMeta<K>>,
) -> Option<watcher::Event<PartialObjectMeta<K>>> {
    match event {
        watcher::Event::Apply(obj) if !selects(&obj.metadata) => Some(watcher::Event::Delete(obj)),
        watcher::Event::InitApply(obj) if !selects(&obj.metadata) => None,
        other => Some(other),
    }
}

/// Starts the cache of one injector's targets under `root` (the process), fed by `events` (a
/// metadata-only watch): only selected objects are kept, stripped to the injection annotations.
fn watch<K: Target, S>(
    events: S,
    flavor: &Flavor,
    caches: &CacheSync,
    root: &Supervisor,
) -> WarmCache<PartialObjectMeta<K>>
where
    PartialObjectMeta<K>: Resource<DynamicType = ()>,
    S: futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>>
        + Send
        + 'static,
{
    let selects = flavor.selects;
    let (cache, feed) = WarmCache::new(flavor.name, caches, move |writer| {
        events
            .filter_map(move |event| {
                futures::future::ready(match event {
                    Ok(e) => keep_selected::<K>(selects, e).map(Ok),
                    Err(e) => Some(Err(e)),
                })
            })
            .modify(|obj| {
                K::trim_cached(&mut obj.metadata);
                let managed_fields = obj.metadata.managed_fields.take();
                plumbing::keep_annotations(&mut obj.metadata, CACHED_ANNOTATIONS);
                obj.metadata.managed_fields = managed_fields;
            })
            .reflect(writer)
            .applied_objects()
    });
    root.spawn(flavor.name, feed);
    cache
}

/// Runs one injector's controller for one term, over its warm cache, until `token` is
/// cancelled.
async fn run<K: Target>(
    ctx: Arc<InjectContext>,
    targets: &WarmCache<PartialObjectMeta<K>>,
    concurrency: u16,
    flavor: Flavor,
    token: CancellationToken,
) where
    PartialObjectMeta<K>: Resource<DynamicType = ()>,
{
    let name = flavor.name;
    let written = WrittenVersions::new::<K>(targets.store());
    let results = Controller::for_stream(targets.subscribe(), targets.store())
        .reconcile_all_on(plumbing::ca_changes(ctx.ca.clone()))
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(token.cancelled_owned())
        .run(
            reconcile::<K>,
            error_policy::<K>,
            Arc::new(KindContext {
                shared: ctx,
                flavor,
                fights: FightDetector::default(),
                written,
            }),
        );
    plumbing::consume(name, results).await;
}

fn error_policy<K: Target>(
    obj: Arc<PartialObjectMeta<K>>,
    err: &InjectError,
    ctx: Arc<KindContext>,
) -> Action {
    plumbing::requeue_after_error(
        &ctx.shared.metrics,
        ctx.flavor.name,
        err,
        &ctx.fights,
        &describe(&obj.metadata),
        RETRY,
    )
}

async fn reconcile<K: Target>(
    meta: Arc<PartialObjectMeta<K>>,
    ctx: Arc<KindContext>,
) -> Result<Action, InjectError>
where
    PartialObjectMeta<K>: Resource<DynamicType = ()>,
{
    let _measure = ReconcileMeasurer::start(&ctx.shared.metrics, ctx.flavor.name);
    let span = plumbing::reconcile_span(ctx.flavor.name, &ObjectRef::from_obj(meta.as_ref()));
    let result = inject::<K>(&meta, &ctx).instrument(span).await;
    if result.is_ok() {
        ctx.fights.settled(&describe(&meta.metadata));
    }
    result
}

fn describe(meta: &kube::api::ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// Observe (the cached metadata, our last write, else the live object; the bundle), decide
/// ([`Target::injection_from_meta`], else [`Target::injection`]), execute one arm.
async fn inject<K: Target>(
    meta: &PartialObjectMeta<K>,
    kind: &KindContext,
) -> Result<Action, InjectError>
where
    PartialObjectMeta<K>: Resource<DynamicType = ()>,
{
    let (ctx, flavor) = (kind.shared.as_ref(), &kind.flavor);
    let Some(bundle) = ctx
        .ca
        .borrow()
        .as_ref()
        .map(|ca| flavor.bundle(ca.bundle_pem()))
    else {
        return Ok(Action::await_change());
    };
    let object = describe(&meta.metadata);
    let written = kind.written.lookup(&object, &meta.metadata, &bundle);
    if written == Written::Current {
        // Our own write coming back.
        return Ok(Action::await_change());
    }
    // Writing the bundle we last wrote there again undoes someone else's change: only that
    // counts toward a fight, and only that is held back while fought over (a new CA's bundle
    // always gets through).
    let restores = kind.written.restores(&object, &bundle);
    if restores && let Some(until) = kind.fights.paused_until(&object) {
        debug!(kind = flavor.name, %object, "left alone: another writer keeps undoing the injection");
        let wait = until.saturating_duration_since(tokio::time::Instant::now());
        return Ok(Action::requeue(wait.max(Duration::from_secs(1))));
    }
    let api = K::api(ctx.client.clone(), meta.metadata.namespace.as_deref());
    let target = Written::Outdated == written;
    if let Some(Outcome::Patch {
        body,
        removed_data_keys,
    }) = K::injection_from_meta(&meta.metadata, &bundle, target)
    {
        // One write, straight from the event: its resourceVersion is the precondition, so a
        // conflict means newer state is on its way.
        let reference = meta.object_ref(&());
        match write_patch(kind, &api, &meta.metadata, &object, body, &bundle, restores).await {
            Ok(()) => {
                if !removed_data_keys.is_empty() {
                    report_replaced_data(kind, reference, &object, &removed_data_keys).await;
                }
                return Ok(Action::await_change());
            }
            // Invalid for a reason the metadata does not show (an immutable ConfigMap): read it.
            Err(InjectError::Kube(e)) if plumbing::status_code(&e) == Some(422) => {
                debug!(kind = flavor.name, %object, error = %plumbing::api_message(&e), "reading the object after a refused patch")
            }
            Err(e) => return Err(e),
        }
    }
    let Some(live) = api.get_opt(&meta.name_any()).await? else {
        kind.written.record(&object, None, &bundle);
        return Ok(Action::await_change());
    };
    // Re-check on the live object: an annotation removed since the event means no injection.
    if !(flavor.selects)(live.meta()) {
        return Ok(Action::await_change());
    }
    match live.injection(&bundle) {
        Outcome::UpToDate => Ok(Action::await_change()),
        Outcome::Skip(reason) => {
            info!(kind = flavor.name, %object, %reason, "not injecting");
            Ok(Action::await_change())
        }
        Outcome::Blocked(reason) => {
            report_blocked(kind, live.object_ref(&()), &object, &reason, &bundle).await;
            Ok(Action::await_change())
        }
        Outcome::Refused(reason) => {
            report_refused(kind, live.object_ref(&()), &object, &reason).await;
            Ok(Action::await_change())
        }
        Outcome::Patch {
            body,
            removed_data_keys,
        } => {
            write_patch(kind, &api, live.meta(), &object, body, &bundle, restores).await?;
            if !removed_data_keys.is_empty() {
                report_replaced_data(kind, live.object_ref(&()), &object, &removed_data_keys).await;
            }
            Ok(Action::await_change())
        }
    }
}

/// Sends the injection patch (conditional on the resourceVersion in `before`), remembers the
/// version it produced, and, when it `restores` our last bundle, reports a write fight if this
/// write starts one.
async fn write_patch<K: Target>(
    kind: &KindContext,
    api: &Api<K>,
    before: &kube::api::ObjectMeta,
    object: &str,
    body: PatchBody,
    bundle: &str,
    restores: bool,
) -> Result<(), InjectError> {
    let (ctx, flavor) = (kind.shared.as_ref(), &kind.flavor);
    let mut pp = PatchParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = match body {
        PatchBody::Merge(body) => Patch::Merge(body),
        PatchBody::Json(ops) => Patch::Json(serde_json::from_value::<json_patch::Patch>(ops)?),
        PatchBody::Apply(body) => {
            // Forced: the annotation hands this one field to service-ca, whoever set it before.
            pp.force = true;
            Patch::Apply(body)
        }
    };
    let name = before.name.as_deref().unwrap_or_default();
    let after = api.patch(name, &pp, &patch).await?;
    kind.written
        .record(object, after.meta().resource_version.clone(), bundle);
    if after.meta().resource_version == before.resource_version {
        // Nothing changed (the object already held the bundle): not a write.
        return Ok(());
    }
    ctx.metrics.wrote(flavor.name);
    info!(kind = flavor.name, %object, "CA bundle injected");
    if restores && let Verdict::FightStarted(_) = kind.fights.record(object) {
        let other = crate::fights::other_manager(before.managed_fields.as_ref());
        warn!(kind = flavor.name, %object, %other, "write fight detected");
        ctx.events
            .publish(
                &after.object_ref(&()),
                EventType::Warning,
                "WriteFightDetected",
                "Inject",
                format!(
                    "the injected CA bundle keeps being changed by {other}; service-ca leaves this object alone for 30 minutes. Stop the other writer or remove the inject annotation"
                ),
            )
            .await;
    }
    Ok(())
}

/// An object holding an outdated bundle it cannot be updated to: a Warning (once per object and
/// bundle per hour) and the metric.
async fn report_blocked(
    kind: &KindContext,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    object: &str,
    reason: &str,
    bundle: &str,
) {
    let ctx = kind.shared.as_ref();
    warn!(kind = kind.flavor.name, %object, %reason, "outdated CA bundle cannot be updated");
    // Keyed by the bundle too: a new CA is reported again at once.
    let key = format!("{reason} {:x}", bundle_hash(bundle));
    if ctx.blocked.admit(object, &key) {
        ctx.metrics.injection_blocked(kind.flavor.name);
        ctx.events
            .publish(
                &reference,
                EventType::Warning,
                "CABundleInjectionBlocked",
                "Inject",
                format!("{object} holds an outdated service CA bundle: {reason}"),
            )
            .await;
    }
}

/// An object that asks for the bundle but must not get it: a Warning (once per object and
/// reason per hour).
async fn report_refused(
    kind: &KindContext,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    object: &str,
    reason: &str,
) {
    let ctx = kind.shared.as_ref();
    warn!(kind = kind.flavor.name, %object, %reason, "CA bundle injection refused");
    if ctx.blocked.admit(object, &format!("refused: {reason}")) {
        ctx.events
            .publish(
                &reference,
                EventType::Warning,
                "CABundleInjectionRefused",
                "Inject",
                format!("service-ca does not inject its CA bundle into {object}: {reason}"),
            )
            .await;
    }
}

/// ConfigMap injection removed other data keys (the original's contract): say which.
async fn report_replaced_data(
    kind: &KindContext,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    object: &str,
    keys: &[String],
) {
    warn!(%object, ?keys, "injection replaced ConfigMap data");
    let note = format!(
        "injected the service CA bundle into {}; by design this removed the other data keys: {}",
        names::SERVICE_CA_CRT,
        keys.join(", ")
    );
    kind.shared
        .events
        .publish(
            &reference,
            EventType::Warning,
            "CABundleInjectionReplacedData",
            "Inject",
            note,
        )
        .await;
}

/// Starts one term's controller for an injector over its warm cache.
type TermStarter = Box<dyn Fn(&Supervisor, &Arc<InjectContext>) + Send + Sync>;

/// The injectors' watches (one per kind, and the legacy ConfigMap injector's when configured),
/// kept current for the whole process; each term starts its controllers over them.
pub(crate) struct InjectWatches {
    starters: Vec<TermStarter>,
}

impl InjectWatches {
    /// Starts the watch of every injector the configuration enables under `root`.
    pub(crate) fn start(
        client: &Client,
        cfg: &Config,
        legacy: Option<Flavor>,
        secrets: SecretFeed,
        caches: &CacheSync,
        root: &Supervisor,
    ) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
        };
        use k8s_openapi::api::core::v1::ConfigMap;
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
        let mut watches = Self { starters: vec![] };
        let mut add = WatchAdder {
            client,
            cfg,
            caches,
            root,
            watches: &mut watches,
        };
        add.flavor::<ConfigMap>(Flavor::standard::<ConfigMap>());
        if let Some(legacy) = legacy {
            add.flavor::<ConfigMap>(legacy);
        }
        let secret_events = futures::stream::unfold(secrets.rx, |mut rx| async move {
            rx.recv().await.map(|event| (Ok(event), rx))
        });
        add.flavor_from::<Secret, _>(Flavor::secret(), secret_events);
        if cfg.cluster_scoped_injection {
            add.flavor::<APIService>(Flavor::standard::<APIService>());
            add.flavor::<CustomResourceDefinition>(Flavor::standard::<CustomResourceDefinition>());
            add.flavor::<MutatingWebhookConfiguration>(Flavor::standard::<
                MutatingWebhookConfiguration,
            >());
            add.flavor::<ValidatingWebhookConfiguration>(Flavor::standard::<
                ValidatingWebhookConfiguration,
            >());
        }
        // The bundle in every namespace: its watches only when on; every term runs its clean-up
        // (deleting the ConfigMaps it created when the option is off or was renamed).
        let bundles =
            namespaces::NamespaceBundleWatches::start(client, cfg, caches, root).map(Arc::new);
        let (watch_namespace, concurrency) = (cfg.watch_namespace.clone(), cfg.concurrency);
        watches.starters.push(Box::new(move |supervisor, ctx| {
            let (bundles, ctx, watch_namespace) =
                (bundles.clone(), ctx.clone(), watch_namespace.clone());
            let token = supervisor.token().clone();
            supervisor.spawn("namespace-bundle", async move {
                namespaces::run(ctx, bundles.as_deref(), watch_namespace, concurrency, token).await
            });
        }));
        watches
    }

    /// Starts every injector's controller for the term `supervisor` runs.
    pub(crate) fn start_term(&self, supervisor: &Supervisor, ctx: &Arc<InjectContext>) {
        for start in &self.starters {
            start(supervisor, ctx);
        }
    }
}

/// What every injector's watch is started with.
struct WatchAdder<'a> {
    client: &'a Client,
    cfg: &'a Config,
    caches: &'a CacheSync,
    root: &'a Supervisor,
    watches: &'a mut InjectWatches,
}

impl WatchAdder<'_> {
    /// An injector over its own metadata-only watch.
    fn flavor<K: Target>(&mut self, flavor: Flavor)
    where
        PartialObjectMeta<K>: Resource<DynamicType = ()>,
    {
        let api = K::watch_api(self.client.clone(), self.cfg.watch_namespace.as_deref());
        let events = watcher(api, plumbing::watch_config()).default_backoff();
        self.flavor_from::<K, _>(flavor, events);
    }

    /// An injector over `events`, a metadata-only watch (its own, or one shared with another
    /// controller).
    fn flavor_from<K: Target, S>(&mut self, flavor: Flavor, events: S)
    where
        PartialObjectMeta<K>: Resource<DynamicType = ()>,
        S: futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>>
            + Send
            + 'static,
    {
        let targets = Arc::new(watch::<K, S>(events, &flavor, self.caches, self.root));
        let concurrency = self.cfg.concurrency;
        self.watches.starters.push(Box::new(move |supervisor, ctx| {
            let (targets, ctx, flavor) = (targets.clone(), ctx.clone(), flavor.clone());
            let token = supervisor.token().clone();
            supervisor.spawn(flavor.name, async move {
                run::<K>(ctx, &targets, concurrency, flavor, token).await
            });
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn meta(pairs: &[(&str, &str)]) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn selection_rules() {
        assert!(selected::<ConfigMap>(&meta(&[(
            names::INJECT_BETA,
            "true"
        )])));
        assert!(selected::<ConfigMap>(&meta(&[(
            names::INJECT_BETA,
            "TRUE"
        )])));
        assert!(selected::<ConfigMap>(&meta(&[(
            names::INJECT_ALPHA,
            "True"
        )])));
        assert!(!selected::<ConfigMap>(&meta(&[(
            names::INJECT_BETA,
            "false"
        )])));
        assert!(!selected::<ConfigMap>(&meta(&[(
            names::INJECT_BETA,
            "yes"
        )])));
        assert!(!selected::<ConfigMap>(&meta(&[])));
        // CRDs and webhook configurations accept only the beta key.
        assert!(selected::<ValidatingWebhookConfiguration>(&meta(&[(
            names::INJECT_BETA,
            "true"
        )])));
        assert!(!selected::<ValidatingWebhookConfiguration>(&meta(&[(
            names::INJECT_ALPHA,
            "true"
        )])));
    }
    #[test]
    fn legacy_selection_stands_down_for_any_inject_key() {
        let named = |pairs: &[(&str, &str)]| kube::api::ObjectMeta {
            name: Some(names::LEGACY_CONFIGMAP_NAME.into()),
            ..meta(pairs)
        };
        assert!(legacy_selected(&named(&[(names::INJECT_LEGACY, "TRUE")])));
        assert!(!legacy_selected(&meta(&[(names::INJECT_LEGACY, "true")])));
        assert!(!legacy_selected(&named(&[(names::INJECT_LEGACY, "false")])));
        assert!(!legacy_selected(&named(&[
            (names::INJECT_LEGACY, "true"),
            (names::INJECT_BETA, "false")
        ])));
        assert!(!legacy_selected(&named(&[
            (names::INJECT_LEGACY, "true"),
            (names::INJECT_ALPHA, "")
        ])));
        assert_eq!(Flavor::legacy("SA").bundle("CA".into()), "CASA\n");
        assert_eq!(Flavor::standard::<ConfigMap>().bundle("CA".into()), "CA");
    }

    #[test]
    fn only_rewriting_the_bundle_we_last_wrote_is_a_restore() {
        let written = WrittenVersions {
            versions: Default::default(),
            exists: Box::new(|_| true),
            cached: Box::new(|| 1),
        };
        assert!(!written.restores("ns/a", "old"), "never written");
        written.record("ns/a", Some("1".into()), "old");
        assert!(
            written.restores("ns/a", "old"),
            "someone changed our bundle"
        );
        assert!(!written.restores("ns/a", "new"), "a new CA's bundle");
        written.record("ns/a", None, "old");
        assert!(!written.restores("ns/a", "old"), "forgotten");
    }
}
