//! Prometheus metrics: the original's `service_ca_expiry_time_seconds` plus reconcile counts,
//! errors and durations per controller, per-Secret certificate expiry, rotations and leadership.

use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    /// Controller name, e.g. `serving` or `inject-configmap`.
    controller: String,
}

/// Labels of an error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// Controller name.
    controller: String,
    /// Stable error category.
    category: String,
}

/// Labels naming a serving Secret.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    /// Namespace of the Secret.
    namespace: String,
    /// Name of the Secret.
    secret: String,
}

/// Every metric the process exposes.
pub struct Metrics {
    registry: Registry,
    ca_expiry: Gauge<i64, AtomicI64>,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    cert_expiry: Family<SecretLabels, Gauge<i64, AtomicI64>>,
    issued: Family<ControllerLabels, Counter>,
    writes: Family<ControllerLabels, Counter>,
    rotations: Counter,
    injection_blocked: Family<ControllerLabels, Counter>,
    tracked_services: Gauge<i64, AtomicI64>,
    leader: Gauge<i64, AtomicI64>,
    ready: Gauge<i64, AtomicI64>,
    runtime_tasks: Gauge<i64, AtomicI64>,
    encode_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let ca_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "service_ca_expiry_time_seconds",
            "NotAfter of the current service CA certificate, in Unix seconds",
            ca_expiry.clone(),
        );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "service_ca_reconciles",
            "Reconciles run, per controller",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "service_ca_reconcile_errors",
            "Reconcile errors, per controller and category",
            errors.clone(),
        );
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "service_ca_reconcile_duration_seconds",
            "Reconcile duration, per controller",
            durations.clone(),
        );
        let cert_expiry = Family::<SecretLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "service_ca_serving_cert_expiry_time_seconds",
            "NotAfter of each serving certificate service-ca manages, in Unix seconds",
            cert_expiry.clone(),
        );
        let issued = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "service_ca_certificates_issued",
            "Serving certificates issued",
            issued.clone(),
        );
        let writes = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "service_ca_api_writes",
            "Writes to the Kubernetes API, per controller",
            writes.clone(),
        );
        let rotations = Counter::default();
        registry.register(
            "service_ca_rotations",
            "CA rotations performed by this process",
            rotations.clone(),
        );
        let injection_blocked = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "service_ca_injection_blocked",
            "Injection targets found holding an outdated bundle they cannot be updated to (e.g. immutable ConfigMaps), reported as Warning Events",
            injection_blocked.clone(),
        );
        let tracked_services = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "service_ca_tracked_services",
            "Services that request a serving certificate (the serving controller's routing index)",
            tracked_services.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "service_ca_leader",
            "1 when this replica holds the leader lease",
            leader.clone(),
        );
        let ready = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "service_ca_ready",
            "1 when caches are synced and a usable CA is loaded",
            ready.clone(),
        );
        let runtime_tasks = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "service_ca_runtime_tasks",
            "Tasks alive in the async runtime when scraped (flat when idle; growth means a leak)",
            runtime_tasks.clone(),
        );
        Self {
            registry,
            ca_expiry,
            reconciles,
            errors,
            durations,
            cert_expiry,
            issued,
            writes,
            rotations,
            injection_blocked,
            tracked_services,
            leader,
            ready,
            runtime_tasks,
            encode_lock: Mutex::new(()),
        }
    }

    fn labels(controller: &str) -> ControllerLabels {
        ControllerLabels {
            controller: controller.into(),
        }
    }

    /// Records the CA's notAfter.
    pub(crate) fn set_ca_expiry(&self, unix: i64) {
        self.ca_expiry.set(unix);
    }

    /// Counts one reconcile and its duration.
    pub(crate) fn reconciled(&self, controller: &str, took: Duration) {
        self.reconciles
            .get_or_create(&Self::labels(controller))
            .inc();
        self.durations
            .get_or_create(&Self::labels(controller))
            .observe(took.as_secs_f64());
    }

    /// Counts one reconcile error.
    pub(crate) fn reconcile_error(&self, controller: &str, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                category: category.into(),
            })
            .inc();
    }

    /// Counts one API write.
    pub(crate) fn wrote(&self, controller: &str) {
        self.writes.get_or_create(&Self::labels(controller)).inc();
    }

    /// Total API writes of one controller (used by tests and benchmarks).
    pub fn writes_of(&self, controller: &str) -> u64 {
        self.writes.get_or_create(&Self::labels(controller)).get()
    }

    /// Counts an issued certificate and records its expiry.
    pub(crate) fn issued(&self, namespace: &str, secret: &str, not_after_unix: i64) {
        self.issued.get_or_create(&Self::labels("serving")).inc();
        self.set_cert_expiry(namespace, secret, not_after_unix);
    }

    /// Total certificates issued by this process.
    pub fn issued_total(&self) -> u64 {
        self.issued.get_or_create(&Self::labels("serving")).get()
    }

    /// Records a serving certificate's expiry.
    pub(crate) fn set_cert_expiry(&self, namespace: &str, secret: &str, not_after_unix: i64) {
        self.cert_expiry
            .get_or_create(&SecretLabels {
                namespace: namespace.into(),
                secret: secret.into(),
            })
            .set(not_after_unix);
    }

    /// Drops the expiry series of a Secret that is no longer managed.
    pub(crate) fn forget_cert_expiry(&self, namespace: &str, secret: &str) {
        self.cert_expiry.remove(&SecretLabels {
            namespace: namespace.into(),
            secret: secret.into(),
        });
    }

    /// Records how many Services request a certificate.
    pub(crate) fn set_tracked_services(&self, count: usize) {
        self.tracked_services
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts an injection target reported as blocked.
    pub(crate) fn injection_blocked(&self, controller: &str) {
        self.injection_blocked
            .get_or_create(&Self::labels(controller))
            .inc();
    }

    /// Counts a CA rotation.
    pub(crate) fn rotated(&self) {
        self.rotations.inc();
    }

    /// Sets the leader gauge.
    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Sets the readiness gauge.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let _guard = self.encode_lock.lock();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scrape_reports_the_runtimes_live_tasks() {
        let metrics = Metrics::new();
        let gauge = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("service_ca_runtime_tasks "))
                .and_then(|v| v.parse::<i64>().ok())
        };
        let before = gauge(&metrics.encode()).expect("the gauge is exported");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let parked = tokio::spawn(async move {
            let _ = stopped.await;
        });
        assert_eq!(gauge(&metrics.encode()), Some(before + 1));
        let _ = stop.send(());
        let _ = parked.await;
    }
}
