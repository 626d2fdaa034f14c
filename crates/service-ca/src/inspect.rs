//! `service-ca inspect secret|bundle|ca`: the certificates of a serving Secret, a bundle or the CA
//! Secret in readable form, and which certificate verifies which.
//!
//! "Verified by" means: the certificate's issuer name equals the other certificate's subject and
//! its signature verifies with the other's public key (x509-parser; see `certview`).

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde::Serialize;
use service_ca_controller::names;
use service_ca_pki::PrivateKey;

use crate::certview::{self, Cert, CertView};
use crate::cli_support::{
    Cluster, ClusterArgs, Outcome, Output, Paint, api_error, missing, now, print_structured,
    status_code,
};

const METHOD: &str = "\"verified by\" = issuer name equals that certificate's subject and the signature verifies with its public key";

/// `service-ca inspect` subcommands.
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// A serving Secret: its certificate chain, key and service-ca metadata.
    Secret {
        /// The Secret, NAMESPACE/NAME (or NAME with -n).
        secret: String,
        #[command(flatten)]
        common: Common,
    },
    /// A CA bundle ConfigMap (default: the CA's bundle ConfigMap) or an injected ConfigMap.
    Bundle {
        /// The ConfigMap, NAMESPACE/NAME (or NAME with -n).
        configmap: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// The CA Secret: the current CA, the bundle and the cross-signed intermediate.
    Ca {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
struct Common {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// What `inspect` shows.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// `Secret ns/name`, `ConfigMap ns/name`.
    pub object: String,
    /// How "verified by" is decided.
    pub verification: String,
    /// One section per PEM field.
    pub sections: Vec<Section>,
    /// Facts about the object (key, metadata).
    pub facts: Vec<Fact>,
    /// Remarks (what could not be read).
    pub notes: Vec<String>,
}

/// A named fact.
#[derive(Debug, Serialize)]
pub struct Fact {
    /// What.
    pub name: String,
    /// Its value.
    pub value: String,
}

fn fact(name: String, value: String) -> Fact {
    Fact { name, value }
}

/// One PEM field.
#[derive(Debug, Serialize)]
pub struct Section {
    /// Data key.
    pub key: String,
    /// `leaf, CA (self-signed)`.
    pub chain_order: String,
    /// Its certificates.
    pub certificates: Vec<CertView>,
}

/// Runs `service-ca inspect`.
pub async fn run(args: InspectArgs) -> anyhow::Result<Outcome> {
    let (common, inspection) = match args.what {
        What::Secret { secret, common } => {
            let cluster = common.cluster.connect().await?;
            let i = inspect_secret(&common.cluster, &cluster, &secret).await?;
            (common, i)
        }
        What::Bundle { configmap, common } => {
            let cluster = common.cluster.connect().await?;
            let i = inspect_bundle(&common.cluster, &cluster, configmap.as_deref()).await?;
            (common, i)
        }
        What::Ca { common } => {
            let cluster = common.cluster.connect().await?;
            let i = inspect_ca(&common.cluster, &cluster).await?;
            (common, i)
        }
    };
    match common.output {
        Output::Table => print!("{}", render(&inspection, &Paint::stdout())),
        other => print_structured(&inspection, other)?,
    }
    Ok(Outcome::Ok)
}

fn data<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| b.0.as_slice())
        .filter(|b| !b.iter().all(u8::is_ascii_whitespace))
}

/// The CA Secret, if readable (None with a note when absent or forbidden).
async fn ca_secret(
    cargs: &ClusterArgs,
    cluster: &Cluster,
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<Secret>> {
    match cargs.ca_secrets(cluster).get_opt(&cargs.ca_secret).await {
        Ok(Some(s)) => Ok(Some(s)),
        Ok(None) => {
            notes.push(format!("CA Secret {}: not found", cargs.ca_secret_ref()));
            Ok(None)
        }
        Err(e) if status_code(&e) == Some(403) => {
            notes.push(format!("CA Secret {}: forbidden", cargs.ca_secret_ref()));
            Ok(None)
        }
        Err(e) => Err(api_error(
            e,
            "get",
            "secrets",
            &format!("CA Secret {}", cargs.ca_secret_ref()),
            Some(&cargs.ca_namespace),
        )),
    }
}

/// The bundle ConfigMap's `ca-bundle.crt`, if readable.
async fn published_bundle(
    cargs: &ClusterArgs,
    cluster: &Cluster,
    notes: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cargs.ca_namespace);
    match api.get_opt(&cargs.bundle_configmap).await {
        Ok(Some(cm)) => cm
            .data
            .and_then(|mut d| d.remove(names::CA_BUNDLE_CRT))
            .map(String::into_bytes),
        Ok(None) => {
            notes.push(format!(
                "bundle ConfigMap {}: not found",
                cargs.bundle_ref()
            ));
            None
        }
        Err(e) => {
            notes.push(format!(
                "bundle ConfigMap {}: {}",
                cargs.bundle_ref(),
                crate::cli_support::short_reason(&e)
            ));
            None
        }
    }
}

