//! The five injectable kinds: what "injected" means for each, as a pure function of the object
//! and the bundle (docs/behavior.md §10.2–§10.6).

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::core::PartialObjectMeta;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::{Outcome, Target};
use crate::names;

/// Objects in `namespace`, or in every namespace.
fn namespaced_or_all<R>(client: Client, namespace: Option<&str>) -> Api<R>
where
    R: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

fn b64(bundle: &str) -> Value {
    serde_json::to_value(ByteString(bundle.as_bytes().to_vec())).unwrap_or(Value::Null)
}

fn holds(field: Option<&ByteString>, bundle: &str) -> bool {
    field.is_some_and(|b| b.0 == bundle.as_bytes())
}

impl Target for ConfigMap {
    const KIND: &'static str = "configmap";
    const ACCEPTS_ALPHA: bool = true;

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        namespaced_or_all(client, namespace)
    }

    fn watch_api(client: Client, namespace: Option<&str>) -> Api<PartialObjectMeta<Self>> {
        namespaced_or_all(client, namespace)
    }

    fn injection(&self, bundle: &str) -> Outcome {
        let data = self.data.clone().unwrap_or_default();
        let holds_bundle = data.get(names::SERVICE_CA_CRT).map(String::as_str) == Some(bundle);
        let merge = merge_mode(&self.metadata);
        // Up to date only if service-ca.crt is the bundle and the only data key
        // (docs/behavior.md §10.3), or, in merge mode, if service-ca.crt is the bundle.
        if holds_bundle && (merge || data.len() == 1) {
            return Outcome::UpToDate;
        }
        if self.immutable == Some(true) {
            return Outcome::Blocked(
                "the ConfigMap is immutable; recreate it without `immutable: true` to receive the current bundle".into(),
            );
        }
        if merge {
            return configmap_apply(&self.metadata, bundle);
        }
        configmap_patch(&self.metadata, data.keys().cloned(), bundle)
    }

    fn injection_from_meta(
        meta: &kube::api::ObjectMeta,
        bundle: &str,
        ours: bool,
    ) -> Option<Outcome> {
        // Content known without a GET: what this process wrote last (`ours`), or a ConfigMap
        // whose field owners show it has no service-ca.crt yet (a new target), so a write is
        // due whatever the values of its other keys. Immutability is not in the metadata: the
        // API server refuses the patch then, and the caller falls back to reading the object.
        if merge_mode(meta) {
            // Merge mode writes only service-ca.crt: due when it is ours to update, or absent.
            let absent = !ours && !data_keys(meta)?.iter().any(|k| k == names::SERVICE_CA_CRT);
            return (ours || absent).then(|| configmap_apply(meta, bundle));
        }
        let keys = if ours {
            vec![names::SERVICE_CA_CRT.to_string()]
        } else {
            let keys = data_keys(meta)?;
            if keys.iter().any(|k| k == names::SERVICE_CA_CRT) {
                return None;
            }
            keys
        };
        Some(configmap_patch(meta, keys.into_iter(), bundle))
    }

    fn trim_cached(meta: &mut kube::api::ObjectMeta) {
        // Keep who owns which data key (and when), nothing else: enough to decide a new
        // target's patch and to name the other writer of a fight.
        let Some(entries) = meta.managed_fields.take() else {
            return;
        };
        meta.managed_fields = Some(
            entries
                .into_iter()
                .map(|entry| ManagedFieldsEntry {
                    fields_v1: Some(FieldsV1(json!({
                        "f:data": entry.fields_v1.as_ref().and_then(|f| f.0.get("f:data")).cloned().unwrap_or_else(|| json!({}))
                    }))),
                    manager: entry.manager,
                    time: entry.time,
                    ..Default::default()
                })
                .collect(),
        );
    }
}

