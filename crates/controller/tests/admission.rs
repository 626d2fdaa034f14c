//! Fenced writes (docs/security.md): the shipped ValidatingAdmissionPolicy
//! (`deploy/base/admission-policy.yaml`), adjusted to each test's namespace, admits every write the
//! controller makes while running as its ServiceAccount with the shipped RBAC, and denies the
//! writes a stolen token would make; the namespaced overlay renders without ClusterRoles and its
//! Roles are enough to run the controller.

mod common;

use std::time::Duration;

use common::{WAIT, annotation, data, wait_configmap, wait_secret, wait_service};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use service_ca_controller::names;
use service_ca_testing::{TestContext, eventually};

fn pp() -> PostParams {
    PostParams::default()
}

fn merge() -> PatchParams {
    PatchParams::default()
}

fn is_issued(s: &Secret) -> bool {
    data(s, names::TLS_CRT).is_some_and(|c| !c.is_empty())
        && data(s, names::TLS_KEY).is_some_and(|k| !k.is_empty())
}

fn b64(text: &str) -> Value {
    serde_json::to_value(ByteString(text.as_bytes().to_vec())).expect("base64")
}

fn holds(field: Option<&ByteString>, bundle: &str) -> bool {
    field.is_some_and(|b| b.0 == bundle.as_bytes())
}

/// A CA bundle nobody uses: what a control write (admitted) or an attacker puts in a caBundle.
fn unrelated_bundle() -> String {
    service_ca_pki::SigningCa::create(
        &service_ca_pki::CaConfig::default(),
        time::OffsetDateTime::now_utc(),
    )
    .expect("a throwaway CA")
    .bundle_pem()
}

/// The policy denied the write: 403, the policy named, and `rule` (a fragment of the validation's
/// message) quoted. Prints what was denied and how.
#[track_caller]
fn denied<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, kube::Error>,
    policy: &str,
    rule: &str,
) {
    match result {
        Err(kube::Error::Api(status))
            if status.code == 403
                && status
                    .message
                    .contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                && status.message.contains(rule) =>
        {
            eprintln!("denied: {what}: {} {}", status.code, status.message);
        }
        other => {
            panic!("{what}: expected policy {policy} to deny it ({rule:?}), got {other:?}")
        }
    }
}

/// RBAC refused the request before admission: 403 naming the verb.
#[track_caller]
fn forbidden_by_rbac<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>, verb: &str) {
    match result {
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains(&format!("cannot {verb}")) =>
        {
            eprintln!("forbidden by RBAC: {what}: {}", status.message);
        }
        other => panic!("{what}: expected RBAC to refuse `{verb}`, got {other:?}"),
    }
}

/// The write is admitted (a control next to the denials: the same kind of write, legitimate).
#[track_caller]
fn admitted<T>(what: &str, result: Result<T, kube::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected it to be admitted, got {e}"))
}

fn webhook(name: &str, client_config: Value, resource: &str) -> Value {
    json!({
        "name": name,
        "clientConfig": client_config,
        "rules": [{"apiGroups": ["admission.test"], "apiVersions": ["v1"],
                   "operations": ["CREATE"], "resources": [resource]}],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    })
}

/// Two webhooks, one calling a Service and one a URL.
fn webhooks(ns: &str) -> Value {
    json!([
        webhook(
            "svc.admission.test",
            json!({"service": {"namespace": ns, "name": "hook", "path": "/validate"}}),
            "widgets"
        ),
        webhook(
            "url.admission.test",
            json!({"url": "https://hook.admission.test/validate"}),
            "gadgets"
        ),
    ])
}

fn webhook_configuration<K: serde::de::DeserializeOwned>(
    name: &str,
    ns: &str,
    annotated: bool,
) -> K {
    let annotations = if annotated {
        json!({names::INJECT_BETA: "true"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "webhooks": webhooks(ns),
    }))
    .expect("static webhook configuration")
}

/// A CRD `<plural>.<group>` with webhook conversion to a Service in `ns` and two versions.
fn crd(plural: &str, group: &str, ns: &str) -> CustomResourceDefinition {
    let version = |name: &str, storage: bool| {
        json!({"name": name, "served": true, "storage": storage, "schema": {"openAPIV3Schema":
            {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("{plural}.{group}"), "annotations": {names::INJECT_BETA: "true"}},
        "spec": {
            "group": group,
            "names": {"plural": plural, "kind": "Thing", "singular": "thing", "listKind": "ThingList"},
            "scope": "Namespaced",
            "conversion": {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
                "clientConfig": {"service": {"namespace": ns, "name": "convert", "path": "/convert"}}}},
            "versions": [version("v1", true), version("v2", false)],
        },
    }))
    .expect("static CRD")
}

/// An aggregated APIService (alpha annotation, accepted for this kind) backed by a Service in `ns`.
fn apiservice(group: &str, ns: &str) -> APIService {
    serde_json::from_value(json!({
        "metadata": {"name": format!("v1.{group}"), "annotations": {names::INJECT_ALPHA: "true"}},
        "spec": {"group": group, "version": "v1",
                 "service": {"namespace": ns, "name": "api", "port": 443},
                 "groupPriorityMinimum": 1000, "versionPriority": 15},
    }))
    .expect("static APIService")
}

fn configmap(name: &str, annotations: Value, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations, "labels": labels},
        "data": data,
    }))
    .expect("static ConfigMap")
}

fn cm_data<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref()?.get(key).map(String::as_str)
}

/// Every webhook of both configurations, the CRD's conversion webhook and the APIService hold
/// `bundle`.
async fn cluster_scoped_injected(
    admin: &kube::Client,
    names: &ClusterNames,
    bundle: &str,
) -> Option<()> {
    let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .get(&names.validating)
        .await
        .ok()?;
    let mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .get(&names.mutating)
        .await
        .ok()?;
    let crd = Api::<CustomResourceDefinition>::all(admin.clone())
        .get(&names.crd)
        .await
        .ok()?;
    let apiservice = Api::<APIService>::all(admin.clone())
        .get(&names.apiservice)
        .await
        .ok()?;
    let ok = validating
        .webhooks
        .iter()
        .flatten()
        .all(|w| holds(w.client_config.ca_bundle.as_ref(), bundle))
        && mutating
            .webhooks
            .iter()
            .flatten()
            .all(|w| holds(w.client_config.ca_bundle.as_ref(), bundle))
        && holds(
            crd.spec
                .conversion
                .as_ref()
                .and_then(|c| c.webhook.as_ref())
                .and_then(|w| w.client_config.as_ref())
                .and_then(|c| c.ca_bundle.as_ref()),
            bundle,
        )
        && holds(
            apiservice.spec.as_ref().and_then(|s| s.ca_bundle.as_ref()),
            bundle,
        );
    ok.then_some(())
}

