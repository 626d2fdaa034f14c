//! What an opted-in workload's pods mount of service-ca's output, and the hash of it that goes
//! into the pod template (`service-ca.dev/material-hash`, docs/behavior.md §17).
//!
//! Shared by the restart controller and `service-ca status`, so both compute the same hash. The
//! hash is SHA-256 (stable across processes and versions: a new leader must not see every
//! workload as changed) over the sorted `(kind, name, digest)` of each mounted object that
//! service-ca issued or injects. A serving Secret's digest covers only its public parts
//! (`tls.crt`, `ca.crt`): the key changes with the certificate, and no digest of a private key is
//! ever published.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use kube::Api;
use kube::api::ObjectMeta;

use crate::names;

/// The kind of a mounted object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A Secret (service-ca's: a serving Secret).
    Secret,
    /// A ConfigMap (service-ca's: one that asks for CA bundle injection).
    ConfigMap,
}

impl Kind {
    /// `secret` or `configmap`, as in the hash input and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
        }
    }
}

/// One object a pod template mounts as a volume (directly or as a projected source).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// Secret or ConfigMap.
    pub kind: Kind,
    /// Its name, in the workload's namespace.
    pub name: String,
    /// Every mount of it is `optional: true`: pods start without it.
    pub optional: bool,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// Every Secret and ConfigMap the pod spec mounts through `secret`, `configMap` and `projected`
/// volumes, sorted and once each (optional only if every mount of it is optional). Environment
/// references are not followed: certificates and bundles are read from files.
pub fn references(spec: Option<&PodSpec>) -> Vec<Reference> {
    let mut found: BTreeMap<(Kind, String), bool> = BTreeMap::new();
    let mut add = |kind: Kind, name: Option<&str>, optional: Option<bool>| {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return;
        };
        let optional = optional.unwrap_or(false);
        found
            .entry((kind, name.to_string()))
            .and_modify(|all_optional| *all_optional &= optional)
            .or_insert(optional);
    };
    for volume in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        if let Some(secret) = &volume.secret {
            add(Kind::Secret, secret.secret_name.as_deref(), secret.optional);
        }
        if let Some(cm) = &volume.config_map {
            add(Kind::ConfigMap, Some(cm.name.as_str()), cm.optional);
        }
        let sources = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in sources.into_iter().flatten() {
            if let Some(secret) = &source.secret {
                add(Kind::Secret, Some(secret.name.as_str()), secret.optional);
            }
            if let Some(cm) = &source.config_map {
                add(Kind::ConfigMap, Some(cm.name.as_str()), cm.optional);
            }
        }
    }
    found
        .into_iter()
        .map(|((kind, name), optional)| Reference {
            kind,
            name,
            optional,
        })
        .collect()
}

/// Whether a workload asks for restarts: `service-ca.dev/restart-on-change: "true"`, any case.
pub fn opted_in(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(names::RESTART_ON_CHANGE))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A Secret service-ca issued: it carries service-ca's managed-by label or an originating-Service
/// annotation (Secrets the original controller issued, before their first repair).
pub fn is_issued_secret(meta: &ObjectMeta) -> bool {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(names::MANAGED_BY_LABEL))
        .is_some_and(|v| v == names::MANAGED_BY_VALUE);
    labelled
        || names::first_non_empty(
            meta.annotations.as_ref(),
            &[names::ORIGINATING_NAME_BETA, names::ORIGINATING_NAME_ALPHA],
        )
        .is_some()
}

/// A ConfigMap service-ca injects the CA bundle into (beta or alpha annotation `true`, or the
/// legacy ConfigMap).
pub fn is_injected_configmap(meta: &ObjectMeta) -> bool {
    let is_true = |key: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    is_true(names::INJECT_BETA)
        || is_true(names::INJECT_ALPHA)
        || (meta.name.as_deref() == Some(names::LEGACY_CONFIGMAP_NAME)
            && is_true(names::INJECT_LEGACY))
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        // Length-prefixed, so that moving bytes between parts changes the digest.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Digest of a serving Secret's public material: `tls.crt` and `ca.crt`.
pub fn secret_digest(secret: &Secret) -> String {
    let get = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map_or(&[][..], |b| b.0.as_slice())
    };
    sha256_hex(&[get(names::TLS_CRT), get(names::CA_CRT)])
}

/// Digest of an injected ConfigMap's bundle (`service-ca.crt`).
pub fn configmap_digest(cm: &ConfigMap) -> String {
    let bundle = cm
        .data
        .as_ref()
        .and_then(|d| d.get(names::SERVICE_CA_CRT))
        .map_or("", String::as_str);
    sha256_hex(&[bundle.as_bytes()])
}

/// One mounted object service-ca issued or injects, and the digest of what it holds now.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Material {
    /// Secret or ConfigMap.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// [`secret_digest`] or [`configmap_digest`].
    pub digest: String,
}