/// The data keys of a ConfigMap as its managed fields record them (the union over every field
/// manager); None when the object carries no managed fields (then only a GET tells).
fn data_keys(meta: &kube::api::ObjectMeta) -> Option<Vec<String>> {
    let entries = meta.managed_fields.as_ref().filter(|e| !e.is_empty())?;
    let mut keys = std::collections::BTreeSet::new();
    for entry in entries {
        let data = entry
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.get("f:data"))
            .and_then(Value::as_object);
        for key in data.into_iter().flat_map(|d| d.keys()) {
            if let Some(key) = key.strip_prefix("f:") {
                keys.insert(key.to_string());
            }
        }
    }
    Some(keys.into_iter().collect())
}

/// Whether a ConfigMap asks for merge mode: only service-ca.crt is service-ca's, the other data
/// keys are kept.
pub(crate) fn merge_mode(meta: &kube::api::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(names::INJECT_MODE))
        .is_some_and(|v| v.eq_ignore_ascii_case(names::INJECT_MODE_MERGE))
}

/// Merge mode: a server-side apply that owns data.service-ca.crt and nothing else, conditional
/// on the resourceVersion in `meta` (the other keys, annotations and labels are not touched).
fn configmap_apply(meta: &kube::api::ObjectMeta, bundle: &str) -> Outcome {
    Outcome::Patch {
        body: super::PatchBody::Apply(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": meta.name,
                "namespace": meta.namespace,
                "resourceVersion": meta.resource_version,
            },
            "data": {names::SERVICE_CA_CRT: bundle},
        })),
        removed_data_keys: vec![],
    }
}

/// The patch that makes service-ca.crt the bundle and the only data key, conditional on the
/// resourceVersion in `meta`.
fn configmap_patch(
    meta: &kube::api::ObjectMeta,
    keys: impl Iterator<Item = String>,
    bundle: &str,
) -> Outcome {
    let removed: Vec<String> = keys
        .filter(|k| k.as_str() != names::SERVICE_CA_CRT)
        .collect();
    let mut patch_data = serde_json::Map::new();
    for key in &removed {
        patch_data.insert(key.clone(), Value::Null);
    }
    patch_data.insert(names::SERVICE_CA_CRT.into(), json!(bundle));
    let mut metadata = json!({"resourceVersion": meta.resource_version});
    let component_empty = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::OWNING_COMPONENT))
        .is_none_or(String::is_empty);
    if component_empty {
        metadata["annotations"] = json!({
            names::OWNING_COMPONENT: names::COMPONENT,
            names::DESCRIPTION: "CA bundle of the service CA, injected by service-ca. Other data keys are removed.",
        });
    }
    Outcome::Patch {
        body: super::PatchBody::Merge(json!({"metadata": metadata, "data": patch_data})),
        removed_data_keys: removed,
    }
}

/// Secrets that ask for the bundle (`service-ca.dev/inject-cabundle`): `ca.crt` by server-side
/// apply owning only that key, for consumers that read CAs only from Secrets (docs/behavior.md
/// §10.8). Their content is read by GET when reconciled, never cached.
impl Target for Secret {
    const KIND: &'static str = "secret";
    const ACCEPTS_ALPHA: bool = false;

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        namespaced_or_all(client, namespace)
    }

    fn watch_api(client: Client, namespace: Option<&str>) -> Api<PartialObjectMeta<Self>> {
        namespaced_or_all(client, namespace)
    }

    fn injection(&self, bundle: &str) -> Outcome {
        if let Some(reason) = secret_refusal(&self.metadata, self.type_.as_deref()) {
            return Outcome::Refused(reason);
        }
        if holds(
            self.data.as_ref().and_then(|d| d.get(names::CA_CRT)),
            bundle,
        ) {
            return Outcome::UpToDate;
        }
        if self.immutable == Some(true) {
            return Outcome::Blocked(
                "the Secret is immutable; recreate it without `immutable: true` to receive the current bundle".into(),
            );
        }
        secret_apply(&self.metadata, bundle)
    }

    fn injection_from_meta(
        meta: &kube::api::ObjectMeta,
        bundle: &str,
        ours: bool,
    ) -> Option<Outcome> {
        // The type is not in the metadata: only a Secret this process wrote (so one whose type
        // it checked) is written without reading it first.
        (ours && secret_refusal(meta, None).is_none()).then(|| secret_apply(meta, bundle))
    }
}