/// Names of the cluster-scoped objects a test creates (suffixed with its namespace's suffix).
struct ClusterNames {
    validating: String,
    mutating: String,
    crd: String,
    apiservice: String,
}

impl ClusterNames {
    /// Registers them for deletion when `ctx` is dropped (at the end and on panic).
    fn new(ctx: &TestContext, tag: &str) -> Self {
        let suffix = ctx.namespace.rsplit('-').next().unwrap_or("x").to_string();
        let names = Self {
            validating: format!("adm-{tag}-val-{suffix}"),
            mutating: format!("adm-{tag}-mut-{suffix}"),
            crd: format!("things.crd{tag}{suffix}.admission.test"),
            apiservice: format!("v1.api{tag}{suffix}.admission.test"),
        };
        ctx.delete_on_drop::<ValidatingWebhookConfiguration>(names.validating.clone());
        ctx.delete_on_drop::<MutatingWebhookConfiguration>(names.mutating.clone());
        ctx.delete_on_drop::<CustomResourceDefinition>(names.crd.clone());
        ctx.delete_on_drop::<APIService>(names.apiservice.clone());
        names
    }

    fn crd_group(&self) -> &str {
        self.crd.split_once('.').map(|(_, g)| g).unwrap_or_default()
    }

    fn apiservice_group(&self) -> &str {
        self.apiservice
            .split_once('.')
            .map(|(_, g)| g)
            .unwrap_or_default()
    }

    /// Creates the webhook configurations (both annotated), the CRD and the APIService.
    async fn create(&self, admin: &kube::Client, ns: &str) {
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .create(&pp(), &webhook_configuration(&self.validating, ns, true))
            .await
            .expect("create ValidatingWebhookConfiguration");
        Api::<MutatingWebhookConfiguration>::all(admin.clone())
            .create(&pp(), &webhook_configuration(&self.mutating, ns, true))
            .await
            .expect("create MutatingWebhookConfiguration");
        let plural = self.crd.split('.').next().unwrap_or_default();
        Api::<CustomResourceDefinition>::all(admin.clone())
            .create(&pp(), &crd(plural, self.crd_group(), ns))
            .await
            .expect("create CRD");
        Api::<APIService>::all(admin.clone())
            .create(&pp(), &apiservice(self.apiservice_group(), ns))
            .await
            .expect("create APIService");
    }
}