/// The pod template annotation's value for this material: 32 hex digits of SHA-256 over the
/// sorted entries (order-independent; a renamed or added mount changes it).
pub fn material_hash(materials: &[Material]) -> String {
    let mut sorted: Vec<&Material> = materials.iter().collect();
    sorted.sort();
    let lines: Vec<String> = sorted
        .iter()
        .map(|m| format!("{}/{}={}", m.kind.as_str(), m.name, m.digest))
        .collect();
    let parts: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let mut hash = sha256_hex(&parts);
    hash.truncate(32);
    hash
}

/// What a workload's pods should be running, as far as service-ca's material goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    /// The hash of the material it mounts.
    Hash(String),
    /// It mounts nothing service-ca issued or injects.
    Nothing,
    /// A required mount does not exist (a serving Secret being re-issued, say): its pods could
    /// not start, so there is no point in restarting them before it is back.
    Missing(Vec<String>),
}

/// What one GET of a mounted object found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// It does not exist.
    Absent,
    /// It exists and is not service-ca's: not material.
    Foreign,
    /// service-ca's, holding content with this digest.
    Ours(String),
}

/// What the pods should run, from what each mount was found to be.
pub fn desired_of(observed: Vec<(Reference, Observed)>) -> Desired {
    let mut materials = Vec::new();
    let mut missing = Vec::new();
    for (reference, found) in observed {
        match found {
            Observed::Ours(digest) => materials.push(Material {
                kind: reference.kind,
                name: reference.name,
                digest,
            }),
            // Pods start without an optional mount: it cannot hold a restart back.
            Observed::Absent if !reference.optional => missing.push(reference.to_string()),
            Observed::Absent | Observed::Foreign => {}
        }
    }
    if !missing.is_empty() {
        Desired::Missing(missing)
    } else if materials.is_empty() {
        Desired::Nothing
    } else {
        Desired::Hash(material_hash(&materials))
    }
}

