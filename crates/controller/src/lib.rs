//! service-ca controllers: the CA manager, the serving-certificate controller and the CA bundle
//! injectors, wired together by [`start`] (one set of controllers) and [`run`] (a replica with
//! leader election and the admin server).
//!
//! Data flow (docs/architecture.md): the CA manager owns the CA Secret and publishes the current
//! CA on a watch channel; every controller reads the CA from that channel and re-enqueues its
//! objects when it changes. Every task runs under a [`CancellationToken`]: one root token per
//! process and a child token per leadership term, so a deposed leader's controllers stop by
//! construction.

#![warn(unreachable_pub, missing_docs)]

mod admin;
mod ca;
mod config;
mod events;
mod fights;
#[doc(hidden)]
pub mod fuzzing;
mod inject;
mod leader;
mod metrics;
pub mod names;
mod plumbing;
mod readiness;
mod restart;
mod serving;
mod warm;

use std::sync::Arc;

use futures::FutureExt;
use kube::Client;
use service_ca_pki::KeyPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use ca::CaReceiver;
pub use config::{Config, ConfigError, DEFAULT_LEGACY_CA_FILE, RestartPace};
pub use leader::LeaseTiming;
pub use metrics::Metrics;
use readiness::CacheSync;
pub use restart::material;

/// The controllers of one leadership term (or of a test), running until [`Running::stop`] or
/// until their token is cancelled.
pub struct Running {
    token: CancellationToken,
    /// Dropping `Running` (or the future holding it) stops its controllers too.
    _cancel_on_drop: tokio_util::sync::DropGuard,
    tasks: TaskTracker,
    /// Metrics of this process.
    pub metrics: Arc<Metrics>,
    /// The current CA, as the controllers see it.
    pub ca: CaReceiver,
    caches: CacheSync,
}

impl Running {
    /// Cancels every controller of this term and waits until they have stopped.
    pub async fn stop(self) {
        self.token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Waits until the caches are synced and a usable CA is loaded: what readiness means.
    pub async fn wait_ready(&self) {
        let mut ca = self.ca.clone();
        let _ = ca.wait_for(Option::is_some).await;
        self.caches.wait().await;
    }
}

/// Validates `cfg` and starts the watches, the CA manager and every controller on the current
/// runtime, under a token of their own (for tests and embedding; a replica uses [`run`]).
pub fn start(client: Client, cfg: Config) -> Result<Running, ConfigError> {
    let metrics = Arc::new(Metrics::new());
    let token = CancellationToken::new();
    let health = Arc::new(readiness::Readiness::new(metrics.clone()));
    let root = readiness::Supervisor::new(TaskTracker::new(), token.clone(), health.clone());
    let watches = Watches::start(&client, &cfg, &metrics, &root)?;
    let term = Term {
        token,
        leadership: leader::Leadership::always(),
    };
    start_term(client, cfg, metrics, term, health, &watches)
}

/// The watches every replica keeps current whether it leads or not, so that a new leader starts
/// from warm caches (docs/reliability.md).
struct Watches {
    serving: Arc<serving::ServingWatches>,
    inject: inject::InjectWatches,
    restart: restart::RestartWatches,
    caches: CacheSync,
}

impl Watches {
    /// Validates `cfg` and starts every watch under `root` (the process's supervisor).
    fn start(
        client: &Client,
        cfg: &Config,
        metrics: &Arc<Metrics>,
        root: &readiness::Supervisor,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let legacy = inject::Flavor::legacy_from_config(cfg)?;
        let caches = CacheSync::default();
        // One metadata-only Secret watch serves both the serving controller and Secret injection.
        let (secret_tee, secret_feed) = inject::secret_tee();
        Ok(Self {
            serving: Arc::new(serving::ServingWatches::start(
                client,
                cfg,
                metrics.clone(),
                &caches,
                root,
                secret_tee,
            )),
            inject: inject::InjectWatches::start(client, cfg, legacy, secret_feed, &caches, root),
            restart: restart::RestartWatches::start(client, cfg, &caches, root),
            caches,
        })
    }
}

/// One leadership term: its token (cancelling it stops every controller of the term) and the
/// leadership every write of the term is checked against right before it is sent.
struct Term {
    token: CancellationToken,
    leadership: leader::Leadership,
}

/// Starts the CA manager and every controller of one term, over the process's warm `watches`.
/// The controllers get a client whose writes are gated by the term's leadership.
fn start_term(
    client: Client,
    cfg: Config,
    metrics: Arc<Metrics>,
    Term { token, leadership }: Term,
    health: Arc<readiness::Readiness>,
    watches: &Watches,
) -> Result<Running, ConfigError> {
    cfg.validate()?;
    let client = leadership.gate(client);
    let cfg = Arc::new(cfg);
    let events = events::EventSink::new(client.clone());
    let (ca_tx, ca_rx) = watch::channel(None);
    let keys = Arc::new(KeyPool::new(
        cfg.leaf_key_algorithm,
        cfg.key_pool_size,
        cfg.key_pool_threads,
    ));
    let tasks = TaskTracker::new();
    let supervisor = readiness::Supervisor::new(tasks.clone(), token.clone(), health);

    supervisor.spawn(
        "ca",
        token
            .clone()
            .run_until_cancelled_owned(ca::run(
                client.clone(),
                cfg.clone(),
                ca_tx,
                events.clone(),
                metrics.clone(),
            ))
            .map(|_| ()),
    );
    let serving_ctx = serving::ServingContext::new(
        client.clone(),
        cfg.clone(),
        ca_rx.clone(),
        keys,
        events.clone(),
        metrics.clone(),
    );
    let serving_watches = watches.serving.clone();
    let serving_token = token.clone();
    supervisor.spawn("serving", async move {
        serving::run(serving_ctx, &serving_watches, serving_token).await
    });
    let restart_ctx =
        restart::RestartContext::new(client.clone(), &cfg, events.clone(), metrics.clone());
    watches.restart.start_term(&supervisor, &restart_ctx);
    let inject_ctx = Arc::new(inject::InjectContext::new(
        client,
        ca_rx.clone(),
        events,
        metrics.clone(),
    ));
    watches.inject.start_term(&supervisor, &inject_ctx);

    Ok(Running {
        _cancel_on_drop: token.clone().drop_guard(),
        token,
        tasks,
        metrics,
        ca: ca_rx,
        caches: watches.caches.clone(),
    })
}

/// How a production process runs: identity and Lease for leader election, admin address.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// This replica's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// Lease timing.
    pub lease_timing: LeaseTiming,
    /// Where to serve /healthz, /livez and /readyz, plain HTTP for the kubelet (None: no probe
    /// server).
    pub admin_addr: Option<std::net::SocketAddr>,
    /// The HTTPS `/metrics` endpoint (None: metrics are not served; [`Metrics`] can still be read
    /// in-process).
    pub metrics: Option<MetricsOptions>,
}

