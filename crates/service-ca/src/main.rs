//! The `service-ca` binary: a thin CLI over the controller library.

mod certview;
mod cli_support;
#[cfg(test)]
mod fuzzing;
mod inspect;
mod issue;
mod renew;
mod rotate;
mod settings;
mod status;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use settings::Settings;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "service-ca",
    version,
    about = "Serving certificates and CA bundles for Kubernetes Services"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "SERVICE_CA_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
enum Command {
    /// Run the CA manager and every controller.
    Run(RunArgs),
    /// Show the CA, every serving certificate and injection target, and what needs attention.
    ///
    /// Exit code 0: all is well; 1: something needs attention; 2: usage or connection error.
    Status(status::StatusArgs),
    /// Show the certificates of a serving Secret, a bundle or the CA in readable form.
    Inspect(inspect::InspectArgs),
    /// Rotate the CA now and follow the rotation until every certificate is re-signed.
    Rotate(rotate::RotateArgs),
    /// Re-issue one Service's serving certificate now.
    Renew(renew::RenewArgs),
    /// Issue a serving certificate offline, from a CA kept in a local directory.
    Issue(issue::IssueArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "SERVICE_CA_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// YAML or JSON file with settings (keys are the flag names without `--`); flags win.
    #[arg(long, env = "SERVICE_CA_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
    /// Identity in the leader-election Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of the leader-election Lease (in the CA namespace).
    #[arg(long, default_value = service_ca_controller::names::DEFAULT_LEASE)]
    lease_name: String,
    /// Address of the probe server: /healthz, /livez, /readyz, plain HTTP. 0.0.0.0 or [::]
    /// listens on IPv4 and IPv6 (IPv4 only where IPv6 is unavailable).
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_addr: std::net::SocketAddr,
    /// Address of the metrics server: /metrics over HTTPS, for bearer tokens allowed to `get` the
    /// non-resource URL /metrics (TokenReview + SubjectAccessReview). Opens once the certificate
    /// files hold a valid pair; not served without --metrics-tls-cert-file.
    #[arg(long, default_value = "127.0.0.1:8443")]
    metrics_addr: std::net::SocketAddr,
    /// PEM certificate chain of the metrics server, re-read when it changes (in a cluster: the
    /// mounted Secret service-ca-metrics-tls, issued by service-ca for its metrics Service).
    #[arg(long, requires = "metrics_tls_key_file")]
    metrics_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the metrics server, re-read when it changes.
    #[arg(long, requires = "metrics_tls_cert_file")]
    metrics_tls_key_file: Option<PathBuf>,
}

impl RunArgs {
    fn to_config(&self) -> anyhow::Result<service_ca_controller::Config> {
        let file = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        self.settings.clone().or(file).to_config()
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    info!(server = %version.git_version, namespace = %cfg.namespace, "connected");
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("service-ca-{}", std::process::id()));
    let opts = service_ca_controller::RunOptions {
        identity,
        lease_namespace: cfg.namespace.clone(),
        lease_name: args.lease_name.clone(),
        lease_timing: Default::default(),
        admin_addr: Some(args.admin_addr),
        metrics: match (&args.metrics_tls_cert_file, &args.metrics_tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(service_ca_controller::MetricsOptions {
                addr: args.metrics_addr,
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            _ => None,
        },
    };
    match &opts.metrics {
        Some(m) => {
            info!(admin = %args.admin_addr, metrics = %m.addr, identity = %opts.identity, "starting")
        }
        None => {
            info!(admin = %args.admin_addr, identity = %opts.identity, "starting; /metrics not served (no --metrics-tls-cert-file)")
        }
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        info!("shutting down");
        on_signal.cancel();
    });
    let metrics = std::sync::Arc::new(service_ca_controller::Metrics::new());
    service_ca_controller::run(client, cfg, opts, metrics, shutdown).await?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout belongs to the subcommands' output (`status -o json` is parsed).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Parses the command line, with each setting's default (from `Config::default()`) in its help.
fn parse_cli() -> anyhow::Result<Cli> {
    let command = Cli::command().mut_subcommand("run", |run| {
        Settings::defaults()
            .into_iter()
            .fold(run, |run, (id, default)| {
                run.mut_arg(id, |arg| {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    arg.help(format!("{help} [default: {default}]"))
                })
            })
    });
    Ok(Cli::from_arg_matches(&command.get_matches())?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = parse_cli()?;
    init_logging(cli.log_format);
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Status(args) => cli_support::finish(status::run(args).await),
        Command::Inspect(args) => cli_support::finish(inspect::run(args).await),
        Command::Rotate(args) => cli_support::finish(rotate::run(args).await),
        Command::Renew(args) => cli_support::finish(renew::run(args).await),
        Command::Issue(args) => cli_support::finish(issue::run(args).await),
    }
}
