//! CA lifecycle: create the CA Secret on first start, adopt an existing one, rotate it before it
//! expires (or on request), publish the bundle ConfigMap, and hand the current CA to every
//! controller through a watch channel (docs/behavior.md §9).
//!
//! Invariants:
//! - an existing CA is never replaced silently: a corrupt CA Secret is reported (log, Event,
//!   readiness) and left alone until an administrator deletes it;
//! - every write carries the resourceVersion that was read, so two writers cannot both rotate;
//! - the bundle ConfigMap converges on content on every pass (not only when the CA changed).

pub(crate) mod decide;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde_json::json;
use service_ca_pki::SigningCa;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{Instrument, error, info, warn};

use self::decide::{CaSecretView, CaStep, RotationReason};
use crate::config::Config;
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::names;
use crate::plumbing::{ReconcileError, ReconcileMeasurer, kube_category};

const CONTROLLER: &str = "ca";

/// The current CA as seen by every controller; `None` until the first successful pass.
pub type CaReceiver = watch::Receiver<Option<Arc<SigningCa>>>;

/// Errors of the CA manager.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    /// The CA Secret exists but its content cannot be used.
    #[error("CA secret {0} is unusable: {1}; delete it to let service-ca create a new CA")]
    Corrupt(String, service_ca_pki::PkiError),
    /// Creating or rotating the CA failed in the PKI layer.
    #[error("CA operation failed: {0}")]
    Pki(#[from] service_ca_pki::PkiError),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {}", crate::plumbing::api_message(.0))]
    Kube(#[from] kube::Error),
}

impl ReconcileError for CaError {
    fn category(&self) -> &'static str {
        match self {
            CaError::Corrupt(..) => "ca_corrupt",
            CaError::Pki(e) => e.category(),
            CaError::Kube(e) => kube_category(e),
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, CaError::Kube(e) if crate::plumbing::status_code(e) == Some(409))
    }
}

