//! Kubernetes glue of the serving-certificate controller: watches, reads, and the writes that
//! carry out [`decide`](super::decide::decide)'s decision.
//!
//! Memory: Services are cached (they are the primary kind); Secrets are watched metadata-only and
//! without a cache, only to route their events to the owning Service; a Secret's content is
//! fetched when its Service is reconciled.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use service_ca_pki::{KeyPool, ServingRequest, SigningCa};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use super::decide::{self, DecideConfig, Decision, IssueReason, Refusal, SecretView, ServiceView};
use crate::ca::CaReceiver;
use crate::config::Config;
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::names;

const CONTROLLER: &str = "serving";
/// Longest wait between two looks at a Service, even when nothing changes.
const RESYNC: Duration = Duration::from_secs(6 * 3600);
/// Longest wait between two retries of a failing Service.
const RETRY_CAP: Duration = Duration::from_secs(600);

/// Errors of the serving controller.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {}", crate::api_message(.0))]
    Kube(#[from] kube::Error),
    /// Key generation or signing failed.
    #[error("issuing certificate: {0}")]
    Pki(#[from] service_ca_pki::PkiError),
    /// The key-generation task did not complete.
    #[error("key generation task failed: {0}")]
    KeyTask(String),
    /// The Service is missing a field every Service has.
    #[error("service has no {0}")]
    MissingField(&'static str),
}

impl ServingError {
    /// A write lost an optimistic-concurrency race (409): transient, not worth reporting.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ServingError::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    /// Stable category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ServingError::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            ServingError::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            ServingError::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            ServingError::Kube(_) => "kube",
            ServingError::Pki(_) => "pki",
            ServingError::KeyTask(_) => "keygen",
            ServingError::MissingField(_) => "invalid-service",
        }
    }
}

/// Routes Secret events to the Service that requests that Secret name, including Secrets that
/// are not ours (a conflicting Secret being deleted must wake up its Service at once).
#[derive(Default)]
struct SecretIndex(Mutex<IndexMaps>);

/// `(namespace, secret) -> service` and its reverse, so an update is O(1).
#[derive(Default)]
struct IndexMaps {
    by_secret: HashMap<(String, String), String>,
    by_service: HashMap<(String, String), String>,
}

impl SecretIndex {
    fn set(&self, namespace: &str, secret: Option<&str>, service: &str) {
        let Ok(mut maps) = self.0.lock() else { return };
        let service_key = (namespace.to_string(), service.to_string());
        if maps.by_service.get(&service_key).map(String::as_str) == secret {
            return;
        }
        if let Some(old) = maps.by_service.remove(&service_key) {
            let old_key = (namespace.to_string(), old);
            if maps.by_secret.get(&old_key) == Some(&service_key.1) {
                maps.by_secret.remove(&old_key);
            }
        }
        if let Some(secret) = secret {
            maps.by_secret
                .insert((namespace.into(), secret.into()), service.into());
            maps.by_service.insert(service_key, secret.into());
        }
    }

    fn get(&self, namespace: &str, secret: &str) -> Option<String> {
        let maps = self.0.lock().ok()?;
        maps.by_secret
            .get(&(namespace.to_string(), secret.to_string()))
            .cloned()
    }
}

/// Shared state of the serving controller.
pub struct ServingContext {
    client: Client,
    cfg: Arc<Config>,
    ca: CaReceiver,
    keys: Arc<KeyPool>,
    events: EventSink,
    metrics: Arc<Metrics>,
    index: SecretIndex,
}

impl ServingContext {
    /// Bundles what reconciles need.
    pub fn new(
        client: Client,
        cfg: Arc<Config>,
        ca: CaReceiver,
        keys: Arc<KeyPool>,
        events: EventSink,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            cfg,
            ca,
            keys,
            events,
            metrics,
            index: SecretIndex::default(),
        }
    }
}

