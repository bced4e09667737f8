//! The proxy's sockets, its connection limit and its lifecycle.
//!
//! A Unix socket listens only once its mode is 0600, so only the agent's UID,
//! which is the app's, can ever connect. A loopback TCP port is optional.
//!
//! Beyond `--max-connections`, a new client gets an ErrorResponse (an ERR
//! packet for MySQL) and the agent keeps serving the others. On shutdown the listeners close at once;
//! open sessions get up to `--max-sigterm-delay` to finish (0 for a native
//! sidecar, whose app has already exited), then they are cut.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use super::metrics::Failure;
use super::pg_wire::{self, sqlstate};
use super::upstream::Upstream;
use super::{mysql_session, mysql_wire, pg_session};

/// Where a database's proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A bound socket.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `bind`. A Unix socket's directory is created (mode 0755) and a
    /// stale socket of a previous agent is replaced.
    pub fn bind(bind: &Bind) -> std::io::Result<Self> {
        match bind {
            Bind::Tcp(addr) => {
                let std = std::net::TcpListener::bind(addr)?;
                std.set_nonblocking(true)?;
                Ok(Self::Tcp(TcpListener::from_std(std)?))
            }
            Bind::Unix(path) => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                if !dir.exists() {
                    std::fs::create_dir_all(dir)?;
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
                }
                // A stale socket of a previous agent.
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                let std = bind_private(path)?;
                Ok(Self::Unix(UnixListener::from_std(std)?, path.clone()))
            }
        }
    }

    async fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Self::Unix(l, _) => Ok(Conn::Unix(l.accept().await?.0)),
            Self::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Conn::Tcp(s))
            }
        }
    }
}

/// Pending connections a listener holds before they are accepted.
const BACKLOG: i32 = 1024;

/// A Unix socket at `path` with mode 0600 that listens only once the mode
/// is set, so no other UID ever connects, not even in between. It is bound
/// at `path` itself: the name a client sees as its peer's address is the
/// path it connected to, and clients that reconnect to that address (pgx
/// sends its CancelRequest there) find the socket.
fn bind_private(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use rustix::net::{
        bind, listen, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    bind(&fd, &SocketAddrUnix::new(path)?)?;
    let private = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| Ok(listen(&fd, BACKLOG)?));
    if let Err(e) = private {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(fd.into())
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Settings of the proxy as a whole.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open client connections across all databases.
    pub max_connections: usize,
    /// How long open sessions may go on after shutdown starts.
    pub max_sigterm_delay: Duration,
}

/// Refusals (at the connection limit) answered at the same time; beyond,
/// the connection is closed without a word.
pub const MAX_REFUSALS: usize = 64;
/// How long a refused client may take to send its startup packet.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `listeners` until `shutdown` completes, then drains (see the module
/// docs). Returns how many sessions were cut.
pub async fn run(
    listeners: Vec<(Listener, Arc<Upstream>)>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let Limits {
        max_connections,
        max_sigterm_delay,
    } = limits;
    let slots = Arc::new(Semaphore::new(max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (kill_tx, kill_rx) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    for (listener, up) in listeners {
        loops.spawn(accept_loop(
            listener,
            up,
            slots.clone(),
            refusals.clone(),
            stop_rx.clone(),
            kill_rx.clone(),
        ));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    let open = max_connections - slots.available_permits();
    if open > 0 && !max_sigterm_delay.is_zero() {
        tracing::info!(
            open,
            max_sigterm_delay_s = max_sigterm_delay.as_secs(),
            "waiting for proxied sessions to close"
        );
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(max_sigterm_delay, slots.acquire_many(all)).await;
    }
    let cut = max_connections - slots.available_permits();
    let _ = kill_tx.send(true);
    if cut > 0 {
        tracing::info!(cut, "closing proxied sessions that were still open");
        // Each session drops its sockets as soon as it sees the signal.
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
    }
    cut
}

async fn accept_loop(
    listener: Listener,
    up: Arc<Upstream>,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
) {
    let db = up.source.endpoint.name.clone();
    loop {
        let conn = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = listener.accept() => r,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, for example: back off, keep serving.
                tracing::warn!(db = %db, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            up.metrics.failed(&db, Failure::Limit);
            if let Ok(r) = refusals.clone().try_acquire_owned() {
                let engine = up.source.endpoint.engine;
                tokio::spawn(async move {
                    match conn {
                        Conn::Unix(s) => refuse(s, engine).await,
                        Conn::Tcp(s) => refuse(s, engine).await,
                    }
                    drop(r);
                });
            }
            continue;
        };
        let up = up.clone();
        let mut kill = kill.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve(conn, up) => {}
                _ = kill.wait_for(|k| *k) => {}
            }
            drop(permit);
        });
    }
}

async fn serve(conn: Conn, up: Arc<Upstream>) {
    use rds_iam_common::Engine;
    match (conn, up.source.endpoint.engine) {
        (Conn::Unix(s), Engine::Postgres) => pg_session::serve(s, up).await,
        (Conn::Tcp(s), Engine::Postgres) => pg_session::serve(s, up).await,
        (Conn::Unix(s), Engine::Mysql) => mysql_session::serve(s, up).await,
        (Conn::Tcp(s), Engine::Mysql) => mysql_session::serve(s, up).await,
    }
}

/// Answers with "too many connections": a MySQL client at once (the server
/// speaks first, so an ERR packet takes the greeting's place); a PostgreSQL
/// client after its first packets, so it is listening for the answer.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, engine: rds_iam_common::Engine) {
    const MESSAGE: &str = "too many connections to the rds-iam proxy";
    const HINT: &str = "the agent's --max-connections (RDS_IAM_MAX_CONNECTIONS) is reached; close idle connections or raise the limit";
    if engine == rds_iam_common::Engine::Mysql {
        let err = mysql_wire::err_payload(
            mysql_wire::code::TOO_MANY_CONNECTIONS,
            "08004",
            &format!("{MESSAGE}: {HINT}"),
        );
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            s.write_all(&mysql_wire::packet(0, &err)).await?;
            s.shutdown().await
        })
        .await;
        return;
    }
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut buf = Vec::new();
        loop {
            match pg_wire::parse_initial(&buf) {
                Ok(pg_wire::Parsed::Done(
                    pg_wire::Initial::SslRequest | pg_wire::Initial::GssEncRequest,
                    n,
                )) => {
                    buf.drain(..n);
                    s.write_all(b"N").await?;
                }
                Ok(pg_wire::Parsed::Incomplete(_)) => {
                    let mut chunk = [0u8; 1024];
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                _ => break,
            }
        }
        let msg = pg_wire::error_response(sqlstate::TOO_MANY_CONNECTIONS, MESSAGE, Some(HINT));
        s.write_all(&msg).await?;
        s.shutdown().await
    })
    .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unix_socket_is_private_and_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db").join(".s.PGSQL.5432");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "stale").unwrap();
        let l = Listener::bind(&Bind::Unix(path.clone())).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        // The address a client sees is the path it connected to (pgx sends
        // its CancelRequest there).
        assert_eq!(
            client.peer_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        assert!(matches!(l.accept().await, Ok(Conn::Unix(_))));
        drop(l);
        assert!(!path.exists(), "the socket goes with the listener");
    }
}
