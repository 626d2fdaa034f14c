//! What the operator subcommands (`status`, `inspect`, `rotate`, `renew`, `issue`) share: the
//! kubectl-like connection flags, the scope, `NS/NAME` references, API error messages that say
//! what to do, output formats, colours, confirmation prompts, time formatting and exit codes.
//!
//! Exit codes: 0 all is well, 1 something needs attention, 2 usage or connection error.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::Serialize;
use service_ca_controller::names;
use time::OffsetDateTime;

/// How to reach the cluster and where the CA lives: the flags every cluster subcommand takes.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of the Services, Secrets and ConfigMaps to look at (default: the context's).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Look at every namespace (and at cluster-scoped injection targets).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Namespace of the CA Secret, the bundle ConfigMap and the Lease.
    #[arg(long, default_value = names::DEFAULT_NAMESPACE)]
    pub ca_namespace: String,
    /// Name of the CA Secret.
    #[arg(long, default_value = names::DEFAULT_CA_SECRET)]
    pub ca_secret: String,
    /// Name of the bundle ConfigMap (in the CA namespace).
    #[arg(long, default_value = names::DEFAULT_BUNDLE_CONFIGMAP)]
    pub bundle_configmap: String,
}

/// A connected client and the namespace the kubeconfig context defaults to.
pub struct Cluster {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// `-A` was given.
    pub all_namespaces: bool,
}

/// Which namespaces a subcommand looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One namespace.
    Namespace(String),
    /// Every namespace (`-A`).
    All,
}

impl Scope {
    /// A namespaced API over the scope.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self {
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
            Scope::All => Api::all(client.clone()),
        }
    }
}

impl Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
            Scope::All => f.write_str("all namespaces"),
        }
    }
}

impl ClusterArgs {
    /// Loads the kubeconfig (or in-cluster configuration) and checks the API server answers.
    pub async fn connect(&self) -> anyhow::Result<Cluster> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let mut config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path).with_context(|| {
                    format!(
                        "cannot read kubeconfig {}: check the path given to --kubeconfig",
                        path.display()
                    )
                })?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .with_context(|| {
                        format!(
                            "kubeconfig {} is not usable{}: check its current context, cluster and user",
                            path.display(),
                            context_note(&self.context)
                        )
                    })?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| {
                    format!(
                        "the kubeconfig ($KUBECONFIG or ~/.kube/config) is not usable{}",
                        context_note(&self.context)
                    )
                })?,
            (None, None) => kube::Config::infer().await.context(
                "no Kubernetes configuration found: pass --kubeconfig, set $KUBECONFIG, or run in a pod",
            )?,
        };
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        let server = config.cluster_url.to_string();
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .with_context(|| format!("cannot build a client for the API server {server}"))?;
        client.apiserver_version().await.with_context(|| {
            format!(
                "cannot reach the Kubernetes API server at {server}: check --kubeconfig/--context and that the cluster is up"
            )
        })?;
        Ok(Cluster {
            client,
            namespace,
            all_namespaces: self.all_namespaces,
        })
    }

    /// The CA Secret's API.
    pub fn ca_secrets(&self, cluster: &Cluster) -> Api<Secret> {
        Api::namespaced(cluster.client.clone(), &self.ca_namespace)
    }

    /// `<ca-namespace>/<ca-secret>`.
    pub fn ca_secret_ref(&self) -> String {
        format!("{}/{}", self.ca_namespace, self.ca_secret)
    }

    /// `<ca-namespace>/<bundle-configmap>`.
    pub fn bundle_ref(&self) -> String {
        format!("{}/{}", self.ca_namespace, self.bundle_configmap)
    }
}

fn context_note(context: &Option<String>) -> String {
    context
        .as_ref()
        .map(|c| format!(" with context {c:?}"))
        .unwrap_or_default()
}

impl Cluster {
    /// `-A`: every namespace; otherwise `-n` or the context's namespace.
    pub fn scope(&self) -> Scope {
        if self.all_namespaces {
            Scope::All
        } else {
            Scope::Namespace(self.namespace.clone())
        }
    }

    /// Splits `NS/NAME`, or takes `NAME` in the namespace of `-n` / the context.
    pub fn object_ref(&self, text: &str, kind: &str) -> anyhow::Result<(String, String)> {
        parse_ref(text, &self.namespace, kind)
    }
}

/// Splits `NS/NAME`, or takes `NAME` in `default_ns`.
pub fn parse_ref(text: &str, default_ns: &str, kind: &str) -> anyhow::Result<(String, String)> {
    let (ns, name) = match text.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (default_ns, text),
    };
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        return Err(UsageError(format!(
            "{text:?} is not a {kind} reference: write NAMESPACE/NAME, or NAME with -n NAMESPACE"
        ))
        .into());
    }
    Ok((ns.to_string(), name.to_string()))
}

/// A mistake in how the command was called: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The command ran, but what it found or waited for needs attention: exit code 1.
#[derive(Debug)]
pub struct NeedsAttention(pub String);

impl Display for NeedsAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NeedsAttention {}

/// How a subcommand that ran to its end went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All is well: exit code 0.
    Ok,
    /// Something needs attention: exit code 1.
    Attention,
}

