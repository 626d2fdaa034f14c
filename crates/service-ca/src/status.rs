//! `service-ca status`: the CA, the serving certificates and the injection targets at a glance.
//!
//! Read-only. Works with the controller's RBAC or a read-only user: what the user may not read
//! (the Lease, cluster-scoped kinds, even the CA Secret, in which case the CA is read from the
//! bundle ConfigMap) is reported as a note. Exit code 0 when all is well, 1 when something needs
//! attention, 2 on usage or connection errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use service_ca_controller::names;
use time::OffsetDateTime;

use crate::certview::{self, Cert};
use crate::cli_support::{
    Cluster, ClusterArgs, Outcome, Output, Paint, Scope, api_error, duration_arg, human, now,
    print_structured, relative, requested_secret, rfc3339, short_reason, status_code,
    wants_injection,
};

/// `service-ca status` flags.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The controller rotates the CA when less than this remains (its --rotation-threshold).
    #[arg(long, default_value = "183d", value_parser = duration_arg)]
    rotation_threshold: Duration,
    /// A serving certificate with less than this left (capped at half its lifetime, as the
    /// controller does) is "renewing soon"; a CA rotation due within it is "rotation soon".
    #[arg(long, default_value = "30d", value_parser = duration_arg)]
    renew_before: Duration,
    /// Name of the leader-election Lease (in the CA namespace).
    #[arg(long, default_value = names::DEFAULT_LEASE)]
    lease_name: String,
}

/// Everything `status` found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Which namespaces were looked at.
    pub scope: String,
    /// The signing CA.
    pub ca: CaStatus,
    /// The bundle ConfigMap.
    pub bundle: BundleStatus,
    /// Serving certificates (Services requesting one, and Secrets service-ca issued).
    pub serving: Vec<ServingRow>,
    /// Injection targets in scope.
    pub injection: Vec<InjectionRow>,
    /// Workloads opted in to rolling restarts whose pods still run previous material.
    pub restarts: Vec<RestartRow>,
    /// What could not be read, and other remarks that do not need attention.
    pub notes: Vec<String>,
    /// Everything that needs attention (empty when all is well).
    pub attention: Vec<String>,
    /// `attention` is empty.
    pub healthy: bool,
}

/// The CA.
#[derive(Debug, Serialize)]
pub struct CaStatus {
    /// `<namespace>/<secret>`.
    pub secret: String,
    /// Where the CA certificate was read: `secret`, or `bundle-configmap` when the Secret is not
    /// readable.
    pub source: String,
    /// Full subject.
    pub subject: String,
    /// Key type.
    pub key_type: String,
    /// Serial, hex.
    pub serial: String,
    /// notBefore.
    pub not_before: String,
    /// notAfter.
    pub not_after: String,
    /// notAfter − rotation threshold.
    pub rotation_due: String,
    /// Seconds until `rotation_due` (negative when overdue).
    pub seconds_to_rotation: i64,
    /// `ok`, `rotation_soon`, `rotation_overdue`, `expired`.
    pub state: String,
    /// notAfter of the previous CA's cross-signed certificate in `ca-bundle.crt`, if any.
    pub previous_ca_trusted_until: Option<String>,
    /// A forced rotation requested and not done yet.
    pub forced_rotation_pending: Option<String>,
    /// Reason of the last forced rotation.
    pub last_forced_rotation: Option<String>,
    /// The leader, from the Lease.
    pub leader: Option<Leader>,
    /// Why there is no leader to show (no Lease, or it is not readable).
    pub leader_note: Option<String>,
}

/// Who holds the leader-election Lease.
#[derive(Debug, Serialize)]
pub struct Leader {
    /// holderIdentity.
    pub identity: String,
    /// renewTime.
    pub renewed: Option<String>,
    /// Whether renewTime + leaseDuration is still ahead.
    pub current: bool,
}

/// The bundle ConfigMap.
#[derive(Debug, Serialize)]
pub struct BundleStatus {
    /// `<namespace>/<name>`.
    pub configmap: String,
    /// `current`, `stale`, `missing`, `unknown`.
    pub state: String,
    /// Certificates in its `ca-bundle.crt`.
    pub certificates: usize,
}

/// State of one serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServingState {
    /// Signed by the current CA, not near expiry.
    Ok,
    /// Less than the renewal margin left.
    RenewingSoon,
    /// The Service carries a generation error, or the Secret is unusable.
    Error,
    /// Not signed by the current CA.
    WrongCa,
    /// Expired.
    Expired,
    /// Requested, no Secret yet.
    Pending,
    /// Issued by service-ca, but no Service in scope requests it any more.
    Unmaintained,
    /// Secrets are not readable by this user: only the Service's error annotation is known.
    Unknown,
}