/// The HTTPS `/metrics` endpoint: callers present a bearer token that the API server authenticates
/// (TokenReview) and authorizes for `get` on the non-resource URL `/metrics`
/// (SubjectAccessReview). The port opens once `cert_file` and `key_file` hold a valid pair; they
/// are re-read when they change (in a cluster: the mounted serving Secret of the metrics Service,
/// issued by service-ca itself).
#[derive(Clone, Debug)]
pub struct MetricsOptions {
    /// Where to listen (an unspecified address listens on IPv4 and IPv6).
    pub addr: std::net::SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC 1).
    pub key_file: std::path::PathBuf,
}

/// Runs one replica until `shutdown` is cancelled: the admin server, leader election, and the
/// controllers for each leadership term. A follower is ready (standing by); a leader is ready
/// once it has a usable CA and synced caches.
pub async fn run(
    client: Client,
    cfg: Config,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), ConfigError> {
    cfg.validate()?;
    // Everything below runs under `root`, which is cancelled when this future ends or is dropped
    // (an aborted task must not leave controllers running).
    let root = shutdown.child_token();
    let _cancel_on_drop = root.clone().drop_guard();
    let shutdown = root;
    let readiness = Arc::new(readiness::Readiness::new(metrics.clone()));
    let background = TaskTracker::new();
    if let Some(addr) = opts.admin_addr {
        let state = admin::AdminState {
            readiness: readiness.clone(),
        };
        background.spawn(admin::serve(addr, state, shutdown.clone()));
    }
    if let Some(metrics_opts) = opts.metrics.clone() {
        background.spawn(admin::serve_metrics(
            metrics_opts,
            client.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    background.spawn(
        shutdown
            .clone()
            .run_until_cancelled_owned(ca::observe_expiry(
                client.clone(),
                cfg.clone(),
                metrics.clone(),
            )),
    );
    // Watches run for the life of the process, leader or not: a follower's caches are warm.
    let root = readiness::Supervisor::new(background.clone(), shutdown.clone(), readiness.clone());
    let watches = Watches::start(&client, &cfg, &metrics, &root)?;
    let elector = leader::Elector::new(client.clone(), &opts);
    let (terms_tx, mut terms) = watch::channel(None);
    let leadership = leader::Leadership::elected();
    background.spawn(
        elector
            .clone()
            .run(terms_tx, leadership.clone(), shutdown.clone()),
    );
    let result = loop {
        // Follower: standing by is a healthy, ready state.
        metrics.set_leader(false);
        readiness.set(true);
        let term = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            term = terms.wait_for(Option::is_some) => match term {
                Ok(term) => term.clone().unwrap_or_default(),
                Err(_) => break Ok(()),
            },
        };
        metrics.set_leader(true);
        readiness.set(false);
        let running = match start_term(
            client.clone(),
            cfg.clone(),
            metrics.clone(),
            Term {
                token: term.clone(),
                leadership: leadership.clone(),
            },
            readiness.clone(),
            &watches,
        ) {
            Ok(running) => running,
            Err(err) => break Err(err),
        };
        tokio::select! {
            _ = running.wait_ready() => readiness.set(true),
            _ = term.cancelled() => {}
        }
        // The elector cancels the term when leadership is lost; shutdown cancels it as its parent.
        term.cancelled().await;
        running.stop().await;
        if shutdown.is_cancelled() {
            elector.release().await;
            break Ok(());
        }
        tracing::warn!("leadership lost; controllers stopped, standing by");
    };
    shutdown.cancel();
    background.close();
    background.wait().await;
    result
}
