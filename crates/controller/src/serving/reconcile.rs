//! Kubernetes glue of the serving-certificate controller: observe (the Service from the cache,
//! its Secret by GET), [`decide`](super::decide::decide), then execute the decision with one
//! small function per arm and one write to the Secret per decision.
//!
//! Memory: Services are cached (they are the primary kind); Secrets are watched metadata-only and
//! without a cache, only to route their events to the owning Service; a Secret's content is
//! fetched when its Service is reconciled.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use service_ca_pki::{KeyPool, ServingRequest, SigningCa};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use zeroize::Zeroizing;

use super::decide::{
    self, DecideConfig, Decision, Extras, IssueReason, Refusal, SecretView, ServiceView,
    StoreInputs, StorePassword, Tidy,
};
use super::index::SecretIndex;
use crate::ca::CaReceiver;
use crate::config::Config;
use crate::events::{EventSink, WarningLimiter};
use crate::fights::{FightDetector, Verdict};
use crate::inject::SecretTee;
use crate::metrics::Metrics;
use crate::names;
use crate::plumbing::{self, ReconcileError, ReconcileMeasurer};
use crate::readiness::{CacheSync, Supervisor};
use crate::warm::WarmCache;

const CONTROLLER: &str = "serving";
/// Longest wait between two looks at a Service, even when nothing changes.
const RESYNC: Duration = Duration::from_secs(6 * 3600);
/// Longest wait between two retries of a failing Service.
const RETRY_CAP: Duration = Duration::from_secs(600);

/// Errors of the serving controller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServingError {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {}", plumbing::api_message(.0))]
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

impl ReconcileError for ServingError {
    fn category(&self) -> &'static str {
        match self {
            ServingError::Kube(e) => plumbing::kube_category(e),
            ServingError::Pki(e) => e.category(),
            ServingError::KeyTask(_) => "keygen",
            ServingError::MissingField(_) => "invalid_service",
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, ServingError::Kube(e) if plumbing::status_code(e) == Some(409))
    }
}

impl ServingError {
    /// A problem that retrying alone will not fix, worth recording on the Service; transient ones
    /// (timeouts, 5xx, throttling, conflicts, a key task that died) are only logged and retried.
    fn is_permanent(&self) -> bool {
        match self {
            ServingError::Kube(e) => matches!(plumbing::status_code(e), Some(400 | 403 | 422)),
            ServingError::Pki(_) | ServingError::MissingField(_) => true,
            ServingError::KeyTask(_) => false,
        }
    }
}

/// Shared state of the serving controller.
pub(crate) struct ServingContext {
    client: Client,
    cfg: Arc<Config>,
    ca: CaReceiver,
    keys: Arc<KeyPool>,
    events: EventSink,
    metrics: Arc<Metrics>,
    warnings: WarningLimiter,
    fights: FightDetector,
}

impl ServingContext {
    /// Bundles what reconciles need.
    pub(crate) fn new(
        client: Client,
        cfg: Arc<Config>,
        ca: CaReceiver,
        keys: Arc<KeyPool>,
        events: EventSink,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            cfg,
            ca,
            keys,
            events,
            warnings: WarningLimiter::new(RETRY_CAP),
            fights: FightDetector::default(),
            metrics,
        })
    }
}