impl ServingState {
    fn label(self) -> &'static str {
        match self {
            ServingState::Ok => "ok",
            ServingState::RenewingSoon => "renewing soon",
            ServingState::Error => "error",
            ServingState::WrongCa => "not signed by the current CA",
            ServingState::Expired => "expired",
            ServingState::Pending => "pending",
            ServingState::Unmaintained => "unmaintained",
            ServingState::Unknown => "unknown",
        }
    }

    fn needs_attention(self) -> bool {
        !matches!(
            self,
            ServingState::Ok | ServingState::Unmaintained | ServingState::Unknown
        )
    }
}

/// One serving certificate.
#[derive(Debug, Serialize)]
pub struct ServingRow {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Secret name.
    pub secret: String,
    /// The leaf's DNS SANs.
    pub dns_names: Vec<String>,
    /// Leaf notAfter.
    pub expires: Option<String>,
    /// State.
    pub state: ServingState,
    /// Details (the Service's generation error, what is wrong).
    pub message: Option<String>,
}

/// One injection target.
#[derive(Debug, Serialize)]
pub struct InjectionRow {
    /// `ConfigMap`, `APIService`, `CustomResourceDefinition`, `MutatingWebhookConfiguration`,
    /// `ValidatingWebhookConfiguration`.
    pub kind: String,
    /// Namespace (ConfigMaps only).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// `current`, `stale`, `skipped`.
    pub state: String,
    /// Details.
    pub message: Option<String>,
}

/// A workload opted in to rolling restarts (`service-ca.dev/restart-on-change`) whose pod
/// template does not carry the hash of what it mounts now: its pods still run the previous
/// certificate or CA (the restart is queued by the pace, or the controller is not running).
#[derive(Debug, Serialize)]
pub struct RestartRow {
    /// `Deployment`, `StatefulSet`, `DaemonSet`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Why it is listed.
    pub message: String,
}

/// Opted-in workloads whose template hash is not the hash of what they mount now, computed
/// as the controller does (`service_ca_controller::material`).
async fn pending_restarts(
    client: &kube::Client,
    scope: &Scope,
    notes: &mut Vec<String>,
) -> Vec<RestartRow> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use service_ca_controller::material::{self, Desired};
    // (kind, namespace, name, template) of every opted-in workload in scope.
    let mut workloads: Vec<(&str, String, String, PodTemplateSpec)> = Vec::new();
    let params = ListParams::default();
    let found = async {
        for d in scope.api::<Deployment>(client).list(&params).await?.items {
            if material::opted_in(&d.metadata) {
                workloads.push((
                    "Deployment",
                    d.namespace().unwrap_or_default(),
                    d.name_any(),
                    d.spec.map(|s| s.template).unwrap_or_default(),
                ));
            }
        }
        for s in scope.api::<StatefulSet>(client).list(&params).await?.items {
            if material::opted_in(&s.metadata) {
                workloads.push((
                    "StatefulSet",
                    s.namespace().unwrap_or_default(),
                    s.name_any(),
                    s.spec.map(|s| s.template).unwrap_or_default(),
                ));
            }
        }
        for d in scope.api::<DaemonSet>(client).list(&params).await?.items {
            if material::opted_in(&d.metadata) {
                workloads.push((
                    "DaemonSet",
                    d.namespace().unwrap_or_default(),
                    d.name_any(),
                    d.spec.map(|s| s.template).unwrap_or_default(),
                ));
            }
        }
        Ok::<(), kube::Error>(())
    }
    .await;
    if let Err(e) = found {
        notes.push(format!("workloads ({scope}): {}", short_reason(&e)));
    }
    let mut rows = Vec::new();
    for (kind, namespace, name, template) in workloads {
        let recorded = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(names::MATERIAL_HASH));
        let message = match material::desired(client, &namespace, template.spec.as_ref()).await {
            Ok(Desired::Hash(h)) if recorded == Some(&h) => continue,
            Ok(Desired::Hash(_)) if recorded.is_none() => {
                "not restarted since it opted in".to_string()
            }
            Ok(Desired::Hash(_)) => {
                "restart pending: runs the previous certificate or CA bundle".to_string()
            }
            Ok(Desired::Missing(missing)) => format!("waiting for {}", missing.join(", ")),
            Ok(Desired::Nothing) => continue,
            Err(e) => format!("unknown: {}", short_reason(&e)),
        };
        rows.push(RestartRow {
            kind: kind.into(),
            namespace,
            name,
            message,
        });
    }
    rows
}

/// Runs `service-ca status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<Outcome> {
    let cluster = args.cluster.connect().await?;
    let report = collect(&args, &cluster, now()).await?;
    match args.output {
        Output::Table => print!("{}", render(&report, &Paint::stdout())),
        other => print_structured(&report, other)?,
    }
    Ok(if report.healthy {
        Outcome::Ok
    } else {
        Outcome::Attention
    })
}

/// What the CA Secret (or, failing that, the bundle ConfigMap) says.
struct CaMaterial {
    cert: Cert,
    /// What clients should trust now.
    bundle: Vec<u8>,
    source: &'static str,
    previous_until: Option<OffsetDateTime>,
    annotations: BTreeMap<String, String>,
}

fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| b.0.as_slice())
        .filter(|b| !b.iter().all(u8::is_ascii_whitespace))
}

