//! The `service-ca` binary: a thin CLI over the controller library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use service_ca_controller::Config;
use service_ca_pki::{ChainOrder, KeyAlgorithm};
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
    /// Namespace of the CA Secret and bundle ConfigMap.
    #[arg(long, default_value = service_ca_controller::names::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Name of the CA Secret.
    #[arg(long, default_value = service_ca_controller::names::DEFAULT_CA_SECRET)]
    ca_secret: String,
    /// Name of the bundle ConfigMap.
    #[arg(long, default_value = service_ca_controller::names::DEFAULT_BUNDLE_CONFIGMAP)]
    bundle_configmap: String,
    /// Also publish the bundle to this ConfigMap, as NAMESPACE/NAME.
    #[arg(long)]
    publish_bundle_to: Option<String>,
    /// Use the short-rotation preset (CA 2h30m, leaves 2h) for testing.
    #[arg(long)]
    short_rotation: bool,
    /// CA lifetime (e.g. 790d, 2h30m).
    #[arg(long, value_parser = parse_duration)]
    ca_lifetime: Option<Duration>,
    /// Rotate the CA when less than this validity remains (default 183d, "6 months").
    #[arg(long, value_parser = parse_duration)]
    rotation_threshold: Option<Duration>,
    /// Minimum validity of the previous CA's trust bridge after a rotation.
    #[arg(long, value_parser = parse_duration)]
    trust_bridge_min: Option<Duration>,
    /// Serving certificate lifetime (default 730d).
    #[arg(long, value_parser = parse_duration)]
    leaf_lifetime: Option<Duration>,
    /// Re-issue serving certificates when less than this remains (default 30d, minimum 1h).
    #[arg(long, value_parser = parse_duration)]
    renew_before: Option<Duration>,
    /// Key algorithm of the CA (rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384).
    #[arg(long)]
    ca_key_algorithm: Option<KeyAlgorithm>,
    /// Key algorithm of serving certificates.
    #[arg(long)]
    leaf_key_algorithm: Option<KeyAlgorithm>,
    /// Cluster DNS domain used in SANs.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Serving chain order: portable [leaf, intermediate, CA] or upstream [leaf, CA, intermediate].
    #[arg(long, value_enum, default_value_t = ChainOrderArg::Portable)]
    chain_order: ChainOrderArg,
    /// Concurrent reconciles per controller.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Only manage Services and ConfigMaps in this namespace (default: the whole cluster).
    #[arg(long)]
    watch_namespace: Option<String>,
    /// Do not inject into APIServices, CRDs and webhook configurations.
    #[arg(long)]
    no_cluster_scoped_injection: bool,
    /// Run the legacy ("vulnerable") injector for ConfigMaps named openshift-service-ca.crt.
    #[arg(long)]
    legacy_injector: bool,
    /// CA file the legacy injector appends to the bundle.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    legacy_ca_file: PathBuf,
    /// Identity in the leader-election Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of the leader-election Lease (in --namespace).
    #[arg(long, default_value = service_ca_controller::names::DEFAULT_LEASE)]
    lease_name: String,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:9443")]
    admin_addr: std::net::SocketAddr,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChainOrderArg {
    Portable,
    Upstream,
}

/// Parses `90d`, `12h`, `30m`, `45s` and combinations such as `2h30m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("unknown unit {c:?} in {s:?} (use d, h, m, s)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("missing number before {c:?} in {s:?}"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too large"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("{s:?} needs a unit (d, h, m, s)"));
    }
    if total == 0 {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(Duration::from_secs(total))
}

impl RunArgs {
    fn to_config(&self) -> anyhow::Result<Config> {
        let mut cfg = if self.short_rotation {
            Config::short_rotation()
        } else {
            Config::default()
        };
        cfg.namespace = self.namespace.clone();
        cfg.ca_secret = self.ca_secret.clone();
        cfg.bundle_configmap = self.bundle_configmap.clone();
        if let Some(target) = &self.publish_bundle_to {
            let (ns, name) = target
                .split_once('/')
                .context("--publish-bundle-to must be NAMESPACE/NAME")?;
            cfg.publish_bundle_to = Some((ns.into(), name.into()));
        }
        if let Some(v) = self.ca_lifetime {
            cfg.ca.lifetime = v;
        }
        if let Some(v) = self.rotation_threshold {
            cfg.ca.rotation_threshold = v;
        }
        if let Some(v) = self.trust_bridge_min {
            cfg.ca.trust_bridge_min = v;
        }
        if let Some(v) = self.leaf_lifetime {
            cfg.leaf_lifetime = v;
        }
        if let Some(v) = self.renew_before {
            cfg.renew_before = v;
        }
        if let Some(v) = self.ca_key_algorithm {
            cfg.ca.key_algorithm = v;
        }
        if let Some(v) = self.leaf_key_algorithm {
            cfg.leaf_key_algorithm = v;
        }
        cfg.cluster_domain = self.cluster_domain.clone();
        cfg.chain_order = match self.chain_order {
            ChainOrderArg::Portable => ChainOrder::Portable,
            ChainOrderArg::Upstream => ChainOrder::Upstream,
        };
        cfg.concurrency = self.concurrency;
        cfg.watch_namespace = self.watch_namespace.clone();
        cfg.cluster_scoped_injection = !self.no_cluster_scoped_injection;
        cfg.legacy_injector = self.legacy_injector;
        cfg.legacy_ca_file = Some(self.legacy_ca_file.clone());
        cfg.validate()?;
        Ok(cfg)
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
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        info!("shutting down");
    };
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run(args) => run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("790d"), Ok(Duration::from_secs(790 * 86400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
