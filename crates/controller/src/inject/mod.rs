//! CA bundle injection: one generic controller, instantiated for ConfigMaps, APIServices, CRDs
//! and mutating/validating webhook configurations (spec §10).
//!
//! Every kind is watched metadata-only, and only objects carrying the injection annotation are
//! kept in the cache: memory follows the number of injection targets, not of ConfigMaps. The
//! full object is fetched when it is reconciled.

mod targets;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
#[allow(deprecated)] // the generic replacement needs an Api<PartialObjectMeta<K>> per scope
use kube::runtime::metadata_watcher;
use kube::runtime::reflector::{self};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::ca::CaReceiver;
use crate::config::Config;
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::names;
use crate::serving::reconcile::ca_change_stream;

/// What injecting the bundle into one object takes.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The object already holds the bundle.
    UpToDate,
    /// The object cannot take a bundle; the reason is logged, nothing is retried.
    Skip(String),
    /// A JSON merge patch (with a resourceVersion precondition) that injects the bundle.
    Patch {
        /// The merge patch.
        body: serde_json::Value,
        /// ConfigMap data keys the patch deletes (spec §10.3), for the Event.
        removed_data_keys: Vec<String>,
    },
}

impl Outcome {
    fn patch(body: serde_json::Value) -> Self {
        Outcome::Patch {
            body,
            removed_data_keys: vec![],
        }
    }
}

/// A kind the bundle can be injected into.
pub trait Target:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Controller name, used in logs and metrics.
    const KIND: &'static str;
    /// Whether the alpha annotation is honoured for this kind (spec §10.2).
    const ACCEPTS_ALPHA: bool;
    /// Whether the kind is cluster-scoped.
    const CLUSTER_SCOPED: bool;
    /// An API handle for objects in `namespace`, or all namespaces (cluster-scoped kinds ignore
    /// the namespace).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// What injecting `bundle` into this object takes.
    fn injection(&self, bundle: &str) -> Outcome;
}

/// Whether the injection annotation asks for this object: value `true`, any case (spec §10.1).
pub fn selected<K: Target>(meta: &kube::api::ObjectMeta) -> bool {
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
pub enum InjectError {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {}", crate::api_message(.0))]
    Kube(#[from] kube::Error),
}

impl InjectError {
    /// Stable category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            InjectError::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            InjectError::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            InjectError::Kube(_) => "kube",
        }
    }
}

/// Shared state of the injectors.
pub struct InjectContext {
    client: Client,
    ca: CaReceiver,
    events: EventSink,
    metrics: Arc<Metrics>,
    caches: crate::sync::CacheSync,
}

impl InjectContext {
    /// Bundles what reconciles need.
    pub fn new(
        client: Client,
        ca: CaReceiver,
        events: EventSink,
        metrics: Arc<Metrics>,
        caches: crate::sync::CacheSync,
    ) -> Self {
        Self {
            client,
            ca,
            events,
            metrics,
            caches,
        }
    }
}

/// Which objects one injector serves, and what it injects: the standard injector of a kind, or
/// the legacy ConfigMap injector (spec §10.7), which differs only in these two respects.
#[derive(Clone)]
pub struct Flavor {
    /// Name in logs and metrics.
    pub name: &'static str,
    /// Whether an object's metadata asks for this injector.
    pub selects: fn(&kube::api::ObjectMeta) -> bool,
    /// Appended to the CA bundle (legacy: the ServiceAccount CA and a newline).
    pub suffix: Option<Arc<str>>,
}

impl Flavor {
    /// The standard injector of kind `K`.
    pub fn standard<K: Target>() -> Self {
        Self {
            name: K::KIND,
            selects: selected::<K>,
            suffix: None,
        }
    }

    /// The legacy ConfigMap injector, appending `service_account_ca` (spec §10.7).
    pub fn legacy(service_account_ca: &str) -> Self {
        Self {
            name: "configmap-legacy",
            selects: legacy_selected,
            suffix: Some(format!("{service_account_ca}\n").into()),
        }
    }

    fn bundle(&self, ca_bundle: String) -> String {
        match &self.suffix {
            Some(suffix) => ca_bundle + suffix,
            None => ca_bundle,
        }
    }
}

