//! Real HTTPS: a rustls client trusting a test CA talks to `server::run`;
//! certificates rotate by a kubelet-style `..data` symlink swap.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls_client::*;
use common::*;
use rds_iam_webhook::server::{run, ServeError, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    https: SocketAddr,
    metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    async fn metrics_text(&self) -> String {
        let (status, text) = http_get(self.metrics, "/metrics").await;
        assert_eq!(status, 200);
        text
    }

    /// Waits (polling, with a deadline) until a metric reaches `want`.
    async fn wait_metric(&self, series: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.metrics_text().await;
            if sample(&text, series) >= want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} never reached {want}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

/// Starts the server and returns once it serves metrics, which it does only
/// after loading the certificate and starting the watcher.
async fn start(secret: &SecretDir) -> Running {
    let srv = spawn(secret);
    let (status, _) = http_get(srv.metrics, "/metrics").await;
    assert_eq!(status, 200);
    srv
}

/// A server with one certificate from a new CA. The directory holds the
/// certificate files, so keep it for as long as the server runs.
async fn start_with_new_ca() -> (TestCa, Leaf, tempfile::TempDir, Running) {
    let ca = TestCa::new();
    let leaf = ca.leaf(&[SERVER_NAME]);
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretDir::new(dir.path(), &leaf.cert_pem, &leaf.key_pem);
    let srv = start(&secret).await;
    (ca, leaf, dir, srv)
}

fn spawn(secret: &SecretDir) -> Running {
    let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (https_addr, metrics_addr) = (https.local_addr().unwrap(), metrics.local_addr().unwrap());
    let opts = ServeOptions {
        tls_cert: secret.cert(),
        tls_key: secret.key(),
        agent: config(),
        drain_timeout: Duration::from_secs(10),
        reload_debounce: Duration::from_millis(200),
        limits: rds_iam_webhook::limits::Limits::default(),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(https, metrics, opts, async move {
        let _ = rx.await;
    }));
    Running {
        https: https_addr,
        metrics: metrics_addr,
        stop: Some(tx),
        task,
    }
}

fn both_versions() -> [&'static rustls::SupportedProtocolVersion; 2] {
    [&rustls::version::TLS13, &rustls::version::TLS12]
}

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&fixture("deployment-pod.json")).unwrap()
}

fn assert_patched(body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["response"]["allowed"], true, "{v}");
    assert!(patch_of(&v).is_some(), "{v}");
}

/// Connects until the server presents `want` (the reload is asynchronous).
async fn wait_for_cert(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let conn = connect(addr, cfg.clone()).await.unwrap();
        if conn.peer_cert == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_over_tls_12_and_13_with_metrics() {
    let (ca, leaf, _dir, srv) = start_with_new_ca().await;

    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut conn = connect(srv.https, client_config(&ca.der(), &[version]))
            .await
            .unwrap();
        assert_eq!(conn.version, want);
        assert_eq!(conn.peer_cert, leaf.der);
        let (status, body) = conn
            .request("POST", "/mutate", review_body())
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_patched(&body);
        // Keep-alive: a second request on the same connection.
        let (status, body) = conn.request("GET", "/healthz", vec![]).await.unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    }
    let mut conn = connect(srv.https, client_config(&ca.der(), &both_versions()))
        .await
        .unwrap();
    let (status, body) = conn
        .request("POST", "/mutate", b"not json".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8(body).unwrap().contains("\"error\""));
    let (status, _) = conn.request("GET", "/readyz", vec![]).await.unwrap();
    assert_eq!(status, 200);

    // A client that trusts another CA is refused.
    let other = TestCa::new();
    let err = connect(srv.https, client_config(&other.der(), &both_versions()))
        .await
        .err()
        .unwrap();
    assert!(err.starts_with("tls:"), "{err}");

    let text = srv.metrics_text().await;
    assert_eq!(
        sample(&text, "rds_iam_webhook_reviews_total{result=\"patched\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "rds_iam_webhook_reviews_total{result=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "rds_iam_webhook_reviews_total{result=\"denied\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "rds_iam_webhook_review_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        sample(&text, "rds_iam_webhook_cert_reloads_total{result=\"ok\"}"),
        0.0
    );
    // rcgen's default notAfter: 4096-01-01T00:00:00Z.
    assert_eq!(
        sample(&text, "rds_iam_webhook_cert_expiry_timestamp_seconds"),
        67_090_118_400.0
    );
    assert_eq!(sample(&text, "rds_iam_webhook_cert_expiring_soon"), 0.0);
    srv.shutdown().await;
}

/// The API server speaks HTTP/2 to webhooks when the server offers it, and
/// the webhook offers `h2` by ALPN, so reviews must work over HTTP/2 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_over_http2() {
    let (ca, _, _dir, srv) = start_with_new_ca().await;
    let (alpn, status, body) = h2_request(srv.https, &ca.der(), "POST", "/mutate", review_body())
        .await
        .unwrap();
    assert_eq!(alpn, b"h2");
    assert_eq!(status, 200);
    assert_patched(&body);
    let (_, status, body) = h2_request(srv.https, &ca.der(), "POST", "/mutate", b"{".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8(body).unwrap().contains("\"error\""));
    srv.shutdown().await;
}

/// `TCP_NODELAY` of the connected TCP socket open in this process whose ends
/// are `local` and `peer`, or `None` if there is no such socket. The server
/// runs in this process, so its accepted sockets are among our descriptors.
#[allow(unsafe_code)]
fn nodelay_of(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    use std::os::fd::FromRawFd;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: only getsockname/getpeername/getsockopt are called on the
        // descriptor, and ManuallyDrop never closes it, so its owner (the
        // server or the client) is unaffected. If it was closed and reused
        // meanwhile, the calls fail or report other addresses and it is skipped.
        let sock = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        if sock.local_addr().ok() == Some(local) && sock.peer_addr().ok() == Some(peer) {
            return Some(sock.nodelay().unwrap());
        }
    }
    None
}