/// Why a Secret asking for the bundle is refused: a ServiceAccount token Secret (Kubernetes
/// fills its `ca.crt` with the cluster's CA) or a serving Secret of service-ca (its `ca.crt` is
/// the serving controller's, `service-ca.dev/include-ca` on the Service).
pub(crate) fn secret_refusal(
    meta: &kube::api::ObjectMeta,
    secret_type: Option<&str>,
) -> Option<String> {
    if secret_type == Some(names::SERVICE_ACCOUNT_TOKEN_TYPE) {
        return Some(format!(
            "a {} Secret: Kubernetes fills its ca.crt with the cluster's CA",
            names::SERVICE_ACCOUNT_TOKEN_TYPE
        ));
    }
    let originating = names::first_non_empty(
        meta.annotations.as_ref(),
        &[
            names::ORIGINATING_UID_BETA,
            names::ORIGINATING_UID_ALPHA,
            names::ORIGINATING_NAME_BETA,
            names::ORIGINATING_NAME_ALPHA,
        ],
    );
    let managed = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(names::MANAGED_BY_LABEL))
        .is_some_and(|v| v == names::MANAGED_BY_VALUE);
    (originating.is_some() || managed).then(|| {
        format!(
            "a serving Secret of service-ca: annotate its Service with {}=true instead",
            names::INCLUDE_CA
        )
    })
}

/// A server-side apply that owns data.ca.crt and nothing else, conditional on the resourceVersion
/// in `meta`.
fn secret_apply(meta: &kube::api::ObjectMeta, bundle: &str) -> Outcome {
    Outcome::Patch {
        body: super::PatchBody::Apply(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": meta.name,
                "namespace": meta.namespace,
                "resourceVersion": meta.resource_version,
            },
            "data": {names::CA_CRT: b64(bundle)},
        })),
        removed_data_keys: vec![],
    }
}

impl Target for APIService {
    const KIND: &'static str = "apiservice";
    const ACCEPTS_ALPHA: bool = true;

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }

    fn watch_api(client: Client, _namespace: Option<&str>) -> Api<PartialObjectMeta<Self>> {
        Api::all(client)
    }

    fn injection(&self, bundle: &str) -> Outcome {
        let Some(spec) = self.spec.as_ref() else {
            return Outcome::Skip("APIService has no spec".into());
        };
        if holds(spec.ca_bundle.as_ref(), bundle) {
            return Outcome::UpToDate;
        }
        if spec.service.is_none() {
            // The API server rejects caBundle on a local APIService; retrying cannot help.
            return Outcome::Skip(
                "local APIService (no spec.service) cannot take a caBundle".into(),
            );
        }
        Outcome::patch(json!({
            "metadata": {"resourceVersion": self.resource_version()},
            "spec": {"caBundle": b64(bundle)},
        }))
    }
}

impl Target for CustomResourceDefinition {
    const KIND: &'static str = "customresourcedefinition";
    const ACCEPTS_ALPHA: bool = false;

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }

    fn watch_api(client: Client, _namespace: Option<&str>) -> Api<PartialObjectMeta<Self>> {
        Api::all(client)
    }

    fn injection(&self, bundle: &str) -> Outcome {
        let conversion = self.spec.conversion.as_ref();
        if conversion.map(|c| c.strategy.as_str()) != Some("Webhook") {
            return Outcome::Skip("conversion strategy is not Webhook".into());
        }
        let client_config = conversion
            .and_then(|c| c.webhook.as_ref())
            .and_then(|w| w.client_config.as_ref());
        if holds(client_config.and_then(|c| c.ca_bundle.as_ref()), bundle) {
            return Outcome::UpToDate;
        }
        Outcome::patch(json!({
            "metadata": {"resourceVersion": self.resource_version()},
            "spec": {"conversion": {"webhook": {"clientConfig": {"caBundle": b64(bundle)}}}},
        }))
    }
}

