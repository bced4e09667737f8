//! One proxied PostgreSQL client connection, from its first byte to the
//! splice: refuse local TLS, check the user, connect upstream over TLS,
//! answer the server's password request with the current token, pass the
//! session's start through (remembering its cancel key), then splice.
//!
//! Parsing is in [`super::pg_wire`]; the splice in [`super::splice`]; the
//! listener and the lifecycle in [`super::listener`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::metrics::Failure;
use super::pg_wire::{self, sqlstate, AuthRequest, CancelKey, Initial, Parsed, Startup};
use super::splice;
use super::upstream::{Upstream, UNREACHABLE_HINT};

/// How long a client may take to send its startup packet.
pub const CLIENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended before its splice. Each is answered with an
/// ErrorResponse unless the client is gone.
#[derive(Debug)]
struct Refusal {
    failure: Failure,
    code: &'static str,
    message: String,
    hint: Option<String>,
}

impl Refusal {
    fn new(failure: Failure, code: &'static str, message: String, hint: Option<&str>) -> Self {
        Self {
            failure,
            code,
            message,
            hint: hint.map(str::to_owned),
        }
    }
}

/// Serves one client connection to the end.
pub async fn serve<C>(mut client: C, up: Arc<Upstream>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let db = up.source.endpoint.name.clone();
    match session(&mut client, &up).await {
        Ok(()) => {}
        Err(Some(r)) => {
            up.metrics.failed(&db, r.failure);
            tracing::warn!(db = %db, cause = r.failure.as_str(), error = %r.message, "proxied connection refused");
            let msg = pg_wire::error_response(r.code, &r.message, r.hint.as_deref());
            let _ = client.write_all(&msg).await;
            let _ = client.shutdown().await;
        }
        Err(None) => {}
    }
}

/// `Err(None)`: the client went away or only cancelled; nothing to answer.
async fn session<C>(client: &mut C, up: &Upstream) -> Result<(), Option<Refusal>>
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buf = Vec::with_capacity(512);
    let startup =
        match tokio::time::timeout(CLIENT_HANDSHAKE_TIMEOUT, local_handshake(client, &mut buf))
            .await
        {
            Err(_) => {
                return Err(Some(Refusal::new(
                    Failure::Client,
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "no startup packet within {}s",
                        CLIENT_HANDSHAKE_TIMEOUT.as_secs()
                    ),
                    None,
                )))
            }
            Ok(Err(r)) => return Err(r),
            Ok(Ok(Local::Cancel(key))) => {
                cancel(up, &key).await;
                return Err(None);
            }
            Ok(Ok(Local::Startup(s))) => s,
        };
    let endpoint = &up.source.endpoint;
    let user = startup.param("user").unwrap_or("");
    if user != endpoint.user {
        return Err(Some(Refusal::new(
            Failure::WrongUser,
            sqlstate::INVALID_AUTHORIZATION,
            format!(
                "this rds-iam proxy serves user \"{}\" of database \"{}\", not user \"{user}\"",
                endpoint.user, endpoint.name
            ),
            Some(&format!("connect as \"{}\" (PGUSER)", endpoint.user)),
        )));
    }
    let Some(token) = up.source.valid(SystemTime::now()) else {
        return Err(Some(Refusal::new(
            Failure::NoToken,
            sqlstate::CANNOT_CONNECT,
            format!(
                "the rds-iam agent has no valid token for {} yet",
                up.label()
            ),
            Some("check the agent's log for refresh errors"),
        )));
    };
    let login = tokio::time::timeout(
        up.connect_timeout,
        login(up, &startup, token.token.expose()),
    );
    let (mut upstream, addr, pending) = match login.await {
        Err(_) => {
            return Err(Some(Refusal::new(
                Failure::Upstream,
                sqlstate::CANNOT_CONNECT,
                format!(
                    "upstream {} did not complete the login within {}s",
                    up.label(),
                    up.connect_timeout.as_secs()
                ),
                None,
            )))
        }
        Ok(r) => r?,
    };
    up.metrics.accepted(&endpoint.name);
    // Pass the session's start through to the client, up to ReadyForQuery.
    let key = pass_session_start(client, &mut upstream, pending).await?;
    if let Some(k) = &key {
        up.cancels.insert(k.clone(), addr);
    }
    // Anything the client sent after its startup packet goes first.
    if !buf.is_empty() && upstream.write_all(&buf).await.is_err() {
        return Err(None);
    }
    let _active = up.metrics.active(&endpoint.name);
    splice::splice(client, &mut upstream).await;
    if let Some(k) = key {
        up.cancels.remove(&k);
    }
    Ok(())
}

enum Local {
    Startup(Startup),
    Cancel(CancelKey),
}