/// With Nagle's algorithm on, a response written in two segments waits for
/// the client's delayed ACK of the first: about 40 ms on Linux. The server
/// must disable it on every connection it accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_connections_disable_nagle() {
    let (ca, _, _dir, srv) = start_with_new_ca().await;
    let mut conn = connect(srv.https, client_config(&ca.der(), &both_versions()))
        .await
        .unwrap();
    let (status, body) = conn
        .request("POST", "/mutate", review_body())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_patched(&body);
    // The server's end of this connection, found by its two addresses.
    assert_eq!(nodelay_of(srv.https, conn.local_addr), Some(true));
    // The probe reads the real option: the test client leaves Nagle on.
    assert_eq!(nodelay_of(conn.local_addr, srv.https), Some(false));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_style_rotation_under_load_loses_no_request() {
    let ca = TestCa::new();
    let a = ca.leaf(&[SERVER_NAME]);
    let b = ca.leaf(&[SERVER_NAME]);
    let dir = tempfile::tempdir().unwrap();
    let mut secret = SecretDir::new(dir.path(), &a.cert_pem, &a.key_pem);
    let srv = start(&secret).await;
    let cfg = client_config(&ca.der(), &both_versions());

    // A client loop: a new connection every 5 requests, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, cfg, addr, body) = (stop.clone(), cfg.clone(), srv.https, review_body());
        tokio::spawn(async move {
            let (mut ok, mut failures, mut certs) =
                (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(Ordering::Relaxed) {
                match connect(addr, cfg.clone()).await {
                    Ok(mut conn) => {
                        certs.insert(conn.peer_cert.clone());
                        for _ in 0..5 {
                            match conn.request("POST", "/mutate", body.clone()).await {
                                Ok((200, resp)) => {
                                    assert_patched(&resp);
                                    ok += 1;
                                }
                                Ok((status, resp)) => failures
                                    .push(format!("{status}: {}", String::from_utf8_lossy(&resp))),
                                Err(e) => failures.push(e),
                            }
                        }
                    }
                    Err(e) => failures.push(e),
                }
            }
            (ok, failures, certs)
        })
    };

    srv.wait_metric("rds_iam_webhook_reviews_total{result=\"patched\"}", 100.0)
        .await;
    secret.swap(&b.cert_pem, &b.key_pem);
    wait_for_cert(srv.https, cfg.clone(), &b.der).await;
    let text = srv.metrics_text().await;
    let after_swap = sample(&text, "rds_iam_webhook_reviews_total{result=\"patched\"}");
    srv.wait_metric(
        "rds_iam_webhook_reviews_total{result=\"patched\"}",
        after_swap + 100.0,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures, certs) = client.await.unwrap();

    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    assert!(ok >= 200, "only {ok} requests");
    assert!(
        certs.contains(&a.der) && certs.contains(&b.der),
        "the loop saw both certificates"
    );
    let text = srv.metrics_text().await;
    assert_eq!(
        sample(&text, "rds_iam_webhook_cert_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "rds_iam_webhook_cert_reloads_total{result=\"error\"}"
        ),
        0.0
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_ignored_and_the_old_one_kept() {
    let ca = TestCa::new();
    let a = ca.leaf(&[SERVER_NAME]);
    let b = ca.leaf(&[SERVER_NAME]);
    let c = ca.leaf(&[SERVER_NAME]);
    let dir = tempfile::tempdir().unwrap();
    let mut secret = SecretDir::new(dir.path(), &a.cert_pem, &a.key_pem);
    let srv = start(&secret).await;
    let cfg = client_config(&ca.der(), &both_versions());
    let errors = "rds_iam_webhook_cert_reloads_total{result=\"error\"}";

    // Garbage.
    secret.swap(
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        &a.key_pem,
    );
    srv.wait_metric(errors, 1.0).await;
    let mut conn = connect(srv.https, cfg.clone()).await.unwrap();
    assert_eq!(conn.peer_cert, a.der, "old certificate kept");
    let (status, _) = conn
        .request("POST", "/mutate", review_body())
        .await
        .unwrap();
    assert_eq!(status, 200);

    // A key that does not belong to the certificate.
    secret.swap(&b.cert_pem, &c.key_pem);
    srv.wait_metric(errors, 2.0).await;
    assert_eq!(
        connect(srv.https, cfg.clone()).await.unwrap().peer_cert,
        a.der
    );

    // Empty files (a half-written update).
    secret.swap("", "");
    srv.wait_metric(errors, 3.0).await;
    assert_eq!(
        connect(srv.https, cfg.clone()).await.unwrap().peer_cert,
        a.der
    );

    // A good pair is picked up again.
    secret.swap(&c.cert_pem, &c.key_pem);
    wait_for_cert(srv.https, cfg.clone(), &c.der).await;
    let text = srv.metrics_text().await;
    assert_eq!(
        sample(&text, "rds_iam_webhook_cert_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(sample(&text, errors), 3.0);
    srv.shutdown().await;
}

/// An expired or not-yet-valid certificate would be served and rejected by
/// every client: the reload refuses it, counts an error and keeps the pair
/// in use; a not-yet-valid one is loaded once its notBefore has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_certificates_are_refused_until_valid() {
    let ca = TestCa::new();
    let a = ca.leaf(&[SERVER_NAME]);
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let day = time::Duration::days(1);
    let expired = ca.leaf_valid(&[SERVER_NAME], now - day * 30, now - day);
    let until = now + time::Duration::days(30);
    let soon_valid = ca.leaf_valid(&[SERVER_NAME], now + time::Duration::seconds(3), until);
    let dir = tempfile::tempdir().unwrap();
    let mut secret = SecretDir::new(dir.path(), &a.cert_pem, &a.key_pem);
    let srv = start(&secret).await;
    let cfg = client_config(&ca.der(), &both_versions());
    let errors = "rds_iam_webhook_cert_reloads_total{result=\"error\"}";
    let oks = "rds_iam_webhook_cert_reloads_total{result=\"ok\"}";

    secret.swap(&expired.cert_pem, &expired.key_pem);
    srv.wait_metric(errors, 1.0).await;
    let mut conn = connect(srv.https, cfg.clone()).await.unwrap();
    assert_eq!(
        conn.peer_cert, a.der,
        "the expired certificate is not served"
    );
    let (status, _) = conn
        .request("POST", "/mutate", review_body())
        .await
        .unwrap();
    assert_eq!(status, 200);

    secret.swap(&soon_valid.cert_pem, &soon_valid.key_pem);
    srv.wait_metric(errors, 2.0).await;
    assert_eq!(
        connect(srv.https, cfg.clone()).await.unwrap().peer_cert,
        a.der,
        "the not-yet-valid certificate is not served"
    );
    let text = srv.metrics_text().await;
    assert_eq!(sample(&text, oks), 0.0);
    assert_eq!(sample(&text, "rds_iam_webhook_cert_expiring_soon"), 0.0);

    // No file changes again: the watcher retries at notBefore by itself.
    wait_for_cert(srv.https, cfg.clone(), &soon_valid.der).await;
    let text = srv.metrics_text().await;
    assert_eq!(sample(&text, oks), 1.0);
    assert_eq!(sample(&text, errors), 2.0);
    assert_eq!(
        sample(&text, "rds_iam_webhook_cert_expiry_timestamp_seconds"),
        until.unix_timestamp() as f64
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn startup_refuses_an_expired_or_not_yet_valid_certificate() {
    let ca = TestCa::new();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    for (leaf, want) in [
        (
            ca.leaf_valid(&[SERVER_NAME], now - day * 30, now - day),
            "expired at",
        ),
        (
            ca.leaf_valid(&[SERVER_NAME], now + day, now + day * 30),
            "not valid before",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretDir::new(dir.path(), &leaf.cert_pem, &leaf.key_pem);
        let err = tokio::time::timeout(Duration::from_secs(10), spawn(&secret).task)
            .await
            .unwrap_or_else(|_| {
                panic!("the server started with a certificate it must refuse ({want})")
            })
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.crt") && err.contains(want), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_certificate_is_flagged() {
    let ca = TestCa::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3);
    let not_after = not_after.replace_nanosecond(0).unwrap();
    params.not_after = not_after;
    let leaf = ca.leaf(&[SERVER_NAME]);
    // Self-signed is enough here: the test reads metrics, not the chain.
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut secret = SecretDir::new(dir.path(), &cert.pem(), &key.serialize_pem());
    let srv = start(&secret).await;
    let text = srv.metrics_text().await;
    assert_eq!(sample(&text, "rds_iam_webhook_cert_expiring_soon"), 1.0);
    assert_eq!(
        sample(&text, "rds_iam_webhook_cert_expiry_timestamp_seconds"),
        not_after.unix_timestamp() as f64
    );
    // Rotating to a long-lived certificate clears the flag.
    secret.swap(&leaf.cert_pem, &leaf.key_pem);
    srv.wait_metric("rds_iam_webhook_cert_reloads_total{result=\"ok\"}", 1.0)
        .await;
    let text = srv.metrics_text().await;
    assert_eq!(sample(&text, "rds_iam_webhook_cert_expiring_soon"), 0.0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_review_in_flight_then_stops() {
    let (ca, _, _dir, mut srv) = start_with_new_ca().await;
    let cfg = client_config(&ca.der(), &both_versions());

    // Start a review: headers with Expect: 100-continue; the server answers
    // "100 Continue" once the handler reads the body, so the review is in flight.
    let tcp = tokio::net::TcpStream::connect(srv.https).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(
            rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let body = review_body();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));

    // SIGTERM equivalent while the body is still on its way.
    srv.stop.take().unwrap().send(()).unwrap();
    // New connections are no longer served once the listener closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect(srv.https, cfg.clone()).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !srv.task.is_finished(),
        "the server waits for the review in flight"
    );

    tls.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let json_start = text.find("\r\n\r\n").unwrap() + 4;
    assert_patched(&response[json_start..]);

    tokio::time::timeout(Duration::from_secs(10), &mut srv.task)
        .await
        .expect("server stops after the in-flight review")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn startup_fails_clearly_on_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretDir::new(dir.path(), "nothing here", "nor here");
    let srv = spawn(&secret);
    let err = srv.task.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("tls.crt") && err.contains("no PEM certificate"),
        "{err}"
    );
}

#[test]
fn the_binary_warns_about_expiry_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_rds-iam-webhook"))
        .args([
            "certs",
            "--out",
            certs.to_str().unwrap(),
            "--base",
            ".",
            "--days",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut child = serve_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_rds-iam-webhook")),
        &certs.join("tls.crt"),
        &certs.join("tls.key"),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let serving = line.contains("rds-iam-webhook serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let last = seen.last().cloned().unwrap_or_default();
    let log: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    assert!(
        log["https_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{log}"
    );

    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}: {rest:?}");
    let text = rest.join("\n");
    for want in ["SIGTERM received", "draining", "rds-iam-webhook stopped"] {
        assert!(text.contains(want), "no {want:?} in {text}");
    }
}