/// Every kind of write the controller makes, as its ServiceAccount under the shipped RBAC and the
/// policy: CA Secret create and rotation (PUT), bundle ConfigMap and published copy (apply),
/// serving Secret issuance (create), repair (merge patch) and re-issue (apply), Service status
/// annotations in both flavours (signed-by, generation-error), ConfigMap injection (beta, alpha,
/// legacy), cluster-scoped injection (webhook configurations, CRD, APIService), Events.
#[tokio::test]
async fn every_write_of_the_controller_is_admitted() {
    let ctx = TestContext::new("adm-allow").await.unwrap();
    let ns = ctx.namespace.clone();
    let admin = ctx.client.clone();
    let cluster = ClusterNames::new(&ctx, "a");
    let sa = common::service_account_client(&ctx).await;
    let copy = "published-copy".to_string();
    let policy = common::admission_policy(&ctx, &sa, &[format!("{ns}/{copy}")]).await;

    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let cms: Api<ConfigMap> = ctx.api();
    let create_service = |name: &str, key: &str, secret: &str| {
        let services = services.clone();
        let svc = common::service(name, &[(key, secret)], false);
        async move { services.create(&pp(), &svc).await.expect("create Service") }
    };
    create_service("web", names::SECRET_NAME_BETA, "web-tls").await;
    create_service("old", names::SECRET_NAME_ALPHA, "old-tls").await;
    // A Secret of the requested name that is not the Service's: error annotations on the Service.
    let taken: Secret = serde_json::from_value(
        json!({"metadata": {"name": "taken"}, "type": "Opaque", "stringData": {"a": "b"}}),
    )
    .unwrap();
    secrets.create(&pp(), &taken).await.unwrap();
    create_service("clash", names::SECRET_NAME_BETA, "taken").await;
    for (name, key, extra) in [
        ("trust", names::INJECT_BETA, true),
        ("trust-alpha", names::INJECT_ALPHA, false),
        (names::LEGACY_CONFIGMAP_NAME, names::INJECT_LEGACY, false),
    ] {
        let data = if extra {
            json!({"stale": "replaced by injection"})
        } else {
            json!({})
        };
        cms.create(
            &pp(),
            &configmap(name, json!({key: "true"}), json!({"team": "a"}), data),
        )
        .await
        .unwrap();
    }
    cluster.create(&admin, &ns).await;

    let legacy_ca = std::env::temp_dir().join(format!("{ns}-legacy-ca.crt"));
    std::fs::write(&legacy_ca, unrelated_bundle()).unwrap();
    let mut cfg = common::test_config(&ctx);
    cfg.cluster_scoped_injection = true;
    cfg.publish_bundle_to = Some((ns.clone(), copy.clone()));
    cfg.legacy_injector = true;
    cfg.legacy_ca_file = Some(legacy_ca.clone());
    let running = service_ca_controller::start(sa.clone(), cfg).expect("valid config");
    tokio::time::timeout(WAIT, running.wait_ready())
        .await
        .expect("CA created and caches synced in time");
    let bundle = common::current_bundle(&running);
    let legacy_suffix = std::fs::read_to_string(&legacy_ca).unwrap();

    // CA Secret (create), bundle ConfigMap and published copy (apply).
    wait_secret(&secrets, names::DEFAULT_CA_SECRET, "CA Secret", is_issued).await;
    for name in [names::DEFAULT_BUNDLE_CONFIGMAP, copy.as_str()] {
        wait_configmap(&cms, name, "bundle published", |cm| {
            cm_data(cm, names::CA_BUNDLE_CRT) == Some(bundle.as_str())
        })
        .await;
    }
    // Issuance (create) and the Service's status annotations, both flavours; errors on a clash.
    let issued = wait_secret(&secrets, "web-tls", "web-tls issued", is_issued).await;
    wait_secret(&secrets, "old-tls", "old-tls issued", is_issued).await;
    wait_service(&services, "web", "signed-by (beta)", |s| {
        annotation(&s.metadata, names::SIGNED_BY_BETA).is_some()
    })
    .await;
    wait_service(&services, "old", "signed-by (alpha)", |s| {
        annotation(&s.metadata, names::SIGNED_BY_ALPHA).is_some()
    })
    .await;
    wait_service(&services, "clash", "generation-error annotations", |s| {
        annotation(&s.metadata, names::ERROR_BETA).is_some()
            && annotation(&s.metadata, names::ERROR_NUM_BETA).is_some()
    })
    .await;
    // Injection into ConfigMaps (beta with a removed key, alpha, legacy).
    let injected = |cm: &ConfigMap, expected: &str| {
        cm.data.as_ref().is_some_and(|d| d.len() == 1)
            && cm_data(cm, names::SERVICE_CA_CRT) == Some(expected)
    };
    let with_legacy = format!("{bundle}{legacy_suffix}\n");
    let trust = wait_configmap(&cms, "trust", "beta injection", |cm| injected(cm, &bundle)).await;
    assert_eq!(
        annotation(&trust.metadata, names::OWNING_COMPONENT),
        Some(names::COMPONENT)
    );
    wait_configmap(&cms, "trust-alpha", "alpha injection", |cm| {
        injected(cm, &bundle)
    })
    .await;
    wait_configmap(
        &cms,
        names::LEGACY_CONFIGMAP_NAME,
        "legacy injection",
        |cm| injected(cm, &with_legacy),
    )
    .await;
    // Cluster-scoped injection.
    eventually(WAIT, "cluster-scoped kinds injected", || {
        cluster_scoped_injected(&admin, &cluster, &bundle)
    })
    .await;

    // Repair (merge patch): an extra data key is removed, the certificate kept.
    secrets
        .patch(
            "web-tls",
            &merge(),
            &Patch::Merge(json!({"data": {"extra": "eA=="}})),
        )
        .await
        .unwrap();
    let repaired = wait_secret(&secrets, "web-tls", "extra key removed", |s| {
        data(s, "extra").is_none()
    })
    .await;
    assert_eq!(
        data(&repaired, names::TLS_CRT),
        data(&issued, names::TLS_CRT)
    );
    // Re-issue over an existing Secret (apply): a corrupt certificate.
    secrets
        .patch(
            "web-tls",
            &merge(),
            &Patch::Merge(json!({"data": {"tls.crt": "bm90IGEgY2VydA=="}})),
        )
        .await
        .unwrap();
    wait_secret(&secrets, "web-tls", "corrupt certificate re-issued", |s| {
        is_issued(s)
            && data(s, names::TLS_CRT) != data(&issued, names::TLS_CRT)
            && data(s, names::TLS_CRT) != Some(b"not a cert".to_vec())
    })
    .await;

    // CA rotation (PUT of the CA Secret): everything follows the new bundle.
    let before = secrets.get("web-tls").await.unwrap();
    secrets
        .patch(
            names::DEFAULT_CA_SECRET,
            &merge(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                names::FORCE_ROTATION_REQUEST: "admission policy e2e"
            }}})),
        )
        .await
        .unwrap();
    let rotated = common::wait_for_new_bundle(&running, &bundle, WAIT).await;
    let with_legacy = format!("{rotated}{legacy_suffix}\n");
    for name in [names::DEFAULT_BUNDLE_CONFIGMAP, copy.as_str()] {
        wait_configmap(&cms, name, "rotated bundle published", |cm| {
            cm_data(cm, names::CA_BUNDLE_CRT) == Some(rotated.as_str())
        })
        .await;
    }
    let reissued = wait_secret(&secrets, "web-tls", "re-issued by the new CA", |s| {
        is_issued(s) && data(s, names::TLS_CRT) != data(&before, names::TLS_CRT)
    })
    .await;
    service_ca_testing::tls::verify_chain(
        &rotated,
        &data(&reissued, names::TLS_CRT).unwrap(),
        &format!("web.{ns}.svc"),
    )
    .expect("the re-issued chain verifies against the rotated bundle");
    wait_configmap(&cms, "trust", "rotated bundle injected", |cm| {
        injected(cm, &rotated)
    })
    .await;
    wait_configmap(
        &cms,
        names::LEGACY_CONFIGMAP_NAME,
        "rotated legacy bundle",
        |cm| injected(cm, &with_legacy),
    )
    .await;
    eventually(WAIT, "cluster-scoped kinds follow the rotation", || {
        cluster_scoped_injected(&admin, &cluster, &rotated)
    })
    .await;

    // Events were recorded (an Event the policy refused would be missing; they are best effort).
    let events: Api<Event> = ctx.api();
    eventually(WAIT, "Events recorded by service-ca", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: Vec<&str> = list
            .items
            .iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("service-ca"))
            .filter_map(|e| e.reason.as_deref())
            .collect();
        [
            "ServiceCACreated",
            "ServingCertIssued",
            "ServingCertFailed",
            "CABundleInjectionReplacedData",
            "ServiceCARotated",
        ]
        .iter()
        .all(|r| reasons.contains(r))
        .then_some(())
    })
    .await;

    // No write was refused along the way (403 by RBAC or the policy, 422).
    let metrics = running.metrics.encode();
    for category in ["forbidden", "invalid"] {
        assert!(
            !metrics.contains(&format!("category=\"{category}\"")),
            "a write was refused ({category}) under policy {policy}:\n{metrics}"
        );
    }
    running.stop().await;
    let _ = std::fs::remove_file(&legacy_ca);
}

/// Merge patch replacing the whole `webhooks` list (as the controller does), edited by `edit`.
async fn patch_webhooks<K>(
    api: &Api<K>,
    name: &str,
    edit: impl FnOnce(&mut Vec<Value>),
) -> Result<K, kube::Error>
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let live = serde_json::to_value(api.get(name).await?).expect("serializable");
    let mut hooks = live["webhooks"].as_array().cloned().unwrap_or_default();
    edit(&mut hooks);
    api.patch(name, &merge(), &Patch::Merge(json!({"webhooks": hooks})))
        .await
}