async fn collect(
    args: &StatusArgs,
    cluster: &Cluster,
    now: OffsetDateTime,
) -> anyhow::Result<Report> {
    let cargs = &args.cluster;
    let client = &cluster.client;
    let scope = cluster.scope();
    let mut notes = Vec::new();
    let mut attention = Vec::new();

    // The bundle ConfigMap: compared with the CA, and the CA's source when the Secret is hidden.
    let bundle_api: Api<ConfigMap> = Api::namespaced(client.clone(), &cargs.ca_namespace);
    let bundle_cm = match bundle_api.get_opt(&cargs.bundle_configmap).await {
        Ok(cm) => Some(cm),
        Err(e) if status_code(&e) == Some(403) => {
            notes.push(format!(
                "bundle ConfigMap {}: {}",
                cargs.bundle_ref(),
                short_reason(&e)
            ));
            None
        }
        Err(e) => {
            return Err(api_error(
                e,
                "get",
                "configmaps",
                &format!("ConfigMap {}", cargs.bundle_ref()),
                Some(&cargs.ca_namespace),
            ));
        }
    };
    let bundle_text: Option<Vec<u8>> =
        bundle_cm
            .as_ref()
            .and_then(|cm| cm.as_ref())
            .and_then(|cm| {
                cm.data
                    .as_ref()?
                    .get(names::CA_BUNDLE_CRT)
                    .map(|s| s.as_bytes().to_vec())
            });

    let ca = load_ca(cargs, client, bundle_text.as_deref(), &mut notes).await?;

    // CA state.
    let info = &ca.cert.info;
    let threshold =
        time::Duration::try_from(args.rotation_threshold).unwrap_or(time::Duration::MAX);
    let rotation_due = info.not_after - threshold;
    let soon = time::Duration::try_from(args.renew_before).unwrap_or(time::Duration::ZERO);
    let state = if now >= info.not_after {
        attention.push(format!(
            "CA: expired {}; the controller rotates an expired CA at once: is it running?",
            relative(info.not_after, now)
        ));
        "expired"
    } else if now >= rotation_due {
        attention.push(format!(
            "CA: rotation was due {} (notAfter − {}); is the controller running, and with which --rotation-threshold?",
            relative(rotation_due, now),
            crate::settings::show_duration(args.rotation_threshold)
        ));
        "rotation_overdue"
    } else if rotation_due - now < soon {
        attention.push(format!(
            "CA: automatic rotation {} ({}); clients must pick up the new bundle",
            relative(rotation_due, now),
            rfc3339(rotation_due)
        ));
        "rotation_soon"
    } else {
        "ok"
    };
    let requested = ca
        .annotations
        .get(names::FORCE_ROTATION_REQUEST)
        .filter(|r| !r.is_empty())
        .cloned();
    let last_forced = ca
        .annotations
        .get(names::FORCED_ROTATION_REASON)
        .filter(|r| !r.is_empty())
        .cloned();
    let forced_pending = requested.filter(|r| Some(r) != last_forced.as_ref());
    if let Some(reason) = &forced_pending {
        attention.push(format!(
            "CA: forced rotation {reason:?} requested on Secret {} and not done yet: is the controller running?",
            cargs.ca_secret_ref()
        ));
    }

    // Leader.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cargs.ca_namespace);
    let mut leader_note = None;
    let leader = match leases.get_opt(&args.lease_name).await {
        Ok(Some(lease)) => lease.spec.and_then(|spec| {
            let identity = spec.holder_identity.filter(|h| !h.is_empty())?;
            let renewed = spec
                .renew_time
                .map(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).unwrap_or(now));
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            Some(Leader {
                identity,
                current: renewed.is_some_and(|r| r + time::Duration::seconds(duration) > now),
                renewed: renewed.map(rfc3339),
            })
        }),
        Ok(None) => {
            leader_note = Some(format!(
                "none: no Lease {}/{} (controllers embedded without leader election, or not running)",
                cargs.ca_namespace, args.lease_name
            ));
            None
        }
        Err(e) => {
            let why = short_reason(&e);
            notes.push(format!(
                "Lease {}/{}: {why}",
                cargs.ca_namespace, args.lease_name
            ));
            leader_note = Some(format!("unknown: Lease {why}"));
            None
        }
    };
    if let Some(l) = &leader
        && !l.current
    {
        notes.push(format!(
            "the Lease's holder {} has not renewed it in time: no replica is leading right now",
            l.identity
        ));
    }

    // Bundle ConfigMap state.
    let bundle_certs = bundle_text
        .as_deref()
        .map(certview::ders)
        .unwrap_or_default()
        .len();
    let bundle_state = match (&bundle_cm, &bundle_text) {
        (None, _) => "unknown",
        (Some(None), _) => {
            attention.push(format!(
                "bundle ConfigMap {} does not exist: the controller publishes it; is it running?",
                cargs.bundle_ref()
            ));
            "missing"
        }
        (Some(Some(_)), Some(text)) if certview::same_certs(text, &ca.bundle) => "current",
        (Some(Some(_)), _) => {
            attention.push(format!(
                "bundle ConfigMap {} does not hold the current bundle: the controller rewrites it on its next pass; is it running?",
                cargs.bundle_ref()
            ));
            "stale"
        }
    };

    // Serving certificates.
    let services: Api<Service> = scope.api(client);
    let services = services.list(&ListParams::default()).await.map_err(|e| {
        api_error(
            e,
            "list",
            "services",
            &format!("Services ({scope})"),
            ns_of(&scope),
        )
    })?;
    let secrets: Api<Secret> = scope.api(client);
    let selector = format!("{}={}", names::MANAGED_BY_LABEL, names::MANAGED_BY_VALUE);
    let secrets = match secrets.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => Some(list.items),
        Err(e) if status_code(&e) == Some(403) => {
            notes.push(format!(
                "Secrets ({scope}): forbidden; serving certificates are judged from their Services' annotations only"
            ));
            None
        }
        Err(e) => {
            return Err(api_error(
                e,
                "list",
                "secrets",
                &format!("Secrets labelled {selector} ({scope})"),
                ns_of(&scope),
            ));
        }
    };
    let serving = serving_rows(
        &services.items,
        secrets.as_deref(),
        &ca.cert,
        args.renew_before,
        now,
    );
    for row in serving.iter().filter(|r| r.state.needs_attention()) {
        attention.push(format!(
            "Service {}/{} (Secret {}): {}{}",
            row.namespace,
            row.service,
            row.secret,
            row.state.label(),
            row.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }

    // Injection targets.
    let mut injection = Vec::new();
    let configmaps: Api<ConfigMap> = scope.api(client);
    match configmaps.list(&ListParams::default()).await {
        Ok(list) => {
            for cm in list.items {
                if !wants_injection(cm.metadata.annotations.as_ref(), true) {
                    continue;
                }
                let held = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(names::SERVICE_CA_CRT))
                    .map(|s| s.as_bytes());
                let mut row =
                    injection_row("ConfigMap", cm.namespace(), cm.name_any(), held, &ca.bundle);
                if row.state == "stale" && cm.immutable == Some(true) {
                    row.message = Some("immutable: recreate it without `immutable: true`".into());
                }
                injection.push(row);
            }
        }
        Err(e) => notes.push(format!("ConfigMaps ({scope}): {}", short_reason(&e))),
    }
    if scope == Scope::All {
        cluster_targets(client, &ca.bundle, &mut injection, &mut notes).await;
    } else {
        notes.push(
            "APIServices, CRDs and webhook configurations are shown with -A only".to_string(),
        );
    }
    for row in injection.iter().filter(|r| r.state == "stale") {
        attention.push(format!(
            "{} {}: does not hold the current bundle{}",
            row.kind,
            match &row.namespace {
                Some(ns) => format!("{ns}/{}", row.name),
                None => row.name.clone(),
            },
            row.message
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ));
    }

    // Rolling restarts still to come (paced by the controller: not a problem in itself).
    let restarts = pending_restarts(client, &scope, &mut notes).await;

    let healthy = attention.is_empty();
    Ok(Report {
        scope: scope.to_string(),
        ca: CaStatus {
            secret: cargs.ca_secret_ref(),
            source: ca.source.into(),
            subject: ca.cert.subject.clone(),
            key_type: ca.cert.key.clone(),
            serial: info.serial_hex.clone(),
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
            rotation_due: rfc3339(rotation_due),
            seconds_to_rotation: (rotation_due - now).whole_seconds(),
            state: state.into(),
            previous_ca_trusted_until: ca.previous_until.map(rfc3339),
            forced_rotation_pending: forced_pending,
            last_forced_rotation: last_forced,
            leader,
            leader_note,
        },
        bundle: BundleStatus {
            configmap: cargs.bundle_ref(),
            state: bundle_state.into(),
            certificates: bundle_certs,
        },
        serving,
        injection,
        restarts,
        notes,
        attention,
        healthy,
    })
}

