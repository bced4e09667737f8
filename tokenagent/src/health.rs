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
use crate::proxy::metrics::ProxyMetrics;

/// What the health server reports on.
#[derive(Clone)]
pub struct Health {
    pub status: Arc<Status>,
    pub proxy: Option<Arc<ProxyMetrics>>,
}

/// The health router.
pub fn router(state: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let now = SystemTime::now();
    let lines: Vec<String> = h
        .status
        .dbs
        .iter()
        .map(|d| match d.token_life(now) {
            Some(l) => format!("database {}: token valid for {}s", d.name, l.as_secs()),
            None => format!("database {}: no token written yet", d.name),
        })
        .collect();
    // The first line is about the database with the least life left.
    let (code, head) = match h.status.least_life(now) {
        Some((_, Some(l))) if h.status.ready(now) => (
            StatusCode::OK,
            format!("ready: token valid for {}s", l.as_secs()),
        ),
        Some((db, Some(l))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: token valid for only {}s (database {db})",
                l.as_secs()
            ),
        ),
        Some((db, None)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: no token written yet (database {db})"),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no database".to_owned(),
        ),
    };
    (code, format!("{head}\n{}\n", lines.join("\n")))
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let mut text = h.status.render_metrics();
    if let Some(p) = &h.proxy {
        text.push_str(&p.render());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Serves on a bound listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
