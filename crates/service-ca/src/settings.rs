//! Controller settings from flags and an optional YAML/JSON file: same names in both (the file
//! uses the flag names without `--`); a flag given on the command line wins over the file.
//!
//! Each setting is declared once, in the `settings!` table below: its flag and file key, its
//! help text, and the [`Config`] field it sets. Defaults live only in `Config::default()` (and
//! `Config::short_rotation()`); the help text shows them from there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use service_ca_controller::{Config, RestartPace};
use service_ca_pki::{ChainOrder, KeyAlgorithm};

/// A value a setting can take: parsed the same way from a flag and from the file, and shown
/// in the help text.
pub trait SettingValue: Sized {
    /// Parses the text form.
    fn parse(text: &str) -> Result<Self, String>;
    /// The text form, as a user would type it.
    fn show(&self) -> String;
}

impl SettingValue for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

impl SettingValue for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl SettingValue for u16 {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number from 0 to 65535"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for usize {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a non-negative number"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("{other:?} is not true or false")),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }
    fn show(&self) -> String {
        show_duration(*self)
    }
}

impl SettingValue for KeyAlgorithm {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|e: service_ca_pki::PkiError| e.to_string())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for ChainOrder {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "portable" => Ok(ChainOrder::Portable),
            "upstream" => Ok(ChainOrder::Upstream),
            other => Err(format!("chain order {other:?} is not portable or upstream")),
        }
    }
    fn show(&self) -> String {
        match self {
            ChainOrder::Portable => "portable",
            ChainOrder::Upstream => "upstream",
        }
        .into()
    }
}

/// A comma-separated list.
impl SettingValue for Vec<String> {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }
    fn show(&self) -> String {
        if self.is_empty() {
            "none".into()
        } else {
            self.join(",")
        }
    }
}

/// `NAMESPACE/NAME`.
impl SettingValue for (String, String) {
    fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns.into(), name.into())),
            _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
        }
    }
    fn show(&self) -> String {
        format!("{}/{}", self.0, self.1)
    }
}

/// `RESTARTS/INTERVAL`, e.g. `5/10s`.
impl SettingValue for RestartPace {
    fn parse(text: &str) -> Result<Self, String> {
        let (restarts, per) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not RESTARTS/INTERVAL, e.g. 5/10s"))?;
        let restarts = restarts
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{restarts:?} is not a number of restarts above 0"))?;
        Ok(RestartPace {
            restarts,
            per: parse_duration(per.trim())?,
        })
    }
    fn show(&self) -> String {
        format!("{}/{}", self.restarts, show_duration(self.per))
    }
}

/// How a setting's value lands in its [`Config`] field (plain, or wrapped in `Some`), and how
/// the field's default is shown.
trait ConfigField<T> {
    fn assign(&mut self, value: T);
    fn show_default(&self) -> String;
}

impl<T: SettingValue> ConfigField<T> for T {
    fn assign(&mut self, value: T) {
        *self = value;
    }
    fn show_default(&self) -> String {
        self.show()
    }
}

impl<T: SettingValue> ConfigField<T> for Option<T> {
    fn assign(&mut self, value: T) {
        *self = Some(value);
    }
    fn show_default(&self) -> String {
        self.as_ref()
            .map_or_else(|| "none".into(), SettingValue::show)
    }
}

fn parse_value<T: SettingValue>(text: &str) -> Result<T, String> {
    T::parse(text)
}

/// Reads a file value as text whatever its YAML type (`4`, `true` and `"4"` alike), then parses
/// it like the flag.
fn de_value<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: SettingValue,
{
    match d.deserialize_option(ScalarText)? {
        None => Ok(None),
        Some(text) => T::parse(&text).map(Some).map_err(serde::de::Error::custom),
    }
}

/// The text of a single scalar of any type; null is `None`, a list or map is an error.
struct ScalarText;

impl<'de> serde::de::Visitor<'de> for ScalarText {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a single value")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
}