fn ns_of(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Namespace(ns) => Some(ns),
        Scope::All => None,
    }
}

/// The current CA: from the CA Secret, or from the bundle ConfigMap when the Secret is forbidden.
async fn load_ca(
    cargs: &ClusterArgs,
    client: &Client,
    bundle_text: Option<&[u8]>,
    notes: &mut Vec<String>,
) -> anyhow::Result<CaMaterial> {
    let secret_ref = cargs.ca_secret_ref();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cargs.ca_namespace);
    match secrets.get_opt(&cargs.ca_secret).await {
        Ok(Some(secret)) => {
            let tls_crt = secret_bytes(&secret, names::TLS_CRT).with_context(|| {
                format!(
                    "CA Secret {secret_ref} has no tls.crt: the controller has not created the CA yet; is it running with --namespace={}?",
                    cargs.ca_namespace
                )
            })?;
            let cert = certview::parse_pem(tls_crt)
                .ok()
                .and_then(|c| c.into_iter().next())
                .with_context(|| {
                    format!(
                        "CA Secret {secret_ref}: tls.crt holds no parsable certificate; run `service-ca inspect ca` and see the controller's ServiceCAInvalid Event"
                    )
                })?;
            let ca_bundle = secret_bytes(&secret, names::CA_BUNDLE_CRT);
            let bundle = ca_bundle.unwrap_or(tls_crt).to_vec();
            let previous_until = ca_bundle
                .and_then(|b| certview::parse_pem(b).ok())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.info.der != cert.info.der)
                .map(|c| c.info.not_after)
                .max();
            Ok(CaMaterial {
                cert,
                bundle,
                source: "secret",
                previous_until,
                annotations: secret.metadata.annotations.unwrap_or_default(),
            })
        }
        Ok(None) => Err(crate::cli_support::missing(
            &format!("CA Secret {secret_ref}"),
            &format!(
                "the controller creates it on start; is it running with --namespace={}? Use --ca-namespace/--ca-secret if the CA lives elsewhere",
                cargs.ca_namespace
            ),
        )),
        Err(e) if status_code(&e) == Some(403) => {
            let text = bundle_text.with_context(|| {
                format!(
                    "cannot read the CA: no access to Secret {secret_ref} nor to ConfigMap {}; your user needs `get` on one of them",
                    cargs.bundle_ref()
                )
            })?;
            let cert = certview::parse_pem(text)
                .ok()
                .and_then(|c| c.into_iter().next())
                .with_context(|| {
                    format!(
                        "ConfigMap {} holds no parsable certificate in ca-bundle.crt (and Secret {secret_ref} is not readable)",
                        cargs.bundle_ref()
                    )
                })?;
            notes.push(format!(
                "CA read from ConfigMap {} (Secret {secret_ref}: forbidden)",
                cargs.bundle_ref()
            ));
            let previous_until = certview::parse_pem(text)
                .unwrap_or_default()
                .into_iter()
                .skip(1)
                .map(|c| c.info.not_after)
                .max();
            Ok(CaMaterial {
                cert,
                bundle: text.to_vec(),
                source: "bundle-configmap",
                previous_until,
                annotations: BTreeMap::new(),
            })
        }
        Err(e) => Err(api_error(
            e,
            "get",
            "secrets",
            &format!("CA Secret {secret_ref}"),
            Some(&cargs.ca_namespace),
        )),
    }
}

