//! Loopback stand-ins for the AWS credential endpoints the agent's real
//! aws-config chain talks to: STS (AssumeRoleWithWebIdentity, for IRSA), the
//! EKS Pod Identity agent, and IMDSv2. Each records what it received and
//! hands out credentials that the tests also register with [`crate::pgrds`],
//! so a token signed with them really logs in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// The runtime the stubs of a test binary run on (two workers, made once),
/// for tests that are otherwise synchronous: `runtime().block_on(Stub::sts())`.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the stubs' tokio runtime")
    })
}

/// Temporary credentials a stub hands out.
#[derive(Debug, Clone)]
pub struct IssuedCreds {
    pub akid: String,
    pub secret: String,
    pub session_token: String,
}

impl IssuedCreds {
    /// Fresh random credentials; the session token is `token_len` bytes,
    /// as long as real STS session tokens (often 800+ bytes).
    pub fn random(token_len: usize) -> Self {
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let pick = |set: &[u8], n: usize| -> String {
            (0..n)
                .map(|_| set[rand::random_range(0..set.len())] as char)
                .collect()
        };
        Self {
            akid: format!("ASIA{}", pick(UPPER, 16)),
            secret: pick(B64, 40),
            session_token: format!("{}==", pick(B64, token_len.saturating_sub(2))),
        }
    }
}

/// How a stub answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hand out the credentials.
    Ok,
    /// 403 AccessDenied (STS) / 403 (others).
    Deny,
    /// 500 Internal Server Error.
    Fail,
    /// Never answer.
    Hang,
    /// The credentials answer cut off right after the session token (the
    /// secret key, before it, is complete too).
    Truncated,
    /// The credentials answer, with status 500.
    FailWithCredentials,
}

/// The `Expiration` a stub writes into its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// This long from now.
    In(Duration),
    /// This long ago.
    Ago(Duration),
    /// This text, e.g. `not-a-date`.
    Text(String),
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

struct Inner {
    creds: Mutex<IssuedCreds>,
    expiry: Mutex<Expiry>,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<Seen>>,
}

