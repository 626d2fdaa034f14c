//! Controller settings from flags and an optional YAML/JSON file: same names in both (the file
//! uses the flag names without `--`); a flag given on the command line wins over the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use service_ca_controller::Config;
use service_ca_pki::{ChainOrder, KeyAlgorithm};

/// Every controller setting; `None` means "not given here".
#[derive(Args, Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Namespace of the CA Secret, bundle ConfigMap and Lease [default: openshift-service-ca].
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the CA Secret [default: signing-key].
    #[arg(long)]
    pub ca_secret: Option<String>,
    /// Name of the bundle ConfigMap [default: signing-cabundle].
    #[arg(long)]
    pub bundle_configmap: Option<String>,
    /// Also publish the bundle to this ConfigMap, as NAMESPACE/NAME.
    #[arg(long)]
    pub publish_bundle_to: Option<String>,
    /// Start from the short-rotation preset (CA 2h30m, leaves 2h, margin 1h) for testing.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub short_rotation: Option<bool>,
    /// CA lifetime, e.g. 790d or 2h30m [default: 790d].
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub ca_lifetime: Option<Duration>,
    /// Rotate the CA when less than this validity remains [default: 183d, "6 months"].
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub rotation_threshold: Option<Duration>,
    /// Minimum validity of the previous CA's trust bridge after a rotation [default: 183d].
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub trust_bridge_min: Option<Duration>,
    /// Serving certificate lifetime [default: 730d].
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub leaf_lifetime: Option<Duration>,
    /// Re-issue serving certificates when less than this remains [default: 30d; minimum 1h].
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub renew_before: Option<Duration>,
    /// Key algorithm of the CA: rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384 [default: rsa-2048].
    #[arg(long)]
    #[serde(default, deserialize_with = "de_from_str")]
    pub ca_key_algorithm: Option<KeyAlgorithm>,
    /// Key algorithm of serving certificates [default: rsa-2048].
    #[arg(long)]
    #[serde(default, deserialize_with = "de_from_str")]
    pub leaf_key_algorithm: Option<KeyAlgorithm>,
    /// Cluster DNS domain used in SANs [default: cluster.local].
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// Serving chain order: portable [leaf, intermediate, CA] or upstream [leaf, CA, intermediate] [default: portable].
    #[arg(long, value_parser = parse_chain_order)]
    #[serde(default, deserialize_with = "de_chain_order")]
    pub chain_order: Option<ChainOrder>,
    /// Concurrent reconciles per controller [default: 16].
    #[arg(long)]
    pub concurrency: Option<u16>,
    /// Only manage Services and ConfigMaps in this namespace [default: the whole cluster].
    #[arg(long)]
    pub watch_namespace: Option<String>,
    /// Inject into APIServices, CRDs and webhook configurations [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub cluster_scoped_injection: Option<bool>,
    /// Run the legacy ("vulnerable") injector for ConfigMaps named openshift-service-ca.crt [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub legacy_injector: Option<bool>,
    /// CA file the legacy injector appends [default: the pod's ServiceAccount ca.crt].
    #[arg(long)]
    pub legacy_ca_file: Option<PathBuf>,
}

/// Parses `90d`, `12h`, `30m`, `45s` and combinations such as `2h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("unknown unit {c:?} in {s:?} (use d, h, m, s)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("missing number before {c:?} in {s:?}"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too large"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("{s:?} needs a unit (d, h, m, s)"));
    }
    if total == 0 {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs(total))
}

fn parse_chain_order(s: &str) -> Result<ChainOrder, String> {
    match s {
        "portable" => Ok(ChainOrder::Portable),
        "upstream" => Ok(ChainOrder::Upstream),
        other => Err(format!("chain order {other:?} is not portable or upstream")),
    }
}

fn de_with<'de, D, T>(
    d: D,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Option<String> = Option::deserialize(d)?;
    raw.map(|s| parse(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_with(d, parse_duration)
}

fn de_chain_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ChainOrder>, D::Error> {
    de_with(d, parse_chain_order)
}

fn de_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    de_with(d, |s| s.parse::<T>().map_err(|e| e.to_string()))
}