/// One row per Service requesting a certificate, plus one per managed Secret no Service requests.
fn serving_rows(
    services: &[Service],
    secrets: Option<&[Secret]>,
    ca: &Cert,
    renew_before: Duration,
    now: OffsetDateTime,
) -> Vec<ServingRow> {
    let by_name: BTreeMap<(String, String), &Secret> = secrets
        .unwrap_or_default()
        .iter()
        .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
        .collect();
    let mut used = BTreeSet::new();
    let mut rows = Vec::new();
    for svc in services {
        let annotations = svc.metadata.annotations.as_ref();
        let Some(secret_name) = requested_secret(annotations) else {
            continue;
        };
        let namespace = svc.namespace().unwrap_or_default();
        let key = (namespace.clone(), secret_name.to_string());
        let secret = by_name.get(&key).copied();
        used.insert(key);
        let error = names::first_non_empty(annotations, &[names::ERROR_BETA, names::ERROR_ALPHA]);
        let mut row = match secret {
            Some(secret) => evaluate(secret, ca, renew_before, now),
            None => ServingRow {
                namespace: namespace.clone(),
                service: String::new(),
                secret: secret_name.to_string(),
                dns_names: Vec::new(),
                expires: None,
                state: if secrets.is_some() {
                    ServingState::Pending
                } else {
                    ServingState::Unknown
                },
                message: Some(if secrets.is_some() {
                    "no Secret issued by service-ca yet".into()
                } else {
                    "Secrets are not readable".into()
                }),
            },
        };
        row.service = svc.name_any();
        if let Some(error) = error {
            row.state = ServingState::Error;
            row.message = Some(error.to_string());
        }
        rows.push(row);
    }
    for (key, secret) in &by_name {
        if used.contains(key) {
            continue;
        }
        let mut row = evaluate(secret, ca, renew_before, now);
        row.service = names::first_non_empty(
            secret.metadata.annotations.as_ref(),
            &[names::ORIGINATING_NAME_BETA, names::ORIGINATING_NAME_ALPHA],
        )
        .unwrap_or("?")
        .to_string();
        row.state = ServingState::Unmaintained;
        row.message =
            Some("no Service in scope requests this Secret; it is no longer renewed".into());
        rows.push(row);
    }
    rows.sort_by(|a, b| {
        (&a.namespace, &a.service, &a.secret).cmp(&(&b.namespace, &b.service, &b.secret))
    });
    rows
}