/// Each write a stolen token could make with the shipped RBAC, and the policy's answer: denied
/// with the rule that applies. Next to most denials, the legitimate write of the same kind is
/// admitted, so no denial is vacuous.
#[tokio::test]
async fn abusive_writes_are_denied() {
    let ctx = TestContext::new("adm-deny").await.unwrap();
    let ns = ctx.namespace.clone();
    let admin = ctx.client.clone();
    let cluster = ClusterNames::new(&ctx, "d");
    let suffix = ns.rsplit('-').next().unwrap().to_string();
    let plain_hooks = format!("adm-d-plain-{suffix}");
    ctx.delete_on_drop::<ValidatingWebhookConfiguration>(plain_hooks.clone());
    let sa = common::service_account_client(&ctx).await;
    let policy = common::admission_policy(&ctx, &sa, &[]).await;
    let pem = unrelated_bundle();

    // What the tenant and the cluster admin created.
    cluster.create(&admin, &ns).await;
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .create(&pp(), &webhook_configuration(&plain_hooks, &ns, false))
        .await
        .unwrap();
    let admin_cms: Api<ConfigMap> = ctx.api();
    admin_cms
        .create(
            &pp(),
            &configmap("plain", json!({}), json!({}), json!({"app.conf": "x"})),
        )
        .await
        .unwrap();
    admin_cms
        .create(
            &pp(),
            &configmap(
                "trust",
                json!({names::INJECT_BETA: "true"}),
                json!({"team": "a"}),
                json!({}),
            ),
        )
        .await
        .unwrap();
    let mut web = common::service(
        "web",
        &[(names::SECRET_NAME_BETA, "web-tls"), ("team", "a")],
        false,
    );
    web.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    Api::<Service>::namespaced(admin.clone(), &ns)
        .create(&pp(), &web)
        .await
        .unwrap();
    let ingress_tls: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ingress-tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": pem, "tls.key": "the app's key"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&pp(), &ingress_tls)
        .await
        .unwrap();

    // As the ServiceAccount.
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), &ns);
    let services: Api<Service> = Api::namespaced(sa.clone(), &ns);
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(sa.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(sa.clone());
    let crds: Api<CustomResourceDefinition> = Api::all(sa.clone());
    let apiservices: Api<APIService> = Api::all(sa.clone());
    let leases: Api<Lease> = Api::namespaced(sa.clone(), &ns);
    let events: Api<Event> = Api::namespaced(sa.clone(), &ns);
    let secret = |value: Value| -> Secret { serde_json::from_value(value).unwrap() };
    const SECRETS: &str = "service-ca may write only its CA Secret and serving Secrets";
    const CONFIGMAPS: &str =
        "service-ca may write only its bundle ConfigMap and ConfigMaps that request injection";
    const SERVICES: &str = "service-ca may change only its status annotations on a Service";
    const WEBHOOKS: &str =
        "service-ca may change only clientConfig.caBundle of webhook configurations";
    const CRDS: &str = "service-ca may change only spec.conversion.webhook.clientConfig.caBundle";
    const APISERVICES: &str = "service-ca may change only spec.caBundle of APIServices";

    // --- Secrets ---
    // A token for any ServiceAccount (e.g. one bound to cluster-admin): the escalation that a
    // cluster-wide `create secrets` allows without the policy.
    denied(
        "create a ServiceAccount-token Secret",
        secrets
            .create(
                &pp(),
                &secret(json!({
                    "metadata": {"name": "stolen-token", "annotations": {"kubernetes.io/service-account.name": "default"}},
                    "type": "kubernetes.io/service-account-token",
                })),
            )
            .await,
        &policy,
        SECRETS,
    );
    let ours = |name: &str, uid: &str| {
        json!({
            "metadata": {
                "name": name,
                "labels": {names::MANAGED_BY_LABEL: names::MANAGED_BY_VALUE},
                "annotations": {names::ORIGINATING_UID_BETA: uid, names::ORIGINATING_NAME_BETA: "web"},
            },
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": pem, "tls.key": "k"},
        })
    };
    let mut opaque = ours("opaque", "u-1");
    opaque["type"] = json!("Opaque");
    denied(
        "create an Opaque Secret carrying service-ca's label and annotations",
        secrets.create(&pp(), &secret(opaque)).await,
        &policy,
        SECRETS,
    );
    let mut unlabelled = ours("unlabelled", "u-1");
    unlabelled["metadata"]["labels"] = json!({});
    denied(
        "create a kubernetes.io/tls Secret without service-ca's label",
        secrets.create(&pp(), &secret(unlabelled)).await,
        &policy,
        SECRETS,
    );
    let mut extra = ours("extra-keys", "u-1");
    extra["stringData"]["stolen.key"] = json!(pem);
    denied(
        "create a serving Secret with another data key",
        secrets.create(&pp(), &secret(extra)).await,
        &policy,
        SECRETS,
    );
    denied(
        "take over an application's TLS Secret (label, annotations and a new key)",
        secrets
            .patch(
                "ingress-tls",
                &merge(),
                &Patch::Merge(json!({
                    "metadata": {
                        "labels": {names::MANAGED_BY_LABEL: names::MANAGED_BY_VALUE},
                        "annotations": {names::ORIGINATING_UID_BETA: "u-1", names::ORIGINATING_NAME_BETA: "web"},
                    },
                    "data": {"tls.key": b64("attacker's key")},
                })),
            )
            .await,
        &policy,
        SECRETS,
    );
    admitted(
        "create a serving Secret",
        secrets.create(&pp(), &secret(ours("web-tls", "u-1"))).await,
    );
    admitted(
        "re-issue a serving Secret (same originating Service)",
        secrets
            .patch(
                "web-tls",
                &merge(),
                &Patch::Merge(json!({"data": {"tls.key": b64("new key")}})),
            )
            .await,
    );
    denied(
        "hand a serving Secret to another Service",
        secrets
            .patch(
                "web-tls",
                &merge(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {names::ORIGINATING_UID_BETA: "u-2"}}}),
                ),
            )
            .await,
        &policy,
        SECRETS,
    );
    denied(
        "add a data key to a serving Secret",
        secrets
            .patch(
                "web-tls",
                &merge(),
                &Patch::Merge(json!({"data": {"stolen.key": b64(&pem)}})),
            )
            .await,
        &policy,
        SECRETS,
    );
    admitted(
        "add the opt-in ca.crt to a serving Secret (service-ca.dev/include-ca)",
        secrets
            .patch(
                "web-tls",
                &merge(),
                &Patch::Merge(json!({"data": {"ca.crt": b64(&pem)}})),
            )
            .await,
    );
    forbidden_by_rbac(
        "replace (PUT) a Secret other than the CA Secret",
        secrets
            .replace("web-tls", &pp(), &secrets.get("web-tls").await.unwrap())
            .await,
        "update",
    );
    forbidden_by_rbac(
        "delete a Secret",
        secrets
            .delete("ingress-tls", &DeleteParams::default())
            .await,
        "delete",
    );

    // --- ConfigMaps ---
    denied(
        "edit an unannotated ConfigMap",
        cms.patch(
            "plain",
            &merge(),
            &Patch::Merge(json!({"data": {"app.conf": "attacker's"}})),
        )
        .await,
        &policy,
        CONFIGMAPS,
    );
    denied(
        "create a ConfigMap in the CA namespace",
        cms.create(
            &pp(),
            &configmap("rogue", json!({}), json!({}), json!({"a": "b"})),
        )
        .await,
        &policy,
        CONFIGMAPS,
    );
    denied(
        "put another data key into an injected ConfigMap",
        cms.patch(
            "trust",
            &merge(),
            &Patch::Merge(json!({"data": {"extra": "x"}})),
        )
        .await,
        &policy,
        CONFIGMAPS,
    );
    denied(
        "relabel an injected ConfigMap",
        cms.patch(
            "trust",
            &merge(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
        )
        .await,
        &policy,
        CONFIGMAPS,
    );
    denied(
        "drop the injection request of a ConfigMap",
        cms.patch(
            "trust",
            &merge(),
            &Patch::Merge(json!({"metadata": {"annotations": {names::INJECT_BETA: null}}})),
        )
        .await,
        &policy,
        CONFIGMAPS,
    );
    admitted(
        "inject into an annotated ConfigMap (data and informational annotations)",
        cms.patch(
            "trust",
            &merge(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {names::OWNING_COMPONENT: names::COMPONENT}},
                "data": {names::SERVICE_CA_CRT: pem},
            })),
        )
        .await,
    );
    forbidden_by_rbac(
        "replace (PUT) a ConfigMap",
        cms.replace("trust", &pp(), &cms.get("trust").await.unwrap())
            .await,
        "update",
    );

    // --- Services ---
    denied(
        "add externalIPs to a Service",
        services
            .patch(
                "web",
                &merge(),
                &Patch::Merge(json!({"spec": {"externalIPs": ["203.0.113.7"]}})),
            )
            .await,
        &policy,
        SERVICES,
    );
    denied(
        "retarget a Service's selector",
        services
            .patch(
                "web",
                &merge(),
                &Patch::Merge(json!({"spec": {"selector": {"app": "attacker"}}})),
            )
            .await,
        &policy,
        SERVICES,
    );
    denied(
        "relabel a Service",
        services
            .patch(
                "web",
                &merge(),
                &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
            )
            .await,
        &policy,
        SERVICES,
    );
    denied(
        "change another annotation of a Service (the requested Secret name)",
        services
            .patch(
                "web",
                &merge(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {names::SECRET_NAME_BETA: "ingress-tls"}}}),
                ),
            )
            .await,
        &policy,
        SERVICES,
    );
    admitted(
        "write the status annotations of a Service",
        services
            .patch(
                "web",
                &merge(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    names::SIGNED_BY_BETA: "openshift-service-serving-signer@1",
                    names::ERROR_BETA: null,
                }}})),
            )
            .await,
    );

    // --- webhook configurations ---
    denied(
        "repoint a webhook's Service",
        patch_webhooks(&validating, &cluster.validating, |hooks| {
            hooks[0]["clientConfig"]["service"]["namespace"] = json!("attacker");
        })
        .await,
        &policy,
        WEBHOOKS,
    );
    denied(
        "repoint a webhook's URL",
        patch_webhooks(&mutating, &cluster.mutating, |hooks| {
            hooks[1]["clientConfig"]["url"] = json!("https://attacker.example/");
        })
        .await,
        &policy,
        WEBHOOKS,
    );
    denied(
        "switch a webhook's failurePolicy",
        patch_webhooks(&validating, &cluster.validating, |hooks| {
            hooks[0]["failurePolicy"] = json!("Fail");
        })
        .await,
        &policy,
        WEBHOOKS,
    );
    denied(
        "narrow a webhook's rules",
        patch_webhooks(&validating, &cluster.validating, |hooks| {
            hooks[0]["rules"][0]["operations"] = json!(["DELETE"]);
        })
        .await,
        &policy,
        WEBHOOKS,
    );
    denied(
        "remove a webhook",
        patch_webhooks(&validating, &cluster.validating, |hooks| {
            hooks.pop();
        })
        .await,
        &policy,
        WEBHOOKS,
    );
    denied(
        "set the caBundle of a configuration that does not request injection",
        patch_webhooks(&validating, &plain_hooks, |hooks| {
            for hook in hooks {
                hook["clientConfig"]["caBundle"] = b64(&pem);
            }
        })
        .await,
        &policy,
        WEBHOOKS,
    );
    admitted(
        "inject a caBundle into every webhook",
        patch_webhooks(&validating, &cluster.validating, |hooks| {
            for hook in hooks {
                hook["clientConfig"]["caBundle"] = b64(&pem);
            }
        })
        .await,
    );

    // --- CRDs ---
    let crd_patch = |spec: Value| Patch::Merge(json!({"spec": spec}));
    let live_crd = crds.get(&cluster.crd).await.unwrap();
    let mut versions = serde_json::to_value(&live_crd.spec.versions).unwrap();
    versions[1]["served"] = json!(false);
    denied(
        "change a CRD's versions",
        crds.patch(
            &cluster.crd,
            &merge(),
            &crd_patch(json!({"versions": versions})),
        )
        .await,
        &policy,
        CRDS,
    );
    denied(
        "repoint a CRD's conversion webhook",
        crds.patch(
            &cluster.crd,
            &merge(),
            &crd_patch(json!({"conversion": {"webhook": {"clientConfig": {
                "service": {"namespace": "attacker", "name": "convert"}}}}})),
        )
        .await,
        &policy,
        CRDS,
    );
    admitted(
        "inject a CRD's conversion caBundle",
        crds.patch(
            &cluster.crd,
            &merge(),
            &crd_patch(
                json!({"conversion": {"webhook": {"clientConfig": {"caBundle": b64(&pem)}}}}),
            ),
        )
        .await,
    );

    // --- APIServices ---
    denied(
        "repoint an APIService",
        apiservices
            .patch(
                &cluster.apiservice,
                &merge(),
                &Patch::Merge(json!({"spec": {"service": {"namespace": "attacker"}}})),
            )
            .await,
        &policy,
        APISERVICES,
    );
    denied(
        "skip TLS verification of an APIService",
        apiservices
            .patch(
                &cluster.apiservice,
                &merge(),
                &Patch::Merge(json!({"spec": {"insecureSkipTLSVerify": true, "caBundle": null}})),
            )
            .await,
        &policy,
        APISERVICES,
    );
    admitted(
        "inject an APIService's caBundle",
        apiservices
            .patch(
                &cluster.apiservice,
                &merge(),
                &Patch::Merge(json!({"spec": {"caBundle": b64(&pem)}})),
            )
            .await,
    );

    // --- Leases and Events ---
    let lease = |name: &str| -> Lease {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": "x"}}))
            .unwrap()
    };
    denied(
        "create another Lease",
        leases.create(&pp(), &lease("other-lock")).await,
        &policy,
        "service-ca may write only its leader-election Lease",
    );
    let created = admitted(
        "create the leader-election Lease",
        leases.create(&pp(), &lease(names::DEFAULT_LEASE)).await,
    );
    admitted(
        "renew the leader-election Lease",
        leases.replace(names::DEFAULT_LEASE, &pp(), &created).await,
    );
    let event = |controller: &str| -> Event {
        serde_json::from_value(json!({
            "metadata": {"generateName": "web-"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": controller,
            "reportingInstance": "x",
            "action": "Issue",
            "reason": "ServingCertIssued",
            "type": "Normal",
            "note": "n",
            "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": ns, "name": "web"},
        }))
        .unwrap()
    };
    denied(
        "record an Event in another controller's name",
        events.create(&pp(), &event("kubelet")).await,
        &policy,
        "service-ca may record only Events it reports",
    );
    admitted(
        "record an Event",
        events.create(&pp(), &event("service-ca")).await,
    );

    // The policy binds the ServiceAccount only: the admin's identical write goes through.
    Api::<Service>::namespaced(admin.clone(), &ns)
        .patch(
            "web",
            &merge(),
            &Patch::Merge(json!({"spec": {"externalIPs": ["203.0.113.7"]}})),
        )
        .await
        .expect("the policy does not apply to other users");
}