/// A running stub server on 127.0.0.1.
#[derive(Clone)]
pub struct Stub {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Stub {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn creds(&self) -> IssuedCreds {
        self.inner
            .creds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub fn set_creds(&self, c: IssuedCreds) {
        *self.inner.creds.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }
    pub fn set_mode(&self, m: Mode) {
        *self.inner.mode.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }
    /// How long handed-out credentials live.
    pub fn set_lifetime(&self, d: Duration) {
        self.set_expiry(Expiry::In(d));
    }
    /// The `Expiration` of handed-out credentials.
    pub fn set_expiry(&self, e: Expiry) {
        *self.inner.expiry.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts an STS stub (awsQuery protocol: form-encoded POST, XML answer).
    pub async fn sts() -> anyhow::Result<Stub> {
        Self::start(sts_answer).await
    }

    /// Starts an EKS Pod Identity agent stub (GET, JSON answer).
    pub async fn pod_identity() -> anyhow::Result<Stub> {
        Self::start(container_answer).await
    }

    /// Starts an IMDSv2 stub.
    pub async fn imds() -> anyhow::Result<Stub> {
        Self::start(imds_answer).await
    }

    async fn start(answer: fn(&Inner, &Seen) -> Response) -> anyhow::Result<Stub> {
        let inner = Arc::new(Inner {
            creds: Mutex::new(IssuedCreds::random(900)),
            expiry: Mutex::new(Expiry::In(Duration::from_secs(3600))),
            mode: Mutex::new(Mode::Ok),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .fallback(
                move |State(inner): State<Arc<Inner>>,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap,
                      body: Bytes| async move {
                    let seen = Seen {
                        method,
                        path: uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    inner
                        .seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(seen.clone());
                    let mode = *inner.mode.lock().unwrap_or_else(|e| e.into_inner());
                    match mode {
                        Mode::Hang => std::future::pending::<Response>().await,
                        Mode::Fail => {
                            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
                        }
                        Mode::Deny | Mode::Ok => answer(&inner, &seen),
                        Mode::Truncated | Mode::FailWithCredentials => {
                            malformed(mode, &inner, answer(&inner, &seen)).await
                        }
                    }
                },
            )
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Stub { addr, inner })
    }
}

fn expiration(inner: &Inner) -> String {
    let at = |t| humantime::format_rfc3339_seconds(t).to_string();
    match &*inner.expiry.lock().unwrap_or_else(|e| e.into_inner()) {
        Expiry::In(d) => at(SystemTime::now() + *d),
        Expiry::Ago(d) => at(SystemTime::now() - *d),
        Expiry::Text(t) => t.clone(),
    }
}

/// Turns a good credentials answer into a `Truncated` or
/// `FailWithCredentials` one (other answers, like the IMDS session token,
/// stay good).
async fn malformed(mode: Mode, inner: &Inner, good: Response) -> Response {
    let (mut parts, body) = good.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    if !bytes.windows(15).any(|w| w == b"SecretAccessKey") {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let token = inner
        .creds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .session_token
        .clone();
    let bytes = match mode {
        Mode::Truncated => {
            let end = bytes
                .windows(token.len())
                .position(|w| w == token.as_bytes())
                .map_or(bytes.len(), |p| p + token.len());
            bytes.slice(..end)
        }
        _ => {
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            bytes
        }
    };
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// A credential endpoint (any path, any method) that answers every request
/// with `200` and a body of `padding` spaces followed by `json`: valid JSON
/// credentials behind hundreds of megabytes. The body is streamed (never
/// held in memory), with a `Content-Length` if `declared`, else chunked.
pub async fn padded_endpoint(json: String, padding: u64, declared: bool) -> anyhow::Result<Padded> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let padded = Padded {
        addr: listener.local_addr()?,
        sent: Arc::default(),
        requests: Arc::default(),
    };
    let (counter, requests) = (padded.sent.clone(), padded.requests.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let json = json.clone();
            let sent = counter.clone();
            let requests = requests.clone();
            tokio::spawn(async move {
                // The request head; its body (if any) is ignored.
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                requests.fetch_add(1, Ordering::Relaxed);
                let total = padding + json.len() as u64;
                let framing = if declared {
                    format!("content-length: {total}")
                } else {
                    "transfer-encoding: chunked".to_owned()
                };
                let start = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
                );
                if conn.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                let mut left = padding;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if conn.write_all(&frame(declared, &chunk[..n])).await.is_err() {
                        return;
                    }
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                    left -= n as u64;
                }
                let mut tail = frame(declared, json.as_bytes());
                if !declared {
                    tail.extend_from_slice(b"0\r\n\r\n");
                }
                if conn.write_all(&tail).await.is_ok() {
                    sent.fetch_add(total - padding, Ordering::Relaxed);
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(padded)
}

/// An HTTPS front for a stub: TLS for `localhost` with a fresh CA, each
/// connection passed on to `backend` as plain TCP. Returns its address and
/// the CA certificate in PEM (for `SSL_CERT_FILE`).
pub async fn tls_front(backend: SocketAddr) -> anyhow::Result<(SocketAddr, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "credential stub CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    Ok((addr, ca_cert.pem()))
}

/// A running [`padded_endpoint`].
pub struct Padded {
    pub addr: SocketAddr,
    /// Body bytes it managed to send, over all requests.
    pub sent: Arc<std::sync::atomic::AtomicU64>,
    /// Requests it answered.
    pub requests: Arc<std::sync::atomic::AtomicU64>,
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn form(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn sts_answer(inner: &Inner, seen: &Seen) -> Response {
    let params = form(&seen.body);
    let mode = *inner.mode.lock().unwrap_or_else(|e| e.into_inner());
    if mode == Mode::Deny
        || params.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity")
    {
        let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
            <Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>\
            </Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>";
        return (StatusCode::FORBIDDEN, [("content-type", "text/xml")], body).into_response();
    }
    let c = inner
        .creds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let role = params.get("RoleArn").cloned().unwrap_or_default();
    let session = params.get("RoleSessionName").cloned().unwrap_or_default();
    let body = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleWithWebIdentityResult>\
         <SubjectFromWebIdentityToken>system:serviceaccount:demo:app</SubjectFromWebIdentityToken>\
         <AssumedRoleUser><Arn>{role}/{session}</Arn><AssumedRoleId>AROAEXAMPLE:{session}</AssumedRoleId></AssumedRoleUser>\
         <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>\
         <Audience>sts.amazonaws.com</Audience></AssumeRoleWithWebIdentityResult>\
         <ResponseMetadata><RequestId>11111111-1111-1111-1111-111111111111</RequestId></ResponseMetadata>\
         </AssumeRoleWithWebIdentityResponse>",
        c.akid,
        c.secret,
        c.session_token,
        expiration(inner)
    );
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

/// `data` as it goes on the wire: as is with a `Content-Length`, else as one
/// chunk.
fn frame(declared: bool, data: &[u8]) -> Vec<u8> {
    if declared {
        return data.to_vec();
    }
    let mut f = format!("{:x}\r\n", data.len()).into_bytes();
    f.extend_from_slice(data);
    f.extend_from_slice(b"\r\n");
    f
}

fn creds_json(inner: &Inner) -> String {
    let c = inner
        .creds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    container_json(&c, &expiration(inner))
}

/// The JSON answer of the container / Pod Identity / IMDS endpoints.
pub fn container_json(c: &IssuedCreds, expiration: &str) -> String {
    serde_json::json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": c.akid,
        "SecretAccessKey": c.secret,
        "Token": c.session_token,
        "Expiration": expiration,
        "LastUpdated": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    })
    .to_string()
}

fn container_answer(inner: &Inner, _seen: &Seen) -> Response {
    if *inner.mode.lock().unwrap_or_else(|e| e.into_inner()) == Mode::Deny {
        return (
            StatusCode::FORBIDDEN,
            "{\"code\":\"AccessDeniedException\"}",
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        creds_json(inner),
    )
        .into_response()
}

const IMDS_ROLE: &str = "demo-instance-role";
/// The IMDSv2 session token the IMDS stub hands out and expects.
pub const IMDS_SESSION_TOKEN: &str = "imds-session-token";

fn imds_answer(inner: &Inner, seen: &Seen) -> Response {
    let path = seen.path.split('?').next().unwrap_or("");
    if seen.method == Method::PUT && path == "/latest/api/token" {
        return (
            StatusCode::OK,
            [("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
            IMDS_SESSION_TOKEN,
        )
            .into_response();
    }
    if seen
        .headers
        .get("x-aws-ec2-metadata-token")
        .map(String::as_str)
        != Some(IMDS_SESSION_TOKEN)
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match path {
        "/latest/meta-data/iam/security-credentials/"
        | "/latest/meta-data/iam/security-credentials" => {
            (StatusCode::OK, IMDS_ROLE).into_response()
        }
        p if p == format!("/latest/meta-data/iam/security-credentials/{IMDS_ROLE}") => {
            (StatusCode::OK, creds_json(inner)).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let f = form("Action=AssumeRoleWithWebIdentity&WebIdentityToken=a%2Bb%3D%3D+c&X=%zz");
        assert_eq!(f["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(f["WebIdentityToken"], "a+b== c");
        assert_eq!(f["X"], "%zz");
    }
}