/// The state of a managed Secret's certificate.
fn evaluate(secret: &Secret, ca: &Cert, renew_before: Duration, now: OffsetDateTime) -> ServingRow {
    let mut row = ServingRow {
        namespace: secret.namespace().unwrap_or_default(),
        service: String::new(),
        secret: secret.name_any(),
        dns_names: Vec::new(),
        expires: None,
        state: ServingState::Ok,
        message: None,
    };
    let leaf = secret_bytes(secret, names::TLS_CRT)
        .and_then(|b| certview::parse_pem(b).ok())
        .and_then(|c| c.into_iter().next());
    let Some(leaf) = leaf else {
        row.state = ServingState::Error;
        row.message = Some("tls.crt holds no parsable certificate".into());
        return row;
    };
    row.dns_names = leaf.info.dns_names.clone();
    row.expires = Some(rfc3339(leaf.info.not_after));
    // The controller's margin: the renewal margin, capped at half the certificate's lifetime.
    let lifetime = (leaf.info.not_after - leaf.info.not_before).unsigned_abs();
    let margin = renew_before.min(lifetime / 2);
    let left = leaf.info.not_after - now;
    if !leaf.verified_by(ca) {
        row.state = ServingState::WrongCa;
        row.message = Some(format!(
            "issued by {} (authority key id {}), not by the current CA; the controller re-issues it",
            leaf.issuer,
            leaf.info
                .akid
                .as_deref()
                .map(certview::hex_colon)
                .unwrap_or_else(|| "none".into())
        ));
    } else if left.is_negative() || left.is_zero() {
        row.state = ServingState::Expired;
        row.message = Some(format!("expired {}", relative(leaf.info.not_after, now)));
    } else if left.unsigned_abs() < margin {
        row.state = ServingState::RenewingSoon;
        row.message = Some(format!(
            "expires {}; renewed when less than {} is left",
            relative(leaf.info.not_after, now),
            human(margin)
        ));
    }
    row
}

fn injection_row(
    kind: &str,
    namespace: Option<String>,
    name: String,
    held: Option<&[u8]>,
    bundle: &[u8],
) -> InjectionRow {
    let (state, message) = match held {
        Some(h) if certview::same_certs(h, bundle) => ("current", None),
        Some(h) if !h.iter().all(u8::is_ascii_whitespace) => {
            ("stale", Some("holds another bundle".to_string()))
        }
        _ => ("stale", Some("no bundle yet".to_string())),
    };
    InjectionRow {
        kind: kind.into(),
        namespace,
        name,
        state: state.into(),
        message,
    }
}

fn skipped(kind: &str, name: String, why: &str) -> InjectionRow {
    InjectionRow {
        kind: kind.into(),
        namespace: None,
        name,
        state: "skipped".into(),
        message: Some(why.into()),
    }
}

/// APIServices, CRDs and webhook configurations with the inject annotation (`-A` only).
async fn cluster_targets(
    client: &Client,
    bundle: &[u8],
    rows: &mut Vec<InjectionRow>,
    notes: &mut Vec<String>,
) {
    let lp = ListParams::default();
    match Api::<APIService>::all(client.clone()).list(&lp).await {
        Ok(list) => {
            for a in list.items {
                if !wants_injection(a.metadata.annotations.as_ref(), true) {
                    continue;
                }
                let spec = a.spec.as_ref();
                if spec.is_some_and(|s| s.service.is_none()) {
                    rows.push(skipped(
                        "APIService",
                        a.name_any(),
                        "local APIService: no caBundle",
                    ));
                    continue;
                }
                let held = spec
                    .and_then(|s| s.ca_bundle.as_ref())
                    .map(|b| b.0.as_slice());
                rows.push(injection_row(
                    "APIService",
                    None,
                    a.name_any(),
                    held,
                    bundle,
                ));
            }
        }
        Err(e) => notes.push(format!("APIServices: {}", short_reason(&e))),
    }
    match Api::<CustomResourceDefinition>::all(client.clone())
        .list(&lp)
        .await
    {
        Ok(list) => {
            for crd in list.items {
                if !wants_injection(crd.metadata.annotations.as_ref(), false) {
                    continue;
                }
                let conversion = crd.spec.conversion.as_ref();
                if conversion.map(|c| c.strategy.as_str()) != Some("Webhook") {
                    rows.push(skipped(
                        "CustomResourceDefinition",
                        crd.name_any(),
                        "conversion strategy is not Webhook",
                    ));
                    continue;
                }
                let held = conversion
                    .and_then(|c| c.webhook.as_ref())
                    .and_then(|w| w.client_config.as_ref())
                    .and_then(|c| c.ca_bundle.as_ref())
                    .map(|b| b.0.as_slice());
                rows.push(injection_row(
                    "CustomResourceDefinition",
                    None,
                    crd.name_any(),
                    held,
                    bundle,
                ));
            }
        }
        Err(e) => notes.push(format!("CustomResourceDefinitions: {}", short_reason(&e))),
    }
    match Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&lp)
        .await
    {
        Ok(list) => {
            for w in list.items {
                if !wants_injection(w.metadata.annotations.as_ref(), false) {
                    continue;
                }
                let bundles: Vec<Option<&[u8]>> = w
                    .webhooks
                    .iter()
                    .flatten()
                    .map(|h| h.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()))
                    .collect();
                rows.push(webhooks_row(
                    "MutatingWebhookConfiguration",
                    w.name_any(),
                    &bundles,
                    bundle,
                ));
            }
        }
        Err(e) => notes.push(format!(
            "MutatingWebhookConfigurations: {}",
            short_reason(&e)
        )),
    }
    match Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .list(&lp)
        .await
    {
        Ok(list) => {
            for w in list.items {
                if !wants_injection(w.metadata.annotations.as_ref(), false) {
                    continue;
                }
                let bundles: Vec<Option<&[u8]>> = w
                    .webhooks
                    .iter()
                    .flatten()
                    .map(|h| h.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()))
                    .collect();
                rows.push(webhooks_row(
                    "ValidatingWebhookConfiguration",
                    w.name_any(),
                    &bundles,
                    bundle,
                ));
            }
        }
        Err(e) => notes.push(format!(
            "ValidatingWebhookConfigurations: {}",
            short_reason(&e)
        )),
    }
}

