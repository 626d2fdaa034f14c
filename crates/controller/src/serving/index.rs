//! Which Secret each Service requests, derived from the Service watch stream (deletes and
//! re-lists included): routes Secret events to their Service, and forgets the per-Secret expiry
//! series of Secrets that are no longer managed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::runtime::watcher;

use super::decide;
use crate::metrics::Metrics;

type Key = (String, String);

/// `(namespace, secret) -> service` and its reverse, so every update is O(1).
#[derive(Default)]
struct Maps {
    by_secret: HashMap<Key, String>,
    by_service: HashMap<Key, String>,
    /// Services seen since a re-list began; the others are gone when it completes.
    relisted: Option<HashSet<Key>>,
}

/// The routing index of the serving controller.
pub(super) struct SecretIndex {
    maps: Mutex<Maps>,
    metrics: Arc<Metrics>,
}

impl SecretIndex {
    /// An empty index that reports its size and forgotten Secrets to `metrics`.
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            maps: Mutex::default(),
            metrics,
        }
    }

    /// Applies one watch event: a Service applied, deleted, or a re-list starting or completing.
    pub(super) fn observe(&self, event: &watcher::Event<Service>) {
        let Ok(mut maps) = self.maps.lock() else {
            return;
        };
        let mut forgotten = Vec::new();
        match event {
            watcher::Event::Init => maps.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(svc) | watcher::Event::Apply(svc) => {
                let Some(key) = key_of(svc) else { return };
                let requested = decide::requested_secret_name_in(svc.metadata.annotations.as_ref());
                if let (watcher::Event::InitApply(_), Some(seen)) = (event, maps.relisted.as_mut())
                {
                    seen.insert(key.clone());
                }
                forgotten.extend(maps.set(key, requested));
            }
            watcher::Event::Delete(svc) => {
                if let Some(key) = key_of(svc) {
                    forgotten.extend(maps.set(key, None));
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = maps.relisted.take() {
                    let gone: Vec<Key> = maps
                        .by_service
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        forgotten.extend(maps.set(key, None));
                    }
                }
            }
        }
        self.metrics.set_tracked_services(maps.by_service.len());
        drop(maps);
        for (namespace, secret) in forgotten {
            self.metrics.forget_cert_expiry(&namespace, &secret);
        }
    }

    /// The Service in `namespace` that requests Secret `secret`.
    pub(super) fn service_for(&self, namespace: &str, secret: &str) -> Option<String> {
        let maps = self.maps.lock().ok()?;
        maps.by_secret
            .get(&(namespace.to_string(), secret.to_string()))
            .cloned()
    }
}

impl Maps {
    /// Records that Service `key` requests `secret` (None: nothing); returns the Secret it
    /// no longer requests, if any.
    fn set(&mut self, key: Key, secret: Option<&str>) -> Option<Key> {
        if self.by_service.get(&key).map(String::as_str) == secret {
            return None;
        }
        let (namespace, service) = key;
        let old = self
            .by_service
            .remove(&(namespace.clone(), service.clone()))
            .map(|old| (namespace.clone(), old));
        if let Some(old) = &old
            && self.by_secret.get(old) == Some(&service)
        {
            self.by_secret.remove(old);
        }
        if let Some(secret) = secret {
            self.by_secret
                .insert((namespace.clone(), secret.into()), service.clone());
            self.by_service.insert((namespace, service), secret.into());
        }
        old
    }
}

fn key_of(svc: &Service) -> Option<Key> {
    Some((svc.namespace()?, svc.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names;

    fn svc(name: &str, secret: Option<&str>) -> Service {
        let mut svc = Service::default();
        svc.metadata.name = Some(name.into());
        svc.metadata.namespace = Some("ns".into());
        if let Some(secret) = secret {
            svc.metadata.annotations =
                Some([(names::SECRET_NAME_BETA.to_string(), secret.to_string())].into());
        }
        svc
    }

    fn size(metrics: &Metrics) -> bool {
        metrics.encode().contains("service_ca_tracked_services 0")
    }

    #[test]
    fn follows_applies_renames_deletes_and_relists() {
        let metrics = Arc::new(Metrics::new());
        let index = SecretIndex::new(metrics.clone());
        index.observe(&watcher::Event::Apply(svc("a", Some("a-tls"))));
        index.observe(&watcher::Event::Apply(svc("b", Some("b-tls"))));
        metrics.set_cert_expiry("ns", "a-tls", 1);
        assert_eq!(index.service_for("ns", "a-tls").as_deref(), Some("a"));
        assert_eq!(index.service_for("other", "a-tls"), None);
        // Renamed: the old name no longer routes, and its expiry series is gone.
        index.observe(&watcher::Event::Apply(svc("a", Some("a2-tls"))));
        assert_eq!(index.service_for("ns", "a-tls"), None);
        assert_eq!(index.service_for("ns", "a2-tls").as_deref(), Some("a"));
        assert!(!metrics.encode().contains("secret=\"a-tls\""));
        // Annotation removed, then the other Service deleted.
        index.observe(&watcher::Event::Apply(svc("a", None)));
        assert_eq!(index.service_for("ns", "a2-tls"), None);
        index.observe(&watcher::Event::Delete(svc("b", Some("b-tls"))));
        assert_eq!(index.service_for("ns", "b-tls"), None);
        assert!(size(&metrics));
        // A re-list forgets what it no longer lists.
        index.observe(&watcher::Event::Apply(svc("c", Some("c-tls"))));
        index.observe(&watcher::Event::Init);
        index.observe(&watcher::Event::InitApply(svc("d", Some("d-tls"))));
        index.observe(&watcher::Event::InitDone);
        assert_eq!(index.service_for("ns", "c-tls"), None);
        assert_eq!(index.service_for("ns", "d-tls").as_deref(), Some("d"));
        assert!(metrics.encode().contains("service_ca_tracked_services 1"));
    }
}