/// Prints the error (context first, then each cause) and exits with the subcommand's code.
pub fn finish(result: anyhow::Result<Outcome>) -> ! {
    let code = match result {
        Ok(Outcome::Ok) => 0,
        Ok(Outcome::Attention) => 1,
        Err(err) => {
            let _ = std::io::stdout().flush();
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {err}");
            for cause in err.chain().skip(1) {
                let _ = writeln!(stderr, "  caused by: {cause}");
            }
            if err.downcast_ref::<NeedsAttention>().is_some() {
                1
            } else {
                2
            }
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Wraps a Kubernetes API error with the object, what went wrong and what to do.
///
/// `verb` is the API verb (`get`, `list`, `patch`), `resource` its plural (`secrets`), `object`
/// how to name it (`Secret ns/name`, `Services in namespace x`), `namespace` where (None:
/// cluster-scoped or every namespace).
pub fn api_error(
    err: kube::Error,
    verb: &str,
    resource: &str,
    object: &str,
    namespace: Option<&str>,
) -> anyhow::Error {
    let place = match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "cluster-wide".to_string(),
    };
    let message = match &err {
        kube::Error::Api(status) if status.code == 403 => format!(
            "cannot {verb} {object}: forbidden; your user needs `{verb}` on {resource} {place} (the controller's ClusterRole `service-ca` has it)"
        ),
        kube::Error::Api(status) if status.code == 404 => {
            format!("cannot {verb} {object}: not found; check the name and the namespace")
        }
        kube::Error::Api(status) if status.code == 401 => format!(
            "cannot {verb} {object}: unauthorized; the kubeconfig's credentials were refused (expired token?)"
        ),
        kube::Error::Api(status) if status.code == 409 => {
            format!("cannot {verb} {object}: it changed while being written; run the command again")
        }
        _ => format!("cannot {verb} {object}: the API server did not answer as expected"),
    };
    anyhow::Error::new(err).context(message)
}

/// HTTP status of an API error, if it is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A short one-line reason for an optional read that failed (shown as a note, not fatal).
pub fn short_reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if status.code == 403 => "forbidden".into(),
        kube::Error::Api(status) if status.code == 404 => "not found".into(),
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

/// Output format of the reporting subcommands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    #[default]
    #[value(alias = "text")]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Prints `value` as JSON or YAML (for `Output::Table`, the caller prints its own text).
pub fn print_structured<T: Serialize>(value: &T, output: Output) -> anyhow::Result<()> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        Output::Yaml => serde_saphyr::to_string(value)?,
        Output::Table => return Ok(()),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    Ok(())
}

/// ANSI colours, only when stdout is a terminal (and `NO_COLOR` is unset).
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Colours when stdout is a terminal.
    pub fn stdout() -> Self {
        Self {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Green.
    pub fn good(&self, text: &str) -> String {
        self.wrap("32", text)
    }

    /// Yellow.
    pub fn warn(&self, text: &str) -> String {
        self.wrap("33", text)
    }

    /// Red.
    pub fn bad(&self, text: &str) -> String {
        self.wrap("31", text)
    }

    /// Bold.
    pub fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }
}

/// Asks `question` on a terminal (`[y/N]`); without `--yes`, refuses when stdin is not a terminal.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "refusing to proceed without confirmation: stdin is not a terminal; pass --yes".into(),
        )
        .into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer from the terminal")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

pub use service_ca_pki::rfc3339;

/// A rough human duration: `729d`, `5d 3h`, `3h 20m`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60);
    if days >= 10 || (days > 0 && hours == 0) {
        format!("{days}d")
    } else if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{s}s")
    }
}

/// `in 729d` / `3d ago` relative to `now`.
pub fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let delta = t - now;
    if delta.is_negative() {
        format!("{} ago", human((-delta).unsigned_abs()))
    } else {
        format!("in {}", human(delta.unsigned_abs()))
    }
}

/// Parses a duration flag (`30d`, `2h30m`), as `service-ca run` does.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    crate::settings::parse_duration(text)
}

/// The current time.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Whether an inject annotation asks for the bundle (`true`, any case).
pub fn wants_injection(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    accepts_alpha: bool,
) -> bool {
    let Some(a) = annotations else {
        return false;
    };
    let yes = |k: &str| {
        a.get(k)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    yes(names::INJECT_BETA) || (accepts_alpha && yes(names::INJECT_ALPHA))
}

/// The Secret name a Service requests (beta if non-empty, else alpha).
pub fn requested_secret(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<&str> {
    names::first_non_empty(
        annotations,
        &[names::SECRET_NAME_BETA, names::SECRET_NAME_ALPHA],
    )
}

/// An error for a missing required object, naming what to do.
pub fn missing(object: &str, hint: &str) -> anyhow::Error {
    anyhow!("{object} not found: {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert_eq!(
            parse_ref("a/b", "d", "Secret").unwrap(),
            ("a".to_string(), "b".to_string())
        );
        assert_eq!(
            parse_ref("b", "d", "Secret").unwrap(),
            ("d".to_string(), "b".to_string())
        );
        assert!(parse_ref("a/", "d", "Secret").is_err());
        assert!(parse_ref("a/b/c", "d", "Secret").is_err());
    }

    #[test]
    fn times() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(human(Duration::from_secs(729 * 86400 + 3600)), "729d");
        assert_eq!(human(Duration::from_secs(3 * 86400 + 7200)), "3d 2h");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 600)), "2h 10m");
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(
            relative(t, t + time::Duration::days(2)),
            "2d ago".to_string()
        );
    }
}