fn webhooks_row(kind: &str, name: String, held: &[Option<&[u8]>], bundle: &[u8]) -> InjectionRow {
    if held.is_empty() {
        return skipped(kind, name, "no webhooks");
    }
    let stale = held
        .iter()
        .filter(|h| !h.is_some_and(|h| certview::same_certs(h, bundle)))
        .count();
    InjectionRow {
        kind: kind.into(),
        namespace: None,
        name,
        state: if stale == 0 { "current" } else { "stale" }.into(),
        message: (stale > 0).then(|| {
            format!(
                "{stale} of {} webhooks without the current bundle",
                held.len()
            )
        }),
    }
}

/// Column-aligned rows; the last column is not padded.
fn table(
    out: &mut String,
    header: &[&str],
    rows: &[Vec<String>],
    paint_last: impl Fn(&str) -> String,
) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>, last: String| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let _ = write!(s, "{cell:<w$}  ", w = widths[i]);
        }
        s.push_str(&last);
        s
    };
    let n = header.len() - 1;
    let _ = writeln!(
        out,
        "{}",
        line(
            header[..n].iter().map(|h| h.to_string()).collect(),
            header[n].to_string()
        )
    );
    for row in rows {
        let _ = writeln!(out, "{}", line(row[..n].to_vec(), paint_last(&row[n])));
    }
}