/// Hash of what can change a Service's certificate: our own status annotations are left out, so
/// the writes we make do not trigger another reconcile (no hot loop on failures); a user's reset
/// of the error counter is in (a request to retry now, docs/behavior.md §7.5).
fn service_inputs(svc: &Service, counter_resets: u64) -> Option<u64> {
    let mut h = DefaultHasher::new();
    svc.metadata.uid.hash(&mut h);
    let a = svc.metadata.annotations.as_ref();
    for key in [
        names::SECRET_NAME_BETA,
        names::SECRET_NAME_ALPHA,
        names::RENEW_REQUEST,
        names::INCLUDE_CA,
        names::FORMATS,
        names::KEY_ALGORITHM,
        names::EXTRA_DNS_NAMES,
        names::SECRET_LABELS,
        names::SECRET_ANNOTATIONS,
        names::KEYSTORE_PASSWORD_SECRET,
    ] {
        a.and_then(|a| a.get(key)).hash(&mut h);
    }
    is_headless(svc).hash(&mut h);
    counter_resets.hash(&mut h);
    Some(h.finish())
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Drops what the controller never reads from a cached Service.
fn strip(svc: &mut Service) {
    plumbing::keep_annotations(&mut svc.metadata, SERVICE_ANNOTATIONS_READ);
    svc.status = None;
    svc.spec = svc.spec.take().map(|spec| ServiceSpec {
        cluster_ip: spec.cluster_ip,
        type_: spec.type_,
        ..Default::default()
    });
}

/// The Service annotations the controller reads; the cache keeps no others.
const SERVICE_ANNOTATIONS_READ: &[&str] = &[
    names::SECRET_NAME_BETA,
    names::SECRET_NAME_ALPHA,
    names::SIGNED_BY_BETA,
    names::SIGNED_BY_ALPHA,
    names::ERROR_BETA,
    names::ERROR_ALPHA,
    names::ERROR_NUM_BETA,
    names::ERROR_NUM_ALPHA,
    names::RENEW_REQUEST,
    names::INCLUDE_CA,
    names::FORMATS,
    names::KEY_ALGORITHM,
    names::EXTRA_DNS_NAMES,
    names::SECRET_LABELS,
    names::SECRET_ANNOTATIONS,
    names::KEYSTORE_PASSWORD_SECRET,
];

/// The serving controller's watches: Services (cached, stripped) and Secrets (metadata-only,
/// uncached, routed to their Service and handed to the Secret injector), kept current for the whole process so that a new term
/// starts from warm state.
pub(crate) struct ServingWatches {
    services: WarmCache<Service>,
}

impl ServingWatches {
    /// Starts both watches under `root` (the process, not a term).
    pub(crate) fn start(
        client: &Client,
        cfg: &Config,
        metrics: Arc<Metrics>,
        caches: &CacheSync,
        root: &Supervisor,
        secret_tee: SecretTee,
    ) -> Self {
        let (services, secrets): (Api<Service>, Api<PartialObjectMeta<Secret>>) =
            match &cfg.watch_namespace {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            };
        let index = Arc::new(SecretIndex::new(metrics));
        let (observe, predicate) = (index.clone(), index.clone());
        let (cache, feed) = WarmCache::new("services", caches, move |writer| {
            watcher(services, plumbing::watch_config())
                .default_backoff()
                .modify(strip)
                .inspect_ok(move |event| observe.observe(event))
                .reflect(writer)
                .applied_objects()
                .predicate_filter(
                    move |svc: &Service| {
                        let resets = svc
                            .metadata
                            .namespace
                            .as_deref()
                            .map_or(0, |ns| predicate.counter_resets(ns, &svc.name_any()));
                        service_inputs(svc, resets)
                    },
                    Default::default(),
                )
        });
        root.spawn("services-watch", feed);
        let route = index;
        let routed = watcher(secrets, plumbing::watch_config())
            .default_backoff()
            // The Secret injector's cache is fed from this same watch (no second Secret watch).
            .inspect_ok(move |event| secret_tee.observe(event))
            .touched_objects()
            .map_ok(move |secret| route_secret(&route, &secret));
        root.spawn("secrets-watch", cache.also_triggered_by(routed));
        Self { services: cache }
    }
}

/// Runs the controller of one term until `token` is cancelled.
pub(crate) async fn run(
    ctx: Arc<ServingContext>,
    watches: &ServingWatches,
    token: CancellationToken,
) {
    let results = Controller::for_stream(watches.services.subscribe(), watches.services.store())
        .reconcile_all_on(plumbing::ca_changes(ctx.ca.clone()))
        .with_config(controller::Config::default().concurrency(ctx.cfg.concurrency))
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    plumbing::consume(CONTROLLER, results).await;
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
    if let Some(service) = index.service_for(namespace, &secret.name_any())
        && Some(service.as_str()) != origin
    {
        targets.push(ObjectRef::new(&service).within(namespace));
    }
    // A keystore password Secret: its Services rebuild their stores (or stop waiting for it).
    for service in index.services_with_password(namespace, &secret.name_any()) {
        if Some(service.as_str()) != origin {
            targets.push(ObjectRef::new(&service).within(namespace));
        }
    }
    targets
}

fn error_policy(svc: Arc<Service>, err: &ServingError, ctx: Arc<ServingContext>) -> Action {
    let failures = decide::failure_count(svc.metadata.annotations.as_ref());
    plumbing::requeue_after_error(
        &ctx.metrics,
        CONTROLLER,
        err,
        &ctx.fights,
        &ObjectRef::from_obj(svc.as_ref()).to_string(),
        decide::retry_delay(failures, RETRY_CAP),
    )
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<ServingContext>) -> Result<Action, ServingError> {
    let _measure = ReconcileMeasurer::start(&ctx.metrics, CONTROLLER);
    let object = ObjectRef::from_obj(svc.as_ref());
    let span = plumbing::reconcile_span(CONTROLLER, &object);
    async {
        let result = reconcile_service(&svc, &ctx).await.map(|next| match next {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        });
        if result.is_ok() {
            ctx.fights.settled(&object.to_string());
        }
        if let Some(err) = result.as_ref().err().filter(|e| e.is_permanent()) {
            // Record on the Service so users (and the original's tooling) see it.
            if let Err(write_err) = record_failure(&svc, &ctx, &err.to_string()).await {
                debug!(error = %write_err, "could not record failure on service");
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// When to look at the Service again (None: on its next change).
type Next = Option<Duration>;

/// What one decision is executed on: the Service, the Secret it asks for, the CA and the time.
struct Subject<'a> {
    svc: &'a Service,
    view: ServiceView<'a>,
    secret_name: &'a str,
    live: Option<&'a Secret>,
    ca: &'a SigningCa,
    now: OffsetDateTime,
    /// The Service's opt-in extras (default when invalid: the decision refuses then).
    extras: &'a Extras,
    /// The PKCS#12 stores' password (None when it could not be read: the decision refuses then).
    password: Option<&'a str>,
}

/// The PKCS#12 stores' password as read from the Secret a Service names.
enum PasswordLookup {
    NotRead,
    Read(Zeroizing<String>),
    Unavailable(String),
}

impl PasswordLookup {
    fn view(&self) -> StorePassword<'_> {
        match self {
            PasswordLookup::NotRead => StorePassword::NotRead,
            PasswordLookup::Read(p) => StorePassword::Read(p),
            PasswordLookup::Unavailable(why) => StorePassword::Unavailable(why),
        }
    }
}

/// Reads the stores' password from the Secret the Service names (one GET of that Secret only,
/// and only when a store is requested). Its value is used byte for byte.
async fn read_store_password(
    ctx: &ServingContext,
    namespace: &str,
    extras: &Extras,
) -> Result<PasswordLookup, ServingError> {
    let Some((name, key)) = extras.password_secret_to_read() else {
        return Ok(PasswordLookup::NotRead);
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?;
    let why = |what: String| {
        PasswordLookup::Unavailable(format!(
            "keystore password secret {namespace}/{name} {what} (annotation {}); service-ca writes keystore.p12 and truststore.p12 once it is there",
            names::KEYSTORE_PASSWORD_SECRET
        ))
    };
    let Some(secret) = secret else {
        return Ok(why("not found".into()));
    };
    Ok(match secret_bytes(&secret, key) {
        None => why(format!("has no key {key:?}")),
        Some([]) => why(format!("key {key:?} is empty")),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(password) => PasswordLookup::Read(Zeroizing::new(password.to_string())),
            Err(_) => why(format!("key {key:?} is not UTF-8 text")),
        },
    })
}

/// PKCS#12 stores just built, and the Secret annotations that record them.
#[derive(Default)]
struct BuiltStores {
    data: Vec<(&'static str, Vec<u8>)>,
    annotations: BTreeMap<String, String>,
}

/// Builds the stores among `keys` from `tls_crt`/`tls_key` and the current bundle, off the
/// runtime (each store costs a few PBKDF2 derivations).
async fn build_stores(
    subject: &Subject<'_>,
    keys: Vec<&'static str>,
    tls_crt: &[u8],
    tls_key: &[u8],
) -> Result<BuiltStores, ServingError> {
    if keys.is_empty() {
        return Ok(BuiltStores::default());
    }
    let password = subject
        .password
        .ok_or(ServingError::MissingField("readable keystore password"))?;
    let bundle = if keys.contains(&names::TRUSTSTORE_P12) {
        subject.ca.bundle_pem()
    } else {
        String::new()
    };
    let (crt, key) = (tls_crt.to_vec(), Zeroizing::new(tls_key.to_vec()));
    let (pw, trust) = (Zeroizing::new(password.to_string()), bundle.clone());
    let data = tokio::task::spawn_blocking(move || {
        keys.into_iter()
            .map(|k| {
                let p12 = if k == names::KEYSTORE_P12 {
                    service_ca_pki::keystore_p12(&crt, &key, &pw)
                } else {
                    service_ca_pki::truststore_p12(trust.as_bytes(), &pw)
                };
                p12.map(|p12| (k, p12))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ServingError::KeyTask(e.to_string()))??;
    let salt = decide::password_salt(subject.view.namespace, subject.secret_name);
    let inputs = StoreInputs {
        tls_crt,
        tls_key,
        bundle: &bundle,
        password,
        salt: &salt,
    };
    let annotations = decide::store_annotations(&data, &inputs);
    Ok(BuiltStores { data, annotations })
}

async fn reconcile_service(svc: &Service, ctx: &ServingContext) -> Result<Next, ServingError> {
    let namespace = svc
        .metadata
        .namespace
        .as_deref()
        .ok_or(ServingError::MissingField("namespace"))?;
    let uid = svc
        .metadata
        .uid
        .as_deref()
        .ok_or(ServingError::MissingField("uid"))?;
    let view = ServiceView {
        name: svc.metadata.name.as_deref().unwrap_or_default(),
        namespace,
        uid,
        headless: is_headless(svc),
        annotations: svc.metadata.annotations.as_ref(),
        keystore_password: StorePassword::NotRead,
    };
    let Some(secret_name) = decide::requested_secret_name(&view) else {
        if decide::empty_request(&view) {
            let refusal = Refusal::InvalidSecretName("the annotation is empty".into());
            return refuse(ctx, svc, &view, "", refusal).await;
        }
        return Ok(None);
    };
    let Some(ca) = ctx.ca.borrow().clone() else {
        // The CA arrives through the watch channel, which re-triggers every Service.
        return Ok(None);
    };
    let live = if decide::validate_secret_name(secret_name).is_ok() {
        Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_opt(secret_name)
            .await?
    } else {
        None
    };
    let now = OffsetDateTime::now_utc();
    let dcfg = DecideConfig {
        cluster_domain: &ctx.cfg.cluster_domain,
        renew_before: ctx.cfg.renew_before,
        denied_namespaces: &ctx.cfg.denied_namespaces,
        allow_external_wildcards: ctx.cfg.allow_external_wildcards,
    };
    let extras = decide::extras(&view, &dcfg).unwrap_or_default();
    let lookup = read_store_password(ctx, namespace, &extras).await?;
    let view = ServiceView {
        keystore_password: lookup.view(),
        ..view
    };
    let secret_view = live.as_ref().map(view_of);
    let decision = decide::decide(&view, secret_name, secret_view.as_ref(), &ca, &dcfg, now);
    let password = decide::store_password(&extras, &view).ok();
    debug!(?decision, "decided");
    let subject = Subject {
        svc,
        view,
        secret_name,
        live: live.as_ref(),
        ca: &ca,
        now,
        extras: &extras,
        password,
    };
    let next = match decision {
        Decision::Issue(reason) => issue(ctx, &subject, reason).await?,
        Decision::Tidy { tidy, not_after } => repair(ctx, &subject, &tidy, not_after).await?,
        Decision::UpToDate {
            renew_at,
            not_after,
        } => up_to_date(ctx, &subject, renew_at, not_after).await?,
        Decision::Refuse(refusal) => refuse(ctx, svc, &subject.view, secret_name, refusal).await?,
    };
    let paired = match decide::paired_alpha_secret_name(&subject.view) {
        Some(alpha) => maintain_paired(ctx, &subject, alpha, &dcfg).await?,
        None => None,
    };
    Ok(match (next, paired) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Keeps renewing an existing alpha-named Secret of this Service when both secret-name
/// annotations are set and differ (docs/behavior.md §3.2, §8.2 step 3): the original's updater
/// accepts either name. It is never created, and a Secret that is not this Service's is ignored.
async fn maintain_paired(
    ctx: &ServingContext,
    primary: &Subject<'_>,
    alpha: &str,
    dcfg: &DecideConfig<'_>,
) -> Result<Next, ServingError> {
    let Some(live) = Api::<Secret>::namespaced(ctx.client.clone(), primary.view.namespace)
        .get_opt(alpha)
        .await?
    else {
        return Ok(None);
    };
    let view = view_of(&live);
    let decision = decide::decide(
        &primary.view,
        alpha,
        Some(&view),
        primary.ca,
        dcfg,
        primary.now,
    );
    debug!(
        secret = alpha,
        ?decision,
        "decided for the alpha-named Secret"
    );
    let subject = Subject {
        secret_name: alpha,
        live: Some(&live),
        view: primary.view.clone(),
        ..*primary
    };
    match decision {
        Decision::Issue(reason) => issue(ctx, &subject, reason).await,
        Decision::Tidy { tidy, not_after } => repair(ctx, &subject, &tidy, not_after).await,
        Decision::UpToDate { renew_at, .. } => Ok(requeue_at(renew_at, subject.now)),
        Decision::Refuse(_) => Ok(None),
    }
}

/// Issues a certificate (key from the pool, off the runtime) and writes the Secret.
async fn issue(
    ctx: &ServingContext,
    subject: &Subject<'_>,
    reason: IssueReason,
) -> Result<Next, ServingError> {
    let undoes = reason.undoes_another_writer();
    if undoes && let Some(wait) = left_alone(ctx, subject) {
        return Ok(Some(wait));
    }
    let issued = sign(ctx, subject).await?;
    let wanted_stores = [
        (subject.extras.keystore, names::KEYSTORE_P12),
        (subject.extras.truststore, names::TRUSTSTORE_P12),
    ]
    .into_iter()
    .filter_map(|(wanted, key)| wanted.then_some(key))
    .collect();
    let stores = build_stores(
        subject,
        wanted_stores,
        issued.cert_chain_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .await?;
    let desired = desired_secret(
        &subject.view,
        subject,
        issued.cert_chain_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        issued.not_after,
        stores,
    );
    write_secret(ctx, subject, desired).await?;
    ctx.metrics.wrote(CONTROLLER);
    if undoes {
        record_write(ctx, subject).await;
    }
    ctx.metrics.issued(
        subject.view.namespace,
        subject.secret_name,
        issued.not_after.unix_timestamp(),
    );
    record_success(subject.svc, ctx, subject.ca).await?;
    let (event, verb) = match reason {
        IssueReason::Missing => ("ServingCertIssued", "issued"),
        _ => ("ServingCertRenewed", "re-issued"),
    };
    info!(
        secret = subject.secret_name,
        reason = reason.as_str(),
        "serving certificate {verb}"
    );
    ctx.events
        .publish(
            &subject.svc.object_ref(&()),
            EventType::Normal,
            event,
            "Issue",
            format!(
                "{verb} serving certificate in secret {} ({}), valid until {}",
                subject.secret_name,
                reason.as_str(),
                decide::format_expiry(issued.not_after)
            ),
        )
        .await;
    let margin = decide::margin_for_lifetime(ctx.cfg.renew_before, issued.not_after - subject.now);
    Ok(requeue_at(issued.not_after - margin, subject.now))
}

/// A key (from the pool, or generated for a per-Service algorithm, off the runtime) and a leaf.
async fn sign(
    ctx: &ServingContext,
    subject: &Subject<'_>,
) -> Result<service_ca_pki::IssuedCert, ServingError> {
    let keys = ctx.keys.clone();
    // The pool holds keys of the configured algorithm; another one is generated on demand.
    let key = match subject.extras.key_algorithm {
        Some(alg) if alg != keys.algorithm() => {
            tokio::task::spawn_blocking(move || service_ca_pki::generate_key(alg)).await
        }
        _ => tokio::task::spawn_blocking(move || keys.take()).await,
    }
    .map_err(|e| ServingError::KeyTask(e.to_string()))??;
    let view = &subject.view;
    let request = ServingRequest {
        service: view.name,
        namespace: view.namespace,
        uid: view.uid,
        headless: view.headless,
        cluster_domain: &ctx.cfg.cluster_domain,
        lifetime: ctx.cfg.leaf_lifetime,
        chain_order: ctx.cfg.chain_order,
        extra_dns_names: &subject.extras.extra_dns_names,
    };
    Ok(service_ca_pki::issue_serving(
        subject.ca,
        &request,
        key,
        subject.now,
    )?)
}

/// Creates the Secret, or applies it over our own Secret with the inspected resourceVersion as
/// a precondition: a concurrent change fails with 409 and is retried from fresh state, so a
/// foreign Secret can never be overwritten by a race.
async fn write_secret(
    ctx: &ServingContext,
    subject: &Subject<'_>,
    mut desired: Secret,
) -> Result<(), ServingError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), subject.view.namespace);
    match subject.live {
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
                    subject.secret_name,
                    &PatchParams::apply(names::FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await?;
        }
    }
    Ok(())
}

/// Repairs the metadata of a Secret whose certificate is fine, in one conditional merge patch:
/// extra data keys removed, label, annotations and ownerReference set; everything else kept.
async fn repair(
    ctx: &ServingContext,
    subject: &Subject<'_>,
    tidy: &Tidy,
    not_after: OffsetDateTime,
) -> Result<Next, ServingError> {
    let Some(live) = subject.live else {
        return Ok(Some(Duration::from_secs(1)));
    };
    let undoes = tidy.undoes_another_writer();
    if undoes && let Some(wait) = left_alone(ctx, subject) {
        return Ok(Some(wait));
    }
    let desired = desired_metadata(
        &subject.view,
        subject.secret_name,
        subject.extras,
        not_after,
    );
    let mut data: serde_json::Map<String, serde_json::Value> = tidy
        .remove_keys
        .iter()
        .map(|key| (key.clone(), serde_json::Value::Null))
        .collect();
    // Requested extra keys, from the current bundle and the Secret's own (verified) tls.crt/tls.key.
    let extra = decide::extra_data(
        subject.extras,
        &subject.ca.bundle_pem(),
        secret_bytes(live, names::TLS_CRT).unwrap_or_default(),
        secret_bytes(live, names::TLS_KEY).unwrap_or_default(),
    );
    let stale_stores = [names::KEYSTORE_P12, names::TRUSTSTORE_P12]
        .into_iter()
        .filter(|k| tidy.write_keys.iter().any(|w| w == k))
        .collect();
    let stores = build_stores(
        subject,
        stale_stores,
        secret_bytes(live, names::TLS_CRT).unwrap_or_default(),
        secret_bytes(live, names::TLS_KEY).unwrap_or_default(),
    )
    .await?;
    for (key, value) in extra.into_iter().chain(stores.data) {
        if tidy.write_keys.iter().any(|k| k == key) {
            data.insert(key.to_string(), json!(k8s_openapi::ByteString(value)));
        }
    }
    let mut annotations: serde_json::Map<String, serde_json::Value> = desired
        .annotations
        .unwrap_or_default()
        .into_iter()
        .chain(stores.annotations)
        .map(|(k, v)| (k, json!(v)))
        .collect();
    // Records of stores no longer requested go with them.
    let present = |k: &str| live.annotations().contains_key(k);
    for key in decide::unwanted_store_annotations(subject.extras) {
        if present(key) {
            annotations.insert(key.to_string(), serde_json::Value::Null);
        }
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": live.resource_version(),
            "labels": desired.labels,
            "annotations": annotations,
            "ownerReferences": owner_references(live, &subject.view),
        },
        "data": data,
    });
    let pp = PatchParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(ctx.client.clone(), subject.view.namespace)
        .patch(subject.secret_name, &pp, &Patch::Merge(patch))
        .await?;
    ctx.metrics.wrote(CONTROLLER);
    if undoes {
        record_write(ctx, subject).await;
    }
    info!(secret = subject.secret_name, removed_keys = ?tidy.remove_keys, written_keys = ?tidy.write_keys, "repaired secret metadata");
    // The patch's own watch event brings the Secret back for a final up-to-date check.
    Ok(Some(Duration::from_secs(1)))
}

/// The Secret's ownerReferences with ours in place of any stale reference to the Service.
fn owner_references(live: &Secret, svc: &ServiceView<'_>) -> Vec<OwnerReference> {
    let ours = service_owner_reference(svc);
    let mut refs: Vec<OwnerReference> = live
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| {
            !(r.kind == ours.kind && r.name == ours.name && r.api_version == ours.api_version)
        })
        .cloned()
        .collect();
    refs.push(ours);
    refs
}

/// The certificate is fine: record its expiry and the signer, and look again at renewal time.
async fn up_to_date(
    ctx: &ServingContext,
    subject: &Subject<'_>,
    renew_at: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Next, ServingError> {
    ctx.metrics.set_cert_expiry(
        subject.view.namespace,
        subject.secret_name,
        not_after.unix_timestamp(),
    );
    // Open choice O-15: repair a missing or stale signed-by without re-issuing.
    record_success(subject.svc, ctx, subject.ca).await?;
    Ok(requeue_at(renew_at, subject.now))
}

/// Reports a refusal on the Service (annotations and Event) and decides when to look again.
async fn refuse(
    ctx: &ServingContext,
    svc: &Service,
    view: &ServiceView<'_>,
    secret_name: &str,
    refusal: Refusal,
) -> Result<Next, ServingError> {
    let message = refusal.message(view.namespace, secret_name, view.uid);
    warn!(%message, "not issuing");
    // Only the first report of an unchanged problem is written: the watch filter ignores our own
    // annotation writes, and an identical error text means it was already reported.
    let already_reported =
        names::first_non_empty(svc.metadata.annotations.as_ref(), &[names::ERROR_BETA])
            == Some(message.as_str());
    let worth_reporting = !already_reported || refusal.may_resolve_by_itself();
    if worth_reporting {
        // The counter is bumped on every retry (it paces the back-off); the Warning is
        // published once per distinct message per back-off ceiling.
        record_failure(svc, ctx, &message).await?;
    }
    let object = format!("{}/{}", view.namespace, view.name);
    if worth_reporting && ctx.warnings.admit(&object, &message) {
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
    ctx.metrics.reconcile_error(CONTROLLER, refusal.category());
    Ok(if refusal.may_resolve_by_itself() {
        let failures = decide::failure_count(svc.metadata.annotations.as_ref()).saturating_add(1);
        Some(decide::retry_delay(failures, RETRY_CAP))
    } else {
        None
    })
}

fn requeue_at(at: OffsetDateTime, now: OffsetDateTime) -> Next {
    let wait = Duration::try_from(at - now).unwrap_or(Duration::ZERO);
    Some(wait.clamp(Duration::from_secs(1), RESYNC))
}

fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
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
        labels: secret.metadata.labels.as_ref(),
        ca_crt: secret_bytes(secret, names::CA_CRT),
        combined_pem: secret_bytes(secret, names::TLS_COMBINED_PEM),
        keystore_p12: secret_bytes(secret, names::KEYSTORE_P12),
        truststore_p12: secret_bytes(secret, names::TRUSTSTORE_P12),
        labelled: secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(names::MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(names::MANAGED_BY_VALUE),
    }
}

/// While something else keeps undoing our writes to this Secret, it is left alone: how long.
fn left_alone(ctx: &ServingContext, subject: &Subject<'_>) -> Next {
    let until = ctx.fights.paused_until(&secret_key(subject))?;
    debug!(
        secret = subject.secret_name,
        "left alone: another writer keeps undoing our writes"
    );
    Some(
        until
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1)),
    )
}

/// Records a write to the Secret; the write that makes a fight reports it once.
async fn record_write(ctx: &ServingContext, subject: &Subject<'_>) {
    if let Verdict::FightStarted(_) = ctx.fights.record(&secret_key(subject)) {
        let other = crate::fights::other_manager(
            subject
                .live
                .and_then(|l| l.metadata.managed_fields.as_ref()),
        );
        let message = format!(
            "secret {} keeps being changed by {other} after service-ca writes it; service-ca leaves it alone for 30 minutes. Stop the other writer (e.g. the original service-ca, a GitOps tool or a policy)",
            subject.secret_name
        );
        warn!(secret = subject.secret_name, %other, "write fight detected");
        ctx.events
            .publish(
                &subject.svc.object_ref(&()),
                EventType::Warning,
                "WriteFightDetected",
                "Issue",
                message,
            )
            .await;
    }
}

fn secret_key(subject: &Subject<'_>) -> String {
    format!("{}/{}", subject.view.namespace, subject.secret_name)
}

/// The ownerReference that ties a serving Secret to its Service (garbage collection).
fn service_owner_reference(svc: &ServiceView<'_>) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name.into(),
        uid: svc.uid.into(),
        ..Default::default()
    }
}

/// The metadata service-ca wants on a serving Secret: our annotations, label and ownerReference.
fn desired_metadata(
    svc: &ServiceView<'_>,
    secret_name: &str,
    extras: &Extras,
    not_after: OffsetDateTime,
) -> kube::api::ObjectMeta {
    let expiry = decide::format_expiry(not_after);
    let (uid_key, name_key) = if decide::uses_beta_flavour(svc) {
        (names::ORIGINATING_UID_BETA, names::ORIGINATING_NAME_BETA)
    } else {
        (names::ORIGINATING_UID_ALPHA, names::ORIGINATING_NAME_ALPHA)
    };
    // The template first: service-ca's own keys (never in a valid template) win anyway.
    let mut annotations = extras.secret_annotations.clone();
    let ours: BTreeMap<String, String> = [
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
    .chain(decide::renew_request(svc).map(|token| (names::RENEWED_FOR, token.to_string())))
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    annotations.extend(ours);
    let mut labels = extras.secret_labels.clone();
    labels.insert(
        names::MANAGED_BY_LABEL.to_string(),
        names::MANAGED_BY_VALUE.to_string(),
    );
    kube::api::ObjectMeta {
        name: Some(secret_name.into()),
        namespace: Some(svc.namespace.into()),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: Some(vec![service_owner_reference(svc)]),
        ..Default::default()
    }
}

/// The Secret as service-ca wants it: the issued certificate and key, and our metadata.
fn desired_secret(
    svc: &ServiceView<'_>,
    subject: &Subject<'_>,
    tls_crt: &[u8],
    tls_key: &[u8],
    not_after: OffsetDateTime,
    stores: BuiltStores,
) -> Secret {
    let extra = decide::extra_data(subject.extras, &subject.ca.bundle_pem(), tls_crt, tls_key);
    let data = [(names::TLS_CRT, tls_crt), (names::TLS_KEY, tls_key)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
        .chain(
            extra
                .into_iter()
                .chain(stores.data)
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v))),
        )
        .collect();
    let mut metadata = desired_metadata(svc, subject.secret_name, subject.extras, not_after);
    metadata
        .annotations
        .get_or_insert_default()
        .extend(stores.annotations);
    Secret {
        metadata,
        type_: Some(names::TLS_SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    }
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
    ctx.warnings.forget(&format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.name_any()
    ));
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
    let count = decide::failure_count(current).saturating_add(1).to_string();
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