/// Runs the CA manager until dropped: one pass on start, on every change of the CA Secret or
/// bundle ConfigMap, and before the rotation is due.
pub(crate) async fn run(
    client: Client,
    cfg: Arc<Config>,
    tx: watch::Sender<Option<Arc<SigningCa>>>,
    events: EventSink,
    metrics: Arc<Metrics>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &cfg.namespace);
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    // Any change to the CA Secret, the bundle ConfigMap or its published copy triggers a pass, so
    // deletions and manual edits are answered at once.
    let mut sources = vec![
        watcher(secrets.clone(), by_name(&cfg.ca_secret))
            .default_backoff()
            .map(|_| ())
            .boxed(),
        watcher(configmaps.clone(), by_name(&cfg.bundle_configmap))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    ];
    if let Some((namespace, name)) = &cfg.publish_bundle_to {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        sources.push(
            watcher(api, by_name(name))
                .default_backoff()
                .map(|_| ())
                .boxed(),
        );
    }
    let mut changes = futures::stream::select_all(sources);
    let mut failures = 0u32;
    let object = format!("{}/{}", cfg.namespace, cfg.ca_secret);
    loop {
        let now = OffsetDateTime::now_utc();
        let span = crate::plumbing::reconcile_span(CONTROLLER, &object);
        let known = tx.borrow().clone();
        let pass = {
            let _measure = ReconcileMeasurer::start(&metrics, CONTROLLER);
            reconcile(&client, &cfg, &events, &metrics, known.as_deref(), now)
                .instrument(span.clone())
                .await
        };
        // The CA reaches the controllers as soon as it is usable, whatever else failed.
        if let Some(ca) = &pass.ca {
            metrics.set_ca_expiry(ca.not_after().unix_timestamp());
            if known.as_deref().is_none_or(|cur| !same_ca(cur, ca)) {
                span.in_scope(
                    || info!(ca = %ca.subject_cn(), not_after = %ca.not_after(), "CA loaded"),
                );
                tx.send_replace(Some(ca.clone()));
            }
        }
        let next = match &pass.problem {
            None => {
                failures = 0;
                pass.next_check
            }
            Some(err) => {
                failures = failures.saturating_add(1);
                metrics.reconcile_error(CONTROLLER, err.category());
                span.in_scope(|| error!(error = %err, category = err.category(), "CA pass failed"));
                pass.next_check
                    .min(Duration::from_secs(5 * u64::from(failures.min(60))))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            change = changes.next() => {
                if change.is_none() { return; }
                // Coalesce a burst of events (e.g. the write we just made) into one pass.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Keeps the CA expiry gauge current on a replica that does not lead, from a read-only watch of
/// the CA Secret, so every replica Prometheus scrapes reports the same CA (the leader's CA
/// manager sets the same gauge).
pub(crate) async fn observe_expiry(client: Client, cfg: Config, metrics: Arc<Metrics>) {
    let secrets: Api<Secret> = Api::namespaced(client, &cfg.namespace);
    let selector = watcher::Config::default().fields(&format!("metadata.name={}", cfg.ca_secret));
    watcher(secrets, selector)
        .default_backoff()
        .applied_objects()
        .for_each(|secret| {
            let not_after = secret.ok().and_then(|secret| {
                let crt = data_bytes(&secret, names::TLS_CRT)?;
                let certs = service_ca_pki::parse_pem_certs(crt).ok()?;
                certs.first().map(|c| c.not_after.unix_timestamp())
            });
            if let Some(not_after) = not_after {
                metrics.set_ca_expiry(not_after);
            }
            futures::future::ready(())
        })
        .await;
}

fn same_ca(a: &SigningCa, b: &SigningCa) -> bool {
    a.tls_crt_pem() == b.tls_crt_pem()
        && a.bundle_pem() == b.bundle_pem()
        && a.intermediate_pem() == b.intermediate_pem()
}

/// A data value, absent when empty.
fn data_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .filter(|b| !b.is_empty())
}

fn view_of(secret: &Secret) -> CaSecretView<'_> {
    CaSecretView {
        tls_crt: data_bytes(secret, names::TLS_CRT),
        tls_key: data_bytes(secret, names::TLS_KEY),
        ca_bundle: data_bytes(secret, names::CA_BUNDLE_CRT),
        intermediate: data_bytes(secret, names::INTERMEDIATE_CA_CRT),
        annotations: secret.metadata.annotations.as_ref(),
    }
}

/// What one pass produced: the CA in force (if any), when to look again, and the problem that
/// remains (if any). A failing rotation or bundle copy never withholds a usable CA.
struct Pass {
    ca: Option<Arc<SigningCa>>,
    next_check: Duration,
    problem: Option<CaError>,
}

impl Pass {
    fn failed(problem: CaError) -> Self {
        Pass {
            ca: None,
            next_check: CHECK_AFTER_FAILURE,
            problem: Some(problem),
        }
    }
}

/// Longest wait before the next pass after a failure (the back-off is shorter at first).
const CHECK_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// One pass: observe the CA Secret, decide, execute the step, then publish the bundle.
async fn reconcile(
    client: &Client,
    cfg: &Config,
    events: &EventSink,
    metrics: &Metrics,
    known: Option<&SigningCa>,
    now: OffsetDateTime,
) -> Pass {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let live = match secrets.get_opt(&cfg.ca_secret).await {
        Ok(live) => live,
        Err(err) => return Pass::failed(err.into()),
    };
    let step = decide::decide(live.as_ref().map(view_of).as_ref(), &cfg.ca, now);
    // decide() returns Refill, Corrupt and Rotate only for a Secret that exists.
    let mut decided_next = None;
    let (ca, mut problem) = match (step, live.as_ref()) {
        (CaStep::UpToDate { ca, next_check }, _) => {
            if known.is_none_or(|k| !same_ca(k, &ca)) {
                check_rotatable(cfg, events, &ca, now).await;
            }
            decided_next = Some(next_check);
            (Some(*ca), None)
        }
        (CaStep::Corrupt(err), Some(live)) => {
            (None, Some(report_corrupt(cfg, events, live, err).await))
        }
        (CaStep::Rotate { current, reason }, Some(live)) => {
            let rotation = Rotation {
                current: &current,
                reason: &reason,
                now,
            };
            match rotate(&secrets, cfg, events, metrics, live, rotation).await {
                Ok(rotated) => (Some(rotated), None),
                Err(err) => {
                    warn_ca(cfg, events, "ServiceCARotationFailed", "Rotate", format!(
                        "could not rotate the service CA ({}): {err}; issuing continues with the current CA until it expires, retrying with back-off",
                        reason.describe(&cfg.ca)
                    ))
                    .await;
                    // Still usable unless it expired (or the rotation was to drop it).
                    let usable = !current.is_expired(now) && !reason.without_bridge();
                    (usable.then_some(*current), Some(err))
                }
            }
        }
        (CaStep::Refill, live) => split(create(&secrets, cfg, events, live, now).await),
        (CaStep::Create | CaStep::Corrupt(_) | CaStep::Rotate { .. }, _) => {
            split(create(&secrets, cfg, events, None, now).await)
        }
    };
    let Some(ca) = ca else {
        return Pass {
            ca: None,
            next_check: CHECK_AFTER_FAILURE,
            problem,
        };
    };
    if let Err(err) = publish_bundle(client, cfg, &ca).await {
        warn_ca(
            cfg,
            events,
            "BundlePublishFailed",
            "Publish",
            format!("could not publish the CA bundle: {err}; issuing and injection continue, retrying with back-off"),
        )
        .await;
        problem = problem.or(Some(err));
    }
    Pass {
        next_check: decided_next.unwrap_or_else(|| decide::next_check(&ca, &cfg.ca, now)),
        ca: Some(Arc::new(ca)),
        problem,
    }
}

fn split(result: Result<SigningCa, CaError>) -> (Option<SigningCa>, Option<CaError>) {
    match result {
        Ok(ca) => (Some(ca), None),
        Err(err) => (None, Some(err)),
    }
}

/// Adoption dry run: a CA that cannot be rotated (e.g. a key type or profile the PKI cannot
/// cross-sign with) is reported when it is loaded, not months later when rotation is due.
async fn check_rotatable(cfg: &Config, events: &EventSink, ca: &SigningCa, now: OffsetDateTime) {
    if let Err(err) = ca.rotate(&cfg.ca, now) {
        error!(error = %err, "the adopted CA cannot be rotated");
        warn_ca(
            cfg,
            events,
            "ServiceCANotRotatable",
            "Load",
            format!("the service CA in use cannot be rotated: {err}; replace it (delete {}) before it is due", cfg.ca_secret),
        )
        .await;
    }
}

/// A Warning Event on the CA Secret.
async fn warn_ca(cfg: &Config, events: &EventSink, reason: &str, action: &str, note: String) {
    let secret = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: Some(cfg.namespace.clone()),
        name: Some(cfg.ca_secret.clone()),
        ..Default::default()
    };
    events
        .publish(&secret, EventType::Warning, reason, action, note)
        .await;
}

/// Creates a CA and writes it: a new Secret, or the data of an existing one whose `tls.crt` is
/// empty (its metadata kept, docs/behavior.md §9.2).
async fn create(
    secrets: &Api<Secret>,
    cfg: &Config,
    events: &EventSink,
    existing: Option<&Secret>,
    now: OffsetDateTime,
) -> Result<SigningCa, CaError> {
    let ca = SigningCa::create(&cfg.ca, now)?;
    let written = write_new_ca(secrets, cfg, existing, &ca).await?;
    info!(ca = %ca.subject_cn(), "created a new service CA");
    events
        .publish(
            &written.object_ref(&()),
            EventType::Normal,
            "ServiceCACreated",
            "Create",
            format!(
                "created CA {} valid until {}",
                ca.subject_cn(),
                ca.not_after()
            ),
        )
        .await;
    Ok(ca)
}

/// Reports an unusable CA Secret (Event; the error is logged and counted by the caller).
async fn report_corrupt(
    cfg: &Config,
    events: &EventSink,
    live: &Secret,
    err: service_ca_pki::PkiError,
) -> CaError {
    let err = CaError::Corrupt(format!("{}/{}", cfg.namespace, cfg.ca_secret), err);
    events
        .publish(
            &live.object_ref(&()),
            EventType::Warning,
            "ServiceCAInvalid",
            "Load",
            err.to_string(),
        )
        .await;
    err
}

/// A rotation decided by [`decide::decide`].
struct Rotation<'a> {
    current: &'a SigningCa,
    reason: &'a RotationReason,
    now: OffsetDateTime,
}