/// Reads the client's packets until a StartupMessage or CancelRequest,
/// refusing local TLS and GSSAPI encryption (the hop is a local socket).
/// Bytes after the packet stay in `buf`.
async fn local_handshake<C>(client: &mut C, buf: &mut Vec<u8>) -> Result<Local, Option<Refusal>>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    for _ in 0..3 {
        let initial = loop {
            match pg_wire::parse_initial(buf) {
                Ok(Parsed::Done(i, n)) => {
                    buf.drain(..n);
                    break i;
                }
                Ok(Parsed::Incomplete(_)) => {
                    if read_more(client, buf).await == 0 {
                        return Err(None);
                    }
                }
                Err(e) => {
                    return Err(Some(Refusal::new(
                        Failure::Client,
                        sqlstate::PROTOCOL_VIOLATION,
                        e.to_string(),
                        None,
                    )))
                }
            }
        };
        match initial {
            Initial::SslRequest | Initial::GssEncRequest => {
                if client.write_all(b"N").await.is_err() {
                    return Err(None);
                }
            }
            Initial::Cancel(k) => return Ok(Local::Cancel(k)),
            Initial::Startup(s) => return Ok(Local::Startup(s)),
        }
    }
    Err(Some(Refusal::new(
        Failure::Client,
        sqlstate::PROTOCOL_VIOLATION,
        "too many encryption requests before the startup packet".into(),
        None,
    )))
}

async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    match r.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

type Tls = TlsStream<TcpStream>;

/// Connects upstream over TLS and logs in with `token`. Returns the stream,
/// the address it reached (for cancel requests) and the bytes read past the
/// authentication exchange.
async fn login(
    up: &Upstream,
    startup: &Startup,
    token: &str,
) -> Result<(Tls, SocketAddr, Vec<u8>), Option<Refusal>> {
    let (mut tls, addr) = connect_tls(up, None).await?;
    let fail = |failure, code, message: String, hint: Option<&str>| {
        Some(Refusal::new(failure, code, message, hint))
    };
    let io = |e: std::io::Error| {
        fail(
            Failure::Upstream,
            sqlstate::CONNECTION_FAILURE,
            format!(
                "upstream {} closed the connection during the login: {e}",
                up.label()
            ),
            None,
        )
    };
    tls.write_all(&startup.encode()).await.map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    // NegotiateProtocolVersion and notices before the login ends are the
    // client's: queued in order, and sent once the login succeeded.
    let mut to_client = Vec::new();
    loop {
        let (kind, body) = next_message(&mut tls, &mut buf).await.map_err(io)?;
        match kind {
            b'R' => match pg_wire::parse_auth(&body) {
                Some(AuthRequest::Cleartext) => {
                    tls.write_all(&pg_wire::password_message(token))
                        .await
                        .map_err(io)?;
                }
                Some(AuthRequest::Ok) => {
                    to_client.extend_from_slice(&pg_wire_message(b'R', &body));
                    to_client.extend_from_slice(&buf);
                    return Ok((tls, addr, to_client));
                }
                Some(other) => {
                    up.metrics.auth_failed(&up.source.endpoint.name);
                    return Err(fail(
                        Failure::AuthMethod,
                        sqlstate::INVALID_PASSWORD,
                        format!(
                            "upstream {} asked for {other}, not for a password: IAM authentication cannot answer it",
                            up.label()
                        ),
                        Some(&format!(
                            "the user \"{}\" is probably not granted rds_iam (GRANT rds_iam TO \"{}\"), or IAM authentication is off on the server",
                            up.source.endpoint.user, up.source.endpoint.user
                        )),
                    ));
                }
                None => {
                    return Err(fail(
                        Failure::Upstream,
                        sqlstate::PROTOCOL_VIOLATION,
                        format!(
                            "upstream {} sent a malformed authentication request",
                            up.label()
                        ),
                        None,
                    ))
                }
            },
            b'E' => {
                let e = pg_wire::parse_error(&body);
                let message = format!(
                    "upstream {} refused the login: {} (SQLSTATE {})",
                    up.label(),
                    e.message,
                    e.code
                );
                // Only class 28 is about the token; anything else (the
                // server is full, starting up, shutting down) is the
                // server's state, with its own code.
                if !e.code.starts_with("28") {
                    return Err(fail(
                        Failure::Upstream,
                        sqlstate::CANNOT_CONNECT,
                        message,
                        None,
                    ));
                }
                up.metrics.auth_failed(&up.source.endpoint.name);
                return Err(fail(
                    Failure::Auth,
                    sqlstate::INVALID_PASSWORD,
                    message,
                    Some(&format!(
                        "check that \"{}\" is granted rds_iam, that the pod's IAM role may rds-db:connect as this user, and that the token's host and region ({}) are the database's",
                        up.source.endpoint.user, up.source.endpoint.region
                    )),
                ));
            }
            b'v' | b'N' => to_client.extend_from_slice(&pg_wire_message(kind, &body)),
            other => {
                return Err(fail(
                    Failure::Upstream,
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "upstream {} sent message {:?} before authenticating",
                        up.label(),
                        other as char
                    ),
                    None,
                ))
            }
        }
    }
}

