//! Watches that outlive leadership terms: every replica keeps its caches and routing current, so
//! a follower that takes over starts reconciling from warm state instead of re-listing the
//! cluster. Only the controllers (and therefore every write) belong to a term.
//!
//! A [`WarmCache`] is a reflector store fed by one long-running watch, plus a broadcast of the
//! objects that changed. A term subscribes to the broadcast; a subscriber that falls behind gets
//! every cached object again instead of silently missing some.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::broadcast;
use tracing::warn;

use crate::readiness::CacheSync;

/// Changes a term may fall behind by before it is handed the whole cache again.
const BACKLOG: usize = 4096;

/// How often a new term looks again whether the cache has been filled.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A cache kept current for the whole process, and the stream of what changes in it.
pub(crate) struct WarmCache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<ObjectRef<K>>,
    kind: &'static str,
}

impl<K> WarmCache<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    /// A cache filled by the stream `build` makes from the store's writer: `build` reflects the
    /// watch events into the writer and yields the objects that should trigger a reconcile. The
    /// returned future feeds the cache and must run for the life of the process.
    pub(crate) fn new<S>(
        kind: &'static str,
        caches: &CacheSync,
        build: impl FnOnce(reflector::store::Writer<K>) -> S,
    ) -> (Self, impl Future<Output = ()> + Send + 'static)
    where
        S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    {
        let (store, writer) = reflector::store();
        caches.track(store.clone());
        let (changes, _) = broadcast::channel(BACKLOG);
        let feed = forward(
            kind,
            changes.clone(),
            build(writer).map(|r| r.map(|obj| vec![obj])),
        );
        (
            Self {
                store,
                changes,
                kind,
            },
            feed,
        )
    }

    /// A future that turns every item of `refs` into a trigger of the objects it names (e.g.
    /// Secret events routed to their Service); it must run for the life of the process.
    pub(crate) fn also_triggered_by<S>(&self, refs: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: Stream<Item = Result<Vec<ObjectRef<K>>, watcher::Error>> + Send + 'static,
    {
        let changes = self.changes.clone();
        let kind = self.kind;
        async move {
            futures::pin_mut!(refs);
            while let Some(item) = refs.next().await {
                match item {
                    Ok(objects) => {
                        for object in objects {
                            // No subscriber (a follower): nothing to trigger.
                            let _ = changes.send(object);
                        }
                    }
                    Err(err) => warn!(kind, error = %err, "watch failed; retrying with back-off"),
                }
            }
        }
    }

    /// The cache itself.
    pub(crate) fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// For one term's controller: every cached object once the cache is filled (a new term checks
    /// everything, as a fresh watch's initial list would make it), then the objects that change
    /// from the moment of subscription on; if the term falls more than [`BACKLOG`] changes behind,
    /// every cached object is yielded again.
    pub(crate) fn subscribe(
        &self,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        // Subscribe before reading the cache, so a change between the two is never missed (at
        // worst an object comes twice, which the controller's queue absorbs).
        let rx = self.changes.subscribe();
        let initial = {
            let store = self.store.clone();
            futures::stream::once(async move {
                // `wait_until_ready` wakes only the last of several concurrent waiters (kube's
                // DelayedInit keeps one waker; the readiness probe and kube's Controller wait on
                // the same store), so a lone await can sleep forever: look again every 100 ms.
                loop {
                    match tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
                        Ok(_) => break, // ready, or the feed is gone (shutting down)
                        Err(_elapsed) => continue,
                    }
                }
                futures::stream::iter(store.state())
            })
            .flatten()
        };
        let store = self.store.clone();
        let changes = futures::stream::unfold(rx, move |mut rx| {
            let store = store.clone();
            async move {
                let objects: Vec<Arc<K>> = match rx.recv().await {
                    Ok(object) => store.get(&object).into_iter().collect(),
                    Err(broadcast::error::RecvError::Lagged(_)) => store.state(),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((futures::stream::iter(objects), rx))
            }
        })
        .flatten();
        initial.chain(changes).map(|object| Ok(K::clone(&object)))
    }
}

async fn forward<K, S>(kind: &'static str, changes: broadcast::Sender<ObjectRef<K>>, objects: S)
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<Vec<K>, watcher::Error>> + Send + 'static,
{
    futures::pin_mut!(objects);
    while let Some(item) = objects.next().await {
        match item {
            Ok(objects) => {
                for object in objects {
                    let _ = changes.send(ObjectRef::from_obj(&object));
                }
            }
            Err(err) => warn!(kind, error = %err, "watch failed; retrying with back-off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::WatchStreamExt;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm
    }

    type EventSender =
        tokio::sync::mpsc::UnboundedSender<Result<watcher::Event<ConfigMap>, watcher::Error>>;

    /// A cache whose watch events the test sends by hand, and its running feed.
    fn fed_by_hand() -> (
        WarmCache<ConfigMap>,
        tokio::task::JoinHandle<()>,
        EventSender,
    ) {
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let events = futures::stream::unfold(events_rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        });
        let (cache, feed) = WarmCache::new("configmap", &CacheSync::default(), |writer| {
            events.reflect(writer).applied_objects()
        });
        (cache, tokio::spawn(feed), events_tx)
    }

    #[tokio::test]
    async fn terms_see_the_cache_then_changes_and_everything_when_they_lag() {
        let (cache, feeder, events_tx) = fed_by_hand();
        let send = |e| events_tx.send(Ok(e)).ok();
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(cm("before")));
        send(watcher::Event::InitDone);
        // A follower's cache fills although nobody subscribes.
        while cache.store().is_empty() {
            tokio::task::yield_now().await;
        }
        let mut term = Box::pin(cache.subscribe());
        send(watcher::Event::Apply(cm("after")));
        // A new term first sees what was cached before it subscribed (a cold start with objects
        // already there must reconcile them), then what changes.
        let mut seen = Vec::new();
        while !seen.iter().any(|n| n == "after") {
            let next = term.next().await.and_then(Result::ok);
            seen.extend(next.and_then(|c| c.metadata.name));
        }
        assert!(seen.iter().any(|n| n == "before"), "{seen:?}");
        assert_eq!(cache.store().len(), 2);

        // Falling behind by more than the backlog replays the whole cache instead.
        for i in 0..=BACKLOG {
            send(watcher::Event::Apply(cm(&format!("n{}", i % 3))));
        }
        drop(events_tx);
        let _ = feeder.await;
        let mut names = std::collections::BTreeSet::new();
        let replay = async {
            while names.len() < 5 {
                if let Some(Ok(c)) = term.next().await {
                    names.extend(c.metadata.name);
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), replay)
            .await
            .expect("a lagging term gets the whole cache");
        let names: Vec<_> = names.into_iter().collect();
        assert_eq!(names, ["after", "before", "n0", "n1", "n2"]);
    }

    #[tokio::test]
    async fn a_term_that_subscribes_before_the_cache_fills_gets_it_despite_other_waiters() {
        let (cache, _feeder, events_tx) = fed_by_hand();
        let mut term = Box::pin(cache.subscribe());
        assert!(futures::poll!(term.next()).is_pending());
        // Another waiter on the same store (the readiness probe, kube's Controller) registers
        // after the term: kube's DelayedInit then wakes only that one.
        let store = cache.store();
        let other = tokio::spawn(async move { store.wait_until_ready().await.is_ok() });
        tokio::task::yield_now().await;
        let send = |e| events_tx.send(Ok(e)).ok();
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(cm("existing")));
        send(watcher::Event::InitDone);
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), term.next())
            .await
            .expect("the term is handed the filled cache")
            .and_then(Result::ok);
        assert_eq!(
            first.and_then(|c| c.metadata.name).as_deref(),
            Some("existing")
        );
        // `other` itself may never be woken now (its waker was replaced by the term's next
        // look): every waiter in this crate looks again on a timer for exactly that reason.
        other.abort();
    }
}
