//! A test CA, kubelet-style Secret directories, and a rustls HTTPS client.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub const SERVER_NAME: &str = "rds-iam-webhook.rds-iam-system.svc";

pub struct TestCa {
    pub cert: rcgen::Certificate,
    params: CertificateParams,
    key: KeyPair,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let cert = params.self_signed(&key).unwrap();
        Self { cert, params, key }
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.sign(Self::params(names))
    }

    /// A leaf valid only from `not_before` to `not_after`.
    pub fn leaf_valid(
        &self,
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Leaf {
        let mut params = Self::params(names);
        params.not_before = not_before;
        params.not_after = not_after;
        self.sign(params)
    }

    fn params(names: &[&str]) -> CertificateParams {
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

/// A directory laid out like a kubelet-mounted Secret:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<generation>`.
pub struct SecretDir {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretDir {
    pub fn new(dir: &Path, cert: &str, key: &str) -> Self {
        let mut s = Self {
            dir: dir.to_owned(),
            generation: 0,
        };
        s.write_generation(cert, key);
        std::os::unix::fs::symlink(format!("..{}", s.generation), dir.join("..data")).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        s
    }

    fn write_generation(&mut self, cert: &str, key: &str) {
        self.generation += 1;
        let gen = self.dir.join(format!("..{}", self.generation));
        std::fs::create_dir(&gen).unwrap();
        std::fs::write(gen.join("tls.crt"), cert).unwrap();
        std::fs::write(gen.join("tls.key"), key).unwrap();
    }

    /// What the kubelet does on a Secret update: new directory, new
    /// `..data_tmp` symlink renamed over `..data`, old directory removed.
    pub fn swap(&mut self, cert: &str, key: &str) {
        let old = self.dir.join(format!("..{}", self.generation));
        self.write_generation(cert, key);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{}", self.generation), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(old).unwrap();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

pub fn client_config(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// One HTTPS connection: the peer's certificate and a request sender.
pub struct Conn {
    pub peer_cert: Vec<u8>,
    /// The client end of the TCP connection.
    pub local_addr: SocketAddr,
    pub version: rustls::ProtocolVersion,
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// A TLS connection to the server under its Service name.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    TlsConnector::from(config)
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))
}

/// The status and the whole body of a response.
async fn read_response(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<(u16, Vec<u8>), String> {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
    let tls = tls_connect(addr, config).await?;
    let (tcp, session) = tls.get_ref();
    let local_addr = tcp.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let peer_cert = session.peer_certificates().unwrap()[0].to_vec();
    let version = session.protocol_version().unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    Ok(Conn {
        peer_cert,
        local_addr,
        version,
        sender,
    })
}

impl Conn {
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", SERVER_NAME)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        read_response(resp).await
    }
}

/// One request over a new HTTP/2 connection, as the API server sends its
/// reviews: the client offers only `h2` by ALPN. Returns the negotiated ALPN
/// protocol, the status and the body.
pub async fn h2_request(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(Vec<u8>, u16, Vec<u8>), String> {
    let mut config = Arc::unwrap_or_clone(client_config(
        ca,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    ));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_connect(addr, Arc::new(config)).await?;
    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .map_err(|e| format!("http2: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("https://{SERVER_NAME}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let (status, body) = read_response(resp).await?;
    Ok((alpn, status, body))
}

/// GET over plain HTTP (the metrics listener).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "metrics")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Reads one counter or gauge sample from the metrics text.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
