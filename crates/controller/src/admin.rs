//! Admin endpoints, on two listeners (docs: README "Operating", deploy/base):
//!
//! - **probes**, plain HTTP on `--admin-addr`: `/healthz`, `/livez` (alive) and `/readyz` (ready),
//!   for the kubelet. Nothing else is served there.
//! - **metrics**, HTTPS on `--metrics-addr`: `/metrics` (Prometheus), for a bearer token the API
//!   server authenticates (TokenReview) and authorizes for `get` on the non-resource URL
//!   `/metrics` (SubjectAccessReview), as kube-rbac-proxy and the original's delegated
//!   authorization do (`auth.rs`). The serving certificate is read from files, in a cluster the
//!   Service's own serving Secret issued by service-ca (`tls.rs`); the port is not opened until a
//!   certificate has been loaded.
//!
//! Both listeners share the hardening in `listen.rs`: dual-stack bind, a connection cap, a header
//! read timeout and a deadline for the whole connection (one request per connection).

mod auth;
mod listen;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::MetricsOptions;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What the probe endpoints report on.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// Readiness: a follower standing by, or a leader with synced caches and a usable CA.
    pub(crate) readiness: Arc<Readiness>,
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.readiness.stopped_controller() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(controller) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("controller {controller} stopped unexpectedly"),
        ),
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The probe router: plain HTTP, no `/metrics`.
fn probe_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the probe endpoints on `addr` until `shutdown` is cancelled; a bind failure is logged
/// (the process keeps running its controllers; the kubelet's probes will report it).
pub(crate) async fn serve(addr: SocketAddr, state: AdminState, shutdown: CancellationToken) {
    let listener = match listen::bind(addr) {
        Ok(listener) => listener,
        Err(err) => {
            error!(error = %err, %addr, "probe server failed to bind");
            return;
        }
    };
    info!(addr = %listen::local_addr(&listener), "serving /healthz, /livez, /readyz (HTTP)");
    listen::serve(listener, None, probe_router(state), shutdown).await;
}

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<Metrics>,
    authorizer: Arc<auth::Authorizer>,
}

/// `/metrics`, for a caller the API server authenticates and authorizes.
async fn metrics(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    let Some(token) = auth::bearer_token(&headers) else {
        return unauthorized();
    };
    match state.authorizer.review(token).await {
        auth::Verdict::Allowed => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.encode(),
        )
            .into_response(),
        auth::Verdict::Unauthenticated => unauthorized(),
        auth::Verdict::Denied { user } => (
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={user}, verb=get, nonResourceURL={})\n",
                auth::METRICS_PATH
            ),
        )
            .into_response(),
        auth::Verdict::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "authentication or authorization is unavailable, retry later\n",
        )
            .into_response(),
    }
}

/// 401 with the challenge of RFC 6750.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="service-ca""#),
        )],
        "Unauthorized\n",
    )
        .into_response()
}

/// Serves `/metrics` over HTTPS until `shutdown` is cancelled. The certificate and key are read
/// from `opts`' files, re-read when they change; the port is opened only once a valid pair has been
/// loaded (until then nothing listens: a scraper sees a refused connection, not an unverifiable
/// certificate). A bind failure is logged and ends the metrics server only.
pub(crate) async fn serve_metrics(
    opts: MetricsOptions,
    client: Client,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let certificate = Arc::new(tls::Certificate::new(
        opts.cert_file.clone(),
        opts.key_file.clone(),
    ));
    let reloading = shutdown
        .clone()
        .run_until_cancelled_owned(certificate.clone().reload_forever());
    let serving = async {
        if shutdown
            .run_until_cancelled(certificate.loaded())
            .await
            .is_none()
        {
            return;
        }
        let listener = match listen::bind(opts.addr) {
            Ok(listener) => listener,
            Err(err) => {
                error!(error = %err, addr = %opts.addr, "metrics server failed to bind");
                return;
            }
        };
        info!(addr = %listen::local_addr(&listener), "serving /metrics (HTTPS, TokenReview + SubjectAccessReview)");
        let state = MetricsState {
            metrics,
            authorizer: Arc::new(auth::Authorizer::new(client)),
        };
        let router = Router::new()
            .route(auth::METRICS_PATH, get(self::metrics))
            .with_state(state);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(certificate.clone()));
        listen::serve(listener, Some(acceptor), router, shutdown.clone()).await;
    };
    tokio::join!(reloading, serving);
}
