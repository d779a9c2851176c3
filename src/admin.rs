//! The admin HTTP server on :8080: `/metrics` (Prometheus), `/healthz` (liveness) and
//! `/readyz` (readiness). Shared by the controller and the dispatcher.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::telemetry::exposition::to_prometheus_text;

/// Reports readiness: `Ok(description)` or `Err(what is missing)`.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<&'static str, &'static str> + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    readiness: ReadinessCheck,
}

/// Serves the admin endpoints on `addr` until `stop` fires.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: ReadinessCheck,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AdminState { registry, readiness });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "Admin server listening.");
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
}

/// OpenMetrics for scrapers that ask for it (Prometheus does); the classic text format otherwise.
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let mut body = String::new();
    if encode(&mut body, &state.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], String::new());
    }
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            to_prometheus_text(&body),
        )
    }
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    match (state.readiness)() {
        Ok(what) => (StatusCode::OK, format!("ready: {what}\n")),
        Err(what) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {what}\n")),
    }
}
