//! One accepted connection, served by hyper (HTTP/1.1 or HTTP/2), closed
//! when its [`Clock`] runs out, when the server drains, or, unused, when the
//! listener is at its connection cap.
//!
//! The bytes the client sends are shown to the clock on their way to hyper,
//! and requests are counted as hyper hands them to the router.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::clock::{Clock, Expiry, Timeouts};
use crate::limits::{Limits, MAX_HEADER_BYTES};

/// Why the server closed a connection (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Closed {
    HeaderTimeout,
    IdleTimeout,
    /// Unused, at the connection cap.
    Overload,
    /// Still open when the drain timeout ended.
    DrainTimeout,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Overload => "overload",
            Self::DrainTimeout => "drain_timeout",
        }
    }
}

/// A connection's clock, shared by its reader, its requests and its task.
#[derive(Debug)]
struct Shared {
    clock: Mutex<Clock>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Clock> {
        // A panic while holding it cannot leave the clock inconsistent.
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client's stream, watched on the way to hyper.
struct Watched<T> {
    inner: T,
    shared: Arc<Shared>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() && this.shared.lock().on_read(new, Instant::now()) {
            this.shared.changed.notify_one();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Ends a request on drop, however its future ends.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.lock().request_ended(Instant::now()) {
            self.0.changed.notify_one();
        }
    }
}

/// The router, counting the requests it is given.
#[derive(Clone)]
struct Counted {
    router: Router,
    shared: Arc<Shared>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Counted {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.shared.lock().request_started();
        let guard = InFlight(self.shared.clone());
        let answer = self.router.clone().oneshot(req.map(Body::new));
        Box::pin(async move {
            let res = answer.await;
            drop(guard);
            res
        })
    }
}

/// hyper's settings for every connection.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .keep_alive(true)
        // The header clock is ours: hyper's would also count idle time.
        .header_read_timeout(None)
        // Also the largest request head: a longer one gets 431 and a close.
        .max_buf_size(MAX_HEADER_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        // Data a handler has not read yet stays within these windows.
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .max_send_buf_size(64 * 1024);
    b
}

/// Where the server as a whole is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// Finish what is in progress, take nothing new.
    Draining,
    /// Close now.
    Cut,
}

/// Serves one connection until it ends; returns why the server closed it,
/// if it did.
pub async fn serve<I>(
    io: I,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    mut phase: watch::Receiver<Phase>,
    overload: Arc<Notify>,
) -> Option<Closed>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        clock: Mutex::new(Clock::new(Instant::now())),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        inner: io,
        shared: shared.clone(),
    });
    let service = Counted {
        router,
        shared: shared.clone(),
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut asked_to_close: Option<Closed> = None;
    // The drain may have begun during the TLS handshake.
    let mut drain_seen = false;
    match *phase.borrow_and_update() {
        Phase::Serving => {}
        Phase::Draining => {
            drain_seen = true;
            conn.as_mut().graceful_shutdown();
        }
        Phase::Cut => return Some(Closed::DrainTimeout),
    }
    loop {
        let next = shared.lock().next_expiry(&timeouts);
        let sleep = async {
            match next {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Closed by the client, by hyper, or after we asked it to.
            _ = conn.as_mut() => return asked_to_close,
            () = shared.changed.notified() => {}
            () = sleep => {
                let now = Instant::now();
                let expired = shared.lock().expired(&timeouts, now);
                match expired {
                    Some(Expiry::Header) => return Some(Closed::HeaderTimeout),
                    Some(Expiry::Grace) => return Some(asked_to_close.unwrap_or(Closed::IdleTimeout)),
                    Some(Expiry::Idle) => {
                        conn.as_mut().graceful_shutdown();
                        shared.lock().closing(now);
                        asked_to_close = Some(Closed::IdleTimeout);
                    }
                    None => {}
                }
            }
            changed = phase.changed() => {
                let now_phase = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Cut };
                match now_phase {
                    Phase::Serving => {}
                    Phase::Draining if !drain_seen => {
                        drain_seen = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Phase::Draining => {}
                    Phase::Cut => return Some(Closed::DrainTimeout),
                }
            }
            () = overload.notified() => {
                if shared.lock().unused(Instant::now()) {
                    return Some(Closed::Overload);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t() -> Timeouts {
        Timeouts::from_limits(&Limits::default())
    }

    /// One in-memory connection being served.
    struct InMemory {
        client: tokio::io::DuplexStream,
        phase: watch::Sender<Phase>,
        overload: Arc<Notify>,
        /// Why it was closed, and when.
        task: tokio::task::JoinHandle<(Option<Closed>, Duration)>,
    }

    /// Serves one in-memory connection with the given clocks.
    fn serve_in_memory(t: Timeouts) -> InMemory {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(90)).await;
                    "slow"
                }),
            );
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let overload = Arc::new(Notify::new());
        let builder = Arc::new(builder(&Limits::default()));
        let o = overload.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let closed = serve(server, router, builder, t, phase_rx, o).await;
            (closed, start.elapsed())
        });
        InMemory {
            client,
            phase,
            overload,
            task,
        }
    }

    async fn get(client: &mut tokio::io::DuplexStream, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_at_the_idle_timeout() {
        let c = serve_in_memory(t());
        assert_eq!(
            c.task.await.unwrap(),
            (Some(Closed::IdleTimeout), Duration::from_secs(60))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_head_is_closed_at_the_header_timeout() {
        use tokio::io::AsyncWriteExt;
        let mut c = serve_in_memory(t());
        tokio::time::sleep(Duration::from_secs(5)).await;
        c.client.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
        assert_eq!(
            c.task.await.unwrap(),
            (Some(Closed::HeaderTimeout), Duration::from_secs(15))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_not_idle() {
        let mut c = serve_in_memory(t());
        let start = Instant::now();
        let answer = get(&mut c.client, "/slow").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(start.elapsed(), Duration::from_secs(90));
        // Idle from the answer on.
        assert_eq!(
            c.task.await.unwrap(),
            (Some(Closed::IdleTimeout), Duration::from_secs(150))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_only_unused_connections_make_room() {
        let unused = serve_in_memory(t());
        let mut used = serve_in_memory(t());
        assert!(get(&mut used.client, "/").await.starts_with("HTTP/1.1 200"));
        // Too young to be called unused.
        unused.overload.notify_waiters();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!unused.task.is_finished());
        tokio::time::sleep(Duration::from_secs(1)).await;
        unused.overload.notify_waiters();
        used.overload.notify_waiters();
        assert_eq!(
            unused.task.await.unwrap(),
            (Some(Closed::Overload), Duration::from_millis(1500))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !used.task.is_finished(),
            "a connection that served a request stays"
        );
        assert!(get(&mut used.client, "/").await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_closes_idle_connections_and_cuts_busy_ones() {
        use tokio::io::AsyncWriteExt;
        let idle = serve_in_memory(t());
        let mut busy = serve_in_memory(t());
        busy.client
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.phase.send(Phase::Draining).unwrap();
        busy.phase.send(Phase::Draining).unwrap();
        // Closed at once, not counted as a timeout.
        assert_eq!(idle.task.await.unwrap(), (None, Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!busy.task.is_finished(), "the review in flight may finish");
        busy.phase.send(Phase::Cut).unwrap();
        assert_eq!(
            busy.task.await.unwrap(),
            (Some(Closed::DrainTimeout), Duration::from_secs(21))
        );
    }
}
