//! Readiness: one source for `/readyz` and the `service_ca_ready` gauge, and the cache-sync
//! tracker the leader's readiness waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Resource;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Whether this replica is ready; every change is mirrored to the gauge.
pub(crate) struct Readiness {
    ready: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Readiness {
    /// Not ready until told otherwise.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.set_ready(false);
        Self {
            ready: AtomicBool::new(false),
            metrics,
        }
    }

    /// Records readiness for `/readyz` and the gauge at once.
    pub(crate) fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.metrics.set_ready(ready);
    }

    /// The current readiness.
    pub(crate) fn get(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Counts caches that have not finished their initial list.
#[derive(Clone)]
pub(crate) struct CacheSync {
    pending: Arc<watch::Sender<usize>>,
}

impl Default for CacheSync {
    fn default() -> Self {
        Self {
            pending: Arc::new(watch::channel(0).0),
        }
    }
}

impl CacheSync {
    /// Registers a store; the process is not synced until it has listed everything once.
    pub(crate) fn track<K>(&self, store: Store<K>)
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
    {
        self.pending.send_modify(|n| *n += 1);
        let pending = self.pending.clone();
        tokio::spawn(async move {
            // kube's ready signal keeps only the last waiter's waker (the controller also waits
            // on it), so poll it with a short timeout instead of parking on it once.
            loop {
                match tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    store.wait_until_ready(),
                )
                .await
                {
                    Ok(Ok(())) => break pending.send_modify(|n| *n = n.saturating_sub(1)),
                    Ok(Err(_)) => break, // writer gone: this controller has stopped
                    Err(_) => continue,
                }
            }
        });
    }

    /// Resolves once every registered store has synced.
    pub(crate) async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
