//! The HTTP client of the credential providers (STS for IRSA, the EKS Pod
//! Identity / container endpoint, IMDS): the SDK's default HTTPS client with
//! every response body capped at [`MAX_BODY_BYTES`]. The SDK reads a whole
//! credential answer into memory before parsing it, so without the cap an
//! endpoint that answers with hundreds of megabytes takes the agent past its
//! memory limit.

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// The largest credential answer read. Real ones are 1 to 4 KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A credential endpoint answered with more than the cap.
#[derive(Debug, thiserror::Error)]
#[error("the credential endpoint's answer is larger than {max} bytes; it is not read")]
pub struct BodyTooLarge {
    pub max: usize,
}

/// An [`HttpClient`] whose responses carry at most `max` body bytes.
#[derive(Debug, Clone)]
pub struct CappedClient {
    inner: SharedHttpClient,
    max: usize,
}

impl CappedClient {
    /// Caps `inner`.
    pub fn new(inner: SharedHttpClient, max: usize) -> Self {
        Self { inner, max }
    }

    /// The client aws-config builds by default (hyper 1 with rustls and
    /// aws-lc, proxies from `HTTPS_PROXY` / `NO_PROXY`), capped at
    /// [`MAX_BODY_BYTES`].
    pub fn default_https() -> Self {
        // The same construction as aws-smithy-runtime's default client.
        let inner = Builder::new().build_with_connector_fn(|settings, components| {
            let mut b =
                ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
            b.set_connector_settings(settings.cloned());
            if let Some(c) = components {
                b.set_sleep_impl(c.sleep_impl());
            }
            b.set_proxy_config(Some(ProxyConfig::from_env()));
            b.build()
        });
        Self::new(inner, MAX_BODY_BYTES)
    }
}

impl HttpClient for CappedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CappedConnector {
            inner: self.inner.http_connector(settings, components),
            max: self.max,
        })
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner
            .validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(
        &self,
        runtime_components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct CappedConnector {
    inner: SharedHttpConnector,
    max: usize,
}

impl HttpConnector for CappedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let answer = self.inner.call(request);
        let max = self.max;
        HttpConnectorFuture::new(async move {
            let response = answer.await?;
            cap(response, max)
        })
    }
}

/// Refuses a response that declares a longer body than `max`, and makes
/// reading a longer undeclared (chunked) body fail after `max` bytes.
pub fn cap(response: HttpResponse, max: usize) -> Result<HttpResponse, ConnectorError> {
    let declared = response
        .headers()
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(ConnectorError::other(BodyTooLarge { max }.into(), None));
    }
    Ok(response.map(|body| {
        SdkBody::from_body_1_x(Limited::new(body, max).map_err(move |e| {
            if e.is::<LengthLimitError>() {
                BoxError::from(BodyTooLarge { max })
            } else {
                e
            }
        }))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::{Response, StatusCode};

    fn response(body: &'static [u8], content_length: Option<&str>) -> HttpResponse {
        let mut r = Response::new(StatusCode::try_from(200).unwrap(), SdkBody::from(body));
        if let Some(len) = content_length {
            r.headers_mut().insert("content-length", len.to_owned());
        }
        r
    }

    async fn read(r: HttpResponse) -> Result<Vec<u8>, String> {
        let body = r.into_body();
        body.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn bodies_up_to_the_cap_pass() {
        let r = cap(response(b"0123456789", Some("10")), 10).unwrap();
        assert_eq!(read(r).await.unwrap(), b"0123456789");
        let r = cap(response(b"0123456789", None), 10).unwrap();
        assert_eq!(read(r).await.unwrap(), b"0123456789");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_before_reading() {
        let e = cap(response(b"", Some("209715200")), 10).unwrap_err();
        let msg = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
        assert!(
            msg.contains("the credential endpoint's answer is larger than 10 bytes"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_cap_fails_while_reading() {
        let r = cap(response(b"0123456789A", None), 10).unwrap();
        let e = read(r).await.unwrap_err();
        assert_eq!(
            e,
            "the credential endpoint's answer is larger than 10 bytes; it is not read"
        );
    }
}