/// Labelled candidates, one per distinct certificate (first label wins).
struct Candidates {
    list: Vec<(String, Cert)>,
}

impl Candidates {
    fn new() -> Self {
        Self { list: Vec::new() }
    }

    fn add(&mut self, prefix: &str, certs: &[Cert], current_ca: Option<&Cert>) {
        for (i, c) in certs.iter().enumerate() {
            if self
                .list
                .iter()
                .any(|(_, have)| have.info.der == c.info.der)
            {
                continue;
            }
            let current = current_ca.is_some_and(|ca| ca.info.der == c.info.der);
            let label = format!(
                "{prefix}[{i}] {}{}",
                c.subject,
                if current { " (current CA)" } else { "" }
            );
            self.list.push((label, c.clone()));
        }
    }

    /// Who verifies `cert`: "itself" first for a self-signed certificate.
    fn verifiers(&self, cert: &Cert) -> Vec<String> {
        let mut out = Vec::new();
        if cert.self_signed() {
            out.push("itself (self-signed)".to_string());
        }
        for (label, c) in &self.list {
            if c.info.der != cert.info.der && cert.verified_by(c) {
                out.push(label.clone());
            }
        }
        out
    }
}

fn section(key: &str, certs: &[Cert], candidates: &Candidates) -> Section {
    let now = now();
    Section {
        key: key.into(),
        chain_order: certs.iter().map(Cert::role).collect::<Vec<_>>().join(", "),
        certificates: certs
            .iter()
            .enumerate()
            .map(|(i, c)| c.view(i, candidates.verifiers(c), now))
            .collect(),
    }
}

fn parse_field(object: &str, key: &str, bytes: &[u8]) -> anyhow::Result<Vec<Cert>> {
    let certs = certview::parse_pem(bytes).map_err(|e| {
        e.context(format!(
            "{object}: {key} does not parse as PEM certificates; the controller re-issues a damaged serving Secret, a damaged CA Secret must be repaired or deleted"
        ))
    })?;
    if certs.is_empty() {
        anyhow::bail!("{object}: {key} holds no CERTIFICATE block");
    }
    Ok(certs)
}

/// Key type of a PEM private key and whether it matches the certificate (never printed).
fn key_fact(key_pem: Option<&[u8]>, cert: Option<&Cert>) -> String {
    let Some(pem) = key_pem else {
        return "missing".into();
    };
    let Some(key) = std::str::from_utf8(pem)
        .ok()
        .and_then(|t| PrivateKey::from_pem(t).ok())
    else {
        return "present, but not a parsable RSA, P-256 or P-384 private key".into();
    };
    let kind = certview::algorithm_label(key.algorithm());
    match cert.and_then(|c| certview::public_key_bits(&c.info.der)) {
        Some(bits) if bits == key.public_key_raw() => format!("{kind}, matches the certificate"),
        Some(_) => format!("{kind}, does NOT match the certificate"),
        None => kind,
    }
}

