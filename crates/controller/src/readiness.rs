//! Readiness: one source for `/readyz` and the `service_ca_ready` gauge, and the cache-sync
//! tracker the leader's readiness waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Resource;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Whether this replica is ready (every change mirrored to the gauge) and alive.
pub(crate) struct Readiness {
    ready: AtomicBool,
    /// The first controller that stopped on its own, if any: the process is no longer alive.
    stopped: std::sync::Mutex<Option<&'static str>>,
    metrics: Arc<Metrics>,
}

impl Readiness {
    /// Not ready until told otherwise.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.set_ready(false);
        Self {
            ready: AtomicBool::new(false),
            stopped: std::sync::Mutex::new(None),
            metrics,
        }
    }

    /// Records that a controller ended (or panicked) without being asked to: `/healthz` fails
    /// from now on, so the kubelet restarts the pod.
    pub(crate) fn controller_stopped(&self, controller: &'static str) {
        tracing::error!(
            controller,
            "a controller stopped unexpectedly; reporting unhealthy"
        );
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.get_or_insert(controller);
        }
    }

    /// The controller whose unexpected end made this process unhealthy.
    pub(crate) fn stopped_controller(&self) -> Option<&'static str> {
        self.stopped.lock().ok().and_then(|s| *s)
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

/// Runs controller tasks so that one ending on its own (an error or a panic) while its term is
/// still running marks the process unhealthy instead of vanishing silently.
#[derive(Clone)]
pub(crate) struct Supervisor {
    tasks: tokio_util::task::TaskTracker,
    token: tokio_util::sync::CancellationToken,
    health: Arc<Readiness>,
}

impl Supervisor {
    /// Supervises tasks spawned on `tasks` under `token`, reporting to `health`.
    pub(crate) fn new(
        tasks: tokio_util::task::TaskTracker,
        token: tokio_util::sync::CancellationToken,
        health: Arc<Readiness>,
    ) -> Self {
        Self {
            tasks,
            token,
            health,
        }
    }

    /// The term's cancellation token.
    pub(crate) fn token(&self) -> &tokio_util::sync::CancellationToken {
        &self.token
    }

    /// Spawns `controller`'s task.
    pub(crate) fn spawn(
        &self,
        controller: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        use futures::FutureExt;
        let (token, health) = (self.token.clone(), self.health.clone());
        self.tasks.spawn(async move {
            // Cancelling the term drops the task at once, in-flight reconciles included: a leader
            // that lost its lease sends nothing more (every write is idempotent, so whatever was
            // cut short is finished by the next leader).
            let run = token.run_until_cancelled(task);
            let ended = std::panic::AssertUnwindSafe(run).catch_unwind().await;
            if ended.is_err() || !token.is_cancelled() {
                health.controller_stopped(controller);
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    fn supervised() -> (Supervisor, Arc<Readiness>, TaskTracker, CancellationToken) {
        let health = Arc::new(Readiness::new(Arc::new(Metrics::new())));
        let (tasks, token) = (TaskTracker::new(), CancellationToken::new());
        let supervisor = Supervisor::new(tasks.clone(), token.clone(), health.clone());
        (supervisor, health, tasks, token)
    }

    #[tokio::test]
    async fn a_controller_that_ends_or_panics_makes_the_process_unhealthy() {
        let (supervisor, health, tasks, _token) = supervised();
        supervisor.spawn("quits", async {});
        tasks.close();
        tasks.wait().await;
        assert_eq!(health.stopped_controller(), Some("quits"));

        let (supervisor, health, tasks, _token) = supervised();
        supervisor.spawn("panics", async { panic!("boom") });
        tasks.close();
        tasks.wait().await;
        assert_eq!(health.stopped_controller(), Some("panics"));
    }

    #[tokio::test]
    async fn cancelling_the_term_drops_work_in_flight() {
        let (supervisor, health, tasks, token) = supervised();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        supervisor.spawn("serving", async move {
            // A reconcile that would write after a long call.
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            flag.store(true, Ordering::SeqCst);
        });
        token.cancel();
        tasks.close();
        tasks.wait().await;
        assert!(!finished.load(Ordering::SeqCst));
        assert_eq!(health.stopped_controller(), None);
    }

    #[tokio::test]
    async fn stopping_on_request_is_healthy() {
        let (supervisor, health, tasks, token) = supervised();
        let cancelled = token.clone();
        supervisor.spawn("serving", async move { cancelled.cancelled().await });
        token.cancel();
        tasks.close();
        tasks.wait().await;
        assert_eq!(health.stopped_controller(), None);
    }
}
