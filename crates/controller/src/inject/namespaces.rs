//! The bundle in every namespace (opt-in, `--namespace-bundle-name`): a ConfigMap of that name,
//! holding only `service-ca.crt`, created and kept current in every namespace the
//! `--namespace-bundle-selector` matches. Only ConfigMaps carrying this controller's labels are
//! ever changed or deleted; one of that name that service-ca did not create is left alone with a
//! Warning Event. Without the option, the ConfigMaps created earlier are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{Expression, PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{InjectContext, InjectError};
use crate::config::{Config, ConfigError};
use crate::names;
use crate::plumbing::{self, ReconcileMeasurer};
use crate::readiness::{CacheSync, Supervisor};
use crate::warm::WarmCache;

/// Controller name in logs and metrics.
const CONTROLLER: &str = "namespace-bundle";
/// Value of [`names::NAMESPACE_BUNDLE_LABEL`] on the ConfigMaps service-ca creates.
const LABEL_VALUE: &str = "true";

/// The label selector of every ConfigMap this feature ever created.
fn ours_selector() -> String {
    format!(
        "{}={LABEL_VALUE},{}={}",
        names::NAMESPACE_BUNDLE_LABEL,
        names::MANAGED_BY_LABEL,
        names::MANAGED_BY_VALUE
    )
}

/// Whether a ConfigMap is one this feature created (both labels): the only ones it changes or
/// deletes.
pub(crate) fn is_ours(meta: &kube::api::ObjectMeta) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    label(names::NAMESPACE_BUNDLE_LABEL) == Some(LABEL_VALUE)
        && label(names::MANAGED_BY_LABEL) == Some(names::MANAGED_BY_VALUE)
}

/// Whether a namespace should hold the bundle ConfigMap: the selector matches and it is not
/// being deleted (creating in a terminating namespace is refused).
pub(crate) fn wanted(selector: &Selector, ns: &kube::api::ObjectMeta) -> bool {
    ns.deletion_timestamp.is_none() && selects(selector, ns.labels.as_ref())
}

/// What one namespace's bundle ConfigMap needs.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Nothing to do.
    Nothing,
    /// Create it.
    Create(Box<ConfigMap>),
    /// Ours with other content: this merge patch (resourceVersion precondition) fixes it.
    Update(Value),
    /// Ours, but not wanted here (or immutable, so it is recreated): delete it.
    Delete,
    /// A ConfigMap of that name that service-ca did not create: left alone, reported.
    Foreign,
}

/// The pure decision: `wanted` ([`wanted`]), the ConfigMap of the configured name if it exists.
pub(crate) fn decide(
    wanted: bool,
    existing: Option<&ConfigMap>,
    name: &str,
    namespace: &str,
    bundle: &str,
) -> Step {
    match (wanted, existing) {
        (false, Some(cm)) if is_ours(&cm.metadata) => Step::Delete,
        (false, _) => Step::Nothing,
        (true, None) => Step::Create(Box::new(desired(name, namespace, bundle))),
        (true, Some(cm)) if !is_ours(&cm.metadata) => Step::Foreign,
        (true, Some(cm)) => {
            let data = cm.data.clone().unwrap_or_default();
            let current = data.len() == 1
                && data.get(names::SERVICE_CA_CRT).map(String::as_str) == Some(bundle);
            if current && cm.binary_data.as_ref().is_none_or(BTreeMap::is_empty) {
                Step::Nothing
            } else if cm.immutable == Some(true) {
                // Ours but frozen: delete, the next pass creates it afresh.
                Step::Delete
            } else {
                let mut patch_data: serde_json::Map<String, Value> =
                    data.keys().map(|k| (k.clone(), Value::Null)).collect();
                patch_data.insert(names::SERVICE_CA_CRT.into(), json!(bundle));
                let mut body = json!({
                    "metadata": {"resourceVersion": cm.metadata.resource_version},
                    "data": patch_data,
                });
                if let Some(binary) = &cm.binary_data {
                    body["binaryData"] = binary.keys().map(|k| (k.clone(), Value::Null)).collect();
                }
                Step::Update(body)
            }
        }
    }
}

