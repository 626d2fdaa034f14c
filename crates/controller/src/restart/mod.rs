//! Rolling restarts (docs/behavior.md §17): a Deployment, StatefulSet or DaemonSet annotated
//! `service-ca.dev/restart-on-change: "true"` gets `service-ca.dev/material-hash` in its pod
//! template set to a hash of the serving Secrets and injected CA bundle ConfigMaps its pods mount;
//! when that material changes the hash does, and the workload's own controller rolls the pods.
//!
//! observe (the workload from the warm cache, its mounts by GET) → [`decide::decide`] → one
//! server-side apply owning only that annotation, paced cluster-wide by [`decide::Pacer`].
//!
//! Memory: workloads are watched in full (the pod template is needed) but only opted-in ones are
//! cached, stripped to the opt-in annotation, the hash annotation and their volumes. Serving
//! Secrets (by service-ca's label) and ConfigMaps are watched metadata-only and uncached, only
//! to route their changes to the workloads that mount them.

mod decide;
pub mod material;

use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, PodTemplateSpec, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use self::decide::{Pace, Pacer, Step};
use self::material::Kind;
use crate::config::Config;
use crate::events::EventSink;
use crate::fights::{FightDetector, Verdict};
use crate::metrics::Metrics;
use crate::names;
use crate::plumbing::{self, ReconcileError, ReconcileMeasurer};
use crate::readiness::{CacheSync, Supervisor};
use crate::warm::WarmCache;

const CONTROLLER: &str = "restart";
/// Longest wait between two looks at a workload: a missed event is caught up with by then.
const RESYNC: Duration = Duration::from_secs(3600);
/// Wait after a failure other than a conflict.
const RETRY: Duration = Duration::from_secs(30);

/// A kind of workload whose pod template can be rolled.
pub(crate) trait Workload:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Name in logs, metrics and task names.
    const NAME: &'static str;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The pod template, to strip what the cache does not need.
    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec>;
    /// Drops the status (never read).
    fn drop_status(&mut self);
}

/// The three workload kinds keep their pod template at `spec.template` and a status beside it.
macro_rules! workload {
    ($kind:ty, $resource:literal) => {
        impl Workload for $kind {
            const NAME: &'static str = $resource;
            fn template(&self) -> Option<&PodTemplateSpec> {
                self.spec.as_ref().map(|s| &s.template)
            }
            fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
                self.spec.as_mut().map(|s| &mut s.template)
            }
            fn drop_status(&mut self) {
                self.status = None;
            }
        }
    };
}

workload!(Deployment, "deployments");
workload!(StatefulSet, "statefulsets");
workload!(DaemonSet, "daemonsets");

fn pod_spec<K: Workload>(workload: &K) -> Option<&PodSpec> {
    workload.template().and_then(|t| t.spec.as_ref())
}

fn recorded_hash<K: Workload>(workload: &K) -> Option<&str> {
    workload
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(names::MATERIAL_HASH))
        .map(String::as_str)
}

/// Keeps what the controller reads: the opt-in annotation, the recorded hash and the volumes.
fn strip<K: Workload>(workload: &mut K) {
    plumbing::keep_annotations(workload.meta_mut(), &[names::RESTART_ON_CHANGE]);
    workload.drop_status();
    if let Some(template) = workload.template_mut() {
        if let Some(meta) = template.metadata.as_mut() {
            plumbing::keep_annotations(meta, &[names::MATERIAL_HASH]);
        }
        template.spec = template.spec.take().map(|spec| PodSpec {
            volumes: spec.volumes.map(|volumes| {
                volumes
                    .into_iter()
                    .filter(|v| {
                        v.secret.is_some() || v.config_map.is_some() || v.projected.is_some()
                    })
                    .collect()
            }),
            ..Default::default()
        });
    }
}

/// Only opted-in workloads are cached: one that opts out becomes a deletion.
fn keep_opted_in<K: Workload>(event: watcher::Event<K>) -> Option<watcher::Event<K>> {
    match event {
        watcher::Event::Apply(obj) if !material::opted_in(obj.meta()) => {
            Some(watcher::Event::Delete(obj))
        }
        watcher::Event::InitApply(obj) if !material::opted_in(obj.meta()) => None,
        other => Some(other),
    }
}

