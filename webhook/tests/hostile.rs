//! Hostile clients against the real `rds-iam-webhook serve` binary: idle,
//! slow and stopped connections, endless bodies and header lines, many big
//! pending bodies, a flood of HTTP/2 streams, the connection cap, a low
//! open-file limit, and signals during the drain.
//!
//! Every test reads the server's peak RSS (`VmHWM`) and sends a normal review
//! on a fresh connection while the attack goes on. The limits are set through
//! the environment twins of the flags, so the same tests also run against an
//! older binary (`RDS_IAM_WEBHOOK_TEST_BIN=path`), which ignores them; with
//! `--nocapture` they print the figures recorded in BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::tls_client::{client_config, connect, http_get, sample, TestCa, SERVER_NAME};
use common::{fixture, patch_of, serve_command};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const MIB: u64 = 1024 * 1024;
/// The bound the issue sets for every pattern.
const RSS_LIMIT_KIB: u64 = 100 * 1024;
/// Slack on top of a timeout for the server's and this test's scheduling on
/// a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The flags' environment twins, with the short timeouts of these tests.
const SHORT: [(&str, &str); 3] = [
    ("RDS_IAM_WEBHOOK_HEADER_TIMEOUT", "1s"),
    ("RDS_IAM_WEBHOOK_BODY_TIMEOUT", "2s"),
    ("RDS_IAM_WEBHOOK_IDLE_TIMEOUT", "2s"),
];

/// The tests time the server, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

fn binary() -> PathBuf {
    std::env::var_os("RDS_IAM_WEBHOOK_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rds-iam-webhook")))
}

/// A running `rds-iam-webhook serve`, killed on drop.
struct Server {
    child: Child,
    https: SocketAddr,
    metrics: SocketAddr,
    ca: CertificateDer<'static>,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], env)
    }

    /// Starts the binary under `prefix` (e.g. `prlimit ...`), which must
    /// exec it so that its PID is the server's.
    fn start_under(prefix: &[&str], env: &[(&str, &str)]) -> Self {
        let ca = TestCa::new();
        let leaf = ca.leaf(&[SERVER_NAME]);
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        // The prefix execs the binary with the same arguments.
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let plain = serve_command(&binary(), &cert, &key);
                let mut c = Command::new(first);
                c.args(rest)
                    .arg(plain.get_program())
                    .args(plain.get_args())
                    .env("RUST_LOG", "info");
                c
            }
            None => serve_command(&binary(), &cert, &key),
        };
        cmd.envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        // Keep reading, so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("rds-iam-webhook serving") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let serving = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the server did not start: {:?}", logs.lock().unwrap()));
        let log: serde_json::Value = serde_json::from_str(&serving).unwrap();
        let addr = |k: &str| log[k].as_str().unwrap().parse().unwrap();
        Self {
            https: addr("https_addr"),
            metrics: addr("metrics_addr"),
            child,
            ca: ca.der(),
            logs,
            _dir: dir,
        }
    }

    /// (VmRSS, VmHWM) of the server, in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {status}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Asserts the peak RSS so far is under the bound, and returns it in KiB.
    fn assert_peak_rss(&self, what: &str) -> u64 {
        let (rss, hwm) = self.rss_kib();
        eprintln!(
            "figure: {what}: peak RSS {:.1} MiB (now {:.1} MiB)",
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        );
        assert!(
            hwm < RSS_LIMIT_KIB,
            "{what}: the server's peak RSS is {hwm} KiB, over {RSS_LIMIT_KIB} KiB"
        );
        hwm
    }

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    async fn metric(&self, series: &str) -> f64 {
        let (status, text) = http_get(self.metrics, "/metrics").await;
        assert_eq!(status, 200);
        sample(&text, series)
    }

    /// The series once it equals `want`, or its value after 5 s: a
    /// connection is counted just after the client sees it closed.
    async fn metric_settled(&self, series: &str, want: f64) -> f64 {
        self.metric_until(series, |v| v == want).await
    }

    /// The series once it is at least `least`, or its value after 5 s.
    async fn metric_reaches(&self, series: &str, least: f64) -> f64 {
        self.metric_until(series, |v| v >= least).await
    }

    async fn metric_until(&self, series: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(series).await;
            if done(v) || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn tls_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut config = Arc::unwrap_or_clone(client_config(
            &self.ca,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        ));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS connection offering `alpn`.
    async fn tls(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.https).await.unwrap();
        TlsConnector::from(self.tls_config(alpn))
            .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
            .await
            .unwrap()
    }

    /// A normal review on a new connection; returns the time it took,
    /// connection and handshake included.
    async fn review(&self, what: &str) -> Duration {
        let (elapsed, v) = self.post_review(what, review_body()).await;
        assert_eq!(v["response"]["allowed"], true, "{v}");
        assert!(patch_of(&v).is_some(), "{what}: no patch in {v}");
        eprintln!("figure: {what}: normal review on a new connection in {elapsed:?}");
        elapsed
    }

    /// Posts `body` on a new connection and asserts it is answered within
    /// 10 s; returns the time and the review.
    async fn post_review(&self, what: &str, body: Vec<u8>) -> (Duration, serde_json::Value) {
        let start = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            let mut conn = connect(self.https, self.tls_config(&[])).await?;
            conn.request("POST", "/mutate", body).await
        })
        .await;
        let elapsed = start.elapsed();
        let (status, body) = answer
            .unwrap_or_else(|_| panic!("{what}: the review got no answer within 10 s"))
            .unwrap_or_else(|e| panic!("{what}: the review failed: {e}"));
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
        (elapsed, serde_json::from_slice(&body).unwrap())
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&fixture("deployment-pod.json")).unwrap()
}