/// The ConfigMap as created: our two labels, `service-ca.crt` only.
fn desired(name: &str, namespace: &str, bundle: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [
                    (
                        names::MANAGED_BY_LABEL.to_string(),
                        names::MANAGED_BY_VALUE.to_string(),
                    ),
                    (
                        names::NAMESPACE_BUNDLE_LABEL.to_string(),
                        LABEL_VALUE.to_string(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([(names::SERVICE_CA_CRT.to_string(), bundle.to_string())].into()),
        ..Default::default()
    }
}

/// Which of our ConfigMaps are stale at the start of a term: all when the option is off, those
/// of another name when it is on (the name was changed).
pub(crate) fn stale(configured: Option<&str>, cm_name: &str) -> bool {
    configured != Some(cm_name)
}

/// The feature's watches, kept for the whole process: Namespaces (metadata-only, cached; the
/// controller's primary objects) and our ConfigMaps (metadata-only, label-selected, uncached,
/// routed to their namespace so a deleted or edited one is repaired at once).
pub(crate) struct NamespaceBundleWatches {
    namespaces: WarmCache<PartialObjectMeta<Namespace>>,
    name: String,
    selector: Selector,
}

impl NamespaceBundleWatches {
    /// Starts the watches under `root` when the option is on.
    pub(crate) fn start(
        client: &kube::Client,
        cfg: &Config,
        caches: &CacheSync,
        root: &Supervisor,
    ) -> Option<Self> {
        let name = cfg.namespace_bundle_name.clone()?;
        let selector =
            parse_selector(cfg.namespace_bundle_selector.as_deref().unwrap_or("")).ok()?;
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let (namespaces, feed) = WarmCache::new("namespaces", caches, move |writer| {
            watcher(api, plumbing::watch_config())
                .default_backoff()
                .modify(|ns| {
                    ns.metadata.managed_fields = None;
                    ns.metadata.annotations = None;
                })
                .reflect(writer)
                .applied_objects()
        });
        root.spawn("namespaces-watch", feed);
        let cms: Api<PartialObjectMeta<ConfigMap>> = Api::all(client.clone());
        let routed = watcher(cms, plumbing::watch_config().labels(&ours_selector()))
            .default_backoff()
            .touched_objects()
            .map_ok(|cm| {
                cm.metadata
                    .namespace
                    .iter()
                    .map(|ns| ObjectRef::new(ns))
                    .collect::<Vec<_>>()
            });
        root.spawn(
            "namespace-bundle-configmaps-watch",
            namespaces.also_triggered_by(routed),
        );
        Some(Self {
            namespaces,
            name,
            selector,
        })
    }
}

/// State of one term's namespace-bundle controller.
struct BundleContext {
    shared: Arc<InjectContext>,
    name: String,
    selector: Selector,
}

/// One term: deletes stale ConfigMaps of ours, then (when on) keeps every namespace's current.
pub(crate) async fn run(
    ctx: Arc<InjectContext>,
    watches: Option<&NamespaceBundleWatches>,
    watch_namespace: Option<String>,
    concurrency: u16,
    token: CancellationToken,
) {
    let configured = watches.map(|w| w.name.as_str());
    token
        .run_until_cancelled(clean_up(&ctx, configured, watch_namespace.as_deref()))
        .await;
    let Some(watches) = watches else {
        // Off: nothing more to do this term, but a returning task reads as a stopped controller.
        token.cancelled().await;
        return;
    };
    let results =
        Controller::for_stream(watches.namespaces.subscribe(), watches.namespaces.store())
            .reconcile_all_on(plumbing::ca_changes(ctx.ca.clone()))
            .with_config(controller::Config::default().concurrency(concurrency))
            .graceful_shutdown_on(token.cancelled_owned())
            .run(
                reconcile,
                error_policy,
                Arc::new(BundleContext {
                    shared: ctx,
                    name: watches.name.clone(),
                    selector: watches.selector.clone(),
                }),
            );
    plumbing::consume(CONTROLLER, results).await;
}

/// Deletes our ConfigMaps that are stale ([`stale`]); without the `delete` permission (the
/// option's RBAC removed with it) it says how to remove them by hand.
async fn clean_up(ctx: &InjectContext, configured: Option<&str>, watch_namespace: Option<&str>) {
    let api: Api<PartialObjectMeta<ConfigMap>> = match watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let listed = match api
        .list_metadata(&ListParams::default().labels(&ours_selector()))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            warn!(error = %plumbing::api_message(&e), "listing namespace bundle ConfigMaps failed; stale ones are not cleaned up");
            return;
        }
    };
    for cm in listed.iter().filter(|cm| stale(configured, &cm.name_any())) {
        let Some(ns) = cm.metadata.namespace.as_deref() else {
            continue;
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: cm.metadata.uid.clone(),
                resource_version: cm.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        match Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
            .delete(&cm.name_any(), &dp)
            .await
        {
            Ok(_) => {
                info!(namespace = ns, name = %cm.name_any(), "namespace bundle ConfigMap deleted (option off or renamed)")
            }
            Err(e) if plumbing::status_code(&e) == Some(403) => {
                warn!(selector = %ours_selector(), "cannot delete stale namespace bundle ConfigMaps (no delete permission); delete them with kubectl delete configmap -A -l <selector>");
                return;
            }
            Err(e) => {
                warn!(namespace = ns, error = %plumbing::api_message(&e), "deleting a stale namespace bundle ConfigMap failed")
            }
        }
    }
}

fn error_policy(
    ns: Arc<PartialObjectMeta<Namespace>>,
    err: &InjectError,
    ctx: Arc<BundleContext>,
) -> Action {
    plumbing::requeue_after_error(
        &ctx.shared.metrics,
        CONTROLLER,
        err,
        &crate::fights::FightDetector::default(),
        &ns.name_any(),
        Duration::from_secs(30),
    )
}

async fn reconcile(
    ns: Arc<PartialObjectMeta<Namespace>>,
    ctx: Arc<BundleContext>,
) -> Result<Action, InjectError> {
    let _measure = ReconcileMeasurer::start(&ctx.shared.metrics, CONTROLLER);
    let shared = ctx.shared.as_ref();
    let Some(bundle) = shared.ca.borrow().as_ref().map(|ca| ca.bundle_pem()) else {
        return Ok(Action::await_change());
    };
    let namespace = ns.name_any();
    let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &namespace);
    let existing = api.get_opt(&ctx.name).await?;
    let wanted = wanted(&ctx.selector, &ns.metadata);
    match decide(wanted, existing.as_ref(), &ctx.name, &namespace, &bundle) {
        Step::Nothing => {}
        Step::Create(cm) => match api.create(&PostParams::default(), &cm).await {
            Ok(_) => {
                shared.metrics.wrote(CONTROLLER);
                info!(%namespace, name = %ctx.name, "namespace bundle ConfigMap created");
            }
            // Someone created it meanwhile: the next pass reads it.
            Err(e) if plumbing::status_code(&e) == Some(409) => {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            // The namespace started terminating.
            Err(e)
                if plumbing::status_code(&e) == Some(403)
                    && ns.metadata.deletion_timestamp.is_some() => {}
            Err(e) => return Err(e.into()),
        },
        Step::Update(body) => {
            let pp = PatchParams {
                field_manager: Some(names::FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.patch(&ctx.name, &pp, &Patch::Merge(body)).await?;
            shared.metrics.wrote(CONTROLLER);
            info!(%namespace, name = %ctx.name, "namespace bundle ConfigMap updated");
        }
        Step::Delete => {
            let dp = DeleteParams {
                preconditions: existing.as_ref().map(|cm| Preconditions {
                    uid: cm.metadata.uid.clone(),
                    resource_version: cm.metadata.resource_version.clone(),
                }),
                ..Default::default()
            };
            api.delete(&ctx.name, &dp).await?;
            info!(%namespace, name = %ctx.name, "namespace bundle ConfigMap deleted");
        }
        Step::Foreign => {
            let object = format!("{namespace}/{}", ctx.name);
            if let Some(cm) = existing.as_ref()
                && shared.blocked.admit(&object, "foreign namespace bundle")
            {
                warn!(%object, "a ConfigMap service-ca did not create has the namespace bundle's name; left alone");
                shared
                    .events
                    .publish(
                        &cm.object_ref(&()),
                        EventType::Warning,
                        "NamespaceBundleConflict",
                        "Inject",
                        format!(
                            "{object} was not created by service-ca (no {}={LABEL_VALUE} label); it is left alone and this namespace gets no service CA bundle ConfigMap",
                            names::NAMESPACE_BUNDLE_LABEL
                        ),
                    )
                    .await;
            }
        }
    }
    Ok(Action::await_change())
}

/// Errors of a label selector's text.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("label selector {text:?}: {reason}")]
pub(crate) struct SelectorError {
    text: String,
    reason: String,
}

/// Parses a label selector as `kubectl -l` takes it: comma-separated requirements `k=v`, `k==v`,
/// `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`. The empty text selects everything.
pub(crate) fn parse_selector(text: &str) -> Result<Selector, SelectorError> {
    let fail = |reason: String| SelectorError {
        text: text.to_string(),
        reason,
    };
    let mut expressions = Vec::new();
    for requirement in split_requirements(text).map_err(fail)? {
        expressions.push(parse_requirement(requirement).map_err(fail)?);
    }
    Ok(expressions.into_iter().collect())
}

/// Splits at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&text[start..]);
    let parts: Vec<&str> = parts.into_iter().map(str::trim).collect();
    if parts.len() == 1 && parts[0].is_empty() {
        return Ok(vec![]);
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err("empty requirement".into());
    }
    Ok(parts)
}

fn parse_requirement(text: &str) -> Result<Expression, String> {
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(label_key(key)?));
    }
    if let Some((key, value)) = text.split_once("!=") {
        return Ok(Expression::NotEqual(label_key(key)?, label_value(value)?));
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Expression::Equal(label_key(key)?, label_value(value)?));
    }
    for (operator, notin) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = text.split_once(operator) {
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{text:?}: the set must be in parentheses"))?;
            let values = set
                .split(',')
                .map(label_value)
                .collect::<Result<BTreeSet<_>, _>>()?;
            let key = label_key(key)?;
            return Ok(if notin {
                Expression::NotIn(key, values)
            } else {
                Expression::In(key, values)
            });
        }
    }
    Ok(Expression::Exists(label_key(text)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn label_key(text: &str) -> Result<String, String> {
    let key = text.trim();
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!("label key {key:?}: invalid prefix"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_value(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_string())
}

fn label_value(text: &str) -> Result<String, String> {
    let value = text.trim();
    if !is_label_value(value) {
        return Err(format!("invalid label value {value:?}"));
    }
    Ok(value.to_string())
}

/// Empty, or at most 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// A DNS subdomain (RFC 1123): what a ConfigMap name must be.
pub(crate) fn is_dns_subdomain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Whether a namespace with `labels` matches `selector`.
pub(crate) fn selects(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    selector.matches(labels.unwrap_or(&EMPTY))
}

/// Checks the namespace-bundle options of `cfg`.
pub(crate) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if let Some(selector) = &cfg.namespace_bundle_selector {
        parse_selector(selector).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    let Some(name) = &cfg.namespace_bundle_name else {
        return Ok(());
    };
    if !is_dns_subdomain(name) {
        return Err(ConfigError::Invalid(format!(
            "namespace bundle name {name:?} is not a valid ConfigMap name"
        )));
    }
    if cfg.watch_namespace.is_some() {
        // The option creates ConfigMaps across namespaces; a controller confined to one
        // namespace has neither the watch nor the RBAC for that.
        return Err(ConfigError::Invalid(
            "--namespace-bundle-name needs the whole cluster; it cannot be combined with --watch-namespace".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_bundle_decisions() {
        const B: &str = "BUNDLE";
        let cm = |labels: &[(&str, &str)], data: &[(&str, &str)], immutable: bool| ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("service-ca.crt".into()),
                resource_version: Some("7".into()),
                labels: Some(super::tests::labels(labels)),
                ..Default::default()
            },
            data: Some(super::tests::labels(data)),
            immutable: Some(immutable),
            ..Default::default()
        };
        let ours = [
            (names::MANAGED_BY_LABEL, names::MANAGED_BY_VALUE),
            (names::NAMESPACE_BUNDLE_LABEL, "true"),
        ];
        let current = cm(&ours, &[(names::SERVICE_CA_CRT, B)], false);
        let old = cm(&ours, &[(names::SERVICE_CA_CRT, "old"), ("x", "y")], false);
        let frozen = cm(&ours, &[(names::SERVICE_CA_CRT, "old")], true);
        let foreign = cm(&[], &[(names::SERVICE_CA_CRT, "theirs")], false);
        let half = cm(&ours[..1], &[], false);
        let decide = |wanted, existing| decide(wanted, existing, "service-ca.crt", "ns", B);
        assert!(
            matches!(decide(true, None), Step::Create(c) if is_ours(&c.metadata)
            && c.data == Some(super::tests::labels(&[(names::SERVICE_CA_CRT, B)])))
        );
        assert_eq!(decide(true, Some(&current)), Step::Nothing);
        assert_eq!(
            decide(true, Some(&old)),
            Step::Update(json!({"metadata": {"resourceVersion": "7"},
                "data": {names::SERVICE_CA_CRT: B, "x": null}}))
        );
        assert_eq!(decide(true, Some(&frozen)), Step::Delete);
        assert_eq!(decide(true, Some(&foreign)), Step::Foreign);
        assert_eq!(decide(true, Some(&half)), Step::Foreign);
        assert_eq!(decide(false, None), Step::Nothing);
        assert_eq!(decide(false, Some(&current)), Step::Delete);
        assert_eq!(decide(false, Some(&foreign)), Step::Nothing);
        assert_eq!(decide(false, Some(&half)), Step::Nothing);

        let selector = parse_selector("team=a").unwrap();
        let ns = |labels: &[(&str, &str)], deleting: bool| kube::api::ObjectMeta {
            labels: Some(super::tests::labels(labels)),
            deletion_timestamp: deleting
                .then(|| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default())),
            ..Default::default()
        };
        assert!(wanted(&selector, &ns(&[("team", "a")], false)));
        assert!(!wanted(&selector, &ns(&[("team", "a")], true)));
        assert!(!wanted(&selector, &ns(&[("team", "b")], false)));

        assert!(stale(None, "service-ca.crt"));
        assert!(stale(Some("new.crt"), "service-ca.crt"));
        assert!(!stale(Some("service-ca.crt"), "service-ca.crt"));
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_table() {
        let ns = labels(&[("env", "prod"), ("team", "a"), ("example.com/tier", "web")]);
        for (text, expected) in [
            ("", true),
            ("env=prod", true),
            ("env==prod", true),
            ("env=dev", false),
            ("env!=dev", true),
            ("env!=prod", false),
            ("env", true),
            ("!env", false),
            ("!missing", true),
            ("missing!=x", true),
            ("env in (dev, prod)", true),
            ("env in (dev)", false),
            ("env notin (dev)", true),
            ("missing notin (dev)", true),
            ("missing in (dev)", false),
            ("env=prod,team=a", true),
            ("env=prod,team=b", false),
            ("env in (prod,dev),example.com/tier=web", true),
            (" env = prod ", true),
        ] {
            let selector = parse_selector(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selects(&selector, Some(&ns)), expected, "{text:?}");
        }
        assert!(selects(&parse_selector("").unwrap(), None));
        assert!(!selects(&parse_selector("env").unwrap(), None));
        for bad in [
            "env=prod,",
            ",",
            "env in prod",
            "env in (a",
            "env)",
            "-bad=x",
            "env=not valid",
            "Bad_Prefix!/x=y",
            "a/b/c=d",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn options_are_validated() {
        let on = |name: &str, selector: Option<&str>| Config {
            namespace_bundle_name: Some(name.into()),
            namespace_bundle_selector: selector.map(Into::into),
            ..Config::default()
        };
        assert!(validate(&Config::default()).is_ok());
        assert!(validate(&on("service-ca.crt", None)).is_ok());
        assert!(validate(&on("openshift-service-ca.crt", Some("env=prod"))).is_ok());
        assert!(validate(&on("Service_CA", None)).is_err());
        assert!(validate(&on("", None)).is_err());
        assert!(validate(&on("ok", Some("env in prod"))).is_err());
        let confined = Config {
            watch_namespace: Some("one".into()),
            ..on("ok", None)
        };
        assert!(validate(&confined).is_err());
    }
}