/// What a decision depends on in the workload itself: status updates and our own unrelated
/// changes do not trigger a reconcile.
fn inputs<K: Workload>(workload: &K) -> Option<u64> {
    let mut h = DefaultHasher::new();
    workload.meta().uid.hash(&mut h);
    material::opted_in(workload.meta()).hash(&mut h);
    recorded_hash(workload).hash(&mut h);
    material::references(pod_spec(workload)).hash(&mut h);
    Some(h.finish())
}

/// The opted-in workloads of `store` in `namespace` that mount `kind` `name`.
fn mounting<K: Workload>(
    store: &Store<K>,
    namespace: &str,
    kind: Kind,
    name: &str,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|w| w.meta().namespace.as_deref() == Some(namespace))
        .filter(|w| {
            material::references(pod_spec(w.as_ref()))
                .iter()
                .any(|r| r.kind == kind && r.name == name)
        })
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Routes a changed Secret or ConfigMap (namespace, kind, name) to the workloads of one kind.
type Route = Box<dyn Fn(&str, Kind, &str) + Send + Sync>;
/// Starts one kind's controller for a term.
type Starter = Box<dyn Fn(&Supervisor, &Arc<RestartContext>) + Send + Sync>;

/// The restart controller's watches, kept current for the whole process (warm followers).
pub(crate) struct RestartWatches {
    starters: Vec<Starter>,
}

impl RestartWatches {
    /// Starts the workload watches (one per kind) and the routing watches of serving Secrets
    /// and ConfigMaps under `root` (the process).
    pub(crate) fn start(
        client: &Client,
        cfg: &Config,
        caches: &CacheSync,
        root: &Supervisor,
    ) -> Self {
        let namespace = cfg.watch_namespace.as_deref();
        let mut watches = Self { starters: vec![] };
        let routes = vec![
            watches.kind::<Deployment>(client, namespace, caches, root),
            watches.kind::<StatefulSet>(client, namespace, caches, root),
            watches.kind::<DaemonSet>(client, namespace, caches, root),
        ];
        root.spawn("restart-routing", route(client, namespace, routes));
        watches
    }

    fn kind<K: Workload>(
        &mut self,
        client: &Client,
        namespace: Option<&str>,
        caches: &CacheSync,
        root: &Supervisor,
    ) -> Route {
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (cache, feed) = WarmCache::new(K::NAME, caches, move |writer| {
            watcher(api, plumbing::watch_config())
                .default_backoff()
                .filter_map(|event| {
                    futures::future::ready(match event {
                        Ok(e) => keep_opted_in(e).map(Ok),
                        Err(e) => Some(Err(e)),
                    })
                })
                .modify(strip::<K>)
                .reflect(writer)
                .applied_objects()
                .predicate_filter(inputs::<K>, Default::default())
        });
        root.spawn(K::NAME, feed);
        let (tx, rx) = mpsc::unbounded_channel::<Vec<ObjectRef<K>>>();
        let triggers = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|refs| (Ok(refs), rx))
        });
        root.spawn(K::NAME, cache.also_triggered_by(triggers));
        let store = cache.store();
        let cache = Arc::new(cache);
        self.starters.push(Box::new(move |supervisor, ctx| {
            let (cache, ctx) = (cache.clone(), ctx.clone());
            let token = supervisor.token().clone();
            supervisor.spawn(K::NAME, async move { run::<K>(ctx, &cache, token).await });
        }));
        Box::new(move |namespace, kind, name| {
            let refs = mounting(&store, namespace, kind, name);
            if !refs.is_empty() {
                let _ = tx.send(refs);
            }
        })
    }

    /// Starts every kind's controller for one term.
    pub(crate) fn start_term(&self, supervisor: &Supervisor, ctx: &Arc<RestartContext>) {
        for start in &self.starters {
            start(supervisor, ctx);
        }
    }
}

