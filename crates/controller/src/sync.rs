//! Readiness of the caches: every controller registers its store, and the process is synced once
//! each registered store has completed its initial list.

use std::sync::Arc;

use kube::Resource;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

/// Counts caches that have not finished their initial list.
#[derive(Clone)]
pub struct CacheSync {
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
    pub fn track<K>(&self, store: Store<K>)
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
    pub async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