/// The legacy injector serves ConfigMaps named `openshift-service-ca.crt` whose legacy annotation
/// is `true` (any case), and stands down as soon as either `inject-cabundle` key is present,
/// whatever its value, so the two injectors never fight (spec §10.7).
pub fn legacy_selected(meta: &kube::api::ObjectMeta) -> bool {
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

/// Runs one injector for kind `K` until `shutdown` resolves.
pub async fn run<K: Target>(
    ctx: Arc<InjectContext>,
    cfg: Arc<Config>,
    flavor: Flavor,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    PartialObjectMeta<K>: Resource<DynamicType = ()>,
{
    let (reader, writer) = reflector::store();
    ctx.caches.track(reader.clone());
    let ca_changes = ca_change_stream(ctx.ca.clone());
    let watch_api = K::api(ctx.client.clone(), cfg.watch_namespace.as_deref());
    #[allow(deprecated)]
    let targets = metadata_watcher(watch_api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            futures::future::ready(Some(event.map(|e| keep_selected::<K>(flavor.selects, e))))
        })
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(Some(e)) => Some(Ok(e)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
        })
        .modify(|obj| obj.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(targets, reader)
        .reconcile_all_on(ca_changes)
        .with_config(controller::Config::default().concurrency(cfg.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile::<K>,
            error_policy::<K>,
            Arc::new(KindContext {
                shared: ctx,
                flavor,
            }),
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy<K: Target>(
    _obj: Arc<PartialObjectMeta<K>>,
    err: &InjectError,
    ctx: Arc<KindContext>,
) -> Action {
    ctx.shared
        .metrics
        .reconcile_error(ctx.flavor.name, err.category());
    match err.category() {
        "conflict" => Action::requeue(Duration::from_millis(500)),
        _ => Action::requeue(Duration::from_secs(30)),
    }
}

async fn reconcile<K: Target>(
    meta: Arc<PartialObjectMeta<K>>,
    ctx: Arc<KindContext>,
) -> Result<Action, InjectError> {
    let started = Instant::now();
    let result = inject::<K>(&meta, &ctx.shared, &ctx.flavor).await;
    ctx.shared
        .metrics
        .reconciled(ctx.flavor.name, started.elapsed());
    if let Err(err) = &result {
        warn!(kind = ctx.flavor.name, object = %describe(&meta.metadata), error = %err, "injection failed");
    }
    result
}

fn describe(meta: &kube::api::ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

async fn inject<K: Target>(
    meta: &PartialObjectMeta<K>,
    ctx: &InjectContext,
    flavor: &Flavor,
) -> Result<Action, InjectError> {
    let Some(bundle) = ctx
        .ca
        .borrow()
        .as_ref()
        .map(|ca| flavor.bundle(ca.bundle_pem()))
    else {
        return Ok(Action::await_change());
    };
    let api = K::api(ctx.client.clone(), meta.metadata.namespace.as_deref());
    let name = meta.name_any();
    let Some(live) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    // Re-check on the live object: an annotation removed since the event means no injection.
    if !(flavor.selects)(live.meta()) {
        return Ok(Action::await_change());
    }
    match live.injection(&bundle) {
        Outcome::UpToDate => Ok(Action::await_change()),
        Outcome::Skip(reason) => {
            info!(kind = flavor.name, object = %describe(live.meta()), %reason, "not injecting");
            Ok(Action::await_change())
        }
        Outcome::Patch {
            body,
            removed_data_keys,
        } => {
            let pp = PatchParams {
                field_manager: Some(names::FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.patch(&name, &pp, &Patch::Merge(body)).await?;
            ctx.metrics.wrote(flavor.name);
            info!(kind = flavor.name, object = %describe(live.meta()), "CA bundle injected");
            if !removed_data_keys.is_empty() {
                let note = format!(
                    "injected the service CA bundle into {}; by design this removed the other data keys: {}",
                    names::SERVICE_CA_CRT,
                    removed_data_keys.join(", ")
                );
                warn!(object = %describe(live.meta()), keys = ?removed_data_keys, "injection replaced ConfigMap data");
                ctx.events
                    .publish(
                        &live.object_ref(&()),
                        EventType::Warning,
                        "CABundleInjectionReplacedData",
                        "Inject",
                        note,
                    )
                    .await;
            }
            Ok(Action::await_change())
        }
    }
}

/// Starts one injector per kind, and the legacy ConfigMap injector when given.
pub fn spawn_all(
    tasks: &mut tokio::task::JoinSet<()>,
    ctx: Arc<InjectContext>,
    cfg: Arc<Config>,
    legacy: Option<Flavor>,
    shutdown: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
) {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    fn standard<K: Target>(
        tasks: &mut tokio::task::JoinSet<()>,
        ctx: &Arc<InjectContext>,
        cfg: &Arc<Config>,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
    ) where
        PartialObjectMeta<K>: Resource<DynamicType = ()>,
    {
        tasks.spawn(run::<K>(
            ctx.clone(),
            cfg.clone(),
            Flavor::standard::<K>(),
            stop,
        ));
    }
    standard::<ConfigMap>(tasks, &ctx, &cfg, shutdown());
    if let Some(legacy) = legacy {
        tasks.spawn(run::<ConfigMap>(
            ctx.clone(),
            cfg.clone(),
            legacy,
            shutdown(),
        ));
    }
    if cfg.cluster_scoped_injection {
        standard::<APIService>(tasks, &ctx, &cfg, shutdown());
        standard::<CustomResourceDefinition>(tasks, &ctx, &cfg, shutdown());
        standard::<MutatingWebhookConfiguration>(tasks, &ctx, &cfg, shutdown());
        standard::<ValidatingWebhookConfiguration>(tasks, &ctx, &cfg, shutdown());
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
}