/// Watches serving Secrets (service-ca's label) and ConfigMaps, metadata-only and uncached, and
/// hands each change of service-ca material to every kind's routing.
fn route(
    client: &Client,
    namespace: Option<&str>,
    routes: Vec<Route>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (secrets, configmaps): (
        Api<PartialObjectMeta<Secret>>,
        Api<PartialObjectMeta<ConfigMap>>,
    ) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let label = format!("{}={}", names::MANAGED_BY_LABEL, names::MANAGED_BY_VALUE);
    let secrets = watcher(secrets, plumbing::watch_config().labels(&label))
        .default_backoff()
        .touched_objects()
        .map(|r| r.map(|s| (Kind::Secret, s.metadata)));
    let configmaps = watcher(configmaps, plumbing::watch_config())
        .default_backoff()
        .touched_objects()
        .map(|r| r.map(|c| (Kind::ConfigMap, c.metadata)));
    let changes = futures::stream::select(secrets, configmaps);
    async move { forward_changes(changes, routes).await }
}

async fn forward_changes(
    changes: impl Stream<Item = Result<(Kind, kube::api::ObjectMeta), watcher::Error>>,
    routes: Vec<Route>,
) {
    futures::pin_mut!(changes);
    while let Some(change) = changes.next().await {
        match change {
            Ok((kind, meta)) => {
                // A ConfigMap that is not an injection target is nobody's material.
                if kind == Kind::ConfigMap && !material::is_injected_configmap(&meta) {
                    continue;
                }
                let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref())
                else {
                    continue;
                };
                for route in &routes {
                    route(ns, kind, name);
                }
            }
            Err(err) => warn!(error = %err, "watch failed; retrying with back-off"),
        }
    }
}

/// Errors of the restart controller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestartError {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {}", plumbing::api_message(.0))]
    Kube(#[from] kube::Error),
    /// The workload is missing a field every workload has.
    #[error("workload has no {0}")]
    MissingField(&'static str),
}

impl ReconcileError for RestartError {
    fn category(&self) -> &'static str {
        match self {
            RestartError::Kube(e) => plumbing::kube_category(e),
            RestartError::MissingField(_) => "invalid_workload",
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, RestartError::Kube(e) if plumbing::status_code(e) == Some(409))
    }
}

/// Shared state of one term's restart controllers: the pace is cluster-wide across kinds.
pub(crate) struct RestartContext {
    client: Client,
    concurrency: u16,
    pacer: Mutex<Pacer>,
    events: EventSink,
    metrics: Arc<Metrics>,
    fights: FightDetector,
}

impl RestartContext {
    /// Bundles what reconciles need.
    pub(crate) fn new(
        client: Client,
        cfg: &Config,
        events: EventSink,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            concurrency: cfg.concurrency,
            pacer: Mutex::new(Pacer::new(Pace {
                restarts: cfg.restart_pace.restarts,
                per: cfg.restart_pace.per,
            })),
            events,
            metrics,
            fights: FightDetector::default(),
        })
    }

    fn admit(&self, workload: &str) -> Duration {
        match self.pacer.lock() {
            Ok(mut pacer) => pacer.admit(workload, Instant::now()),
            // A panic elsewhere poisoned the pacer: pace by retrying later rather than not at all.
            Err(_) => RETRY,
        }
    }

    fn release(&self, workload: &str) {
        if let Ok(mut pacer) = self.pacer.lock() {
            pacer.release(workload);
        }
    }
}

/// Runs one kind's controller for one term until `token` is cancelled: every cached workload is
/// looked at once when the cache is ready, then on its own changes and those of its mounts.
async fn run<K: Workload>(
    ctx: Arc<RestartContext>,
    cache: &WarmCache<K>,
    token: CancellationToken,
) {
    let store = cache.store();
    let ready = store.clone();
    let once_ready = futures::stream::once(async move {
        // Polled with a timeout: the store's ready signal wakes only its last waiter.
        while tokio::time::timeout(Duration::from_millis(200), ready.wait_until_ready())
            .await
            .is_err()
        {}
    });
    let results = Controller::for_stream(cache.subscribe(), store)
        .reconcile_all_on(once_ready)
        .with_config(controller::Config::default().concurrency(ctx.concurrency))
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile::<K>, error_policy::<K>, ctx);
    plumbing::consume(CONTROLLER, results).await;
}

