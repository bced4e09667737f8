//! HTTPS router (`/mutate`, `/healthz`, `/readyz`), the plain-HTTP metrics
//! router, and `run`, which serves both until the shutdown future completes.

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::{AgentConfig, ConfigError};
use crate::metrics::{self, Metrics};
use crate::review::{self, ReviewResult};
use crate::tls::{self, CertWatcher, TlsError};

/// The API server never sends more than 3 MiB.
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub agent: Arc<AgentConfig>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(agent: AgentConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            agent: Arc::new(agent),
            metrics,
            ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// The HTTPS endpoints. TLS is added by the server, so tests can call this
/// router in process.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// `GET /metrics`, plain HTTP.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    )
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

fn error_body(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({ "error": message, "code": status.as_u16() });
    (status, axum::Json(body)).into_response()
}

async fn mutate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let start = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            state
                .metrics
                .observe_review(ReviewResult::Invalid, start.elapsed());
            tracing::warn!(result = "invalid", error = %rejection.body_text(), "unreadable admission request");
            return error_body(rejection.status(), rejection.body_text());
        }
    };
    let answer = review::review(&body, &state.agent)
        .and_then(|reviewed| review::to_json(&reviewed).map(|json| (reviewed, json)));
    match answer {
        Ok((r, json)) => {
            let elapsed = start.elapsed();
            state.metrics.observe_review(r.result, elapsed);
            tracing::info!(
                uid = %r.uid,
                namespace = %r.namespace,
                pod = %r.pod,
                result = r.result.as_str(),
                dry_run = r.dry_run,
                detail = %r.detail,
                elapsed_us = elapsed.as_micros() as u64,
                "admission review"
            );
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Err(e) => {
            state
                .metrics
                .observe_review(ReviewResult::Invalid, start.elapsed());
            tracing::warn!(result = "invalid", error = %e, "unreadable admission request");
            error_body(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// Settings of `serve` besides the listeners.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub agent: AgentConfig,
    /// How long SIGTERM waits for in-flight reviews.
    pub drain_timeout: Duration,
    /// Quiet time after certificate file events before reloading.
    pub reload_debounce: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves HTTPS on `https` and metrics on `metrics` until `shutdown`
/// completes, then stops accepting, lets in-flight reviews finish (up to the
/// drain timeout) and returns.
pub async fn run(
    https: std::net::TcpListener,
    metrics_listener: std::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServeOptions {
        tls_cert,
        tls_key,
        agent,
        drain_timeout,
        reload_debounce,
    } = opts;
    agent.validate()?;
    tls::install_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let loaded = tls::load_pair(&tls_cert, &tls_key)?;
    tls::report_expiry(&loaded, &metrics);
    let rustls = RustlsConfig::from_config(loaded.config.clone());
    let _watcher = CertWatcher::start(
        tls_cert,
        tls_key,
        rustls.clone(),
        loaded,
        metrics.clone(),
        reload_debounce,
    )?;

    let state = AppState::new(agent, metrics.clone());
    let ready = state.ready.clone();
    let handle = axum_server::Handle::new();
    https.set_nonblocking(true)?;
    let https_addr = https.local_addr()?;
    // TCP_NODELAY: a response leaves as soon as it is written, instead of
    // waiting for the API server's delayed ACK of the previous segment.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    let server = axum_server::from_tcp(https)?
        .acceptor(acceptor)
        .handle(handle.clone())
        .serve(router(state).into_make_service());
    let mut server = tokio::spawn(server);

    metrics_listener.set_nonblocking(true)?;
    let metrics_addr = metrics_listener.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::from_std(metrics_listener)?;
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(
        axum::serve(metrics_listener, metrics_router(metrics))
            .with_graceful_shutdown(async {
                let _ = metrics_stopped.await;
            })
            .into_future(),
    );

    // The graceful-shutdown signal is only seen once the server listens.
    handle.listening().await;
    tracing::info!(%https_addr, %metrics_addr, "rds-iam-webhook serving");

    tokio::select! {
        () = shutdown => {
            tracing::info!(drain_timeout_s = drain_timeout.as_secs(), "shutdown requested: draining in-flight reviews");
            ready.store(false, Ordering::Relaxed);
            handle.graceful_shutdown(Some(drain_timeout));
            match server.await {
                Ok(res) => res?,
                Err(e) => tracing::error!(error = %e, "server task failed"),
            }
        }
        res = &mut server => {
            let _ = stop_metrics.send(());
            return match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(std::io::Error::other(e.to_string()).into()),
            };
        }
    }
    let _ = stop_metrics.send(());
    let _ = metrics_server.await;
    tracing::info!("rds-iam-webhook stopped");
    Ok(())
}