/// The shipped manifests agree with each other and with this rules: the policy names the
/// Deployment's ServiceAccount and CA namespace, Deny, RBAC without `delete` and with `update`
/// only by name, a versioned image, a PodDisruptionBudget and spread replicas.
#[test]
fn shipped_manifests_are_consistent() {
    let objects = common::kustomize("base");
    let find = |kind: &str, name: &str| -> Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("deploy/base renders {kind} {name}"))
            .clone()
    };
    let deployment = find("Deployment", "service-ca");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let image = container["image"].as_str().unwrap();
    assert_eq!(image, "ghcr.io/service-ca/service-ca:0.1.0");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&format!("--namespace={ns}").as_str()),
        "{args:?}"
    );
    assert!(
        pod["topologySpreadConstraints"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
            && pod["affinity"]["podAntiAffinity"].is_object(),
        "replicas are spread: {pod}"
    );
    let pdb = find("PodDisruptionBudget", "service-ca");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );

    let policy = find("ValidatingAdmissionPolicy", "service-ca-writes");
    let binding = find("ValidatingAdmissionPolicyBinding", "service-ca-writes");
    assert_eq!(binding["spec"]["policyName"], "service-ca-writes");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let user = format!("system:serviceaccount:{ns}:{sa}");
    assert!(
        policy["spec"]["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["expression"] == format!("request.userInfo.username == '{user}'")),
        "the policy matches {user}"
    );
    let variable = |name: &str| -> String {
        policy["spec"]["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["expression"].as_str())
            .unwrap_or_else(|| panic!("policy variable {name}"))
            .to_string()
    };
    assert_eq!(variable("caNamespace"), format!("'{ns}'"));
    assert_eq!(
        variable("caSecret"),
        format!("'{}'", names::DEFAULT_CA_SECRET)
    );
    assert_eq!(
        variable("bundleConfigMap"),
        format!("'{}'", names::DEFAULT_BUNDLE_CONFIGMAP)
    );
    assert_eq!(variable("lease"), format!("'{}'", names::DEFAULT_LEASE));

    // RBAC of the controller (the metrics reader and auth-delegator bindings are not its writes).
    let role = find("Role", "service-ca");
    let cluster_role = find("ClusterRole", "service-ca");
    for rule in role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .chain(cluster_role["rules"].as_array().unwrap())
    {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !verbs.contains(&"delete") && !verbs.contains(&"*"),
            "{rule}"
        );
        if verbs.contains(&"update") {
            assert!(
                rule["resourceNames"]
                    .as_array()
                    .is_some_and(|n| !n.is_empty()),
                "update only by name: {rule}"
            );
        }
    }
    assert!(
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"] == json!(["secrets"])
                && r["resourceNames"] == json!([names::DEFAULT_CA_SECRET])
                && r["verbs"] == json!(["update"])
        }),
        "update on the CA Secret by name: {role}"
    );
}