/// Webhook configurations: a JSON patch that sets `clientConfig.caBundle` of each webhook that
/// lacks the bundle, each guarded by a `test` of that webhook's name, and touches nothing else,
/// so fields this Kubernetes version does not know survive on a newer API server.
fn webhooks_injection<W>(
    webhooks: Option<&Vec<W>>,
    bundle: &str,
    name_of: impl Fn(&W) -> &str,
    ca_bundle_of: impl Fn(&W) -> Option<&ByteString>,
) -> Outcome {
    let Some(webhooks) = webhooks.filter(|w| !w.is_empty()) else {
        return Outcome::Skip("the configuration has no webhooks".into());
    };
    let ops: Vec<Value> = webhooks
        .iter()
        .enumerate()
        .filter(|(_, w)| !holds(ca_bundle_of(w), bundle))
        .flat_map(|(i, w)| {
            [
                json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name_of(w)}),
                json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": b64(bundle)}),
            ]
        })
        .collect();
    if ops.is_empty() {
        return Outcome::UpToDate;
    }
    Outcome::Patch {
        body: super::PatchBody::Json(Value::Array(ops)),
        removed_data_keys: vec![],
    }
}

/// The two webhook configuration kinds differ only in their webhook type.
macro_rules! webhook_configuration_target {
    ($kind:ty, $name:literal) => {
        impl Target for $kind {
            const KIND: &'static str = $name;
            const ACCEPTS_ALPHA: bool = false;

            fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
                Api::all(client)
            }

            fn watch_api(client: Client, _namespace: Option<&str>) -> Api<PartialObjectMeta<Self>> {
                Api::all(client)
            }

            fn injection(&self, bundle: &str) -> Outcome {
                webhooks_injection(
                    self.webhooks.as_ref(),
                    bundle,
                    |w| w.name.as_str(),
                    |w| w.client_config.ca_bundle.as_ref(),
                )
            }
        }
    };
}