/// Declares every setting once: `field: Type => config.path;`, with its doc comment as help and
/// any extra clap attributes.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $(#[arg($($arg:tt)*)])? $field:ident: $ty:ty => $($path:ident).+; )*) => {
        /// Every controller setting; `None` means "not given here".
        #[derive(Args, Deserialize, Default, Debug, Clone)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct Settings {
            /// Start from the short-rotation preset (CA 2h30m, leaves 2h, margin 1h) for testing.
            #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_value::<bool>)]
            #[serde(default, deserialize_with = "de_value")]
            pub short_rotation: Option<bool>,
            $(
                $(#[doc = $doc])+
                #[arg(long, value_parser = parse_value::<$ty> $(, $($arg)*)?)]
                #[serde(default, deserialize_with = "de_value")]
                pub $field: Option<$ty>,
            )*
        }

        impl Settings {
            /// Values of `self` where given, else those of `fallback`.
            pub fn or(self, fallback: Settings) -> Settings {
                Settings {
                    short_rotation: self.short_rotation.or(fallback.short_rotation),
                    $( $field: self.$field.or(fallback.$field), )*
                }
            }

            /// Sets every given value on `cfg`.
            fn apply(&self, cfg: &mut Config) {
                $( if let Some(value) = &self.$field {
                    ConfigField::<$ty>::assign(&mut cfg.$($path).+, value.clone());
                } )*
            }

            /// Each setting's flag name and its default, as shown in the help text.
            pub fn defaults() -> Vec<(&'static str, String)> {
                let cfg = Config::default();
                vec![ $( (stringify!($field), ConfigField::<$ty>::show_default(&cfg.$($path).+)), )* ]
            }
        }
    };
}