/// Hash of what can change a Service's certificate: our own status annotations are left out, so
/// the writes we make do not trigger another reconcile (no hot loop on failures).
fn service_inputs(svc: &Service) -> Option<u64> {
    let mut h = DefaultHasher::new();
    svc.metadata.uid.hash(&mut h);
    let a = svc.metadata.annotations.as_ref();
    for key in [names::SECRET_NAME_BETA, names::SECRET_NAME_ALPHA] {
        a.and_then(|a| a.get(key)).hash(&mut h);
    }
    is_headless(svc).hash(&mut h);
    Some(h.finish())
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<ServingContext>,
    caches: crate::sync::CacheSync,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (services, secrets): (Api<Service>, Api<PartialObjectMeta<Secret>>) =
        match &ctx.cfg.watch_namespace {
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
        };
    let (reader, writer) = reflector::store();
    caches.track(reader.clone());
    let service_events = watcher(services, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(service_inputs, Default::default());
    let secret_events = watcher(secrets, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    let route_ctx = ctx.clone();
    let ca_changes = ca_change_stream(ctx.ca.clone());
    Controller::for_stream(service_events, reader)
        .watches_stream(secret_events, move |secret: PartialObjectMeta<Secret>| {
            route_secret(&route_ctx.index, &secret)
        })
        .reconcile_all_on(ca_changes)
        .with_config(controller::Config::default().concurrency(ctx.cfg.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// A stream that yields once every time the CA changes to a loaded value.
pub fn ca_change_stream(rx: CaReceiver) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if rx.borrow_and_update().is_some() {
                return Some(((), rx));
            }
        }
    })
}

fn route_secret(
    index: &SecretIndex,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Service>> {
    let Some(namespace) = secret.metadata.namespace.as_deref() else {
        return vec![];
    };
    let mut targets = Vec::new();
    let origin = names::first_non_empty(
        secret.metadata.annotations.as_ref(),
        &[names::ORIGINATING_NAME_BETA, names::ORIGINATING_NAME_ALPHA],
    );
    if let Some(service) = origin {
        targets.push(ObjectRef::new(service).within(namespace));
    }
    if let Some(service) = index.get(namespace, &secret.name_any())
        && Some(service.as_str()) != origin
    {
        targets.push(ObjectRef::new(&service).within(namespace));
    }
    targets
}

fn error_policy(svc: Arc<Service>, err: &ServingError, ctx: Arc<ServingContext>) -> Action {
    ctx.metrics.reconcile_error(CONTROLLER, err.category());
    if err.is_conflict() {
        // Someone changed the object between our read and write: retry soon from fresh state.
        return Action::requeue(Duration::from_millis(500));
    }
    let failures = decide::failure_count(svc.metadata.annotations.as_ref());
    Action::requeue(decide::retry_delay(failures, RETRY_CAP))
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<ServingContext>) -> Result<Action, ServingError> {
    let started = Instant::now();
    let result = reconcile_service(&svc, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    if let Some(err) = result.as_ref().err().filter(|e| !e.is_conflict()) {
        warn!(service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any()),
              error = %err, category = err.category(), "serving certificate reconcile failed");
        // Record on the Service so users (and the original's tooling) see it.
        let message = err.to_string();
        if let Err(write_err) = record_failure(&svc, &ctx, &message).await {
            debug!(error = %write_err, "could not record failure on service");
        }
    }
    result
}

async fn reconcile_service(svc: &Service, ctx: &ServingContext) -> Result<Action, ServingError> {
    let namespace = svc
        .namespace()
        .ok_or(ServingError::MissingField("namespace"))?;
    let name = svc.name_any();
    let uid = svc.uid().ok_or(ServingError::MissingField("uid"))?;
    let view = ServiceView {
        name: &name,
        namespace: &namespace,
        uid: &uid,
        headless: is_headless(svc),
        annotations: svc.metadata.annotations.as_ref(),
    };
    let secret_name = decide::requested_secret_name(&view);
    ctx.index.set(&namespace, secret_name, &name);
    let Some(secret_name) = secret_name else {
        if decide::empty_request(&view) {
            let refusal = Refusal::InvalidSecretName("the annotation is empty".into());
            return refuse(svc, ctx, &namespace, "", &uid, refusal).await;
        }
        return Ok(Action::await_change());
    };
    let Some(ca) = ctx.ca.borrow().clone() else {
        // The CA arrives through the watch channel, which re-triggers every Service.
        return Ok(Action::await_change());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let live = if decide::validate_secret_name(secret_name).is_ok() {
        secrets.get_opt(secret_name).await?
    } else {
        None
    };
    let secret_view = live.as_ref().map(view_of);
    let now = OffsetDateTime::now_utc();
    let dcfg = DecideConfig {
        cluster_domain: &ctx.cfg.cluster_domain,
        renew_before: ctx.cfg.renew_before,
    };
    let decision = decide::decide(&view, secret_name, secret_view.as_ref(), &ca, &dcfg, now);
    debug!(service = %format!("{namespace}/{name}"), ?decision, "decided");
    match decision {
        Decision::NotManaged => Ok(Action::await_change()),
        Decision::Issue(reason) => {
            let not_after = issue(ctx, &view, secret_name, live.as_ref(), &ca, now).await?;
            record_success(svc, ctx, &ca).await?;
            let (event, verb) = match reason {
                IssueReason::Missing => ("ServingCertIssued", "issued"),
                _ => ("ServingCertRenewed", "re-issued"),
            };
            info!(service = %format!("{namespace}/{name}"), secret = secret_name, reason = reason.as_str(), "serving certificate {verb}");
            ctx.events
                .publish(
                    &svc.object_ref(&()),
                    EventType::Normal,
                    event,
                    "Issue",
                    format!(
                        "{verb} serving certificate in secret {secret_name} ({}), valid until {}",
                        reason.as_str(),
                        decide::format_expiry(not_after)
                    ),
                )
                .await;
            let margin = decide::margin_for_lifetime(ctx.cfg.renew_before, not_after - now);
            Ok(requeue_at(not_after - margin, now))
        }
        Decision::Tidy(tidy) => {
            let Some(live) = live.as_ref() else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            if !tidy.remove_keys.is_empty() {
                let mut data = serde_json::Map::new();
                for key in &tidy.remove_keys {
                    data.insert(key.clone(), serde_json::Value::Null);
                }
                let patch =
                    json!({"metadata": {"resourceVersion": live.resource_version()}, "data": data});
                let pp = PatchParams {
                    field_manager: Some(names::FIELD_MANAGER.into()),
                    ..Default::default()
                };
                secrets
                    .patch(secret_name, &pp, &Patch::Merge(patch))
                    .await?;
                ctx.metrics.wrote(CONTROLLER);
                info!(secret = %format!("{namespace}/{secret_name}"), keys = ?tidy.remove_keys, "removed extra data keys");
            }
            if tidy.owner_reference || tidy.metadata {
                let (crt, key) = (
                    secret_bytes(live, names::TLS_CRT),
                    secret_bytes(live, names::TLS_KEY),
                );
                let not_after = leaf_not_after(crt).unwrap_or(now);
                apply_secret(ctx, &view, secret_name, crt, key, not_after, Some(live)).await?;
                info!(secret = %format!("{namespace}/{secret_name}"), "repaired secret metadata");
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Decision::UpToDate { renew_at } => {
            if let Some(live) = live.as_ref()
                && let Some(not_after) = leaf_not_after(secret_bytes(live, names::TLS_CRT))
            {
                ctx.metrics
                    .set_cert_expiry(&namespace, secret_name, not_after.unix_timestamp());
            }
            // Open choice O-15: repair a missing or stale signed-by without re-issuing.
            record_success(svc, ctx, &ca).await?;
            Ok(requeue_at(renew_at, now))
        }
        Decision::Refuse(refusal) => refuse(svc, ctx, &namespace, secret_name, &uid, refusal).await,
    }
}

/// Reports a refusal on the Service (annotations and Event) and decides when to look again.
async fn refuse(
    svc: &Service,
    ctx: &ServingContext,
    namespace: &str,
    secret_name: &str,
    uid: &str,
    refusal: Refusal,
) -> Result<Action, ServingError> {
    let message = refusal.message(namespace, secret_name, uid);
    warn!(service = %format!("{namespace}/{}", svc.name_any()), %message, "not issuing");
    // Only the first report of an unchanged problem is written: the watch filter ignores our own
    // annotation writes, and an identical error text means it was already reported.
    let already_reported =
        names::first_non_empty(svc.metadata.annotations.as_ref(), &[names::ERROR_BETA])
            == Some(message.as_str());
    if !already_reported || refusal.may_resolve_by_itself() {
        record_failure(svc, ctx, &message).await?;
        ctx.events
            .publish(
                &svc.object_ref(&()),
                EventType::Warning,
                "ServingCertFailed",
                "Issue",
                message,
            )
            .await;
    }
    ctx.metrics
        .reconcile_error(CONTROLLER, refusal_category(&refusal));
    Ok(if refusal.may_resolve_by_itself() {
        let failures = decide::failure_count(svc.metadata.annotations.as_ref()) + 1;
        Action::requeue(decide::retry_delay(failures, RETRY_CAP))
    } else {
        Action::await_change()
    })
}

fn refusal_category(r: &Refusal) -> &'static str {
    match r {
        Refusal::InvalidSecretName(_) => "invalid-secret-name",
        Refusal::ForeignSecret => "foreign-secret",
        Refusal::WrongType(_) => "wrong-secret-type",
    }
}

fn requeue_at(at: OffsetDateTime, now: OffsetDateTime) -> Action {
    let wait = Duration::try_from(at - now).unwrap_or(Duration::ZERO);
    Action::requeue(wait.clamp(Duration::from_secs(1), RESYNC))
}

fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
}

fn leaf_not_after(tls_crt: Option<&[u8]>) -> Option<OffsetDateTime> {
    service_ca_pki::parse_pem_certs(tls_crt?)
        .ok()?
        .first()
        .map(|c| c.not_after)
}

fn view_of(secret: &Secret) -> SecretView<'_> {
    let data = secret.data.as_ref();
    SecretView {
        type_: secret.type_.as_deref(),
        annotations: secret.metadata.annotations.as_ref(),
        owners: secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| {
                (
                    o.api_version.as_str(),
                    o.kind.as_str(),
                    o.name.as_str(),
                    o.uid.as_str(),
                )
            })
            .collect(),
        tls_crt: secret_bytes(secret, names::TLS_CRT),
        tls_key: secret_bytes(secret, names::TLS_KEY),
        extra_keys: data
            .into_iter()
            .flat_map(|d| d.keys())
            .map(String::as_str)
            .filter(|k| *k != names::TLS_CRT && *k != names::TLS_KEY)
            .collect(),
        labelled: secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(names::MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(names::MANAGED_BY_VALUE),
    }
}

/// Generates a key (off the async runtime), signs a leaf and writes the Secret.
async fn issue(
    ctx: &ServingContext,
    svc: &ServiceView<'_>,
    secret_name: &str,
    live: Option<&Secret>,
    ca: &SigningCa,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, ServingError> {
    let keys = ctx.keys.clone();
    let key = tokio::task::spawn_blocking(move || keys.take())
        .await
        .map_err(|e| ServingError::KeyTask(e.to_string()))??;
    let request = ServingRequest {
        service: svc.name,
        namespace: svc.namespace,
        uid: svc.uid,
        headless: svc.headless,
        cluster_domain: &ctx.cfg.cluster_domain,
        lifetime: ctx.cfg.leaf_lifetime,
        chain_order: ctx.cfg.chain_order,
    };
    let issued = service_ca_pki::issue_serving(ca, &request, key, now)?;
    apply_secret(
        ctx,
        svc,
        secret_name,
        Some(issued.cert_chain_pem.as_bytes()),
        Some(issued.key_pem.as_bytes()),
        issued.not_after,
        live,
    )
    .await?;
    ctx.metrics.issued(
        svc.namespace,
        secret_name,
        issued.not_after.unix_timestamp(),
    );
    Ok(issued.not_after)
}

/// The Secret as service-ca wants it: content, our annotations, label and ownerReference.
fn desired_secret(
    svc: &ServiceView<'_>,
    secret_name: &str,
    tls_crt: Option<&[u8]>,
    tls_key: Option<&[u8]>,
    not_after: OffsetDateTime,
) -> Secret {
    let expiry = decide::format_expiry(not_after);
    let (uid_key, name_key) = if decide::uses_beta_flavour(svc) {
        (names::ORIGINATING_UID_BETA, names::ORIGINATING_NAME_BETA)
    } else {
        (names::ORIGINATING_UID_ALPHA, names::ORIGINATING_NAME_ALPHA)
    };
    let annotations: BTreeMap<String, String> = [
        (uid_key, svc.uid.to_string()),
        (name_key, svc.name.to_string()),
        (names::EXPIRY_BETA, expiry.clone()),
        (names::EXPIRY_ALPHA, expiry),
        (names::OWNING_COMPONENT, names::COMPONENT.to_string()),
        (
            names::DESCRIPTION,
            format!(
                "Serving certificate for {}.{}.svc, requested by annotation {} on service {}; managed by service-ca",
                svc.name,
                svc.namespace,
                names::SECRET_NAME_BETA,
                svc.name
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let data = [(names::TLS_CRT, tls_crt), (names::TLS_KEY, tls_key)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), k8s_openapi::ByteString(v.to_vec()))))
        .collect();
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name.into()),
            namespace: Some(svc.namespace.into()),
            labels: Some(
                [(
                    names::MANAGED_BY_LABEL.to_string(),
                    names::MANAGED_BY_VALUE.to_string(),
                )]
                .into(),
            ),
            annotations: Some(annotations),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name: svc.name.into(),
                    uid: svc.uid.into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
        type_: Some(names::TLS_SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Creates the Secret, or server-side applies it over our own existing Secret with the
/// resourceVersion we inspected as a precondition (a concurrent change fails with 409 and is
/// retried from fresh state; a foreign Secret can never be overwritten by a race).
async fn apply_secret(
    ctx: &ServingContext,
    svc: &ServiceView<'_>,
    secret_name: &str,
    tls_crt: Option<&[u8]>,
    tls_key: Option<&[u8]>,
    not_after: OffsetDateTime,
    live: Option<&Secret>,
) -> Result<(), ServingError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), svc.namespace);
    let mut desired = desired_secret(svc, secret_name, tls_crt, tls_key, not_after);
    match live {
        None => {
            let pp = PostParams {
                field_manager: Some(names::FIELD_MANAGER.into()),
                ..Default::default()
            };
            secrets.create(&pp, &desired).await?;
        }
        Some(live) => {
            desired.metadata.resource_version = live.resource_version();
            let mut body = serde_json::to_value(&desired).map_err(kube::Error::SerdeError)?;
            body["apiVersion"] = json!("v1");
            body["kind"] = json!("Secret");
            secrets
                .patch(
                    secret_name,
                    &PatchParams::apply(names::FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await?;
        }
    }
    ctx.metrics.wrote(CONTROLLER);
    Ok(())
}

/// Applies the Service annotations service-ca owns, if they differ from what is there.
async fn apply_service_annotations(
    svc: &Service,
    ctx: &ServingContext,
    wanted: BTreeMap<String, String>,
) -> Result<(), ServingError> {
    let current = svc.metadata.annotations.clone().unwrap_or_default();
    let ours = [
        names::SIGNED_BY_BETA,
        names::SIGNED_BY_ALPHA,
        names::ERROR_BETA,
        names::ERROR_ALPHA,
        names::ERROR_NUM_BETA,
        names::ERROR_NUM_ALPHA,
    ];
    let unchanged = ours.iter().all(|k| current.get(*k) == wanted.get(*k));
    if unchanged {
        return Ok(());
    }
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    // Keys we set but no longer want are removed explicitly: someone else (the original
    // controller, a user) may have written them, so omitting them from an apply is not enough.
    let mut annotations = serde_json::Map::new();
    for key in ours {
        match wanted.get(key) {
            Some(v) => annotations.insert(key.into(), json!(v)),
            None if current.contains_key(key) => {
                annotations.insert(key.into(), serde_json::Value::Null)
            }
            None => None,
        };
    }
    let patch = json!({"metadata": {"uid": svc.uid(), "annotations": annotations}});
    let pp = PatchParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    };
    Api::<Service>::namespaced(ctx.client.clone(), &namespace)
        .patch(&name, &pp, &Patch::Merge(patch))
        .await?;
    ctx.metrics.wrote(CONTROLLER);
    Ok(())
}

/// Success: signed-by set (both flavours), error annotations removed.
async fn record_success(
    svc: &Service,
    ctx: &ServingContext,
    ca: &SigningCa,
) -> Result<(), ServingError> {
    let cn = ca.subject_cn();
    let wanted = [
        (names::SIGNED_BY_BETA.to_string(), cn.clone()),
        (names::SIGNED_BY_ALPHA.to_string(), cn),
    ]
    .into();
    apply_service_annotations(svc, ctx, wanted).await
}

/// Failure: error text and an incremented counter (both flavours); signed-by is kept.
async fn record_failure(
    svc: &Service,
    ctx: &ServingContext,
    message: &str,
) -> Result<(), ServingError> {
    let current = svc.metadata.annotations.as_ref();
    let count = (decide::failure_count(current) + 1).to_string();
    let mut wanted: BTreeMap<String, String> = [
        (names::ERROR_BETA.to_string(), message.to_string()),
        (names::ERROR_ALPHA.to_string(), message.to_string()),
        (names::ERROR_NUM_BETA.to_string(), count.clone()),
        (names::ERROR_NUM_ALPHA.to_string(), count),
    ]
    .into();
    for key in [names::SIGNED_BY_BETA, names::SIGNED_BY_ALPHA] {
        if let Some(v) = current.and_then(|a| a.get(key)) {
            wanted.insert(key.to_string(), v.clone());
        }
    }
    apply_service_annotations(svc, ctx, wanted).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_index_follows_the_requested_name() {
        let index = SecretIndex::default();
        index.set("ns", Some("a-tls"), "a");
        index.set("ns", Some("b-tls"), "b");
        assert_eq!(index.get("ns", "a-tls").as_deref(), Some("a"));
        assert_eq!(index.get("other", "a-tls"), None);
        // Renamed: the old name no longer routes to the Service.
        index.set("ns", Some("a2-tls"), "a");
        assert_eq!(index.get("ns", "a-tls"), None);
        assert_eq!(index.get("ns", "a2-tls").as_deref(), Some("a"));
        // Annotation removed.
        index.set("ns", None, "a");
        assert_eq!(index.get("ns", "a2-tls"), None);
        assert_eq!(index.get("ns", "b-tls").as_deref(), Some("b"));
    }
}