webhook_configuration_target!(MutatingWebhookConfiguration, "mutatingwebhookconfiguration");
webhook_configuration_target!(
    ValidatingWebhookConfiguration,
    "validatingwebhookconfiguration"
);

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n";

    fn from(v: Value) -> ConfigMap {
        serde_json::from_value(v).unwrap()
    }

    /// The body of a merge patch (panics on a JSON patch).
    fn merge(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Patch {
                body: super::super::PatchBody::Merge(body),
                ..
            } => body,
            other => panic!("expected a merge patch, got {other:?}"),
        }
    }

    fn managed(entries: Value) -> kube::api::ObjectMeta {
        serde_json::from_value(
            json!({"name": "c", "namespace": "ns", "resourceVersion": "9",
            "managedFields": entries}),
        )
        .unwrap()
    }

    #[test]
    fn configmap_injection_from_metadata_alone() {
        // A new target: the field owners show its data keys, none is service-ca.crt.
        let meta = managed(json!([
            {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:data": {"f:a": {}, ".": {}}, "f:metadata": {"f:annotations": {}}}},
            {"manager": "helm", "operation": "Apply", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:data": {"f:b": {}}}},
        ]));
        let outcome = ConfigMap::injection_from_meta(&meta, BUNDLE, false).unwrap();
        let Outcome::Patch {
            removed_data_keys, ..
        } = &outcome
        else {
            panic!("expected a patch")
        };
        assert_eq!(removed_data_keys, &["a", "b"]);
        let body = merge(outcome);
        assert_eq!(body["metadata"]["resourceVersion"], "9");
        assert_eq!(
            body["data"],
            json!({"a": null, "b": null, names::SERVICE_CA_CRT: BUNDLE})
        );
        // Created without data at all: one write, nothing removed.
        let empty = managed(json!([{"manager": "kubectl", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]));
        let body = merge(ConfigMap::injection_from_meta(&empty, BUNDLE, false).unwrap());
        assert_eq!(body["data"], json!({names::SERVICE_CA_CRT: BUNDLE}));

        // Holding service-ca.crt of unknown content, or no managed fields: read it first.
        let injected = managed(
            json!([{"manager": "service-ca-operator", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:service-ca.crt": {}}}}]),
        );
        assert!(ConfigMap::injection_from_meta(&injected, BUNDLE, false).is_none());
        assert!(ConfigMap::injection_from_meta(&managed(json!([])), BUNDLE, false).is_none());
        // ...unless it is as this process wrote it: a new bundle replaces only that key.
        let body = merge(ConfigMap::injection_from_meta(&injected, BUNDLE, true).unwrap());
        assert_eq!(body["data"], json!({names::SERVICE_CA_CRT: BUNDLE}));

        // The cache keeps only the data keys of the managed fields.
        let mut cached = meta.clone();
        ConfigMap::trim_cached(&mut cached);
        assert_eq!(data_keys(&cached), data_keys(&meta));
        assert_eq!(cached.managed_fields.as_ref().map(Vec::len), Some(2));
        let other = crate::fights::other_manager(cached.managed_fields.as_ref());
        assert!(other == "kubectl" || other == "helm", "{other}");
        let mut none = managed(json!([]));
        ConfigMap::trim_cached(&mut none);
        assert!(data_keys(&none).is_none());
    }

    #[test]
    fn configmap_data_is_replaced_and_binary_data_kept() {
        let cm = from(json!({"metadata": {"name": "c", "resourceVersion": "7"},
            "data": {"a": "1", names::SERVICE_CA_CRT: "old"}, "binaryData": {"b": "AA=="}}));
        let Outcome::Patch {
            body: super::super::PatchBody::Merge(body),
            removed_data_keys,
        } = cm.injection(BUNDLE)
        else {
            panic!("expected a merge patch")
        };
        assert_eq!(removed_data_keys, ["a"]);
        assert_eq!(
            body["data"],
            json!({"a": null, names::SERVICE_CA_CRT: BUNDLE})
        );
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert!(body.get("binaryData").is_none());
        assert_eq!(
            body["metadata"]["annotations"][names::OWNING_COMPONENT],
            "service-ca"
        );

        let done = from(
            json!({"metadata": {"name": "c"}, "data": {names::SERVICE_CA_CRT: BUNDLE}, "binaryData": {"b": "AA=="}}),
        );
        assert_eq!(done.injection(BUNDLE), Outcome::UpToDate);
        let extra = from(
            json!({"metadata": {"name": "c"}, "data": {names::SERVICE_CA_CRT: BUNDLE, "x": "y"}}),
        );
        assert!(matches!(extra.injection(BUNDLE), Outcome::Patch { .. }));
        let immutable = from(json!({"metadata": {"name": "c"}, "immutable": true}));
        assert!(matches!(immutable.injection(BUNDLE), Outcome::Blocked(_)));
        // An owning-component someone else set is kept.
        let owned = from(
            json!({"metadata": {"name": "c", "annotations": {names::OWNING_COMPONENT: "me"}}}),
        );
        let body = merge(owned.injection(BUNDLE));
        assert!(body["metadata"].get("annotations").is_none());
    }

    #[test]
    fn merge_mode_owns_only_service_ca_crt() {
        let cm = |mode: &str, data: Value, immutable: bool| {
            from(
                json!({"metadata": {"name": "c", "namespace": "ns", "resourceVersion": "5",
                "annotations": {names::INJECT_BETA: "true", names::INJECT_MODE: mode}},
                "data": data, "immutable": immutable}),
            )
        };
        let apply = |outcome: Outcome| match outcome {
            Outcome::Patch {
                body: super::super::PatchBody::Apply(body),
                removed_data_keys,
            } => {
                assert!(removed_data_keys.is_empty());
                body
            }
            other => panic!("expected an apply, got {other:?}"),
        };
        let expected = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "ns", "resourceVersion": "5"},
            "data": {names::SERVICE_CA_CRT: BUNDLE}});
        // (mode, data, immutable) -> outcome
        for (mode, data, immutable, want) in [
            (
                "merge",
                json!({"a": "1", names::SERVICE_CA_CRT: BUNDLE}),
                false,
                "up-to-date",
            ),
            (
                "MERGE",
                json!({"a": "1", names::SERVICE_CA_CRT: BUNDLE}),
                false,
                "up-to-date",
            ),
            (
                "merge",
                json!({"a": "1", names::SERVICE_CA_CRT: "old"}),
                false,
                "apply",
            ),
            ("merge", json!({"a": "1"}), false, "apply"),
            ("merge", json!({}), false, "apply"),
            ("merge", json!({"a": "1"}), true, "blocked"),
            // Any other mode is the original's replace.
            (
                "replace",
                json!({"a": "1", names::SERVICE_CA_CRT: BUNDLE}),
                false,
                "replace",
            ),
            (
                "",
                json!({"a": "1", names::SERVICE_CA_CRT: BUNDLE}),
                false,
                "replace",
            ),
        ] {
            let outcome = cm(mode, data.clone(), immutable).injection(BUNDLE);
            match want {
                "up-to-date" => assert_eq!(outcome, Outcome::UpToDate, "{mode} {data}"),
                "apply" => assert_eq!(apply(outcome), expected, "{mode} {data}"),
                "blocked" => assert!(matches!(outcome, Outcome::Blocked(_)), "{mode} {data}"),
                _ => assert_eq!(merge(outcome)["data"]["a"], Value::Null, "{mode} {data}"),
            }
        }

        // From the metadata alone: service-ca.crt absent, or ours -> apply; else read it first.
        let with_mode = |entries: Value| {
            let mut meta = managed(entries);
            meta.annotations = Some(
                [(names::INJECT_MODE.to_string(), "merge".to_string())]
                    .into_iter()
                    .collect(),
            );
            meta
        };
        let other_keys = with_mode(json!([{"manager": "kubectl", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]));
        let body = apply(ConfigMap::injection_from_meta(&other_keys, BUNDLE, false).unwrap());
        assert_eq!(body["data"], json!({names::SERVICE_CA_CRT: BUNDLE}));
        assert_eq!(body["metadata"]["resourceVersion"], "9");
        let injected = with_mode(json!([{"manager": "service-ca", "operation": "Apply",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:service-ca.crt": {}}}}]));
        assert!(ConfigMap::injection_from_meta(&injected, BUNDLE, false).is_none());
        assert!(ConfigMap::injection_from_meta(&injected, BUNDLE, true).is_some());
        assert!(ConfigMap::injection_from_meta(&with_mode(json!([])), BUNDLE, false).is_none());
    }

    #[test]
    fn secrets_get_ca_crt_unless_refused() {
        let secret = |meta: Value, secret_type: &str, data: Value, immutable: bool| -> Secret {
            serde_json::from_value(json!({"metadata": meta, "type": secret_type,
                "data": data, "immutable": immutable}))
            .unwrap()
        };
        let plain = json!({"name": "s", "namespace": "ns", "resourceVersion": "4"});
        let expected = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "4"},
            "data": {names::CA_CRT: b64(BUNDLE)}});
        let serving_annotation = json!({"name": "s", "annotations":
            {names::ORIGINATING_UID_BETA: "u-1"}});
        let serving_label = json!({"name": "s", "labels":
            {names::MANAGED_BY_LABEL: names::MANAGED_BY_VALUE}});
        // (metadata, type, data, immutable) -> outcome
        for (meta, secret_type, data, immutable, want) in [
            (&plain, "Opaque", json!({"a": "YQ=="}), false, "apply"),
            (&plain, "Opaque", json!({}), false, "apply"),
            (
                &plain,
                "kubernetes.io/tls",
                json!({names::CA_CRT: b64("old")}),
                false,
                "apply",
            ),
            (
                &plain,
                "Opaque",
                json!({"a": "YQ==", names::CA_CRT: b64(BUNDLE)}),
                false,
                "up-to-date",
            ),
            (&plain, "Opaque", json!({"a": "YQ=="}), true, "blocked"),
            (
                &plain,
                names::SERVICE_ACCOUNT_TOKEN_TYPE,
                json!({}),
                false,
                "refused",
            ),
            (
                &serving_annotation,
                "kubernetes.io/tls",
                json!({}),
                false,
                "refused",
            ),
            (
                &serving_label,
                "kubernetes.io/tls",
                json!({}),
                false,
                "refused",
            ),
        ] {
            let outcome =
                secret(meta.clone(), secret_type, data.clone(), immutable).injection(BUNDLE);
            match (want, outcome) {
                (
                    "apply",
                    Outcome::Patch {
                        body: super::super::PatchBody::Apply(body),
                        removed_data_keys,
                    },
                ) => {
                    assert_eq!(body, expected, "{meta} {secret_type} {data}");
                    assert!(removed_data_keys.is_empty());
                }
                ("up-to-date", Outcome::UpToDate)
                | ("blocked", Outcome::Blocked(_))
                | ("refused", Outcome::Refused(_)) => {}
                (want, got) => panic!("{meta} {secret_type} {data}: want {want}, got {got:?}"),
            }
        }
        // From the metadata alone only a Secret this process wrote, and never a serving Secret.
        let meta: kube::api::ObjectMeta = serde_json::from_value(plain.clone()).unwrap();
        assert!(Secret::injection_from_meta(&meta, BUNDLE, false).is_none());
        assert!(Secret::injection_from_meta(&meta, BUNDLE, true).is_some());
        let serving: kube::api::ObjectMeta = serde_json::from_value(serving_annotation).unwrap();
        assert!(Secret::injection_from_meta(&serving, BUNDLE, true).is_none());
    }

    #[test]
    fn crd_only_with_webhook_conversion() {
        let crd = |conversion: Value| -> CustomResourceDefinition {
            serde_json::from_value(json!({"metadata": {"name": "x.y"}, "spec": {
                "group": "y", "names": {"plural": "x", "kind": "X"}, "scope": "Namespaced", "versions": [],
                "conversion": conversion}}))
            .unwrap()
        };
        assert!(matches!(
            crd(json!({"strategy": "None"})).injection(BUNDLE),
            Outcome::Skip(_)
        ));
        let webhook = crd(
            json!({"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"], "clientConfig": {"url": "https://x"}}}),
        );
        let body = merge(webhook.injection(BUNDLE));
        assert_eq!(
            body["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"],
            b64(BUNDLE)
        );
    }

    #[test]
    fn every_webhook_gets_the_bundle() {
        let hook = |ca: Option<&str>| {
            let mut cc = json!({"url": "https://x"});
            if let Some(ca) = ca {
                cc["caBundle"] = b64(ca);
            }
            json!({"name": "a.b", "clientConfig": cc, "sideEffects": "None", "admissionReviewVersions": ["v1"]})
        };
        let cfg: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": "v", "resourceVersion": "3"},
            "webhooks": [hook(Some(BUNDLE)), hook(None)]}))
        .unwrap();
        // Only the second webhook lacks the bundle: one guarded operation for it, nothing else.
        let Outcome::Patch {
            body: super::super::PatchBody::Json(ops),
            ..
        } = cfg.injection(BUNDLE)
        else {
            panic!("expected a JSON patch")
        };
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/webhooks/1/name", "value": "a.b"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(BUNDLE)},
            ])
        );
        serde_json::from_value::<json_patch::Patch>(ops).unwrap();
        let done: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": "m"}, "webhooks": [hook(Some(BUNDLE))]}))
        .unwrap();
        assert_eq!(done.injection(BUNDLE), Outcome::UpToDate);
        let empty: MutatingWebhookConfiguration =
            serde_json::from_value(json!({"metadata": {"name": "m"}})).unwrap();
        assert!(matches!(empty.injection(BUNDLE), Outcome::Skip(_)));
    }

    #[test]
    fn local_apiservice_is_skipped() {
        let local: APIService = serde_json::from_value(json!({"metadata": {"name": "v1.x"},
            "spec": {"group": "x", "version": "v1", "groupPriorityMinimum": 1, "versionPriority": 1}})).unwrap();
        assert!(matches!(local.injection(BUNDLE), Outcome::Skip(_)));
    }
}
