//! One proxied MySQL/MariaDB client connection:
//!
//! 1. connect upstream and read the server's greeting (it must offer TLS);
//! 2. greet the client with that server's version, connection id and
//!    capabilities, less TLS and compression (so `KILL QUERY <id>` works);
//! 3. take the client's handshake response: its user must match; its
//!    database, charset and connection attributes are kept;
//! 4. start TLS upstream, send the response, and answer the server's switch
//!    to `mysql_clear_password` with the token, inside TLS only;
//! 5. tell the client OK, then splice.
//!
//! A MySQL server checks a cleartext password before it refuses a non-TLS
//! login, so the proxy never lets the token near a connection without TLS.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::metrics::Failure;
use super::mysql_wire::{self, code, AuthReply, ClientHello, Parsed, CLEAR_PASSWORD};
use super::pg_session::CLIENT_HANDSHAKE_TIMEOUT;
use super::splice;
use super::upstream::{Upstream, UNREACHABLE_HINT};

/// Why a session ended before its splice: an ERR packet for the client.
struct Refusal {
    failure: Failure,
    code: u16,
    sqlstate: &'static str,
    message: String,
}

fn refusal(failure: Failure, code: u16, sqlstate: &'static str, message: String) -> Refusal {
    Refusal {
        failure,
        code,
        sqlstate,
        message,
    }
}

/// Serves one client connection to the end.
pub async fn serve<C>(mut client: C, up: Arc<Upstream>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let db = up.source.endpoint.name.clone();
    // The client's next sequence id, for an ERR packet.
    let mut seq = 0u8;
    if let Err(Some(r)) = session(&mut client, &up, &mut seq).await {
        up.metrics.failed(&db, r.failure);
        tracing::warn!(db = %db, cause = r.failure.as_str(), error = %r.message, "proxied connection refused");
        let err = mysql_wire::err_payload(r.code, r.sqlstate, &r.message);
        let _ = client.write_all(&mysql_wire::packet(seq, &err)).await;
        let _ = client.shutdown().await;
    }
}