/// `deploy/overlays/namespaced`: no ClusterRole or ClusterRoleBinding, the controller confined to
/// its namespace; its Roles (and the policy) are enough to create the CA, issue and inject.
#[tokio::test]
async fn namespaced_overlay_needs_no_cluster_roles() {
    let objects = common::kustomize("overlays/namespaced");
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(
        !kinds.contains(&"ClusterRole") && !kinds.contains(&"ClusterRoleBinding"),
        "the namespaced overlay renders cluster-wide RBAC: {kinds:?}"
    );
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for arg in [
        "--namespace=$(POD_NAMESPACE)",
        "--watch-namespace=$(POD_NAMESPACE)",
        "--cluster-scoped-injection=false",
    ] {
        assert!(args.contains(&arg), "{arg} in {args:?}");
    }
    assert!(
        container["env"].as_array().unwrap().iter().any(|e| {
            e["name"] == "POD_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        }),
        "POD_NAMESPACE from the downward API: {container}"
    );

    let rbac: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "RoleBinding")
        .cloned()
        .collect();
    let ctx = TestContext::new("adm-ns").await.unwrap();
    let sa = common::service_account_client_with(&ctx, &rbac).await;
    common::admission_policy(&ctx, &sa, &[]).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let cms: Api<ConfigMap> = ctx.api();
    common::request_certificate(&services, "web", "web-tls").await;
    cms.create(
        &pp(),
        &configmap(
            "trust",
            json!({names::INJECT_BETA: "true"}),
            json!({}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let running =
        service_ca_controller::start(sa, common::test_config(&ctx)).expect("valid config");
    tokio::time::timeout(WAIT, running.wait_ready())
        .await
        .expect("ready under the overlay's Roles");
    let bundle = common::current_bundle(&running);
    wait_secret(&secrets, "web-tls", "issued under Roles", is_issued).await;
    wait_service(&services, "web", "signed-by under Roles", |s| {
        annotation(&s.metadata, names::SIGNED_BY_BETA).is_some()
    })
    .await;
    wait_configmap(&cms, "trust", "injected under Roles", |cm| {
        cm_data(cm, names::SERVICE_CA_CRT) == Some(bundle.as_str())
    })
    .await;
    let secret = secrets.get("web-tls").await.unwrap();
    assert!(secret.labels().contains_key(names::MANAGED_BY_LABEL));
    let metrics = running.metrics.encode();
    assert!(!metrics.contains("category=\"forbidden\""), "{metrics}");
    running.stop().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// An opted-in (or not) workload of `kind` whose pods mount the ConfigMap `trust`.
fn workload<K: serde::de::DeserializeOwned>(kind: &str, name: &str, opted_in: bool) -> K {
    let annotations = if opted_in {
        json!({names::RESTART_ON_CHANGE: "true"})
    } else {
        json!({})
    };
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": {"team": "a"}},
            "spec": {
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                "volumes": [{"name": "trust", "configMap": {"name": "trust"}}],
            },
        },
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }))
    .expect("static workload manifest")
}

/// The write the restart controller makes (`restart/mod.rs`): server-side apply of the pod
/// template's material hash alone.
fn material_hash_apply(kind: &str, name: &str, hash: &str) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": {names::MATERIAL_HASH: hash}}}},
    }))
}

