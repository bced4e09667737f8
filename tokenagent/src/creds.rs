//! AWS credentials: the aws-config default chain (environment, profile, IRSA
//! web identity, EKS Pod Identity / ECS container endpoint, IMDS) behind a
//! cache that keeps credentials until shortly before they expire, so the
//! agent makes one STS call per credential lifetime, not one per token.
//! Credentials that expire within the caller's minimum life are never
//! returned, and the providers' HTTP answers are capped in size
//! ([`crate::credhttp`]).

use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
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
    #[error(
        "the credentials from {provider} {when} (expiry {expires}), and a token must stay \
         valid for at least {min}s: check the credential source and this node's clock"
    )]
    ExpiresTooSoon {
        provider: String,
        /// "expire in 119s" or "expired 3600s ago".
        when: String,
        expires: String,
        min: u64,
    },
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

impl CredsError {
    /// `c` expires within `min` of `now`.
    pub fn expires_too_soon(c: &Credentials, now: SystemTime, min: Duration) -> Self {
        let exp = c.expiry().unwrap_or(now);
        let when = match exp.duration_since(now) {
            Ok(left) => format!("expire in {}s", left.as_secs()),
            Err(e) => format!("expired {}s ago", e.duration().as_secs()),
        };
        CredsError::ExpiresTooSoon {
            provider: provider_name(c),
            when,
            expires: humantime::format_rfc3339_seconds(exp).to_string(),
            min: min.as_secs(),
        }
    }
}

/// Whether `c` is still valid `min` after `now` (credentials without an
/// expiry always are).
pub fn lasts(c: &Credentials, now: SystemTime, min: Duration) -> bool {
    c.expiry().is_none_or(|exp| exp > now + min)
}

/// Formats an error with all its sources, e.g. "STS denied: AccessDenied: ...",
/// never a raw HTTP answer (see [`withhold_raw`]).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = withhold_raw(&e.to_string());
    let mut cur = e.source();
    while let Some(src) = cur {
        let part = withhold_raw(&src.to_string());
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = src.source();
    }
    s
}

/// What starts the `Debug` form of an HTTP message or body.
const RAW_MARKERS: &[&str] = &["Response {", "Request {", "SdkBody {"];

