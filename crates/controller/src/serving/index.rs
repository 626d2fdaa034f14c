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
    /// Per requesting Service: the error counter last seen, and how many times a user reset it.
    counters: HashMap<Key, (u32, u64)>,
    /// Services seen since a re-list began; the others are gone when it completes.
    relisted: Option<HashSet<Key>>,
    /// `(namespace, service) -> password Secret` of Services with PKCS#12 stores
    /// (names::KEYSTORE_PASSWORD_SECRET), and its reverse (one Secret may serve several Services).
    password_of: HashMap<Key, String>,
    by_password: HashMap<Key, HashSet<String>>,
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
                let annotations = svc.metadata.annotations.as_ref();
                let requested = decide::requested_secret_name_in(annotations);
                if requested.is_some() {
                    maps.observe_counter(&key, annotations);
                }
                if let (watcher::Event::InitApply(_), Some(seen)) = (event, maps.relisted.as_mut())
                {
                    seen.insert(key.clone());
                }
                let password = requested.and(password_secret_name(annotations));
                maps.set_password(&key, password);
                forgotten.extend(maps.set(key, requested));
            }
            watcher::Event::Delete(svc) => {
                if let Some(key) = key_of(svc) {
                    maps.set_password(&key, None);
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
                        maps.set_password(&key, None);
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

    /// How many times a user has reset the Service's error counter (a request to retry now):
    /// part of what triggers a reconcile, so the reset is answered at once while the controller's
    /// own counter writes trigger nothing.
    pub(super) fn counter_resets(&self, namespace: &str, service: &str) -> u64 {
        self.maps
            .lock()
            .ok()
            .and_then(|m| {
                m.counters
                    .get(&(namespace.to_string(), service.to_string()))
                    .map(|c| c.1)
            })
            .unwrap_or(0)
    }

    /// The Services in `namespace` whose PKCS#12 stores take their password from Secret `secret`.
    pub(super) fn services_with_password(&self, namespace: &str, secret: &str) -> Vec<String> {
        let Ok(maps) = self.maps.lock() else {
            return vec![];
        };
        maps.by_password
            .get(&(namespace.to_string(), secret.to_string()))
            .map(|services| services.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The Service in `namespace` that requests Secret `secret`.
    pub(super) fn service_for(&self, namespace: &str, secret: &str) -> Option<String> {
        let maps = self.maps.lock().ok()?;
        maps.by_secret
            .get(&(namespace.to_string(), secret.to_string()))
            .cloned()
    }
}

/// The Secret name of a Service's names::KEYSTORE_PASSWORD_SECRET (`<secret>/<key>`), if any;
/// validity is the decision's business, routing only needs the name.
fn password_secret_name(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<&str> {
    let value = annotations?.get(crate::names::KEYSTORE_PASSWORD_SECRET)?;
    let name = value.split_once('/')?.0.trim();
    (!name.is_empty()).then_some(name)
}

impl Maps {
    /// Records that Service `key` takes its stores' password from Secret `secret` (None: none).
    fn set_password(&mut self, key: &Key, secret: Option<&str>) {
        if self.password_of.get(key).map(String::as_str) == secret {
            return;
        }
        if let Some(old) = self.password_of.remove(key) {
            let old = (key.0.clone(), old);
            if let Some(services) = self.by_password.get_mut(&old) {
                services.remove(&key.1);
                if services.is_empty() {
                    self.by_password.remove(&old);
                }
            }
        }
        if let Some(secret) = secret {
            self.password_of.insert(key.clone(), secret.to_string());
            self.by_password
                .entry((key.0.clone(), secret.to_string()))
                .or_default()
                .insert(key.1.clone());
        }
    }

    /// Records the Service's error counter; a drop from a failure count to 0 with the error
    /// still recorded is a user's reset (service-ca removes both together on success).
    fn observe_counter(
        &mut self,
        key: &Key,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) {
        let count = decide::failure_count(annotations);
        let reset = decide::counter_reset(annotations);
        let entry = self.counters.entry(key.clone()).or_insert((count, 0));
        if reset && entry.0 > 0 {
            entry.1 += 1;
        }
        entry.0 = count;
    }

    /// Records that Service `key` requests `secret` (None: nothing); returns the Secret it
    /// no longer requests, if any.
    fn set(&mut self, key: Key, secret: Option<&str>) -> Option<Key> {
        if self.by_service.get(&key).map(String::as_str) == secret {
            return None;
        }
        let (namespace, service) = key;
        if secret.is_none() {
            self.counters.remove(&(namespace.clone(), service.clone()));
        }
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

    #[test]
    fn routes_password_secrets_to_every_service_using_them() {
        let index = SecretIndex::new(Arc::new(Metrics::new()));
        let with_password = |name: &str, value: &str| {
            let mut s = svc(name, Some(&format!("{name}-tls")));
            s.metadata
                .annotations
                .get_or_insert_default()
                .insert(names::KEYSTORE_PASSWORD_SECRET.into(), value.into());
            s
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        index.observe(&watcher::Event::Apply(with_password("a", "pw/password")));
        index.observe(&watcher::Event::Apply(with_password("b", " pw /other")));
        assert_eq!(sorted(index.services_with_password("ns", "pw")), ["a", "b"]);
        assert!(index.services_with_password("other", "pw").is_empty());
        // Renamed for one, removed with the Service for the other.
        index.observe(&watcher::Event::Apply(with_password("a", "pw2/password")));
        assert_eq!(index.services_with_password("ns", "pw"), ["b"]);
        assert_eq!(index.services_with_password("ns", "pw2"), ["a"]);
        index.observe(&watcher::Event::Delete(with_password("b", "pw/other")));
        assert!(index.services_with_password("ns", "pw").is_empty());
        // No serving Secret requested: no routing; malformed values route nothing.
        let mut bare = with_password("c", "pw3/password");
        bare.metadata
            .annotations
            .get_or_insert_default()
            .remove(names::SECRET_NAME_BETA);
        index.observe(&watcher::Event::Apply(bare));
        index.observe(&watcher::Event::Apply(with_password("d", "no-slash")));
        assert!(index.services_with_password("ns", "pw3").is_empty());
        assert!(index.services_with_password("ns", "no-slash").is_empty());
        // A re-list that no longer lists a Service forgets its route.
        index.observe(&watcher::Event::Init);
        index.observe(&watcher::Event::InitDone);
        assert!(index.services_with_password("ns", "pw2").is_empty());
    }

    #[test]
    fn counts_resets_of_the_error_counter_only() {
        let index = SecretIndex::new(Arc::new(Metrics::new()));
        let with = |count: &str| {
            let mut s = svc("a", Some("a-tls"));
            let a = s.metadata.annotations.get_or_insert_default();
            a.insert(names::ERROR_BETA.into(), "failed".into());
            a.insert(names::ERROR_NUM_BETA.into(), count.into());
            s
        };
        index.observe(&watcher::Event::Apply(svc("a", Some("a-tls"))));
        for count in ["1", "2"] {
            index.observe(&watcher::Event::Apply(with(count)));
        }
        assert_eq!(index.counter_resets("ns", "a"), 0);
        index.observe(&watcher::Event::Apply(with("0")));
        assert_eq!(index.counter_resets("ns", "a"), 1);
        // The controller's own next write (1) is not a reset.
        index.observe(&watcher::Event::Apply(with("1")));
        index.observe(&watcher::Event::Apply(with("1")));
        assert_eq!(index.counter_resets("ns", "a"), 1);
    }
}
