//! `service-ca rotate ca`: requests a forced CA rotation (docs/behavior.md §9.6) and follows it
//! until the CA Secret holds a new CA, the bundle ConfigMap publishes the new bundle and every
//! serving Secret in scope is signed by the new CA.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgAction, Args, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::names;

use crate::certview::{self, Cert};
use crate::cli_support::{
    Cluster, ClusterArgs, NeedsAttention, Outcome, Scope, UsageError, api_error, confirm,
    duration_arg, human, missing, now, requested_secret,
};

/// `service-ca rotate` subcommands.
#[derive(Args, Debug)]
pub struct RotateArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Rotate the signing CA now: a new CA with the same subject, cross-signed with the current
    /// one so clients holding the current bundle keep working (unless --no-bridge).
    Ca(RotateCaArgs),
}

#[derive(Args, Debug)]
struct RotateCaArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Reason recorded on the CA Secret; one rotation per distinct reason (default: cli-<unix time>).
    #[arg(long)]
    reason: Option<String>,
    /// No trust bridge: a new, unrelated CA (for a compromised CA key). Clients fail until they
    /// have the new bundle.
    #[arg(long)]
    no_bridge: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
    /// Follow the rotation until every serving Secret in scope is signed by the new CA.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    wait: bool,
    /// Give up following after this long.
    #[arg(long, default_value = "5m", value_parser = duration_arg)]
    timeout: Duration,
}

/// Runs `service-ca rotate`.
pub async fn run(args: RotateArgs) -> anyhow::Result<Outcome> {
    match args.what {
        What::Ca(args) => rotate_ca(args).await,
    }
}

fn first_cert(secret: &Secret) -> Option<Cert> {
    let bytes = secret.data.as_ref()?.get(names::TLS_CRT)?;
    certview::parse_pem(&bytes.0).ok()?.into_iter().next()
}

async fn rotate_ca(args: RotateCaArgs) -> anyhow::Result<Outcome> {
    let cargs = &args.cluster;
    let cluster = cargs.connect().await?;
    let secret_ref = cargs.ca_secret_ref();
    let secrets = cargs.ca_secrets(&cluster);
    let secret = secrets
        .get_opt(&cargs.ca_secret)
        .await
        .map_err(|e| {
            api_error(
                e,
                "get",
                "secrets",
                &format!("CA Secret {secret_ref}"),
                Some(&cargs.ca_namespace),
            )
        })?
        .ok_or_else(|| {
            missing(
                &format!("CA Secret {secret_ref}"),
                "there is no CA to rotate; the controller creates it on start (use --ca-namespace/--ca-secret if it lives elsewhere)",
            )
        })?;
    let old = first_cert(&secret).with_context(|| {
        format!(
            "CA Secret {secret_ref} has no parsable tls.crt: there is no CA to rotate yet; see `service-ca inspect ca`"
        )
    })?;

    let mut reason = args
        .reason
        .clone()
        .unwrap_or_else(|| format!("cli-{}", now().unix_timestamp()));
    if reason.trim().is_empty() {
        return Err(UsageError("--reason must not be empty".into()).into());
    }
    if args.no_bridge && !reason.starts_with(names::NO_BRIDGE_PREFIX) {
        reason = format!("{}{reason}", names::NO_BRIDGE_PREFIX);
    }
    let no_bridge = reason.starts_with(names::NO_BRIDGE_PREFIX);
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(names::FORCED_ROTATION_REASON) == Some(&reason) {
        return Err(UsageError(format!(
            "reason {reason:?} was already used: CA Secret {secret_ref} records it as its last forced rotation ({}); one rotation per distinct reason, pass a new --reason",
            names::FORCED_ROTATION_REASON
        ))
        .into());
    }

    let bridge = if no_bridge {
        "WITHOUT a trust bridge: clients fail until they have the new bundle"
    } else {
        "with a trust bridge: clients holding the current bundle keep working"
    };
    let question = format!(
        "Rotate the CA in Secret {secret_ref} now ({bridge})? Every serving certificate will be re-issued."
    );
    if !confirm(&question, args.yes)? {
        return Err(NeedsAttention("aborted at the prompt; nothing was changed".into()).into());
    }

    let patch = json!({"metadata": {"annotations": {names::FORCE_ROTATION_REQUEST: reason}}});
    secrets
        .patch(
            &cargs.ca_secret,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            api_error(
                e,
                "patch",
                "secrets",
                &format!("CA Secret {secret_ref}"),
                Some(&cargs.ca_namespace),
            )
        })?;
    println!(
        "Requested a forced rotation of CA Secret {secret_ref}: {}={reason}{}",
        names::FORCE_ROTATION_REQUEST,
        if no_bridge { " (no trust bridge)" } else { "" }
    );
    if !args.wait {
        println!("Not waiting (--wait=false); follow it with `service-ca status`.");
        return Ok(Outcome::Ok);
    }
    follow(cargs, &cluster, &old, args.timeout).await
}

/// Where the rotation stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Progress {
    new_ca: Option<String>,
    published: bool,
    signed: usize,
    total: usize,
    /// Serving Secrets still signed by another CA (first few).
    waiting_for: Vec<String>,
}

impl Progress {
    fn done(&self) -> bool {
        self.new_ca.is_some() && self.published && self.signed == self.total
    }

    fn line(&self, elapsed: Duration, bar: bool) -> String {
        let yes_no = |b: bool| if b { "done" } else { "waiting" };
        let mut s = format!(
            "CA rotated: {} | bundle published: {} | serving certificates re-signed: {}/{}",
            yes_no(self.new_ca.is_some()),
            yes_no(self.published),
            self.signed,
            self.total
        );
        if bar {
            let steps = 2 + self.total;
            let reached = usize::from(self.new_ca.is_some())
                + usize::from(self.published)
                + if self.new_ca.is_some() {
                    self.signed
                } else {
                    0
                };
            let width = 20;
            let filled = reached * width / steps.max(1);
            s = format!(
                "[{}{}] {s} ({})",
                "#".repeat(filled),
                "-".repeat(width - filled),
                human(elapsed)
            );
        }
        s
    }
}