/// Reads what `spec` mounts in `namespace` (one GET per mounted Secret or ConfigMap; Secret data
/// is only hashed, never kept) and tells what the pods should be running.
pub async fn desired(
    client: &kube::Client,
    namespace: &str,
    spec: Option<&PodSpec>,
) -> Result<Desired, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut observed = Vec::new();
    for reference in references(spec) {
        let found = match reference.kind {
            Kind::Secret => match secrets.get_opt(&reference.name).await? {
                None => Observed::Absent,
                Some(s) if is_issued_secret(&s.metadata) => Observed::Ours(secret_digest(&s)),
                Some(_) => Observed::Foreign,
            },
            Kind::ConfigMap => match configmaps.get_opt(&reference.name).await? {
                None => Observed::Absent,
                Some(cm) if is_injected_configmap(&cm.metadata) => {
                    Observed::Ours(configmap_digest(&cm))
                }
                Some(_) => Observed::Foreign,
            },
        };
        observed.push((reference, found));
    }
    Ok(desired_of(observed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_spec(volumes: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({"containers": [], "volumes": volumes})).unwrap()
    }

    fn reference(kind: Kind, name: &str, optional: bool) -> Reference {
        Reference {
            kind,
            name: name.into(),
            optional,
        }
    }

    #[test]
    fn references_of_every_volume_kind_sorted_and_once() {
        let spec = pod_spec(json!([
            {"name": "tls", "secret": {"secretName": "web-tls"}},
            {"name": "trust", "configMap": {"name": "trust", "optional": true}},
            {"name": "empty", "emptyDir": {}},
            {"name": "both", "projected": {"sources": [
                {"secret": {"name": "web-tls", "optional": true}},
                {"configMap": {"name": "trust", "optional": true}},
                {"configMap": {"name": "other"}},
                {"serviceAccountToken": {"path": "token"}},
            ]}},
            {"name": "no-name", "secret": {}},
        ]));
        assert_eq!(
            references(Some(&spec)),
            [
                // Mounted once required: required.
                reference(Kind::Secret, "web-tls", false),
                reference(Kind::ConfigMap, "other", false),
                reference(Kind::ConfigMap, "trust", true),
            ]
        );
        assert!(references(None).is_empty());
        assert!(references(Some(&pod_spec(json!([])))).is_empty());
    }

    fn meta(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        ObjectMeta {
            name: Some(name.into()),
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        }
    }

    #[test]
    fn what_counts_as_service_ca_material() {
        let managed = (names::MANAGED_BY_LABEL, names::MANAGED_BY_VALUE);
        assert!(is_issued_secret(&meta("s", &[managed], &[])));
        assert!(is_issued_secret(&meta(
            "s",
            &[],
            &[(names::ORIGINATING_NAME_ALPHA, "web")]
        )));
        assert!(!is_issued_secret(&meta(
            "s",
            &[(names::MANAGED_BY_LABEL, "helm")],
            &[]
        )));
        assert!(!is_issued_secret(&meta(
            "s",
            &[],
            &[(names::ORIGINATING_NAME_BETA, "")]
        )));

        assert!(is_injected_configmap(&meta(
            "c",
            &[],
            &[(names::INJECT_BETA, "TRUE")]
        )));
        assert!(is_injected_configmap(&meta(
            "c",
            &[],
            &[(names::INJECT_ALPHA, "true")]
        )));
        assert!(!is_injected_configmap(&meta(
            "c",
            &[],
            &[(names::INJECT_BETA, "false")]
        )));
        assert!(is_injected_configmap(&meta(
            names::LEGACY_CONFIGMAP_NAME,
            &[],
            &[(names::INJECT_LEGACY, "true")]
        )));
        assert!(!is_injected_configmap(&meta(
            "c",
            &[],
            &[(names::INJECT_LEGACY, "true")]
        )));
        assert!(opted_in(&meta(
            "d",
            &[],
            &[(names::RESTART_ON_CHANGE, "True")]
        )));
        assert!(!opted_in(&meta(
            "d",
            &[],
            &[(names::RESTART_ON_CHANGE, "yes")]
        )));
        assert!(!opted_in(&meta("d", &[], &[])));
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn secret_digest_covers_the_public_parts_only() {
        let base = secret_digest(&secret(&[("tls.crt", "C1"), ("tls.key", "K1")]));
        assert_eq!(
            base,
            secret_digest(&secret(&[("tls.crt", "C1"), ("tls.key", "K2"), ("x", "y")]))
        );
        assert_ne!(base, secret_digest(&secret(&[("tls.crt", "C2")])));
        assert_ne!(
            base,
            secret_digest(&secret(&[("tls.crt", "C1"), ("ca.crt", "B")]))
        );
        // Bytes moved between the two parts are a different digest.
        assert_ne!(
            secret_digest(&secret(&[("tls.crt", "AB")])),
            secret_digest(&secret(&[("tls.crt", "A"), ("ca.crt", "B")]))
        );
        let cm = |bundle: &str| ConfigMap {
            data: Some([(names::SERVICE_CA_CRT.to_string(), bundle.to_string())].into()),
            ..Default::default()
        };
        assert_eq!(configmap_digest(&cm("B1")), configmap_digest(&cm("B1")));
        assert_ne!(configmap_digest(&cm("B1")), configmap_digest(&cm("B2")));
    }

    fn material(kind: Kind, name: &str, digest: &str) -> Material {
        Material {
            kind,
            name: name.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn hash_is_stable_order_independent_and_sensitive_to_names() {
        let a = material(Kind::Secret, "web-tls", "d1");
        let b = material(Kind::ConfigMap, "trust", "d2");
        let h = material_hash(&[a.clone(), b.clone()]);
        assert_eq!(h.len(), 32);
        assert_eq!(h, material_hash(&[b.clone(), a.clone()]));
        // A fixed value: the hash must never change between versions (a new leader would
        // restart every opted-in workload). SHA-256 of the length-prefixed line "secret/s=d".
        assert_eq!(
            material_hash(&[material(Kind::Secret, "s", "d")]),
            "d957accc65c6d56e6ae775161a6d7724"
        );
        assert_ne!(h, material_hash(std::slice::from_ref(&a)));
        assert_ne!(
            h,
            material_hash(&[material(Kind::Secret, "api-tls", "d1"), b.clone()])
        );
        assert_ne!(
            h,
            material_hash(&[material(Kind::ConfigMap, "web-tls", "d1"), b])
        );
    }

    #[test]
    fn desired_from_observations() {
        let tls = reference(Kind::Secret, "web-tls", false);
        let trust = reference(Kind::ConfigMap, "trust", true);
        let own = |d: &str| Observed::Ours(d.into());
        let only_tls = material_hash(&[material(Kind::Secret, "web-tls", "d1")]);
        type Row = (&'static str, Vec<(Reference, Observed)>, Desired);
        let rows: Vec<Row> = vec![
            ("nothing mounted", vec![], Desired::Nothing),
            (
                "only foreign mounts",
                vec![(tls.clone(), Observed::Foreign)],
                Desired::Nothing,
            ),
            (
                "ours",
                vec![(tls.clone(), own("d1"))],
                Desired::Hash(only_tls.clone()),
            ),
            (
                "an absent optional mount does not count",
                vec![(tls.clone(), own("d1")), (trust.clone(), Observed::Absent)],
                Desired::Hash(only_tls),
            ),
            (
                "an absent required mount holds the restart back",
                vec![(tls.clone(), Observed::Absent), (trust.clone(), own("d2"))],
                Desired::Missing(vec!["secret web-tls".into()]),
            ),
        ];
        for (name, observed, expected) in rows {
            assert_eq!(desired_of(observed), expected, "{name}");
        }
    }
}
