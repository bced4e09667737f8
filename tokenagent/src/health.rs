//! `/healthz`, `/readyz` and `/metrics` over plain HTTP (opt-in with
//! `--health-addr`). Kubelet probes should prefer `rds-iam-tokenagent probe`
//! (exec), which needs no port in the pod's network namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::agent::Status;

/// The health router.
pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(status)
}

async fn readyz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let now = SystemTime::now();
    match status.token_life(now) {
        Some(life) if status.ready(now) => (
            StatusCode::OK,
            format!("ready: token valid for {}s\n", life.as_secs()),
        ),
        Some(life) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: token valid for only {}s\n", life.as_secs()),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no token written yet\n".to_owned(),
        ),
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        status.render_metrics(),
    )
}

/// Serves on a bound listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<Status>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(status))
        .with_graceful_shutdown(shutdown)
        .await
}