impl Settings {
    /// Reads a settings file (YAML, so JSON works too).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        serde_yaml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Values of `self` where given, else those of `fallback`.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            namespace: self.namespace.or(fallback.namespace),
            ca_secret: self.ca_secret.or(fallback.ca_secret),
            bundle_configmap: self.bundle_configmap.or(fallback.bundle_configmap),
            publish_bundle_to: self.publish_bundle_to.or(fallback.publish_bundle_to),
            short_rotation: self.short_rotation.or(fallback.short_rotation),
            ca_lifetime: self.ca_lifetime.or(fallback.ca_lifetime),
            rotation_threshold: self.rotation_threshold.or(fallback.rotation_threshold),
            trust_bridge_min: self.trust_bridge_min.or(fallback.trust_bridge_min),
            leaf_lifetime: self.leaf_lifetime.or(fallback.leaf_lifetime),
            renew_before: self.renew_before.or(fallback.renew_before),
            ca_key_algorithm: self.ca_key_algorithm.or(fallback.ca_key_algorithm),
            leaf_key_algorithm: self.leaf_key_algorithm.or(fallback.leaf_key_algorithm),
            cluster_domain: self.cluster_domain.or(fallback.cluster_domain),
            chain_order: self.chain_order.or(fallback.chain_order),
            concurrency: self.concurrency.or(fallback.concurrency),
            watch_namespace: self.watch_namespace.or(fallback.watch_namespace),
            cluster_scoped_injection: self
                .cluster_scoped_injection
                .or(fallback.cluster_scoped_injection),
            legacy_injector: self.legacy_injector.or(fallback.legacy_injector),
            legacy_ca_file: self.legacy_ca_file.or(fallback.legacy_ca_file),
        }
    }

    /// The validated controller configuration: preset, then every given value.
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let mut cfg = if self.short_rotation == Some(true) {
            Config::short_rotation()
        } else {
            Config::default()
        };
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut cfg.namespace, &self.namespace);
        set(&mut cfg.ca_secret, &self.ca_secret);
        set(&mut cfg.bundle_configmap, &self.bundle_configmap);
        if let Some(target) = &self.publish_bundle_to {
            let (ns, name) = target
                .split_once('/')
                .context("publish-bundle-to must be NAMESPACE/NAME")?;
            cfg.publish_bundle_to = Some((ns.into(), name.into()));
        }
        set(&mut cfg.ca.lifetime, &self.ca_lifetime);
        set(&mut cfg.ca.rotation_threshold, &self.rotation_threshold);
        set(&mut cfg.ca.trust_bridge_min, &self.trust_bridge_min);
        set(&mut cfg.leaf_lifetime, &self.leaf_lifetime);
        set(&mut cfg.renew_before, &self.renew_before);
        set(&mut cfg.ca.key_algorithm, &self.ca_key_algorithm);
        set(&mut cfg.leaf_key_algorithm, &self.leaf_key_algorithm);
        set(&mut cfg.cluster_domain, &self.cluster_domain);
        set(&mut cfg.chain_order, &self.chain_order);
        set(&mut cfg.concurrency, &self.concurrency);
        cfg.watch_namespace = self.watch_namespace.clone();
        set(
            &mut cfg.cluster_scoped_injection,
            &self.cluster_scoped_injection,
        );
        set(&mut cfg.legacy_injector, &self.legacy_injector);
        cfg.legacy_ca_file = Some(self.legacy_ca_file.clone().unwrap_or_else(|| {
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
        }));
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("790d"), Ok(Duration::from_secs(790 * 86400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn file_then_flags() {
        let file: Settings = serde_yaml::from_str(
            "namespace: from-file\nrenew-before: 2d\nchain-order: upstream\nca-key-algorithm: ecdsa-p384\nconcurrency: 4\n",
        )
        .unwrap();
        let flags = Settings {
            namespace: Some("from-flag".into()),
            ..Settings::default()
        };
        let cfg = flags.or(file).to_config().unwrap();
        assert_eq!(cfg.namespace, "from-flag");
        assert_eq!(cfg.renew_before, Duration::from_secs(2 * 86400));
        assert_eq!(cfg.chain_order, ChainOrder::Upstream);
        assert_eq!(cfg.ca.key_algorithm, KeyAlgorithm::EcdsaP384);
        assert_eq!(cfg.concurrency, 4);
        assert!(cfg.cluster_scoped_injection);
    }

    #[test]
    fn bad_files_and_values_are_errors() {
        assert!(serde_yaml::from_str::<Settings>("no-such-setting: 1").is_err());
        assert!(serde_yaml::from_str::<Settings>("renew-before: 1y").is_err());
        let too_small = Settings {
            renew_before: Some(Duration::from_secs(60)),
            ..Settings::default()
        };
        assert!(too_small.to_config().is_err());
        let short = Settings {
            short_rotation: Some(true),
            ..Settings::default()
        };
        assert_eq!(
            short.to_config().unwrap().leaf_lifetime,
            Duration::from_secs(7200)
        );
    }
}
