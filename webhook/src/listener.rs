//! The accept loop of one listener: the connection cap, the TLS handshake
//! within the header timeout, and the drain at shutdown.
//!
//! At the cap, new connections wait in the kernel's backlog (nothing is
//! accepted, so no descriptor is used) while the connections already open
//! keep being served; connections that never sent a request are closed to
//! make room.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::Timeouts;
use crate::conn::{self, Closed, Phase};
use crate::limits::Limits;
use crate::metrics::Metrics;

/// How often a full listener asks unused connections to close, and logs.
const OVERLOAD_TICK: Duration = Duration::from_millis(100);
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long cut connections get to go away after the drain timeout.
const CUT_WAIT: Duration = Duration::from_secs(5);

/// A listener and what it serves.
pub struct Listener {
    /// `https` or `metrics`: the metric label and the log field.
    pub name: &'static str,
    pub tcp: TcpListener,
    /// `None` serves plain HTTP.
    pub tls: Option<RustlsConfig>,
    pub router: Router,
    pub max_connections: usize,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
}

/// A listener being served.
pub struct Running {
    phase: watch::Sender<Phase>,
    slots: Arc<Semaphore>,
    cap: u32,
    task: JoinHandle<()>,
}

impl Listener {
    pub fn spawn(self) -> Running {
        let cap = u32::try_from(self.max_connections.min(Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX)
            .max(1);
        let slots = Arc::new(Semaphore::new(cap as usize));
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let task = tokio::spawn(self.accept_loop(slots.clone(), phase_rx));
        Running {
            phase,
            slots,
            cap,
            task,
        }
    }

    async fn accept_loop(self, slots: Arc<Semaphore>, mut phase: watch::Receiver<Phase>) {
        let Self {
            name,
            tcp,
            tls,
            router,
            max_connections,
            limits,
            metrics,
        } = self;
        let builder = Arc::new(conn::builder(&limits));
        let timeouts = Timeouts::from_limits(&limits);
        let overload = Arc::new(Notify::new());
        let mut last_warning: Option<Instant> = None;
        let mut warn = |what: &str, error: Option<std::io::Error>| {
            let now = Instant::now();
            if last_warning.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
                return;
            }
            last_warning = Some(now);
            match error {
                Some(e) => tracing::warn!(listener = name, error = %e, "{what}"),
                None => tracing::warn!(listener = name, max_connections, "{what}"),
            }
        };
        loop {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    warn("connection cap reached (--max-connections): new connections wait; connections that never sent a request are closed", None);
                    tokio::select! {
                        slot = wait_for_slot(&slots, &overload) => match slot {
                            Some(slot) => slot,
                            None => break,
                        },
                        _ = phase.changed() => break,
                    }
                }
            };
            let stream = tokio::select! {
                accepted = tcp.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and the like: wait instead of spinning.
                        warn("cannot accept a connection", Some(e));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = phase.changed() => break,
            };
            // A response leaves as soon as it is written, instead of waiting
            // for the client's delayed ACK of the previous segment.
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(
                stream,
                slot,
                Conn {
                    name,
                    tls: tls.clone(),
                    router: router.clone(),
                    builder: builder.clone(),
                    timeouts,
                    phase: phase.clone(),
                    overload: overload.clone(),
                    metrics: metrics.clone(),
                },
            ));
        }
        // Dropping the listener refuses new connections at once.
        drop(tcp);
    }
}

/// Waits for a free slot, asking unused connections to close meanwhile.
async fn wait_for_slot(slots: &Arc<Semaphore>, overload: &Notify) -> Option<OwnedSemaphorePermit> {
    loop {
        overload.notify_waiters();
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot.ok(),
            () = tokio::time::sleep(OVERLOAD_TICK) => {}
        }
    }
}

/// What one connection's task needs.
struct Conn {
    name: &'static str,
    tls: Option<RustlsConfig>,
    router: Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    timeouts: Timeouts,
    phase: watch::Receiver<Phase>,
    overload: Arc<Notify>,
    metrics: Arc<Metrics>,
}

async fn connection(stream: TcpStream, _slot: OwnedSemaphorePermit, c: Conn) {
    let Conn {
        name,
        tls,
        router,
        builder,
        timeouts,
        phase,
        overload,
        metrics,
    } = c;
    metrics.connection_opened(name);
    let closed = match tls {
        None => conn::serve(stream, router, builder, timeouts, phase, overload).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.get_inner());
            match tokio::time::timeout(timeouts.header, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    conn::serve(stream, router, builder, timeouts, phase, overload).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = name, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => Some(Closed::HeaderTimeout),
            }
        }
    };
    if let Some(why) = closed {
        tracing::debug!(
            listener = name,
            reason = why.as_str(),
            "connection closed by the server"
        );
    }
    metrics.connection_closed(name, closed);
}

impl Running {
    /// Connections open now.
    pub fn open(&self) -> usize {
        (self.cap as usize).saturating_sub(self.slots.available_permits())
    }

    /// Stops accepting, lets the connections finish what they are doing for
    /// up to `timeout`, then closes the rest. Returns how many it closed.
    pub async fn drain(self, timeout: Duration) -> usize {
        let Self {
            phase,
            slots,
            cap,
            task,
        } = self;
        let _ = phase.send(Phase::Draining);
        // The accept loop ends and gives its slot back.
        let _ = task.await;
        if tokio::time::timeout(timeout, slots.acquire_many(cap))
            .await
            .is_ok()
        {
            return 0;
        }
        let cut = (cap as usize).saturating_sub(slots.available_permits());
        let _ = phase.send(Phase::Cut);
        let _ = tokio::time::timeout(CUT_WAIT, slots.acquire_many(cap)).await;
        cut
    }
}
