//! What every controller shares: error classification, the reconcile measurer, the per-reconcile
//! tracing span, the consumer of a controller's result stream, and the CA-change trigger.

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::{debug, warn};

use crate::ca::CaReceiver;
use crate::metrics::Metrics;

/// Objects per page of an initial list: small pages bound the memory a list takes while it is
/// parsed, whatever size the objects are (a tenant can make each one ~1 MiB).
const LIST_PAGE_SIZE: u32 = 50;

/// The watch configuration every cluster-wide watch uses.
pub(crate) fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// Keeps only the annotations in `keep`: cached objects hold what the controller reads, not
/// what tenants write (annotations can be up to 256 KiB per object).
pub(crate) fn keep_annotations(meta: &mut kube::api::ObjectMeta, keep: &[&str]) {
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| keep.contains(&k.as_str()));
    }
}

/// What every controller's error tells the shared plumbing.
pub(crate) trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// Stable snake_case category, used as the metrics label and in logs.
    fn category(&self) -> &'static str;

    /// A write lost an optimistic-concurrency race (409): transient, retried soon, not reported.
    fn is_conflict(&self) -> bool;
}

/// The HTTP status of a Kubernetes API error (None for transport errors).
pub(crate) fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Stable category of a Kubernetes client error.
pub(crate) fn kube_category(err: &kube::Error) -> &'static str {
    if let kube::Error::Service(inner) = err
        && inner.is::<crate::leader::NotLeading>()
    {
        return "not_leading";
    }
    match status_code(err) {
        Some(409) => "conflict",
        Some(422) => "invalid",
        Some(403) => "forbidden",
        Some(404) => "not_found",
        Some(429) => "throttled",
        Some(code) if code >= 500 => "server_error",
        Some(_) => "api_error",
        None => "transport",
    }
}

/// A one-line description of a Kubernetes client error: for API errors the server's message and
/// code (what the original writes into error annotations), not the whole Status structure.
pub(crate) fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

/// Counts one reconcile and records its duration when dropped, whichever way it ends.
pub(crate) struct ReconcileMeasurer {
    metrics: Arc<Metrics>,
    controller: &'static str,
    started: Instant,
}

impl ReconcileMeasurer {
    /// Starts measuring one reconcile of `controller`.
    pub(crate) fn start(metrics: &Arc<Metrics>, controller: &'static str) -> Self {
        Self {
            metrics: metrics.clone(),
            controller,
            started: Instant::now(),
        }
    }
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.metrics
            .reconciled(self.controller, self.started.elapsed());
    }
}

/// The span every reconcile runs in: the controller and the object, so every log line of the
/// reconcile names what it is about.
pub(crate) fn reconcile_span(controller: &'static str, object: &dyn Display) -> tracing::Span {
    tracing::info_span!("reconcile", controller, object = %object)
}

/// The error policy shared by every controller: count the error by category; a conflict is
/// retried after `fights`' exponential conflict delay for the object, anything else after
/// `otherwise`.
pub(crate) fn requeue_after_error<E: ReconcileError>(
    metrics: &Metrics,
    controller: &'static str,
    err: &E,
    fights: &crate::fights::FightDetector,
    object: &str,
    otherwise: Duration,
) -> Action {
    metrics.reconcile_error(controller, err.category());
    Action::requeue(if err.is_conflict() {
        fights.conflict_delay(object)
    } else {
        otherwise
    })
}

/// Drives a controller's result stream to its end, logging what went wrong with the object it
/// concerned: failed reconciles and failing watches at `warn` (conflicts at `debug`).
pub(crate) async fn consume<K, E>(
    controller: &'static str,
    results: impl Stream<Item = Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>>,
) where
    K: kube::Resource,
    K::DynamicType: Clone + Eq + std::hash::Hash,
    E: ReconcileError,
{
    results
        .for_each(|result| {
            match result {
                Ok((object, action)) => debug!(controller, %object, ?action, "reconciled"),
                Err(controller::Error::ReconcilerFailed(err, object)) if err.is_conflict() => {
                    debug!(controller, %object, error = %err, "write conflict; retrying from newer state")
                }
                Err(controller::Error::ReconcilerFailed(err, object)) => {
                    warn!(controller, %object, category = err.category(), error = %err, "reconcile failed")
                }
                Err(controller::Error::ObjectNotFound(object)) => {
                    debug!(controller, %object, "object gone before its reconcile")
                }
                Err(controller::Error::QueueError(err)) => {
                    warn!(controller, error = %err, "watch failed; retrying with back-off")
                }
                Err(err) => warn!(controller, error = %err, "controller runtime error"),
            }
            futures::future::ready(())
        })
        .await;
}

/// Yields once every time the CA changes to a loaded value: every controller re-examines all of
/// its objects then.
pub(crate) fn ca_changes(rx: CaReceiver) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if rx.borrow_and_update().is_some() {
                return Some(((), rx));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                message: "m".into(),
                ..Default::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn stripping_keeps_only_what_is_read() {
        let mut meta = kube::api::ObjectMeta {
            name: Some("a".into()),
            labels: Some([("l".to_string(), "v".to_string())].into()),
            annotations: Some(
                [
                    ("keep".to_string(), "1".to_string()),
                    ("huge".to_string(), "x".repeat(100_000)),
                ]
                .into(),
            ),
            ..Default::default()
        };
        keep_annotations(&mut meta, &["keep"]);
        assert_eq!(meta.name.as_deref(), Some("a"));
        assert!(meta.labels.is_none());
        assert_eq!(meta.annotations.unwrap().len(), 1);
    }

    #[test]
    fn kube_categories() {
        for (code, category) in [
            (409, "conflict"),
            (422, "invalid"),
            (403, "forbidden"),
            (404, "not_found"),
            (429, "throttled"),
            (503, "server_error"),
            (400, "api_error"),
        ] {
            assert_eq!(kube_category(&api_error(code)), category, "{code}");
        }
        assert_eq!(api_message(&api_error(403)), "m (403)");
    }
}
