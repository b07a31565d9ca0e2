//! The HTTP endpoints: `/healthz`, `/readyz`, `/status`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::Shared;

/// The paths served, for probes and tests (Kubernetes manifests are checked against it).
pub const ROUTES: [&str; 4] = ["/healthz", "/readyz", "/status", "/metrics"];

/// The Prometheus text exposition content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Alive: the loop answers. Deliberately independent of entry health, so a broken entry or
/// manifest never gets the pod restarted (a restart would not fix it).
async fn healthz() -> Response {
    axum::Json(serde_json::json!({"alive": true})).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let r = shared.readiness();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(r)).into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.status()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        shared.metrics_text(),
    )
        .into_response()
}
