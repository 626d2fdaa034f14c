//! The bundle in every namespace (opt-in, `--namespace-bundle-name`): a ConfigMap of that name,
//! holding only `service-ca.crt`, created and kept current in every namespace the
//! `--namespace-bundle-selector` matches. Only ConfigMaps carrying this controller's labels are
//! ever changed or deleted; one of that name that service-ca did not create is left alone with a
//! Warning Event. Without the option, the ConfigMaps created earlier are deleted.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};

use crate::config::{Config, ConfigError};

/// Errors of a label selector's text.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("label selector {text:?}: {reason}")]
pub(crate) struct SelectorError {
    text: String,
    reason: String,
}

/// Parses a label selector as `kubectl -l` takes it: comma-separated requirements `k=v`, `k==v`,
/// `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`. The empty text selects everything.
pub(crate) fn parse_selector(text: &str) -> Result<Selector, SelectorError> {
    let fail = |reason: String| SelectorError {
        text: text.to_string(),
        reason,
    };
    let mut expressions = Vec::new();
    for requirement in split_requirements(text).map_err(fail)? {
        expressions.push(parse_requirement(requirement).map_err(fail)?);
    }
    Ok(expressions.into_iter().collect())
}

/// Splits at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&text[start..]);
    let parts: Vec<&str> = parts.into_iter().map(str::trim).collect();
    if parts.len() == 1 && parts[0].is_empty() {
        return Ok(vec![]);
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err("empty requirement".into());
    }
    Ok(parts)
}

fn parse_requirement(text: &str) -> Result<Expression, String> {
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(label_key(key)?));
    }
    if let Some((key, value)) = text.split_once("!=") {
        return Ok(Expression::NotEqual(label_key(key)?, label_value(value)?));
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Expression::Equal(label_key(key)?, label_value(value)?));
    }
    for (operator, notin) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = text.split_once(operator) {
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{text:?}: the set must be in parentheses"))?;
            let values = set
                .split(',')
                .map(label_value)
                .collect::<Result<BTreeSet<_>, _>>()?;
            let key = label_key(key)?;
            return Ok(if notin {
                Expression::NotIn(key, values)
            } else {
                Expression::In(key, values)
            });
        }
    }
    Ok(Expression::Exists(label_key(text)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn label_key(text: &str) -> Result<String, String> {
    let key = text.trim();
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!("label key {key:?}: invalid prefix"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_value(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_string())
}

fn label_value(text: &str) -> Result<String, String> {
    let value = text.trim();
    if !is_label_value(value) {
        return Err(format!("invalid label value {value:?}"));
    }
    Ok(value.to_string())
}

/// Empty, or at most 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// A DNS subdomain (RFC 1123): what a ConfigMap name must be.
pub(crate) fn is_dns_subdomain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Whether a namespace with `labels` matches `selector`.
#[cfg_attr(not(test), allow(dead_code))] // wired by the namespace-bundle controller
pub(crate) fn selects(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    selector.matches(labels.unwrap_or(&EMPTY))
}

/// Checks the namespace-bundle options of `cfg`.
pub(crate) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if let Some(selector) = &cfg.namespace_bundle_selector {
        parse_selector(selector).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    let Some(name) = &cfg.namespace_bundle_name else {
        return Ok(());
    };
    if !is_dns_subdomain(name) {
        return Err(ConfigError::Invalid(format!(
            "namespace bundle name {name:?} is not a valid ConfigMap name"
        )));
    }
    if cfg.watch_namespace.is_some() {
        // The option creates ConfigMaps across namespaces; a controller confined to one
        // namespace has neither the watch nor the RBAC for that.
        return Err(ConfigError::Invalid(
            "--namespace-bundle-name needs the whole cluster; it cannot be combined with --watch-namespace".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_table() {
        let ns = labels(&[("env", "prod"), ("team", "a"), ("example.com/tier", "web")]);
        for (text, expected) in [
            ("", true),
            ("env=prod", true),
            ("env==prod", true),
            ("env=dev", false),
            ("env!=dev", true),
            ("env!=prod", false),
            ("env", true),
            ("!env", false),
            ("!missing", true),
            ("missing!=x", true),
            ("env in (dev, prod)", true),
            ("env in (dev)", false),
            ("env notin (dev)", true),
            ("missing notin (dev)", true),
            ("missing in (dev)", false),
            ("env=prod,team=a", true),
            ("env=prod,team=b", false),
            ("env in (prod,dev),example.com/tier=web", true),
            (" env = prod ", true),
        ] {
            let selector = parse_selector(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selects(&selector, Some(&ns)), expected, "{text:?}");
        }
        assert!(selects(&parse_selector("").unwrap(), None));
        assert!(!selects(&parse_selector("env").unwrap(), None));
        for bad in [
            "env=prod,",
            ",",
            "env in prod",
            "env in (a",
            "env)",
            "-bad=x",
            "env=not valid",
            "Bad_Prefix!/x=y",
            "a/b/c=d",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn options_are_validated() {
        let on = |name: &str, selector: Option<&str>| Config {
            namespace_bundle_name: Some(name.into()),
            namespace_bundle_selector: selector.map(Into::into),
            ..Config::default()
        };
        assert!(validate(&Config::default()).is_ok());
        assert!(validate(&on("service-ca.crt", None)).is_ok());
        assert!(validate(&on("openshift-service-ca.crt", Some("env=prod"))).is_ok());
        assert!(validate(&on("Service_CA", None)).is_err());
        assert!(validate(&on("", None)).is_err());
        assert!(validate(&on("ok", Some("env in prod"))).is_err());
        let confined = Config {
            watch_namespace: Some("one".into()),
            ..on("ok", None)
        };
        assert!(validate(&confined).is_err());
    }
}
