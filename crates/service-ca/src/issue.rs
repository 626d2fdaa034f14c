//! `service-ca issue`: offline issuance of a serving certificate from a CA kept in a local
//! directory (`ca.crt`, `ca.key`; created on first use), with the same profile the controller
//! uses (docs/behavior.md §5.3). No cluster access.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use service_ca_pki::{
    CaConfig, ChainOrder, KeyAlgorithm, ServingRequest, SigningCa, generate_key, issue_serving,
};

use crate::cli_support::{Outcome, UsageError, duration_arg, now, rfc3339};

/// `service-ca issue` flags.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Service name.
    #[arg(long)]
    service: String,
    /// Service namespace.
    #[arg(short = 'n', long)]
    namespace: String,
    /// The Service is headless (clusterIP: None): adds the wildcard names.
    #[arg(long)]
    headless: bool,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Directory of the CA (`ca.crt`, `ca.key`); a new CA is created there if both are absent.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Where to write `tls.crt`, `tls.key` and `ca.crt`.
    #[arg(long)]
    out: PathBuf,
    /// Certificate lifetime (capped at the CA's expiry).
    #[arg(long, default_value = "730d", value_parser = duration_arg)]
    lifetime: Duration,
    /// Key algorithm of the certificate (and of a new CA): rsa-2048, rsa-3072, rsa-4096,
    /// ecdsa-p256, ecdsa-p384.
    #[arg(long, default_value = "rsa-2048", value_parser = parse_algorithm)]
    key_algorithm: KeyAlgorithm,
    /// Service UID written into the certificate's Service UID extension.
    #[arg(long, default_value = "")]
    uid: String,
}

fn parse_algorithm(text: &str) -> Result<KeyAlgorithm, String> {
    text.parse()
        .map_err(|e: service_ca_pki::PkiError| e.to_string())
}

/// A DNS-1123 label: what Service and namespace names are.
fn check_label(what: &str, value: &str) -> anyhow::Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(UsageError(format!(
            "--{what} {value:?} is not a valid name: lowercase letters, digits and '-', at most 63 characters"
        ))
        .into())
    }
}

/// Writes `bytes` to `path` atomically with `mode` (the file never exists with wider permissions).
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!(
            "cannot write {}: check that the directory is writable",
            path.display()
        ))
    })
}

fn make_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Loads the CA from `dir`, or creates it there when neither file exists.
fn load_or_create_ca(
    dir: &Path,
    algorithm: KeyAlgorithm,
    now: time::OffsetDateTime,
) -> anyhow::Result<(SigningCa, bool)> {
    let (crt_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    match (crt_path.exists(), key_path.exists()) {
        (true, true) => {
            let crt = fs::read(&crt_path)
                .with_context(|| format!("cannot read {}", crt_path.display()))?;
            let key = fs::read(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?;
            let ca = SigningCa::from_secret_data(&crt, &key, None, None, now).with_context(|| {
                format!(
                    "{} and {} are not a usable CA (a CA certificate and its private key); fix them, or use another --ca-dir to create a new CA",
                    crt_path.display(),
                    key_path.display()
                )
            })?;
            if let Ok(meta) = fs::metadata(&key_path)
                && meta.permissions().mode() & 0o077 != 0
            {
                eprintln!(
                    "warning: {} is readable by others (mode {:o}); chmod 600 it",
                    key_path.display(),
                    meta.permissions().mode() & 0o777
                );
            }
            if ca.is_expired(now) {
                anyhow::bail!(
                    "the CA in {} expired on {}: move ca.crt and ca.key away to create a new one",
                    dir.display(),
                    rfc3339(ca.not_after())
                );
            }
            Ok((ca, false))
        }
        (false, false) => {
            make_dir(dir, 0o700)?;
            let cfg = CaConfig {
                key_algorithm: algorithm,
                ..CaConfig::default()
            };
            let ca = SigningCa::create(&cfg, now).context("creating the CA")?;
            write_file(&key_path, ca.tls_key_pem().as_bytes(), 0o600)?;
            write_file(&crt_path, ca.tls_crt_pem().as_bytes(), 0o644)?;
            Ok((ca, true))
        }
        (true, false) => anyhow::bail!(
            "{} exists but {} does not: restore the key, or move ca.crt away to create a new CA",
            crt_path.display(),
            key_path.display()
        ),
        (false, true) => anyhow::bail!(
            "{} exists but {} does not: restore the certificate, or move ca.key away to create a new CA",
            key_path.display(),
            crt_path.display()
        ),
    }
}

/// Runs `service-ca issue`.
pub async fn run(args: IssueArgs) -> anyhow::Result<Outcome> {
    check_label("service", &args.service)?;
    check_label("namespace", &args.namespace)?;
    let now = now();
    let (ca, created) = load_or_create_ca(&args.ca_dir, args.key_algorithm, now)?;
    if created {
        println!(
            "Created CA {} (expires {}) in {}",
            ca.subject_cn(),
            rfc3339(ca.not_after()),
            args.ca_dir.display()
        );
    }
    let req = ServingRequest {
        service: &args.service,
        namespace: &args.namespace,
        uid: &args.uid,
        headless: args.headless,
        cluster_domain: &args.cluster_domain,
        lifetime: args.lifetime,
        chain_order: ChainOrder::Portable,
        extra_dns_names: &[],
    };
    let key = generate_key(args.key_algorithm).context("generating the certificate's key")?;
    let issued = issue_serving(&ca, &req, key, now).with_context(|| {
        format!(
            "cannot issue a certificate for {}/{}",
            args.namespace, args.service
        )
    })?;
    make_dir(&args.out, 0o755)?;
    write_file(&args.out.join("tls.key"), issued.key_pem.as_bytes(), 0o600)?;
    write_file(
        &args.out.join("tls.crt"),
        issued.cert_chain_pem.as_bytes(),
        0o644,
    )?;
    write_file(&args.out.join("ca.crt"), ca.bundle_pem().as_bytes(), 0o644)?;
    let names = service_ca_pki::serving_dns_names(
        &args.service,
        &args.namespace,
        args.headless,
        &args.cluster_domain,
    );
    println!(
        "Issued {} for {} (expires {}), signed by {}",
        names.first().map(String::as_str).unwrap_or("?"),
        names.join(", "),
        rfc3339(issued.not_after),
        ca.subject_cn()
    );
    println!(
        "Wrote {0}/tls.crt, {0}/tls.key (mode 600) and {0}/ca.crt",
        args.out.display()
    );
    Ok(Outcome::Ok)
}