async fn inspect_secret(
    cargs: &ClusterArgs,
    cluster: &Cluster,
    reference: &str,
) -> anyhow::Result<Inspection> {
    let (ns, name) = cluster.object_ref(reference, "Secret")?;
    let object = format!("Secret {ns}/{name}");
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let secret = api
        .get_opt(&name)
        .await
        .map_err(|e| api_error(e, "get", "secrets", &object, Some(&ns)))?
        .ok_or_else(|| {
            missing(
                &object,
                "check the name and the namespace (the Secret a Service requests is named by its service.beta.openshift.io/serving-cert-secret-name annotation)",
            )
        })?;
    let tls_crt = data(&secret, names::TLS_CRT).ok_or_else(|| {
        anyhow::anyhow!(
            "{object} has no tls.crt: it is not a serving Secret, or it was emptied (the controller re-issues its own Secrets)"
        )
    })?;
    let chain = parse_field(&object, names::TLS_CRT, tls_crt)?;

    let mut notes = Vec::new();
    let ca = ca_secret(cargs, cluster, &mut notes).await?;
    let current_ca = ca
        .as_ref()
        .and_then(|s| data(s, names::TLS_CRT))
        .and_then(|b| certview::parse_pem(b).ok())
        .and_then(|c| c.into_iter().next());
    let bundle = match published_bundle(cargs, cluster, &mut notes).await {
        Some(b) => Some((format!("bundle {}", cargs.bundle_ref()), b)),
        None => ca.as_ref().and_then(|s| {
            data(s, names::CA_BUNDLE_CRT)
                .or_else(|| data(s, names::TLS_CRT))
                .map(|b| (format!("CA Secret {}", cargs.ca_secret_ref()), b.to_vec()))
        }),
    };
    let mut candidates = Candidates::new();
    match &bundle {
        Some((_, text)) => {
            let certs = certview::parse_pem(text).unwrap_or_default();
            candidates.add("bundle", &certs, current_ca.as_ref());
        }
        None => notes.push(
            "no current bundle readable: certificates are checked against this chain only".into(),
        ),
    }
    candidates.add("tls.crt", &chain, current_ca.as_ref());

    let mut facts = Vec::new();
    if let Some((source, _)) = &bundle {
        facts.push(fact("checked against".into(), source.clone()));
    }
    let leaf = chain.first();
    if let (Some(leaf), Some(ca)) = (leaf, &current_ca) {
        facts.push(fact(
            "leaf signed by the current CA".into(),
            if leaf.verified_by(ca) { "yes" } else { "no" }.into(),
        ));
    }
    facts.push(fact(
        "tls.key".into(),
        key_fact(data(&secret, names::TLS_KEY), leaf),
    ));
    facts.push(fact(
        "type".into(),
        secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
    ));
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    facts.push(fact(
        "issued by service-ca".into(),
        if labels.get(names::MANAGED_BY_LABEL).map(String::as_str) == Some(names::MANAGED_BY_VALUE)
        {
            format!(
                "yes (label {}={})",
                names::MANAGED_BY_LABEL,
                names::MANAGED_BY_VALUE
            )
        } else {
            "no (no managed-by label)".into()
        },
    ));
    let annotations = secret.metadata.annotations.as_ref();
    for (label, keys) in [
        (
            "service",
            [names::ORIGINATING_NAME_BETA, names::ORIGINATING_NAME_ALPHA],
        ),
        (
            "service uid",
            [names::ORIGINATING_UID_BETA, names::ORIGINATING_UID_ALPHA],
        ),
        (
            "expiry annotation",
            [names::EXPIRY_BETA, names::EXPIRY_ALPHA],
        ),
        ("renewed for", [names::RENEWED_FOR, names::RENEWED_FOR]),
    ] {
        if let Some(v) = names::first_non_empty(annotations, &keys) {
            facts.push(fact(label.into(), v.into()));
        }
    }
    Ok(Inspection {
        object,
        verification: METHOD.into(),
        sections: vec![section(names::TLS_CRT, &chain, &candidates)],
        facts,
        notes,
    })
}

async fn inspect_bundle(
    cargs: &ClusterArgs,
    cluster: &Cluster,
    reference: Option<&str>,
) -> anyhow::Result<Inspection> {
    let (ns, name) = match reference {
        Some(r) => cluster.object_ref(r, "ConfigMap")?,
        None => (cargs.ca_namespace.clone(), cargs.bundle_configmap.clone()),
    };
    let object = format!("ConfigMap {ns}/{name}");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let cm = api
        .get_opt(&name)
        .await
        .map_err(|e| api_error(e, "get", "configmaps", &object, Some(&ns)))?
        .ok_or_else(|| {
            missing(
                &object,
                "the CA's bundle ConfigMap is published by the controller (is it running? use --ca-namespace/--bundle-configmap if it lives elsewhere); an injected one needs the service.beta.openshift.io/inject-cabundle=true annotation",
            )
        })?;
    let data = cm.data.clone().unwrap_or_default();
    let (key, text) = [names::CA_BUNDLE_CRT, names::SERVICE_CA_CRT]
        .iter()
        .find_map(|k| data.get(*k).map(|t| (k.to_string(), t.clone())))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{object} has neither {} nor {} (keys: {}): no bundle was published or injected into it yet",
                names::CA_BUNDLE_CRT,
                names::SERVICE_CA_CRT,
                if data.is_empty() {
                    "none".to_string()
                } else {
                    data.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )
        })?;
    let certs = parse_field(&object, &key, text.as_bytes())?;
    let mut notes = Vec::new();
    let ca = ca_secret(cargs, cluster, &mut notes).await?;
    let current_ca = ca
        .as_ref()
        .and_then(|s| data_of(s, names::TLS_CRT))
        .and_then(|b| certview::parse_pem(b).ok())
        .and_then(|c| c.into_iter().next());
    let mut candidates = Candidates::new();
    candidates.add("bundle", &certs, current_ca.as_ref());
    if let Some(ca) = &current_ca {
        candidates.add("CA Secret tls.crt", std::slice::from_ref(ca), Some(ca));
    }
    let mut facts = Vec::new();
    if let Some(ca) = &ca {
        let current = data_of(ca, names::CA_BUNDLE_CRT).or_else(|| data_of(ca, names::TLS_CRT));
        facts.push(fact(
            "holds the current bundle".into(),
            match current {
                Some(b) if certview::same_certs(b, text.as_bytes()) => "yes".into(),
                Some(_) => format!(
                    "no: it differs from what CA Secret {} says",
                    cargs.ca_secret_ref()
                ),
                None => "unknown: the CA Secret has no tls.crt".into(),
            },
        ));
    }
    Ok(Inspection {
        object,
        verification: METHOD.into(),
        sections: vec![section(&key, &certs, &candidates)],
        facts,
        notes,
    })
}

