//! Wiring for the run modes, shared by `main` and the end-to-end tests.

use std::future::Future;
use std::time::SystemTime;

use crate::agent::{Agent, RefreshError};
use crate::config::AgentConfig;
use crate::creds::CredentialSource;

/// Builds the agent for `cfg` on the default credential chain.
pub async fn build_agent(cfg: &AgentConfig) -> Result<Agent, std::io::Error> {
    if !cfg.dir.exists() {
        std::fs::create_dir_all(&cfg.dir)?;
    }
    // Temporary files of a killed agent; never the real files.
    match crate::files::remove_stale_temps(&cfg.dir) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "removed temporary files left by a killed agent"
        ),
        Err(e) => {
            tracing::warn!(error = %e, dir = %cfg.dir.display(), "cannot clean up temporary files")
        }
    }
    let creds = CredentialSource::default_chain(&cfg.spec.region).await;
    Ok(Agent::new(cfg.spec.clone(), cfg.dir.clone(), creds))
}

/// `--once`: writes the files once. `shutdown` cancels it while it waits
/// for credentials, never during the write.
pub async fn once(
    agent: &Agent,
    shutdown: impl Future<Output = ()>,
) -> Result<SystemTime, RefreshError> {
    agent.refresh_once(shutdown).await.map(|r| r.expires_at)
}

/// The long-running agent, with the health server if configured.
pub async fn run(
    cfg: &AgentConfig,
    agent: Agent,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = cfg.health_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "health server listening");
        let status = agent.status();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::health::serve(listener, status, stop).await {
                tracing::error!(error = %e, "health server failed");
            }
        });
    }
    tracing::info!(
        host = %cfg.spec.host,
        port = cfg.spec.port,
        user = %cfg.spec.user,
        region = %cfg.spec.region,
        region_source = %cfg.region_source,
        dir = %cfg.dir.display(),
        interval = %humantime::format_duration(cfg.interval),
        "starting token agent"
    );
    agent.run(cfg.interval, shutdown).await;
    let _ = stop_tx.send(true);
    Ok(())
}

/// Listens for SIGTERM, SIGINT and SIGHUP from now on (so none of them
/// kills the process mid-write any more) and completes on the first.
/// SIGHUP ends the agent like SIGTERM, as its default action would, but
/// cleanly and with a log line: there is no configuration to reload.
/// Must be called inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::SignalKind;
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    let mut int = listen(SignalKind::interrupt(), "SIGINT");
    let mut hup = listen(SignalKind::hangup(), "SIGHUP");
    async move {
        let name = tokio::select! {
            () = recv(&mut term) => "SIGTERM",
            () = recv(&mut int) => "SIGINT",
            () = recv(&mut hup) => "SIGHUP",
        };
        tracing::info!(signal = name, "received {name}");
    }
}

fn listen(
    kind: tokio::signal::unix::SignalKind,
    name: &str,
) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
        .inspect_err(|e| tracing::error!(error = %e, signal = name, "cannot listen for the signal"))
        .ok()
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
