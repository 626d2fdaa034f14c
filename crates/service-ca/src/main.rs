//! The `service-ca` binary: a thin CLI over the controller library.

mod settings;

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
enum Command {
    /// Run the CA manager and every controller.
    Run(RunArgs),
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
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:9443")]
    admin_addr: std::net::SocketAddr,
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
    };
    info!(admin = %args.admin_addr, identity = %opts.identity, "starting");
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
    }
}