fn pg_wire_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one whole message (bounded) from `stream`, using and refilling `buf`.
async fn next_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u8, Vec<u8>)> {
    loop {
        match pg_wire::parse_message(buf, pg_wire::MAX_PRE_SESSION_MESSAGE) {
            Ok(Parsed::Done(m, n)) => {
                let out = (m.kind, m.body.to_vec());
                buf.drain(..n);
                return Ok(out);
            }
            Ok(Parsed::Incomplete(_)) => {
                if read_more(stream, buf).await == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Forwards `pending` and the upstream's messages to the client until
/// ReadyForQuery, and returns the session's cancel key.
async fn pass_session_start<C>(
    client: &mut C,
    upstream: &mut Tls,
    mut pending: Vec<u8>,
) -> Result<Option<CancelKey>, Option<Refusal>>
where
    C: AsyncWrite + Unpin,
{
    let mut key = None;
    loop {
        // Forward every whole message in `pending`; stop after 'Z'.
        let mut done = false;
        let mut cut = 0;
        while let Ok(Parsed::Done(m, n)) = pg_wire::parse_message(&pending[cut..], usize::MAX >> 1)
        {
            if m.kind == b'K' {
                key = pg_wire::parse_backend_key(m.body);
            }
            cut += n;
            if m.kind == b'Z' {
                done = true;
                break;
            }
        }
        if done {
            // Bytes after ReadyForQuery go too: the splice starts from here.
            client.write_all(&pending).await.map_err(|_| None)?;
            return Ok(key);
        }
        if cut > 0 {
            client.write_all(&pending[..cut]).await.map_err(|_| None)?;
            pending.drain(..cut);
        }
        if read_more(upstream, &mut pending).await == 0 {
            // The server ended the session (e.g. database does not exist):
            // what it said was forwarded.
            client.write_all(&pending).await.map_err(|_| None)?;
            return Err(None);
        }
    }
}

/// Connects to the endpoint (or to `addr`, the address a session used) and
/// starts TLS.
async fn connect_tls(
    up: &Upstream,
    addr: Option<SocketAddr>,
) -> Result<(Tls, SocketAddr), Option<Refusal>> {
    let (mut tcp, addr) = up.connect_tcp(addr).await.map_err(|detail| {
        Some(Refusal::new(
            Failure::Upstream,
            sqlstate::CANNOT_CONNECT,
            format!("cannot reach upstream {}: {detail}", up.label()),
            Some(UNREACHABLE_HINT),
        ))
    })?;
    let tls_failed = |detail: String, hint: &'static str| {
        Some(Refusal::new(
            Failure::Tls,
            sqlstate::CONNECTION_FAILURE,
            format!(
                "upstream {} ({addr}): {detail}; the token is never sent without TLS",
                up.label()
            ),
            Some(hint),
        ))
    };
    let tls_refused = |detail: String| {
        tls_failed(
            detail,
            "IAM authentication needs TLS: enable SSL on the server",
        )
    };
    if !up.direct_tls {
        tcp.write_all(&pg_wire::ssl_request())
            .await
            .map_err(|err| tls_refused(format!("closed the connection: {err}")))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(|err| {
            tls_refused(format!("closed the connection after the SSLRequest: {err}"))
        })?;
        if answer[0] != b'S' {
            return Err(tls_refused(format!(
                "refused TLS (answered {:?} to the SSLRequest)",
                answer[0] as char
            )));
        }
    }
    let tls = tokio_rustls::TlsConnector::from(up.tls.clone())
        .connect(up.server_name.clone(), tcp)
        .await
        .map_err(|err| tls_failed(format!("TLS handshake failed: {err}"), up.handshake_hint()))?;
    Ok((tls, addr))
}

/// Forwards a cancel request to the address of the session it names, over
/// TLS like the session. Unknown keys are dropped, as the server does.
async fn cancel(up: &Upstream, key: &CancelKey) {
    let Some(addr) = up.cancels.get(key) else {
        tracing::debug!(db = %up.source.endpoint.name, "cancel request for an unknown session");
        return;
    };
    let db = &up.source.endpoint.name;
    match tokio::time::timeout(up.connect_timeout, async {
        let (mut tls, _) = connect_tls(up, Some(addr)).await.map_err(|_| ())?;
        tls.write_all(&pg_wire::cancel_request(key))
            .await
            .map_err(|_| ())?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 16];
        let _ = tls.read(&mut sink).await;
        Ok::<_, ()>(())
    })
    .await
    {
        Ok(Ok(())) => tracing::info!(db = %db, %addr, "cancel request forwarded"),
        _ => tracing::warn!(db = %db, %addr, "cancel request could not be forwarded"),
    }
}
