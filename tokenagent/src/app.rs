//! Wiring for the run modes, shared by `main` and the end-to-end tests:
//! the agent on the default credential chain, the proxy's listeners for the
//! databases in proxy mode, the health server, and the signals.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rds_iam_common::{Endpoint, Mode};
use tokio::sync::watch;

use crate::agent::{self, Agent, Cancelled, CredGroup, Refreshed};
use crate::config::AgentConfig;
use crate::creds::CredentialSource;
use crate::outputs;
use crate::proxy::cancel::CancelMap;
use crate::proxy::fdlimit;
use crate::proxy::listener::{self, Bind, Limits, Listener};
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::tls;
use crate::proxy::upstream::Upstream;

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("--dir {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("database {db}: cannot listen on {bind}: {source}")]
    Listen {
        db: String,
        bind: Bind,
        source: std::io::Error,
    },
    #[error("database {db}: {reason}")]
    Tls { db: String, reason: String },
}

/// The agent and, in proxy mode, its listeners.
pub struct Built {
    pub agent: Agent,
    pub proxy: Vec<(Listener, Arc<Upstream>)>,
    pub proxy_metrics: Option<Arc<ProxyMetrics>>,
}

/// Builds the agent for `cfg` on the default credential chain, one chain
/// per AWS partition. With `cfg.once` no proxy is started.
pub async fn build(cfg: &AgentConfig) -> Result<Built, BuildError> {
    let dir_err = |source| BuildError::Dir {
        dir: cfg.dir.clone(),
        source,
    };
    if !cfg.dir.exists() {
        std::fs::create_dir_all(&cfg.dir).map_err(dir_err)?;
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
    let mut groups = Vec::new();
    for (region, members) in agent::credential_groups(&cfg.databases) {
        groups.push(CredGroup {
            source: CredentialSource::default_chain(&region).await,
            members,
        });
    }
    let dir = cfg.dir.display().to_string();
    let ca = cfg.proxy.ca_file.as_ref().map(|p| p.display().to_string());
    let agent = Agent::new(
        cfg.databases.clone(),
        cfg.dir.clone(),
        groups,
        outputs::all(&dir, ca.as_deref()),
    );
    agent.seed_from_disk(SystemTime::now());
    let (proxy, proxy_metrics) = if cfg.once {
        (Vec::new(), None)
    } else {
        proxies(cfg, &agent)?
    };
    Ok(Built {
        agent,
        proxy,
        proxy_metrics,
    })
}

type Proxies = (Vec<(Listener, Arc<Upstream>)>, Option<Arc<ProxyMetrics>>);

/// Binds the listeners of every database in proxy mode.
fn proxies(cfg: &AgentConfig, agent: &Agent) -> Result<Proxies, BuildError> {
    let proxied: Vec<_> = agent
        .sources()
        .iter()
        .filter(|s| s.endpoint.access.mode == Mode::Proxy)
        .collect();
    if proxied.is_empty() {
        return Ok((Vec::new(), None));
    }
    let metrics = Arc::new(ProxyMetrics::new(proxied.iter().map(|s| &s.endpoint.name)));
    let tls_err = |e: &Endpoint, reason: String| BuildError::Tls {
        db: e.name.to_string(),
        reason,
    };
    let roots = match &cfg.proxy.ca_file {
        Some(p) => {
            Some(tls::load_roots(p).map_err(|err| tls_err(&proxied[0].endpoint, err.to_string()))?)
        }
        None => None,
    };
    let dir = cfg.dir.display().to_string();
    let mut listeners = Vec::new();
    for s in proxied {
        let e = &s.endpoint;
        let up = Arc::new(Upstream {
            source: s.clone(),
            tls: tls::client_config(e.sslmode, roots.as_ref(), e.access.direct_tls)
                .map_err(|err| tls_err(e, err.to_string()))?,
            server_name: tls::server_name(&e.host).map_err(|err| tls_err(e, err.to_string()))?,
            direct_tls: e.access.direct_tls,
            connect_timeout: cfg.proxy.connect_timeout,
            cancels: CancelMap::default(),
            metrics: metrics.clone(),
        });
        let mut binds = vec![Bind::Unix(e.socket_path(&dir).into())];
        if let Some(port) = e.access.proxy_port {
            binds.push(Bind::Tcp(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::LOCALHOST,
                port,
            ))));
        }
        for bind in binds {
            let l = Listener::bind(&bind).map_err(|source| BuildError::Listen {
                db: e.name.to_string(),
                bind: bind.clone(),
                source,
            })?;
            tracing::info!(db = %e.name, listen = %bind, upstream = %up.label(), "proxy listening");
            listeners.push((l, up.clone()));
        }
    }
    Ok((listeners, Some(metrics)))
}

/// `--once`: writes the files once. `shutdown` cancels it while it waits
/// for credentials, never during the write.
pub async fn once(
    agent: &Agent,
    shutdown: impl Future<Output = ()>,
) -> Result<Refreshed, Cancelled> {
    agent.refresh_once(shutdown).await
}

/// The long-running agent, with its proxy and the health server if
/// configured, until `shutdown` completes.
pub async fn run(
    cfg: &AgentConfig,
    built: Built,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Built {
        agent,
        proxy,
        proxy_metrics,
    } = built;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(addr) = cfg.health_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "health server listening");
        let state = crate::health::Health {
            status: agent.status(),
            proxy: proxy_metrics.clone(),
        };
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::health::serve(listener, state, stop).await {
                tracing::error!(error = %e, "health server failed");
            }
        });
    }
    for (e, source) in cfg.databases.iter().zip(&cfg.region_sources) {
        tracing::info!(
            db = %e.name,
            engine = %e.engine,
            host = %e.host,
            port = e.port,
            user = %e.user,
            region = %e.region,
            region_source = %source,
            mode = e.access.mode.as_str(),
            "serving database"
        );
    }
    tracing::info!(
        dir = %cfg.dir.display(),
        interval = %humantime::format_duration(cfg.interval),
        "starting token agent"
    );
    let mut max_connections = cfg.proxy.max_connections;
    if !proxy.is_empty() {
        let nofile = fdlimit::raise();
        max_connections = fdlimit::sessions_that_fit(max_connections, nofile);
        if max_connections < cfg.proxy.max_connections {
            tracing::warn!(
                nofile,
                max_connections,
                wanted = cfg.proxy.max_connections,
                "the open-file limit allows fewer proxied connections than --max-connections; raise the container's nofile limit"
            );
        }
    }
    let limits = Limits {
        max_connections,
        max_sigterm_delay: cfg.proxy.max_sigterm_delay,
    };
    let proxy = async {
        if !proxy.is_empty() {
            listener::run(proxy, limits, stopped(stop_rx.clone())).await;
        }
    };
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(
        signal,
        agent.run(cfg.interval, stopped(stop_rx.clone())),
        proxy
    );
    Ok(())
}
