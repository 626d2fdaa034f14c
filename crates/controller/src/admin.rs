//! Admin HTTP server on one port: `/healthz` (alive), `/readyz` (ready), `/metrics` (Prometheus).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What the admin endpoints report on.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// Metrics to expose.
    pub(crate) metrics: Arc<Metrics>,
    /// Readiness: a follower standing by, or a leader with synced caches and a usable CA.
    pub(crate) readiness: Arc<Readiness>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// The router, separate from the listener.
fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the admin endpoints on `addr` until `shutdown` is cancelled; a bind failure is logged
/// (the process keeps running its controllers; the kubelet's probes will report it).
pub(crate) async fn serve(addr: SocketAddr, state: AdminState, shutdown: CancellationToken) {
    let served = async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    };
    if let Err(err) = served.await {
        error!(error = %err, %addr, "admin server failed");
    }
}