/// Reads until the server closes the connection; returns when that was
/// (from `since`) and what it sent. Panics if it is still open at `limit`.
async fn closed_within<R: AsyncRead + Unpin>(
    what: &str,
    mut reader: R,
    since: Instant,
    limit: Duration,
) -> (Duration, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let read_all = async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let left = limit.saturating_sub(since.elapsed());
    if tokio::time::timeout(left, read_all).await.is_err() {
        panic!(
            "{what}: still open {:?} after it started (limit {limit:?}); it sent {:?}",
            since.elapsed(),
            String::from_utf8_lossy(&got[..got.len().min(200)])
        );
    }
    (since.elapsed(), got)
}

/// The same, printing the figure.
async fn closed_within_printed<R: AsyncRead + Unpin>(
    what: &str,
    reader: R,
    since: Instant,
    limit: Duration,
) -> (Duration, Vec<u8>) {
    let (elapsed, got) = closed_within(what, reader, since, limit).await;
    eprintln!("figure: {what}: closed by the server after {elapsed:?}");
    (elapsed, got)
}

/// Waits for every attacker; prints and returns how many got each status
/// line, and the longest time to close.
async fn answers(
    what: &str,
    attackers: Vec<tokio::task::JoinHandle<(Duration, Vec<u8>)>>,
) -> std::collections::BTreeMap<String, usize> {
    let mut statuses = std::collections::BTreeMap::new();
    let mut longest = Duration::ZERO;
    for a in attackers {
        let (t, response) = a.await.unwrap();
        longest = longest.max(t);
        *statuses.entry(status_line(&response)).or_insert(0) += 1;
    }
    eprintln!("figure: {what}: answers {statuses:?}, all closed within {longest:?}");
    statuses
}