/// Rotates the current CA and writes the result over the Secret as read.
async fn rotate(
    secrets: &Api<Secret>,
    cfg: &Config,
    events: &EventSink,
    metrics: &Metrics,
    live: &Secret,
    Rotation {
        current,
        reason,
        now,
    }: Rotation<'_>,
) -> Result<SigningCa, CaError> {
    let (ca, trust) = if reason.without_bridge() {
        let fresh = SigningCa::create(&cfg.ca, now)?;
        (fresh, "the previous CA is no longer trusted".to_string())
    } else {
        let rotation = current.rotate(&cfg.ca, now)?;
        let until = crate::serving::format_expiry(rotation.previous_trusted_until);
        (rotation.ca, format!("previous CA trusted until {until}"))
    };
    write_rotation(secrets, live, &ca, reason.forced()).await?;
    metrics.rotated();
    let msg = format!(
        "rotated the service CA ({}); {trust}",
        reason.describe(&cfg.ca)
    );
    info!(%msg, "CA rotated");
    events
        .publish(
            &live.object_ref(&()),
            EventType::Normal,
            "ServiceCARotated",
            "Rotate",
            msg,
        )
        .await;
    Ok(ca)
}

fn informational_annotations() -> BTreeMap<String, String> {
    [
        (names::OWNING_COMPONENT.to_string(), names::COMPONENT.to_string()),
        (
            names::DESCRIPTION.to_string(),
            "Service CA signing key, managed by service-ca. Delete it to rotate the CA at once (no trust bridge).".to_string(),
        ),
    ]
    .into()
}