/// Cuts an error message where a raw HTTP message begins. Some SDK errors
/// print the whole answer in their `Display` (IMDS: "error response from
/// IMDS (code: 500). Response { ... body: ... }"), and a credential answer
/// holds the secret key and the session token.
pub fn withhold_raw(msg: &str) -> String {
    match RAW_MARKERS.iter().filter_map(|m| msg.find(m)).min() {
        Some(at) => format!("{}[raw answer withheld]", &msg[..at]),
        None => msg.to_owned(),
    }
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
    /// endpoint overrides such as `AWS_ENDPOINT_URL_STS` apply. Its HTTP
    /// answers are capped at [`crate::credhttp::MAX_BODY_BYTES`].
    pub async fn default_chain(region: &str) -> Self {
        let conf = ProviderConfig::default()
            .with_http_client(crate::credhttp::CappedClient::default_https());
        let chain = DefaultCredentialsChain::builder()
            .configure(conf)
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

    /// Credentials valid for more than `min_life`: from the cache while they
    /// have more than [`REFRESH_BEFORE_EXPIRY`] left, else fetched. If the
    /// fetch fails, or returns credentials that die within `min_life`, the
    /// cached ones are returned while they still outlive `min_life` (and the
    /// failure is logged), so a short STS outage does not stop token
    /// refreshes. Expired credentials are never returned.
    pub async fn credentials(&self, min_life: Duration) -> Result<Credentials, CredsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if lasts(c, SystemTime::now(), REFRESH_BEFORE_EXPIRY.max(min_life)) {
                return Ok(c.clone());
            }
        }
        let fetched = tokio::time::timeout(self.fetch_timeout, self.provider.provide_credentials())
            .await
            .map_err(|_| CredsError::Timeout(self.fetch_timeout))
            .and_then(|r| r.map_err(CredsError::from_sdk));
        let now = SystemTime::now();
        let error = match fetched {
            Ok(c) => {
                tracing::info!(
                    provider = %provider_name(&c),
                    expires = c.expiry().map(|e| tracing::field::display(humantime::format_rfc3339_seconds(e))),
                    "fetched AWS credentials"
                );
                if lasts(&c, now, min_life) {
                    // Credentials without an expiry (env, static profile) are
                    // read again next time, so rotated keys are picked up.
                    *cached = c.expiry().map(|_| c.clone());
                    return Ok(c);
                }
                CredsError::expires_too_soon(&c, now, min_life)
            }
            Err(e) => e,
        };
        match cached.as_ref() {
            Some(c) if lasts(c, now, min_life) => {
                tracing::warn!(
                    error = %error,
                    expires = c.expiry().map(|e| tracing::field::display(humantime::format_rfc3339_seconds(e))),
                    "credential refresh failed; using cached credentials until they expire"
                );
                Ok(c.clone())
            }
            _ => Err(error),
        }
    }

    /// Drops the cached credentials (they could not be used to sign), so
    /// the next call fetches new ones.
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
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

    const MIN: Duration = Duration::from_secs(120);

    #[tokio::test]
    async fn caches_until_near_expiry() {
        let (s, calls) = source(Some(Duration::from_secs(3600)), usize::MAX);
        for _ in 0..5 {
            assert_eq!(s.credentials(MIN).await.unwrap().access_key_id(), "AKID0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refetches_when_about_to_expire() {
        let (s, calls) = source(Some(Duration::from_secs(200)), usize::MAX);
        assert_eq!(s.credentials(MIN).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(s.credentials(MIN).await.unwrap().access_key_id(), "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn static_credentials_are_not_cached() {
        let (s, calls) = source(None, usize::MAX);
        s.credentials(MIN).await.unwrap();
        s.credentials(MIN).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn outage_falls_back_to_valid_cached_credentials() {
        let (s, _) = source(Some(Duration::from_secs(200)), 1);
        assert_eq!(s.credentials(MIN).await.unwrap().access_key_id(), "AKID0");
        // The refresh fails, the cached credentials still have 200 s.
        assert_eq!(s.credentials(MIN).await.unwrap().access_key_id(), "AKID0");
        // But not for a caller that needs more than they have left.
        let e = s.credentials(Duration::from_secs(300)).await.unwrap_err();
        assert!(e.to_string().contains("sts down"), "{e}");
    }

    /// Hands out credentials that expire `secs` from now (negative: ago).
    #[derive(Debug)]
    struct ExpiringAt(i64);

    impl ProvideCredentials for ExpiringAt {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let now = SystemTime::now();
            let d = Duration::from_secs(self.0.unsigned_abs());
            let exp = if self.0 >= 0 { now + d } else { now - d };
            future::ProvideCredentials::ready(Ok(Credentials::new(
                "AKID",
                "s",
                None,
                Some(exp),
                "EcsContainer",
            )))
        }
    }

    #[tokio::test]
    async fn credentials_dying_within_the_minimum_are_refused_with_their_expiry() {
        for (secs, when) in [(119, "expire in 11"), (-3600, "expired 3600s ago")] {
            let s = CredentialSource::new(SharedCredentialsProvider::new(ExpiringAt(secs)));
            let e = s.credentials(MIN).await.unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, CredsError::ExpiresTooSoon { min: 120, .. }),
                "{msg}"
            );
            assert!(
                msg.starts_with("the credentials from EcsContainer ") && msg.contains(when),
                "{msg}"
            );
            // The expiry is named in RFC 3339.
            let exp = msg
                .split("(expiry ")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap();
            assert!(humantime::parse_rfc3339(exp).is_ok(), "{msg}");
        }
        // Enough life for a smaller minimum.
        let s = CredentialSource::new(SharedCredentialsProvider::new(ExpiringAt(119)));
        assert!(s.credentials(Duration::from_secs(60)).await.is_ok());
    }

    #[tokio::test]
    async fn fresh_but_short_credentials_fall_back_to_longer_cached_ones() {
        // Cached credentials with 200 s left, then the source hands out ones
        // that expired an hour ago: the cached ones are used.
        let calls = Arc::new(AtomicUsize::new(0));
        #[derive(Debug)]
        struct GoodThenExpired(Arc<AtomicUsize>);
        impl ProvideCredentials for GoodThenExpired {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                let now = SystemTime::now();
                let exp = if n == 0 {
                    now + Duration::from_secs(200)
                } else {
                    now - Duration::from_secs(3600)
                };
                future::ProvideCredentials::ready(Ok(Credentials::new(
                    format!("AKID{n}"),
                    "s",
                    None,
                    Some(exp),
                    "test",
                )))
            }
        }
        let s = CredentialSource::new(SharedCredentialsProvider::new(GoodThenExpired(
            calls.clone(),
        )));
        assert_eq!(s.credentials(MIN).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(s.credentials(MIN).await.unwrap().access_key_id(), "AKID0");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a refresh was attempted");
    }

    #[test]
    fn raw_answers_are_cut_from_error_messages() {
        let imds = "error response from IMDS (code: 500). Response { status: StatusCode(500), \
                    body: SdkBody { inner: Once(Some(b\"{\\\"SecretAccessKey\\\":\\\"SECRET\\\"}\")) } }";
        assert_eq!(
            withhold_raw(imds),
            "error response from IMDS (code: 500). [raw answer withheld]"
        );
        assert_eq!(
            withhold_raw("service error: AccessDenied"),
            "service error: AccessDenied"
        );

        #[derive(Debug)]
        struct Outer(Inner);
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the credential source failed")
            }
        }
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bad answer: Request { body: SdkBody { SECRET } }")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        impl std::error::Error for Inner {}
        let s = error_chain(&Outer(Inner));
        assert_eq!(
            s,
            "the credential source failed: bad answer: [raw answer withheld]"
        );
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