async fn observe(cargs: &ClusterArgs, cluster: &Cluster, old: &Cert) -> anyhow::Result<Progress> {
    let secret_ref = cargs.ca_secret_ref();
    let secret = cargs
        .ca_secrets(cluster)
        .get_opt(&cargs.ca_secret)
        .await
        .map_err(|e| {
            api_error(
                e,
                "get",
                "secrets",
                &format!("CA Secret {secret_ref}"),
                Some(&cargs.ca_namespace),
            )
        })?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "CA Secret {secret_ref} disappeared during the rotation; the controller creates a new CA (without trust bridge)"
            )
        })?;
    let mut progress = Progress::default();
    let current = first_cert(&secret).filter(|c| c.info.der != old.info.der);
    if let Some(current) = &current {
        progress.new_ca = Some(current.short());
        let data = secret.data.as_ref();
        let expected = data
            .and_then(|d| d.get(names::CA_BUNDLE_CRT))
            .filter(|b| !b.0.is_empty())
            .or_else(|| data.and_then(|d| d.get(names::TLS_CRT)))
            .map(|b| b.0.clone())
            .unwrap_or_default();
        let configmaps: Api<ConfigMap> =
            Api::namespaced(cluster.client.clone(), &cargs.ca_namespace);
        let published = configmaps
            .get_opt(&cargs.bundle_configmap)
            .await
            .map_err(|e| {
                api_error(
                    e,
                    "get",
                    "configmaps",
                    &format!("ConfigMap {}", cargs.bundle_ref()),
                    Some(&cargs.ca_namespace),
                )
            })?
            .and_then(|cm| cm.data?.remove(names::CA_BUNDLE_CRT));
        progress.published =
            published.is_some_and(|p| certview::same_certs(p.as_bytes(), &expected));
    }

    // Serving Secrets a Service in scope still requests: the ones the controller re-issues.
    let scope = cluster.scope();
    let ns = match &scope {
        Scope::Namespace(ns) => Some(ns.as_str()),
        Scope::All => None,
    };
    let services: Api<Service> = scope.api(&cluster.client);
    let services = services
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, "list", "services", &format!("Services ({scope})"), ns))?;
    let requested: std::collections::BTreeSet<(String, String)> = services
        .items
        .iter()
        .filter_map(|s| {
            requested_secret(s.metadata.annotations.as_ref())
                .map(|name| (s.namespace().unwrap_or_default(), name.to_string()))
        })
        .collect();
    let selector = format!("{}={}", names::MANAGED_BY_LABEL, names::MANAGED_BY_VALUE);
    let secrets: Api<Secret> = scope.api(&cluster.client);
    let secrets = secrets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            api_error(
                e,
                "list",
                "secrets",
                &format!("Secrets labelled {selector} ({scope})"),
                ns,
            )
        })?;
    for s in &secrets.items {
        let key = (s.namespace().unwrap_or_default(), s.name_any());
        if !requested.contains(&key) {
            continue;
        }
        progress.total += 1;
        let signed = current
            .as_ref()
            .is_some_and(|ca| first_cert(s).is_some_and(|leaf| leaf.verified_by(ca)));
        if signed {
            progress.signed += 1;
        } else if progress.waiting_for.len() < 5 {
            progress.waiting_for.push(format!("{}/{}", key.0, key.1));
        }
    }
    Ok(progress)
}

async fn follow(
    cargs: &ClusterArgs,
    cluster: &Cluster,
    old: &Cert,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    let mut last: Option<Progress> = None;
    let mut stdout = std::io::stdout();
    loop {
        let progress = observe(cargs, cluster, old).await?;
        let elapsed = started.elapsed();
        if terminal {
            let _ = write!(stdout, "\r\x1b[2K{}", progress.line(elapsed, true));
            let _ = stdout.flush();
        } else if last.as_ref() != Some(&progress) {
            let _ = writeln!(stdout, "{}", progress.line(elapsed, false));
        }
        if progress.done() {
            if terminal {
                let _ = writeln!(stdout);
            }
            println!(
                "Rotation complete in {}: new CA {}; bundle ConfigMap {} publishes it; {} serving certificate{} signed by it.",
                human(elapsed),
                progress.new_ca.as_deref().unwrap_or("?"),
                cargs.bundle_ref(),
                progress.total,
                if progress.total == 1 { "" } else { "s" }
            );
            return Ok(Outcome::Ok);
        }
        if elapsed >= timeout {
            if terminal {
                let _ = writeln!(stdout);
            }
            let stage = if progress.new_ca.is_none() {
                format!(
                    "the CA Secret {} still holds the old CA: is the controller running and leading, with --namespace={}?",
                    cargs.ca_secret_ref(),
                    cargs.ca_namespace
                )
            } else if !progress.published {
                format!(
                    "the bundle ConfigMap {} does not hold the new bundle yet",
                    cargs.bundle_ref()
                )
            } else {
                format!(
                    "{} of {} serving Secrets are still signed by another CA (e.g. {})",
                    progress.total - progress.signed,
                    progress.total,
                    progress.waiting_for.join(", ")
                )
            };
            return Err(NeedsAttention(format!(
                "the rotation did not finish within {}: {stage}; see `service-ca status` and the controller's logs and Events",
                human(timeout)
            ))
            .into());
        }
        last = Some(progress);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