/// The readable report.
pub fn render(r: &Report, paint: &Paint) -> String {
    let mut out = String::new();
    let ca = &r.ca;
    let state = match ca.state.as_str() {
        "ok" => paint.good("ok"),
        "rotation_soon" => paint.warn("rotation soon"),
        "rotation_overdue" => paint.bad("rotation overdue"),
        other => paint.bad(other),
    };
    let _ = writeln!(out, "{} {}  {}", paint.bold("CA"), ca.secret, state);
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<20}{value}");
    };
    field("subject", ca.subject.clone());
    field("key", ca.key_type.clone());
    field("serial", ca.serial.clone());
    field("valid", format!("{} to {}", ca.not_before, ca.not_after));
    let due = if ca.seconds_to_rotation >= 0 {
        format!(
            "in {}",
            human(Duration::from_secs(ca.seconds_to_rotation.unsigned_abs()))
        )
    } else {
        format!(
            "overdue by {}",
            human(Duration::from_secs(ca.seconds_to_rotation.unsigned_abs()))
        )
    };
    field("automatic rotation", format!("{} ({due})", ca.rotation_due));
    field(
        "previous CA",
        match &ca.previous_ca_trusted_until {
            Some(t) => format!("still trusted until {t}"),
            None => "none (no rotation yet)".into(),
        },
    );
    if let Some(reason) = &ca.forced_rotation_pending {
        field(
            "forced rotation",
            format!("{reason:?} requested, not done yet"),
        );
    } else if let Some(reason) = &ca.last_forced_rotation {
        field("last forced rotation", format!("{reason:?}"));
    }
    field(
        "leader",
        match &ca.leader {
            Some(l) => format!(
                "{}{}",
                l.identity,
                match (&l.renewed, l.current) {
                    (Some(t), true) => format!(" (renewed {})", t),
                    (Some(t), false) => format!(" (lease expired, last renewed {t})"),
                    (None, _) => String::new(),
                }
            ),
            None => ca.leader_note.clone().unwrap_or_else(|| "none".into()),
        },
    );
    let bundle_state = match r.bundle.state.as_str() {
        "current" => paint.good("current"),
        "unknown" => paint.warn("unknown"),
        other => paint.bad(other),
    };
    field(
        "bundle",
        format!(
            "{} {} ({} certificate{})",
            r.bundle.configmap,
            bundle_state,
            r.bundle.certificates,
            if r.bundle.certificates == 1 { "" } else { "s" }
        ),
    );

    let _ = writeln!(
        out,
        "\n{} ({})",
        paint.bold("SERVING CERTIFICATES"),
        r.scope
    );
    if r.serving.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let rows: Vec<Vec<String>> = r
            .serving
            .iter()
            .map(|row| {
                vec![
                    row.namespace.clone(),
                    row.service.clone(),
                    row.secret.clone(),
                    if row.dns_names.is_empty() {
                        "-".into()
                    } else {
                        row.dns_names.join(",")
                    },
                    row.expires.clone().unwrap_or_else(|| "-".into()),
                    match &row.message {
                        Some(m) if row.state != ServingState::Ok => {
                            format!("{}: {m}", row.state.label())
                        }
                        _ => row.state.label().to_string(),
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "NAMESPACE",
                "SERVICE",
                "SECRET",
                "DNS NAMES",
                "EXPIRES",
                "STATE",
            ],
            &rows,
            |s| {
                if s == "ok" {
                    paint.good(s)
                } else if s.starts_with("unmaintained")
                    || s.starts_with("renewing soon")
                    || s.starts_with("unknown")
                {
                    paint.warn(s)
                } else {
                    paint.bad(s)
                }
            },
        );
    }

    let _ = writeln!(out, "\n{} ({})", paint.bold("INJECTION TARGETS"), r.scope);
    if r.injection.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let rows: Vec<Vec<String>> = r
            .injection
            .iter()
            .map(|row| {
                vec![
                    row.kind.clone(),
                    row.namespace.clone().unwrap_or_else(|| "-".into()),
                    row.name.clone(),
                    match &row.message {
                        Some(m) => format!("{}: {m}", row.state),
                        None => row.state.clone(),
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &["KIND", "NAMESPACE", "NAME", "BUNDLE"],
            &rows,
            |s| {
                if s == "current" {
                    paint.good(s)
                } else if s.starts_with("skipped") {
                    paint.warn(s)
                } else {
                    paint.bad(s)
                }
            },
        );
    }

    if !r.restarts.is_empty() {
        let _ = writeln!(
            out,
            "\n{} ({})",
            paint.bold("PENDING ROLLING RESTARTS"),
            r.scope
        );
        let rows: Vec<Vec<String>> = r
            .restarts
            .iter()
            .map(|row| {
                vec![
                    row.kind.clone(),
                    row.namespace.clone(),
                    row.name.clone(),
                    row.message.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["KIND", "NAMESPACE", "NAME", "STATE"],
            &rows,
            |s| paint.warn(s),
        );
    }

    if !r.notes.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("NOTES"));
        for n in &r.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    if r.attention.is_empty() {
        let _ = writeln!(out, "\n{}", paint.good("All is well."));
    } else {
        let _ = writeln!(out, "\n{}", paint.bad("NEEDS ATTENTION"));
        for a in &r.attention {
            let _ = writeln!(out, "  - {a}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use service_ca_pki::{
        CaConfig, ChainOrder, ServingRequest, SigningCa, generate_key, issue_serving,
    };

    fn secret_with(crt: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("tls".into());
        s.metadata.namespace = Some("ns".into());
        s.data = Some(
            [(
                names::TLS_CRT.to_string(),
                ByteString(crt.as_bytes().to_vec()),
            )]
            .into(),
        );
        s
    }

    #[test]
    fn serving_states() {
        let now = OffsetDateTime::now_utc();
        let cfg = CaConfig::default();
        let ca = SigningCa::create(&cfg, now).unwrap();
        let other = SigningCa::create(&cfg, now).unwrap();
        let issue = |ca: &SigningCa, lifetime: Duration| {
            let req = ServingRequest {
                service: "api",
                namespace: "ns",
                uid: "u",
                headless: false,
                cluster_domain: "cluster.local",
                lifetime,
                chain_order: ChainOrder::Portable,
                extra_dns_names: &[],
            };
            issue_serving(ca, &req, generate_key(cfg.key_algorithm).unwrap(), now)
                .unwrap()
                .cert_chain_pem
        };
        let ca_cert = certview::parse_pem(ca.tls_crt_pem().as_bytes())
            .unwrap()
            .remove(0);
        let day = Duration::from_secs(86400);
        let margin = 30 * day;
        let ok = evaluate(&secret_with(&issue(&ca, 730 * day)), &ca_cert, margin, now);
        assert_eq!(ok.state, ServingState::Ok, "{ok:?}");
        assert_eq!(ok.dns_names.len(), 2);
        let wrong = evaluate(
            &secret_with(&issue(&other, 730 * day)),
            &ca_cert,
            margin,
            now,
        );
        assert_eq!(wrong.state, ServingState::WrongCa);
        let soon = evaluate(
            &secret_with(&issue(&ca, 100 * day)),
            &ca_cert,
            margin,
            now + 80 * day,
        );
        assert_eq!(soon.state, ServingState::RenewingSoon);
        // A 2-hour certificate is renewed with 1 hour left, not 30 days.
        let short = evaluate(
            &secret_with(&issue(&ca, Duration::from_secs(7200))),
            &ca_cert,
            margin,
            now,
        );
        assert_eq!(short.state, ServingState::Ok);
        let garbage = evaluate(&secret_with("nope"), &ca_cert, margin, now);
        assert_eq!(garbage.state, ServingState::Error);
    }
}
