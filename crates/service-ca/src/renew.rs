//! `service-ca renew NS/SERVICE`: asks the controller to re-issue one Service's certificate now,
//! without deleting anything: sets the Service annotation `service-ca.dev/renew=<token>`; the
//! controller issues once and records the token on the Secret as `service-ca.dev/renewed-for`.

use std::time::{Duration, Instant};

use clap::{ArgAction, Args};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use service_ca_controller::names;

use crate::certview::{self, Cert};
use crate::cli_support::{
    ClusterArgs, NeedsAttention, Outcome, api_error, confirm, duration_arg, human, missing, now,
    requested_secret, rfc3339,
};

/// `service-ca renew` flags.
#[derive(Args, Debug)]
pub struct RenewArgs {
    /// The Service, NAMESPACE/NAME (or NAME with -n).
    service: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
    /// Wait until the controller has re-issued the certificate.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "5m", value_parser = duration_arg)]
    timeout: Duration,
}

fn leaf(secret: &Secret) -> Option<Cert> {
    let bytes = secret.data.as_ref()?.get(names::TLS_CRT)?;
    certview::parse_pem(&bytes.0).ok()?.into_iter().next()
}

fn annotation<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Runs `service-ca renew`.
pub async fn run(args: RenewArgs) -> anyhow::Result<Outcome> {
    let cluster = args.cluster.connect().await?;
    let (ns, name) = cluster.object_ref(&args.service, "Service")?;
    let object = format!("Service {ns}/{name}");
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), &ns);
    let svc = services
        .get_opt(&name)
        .await
        .map_err(|e| api_error(e, "get", "services", &object, Some(&ns)))?
        .ok_or_else(|| missing(&object, "check the name and the namespace"))?;
    let secret_name = requested_secret(svc.metadata.annotations.as_ref())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{object} does not request a serving certificate: annotate it with {}=<secret name> first",
                names::SECRET_NAME_BETA
            )
        })?
        .to_string();
    let secret_ref = format!("{ns}/{secret_name}");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let before = secrets.get_opt(&secret_name).await.map_err(|e| {
        api_error(
            e,
            "get",
            "secrets",
            &format!("Secret {secret_ref}"),
            Some(&ns),
        )
    })?;
    let old_serial = before.as_ref().and_then(leaf).map(|c| c.info.serial_hex);

    // A token that differs from the last one, even within the same second.
    let mut token = now().unix_timestamp();
    if let Some(prev) =
        annotation(&svc.metadata, names::RENEW_REQUEST).and_then(|t| t.parse::<i64>().ok())
        && prev >= token
    {
        token = prev + 1;
    }
    let token = token.to_string();
    let question = format!(
        "Re-issue the certificate of {object} (Secret {secret_ref}) now? Its key and certificate are replaced."
    );
    if !confirm(&question, args.yes)? {
        return Err(NeedsAttention("aborted at the prompt; nothing was changed".into()).into());
    }
    let previous_error = names::first_non_empty(
        svc.metadata.annotations.as_ref(),
        &[names::ERROR_BETA, names::ERROR_ALPHA],
    )
    .map(str::to_string);
    let patch = json!({"metadata": {"annotations": {names::RENEW_REQUEST: token}}});
    services
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| api_error(e, "patch", "services", &object, Some(&ns)))?;
    println!(
        "Requested renewal of {object}: {}={token}",
        names::RENEW_REQUEST
    );
    if !args.wait {
        println!(
            "The controller re-issues Secret {secret_ref} and records {}={token} on it.",
            names::RENEWED_FOR
        );
        return Ok(Outcome::Ok);
    }

    let started = Instant::now();
    loop {
        let secret = secrets.get_opt(&secret_name).await.map_err(|e| {
            api_error(
                e,
                "get",
                "secrets",
                &format!("Secret {secret_ref}"),
                Some(&ns),
            )
        })?;
        if let Some(secret) = &secret
            && annotation(&secret.metadata, names::RENEWED_FOR) == Some(token.as_str())
            && let Some(cert) = leaf(secret)
            && Some(&cert.info.serial_hex) != old_serial.as_ref()
        {
            println!(
                "Renewed in {}: Secret {secret_ref} serial {} -> {}, expires {}.",
                human(started.elapsed()),
                old_serial.as_deref().unwrap_or("(none)"),
                cert.info.serial_hex,
                rfc3339(cert.info.not_after)
            );
            return Ok(Outcome::Ok);
        }
        let svc = services
            .get_opt(&name)
            .await
            .map_err(|e| api_error(e, "get", "services", &object, Some(&ns)))?
            .ok_or_else(|| anyhow::anyhow!("{object} was deleted while waiting"))?;
        let error = names::first_non_empty(
            svc.metadata.annotations.as_ref(),
            &[names::ERROR_BETA, names::ERROR_ALPHA],
        );
        if let Some(error) = error
            && Some(error) != previous_error.as_deref()
        {
            return Err(NeedsAttention(format!(
                "the controller could not re-issue the certificate of {object}: {error}"
            ))
            .into());
        }
        if started.elapsed() >= args.timeout {
            return Err(NeedsAttention(format!(
                "Secret {secret_ref} was not re-issued within {}{}; is the controller running, and does it support {}? See `service-ca status -n {ns}`",
                human(args.timeout),
                previous_error
                    .map(|e| format!(" (the Service reports: {e})"))
                    .unwrap_or_default(),
                names::RENEW_REQUEST
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
