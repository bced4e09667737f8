//! HTTPS router (`/mutate`, `/healthz`, `/readyz`), the plain-HTTP metrics
//! router, and `run`, which serves both until the shutdown future completes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;

use crate::budget::{self, BodyError, ByteBudget};
use crate::config::{AgentConfig, ConfigError};
use crate::limits::{self, LimitError, Limits, METRICS_MAX_CONNECTIONS};
use crate::listener::Listener;
use crate::metrics::{self, Metrics, Refused};
use crate::review::{self, ReviewResult};
use crate::tls::{self, CertWatcher, TlsError};

pub use crate::budget::BODY_LIMIT;

/// How long the metrics listener gets to close once the HTTPS one is drained.
const METRICS_DRAIN: Duration = Duration::from_secs(1);

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub agent: Arc<AgentConfig>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Request bytes held in memory, across all connections.
    pub budget: Arc<ByteBudget>,
    pub body_timeout: Duration,
    /// Reviews past [`budget::SMALL_BODY`] are worked on one at a time:
    /// decoding and answering one takes up to about 20 times its size, so a
    /// few 3 MiB reviews at once, on a node with many cores, would pass the
    /// memory limit.
    pub big_reviews: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// With the default limits.
    pub fn new(agent: AgentConfig, metrics: Arc<Metrics>) -> Self {
        Self::with_limits(agent, metrics, &Limits::default())
    }

    pub fn with_limits(agent: AgentConfig, metrics: Arc<Metrics>, limits: &Limits) -> Self {
        Self {
            agent: Arc::new(agent),
            metrics,
            ready: Arc::new(AtomicBool::new(true)),
            budget: Arc::new(ByteBudget::new(limits.max_buffered_bytes)),
            body_timeout: limits.body_timeout,
            big_reviews: Arc::new(tokio::sync::Semaphore::new(1)),
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

/// Answers a body that was not read: 413 and 400 count as invalid reviews,
/// 408 and 503 as refused requests.
fn refuse(state: &AppState, e: BodyError) -> Response {
    match e {
        BodyError::TooLarge | BodyError::Read(_) => {
            state
                .metrics
                .observe_review(ReviewResult::Invalid, Duration::ZERO);
            tracing::warn!(result = "invalid", error = %e, "unreadable admission request");
        }
        BodyError::Timeout(_) => {
            state.metrics.request_refused(Refused::BodyTimeout);
            tracing::warn!(reason = "body_timeout", error = %e, "admission request refused");
        }
        BodyError::Busy(_) => {
            state.metrics.request_refused(Refused::Busy);
            tracing::warn!(reason = "busy", error = %e, "admission request refused");
        }
    }
    error_body(e.status(), e.to_string())
}

async fn mutate(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Held until the answer is built: the review's memory counts too.
    let received =
        match budget::read_body(&parts.headers, body, &state.budget, state.body_timeout).await {
            Ok(r) => r,
            Err(e) => return refuse(&state, e),
        };
    // The semaphore is never closed, so `acquire` only waits.
    let _one_big = if received.bytes.len() > budget::SMALL_BODY {
        state.big_reviews.acquire().await.ok()
    } else {
        None
    };
    let start = Instant::now();
    let answer = review::review(&received.bytes, &state.agent)
        .and_then(|reviewed| review::to_json(&reviewed).map(|json| (reviewed, json)));
    drop(received);
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
    /// Timeouts, connection cap and memory bound of both listeners.
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Limits(#[from] LimitError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The connection caps of the two listeners, fitted to the open-file limit.
fn connection_caps(max_connections: usize) -> (usize, usize) {
    let nofile = limits::fd_limit();
    let (https, metrics) =
        limits::fit_to_fd_limit(max_connections, METRICS_MAX_CONNECTIONS, nofile);
    if https < max_connections {
        tracing::warn!(
            max_connections,
            open_file_limit = nofile,
            serving = https,
            "--max-connections is more than the open-file limit allows, so fewer connections are served at once; raise the limit (the container runtime's nofile) or lower --max-connections"
        );
    }
    (https, metrics)
}

/// Serves HTTPS on `https` and metrics on `metrics` until `shutdown`
/// completes, then stops accepting, lets in-flight reviews finish (up to the
/// drain timeout), closes what is left and returns.
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
        limits,
    } = opts;
    agent.validate()?;
    limits.validate()?;
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

    let (https_cap, metrics_cap) = connection_caps(limits.max_connections);
    let state = AppState::with_limits(agent, metrics.clone(), &limits);
    let ready = state.ready.clone();
    https.set_nonblocking(true)?;
    let https_addr = https.local_addr()?;
    metrics_listener.set_nonblocking(true)?;
    let metrics_addr = metrics_listener.local_addr()?;
    let https = Listener {
        name: "https",
        tcp: tokio::net::TcpListener::from_std(https)?,
        tls: Some(rustls),
        router: router(state),
        max_connections: https_cap,
        limits,
        metrics: metrics.clone(),
    }
    .spawn();
    let metrics_server = Listener {
        name: "metrics",
        tcp: tokio::net::TcpListener::from_std(metrics_listener)?,
        tls: None,
        router: metrics_router(metrics.clone()),
        max_connections: metrics_cap,
        limits,
        metrics,
    }
    .spawn();
    tracing::info!(%https_addr, %metrics_addr, max_connections = https_cap, "rds-iam-webhook serving");

    shutdown.await;
    tracing::info!(
        drain_timeout_s = drain_timeout.as_secs(),
        "shutdown requested: draining in-flight reviews"
    );
    ready.store(false, Ordering::Relaxed);
    let cut = https.drain(drain_timeout).await;
    if cut > 0 {
        tracing::warn!(
            connections_cut = cut,
            drain_timeout_s = drain_timeout.as_secs(),
            "drain timeout reached: closed connections that were still busy"
        );
    }
    metrics_server.drain(METRICS_DRAIN).await;
    tracing::info!(connections_cut = cut, "rds-iam-webhook stopped");
    Ok(())
}