/// Rolling restarts (docs/behavior.md §17) under the shipped RBAC and policy: the controller's own
/// write (run for real) and the same write by hand are admitted on opted-in Deployments,
/// StatefulSets and DaemonSets; every other change to a workload, the hash on a workload that did
/// not opt in, creating and deleting workloads and their subresources are refused.
#[tokio::test]
async fn rolling_restart_writes_are_fenced() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    const RULE: &str = "may change only the pod template annotation service-ca.dev/material-hash";
    let ctx = TestContext::new("adm-restart").await.unwrap();
    let ns = ctx.namespace.clone();
    let sa = common::service_account_client(&ctx).await;
    let policy = common::admission_policy(&ctx, &sa, &[]).await;
    let cms: Api<ConfigMap> = ctx.api();
    cms.create(
        &pp(),
        &configmap(
            "trust",
            json!({names::INJECT_BETA: "true"}),
            json!({}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let admin: Api<Deployment> = ctx.api();
    let as_sa: Api<Deployment> = Api::namespaced(sa.clone(), &ns);
    admin
        .create(&pp(), &workload("Deployment", "opted", true))
        .await
        .unwrap();
    admin
        .create(&pp(), &workload("Deployment", "plain", false))
        .await
        .unwrap();
    let sts: Api<StatefulSet> = ctx.api();
    sts.create(&pp(), &workload("StatefulSet", "db", true))
        .await
        .unwrap();
    let ds: Api<DaemonSet> = ctx.api();
    ds.create(&pp(), &workload("DaemonSet", "agent", true))
        .await
        .unwrap();

    // The controller itself, as the ServiceAccount: it writes the hash into every opted-in kind.
    let running =
        service_ca_controller::start(sa.clone(), common::test_config(&ctx)).expect("valid config");
    tokio::time::timeout(WAIT, running.wait_ready())
        .await
        .expect("ready");
    let hash_of = |template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>| {
        template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| annotation(m, names::MATERIAL_HASH))
            .map(String::from)
    };
    eventually(WAIT, "hash written on every opted-in kind", || async {
        let d = admin.get("opted").await.ok()?;
        let s = sts.get("db").await.ok()?;
        let a = ds.get("agent").await.ok()?;
        (hash_of(d.spec.as_ref().map(|s| &s.template)).is_some()
            && hash_of(s.spec.as_ref().map(|s| &s.template)).is_some()
            && hash_of(a.spec.as_ref().map(|s| &s.template)).is_some())
        .then_some(())
    })
    .await;
    let metrics = running.metrics.encode();
    assert!(
        !metrics.contains("category=\"forbidden\""),
        "a restart write was refused under policy {policy}:\n{metrics}"
    );
    running.stop().await;
    let plain = admin.get("plain").await.unwrap();
    assert!(
        !plain
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some(names::FIELD_MANAGER)),
        "the Deployment without the opt-in was written"
    );

    // The same write by hand: admitted on opted-in workloads of each kind.
    let apply = PatchParams::apply(names::FIELD_MANAGER).force();
    admitted(
        "material hash on an opted-in Deployment",
        as_sa
            .patch(
                "opted",
                &apply,
                &material_hash_apply("Deployment", "opted", "h2"),
            )
            .await,
    );
    admitted(
        "material hash on an opted-in StatefulSet",
        Api::<StatefulSet>::namespaced(sa.clone(), &ns)
            .patch(
                "db",
                &apply,
                &material_hash_apply("StatefulSet", "db", "h2"),
            )
            .await,
    );
    admitted(
        "material hash on an opted-in DaemonSet",
        Api::<DaemonSet>::namespaced(sa.clone(), &ns)
            .patch(
                "agent",
                &apply,
                &material_hash_apply("DaemonSet", "agent", "h2"),
            )
            .await,
    );

    // Denied: the hash on a workload that did not opt in, and anything else on one that did.
    denied(
        "material hash on a Deployment without the opt-in",
        as_sa
            .patch(
                "plain",
                &apply,
                &material_hash_apply("Deployment", "plain", "h"),
            )
            .await,
        &policy,
        RULE,
    );
    let merge_as_sa = |body: Value| {
        let as_sa = as_sa.clone();
        async move { as_sa.patch("opted", &merge(), &Patch::Merge(body)).await }
    };
    for (what, body) in [
        (
            "another pod template annotation",
            json!({"spec": {"template": {"metadata": {"annotations": {"other": "x"}}}}}),
        ),
        (
            "an existing pod template annotation",
            json!({"spec": {"template": {"metadata": {"annotations": {"team": "b"}}}}}),
        ),
        (
            "a pod template label",
            json!({"spec": {"template": {"metadata": {"labels": {"extra": "x"}}}}}),
        ),
        (
            "the image",
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "registry.invalid/evil:1"}]}}}}),
        ),
        (
            "the mounted ConfigMap",
            json!({"spec": {"template": {"spec": {"volumes": [
                {"name": "trust", "configMap": {"name": "other"}}]}}}}),
        ),
        ("replicas", json!({"spec": {"replicas": 5}})),
        (
            "the revision history limit",
            json!({"spec": {"revisionHistoryLimit": 1}}),
        ),
        (
            "the paused flag with the hash",
            json!({"spec": {"paused": true, "template": {"metadata": {"annotations": {
                names::MATERIAL_HASH: "h3"}}}}}),
        ),
        (
            "the opt-in annotation",
            json!({"metadata": {"annotations": {names::RESTART_ON_CHANGE: null}}}),
        ),
        ("a label", json!({"metadata": {"labels": {"x": "y"}}})),
    ] {
        denied(what, merge_as_sa(body).await, &policy, RULE);
    }
    forbidden_by_rbac(
        "creating a Deployment",
        as_sa
            .create(&pp(), &workload::<Deployment>("Deployment", "new", true))
            .await,
        "create",
    );
    forbidden_by_rbac(
        "deleting a Deployment",
        as_sa.delete("opted", &DeleteParams::default()).await,
        "delete",
    );
    forbidden_by_rbac(
        "scaling through the subresource",
        as_sa
            .patch_scale(
                "opted",
                &merge(),
                &Patch::Merge(json!({"spec": {"replicas": 3}})),
            )
            .await,
        "patch",
    );
    forbidden_by_rbac(
        "updating a Deployment (PUT)",
        as_sa
            .replace("opted", &pp(), &admin.get("opted").await.unwrap())
            .await,
        "update",
    );
}

