//! What a session needs to reach one database, whatever its engine, and the
//! TCP connect both engines start with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rds_iam_common::SslMode;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;

use super::cancel::CancelMap;
use super::metrics::ProxyMetrics;
use crate::source::TokenSource;

/// One database's upstream.
pub struct Upstream {
    pub source: Arc<TokenSource>,
    pub tls: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// PostgreSQL only: direct TLS (ALPN `postgresql`) instead of the
    /// SSLRequest handshake.
    pub direct_tls: bool,
    /// For connecting, TLS and the login together.
    pub connect_timeout: Duration,
    /// PostgreSQL only: cancel keys of live sessions.
    pub cancels: CancelMap,
    pub metrics: Arc<ProxyMetrics>,
}

impl Upstream {
    /// `host:port`, for messages.
    pub fn label(&self) -> String {
        let e = &self.source.endpoint;
        format!("{}:{}", e.host, e.port)
    }

    /// The likely cause of a failed TLS handshake, by sslmode.
    pub fn handshake_hint(&self) -> &'static str {
        match self.source.endpoint.sslmode {
            SslMode::Require => {
                "the server and the agent share no TLS version or cipher (TLS 1.2 or later is needed)"
            }
            SslMode::VerifyCa => {
                "the server's certificate is not signed by the CA bundle of rds-iam/ca-configmap: put the RDS CA bundle (global-bundle.pem) there"
            }
            SslMode::VerifyFull => {
                "the server's certificate is not signed by the CA bundle of rds-iam/ca-configmap, or is not for the host name: put the RDS CA bundle (global-bundle.pem) there, and use the endpoint's own DNS name as rds-iam/host"
            }
        }
    }

    /// Connects to the endpoint, trying each address it resolves to, or to
    /// `addr` (the address a session used). Errors are one line for a client.
    pub async fn connect_tcp(
        &self,
        addr: Option<SocketAddr>,
    ) -> Result<(TcpStream, SocketAddr), String> {
        let e = &self.source.endpoint;
        let addrs: Vec<SocketAddr> = match addr {
            Some(a) => vec![a],
            None => tokio::net::lookup_host((e.host.as_str(), e.port))
                .await
                .map_err(|err| format!("cannot resolve {}: {err}", e.host))?
                .collect(),
        };
        let mut last = String::from("the name has no address");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, a));
                }
                Err(err) => last = format!("{a}: {err}"),
            }
        }
        Err(last)
    }
}

/// The hint for an upstream that cannot be reached.
pub const UNREACHABLE_HINT: &str =
    "check rds-iam/host and rds-iam/port, DNS, and the database's security group or network policy";