fn data_of<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    data(secret, key)
}

async fn inspect_ca(cargs: &ClusterArgs, cluster: &Cluster) -> anyhow::Result<Inspection> {
    let object = format!("Secret {}", cargs.ca_secret_ref());
    let secret = cargs
        .ca_secrets(cluster)
        .get_opt(&cargs.ca_secret)
        .await
        .map_err(|e| {
            api_error(
                e,
                "get",
                "secrets",
                &format!("CA {object}"),
                Some(&cargs.ca_namespace),
            )
        })?
        .ok_or_else(|| {
            missing(
                &format!("CA {object}"),
                &format!(
                    "the controller creates it on start; is it running with --namespace={}? Use --ca-namespace/--ca-secret if the CA lives elsewhere",
                    cargs.ca_namespace
                ),
            )
        })?;
    let tls_crt = data(&secret, names::TLS_CRT).ok_or_else(|| {
        anyhow::anyhow!(
            "CA {object} has no tls.crt: the controller has not created the CA yet (an empty tls.crt is filled in on its next pass)"
        )
    })?;
    let mut fields = vec![(
        names::TLS_CRT,
        parse_field(&object, names::TLS_CRT, tls_crt)?,
    )];
    for key in [names::CA_BUNDLE_CRT, names::INTERMEDIATE_CA_CRT] {
        if let Some(bytes) = data(&secret, key) {
            fields.push((key, parse_field(&object, key, bytes)?));
        }
    }
    let current = fields[0].1.first().cloned();
    let mut candidates = Candidates::new();
    for (key, certs) in &fields {
        candidates.add(key, certs, current.as_ref());
    }
    let mut facts = vec![fact(
        "tls.key".to_string(),
        key_fact(data(&secret, names::TLS_KEY), current.as_ref()),
    )];
    if let Some(bundle) = fields.iter().find(|(k, _)| *k == names::CA_BUNDLE_CRT) {
        let previous = bundle
            .1
            .iter()
            .filter(|c| {
                Some(c.info.der.as_slice()) != current.as_ref().map(|c| c.info.der.as_slice())
            })
            .map(|c| c.info.not_after)
            .max();
        if let Some(until) = previous {
            facts.push(fact(
                "previous CA trusted until".into(),
                crate::cli_support::rfc3339(until),
            ));
        }
    } else {
        facts.push(fact(
            "rotations".into(),
            "none yet (no ca-bundle.crt)".into(),
        ));
    }
    let annotations = secret.metadata.annotations.as_ref();
    for (label, key) in [
        ("forced rotation requested", names::FORCE_ROTATION_REQUEST),
        ("last forced rotation", names::FORCED_ROTATION_REASON),
    ] {
        if let Some(v) = names::first_non_empty(annotations, &[key]) {
            facts.push(fact(label.into(), v.into()));
        }
    }
    let mut notes = Vec::new();
    if let Some(published) = published_bundle(cargs, cluster, &mut notes).await {
        let expected = data(&secret, names::CA_BUNDLE_CRT).unwrap_or(tls_crt);
        facts.push(fact(
            "bundle ConfigMap".into(),
            format!(
                "{}: {}",
                cargs.bundle_ref(),
                if certview::same_certs(&published, expected) {
                    "holds the current bundle"
                } else {
                    "does NOT hold the current bundle yet"
                }
            ),
        ));
    }
    Ok(Inspection {
        object,
        verification: METHOD.into(),
        sections: fields
            .iter()
            .map(|(key, certs)| section(key, certs, &candidates))
            .collect(),
        facts,
        notes,
    })
}

/// The readable form.
pub fn render(i: &Inspection, paint: &Paint) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", paint.bold(&i.object));
    let _ = writeln!(out, "  ({})", i.verification);
    for s in &i.sections {
        let n = s.certificates.len();
        let _ = writeln!(
            out,
            "\n{} ({n} certificate{}; order: {})",
            paint.bold(&s.key),
            if n == 1 { "" } else { "s" },
            s.chain_order
        );
        for c in &s.certificates {
            c.write_text(&mut out, "the bundle or this chain", paint);
        }
    }
    if !i.facts.is_empty() {
        let _ = writeln!(out);
        for f in &i.facts {
            let _ = writeln!(out, "{:<32}{}", format!("{}:", f.name), f.value);
        }
    }
    if !i.notes.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("notes"));
        for n in &i.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}