async fn write_new_ca(
    secrets: &Api<Secret>,
    cfg: &Config,
    existing: Option<&Secret>,
    ca: &SigningCa,
) -> Result<Secret, CaError> {
    let data: BTreeMap<String, ByteString> = [
        (
            names::TLS_CRT.to_string(),
            ByteString(ca.tls_crt_pem().into_bytes()),
        ),
        (
            names::TLS_KEY.to_string(),
            ByteString(ca.tls_key_pem().as_bytes().to_vec()),
        ),
    ]
    .into();
    let pp = PostParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match existing {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(cfg.ca_secret.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    annotations: Some(informational_annotations()),
                    ..Default::default()
                },
                type_: Some(names::TLS_SECRET_TYPE.into()),
                data: Some(data),
                ..Default::default()
            };
            Ok(secrets.create(&pp, &secret).await?)
        }
        Some(existing) => {
            // A Secret with an empty tls.crt: keep its metadata, replace its data (docs/behavior.md §9.2).
            let mut updated = existing.clone();
            let annotations = updated
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new);
            for (k, v) in informational_annotations() {
                annotations.entry(k).or_insert(v);
            }
            updated.data = Some(data);
            Ok(secrets.replace(&cfg.ca_secret, &pp, &updated).await?)
        }
    }
}

async fn write_rotation(
    secrets: &Api<Secret>,
    live: &Secret,
    ca: &SigningCa,
    forced: Option<&str>,
) -> Result<(), CaError> {
    let mut updated = live.clone();
    let data = updated.data.get_or_insert_with(BTreeMap::new);
    data.insert(
        names::TLS_CRT.into(),
        ByteString(ca.tls_crt_pem().into_bytes()),
    );
    data.insert(
        names::TLS_KEY.into(),
        ByteString(ca.tls_key_pem().as_bytes().to_vec()),
    );
    for (key, value) in [
        (names::CA_BUNDLE_CRT, ca.ca_bundle_pem()),
        (names::INTERMEDIATE_CA_CRT, ca.intermediate_pem()),
    ] {
        match value {
            Some(v) => data.insert(key.into(), ByteString(v.into_bytes())),
            None => data.remove(key),
        };
    }
    if let Some(reason) = forced {
        updated
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(names::FORCED_ROTATION_REASON.into(), reason.into());
    }
    let pp = PostParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    };
    // `replace` carries the resourceVersion we read: a concurrent writer makes this fail with
    // 409 and the next pass starts again from the new state.
    let name = live.metadata.name.clone().unwrap_or_default();
    secrets.replace(&name, &pp, &updated).await?;
    Ok(())
}

/// Applies the bundle ConfigMap (and the optional copy) when its content differs.
async fn publish_bundle(client: &Client, cfg: &Config, ca: &SigningCa) -> Result<(), CaError> {
    let bundle = ca.bundle_pem();
    let mut targets = vec![(cfg.namespace.clone(), cfg.bundle_configmap.clone())];
    targets.extend(cfg.publish_bundle_to.clone());
    for (namespace, name) in targets {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        let current = api.get_opt(&name).await?;
        let up_to_date = current.as_ref().is_some_and(|cm| {
            cm.data.as_ref().and_then(|d| d.get(names::CA_BUNDLE_CRT)) == Some(&bundle)
        });
        if up_to_date {
            continue;
        }
        let desired = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": {
                    names::OWNING_COMPONENT: names::COMPONENT,
                    names::DESCRIPTION: "CA bundle of the service CA, managed by service-ca.",
                },
            },
            "data": { names::CA_BUNDLE_CRT: bundle },
        });
        api.patch(
            &name,
            &PatchParams::apply(names::FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await?;
        if current.is_some() {
            warn!(configmap = %format!("{namespace}/{name}"), "bundle ConfigMap content restored");
        }
    }
    Ok(())
}