/// Writes `bytes` one at a time, `every` apart, until a write fails.
async fn trickle<W: tokio::io::AsyncWrite + Unpin>(mut w: W, bytes: Vec<u8>, every: Duration) {
    for b in bytes {
        if w.write_all(&[b]).await.is_err() || w.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
    std::future::pending::<()>().await;
}

fn status_line(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A request body that sends `left` bytes, then never ends (or ends, if
/// `ends`).
struct Stalling {
    left: usize,
    ends: bool,
}

static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];

impl hyper::body::Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return if self.ends {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        let n = self.left.min(CHUNK.len());
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.ends && self.left == 0
    }
}

type H2Sender = hyper::client::conn::http2::SendRequest<Stalling>;

/// An HTTP/2 connection; the task ends when the server closes it.
async fn h2_client(srv: &Server) -> (H2Sender, tokio::task::JoinHandle<()>) {
    let tls = srv.tls(&[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn stalled_post(declared: usize, sent: usize) -> hyper::Request<Stalling> {
    hyper::Request::post(format!("https://{SERVER_NAME}/mutate"))
        .header("content-type", "application/json")
        .header("content-length", declared)
        .body(Stalling {
            left: sent,
            ends: false,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_at_the_idle_timeout() {
    let _serial = serial().await;
    let srv = Server::start(&SHORT);
    let limit = IDLE_TIMEOUT + MARGIN;
    let start = Instant::now();

    // HTTP/1.1 over TLS that never sends a request.
    let silent = srv.tls(&[b"http/1.1"]).await;
    // HTTP/1.1 keep-alive after one request.
    let mut kept = srv.tls(&[b"http/1.1"]).await;
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {SERVER_NAME}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let after_request = Instant::now();
    // HTTP/2 after one request.
    let (mut h2, h2_task) = h2_client(&srv).await;
    let resp = h2
        .send_request(
            hyper::Request::get(format!("https://{SERVER_NAME}/healthz"))
                .body(Stalling {
                    left: 0,
                    ends: true,
                })
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h2_after_request = Instant::now();
    // The plain-HTTP metrics port.
    let metrics = TcpStream::connect(srv.metrics).await.unwrap();

    srv.review("idle connections").await;
    let (silent_t, _) =
        closed_within_printed("idle HTTP/1.1 (no request)", silent, start, limit).await;
    let (kept_t, _) =
        closed_within_printed("idle HTTP/1.1 keep-alive", kept, after_request, limit).await;
    let (metrics_t, _) =
        closed_within_printed("idle metrics connection", metrics, start, limit).await;
    tokio::time::timeout(limit.saturating_sub(h2_after_request.elapsed()), h2_task)
        .await
        .expect("idle HTTP/2 connection still open after the idle timeout")
        .unwrap();
    let h2_t = h2_after_request.elapsed();
    eprintln!("figure: idle HTTP/2: closed by the server after {h2_t:?}");
    for (what, t) in [
        ("silent", silent_t),
        ("keep-alive", kept_t),
        ("metrics", metrics_t),
        ("h2", h2_t),
    ] {
        assert!(
            t >= IDLE_TIMEOUT - Duration::from_millis(300),
            "{what} closed after {t:?}, before the idle timeout"
        );
    }
    let idle = srv
        .metric_reaches(
            "rds_iam_webhook_connections_closed_total{listener=\"https\",reason=\"idle_timeout\"}",
            3.0,
        )
        .await;
    assert!(idle >= 3.0, "{idle} connections closed at the idle timeout");
    srv.assert_peak_rss("idle connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stopped_headers_are_cut_at_the_header_timeout() {
    let _serial = serial().await;
    let srv = Server::start(&SHORT);
    let limit = HEADER_TIMEOUT + MARGIN;
    let every = Duration::from_millis(250);

    // HTTP/1.1, one header byte every 250 ms.
    let start = Instant::now();
    let (r, w) = tokio::io::split(srv.tls(&[b"http/1.1"]).await);
    let slow_head = format!(
        "POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\nx-slow: {}",
        "a".repeat(100)
    );
    let slow = tokio::spawn(trickle(w, slow_head.into_bytes(), every));
    let slow_h1 = tokio::spawn(async move {
        closed_within_printed("HTTP/1.1 header at 4 bytes/s", r, start, limit).await
    });

    // HTTP/1.1, stopped in the middle of a header.
    let mut stopped = srv.tls(&[b"http/1.1"]).await;
    let start_stopped = Instant::now();
    stopped
        .write_all(format!("POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-ty").as_bytes())
        .await
        .unwrap();
    let stopped_h1 = tokio::spawn(async move {
        closed_within_printed("HTTP/1.1 stopped mid-header", stopped, start_stopped, limit).await
    });

    // HTTP/2, a HEADERS frame whose block arrives at 4 bytes/s.
    let mut h2 = srv.tls(&[b"h2"]).await;
    let start_h2 = Instant::now();
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(0x4, 0, 0, &[]));
    // HEADERS, stream 1, END_STREAM but no END_HEADERS: 200 bytes to come.
    hello.extend(&h2_frame(0x1, 0x1, 1, &[0; 200])[..9]);
    h2.write_all(&hello).await.unwrap();
    let (r, w) = tokio::io::split(h2);
    let slow2 = tokio::spawn(trickle(w, vec![0x82; 200], every));
    let slow_h2 = tokio::spawn(async move {
        closed_within_printed("HTTP/2 header block at 4 bytes/s", r, start_h2, limit).await
    });

    // The metrics port, one header byte every 250 ms.
    let start_m = Instant::now();
    let (r, w) = tokio::io::split(TcpStream::connect(srv.metrics).await.unwrap());
    let slow3 = tokio::spawn(trickle(
        w,
        b"GET /metrics HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
        every,
    ));
    let slow_m = tokio::spawn(async move {
        closed_within_printed("metrics header at 4 bytes/s", r, start_m, limit).await
    });

    // A TLS handshake that never starts.
    let start_tls = Instant::now();
    let no_hello = TcpStream::connect(srv.https).await.unwrap();
    let no_tls = tokio::spawn(async move {
        closed_within_printed("TCP without a TLS handshake", no_hello, start_tls, limit).await
    });

    srv.review("slow headers").await;
    for (what, task) in [
        ("slow h1", slow_h1),
        ("stopped h1", stopped_h1),
        ("slow h2", slow_h2),
        ("slow metrics", slow_m),
        ("no TLS", no_tls),
    ] {
        let (t, _) = task.await.unwrap();
        assert!(
            t >= HEADER_TIMEOUT - Duration::from_millis(300),
            "{what} closed after {t:?}, before the header timeout"
        );
    }
    for t in [slow, slow2, slow3] {
        t.abort();
    }
    assert_eq!(
        srv.metric_settled("rds_iam_webhook_connections_closed_total{listener=\"https\",reason=\"header_timeout\"}", 4.0).await,
        4.0
    );
    assert_eq!(
        srv.metric_settled("rds_iam_webhook_connections_closed_total{listener=\"metrics\",reason=\"header_timeout\"}", 1.0).await,
        1.0
    );
    srv.assert_peak_rss("slow headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_endless_bodies_get_408_at_the_body_timeout() {
    let _serial = serial().await;
    let srv = Server::start(&SHORT);
    let limit = BODY_TIMEOUT + MARGIN;

    // HTTP/1.1, 5,000 of 100,000 bytes, then nothing.
    let mut stopped = srv.tls(&[b"http/1.1"]).await;
    let start = Instant::now();
    stopped
        .write_all(
            format!("POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{}", "x".repeat(5000))
                .as_bytes(),
        )
        .await
        .unwrap();
    let stopped_h1 = tokio::spawn(async move {
        closed_within_printed("HTTP/1.1 stopped mid-body", stopped, start, limit).await
    });

    // HTTP/1.1, a chunked body that never ends: a chunk every 200 ms.
    let mut chunked = srv.tls(&[b"http/1.1"]).await;
    let start_c = Instant::now();
    chunked
        .write_all(format!("POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (r, mut w) = tokio::io::split(chunked);
    let feeder = tokio::spawn(async move {
        while w.write_all(b"5\r\n{{{{{\r\n").await.is_ok() && w.flush().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let endless = tokio::spawn(async move {
        closed_within_printed("HTTP/1.1 endless chunked body", r, start_c, limit).await
    });

    // HTTP/2, 5,000 of 100,000 bytes, then nothing.
    let (mut h2, _h2_task) = h2_client(&srv).await;
    let start_h2 = Instant::now();
    let resp = tokio::time::timeout(limit, h2.send_request(stalled_post(100_000, 5000)))
        .await
        .expect("HTTP/2 stream stopped mid-body: no answer within the body timeout")
        .unwrap();
    let h2_t = start_h2.elapsed();
    eprintln!(
        "figure: HTTP/2 stream stopped mid-body: {} after {h2_t:?}",
        resp.status()
    );
    assert_eq!(resp.status(), 408);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("--body-timeout"),
        "{body:?}"
    );

    srv.review("stopped bodies").await;
    for (what, task) in [("stopped h1", stopped_h1), ("endless h1", endless)] {
        let (t, response) = task.await.unwrap();
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 408 Request Timeout",
            "{what}"
        );
        assert!(
            t >= BODY_TIMEOUT - Duration::from_millis(300),
            "{what} answered after {t:?}"
        );
    }
    assert!(
        h2_t >= BODY_TIMEOUT - Duration::from_millis(300),
        "h2 answered after {h2_t:?}"
    );
    feeder.abort();
    assert_eq!(
        srv.metric_settled(
            "rds_iam_webhook_requests_refused_total{reason=\"body_timeout\"}",
            3.0
        )
        .await,
        3.0
    );
    srv.assert_peak_rss("stopped bodies");
}

/// The first OOM: 24 connections each sending a 3 MiB body but its
/// last 10 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_big_pending_bodies_stay_within_the_memory_bound() {
    let _serial = serial().await;
    let srv = Server::start(&SHORT);
    let limit = BODY_TIMEOUT + MARGIN;
    let declared = 3 * MIB as usize;
    let mut attackers = Vec::new();
    for _ in 0..24 {
        let tls = srv.tls(&[b"http/1.1"]).await;
        attackers.push(tokio::spawn(async move {
            let begun = Instant::now();
            let (r, mut w) = tokio::io::split(tls);
            let writer = tokio::spawn(async move {
                let head = format!("POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n");
                if w.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut left = declared - 10;
                while left > 0 {
                    let n = left.min(CHUNK.len());
                    if w.write_all(&CHUNK[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                let _ = w.flush().await;
                std::future::pending::<()>().await;
            });
            let closed = closed_within("3 MiB body missing its last 10 bytes", r, begun, limit).await;
            writer.abort();
            closed
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    srv.review("24 pending 3 MiB bodies").await;
    let statuses = answers("24 pending 3 MiB bodies", attackers).await;
    for status in statuses.keys() {
        // 408 or 503, or nothing if the server's reset overtook its answer
        // (it closes with the client's bytes unread).
        assert!(
            status == "HTTP/1.1 408 Request Timeout"
                || status == "HTTP/1.1 503 Service Unavailable"
                || status.is_empty(),
            "{statuses:?}"
        );
    }
    srv.assert_peak_rss("24 pending 3 MiB bodies");

    // With the attack over, a review of the API server's largest size is answered.
    let mut big = fixture("deployment-pod.json");
    common::annotate(
        &mut big,
        "example.com/blob",
        &"x".repeat(3 * MIB as usize - 10_000),
    );
    let mut conn = connect(srv.https, srv.tls_config(&[])).await.unwrap();
    let (status, body) = conn
        .request("POST", "/mutate", serde_json::to_vec(&big).unwrap())
        .await
        .unwrap();
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
}

/// The second OOM: 250 connections each sending a 380 KB header
/// line that never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_header_lines_are_refused() {
    let _serial = serial().await;
    let srv = Server::start(&SHORT);
    let limit = HEADER_TIMEOUT + MARGIN;
    let line = Arc::new(format!(
        "GET /healthz HTTP/1.1\r\nhost: {SERVER_NAME}\r\nx-long: {}",
        "a".repeat(380_000)
    ));
    let mut attackers = Vec::new();
    for _ in 0..250 {
        let tls = srv.tls(&[b"http/1.1"]).await;
        let line = line.clone();
        attackers.push(tokio::spawn(async move {
            let begun = Instant::now();
            let (r, mut w) = tokio::io::split(tls);
            let writer = tokio::spawn(async move {
                let _ = w.write_all(line.as_bytes()).await;
                let _ = w.flush().await;
                std::future::pending::<()>().await;
            });
            let closed = closed_within("380 KB header line", r, begun, limit).await;
            writer.abort();
            closed
        }));
    }
    srv.review("250 endless 380 KB header lines").await;
    let statuses = answers("250 endless 380 KB header lines", attackers).await;
    for status in statuses.keys() {
        // 431, or nothing if the reset overtook it.
        assert!(
            status == "HTTP/1.1 431 Request Header Fields Too Large" || status.is_empty(),
            "{statuses:?}"
        );
    }
    srv.assert_peak_rss("250 endless 380 KB header lines");
}

/// The third: one HTTP/2 connection, 200 streams each buffering
/// nearly 3 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_h2_connection_with_200_big_streams_stays_within_the_memory_bound() {
    let _serial = serial().await;
    let srv = Server::start(&SHORT);

    // The server announces its stream limit in its first SETTINGS frame.
    let mut raw = srv.tls(&[b"h2"]).await;
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(0x4, 0, 0, &[]));
    raw.write_all(&hello).await.unwrap();
    let mut head = [0u8; 9];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "the server starts with SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut settings = vec![0u8; len];
    raw.read_exact(&mut settings).await.unwrap();
    let max_streams = settings
        .chunks(6)
        .find(|s| s[..2] == [0, 3])
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    eprintln!("figure: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS {max_streams:?}");
    assert_eq!(max_streams, Some(16));
    drop(raw);

    let (h2, _task) = h2_client(&srv).await;
    let declared = 3 * MIB as usize;
    let start = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut h2 = h2.clone();
        streams.push(tokio::spawn(async move {
            let resp = h2.send_request(stalled_post(declared, declared - 10)).await;
            resp.map(|r| r.status().as_u16())
                .map_err(|e| format!("{e:?}"))
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    srv.review("200 HTTP/2 streams of nearly 3 MiB").await;
    tokio::time::sleep(BODY_TIMEOUT + Duration::from_millis(500)).await;
    // 408 or 503, or refused: streams the client opened before it had the
    // server's SETTINGS, over the limit. The client keeps the rest queued.
    let mut outcomes = std::collections::BTreeMap::new();
    for s in streams {
        if !s.is_finished() {
            s.abort();
            *outcomes
                .entry("queued by the client".to_owned())
                .or_insert(0) += 1;
            continue;
        }
        let outcome = match s.await.unwrap() {
            Ok(status) => status.to_string(),
            Err(e) if e.contains("REFUSED_STREAM") => "REFUSED_STREAM".to_owned(),
            Err(e) => e,
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    eprintln!(
        "figure: 200 HTTP/2 streams: {outcomes:?} after {:?}",
        start.elapsed()
    );
    let answered = outcomes.get("408").unwrap_or(&0) + outcomes.get("503").unwrap_or(&0);
    assert!(answered >= 16, "{outcomes:?}");
    for k in outcomes.keys() {
        assert!(
            ["408", "503", "REFUSED_STREAM", "queued by the client"].contains(&k.as_str()),
            "{outcomes:?}"
        );
    }
    srv.assert_peak_rss("200 HTTP/2 streams of nearly 3 MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_existing_connections_keep_working() {
    let _serial = serial().await;
    let srv = Server::start(&[
        ("RDS_IAM_WEBHOOK_MAX_CONNECTIONS", "8"),
        ("RDS_IAM_WEBHOOK_IDLE_TIMEOUT", "60s"),
        ("RDS_IAM_WEBHOOK_HEADER_TIMEOUT", "10s"),
    ]);
    // A client that uses its connection.
    let mut used = connect(srv.https, srv.tls_config(&[])).await.unwrap();
    let (status, _) = used.request("GET", "/healthz", vec![]).await.unwrap();
    assert_eq!(status, 200);
    // Twelve connections that never send a request: at most seven fit.
    let idle = hold_unused_connections(&srv, 12);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = srv
        .metric("rds_iam_webhook_connections{listener=\"https\"}")
        .await;
    assert!(open <= 8.0, "{open} connections open with a cap of 8");
    // The connection in use keeps working.
    let (status, _) = used.request("GET", "/healthz", vec![]).await.unwrap();
    assert_eq!(status, 200);
    // A new client gets in: the unused connections make room.
    let start = Instant::now();
    let mut fresh = tokio::time::timeout(
        Duration::from_secs(5),
        connect(srv.https, srv.tls_config(&[])),
    )
    .await
    .expect("a new connection was not served within 5 s at the cap")
    .unwrap();
    let (status, _) = fresh.request("GET", "/healthz", vec![]).await.unwrap();
    assert_eq!(status, 200);
    eprintln!(
        "figure: connection cap 8: a new client served after {:?}",
        start.elapsed()
    );
    let (status, _) = used.request("GET", "/healthz", vec![]).await.unwrap();
    assert_eq!(status, 200);
    let overload = srv
        .metric_reaches(
            "rds_iam_webhook_connections_closed_total{listener=\"https\",reason=\"overload\"}",
            1.0,
        )
        .await;
    assert!(overload >= 1.0, "{overload} connections closed for room");
    for t in idle {
        t.abort();
    }
    srv.assert_peak_rss("connection cap");
}

/// `n` connections that complete the TLS handshake (once the server accepts
/// them) and never send a request; they stay open until the tasks are aborted.
fn hold_unused_connections(srv: &Server, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let cfg = srv.tls_config(&[]);
            let addr = srv.https;
            tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let tls = TlsConnector::from(cfg)
                    .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
                    .await;
                std::future::pending::<()>().await;
                drop(tls);
            })
        })
        .collect()
}

/// The fourth: with 256 descriptors, 240 idle TLS connections made
/// `/healthz` time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_a_256_descriptor_limit_leave_healthz_answering() {
    let _serial = serial().await;
    let prlimit = ["/usr/bin/prlimit", "--nofile=256:256", "--"];
    assert!(
        std::path::Path::new(prlimit[0]).is_file(),
        "{} is missing: install util-linux",
        prlimit[0]
    );
    let srv = Server::start_under(&prlimit, &[("RDS_IAM_WEBHOOK_IDLE_TIMEOUT", "60s")]);
    let idle = hold_unused_connections(&srv, 240);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut conn = connect(srv.https, srv.tls_config(&[])).await?;
        conn.request("GET", "/healthz", vec![]).await
    })
    .await
    .expect("/healthz on a new connection got no answer within 5 s")
    .unwrap();
    assert_eq!(answer.0, 200);
    eprintln!(
        "figure: 240 idle connections, 256 descriptors: /healthz after {:?}",
        start.elapsed()
    );
    assert!(
        srv.log_text().contains("open-file limit"),
        "no warning about the open-file limit:\n{}",
        srv.log_text()
    );
    for t in idle {
        t.abort();
    }
    srv.assert_peak_rss("240 idle connections at 256 descriptors");
}

/// Reviews whose env costs the most to expand: five levels of 20 nested
/// `$(VAR)` references (3 KB of env that would expand to 1.3 GB: it took
/// 1 GB before the budget), and a 2.8 MB value of unclosed `$(` (quadratic
/// before: each looked for a `)` to the end). Each is answered, warned about
/// when over the budget, and the server stays within the memory bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_that_is_costly_to_expand_stays_within_the_memory_bound() {
    let _serial = serial().await;
    let srv = Server::start(&SHORT);
    let mut nested = fixture("irsa-pod.json");
    assert_eq!(common::nest_env(&mut nested, "migrate", 13, 20, 5), "V5");
    let body = serde_json::to_vec(&nested).unwrap();
    assert!(body.len() < 8_000, "{} bytes", body.len());
    let (took, v) = srv.post_review("nested references", body).await;
    eprintln!("figure: five levels of 20 nested references: answered in {took:?}");
    assert!(patch_of(&v).is_some(), "{v}");
    // V3 is 104,000 bytes; V4 (2,080,000) overruns.
    let warnings = v["response"]["warnings"].to_string();
    assert!(
        warnings.contains("V4 in container \\\"migrate\\\": $(VAR) references expand past"),
        "{warnings}"
    );
    srv.assert_peak_rss("five levels of 20 nested references");

    let mut unclosed = fixture("irsa-pod.json");
    unclosed["request"]["object"]["spec"]["initContainers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .insert(
            0,
            serde_json::json!({"name": "PAD", "value": "$(".repeat(1_400_000)}),
        );
    let (took, v) = srv
        .post_review(
            "1.4 million unclosed $(",
            serde_json::to_vec(&unclosed).unwrap(),
        )
        .await;
    eprintln!("figure: a 2.8 MB value of unclosed $(: answered in {took:?}");
    assert!(patch_of(&v).is_some(), "{v}");
    assert_eq!(
        v["response"]["warnings"],
        serde_json::Value::Null,
        "{}",
        v["response"]["warnings"]
    );
    srv.assert_peak_rss("a 2.8 MB value of unclosed $(");
}

/// Reviews that cost the most to decode and answer, eight at once: 20,000
/// minimal containers (1 MB; each target would get its own env, a 27 MB
/// patch) are denied past 256 targets; 32,000 minimal volumes (1 MB) took
/// over 200 MiB to decode into k8s-openapi's types. The server runs 8
/// worker threads, as on a bigger node; big reviews are answered one at a
/// time, so they do not add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_costly_to_decode_stay_within_the_memory_bound() {
    let _serial = serial().await;
    let mut env = SHORT.to_vec();
    env.push(("TOKIO_WORKER_THREADS", "8"));
    let srv = Arc::new(Server::start(&env));
    let mut containers = fixture("deployment-pod.json");
    containers["request"]["object"]["spec"]["containers"] = (0..20_000)
        .map(|i| serde_json::json!({"name": format!("a{i}"), "env": [{"name": "X", "value": "1"}]}))
        .collect();
    let mut volumes = fixture("deployment-pod.json");
    volumes["request"]["object"]["spec"]["volumes"] = (0..32_000)
        .map(|i| serde_json::json!({"name": format!("v{i}"), "emptyDir": {}}))
        .collect();
    let bodies = [
        serde_json::to_vec(&containers).unwrap(),
        serde_json::to_vec(&volumes).unwrap(),
    ];
    for (what, body) in ["20,000 containers", "32,000 volumes"].iter().zip(&bodies) {
        eprintln!("figure: {what}: a review of {} bytes", body.len());
    }
    let answers: Vec<_> = (0..4)
        .flat_map(|_| {
            bodies
                .iter()
                .cloned()
                .zip(["20,000 containers", "32,000 volumes"])
        })
        .map(|(body, what)| {
            let srv = srv.clone();
            tokio::spawn(async move { (what, srv.post_review(what, body).await) })
        })
        .collect();
    for a in answers {
        let (what, (took, v)) = a.await.unwrap();
        eprintln!("figure: {what}, 8 reviews at once: answered in {took:?}");
        let r = &v["response"];
        if what == "32,000 volumes" {
            assert!(patch_of(&v).is_some(), "{what}: {r}");
        } else {
            assert_eq!(
                r["status"]["message"],
                "annotation rds-iam/containers: the pod has 20000 target containers (every app container, unless rds-iam/containers names them), and the webhook serves at most 256; name only the containers that connect to a database in rds-iam/containers"
            );
        }
    }
    srv.assert_peak_rss("20,000 containers and 32,000 volumes, four reviews of each at once");
}

/// Starts a review whose body never comes, and returns its connection.
async fn review_in_flight(srv: &Server) -> TlsStream<TcpStream> {
    let mut tls = srv.tls(&[b"http/1.1"]).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    tls.write_all(b"{\"apiVersion\":").await.unwrap();
    tls.flush().await.unwrap();
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let _serial = serial().await;
    let mut srv = Server::start(&[
        ("RDS_IAM_WEBHOOK_DRAIN_TIMEOUT", "30s"),
        ("RDS_IAM_WEBHOOK_BODY_TIMEOUT", "60s"),
    ]);
    let _in_flight = review_in_flight(&srv).await;
    srv.signal("TERM");
    assert_eq!(
        srv.wait_exit(Duration::from_millis(500)),
        None,
        "the first SIGTERM drains"
    );
    let start = Instant::now();
    srv.signal("TERM");
    let status = srv
        .wait_exit(Duration::from_secs(2))
        .expect("still running 2 s after a second SIGTERM");
    eprintln!(
        "figure: second SIGTERM: exited after {:?} with {status}",
        start.elapsed()
    );
    assert_eq!(status.code(), Some(143), "{status}");
    let logs = srv.log_text();
    assert!(logs.contains("second signal received"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_logs_how_many_connections_it_cut() {
    let _serial = serial().await;
    let mut srv = Server::start(&[
        ("RDS_IAM_WEBHOOK_DRAIN_TIMEOUT", "1s"),
        ("RDS_IAM_WEBHOOK_BODY_TIMEOUT", "60s"),
    ]);
    let _a = review_in_flight(&srv).await;
    let _b = review_in_flight(&srv).await;
    // An idle connection is closed by the drain, not cut.
    let mut idle = connect(srv.https, srv.tls_config(&[])).await.unwrap();
    assert_eq!(
        idle.request("GET", "/healthz", vec![]).await.unwrap().0,
        200
    );
    srv.signal("TERM");
    let status = srv
        .wait_exit(Duration::from_secs(1) + Duration::from_secs(5))
        .expect("still running after the drain timeout");
    assert!(status.success(), "{status}");
    let logs = srv.log_text();
    let stopped: serde_json::Value = logs
        .lines()
        .filter(|l| l.contains("rds-iam-webhook stopped"))
        .map(|l| serde_json::from_str(l).unwrap())
        .next()
        .unwrap_or_else(|| panic!("no stop line in\n{logs}"));
    assert_eq!(stopped["connections_cut"], 2, "{stopped}");
    assert!(logs.contains("drain timeout reached"), "{logs}");
}

/// Every kind of client at once, at the default limits: 1,000 connections
/// (the cap), 960 of them stopped after 15 KB of a request head, 24 sending
/// 3 MiB bodies but their last 10 bytes, one HTTP/2 connection with 16
/// streams doing the same, and the rest idle. A benchmark rather than a test
/// (about 30 s, and it needs more than 1,024 descriptors): run by
/// `webhook/benches/hostile.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by webhook/benches/hostile.sh"]
async fn everything_at_once_at_the_default_limits() {
    let _serial = serial().await;
    rds_iam_webhook::limits::raise_fd_limit().unwrap();
    let srv = Server::start(&[]);
    let mut held = Vec::new();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\nx-pad: {}",
        "a".repeat(15_000)
    );
    for _ in 0..960 {
        let mut tls = srv.tls(&[b"http/1.1"]).await;
        tls.write_all(head.as_bytes()).await.unwrap();
        held.push(tls);
    }
    let (_, after_heads) = srv.rss_kib();
    eprintln!(
        "figure: 960 connections stopped after 15 KB of head: peak RSS {:.1} MiB",
        after_heads as f64 / 1024.0
    );
    let declared = 3 * MIB as usize;
    let mut bodies = Vec::new();
    for _ in 0..24 {
        let mut tls = srv.tls(&[b"http/1.1"]).await;
        bodies.push(tokio::spawn(async move {
            let head = format!("POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n");
            let _ = tls.write_all(head.as_bytes()).await;
            let mut left = declared - 10;
            while left > 0 {
                let n = left.min(CHUNK.len());
                if tls.write_all(&CHUNK[..n]).await.is_err() {
                    break;
                }
                left -= n;
            }
            std::future::pending::<()>().await;
            drop(tls);
        }));
    }
    let (h2, _task) = h2_client(&srv).await;
    for _ in 0..16 {
        let mut h2 = h2.clone();
        bodies.push(tokio::spawn(async move {
            let _ = h2.send_request(stalled_post(declared, declared - 10)).await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    srv.review("everything at once").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = srv
        .metric("rds_iam_webhook_connections{listener=\"https\"}")
        .await;
    eprintln!("figure: everything at once: {open} connections open");
    let (_, hwm) = srv.rss_kib();
    eprintln!(
        "figure: everything at once: peak RSS {:.1} MiB",
        hwm as f64 / 1024.0
    );
    assert!(
        hwm < 128 * 1024,
        "peak RSS {hwm} KiB is over the manifests' 128 Mi limit"
    );
    for b in bodies {
        b.abort();
    }
    drop(held);
}
