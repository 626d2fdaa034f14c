//! service-ca controllers: the CA manager, the serving-certificate controller and the CA bundle
//! injectors, wired together by [`start`].
//!
//! Data flow: the CA manager owns the CA Secret and publishes the current CA on a watch channel;
//! every controller reads the CA from that channel and re-enqueues its objects when it changes.

pub mod admin;
pub mod ca;
pub mod config;
pub mod events;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod serving;
pub mod sync;

use std::sync::Arc;

use kube::Client;
use service_ca_pki::{KeyPool, SigningCa};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::{Config, ConfigError};
pub use metrics::Metrics;

/// The controllers of one process, running until [`Running::stop`].
pub struct Running {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Metrics of this process.
    pub metrics: Arc<Metrics>,
    /// The current CA, as the controllers see it.
    pub ca: ca::CaReceiver,
    /// Completes once every controller's cache has synced.
    pub caches: sync::CacheSync,
}

impl Running {
    /// Signals every controller to stop and waits until they have.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until the CA is loaded (or created).
    pub async fn wait_for_ca(&mut self) -> Option<Arc<SigningCa>> {
        self.ca.wait_for(Option::is_some).await.ok()?.clone()
    }

    /// Waits until the caches are synced and a usable CA is loaded: what readiness means.
    pub async fn wait_ready(&self) {
        let mut ca = self.ca.clone();
        let _ = ca.wait_for(Option::is_some).await;
        self.caches.wait().await;
    }
}

fn shutdown_signal(
    rx: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
    let mut rx = rx;
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Validates `cfg` and starts the CA manager and every controller on the current runtime.
pub fn start(client: Client, cfg: Config) -> Result<Running, ConfigError> {
    start_with_metrics(client, cfg, Arc::new(Metrics::new()))
}

/// Like [`start`], reporting into existing metrics (they outlive one leadership term).
pub fn start_with_metrics(
    client: Client,
    cfg: Config,
    metrics: Arc<Metrics>,
) -> Result<Running, ConfigError> {
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let events = events::EventSink::new(client.clone());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (ca_tx, ca_rx) = watch::channel(None);
    let keys = Arc::new(KeyPool::new(
        cfg.leaf_key_algorithm,
        cfg.key_pool_size,
        cfg.key_pool_threads,
    ));
    let mut tasks = JoinSet::new();
    let caches = sync::CacheSync::default();

    let ca_task = ca::run(
        client.clone(),
        cfg.clone(),
        ca_tx,
        events.clone(),
        metrics.clone(),
    );
    let stop = shutdown_signal(shutdown_rx.clone());
    tasks.spawn(async move {
        tokio::select! {
            _ = ca_task => {}
            _ = stop => {}
        }
    });

    let serving_ctx = Arc::new(serving::ServingContext::new(
        client.clone(),
        cfg.clone(),
        ca_rx.clone(),
        keys,
        events.clone(),
        metrics.clone(),
    ));
    tasks.spawn(serving::run(
        serving_ctx,
        caches.clone(),
        shutdown_signal(shutdown_rx.clone()),
    ));

    let inject_ctx = Arc::new(inject::InjectContext::new(
        client.clone(),
        ca_rx.clone(),
        events.clone(),
        metrics.clone(),
        caches.clone(),
    ));
    let legacy = match (cfg.legacy_injector, &cfg.legacy_ca_file) {
        (false, _) => None,
        (true, None) => {
            return Err(ConfigError::Invalid(
                "the legacy injector needs --legacy-ca-file".into(),
            ));
        }
        (true, Some(path)) => {
            let ca = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!("legacy CA file {}: {e}", path.display()))
            })?;
            Some(inject::Flavor::legacy(&ca))
        }
    };
    let rx = shutdown_rx.clone();
    inject::spawn_all(&mut tasks, inject_ctx, cfg.clone(), legacy, move || {
        Box::pin(shutdown_signal(rx.clone()))
    });

    Ok(Running {
        shutdown,
        tasks,
        metrics,
        ca: ca_rx,
        caches,
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
    pub lease_timing: leader::LeaseTiming,
    /// Where to serve /healthz, /readyz and /metrics (None: no admin server).
    pub admin_addr: Option<std::net::SocketAddr>,
}

/// Runs until `shutdown` resolves: leader election, and the controllers while leading. A
/// follower is ready (standing by); a leader is ready once it has a usable CA.
pub async fn run(
    client: Client,
    cfg: Config,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ConfigError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    cfg.validate()?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = JoinSet::new();
    if let Some(addr) = opts.admin_addr {
        let state = admin::AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        let stop = shutdown_signal(stop_rx.clone());
        background.spawn(async move {
            if let Err(err) = admin::serve(addr, state, stop, None).await {
                tracing::error!(error = %err, %addr, "admin server failed");
            }
        });
    }
    let (leading_tx, mut leading_rx) = watch::channel(false);
    background.spawn(leader::run(
        client.clone(),
        opts.lease_namespace.clone(),
        opts.lease_name.clone(),
        opts.identity.clone(),
        opts.lease_timing.clone(),
        leading_tx,
    ));
    tokio::pin!(shutdown);
    loop {
        // Follower: standing by is a healthy, ready state.
        ready.store(true, Ordering::Relaxed);
        metrics.set_leader(false);
        metrics.set_ready(true);
        tokio::select! {
            _ = &mut shutdown => break,
            changed = leading_rx.wait_for(|l| *l) => { if changed.is_err() { break; } }
        }
        metrics.set_leader(true);
        ready.store(false, Ordering::Relaxed);
        metrics.set_ready(false);
        let running = Arc::new(start_with_metrics(
            client.clone(),
            cfg.clone(),
            metrics.clone(),
        )?);
        let ready_flag = ready.clone();
        let ready_metrics = metrics.clone();
        let watched = running.clone();
        let readiness = tokio::spawn(async move {
            watched.wait_ready().await;
            ready_flag.store(true, Ordering::Relaxed);
            ready_metrics.set_ready(true);
        });
        let shutting_down = tokio::select! {
            _ = &mut shutdown => true,
            _ = leading_rx.wait_for(|l| !*l) => false,
        };
        readiness.abort();
        let _ = readiness.await;
        if let Ok(running) = Arc::try_unwrap(running) {
            running.stop().await;
        }
        if shutting_down {
            leader::release(
                client.clone(),
                &opts.lease_namespace,
                &opts.lease_name,
                &opts.identity,
            )
            .await;
            break;
        }
        tracing::warn!("leadership lost; controllers stopped, standing by");
    }
    let _ = stop_tx.send(true);
    background.abort_all();
    Ok(())
}

/// A one-line description of a Kubernetes client error: for API errors the server's message and
/// code (what the original writes into error annotations), not the whole Status structure.
pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}