/// Injection beyond the original (docs/behavior.md §10.8), as the ServiceAccount: exactly the
/// writes the controller makes are admitted (`ca.crt` in a Secret that asks for it;
/// `service-ca.crt` beside unchanged keys in a merge-mode ConfigMap) and their neighbours denied.
#[tokio::test]
async fn beyond_injection_writes_are_fenced() {
    let ctx = TestContext::new("adm-beyond").await.unwrap();
    let sa = common::service_account_client(&ctx).await;
    let policy = common::admission_policy(&ctx, &sa, &[]).await;
    let (admin_secrets, admin_cms): (Api<Secret>, Api<ConfigMap>) = (ctx.api(), ctx.api());
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ctx.namespace);
    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), &ctx.namespace);
    let secret = |name: &str, secret_type: &str, annotations: Value| -> Secret {
        serde_json::from_value(
            json!({"metadata": {"name": name, "annotations": annotations},
            "type": secret_type, "stringData": {"app": "x"}}),
        )
        .unwrap()
    };
    for s in [
        secret("asks", "Opaque", json!({names::INJECT_SECRET: "true"})),
        secret("silent", "Opaque", json!({})),
        secret(
            "token",
            names::SERVICE_ACCOUNT_TOKEN_TYPE,
            json!({names::INJECT_SECRET: "true", "kubernetes.io/service-account.name": "default"}),
        ),
    ] {
        admin_secrets.create(&pp(), &s).await.unwrap();
    }
    let patch = |body: Value| Patch::Merge(body);
    let ca = json!({"stringData": {names::CA_CRT: "CA"}});
    let rule = "inject-cabundle=true only data ca.crt";
    admitted(
        "ca.crt in a Secret that asks",
        secrets.patch("asks", &merge(), &patch(ca.clone())).await,
    );
    let other_key = secrets
        .patch(
            "asks",
            &merge(),
            &patch(json!({"stringData": {"app": "y"}})),
        )
        .await;
    denied(
        "another key of a Secret that asks",
        other_key,
        &policy,
        rule,
    );
    let silent = secrets.patch("silent", &merge(), &patch(ca.clone())).await;
    denied(
        "ca.crt in a Secret that does not ask",
        silent,
        &policy,
        rule,
    );
    let token = secrets.patch("token", &merge(), &patch(ca.clone())).await;
    denied(
        "ca.crt in a ServiceAccount token Secret",
        token,
        &policy,
        rule,
    );

    let configmap = |name: &str, annotations: Value| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "annotations": annotations},
            "data": {"app.conf": "x"}}),
        )
        .unwrap()
    };
    admin_cms
        .create(
            &pp(),
            &configmap(
                "merged",
                json!({names::INJECT_BETA: "true", names::INJECT_MODE: "merge"}),
            ),
        )
        .await
        .unwrap();
    admin_cms
        .create(
            &pp(),
            &configmap("replaced", json!({names::INJECT_BETA: "true"})),
        )
        .await
        .unwrap();
    let bundle = json!({"data": {names::SERVICE_CA_CRT: "CA"}});
    let rule = "inject-mode merge";
    admitted(
        "service-ca.crt beside unchanged keys (merge mode)",
        cms.patch("merged", &merge(), &patch(bundle.clone())).await,
    );
    let changed = cms
        .patch(
            "merged",
            &merge(),
            &patch(json!({"data": {"app.conf": "y"}})),
        )
        .await;
    denied("another key changed in merge mode", changed, &policy, rule);
    let removed = cms
        .patch(
            "merged",
            &merge(),
            &patch(json!({"data": {"app.conf": null}})),
        )
        .await;
    denied("another key removed in merge mode", removed, &policy, rule);
    let kept = cms.patch("replaced", &merge(), &patch(bundle)).await;
    denied("another key kept without merge mode", kept, &policy, rule);
    admitted(
        "data replaced without merge mode",
        cms.patch(
            "replaced",
            &merge(),
            &patch(json!({"data": {"app.conf": null, names::SERVICE_CA_CRT: "CA"}})),
        )
        .await,
    );
}