fn key<K: Workload>(workload: &K) -> String {
    format!(
        "{}/{}/{}",
        K::NAME,
        workload.meta().namespace.as_deref().unwrap_or_default(),
        workload.name_any()
    )
}

fn error_policy<K: Workload>(
    workload: Arc<K>,
    err: &RestartError,
    ctx: Arc<RestartContext>,
) -> Action {
    plumbing::requeue_after_error(
        &ctx.metrics,
        CONTROLLER,
        err,
        &ctx.fights,
        &key(workload.as_ref()),
        RETRY,
    )
}

async fn reconcile<K: Workload>(
    workload: Arc<K>,
    ctx: Arc<RestartContext>,
) -> Result<Action, RestartError> {
    let _measure = ReconcileMeasurer::start(&ctx.metrics, CONTROLLER);
    let object = ObjectRef::from_obj(workload.as_ref());
    let span = plumbing::reconcile_span(CONTROLLER, &object);
    async {
        let key = key(workload.as_ref());
        let result = reconcile_workload(workload.as_ref(), &ctx, &key).await;
        if result.is_ok() {
            ctx.fights.settled(&key);
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_workload<K: Workload>(
    workload: &K,
    ctx: &RestartContext,
    key: &str,
) -> Result<Action, RestartError> {
    let opted_in = material::opted_in(workload.meta());
    if !opted_in {
        // Not cached, so only a workload that just opted out: nothing to read.
        ctx.release(key);
        return Ok(Action::await_change());
    }
    let namespace = workload
        .meta()
        .namespace
        .as_deref()
        .ok_or(RestartError::MissingField("namespace"))?;
    let desired = material::desired(&ctx.client, namespace, pod_spec(workload)).await?;
    let step = decide::decide(opted_in, recorded_hash(workload), &desired);
    debug!(?step, "decided");
    match step {
        Step::Restart { hash, reason } => restart(workload, ctx, key, &hash, reason).await,
        Step::WaitFor(missing) => {
            debug!(?missing, "a mounted object is missing; waiting for it");
            ctx.release(key);
            Ok(Action::requeue(RESYNC))
        }
        Step::NotOptedIn | Step::NothingMounted | Step::UpToDate => {
            ctx.release(key);
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// Writes the new hash when the pace allows (else looks again at the reserved slot).
async fn restart<K: Workload>(
    workload: &K,
    ctx: &RestartContext,
    key: &str,
    hash: &str,
    reason: decide::Reason,
) -> Result<Action, RestartError> {
    if let Some(until) = ctx.fights.paused_until(key) {
        debug!("left alone: another writer keeps undoing the material hash");
        return Ok(Action::requeue(
            until
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_secs(1)),
        ));
    }
    let wait = ctx.admit(key);
    if !wait.is_zero() {
        debug!(?wait, "restart queued by the pace");
        return Ok(Action::requeue(wait));
    }
    let meta = workload.meta();
    let name = workload.name_any();
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    // Server-side apply of the one field we own; uid and resourceVersion make it conditional on
    // the object that was read (a 409 is retried from newer state).
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        },
        "spec": {"template": {"metadata": {"annotations": {names::MATERIAL_HASH: hash}}}},
    });
    Api::<K>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(names::FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    ctx.metrics.wrote(CONTROLLER);
    info!(%hash, reason = reason.as_str(), "rolling restart");
    let reference = workload.object_ref(&());
    ctx.events
        .publish(
            &reference,
            EventType::Normal,
            "RollingRestart",
            "Restart",
            format!(
                "rolling restart ({}): {} set to {hash}",
                reason.as_str(),
                names::MATERIAL_HASH
            ),
        )
        .await;
    if let Verdict::FightStarted(_) = ctx.fights.record(key) {
        warn!("write fight detected on the material hash");
        ctx.events
            .publish(
                &reference,
                EventType::Warning,
                "WriteFightDetected",
                "Restart",
                format!(
                    "{} keeps being changed by another writer after service-ca sets it, restarting the pods each time; service-ca leaves it alone for 30 minutes. Let the other writer (e.g. a GitOps tool) ignore this annotation",
                    names::MATERIAL_HASH
                ),
            )
            .await;
    }
    Ok(Action::requeue(RESYNC))
}