async fn session<C>(client: &mut C, up: &Upstream, seq: &mut u8) -> Result<(), Option<Refusal>>
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let endpoint = &up.source.endpoint;
    let label = up.label();
    let upstream_err =
        |failure, code, message: String| Some(refusal(failure, code, "08S01", message));

    // 1. The upstream and its greeting.
    let connect = async {
        let (mut tcp, addr) = up.connect_tcp(None).await.map_err(|detail| {
            upstream_err(
                Failure::Upstream,
                code::UNAVAILABLE,
                format!("cannot reach upstream {label}: {detail}; {UNREACHABLE_HINT}"),
            )
        })?;
        let mut buf = Vec::new();
        let greeting = read_packet(&mut tcp, &mut buf).await.map_err(|e| {
            upstream_err(
                Failure::Upstream,
                code::HANDSHAKE,
                format!("upstream {label} ({addr}) sent no greeting: {e}"),
            )
        })?;
        if greeting.1.first() == Some(&0xff) {
            let e = mysql_wire::parse_err(&greeting.1)
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(upstream_err(
                Failure::Upstream,
                code::UNAVAILABLE,
                format!("upstream {label} ({addr}) refused the connection: {e}"),
            ));
        }
        let g = mysql_wire::parse_greeting(&greeting.1).map_err(|e| {
            upstream_err(
                Failure::Upstream,
                code::HANDSHAKE,
                format!("upstream {label}: {e}"),
            )
        })?;
        Ok((tcp, addr, g))
    };
    let (tcp, addr, greeting) = tokio::time::timeout(up.connect_timeout, connect)
        .await
        .map_err(|_| {
            upstream_err(
                Failure::Upstream,
                code::UNAVAILABLE,
                format!(
                    "upstream {label} did not greet within {}s",
                    up.connect_timeout.as_secs()
                ),
            )
        })??;
    if !mysql_wire::offers_tls(&greeting) {
        return Err(upstream_err(
            Failure::Tls,
            code::HANDSHAKE,
            format!(
                "upstream {label} ({addr}) does not offer TLS, and the token is never sent without it; check that the host is the RDS endpoint (RDS always offers TLS)"
            ),
        ));
    }

    // 2. Greet the client.
    let scramble: [u8; 20] = std::array::from_fn(|_| rand::random_range(1u8..=127));
    client
        .write_all(&mysql_wire::packet(
            0,
            &greeting.for_client(scramble).encode(),
        ))
        .await
        .map_err(|_| None)?;
    *seq = 1;

    // 3. The client's response.
    let mut cbuf = Vec::new();
    let (cseq, hello) =
        tokio::time::timeout(CLIENT_HANDSHAKE_TIMEOUT, read_packet(client, &mut cbuf))
            .await
            .map_err(|_| None)?
            .map_err(|_| None)?;
    *seq = cseq.wrapping_add(1);
    let response = match mysql_wire::parse_client_hello(&hello) {
        Ok(ClientHello::Response(r)) => r,
        Ok(ClientHello::SslRequest) => {
            return Err(Some(refusal(
                Failure::Client,
                code::HANDSHAKE,
                "08S01",
                "the rds-iam proxy's local socket does not do TLS (the hop to the database does); connect without TLS, e.g. --ssl-mode=DISABLED or ssl_disabled=True".into(),
            )))
        }
        Err(e) => {
            return Err(Some(refusal(Failure::Client, code::HANDSHAKE, "08S01", e.to_string())))
        }
    };
    if response.user != endpoint.user.as_bytes() {
        return Err(Some(refusal(
            Failure::WrongUser,
            code::ACCESS_DENIED,
            "28000",
            format!(
                "this rds-iam proxy serves user '{}' of database \"{}\", not user '{}'; connect as '{}'",
                endpoint.user,
                endpoint.name,
                String::from_utf8_lossy(&response.user),
                endpoint.user
            ),
        )));
    }
    let Some(token) = up.source.valid(SystemTime::now()) else {
        return Err(Some(refusal(
            Failure::NoToken,
            code::UNAVAILABLE,
            "08S01",
            format!("the rds-iam agent has no valid token for {label} yet; check the agent's log for refresh errors"),
        )));
    };

    // 4. TLS upstream, then the response and the password, inside TLS.
    let login = async {
        let mut tcp = tcp;
        let mut upstream_resp = response.clone();
        upstream_resp.capabilities = (response.capabilities | mysql_wire::cap::SSL)
            & !(mysql_wire::cap::COMPRESS | mysql_wire::cap::ZSTD_COMPRESSION);
        upstream_resp.user = endpoint.user.as_bytes().to_vec();
        // The client answered the proxy's scramble, not the server's.
        upstream_resp.auth_response = Vec::new();
        tcp.write_all(&mysql_wire::packet(1, &upstream_resp.ssl_request()))
            .await
            .map_err(|e| format!("closed the connection: {e}"))?;
        let mut tls = tokio_rustls::TlsConnector::from(up.tls.clone())
            .connect(up.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                format!(
                    "TLS handshake failed: {e}; the token is never sent without TLS; likely cause: {}",
                    up.handshake_hint()
                )
            })?;
        tls.write_all(&mysql_wire::packet(2, &upstream_resp.encode()))
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(tls)
    };
    let mut tls = tokio::time::timeout(up.connect_timeout, login)
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r)
        .map_err(|detail| {
            upstream_err(
                Failure::Tls,
                code::HANDSHAKE,
                format!("upstream {label} ({addr}): {detail}"),
            )
        })?;
    let mut ubuf = Vec::new();
    let mut sent_token = false;
    let ok = loop {
        let (useq, reply) =
            tokio::time::timeout(up.connect_timeout, read_packet(&mut tls, &mut ubuf))
                .await
                .map_err(|_| {
                    upstream_err(
                        Failure::Upstream,
                        code::HANDSHAKE,
                        format!("upstream {label} did not answer the login in time"),
                    )
                })?
                .map_err(|e| {
                    upstream_err(
                        Failure::Upstream,
                        code::HANDSHAKE,
                        format!("upstream {label} closed the connection during the login: {e}"),
                    )
                })?;
        let not_iam = |what: String| {
            up.metrics.auth_failed(&endpoint.name);
            Some(refusal(
                Failure::AuthMethod,
                code::ACCESS_DENIED,
                "28000",
                format!(
                    "upstream {label} did not ask for the token (mysql_clear_password): {what}; '{}' is not an IAM user (CREATE USER ... IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS'), or IAM authentication is off on the database",
                    endpoint.user
                ),
            ))
        };
        match mysql_wire::parse_auth_reply(&reply) {
            Ok(AuthReply::Switch { plugin, .. })
                if plugin == CLEAR_PASSWORD.as_bytes() && !sent_token =>
            {
                sent_token = true;
                tls.write_all(&mysql_wire::packet(
                    useq.wrapping_add(1),
                    &mysql_wire::clear_password(token.token.expose()),
                ))
                .await
                .map_err(|e| {
                    upstream_err(
                        Failure::Upstream,
                        code::HANDSHAKE,
                        format!("upstream {label}: {e}"),
                    )
                })?;
            }
            Ok(AuthReply::Ok) => break reply,
            Ok(AuthReply::Err(e)) if sent_token => {
                up.metrics.auth_failed(&endpoint.name);
                return Err(Some(refusal(
                    Failure::Auth,
                    code::ACCESS_DENIED,
                    "28000",
                    format!(
                        "upstream {label} refused the token: {} ({} {}); check that the pod's IAM role may rds-db:connect as '{}', and that the token's host and region ({}) are the database's",
                        e.message, e.code, e.sqlstate, endpoint.user, endpoint.region
                    ),
                )));
            }
            // Refused before asking for a password: the user's plugin
            // decided on the proxy's empty answer.
            Ok(AuthReply::Err(e)) => {
                return Err(not_iam(format!(
                    "it refused the login at once: {} ({} {})",
                    e.message, e.code, e.sqlstate
                )))
            }
            Ok(AuthReply::Switch { plugin, .. }) if plugin != CLEAR_PASSWORD.as_bytes() => {
                return Err(not_iam(format!(
                    "it asked for {}",
                    String::from_utf8_lossy(&plugin)
                )))
            }
            Ok(AuthReply::Switch { .. }) => {
                return Err(not_iam("it asked for a password twice".to_owned()))
            }
            Ok(AuthReply::More(_)) | Err(_) => {
                return Err(not_iam("it sent more authentication data".to_owned()))
            }
        }
    };
    up.metrics.accepted(&endpoint.name);

    // 5. OK to the client, then the splice.
    client
        .write_all(&mysql_wire::packet(*seq, &ok))
        .await
        .map_err(|_| None)?;
    if !ubuf.is_empty() {
        client.write_all(&ubuf).await.map_err(|_| None)?;
    }
    if !cbuf.is_empty() {
        tls.write_all(&cbuf).await.map_err(|_| None)?;
    }
    let _active = up.metrics.active(&endpoint.name);
    splice::splice(client, &mut tls).await;
    Ok(())
}

/// Reads one packet (bounded), using and refilling `buf`; returns its
/// sequence id and payload.
async fn read_packet<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u8, Vec<u8>), String> {
    loop {
        match mysql_wire::parse_packet(buf, mysql_wire::MAX_HANDSHAKE_PACKET) {
            Ok(Parsed::Done(p, n)) => {
                let out = (p.seq, p.payload.to_vec());
                buf.drain(..n);
                return Ok(out);
            }
            Ok(Parsed::Incomplete(_)) => {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
