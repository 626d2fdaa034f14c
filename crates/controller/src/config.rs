//! Validated controller configuration: where the CA lives, lifetimes, margins, algorithms.

use std::time::Duration;

use service_ca_pki::{CaConfig, ChainOrder, KeyAlgorithm};

use crate::names;

/// Errors found while validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The CA part of the configuration is invalid.
    #[error("invalid CA configuration: {0}")]
    Ca(#[from] service_ca_pki::PkiError),
}

/// Where the pod's ServiceAccount CA is mounted: what the legacy injector appends by default.
pub const DEFAULT_LEGACY_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Smallest renewal margin accepted (the original's fixed value).
pub(crate) const MIN_RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// Everything the controllers need to know, validated once at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace of the CA Secret, bundle ConfigMap, Lease and Events about the CA.
    pub namespace: String,
    /// Name of the CA Secret.
    pub ca_secret: String,
    /// Name of the bundle ConfigMap.
    pub bundle_configmap: String,
    /// Namespaces whose Services never get a serving certificate (refused with an Event).
    pub denied_namespaces: Vec<String>,
    /// Restrict Services and ConfigMaps to one namespace (None: the whole cluster).
    pub watch_namespace: Option<String>,
    /// Inject into cluster-scoped kinds (APIServices, CRDs, webhook configurations).
    pub cluster_scoped_injection: bool,
    /// Optional extra `<namespace>/<name>` the bundle is copied to (docs/behavior.md §16 O-8).
    pub publish_bundle_to: Option<(String, String)>,
    /// CA lifetime, rotation threshold, trust bridge and algorithm.
    pub ca: CaConfig,
    /// Serving certificate lifetime (capped at the CA's expiry).
    pub leaf_lifetime: Duration,
    /// Re-issue a serving certificate when less than this remains (capped at half of the
    /// certificate's lifetime, see `serving::decide::effective_margin`).
    pub renew_before: Duration,
    /// Key algorithm of serving certificates.
    pub leaf_key_algorithm: KeyAlgorithm,
    /// Cluster DNS domain used in SANs.
    pub cluster_domain: String,
    /// Order of certificates in serving `tls.crt`.
    pub chain_order: ChainOrder,
    /// Concurrent reconciles per controller.
    pub concurrency: u16,
    /// Keys generated ahead of demand.
    pub key_pool_size: usize,
    /// Threads generating keys.
    pub key_pool_threads: usize,
    /// Run the legacy ("vulnerable") ConfigMap injector (docs/behavior.md §10.7).
    pub legacy_injector: bool,
    /// Extra CA file appended by the legacy injector (the pod's ServiceAccount `ca.crt`).
    pub legacy_ca_file: Option<std::path::PathBuf>,
    /// Let Services request wildcard extra DNS names outside their own domain
    /// (`service-ca.dev/extra-dns-names: *.example.com`); default: only `*.<svc>.<ns>.svc…`.
    pub allow_external_wildcards: bool,
    /// At most this many rolling restarts of opted-in workloads per interval, cluster-wide
    /// (docs/behavior.md §17); the rest wait their turn.
    pub restart_pace: RestartPace,
    /// Create and keep current a ConfigMap of this name (key `service-ca.crt`) in every namespace
    /// [`Self::namespace_bundle_selector`] matches (None: off, and the ones created earlier are
    /// deleted).
    pub namespace_bundle_name: Option<String>,
    /// Label selector (`k=v,k2 in (a,b),!k3`) of the namespaces that get the bundle ConfigMap
    /// (None: every namespace).
    pub namespace_bundle_selector: Option<String>,
}

/// A rate of rolling restarts: `restarts` per `per` (`--restart-pace 5/10s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPace {
    /// Restarts allowed in any window of `per`.
    pub restarts: u32,
    /// The window.
    pub per: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: names::DEFAULT_NAMESPACE.into(),
            ca_secret: names::DEFAULT_CA_SECRET.into(),
            bundle_configmap: names::DEFAULT_BUNDLE_CONFIGMAP.into(),
            denied_namespaces: Vec::new(),
            watch_namespace: None,
            cluster_scoped_injection: true,
            publish_bundle_to: None,
            ca: CaConfig::default(),
            leaf_lifetime: Duration::from_secs(730 * 86400),
            renew_before: Duration::from_secs(30 * 86400),
            leaf_key_algorithm: KeyAlgorithm::default(),
            cluster_domain: "cluster.local".into(),
            chain_order: ChainOrder::Portable,
            concurrency: 16,
            // Serves a burst of 50 new Services without waiting for RSA (~5 KiB per key).
            key_pool_size: 64,
            // RSA key generation dominates issuance: use every core, but leave the runtime room.
            key_pool_threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            legacy_injector: false,
            legacy_ca_file: Some(DEFAULT_LEGACY_CA_FILE.into()),
            allow_external_wildcards: false,
            // A CA rotation restarts every opted-in workload: 5 per 10 s spreads 1,000 of them
            // over half an hour instead of restarting them all at once.
            restart_pace: RestartPace {
                restarts: 5,
                per: Duration::from_secs(10),
            },
            namespace_bundle_name: None,
            namespace_bundle_selector: None,
        }
    }
}

impl Config {
    /// The "short rotation" preset of docs/behavior.md §6 (CA 2h30m, leaves 2h, margin 1h), for testing.
    pub fn short_rotation() -> Self {
        Self {
            ca: CaConfig::short_rotation(),
            leaf_lifetime: Duration::from_secs(2 * 3600),
            renew_before: MIN_RENEW_BEFORE,
            ..Self::default()
        }
    }

    /// Checks every value and their relations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ca.validate()?;
        if self.renew_before < MIN_RENEW_BEFORE {
            return Err(ConfigError::Invalid(format!(
                "renew-before {:?} is below the minimum of 1h",
                self.renew_before
            )));
        }
        if self.cluster_domain.is_empty()
            || self.cluster_domain.starts_with('.')
            || self.cluster_domain.ends_with('.')
        {
            return Err(ConfigError::Invalid(format!(
                "cluster domain {:?} is not a DNS name",
                self.cluster_domain
            )));
        }
        for (what, value) in [
            ("namespace", &self.namespace),
            ("CA secret name", &self.ca_secret),
            ("bundle ConfigMap name", &self.bundle_configmap),
        ] {
            if value.is_empty() {
                return Err(ConfigError::Invalid(format!("{what} must not be empty")));
            }
        }
        crate::inject::validate_namespace_bundle(self)?;
        if self.restart_pace.restarts == 0 || self.restart_pace.per.is_zero() {
            return Err(ConfigError::Invalid(
                "restart pace must allow at least 1 restart per non-zero interval".into(),
            ));
        }
        if self.concurrency == 0 || self.key_pool_threads == 0 {
            return Err(ConfigError::Invalid(
                "concurrency and key-pool threads must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_short_preset_are_valid() {
        Config::default().validate().unwrap();
        Config::short_rotation().validate().unwrap();
    }

    #[test]
    fn renew_margin_bounds() {
        let mut c = Config {
            renew_before: Duration::from_secs(60),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        // A margin longer than the leaf's life is allowed: it is capped at half the life.
        c.renew_before = c.leaf_lifetime * 2;
        assert!(c.validate().is_ok());
    }
}