settings! {
    /// Namespace of the CA Secret, bundle ConfigMap and Lease.
    namespace: String => namespace;
    /// Name of the CA Secret.
    ca_secret: String => ca_secret;
    /// Name of the bundle ConfigMap.
    bundle_configmap: String => bundle_configmap;
    /// Also publish the bundle to this ConfigMap, as NAMESPACE/NAME.
    publish_bundle_to: (String, String) => publish_bundle_to;
    /// CA lifetime, e.g. 790d or 2h30m.
    ca_lifetime: Duration => ca.lifetime;
    /// Rotate the CA when less than this validity remains.
    rotation_threshold: Duration => ca.rotation_threshold;
    /// Minimum validity of the previous CA's trust bridge after a rotation.
    trust_bridge_min: Duration => ca.trust_bridge_min;
    /// Serving certificate lifetime.
    leaf_lifetime: Duration => leaf_lifetime;
    /// Re-issue serving certificates when less than this remains (minimum 1h).
    renew_before: Duration => renew_before;
    /// Key algorithm of the CA: rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384.
    ca_key_algorithm: KeyAlgorithm => ca.key_algorithm;
    /// Key algorithm of serving certificates.
    leaf_key_algorithm: KeyAlgorithm => leaf_key_algorithm;
    /// Cluster DNS domain used in SANs.
    cluster_domain: String => cluster_domain;
    /// Serving chain order: portable [leaf, intermediate, CA] or upstream [leaf, CA, intermediate].
    chain_order: ChainOrder => chain_order;
    /// Concurrent reconciles per controller.
    concurrency: u16 => concurrency;
    /// RSA/ECDSA keys generated ahead of demand: a burst of this many new Services waits for no key.
    key_pool_size: usize => key_pool_size;
    /// Threads refilling the key pool (at low priority).
    key_pool_threads: usize => key_pool_threads;
    /// Never issue serving certificates to Services in these namespaces (comma-separated).
    deny_namespaces: Vec<String> => denied_namespaces;
    /// Only manage Services and ConfigMaps in this namespace (none: the whole cluster).
    watch_namespace: String => watch_namespace;
    /// Inject into APIServices, CRDs and webhook configurations.
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    cluster_scoped_injection: bool => cluster_scoped_injection;
    /// Run the legacy ("vulnerable") injector for ConfigMaps named openshift-service-ca.crt.
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    legacy_injector: bool => legacy_injector;
    /// Let Services request wildcard extra DNS names outside their own domain (service-ca.dev/extra-dns-names).
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    allow_external_wildcards: bool => allow_external_wildcards;
    /// CA file the legacy injector appends.
    legacy_ca_file: PathBuf => legacy_ca_file;
    /// Most rolling restarts of opted-in workloads (service-ca.dev/restart-on-change) per interval, cluster-wide.
    restart_pace: RestartPace => restart_pace;
    /// Create and keep current a ConfigMap of this name (key service-ca.crt) in every matching namespace.
    namespace_bundle_name: String => namespace_bundle_name;
    /// Label selector of the namespaces that get --namespace-bundle-name (none: all namespaces).
    namespace_bundle_selector: String => namespace_bundle_selector;
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

/// The inverse of [`parse_duration`]: `790d`, `2h30m`, `45s`.
pub fn show_duration(d: Duration) -> String {
    let mut left = d.as_secs();
    let mut out = String::new();
    for (unit, secs) in [('d', 86400), ('h', 3600), ('m', 60), ('s', 1)] {
        if left >= secs {
            out.push_str(&format!("{}{unit}", left / secs));
            left %= secs;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

impl Settings {
    /// Reads a settings file (YAML, so JSON works too).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::from_text(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses the text of a settings file (the fuzz target `config_file` calls this too).
    pub fn from_text(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    /// The validated controller configuration: preset, then every given value.
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let mut cfg = if self.short_rotation == Some(true) {
            Config::short_rotation()
        } else {
            Config::default()
        };
        self.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_config() {
        let defaults: std::collections::HashMap<_, _> = Settings::defaults().into_iter().collect();
        assert_eq!(defaults["leaf_lifetime"], "730d");
        assert_eq!(
            defaults["ca_lifetime"],
            show_duration(Config::default().ca.lifetime)
        );
        assert_eq!(defaults["watch_namespace"], "none");
        assert_eq!(defaults["chain_order"], "portable");
        assert_eq!(show_duration(Duration::from_secs(9000)), "2h30m");
    }

    #[test]
    fn restart_pace() {
        let pace = RestartPace::parse("5/10s").unwrap();
        assert_eq!((pace.restarts, pace.per), (5, Duration::from_secs(10)));
        assert_eq!(pace.show(), "5/10s");
        assert_eq!(Config::default().restart_pace, pace);
        assert_eq!(
            RestartPace::parse(" 2 / 1m ").unwrap().per,
            Duration::from_secs(60)
        );
        for bad in ["5", "0/10s", "x/10s", "5/", "5/10"] {
            assert!(RestartPace::parse(bad).is_err(), "{bad}");
        }
    }

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
        let file: Settings = serde_saphyr::from_str(
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
    fn file_values_of_any_type_and_json() {
        let yaml: Settings = serde_saphyr::from_str(
            "concurrency: \"4\"\nshort-rotation: true\nlegacy-injector: \"true\"\nnamespace: 5\nwatch-namespace: null\n",
        )
        .unwrap();
        assert_eq!(yaml.concurrency, Some(4));
        assert_eq!(yaml.short_rotation, Some(true));
        assert_eq!(yaml.legacy_injector, Some(true));
        assert_eq!(yaml.namespace.as_deref(), Some("5"));
        assert_eq!(yaml.watch_namespace, None);
        let json: Settings = serde_saphyr::from_str(
            r#"{"concurrency": 4, "renew-before": "2d", "short-rotation": false}"#,
        )
        .unwrap();
        assert_eq!(json.concurrency, Some(4));
        assert_eq!(json.renew_before, Some(Duration::from_secs(2 * 86400)));
        assert_eq!(json.short_rotation, Some(false));
        assert!(serde_saphyr::from_str::<Settings>("concurrency: [4]").is_err());
        assert!(serde_saphyr::from_str::<Settings>("concurrency: 4\nconcurrency: 5").is_err());
    }

    #[test]
    fn bad_files_and_values_are_errors() {
        assert!(serde_saphyr::from_str::<Settings>("no-such-setting: 1").is_err());
        assert!(serde_saphyr::from_str::<Settings>("renew-before: 1y").is_err());
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
