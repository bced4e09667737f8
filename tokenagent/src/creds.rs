//! AWS credentials: the aws-config default chain (environment, profile, IRSA
//! web identity, EKS Pod Identity / ECS container endpoint, IMDS) behind a
//! cache that keeps credentials until shortly before they expire, so the
//! agent makes one STS call per credential lifetime, not one per token.

use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_types::region::Region;
use tokio::sync::Mutex;

/// Credentials are refreshed this long before they expire.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Environment variables that select a credential source, in chain order.
pub const SOURCE_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "static environment credentials"),
    ("AWS_PROFILE", "a shared config/credentials profile"),
    (
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "IRSA (STS AssumeRoleWithWebIdentity)",
    ),
    (
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "EKS Pod Identity / container credentials endpoint",
    ),
    (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "ECS task role endpoint",
    ),
];

/// Getting credentials failed. The messages say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error(
        "no AWS credentials found. In EKS, IRSA sets AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE \
         (annotate the ServiceAccount with eks.amazonaws.com/role-arn), and EKS Pod Identity sets \
         AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (create a \
         pod identity association); neither is set in this container. Outside EKS set \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run on EC2 with an instance \
         profile. Detail: {detail}"
    )]
    NotFound { detail: String },
    #[error("the credential source failed: {detail}")]
    Provider { detail: String },
    #[error("timed out after {0:?} waiting for credentials")]
    Timeout(Duration),
}

impl CredsError {
    fn from_sdk(e: CredentialsError) -> Self {
        let detail = error_chain(&e);
        match e {
            CredentialsError::CredentialsNotLoaded(_) => CredsError::NotFound { detail },
            _ => CredsError::Provider { detail },
        }
    }
}

/// Formats an error with all its sources, e.g. "STS denied: AccessDenied: ...".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let part = src.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = src.source();
    }
    s
}

/// A credential provider with a cache.
#[derive(Debug)]
pub struct CredentialSource {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
    fetch_timeout: Duration,
}

impl CredentialSource {
    /// The aws-config default chain for `region` (also the region of the
    /// STS client that IRSA uses). It reads the process environment, so
    /// endpoint overrides such as `AWS_ENDPOINT_URL_STS` apply.
    pub async fn default_chain(region: &str) -> Self {
        let chain = DefaultCredentialsChain::builder()
            .region(Region::new(region.to_owned()))
            .build()
            .await;
        Self::new(SharedCredentialsProvider::new(chain))
    }

    /// Wraps any provider.
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: Mutex::new(None),
            fetch_timeout: Duration::from_secs(30),
        }
    }

    /// Sets how long one fetch may take.
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Credentials valid for at least [`REFRESH_BEFORE_EXPIRY`], from the
    /// cache if possible. If a refresh fails while the cached credentials
    /// are still valid, the cached ones are returned (and the failure is
    /// logged), so a short STS outage does not stop token refreshes.
    pub async fn credentials(&self) -> Result<Credentials, CredsError> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(c) = cached.as_ref() {
            if c.expiry()
                .is_some_and(|exp| exp > now + REFRESH_BEFORE_EXPIRY)
            {
                return Ok(c.clone());
            }
        }
        let fetched = tokio::time::timeout(self.fetch_timeout, self.provider.provide_credentials())
            .await
            .map_err(|_| CredsError::Timeout(self.fetch_timeout))
            .and_then(|r| r.map_err(CredsError::from_sdk));
        match fetched {
            Ok(c) => {
                tracing::info!(
                    provider = %provider_name(&c),
                    expires = ?c.expiry().map(humantime::format_rfc3339_seconds),
                    "fetched AWS credentials"
                );
                // Credentials without an expiry (env, static profile) are
                // read again next time, so rotated keys are picked up.
                *cached = c.expiry().map(|_| c.clone());
                Ok(c)
            }
            Err(e) => match cached.as_ref() {
                Some(c) if c.expiry().is_some_and(|exp| exp > now) => {
                    tracing::warn!(error = %e, "credential refresh failed; using cached credentials until they expire");
                    Ok(c.clone())
                }
                _ => Err(e),
            },
        }
    }
}

/// The name of the provider that produced `c` ("Environment", "Profile",
/// "WebIdentityToken", "EcsContainer", "Ec2InstanceMetadata"...). The SDK
/// only exposes it through `Debug`, which redacts the secret.
pub fn provider_name(c: &Credentials) -> String {
    let dbg = format!("{c:?}");
    dbg.split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Names the credential sources the environment points at (for `doctor`).
pub fn detected_sources(env: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, &'static str)> {
    SOURCE_ENV
        .iter()
        .copied()
        .filter(|(name, _)| env(name).is_some_and(|v| !v.is_empty()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Option<Duration>,
        fail_after: usize,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n >= self.fail_after {
                return future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                    "sts down",
                )));
            }
            let exp = self.lifetime.map(|l| SystemTime::now() + l);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "s",
                None,
                exp,
                "counting",
            )))
        }
    }

    fn source(
        lifetime: Option<Duration>,
        fail_after: usize,
    ) -> (CredentialSource, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = Counting {
            calls: calls.clone(),
            lifetime,
            fail_after,
        };
        (
            CredentialSource::new(SharedCredentialsProvider::new(p)),
            calls,
        )
    }

    #[tokio::test]
    async fn caches_until_near_expiry() {
        let (s, calls) = source(Some(Duration::from_secs(3600)), usize::MAX);
        for _ in 0..5 {
            assert_eq!(s.credentials().await.unwrap().access_key_id(), "AKID0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refetches_when_about_to_expire() {
        let (s, calls) = source(Some(Duration::from_secs(120)), usize::MAX);
        assert_eq!(s.credentials().await.unwrap().access_key_id(), "AKID0");
        assert_eq!(s.credentials().await.unwrap().access_key_id(), "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn static_credentials_are_not_cached() {
        let (s, calls) = source(None, usize::MAX);
        s.credentials().await.unwrap();
        s.credentials().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn outage_falls_back_to_valid_cached_credentials() {
        let (s, _) = source(Some(Duration::from_secs(200)), 1);
        assert_eq!(s.credentials().await.unwrap().access_key_id(), "AKID0");
        // The refresh fails, the cached credentials still have 200 s.
        assert_eq!(s.credentials().await.unwrap().access_key_id(), "AKID0");
    }

    #[test]
    fn provider_name_is_read_from_debug() {
        let c = Credentials::new(
            "AKID",
            "SECRET",
            Some("TOKEN".into()),
            None,
            "WebIdentityToken",
        );
        assert_eq!(provider_name(&c), "WebIdentityToken");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SECRET") && !dbg.contains("TOKEN\""), "{dbg}");
    }
}
