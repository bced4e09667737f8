//! Loopback stand-ins for the AWS credential endpoints the agent's real
//! aws-config chain talks to: STS (AssumeRoleWithWebIdentity, for IRSA), the
//! EKS Pod Identity agent, and IMDSv2. Each records what it received and
//! hands out credentials that the tests also register with [`crate::pgrds`],
//! so a token signed with them really logs in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

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
    lifetime: Mutex<Duration>,
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
        *self
            .inner
            .lifetime
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = d;
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
            lifetime: Mutex::new(Duration::from_secs(3600)),
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
    let lifetime = *inner.lifetime.lock().unwrap_or_else(|e| e.into_inner());
    humantime::format_rfc3339_seconds(SystemTime::now() + lifetime).to_string()
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

fn creds_json(inner: &Inner) -> String {
    let c = inner
        .creds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    serde_json::json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": c.akid,
        "SecretAccessKey": c.secret,
        "Token": c.session_token,
        "Expiration": expiration(inner),
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

fn imds_answer(inner: &Inner, seen: &Seen) -> Response {
    let path = seen.path.split('?').next().unwrap_or("");
    if seen.method == Method::PUT && path == "/latest/api/token" {
        return (
            StatusCode::OK,
            [("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
            "imds-session-token",
        )
            .into_response();
    }
    if seen
        .headers
        .get("x-aws-ec2-metadata-token")
        .map(String::as_str)
        != Some("imds-session-token")
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
