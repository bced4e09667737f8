//! TLS to the database, as the endpoint's sslmode asks:
//!
//! - `require`: encrypted, the certificate is not checked (libpq's meaning);
//! - `verify-ca`: the chain must lead to the CA bundle, any host name;
//! - `verify-full`: the chain and the host name.
//!
//! The CA bundle is a PEM file (the RDS CA bundle, mounted by the webhook).

use std::path::Path;
use std::sync::Arc;

use rds_iam_common::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The ALPN protocol of direct TLS (PostgreSQL 17+).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why a TLS client configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("sslmode {0} needs a CA bundle; set --ca-file (RDS_IAM_CA_FILE)")]
    NoCaFile(SslMode),
    #[error("cannot read the CA bundle {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("the CA bundle {0} holds no certificate")]
    EmptyCaFile(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM CA bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let shown = path.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsSetupError::CaFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::EmptyCaFile(shown));
    }
    Ok(roots)
}

/// The client configuration for `sslmode`, TLS 1.2 and 1.3 only. `direct`
/// adds the ALPN that direct TLS requires.
pub fn client_config(
    sslmode: SslMode,
    roots: Option<&RootCertStore>,
    direct: bool,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let verifier: Arc<dyn ServerCertVerifier> = match sslmode {
        SslMode::Require => Arc::new(NoVerification(provider)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = roots.ok_or(TlsSetupError::NoCaFile(sslmode))?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider)
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            if sslmode == SslMode::VerifyCa {
                Arc::new(AnyName(webpki))
            } else {
                webpki
            }
        }
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    if direct {
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    }
    Ok(Arc::new(config))
}

/// The name the certificate is checked against (`verify-full`).
pub fn server_name(
    host: &str,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    ServerName::try_from(host.to_owned())
}

/// `sslmode=require`: any certificate; the handshake's signatures are still
/// checked, so the session keys belong to whoever holds the certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must be valid, the name may be anything.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Pki {
        ca_pem: String,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    }

    /// A CA and a server certificate for `name` signed by it.
    fn pki(ca_name: &str, name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            cert: leaf.der().clone(),
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    fn roots(pem: &str) -> RootCertStore {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, pem).unwrap();
        load_roots(&p).unwrap()
    }

    /// A TLS handshake over an in-memory pipe; Ok when a byte goes through.
    async fn handshake(server: &Pki, client: Arc<ClientConfig>, name: &str) -> Result<(), String> {
        let sconf = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![server.cert.clone()], server.key.clone_key())
            .unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sconf));
        let srv = tokio::spawn(async move {
            if let Ok(mut s) = acceptor.accept(b).await {
                let _ = s.write_all(b"x").await;
                let _ = s.flush().await;
            }
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let res = async {
            let mut s = connector
                .connect(server_name(name).unwrap(), a)
                .await
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        srv.abort();
        res
    }

    #[tokio::test]
    async fn each_sslmode_checks_what_libpq_checks() {
        let server = pki("Test RDS CA", "db.example.test");
        let other = pki("Another CA", "db.example.test");
        let good = roots(&server.ca_pem);
        let wrong = roots(&other.ca_pem);
        let full = client_config(SslMode::VerifyFull, Some(&good), false).unwrap();
        let ca = client_config(SslMode::VerifyCa, Some(&good), false).unwrap();
        let require = client_config(SslMode::Require, None, false).unwrap();

        assert_eq!(
            handshake(&server, full.clone(), "db.example.test").await,
            Ok(())
        );
        let e = handshake(&server, full, "elsewhere.test")
            .await
            .unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        assert_eq!(
            handshake(&server, ca.clone(), "elsewhere.test").await,
            Ok(())
        );
        let e = handshake(
            &server,
            client_config(SslMode::VerifyCa, Some(&wrong), false).unwrap(),
            "db.example.test",
        )
        .await
        .unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        assert_eq!(handshake(&server, require, "anything.test").await, Ok(()));
    }

    #[test]
    fn verify_modes_need_a_bundle() {
        let e = client_config(SslMode::VerifyFull, None, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sslmode verify-full needs a CA bundle; set --ca-file (RDS_IAM_CA_FILE)"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "no certificates here\n").unwrap();
        assert!(matches!(load_roots(&p), Err(TlsSetupError::EmptyCaFile(_))));
        assert!(matches!(
            load_roots(&dir.path().join("missing.pem")),
            Err(TlsSetupError::CaFile { .. })
        ));
    }

    #[test]
    fn direct_tls_offers_alpn_postgresql() {
        let c = client_config(SslMode::Require, None, true).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"postgresql".to_vec()]);
        let c = client_config(SslMode::Require, None, false).unwrap();
        assert!(c.alpn_protocols.is_empty());
    }
}
