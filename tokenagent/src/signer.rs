//! Presigning `rds-db:connect` tokens with aws-sigv4.
//!
//! The token is the presigned URL
//! `https://host:port/?Action=connect&DBUser=user` (SigV4, service `rds-db`,
//! query-string signature) without its `https://` prefix, exactly like
//! botocore's `generate_db_auth_token` and the Rust SDK's `AuthTokenGenerator`.
//!
//! `X-Amz-Expires` is 900 seconds, or the whole seconds the credentials have
//! left if that is less: a token is never announced (nor accepted by RDS, which
//! enforces the signed `X-Amz-Expires`) beyond the life of the credentials
//! that signed it, and the `probe` reads the true expiry from the token alone.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use rds_iam_common::TOKEN_LIFETIME_SECS;

use crate::creds::provider_name;
use crate::token::{unix_secs, Token};

/// The SigV4 service name of RDS IAM authentication.
pub const SERVICE: &str = "rds-db";

/// The longest access key ID signed. IAM documents 16 to 128 characters.
pub const MAX_ACCESS_KEY_ID_LEN: usize = 128;
/// The longest session token signed. STS documents no maximum; real ones are
/// under 4 KiB ("typically"), IRSA and Pod Identity ones about 1 to 2 KiB.
pub const MAX_SESSION_TOKEN_LEN: usize = 16 * 1024;
/// The longest token written. The limits above keep every token below it
/// (at most about 50 KB even if every session token byte is percent-encoded),
/// and it stays below PostgreSQL's 65,535-byte limit on a password packet and
/// the HTTP URI limit (65,534 bytes) beyond which aws-sigv4 panics.
pub const MAX_TOKEN_LEN: usize = 60 * 1024;

/// What a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub region: String,
}

impl TokenSpec {
    /// The token of a database: its host, port, user and region.
    pub fn of(e: &rds_iam_common::Endpoint) -> Self {
        Self {
            host: e.host.clone(),
            port: e.port,
            user: e.user.clone(),
            region: e.region.clone(),
        }
    }
}

/// A signed token and when it stops being valid: the earlier of 15 minutes
/// after signing and the signing credentials' expiry. The token's own
/// `X-Amz-Date` + `X-Amz-Expires` say the same.
#[derive(Debug, Clone)]
pub struct SignedToken {
    pub token: Token,
    pub expires_at: SystemTime,
}

/// Signing was refused. No message holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "the credentials from {provider} have expired (their expiry is {expired_at}); \
         expired credentials are never used to sign"
    )]
    Expired {
        provider: String,
        expired_at: String,
    },
    #[error(
        "the {what} from {provider} is {len} bytes long, over the limit of {max}; \
         the credential source returned malformed credentials"
    )]
    TooLong {
        what: &'static str,
        provider: String,
        len: usize,
        max: usize,
    },
    #[error("the token would be {len} bytes long, over the limit of {max}")]
    TokenTooLong { len: usize, max: usize },
    #[error("could not sign the token: {0}")]
    Sdk(String),
}

/// Percent-encodes a query value the SigV4 way: everything but
/// `A-Z a-z 0-9 - _ . ~` becomes `%XX`.
pub use rds_iam_common::pct::encode as uri_encode;

/// How long a token signed at `now` with credentials expiring at `expiry`
/// may live: 900 s, or the whole seconds the credentials have left. `None`
/// if less than one second is left.
pub fn token_lifetime(expiry: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    let max = Duration::from_secs(TOKEN_LIFETIME_SECS);
    let Some(expiry) = expiry else {
        return Some(max);
    };
    let left = expiry.duration_since(now).ok()?.as_secs();
    (left >= 1).then(|| max.min(Duration::from_secs(left)))
}

/// Refuses credentials whose parts are too long to sign (aws-sigv4 panics on
/// a URI over 65,534 bytes). Errors name the part, never its value.
fn check_lengths(creds: &Credentials) -> Result<(), SignError> {
    let parts = [
        (
            "access key ID",
            creds.access_key_id().len(),
            MAX_ACCESS_KEY_ID_LEN,
        ),
        (
            "session token",
            creds.session_token().map_or(0, str::len),
            MAX_SESSION_TOKEN_LEN,
        ),
    ];
    match parts.into_iter().find(|(_, len, max)| len > max) {
        Some((what, len, max)) => Err(SignError::TooLong {
            what,
            provider: provider_name(creds),
            len,
            max,
        }),
        None => Ok(()),
    }
}

/// Presigns a token for `spec` with `creds`, as of `now`.
pub fn sign_token(
    spec: &TokenSpec,
    creds: &Credentials,
    now: SystemTime,
) -> Result<SignedToken, SignError> {
    check_lengths(creds)?;
    let lifetime = token_lifetime(creds.expiry(), now).ok_or_else(|| SignError::Expired {
        provider: provider_name(creds),
        expired_at: creds
            .expiry()
            .map(|e| humantime::format_rfc3339_seconds(e).to_string())
            .unwrap_or_default(),
    })?;
    let identity: Identity = creds.clone().into();
    let mut settings = SigningSettings::default();
    settings.expires_in = Some(lifetime);
    settings.signature_location = SignatureLocation::QueryParams;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&spec.region)
        .name(SERVICE)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| SignError::Sdk(e.to_string()))?;
    let base = format!(
        "{}:{}/?Action=connect&DBUser={}",
        spec.host,
        spec.port,
        uri_encode(&spec.user)
    );
    // HTTP host names are case-insensitive and botocore (like RDS) signs the
    // Host header in lower case; the token text keeps the host as given.
    let url = format!(
        "https://{}:{}/?Action=connect&DBUser={}",
        spec.host.to_ascii_lowercase(),
        spec.port,
        uri_encode(&spec.user)
    );
    let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| SignError::Sdk(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params.into())
        .map_err(|e| SignError::Sdk(e.to_string()))?
        .into_parts();
    let mut token = base;
    for (name, value) in instructions.params() {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.push_str(&uri_encode(value));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(SignError::TokenTooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    // X-Amz-Date is `now` in whole seconds.
    let signed = std::time::UNIX_EPOCH + Duration::from_secs(unix_secs(now));
    Ok(SignedToken {
        token: Token::new(token),
        expires_at: signed + lifetime,
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// The vector pinned by the official Rust SDK's `AuthTokenGenerator` test.
    #[test]
    fn matches_the_sdk_vector() {
        let spec = TokenSpec {
            host: "prod-instance.us-east-1.rds.amazonaws.com".into(),
            port: 3306,
            user: "peccy".into(),
            region: "us-east-1".into(),
        };
        let creds = Credentials::new("akid", "secret", None, None, "test");
        let t = sign_token(
            &spec,
            &creds,
            UNIX_EPOCH + Duration::from_secs(1_724_709_600),
        )
        .unwrap();
        assert_eq!(
            t.token.expose(),
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request\
             &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
        );
        assert_eq!(
            t.token.expires_at().unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_724_709_600 + 900)
        );
        assert_eq!(
            t.expires_at,
            UNIX_EPOCH + Duration::from_secs(1_724_709_600 + 900)
        );
    }

    #[test]
    fn session_token_is_signed_and_encoded() {
        let spec = TokenSpec {
            host: "db.example.com".into(),
            port: 5432,
            user: "app@corp".into(),
            region: "eu-west-1".into(),
        };
        let creds = Credentials::new("ASIAX", "s", Some("a+b/c=".into()), None, "test");
        let t = sign_token(
            &spec,
            &creds,
            UNIX_EPOCH + Duration::from_secs(1_724_709_600),
        )
        .unwrap();
        let v = t.token.expose();
        assert!(
            v.starts_with("db.example.com:5432/?Action=connect&DBUser=app%40corp&"),
            "{v}"
        );
        assert!(v.contains("&X-Amz-Security-Token=a%2Bb%2Fc%3D"), "{v}");
        assert!(!v.contains(['\n', ' ', '+']));
    }

    #[test]
    fn host_case_does_not_change_the_signature() {
        let creds = Credentials::new("akid", "secret", None, None, "test");
        let t = |host: &str| {
            let spec = TokenSpec {
                host: host.into(),
                port: 5432,
                user: "u".into(),
                region: "us-east-1".into(),
            };
            sign_token(&spec, &creds, UNIX_EPOCH)
                .unwrap()
                .token
                .expose()
                .to_owned()
        };
        let (upper, lower) = (t("DB.Example.com"), t("db.example.com"));
        assert!(upper.starts_with("DB.Example.com:5432/"), "{upper}");
        assert_eq!(
            upper.rsplit_once("Signature=").unwrap().1,
            lower.rsplit_once("Signature=").unwrap().1
        );
    }

    fn spec() -> TokenSpec {
        TokenSpec {
            host: "db.example.com".into(),
            port: 5432,
            user: "app".into(),
            region: "us-east-1".into(),
        }
    }

    fn param<'a>(token: &'a str, name: &str) -> &'a str {
        token
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
    }

    /// Signed at 2024-08-26T22:00:00.700Z (X-Amz-Date truncates to the second).
    const NOW_SECS: u64 = 1_724_709_600;
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(NOW_SECS * 1000 + 700)
    }

    fn expiring_in(millis: i64) -> Credentials {
        let now_ms = (NOW_SECS * 1000 + 700) as i64;
        let exp = UNIX_EPOCH + Duration::from_millis((now_ms + millis) as u64);
        Credentials::new("ASIAX", "s", Some("tok".into()), Some(exp), "EcsContainer")
    }

    #[test]
    fn token_life_is_capped_by_the_credentials() {
        // 2 minutes and 0.5 s left: X-Amz-Expires is the whole seconds left,
        // and the token expires at the latest when the credentials do.
        let creds = expiring_in(120_500);
        let t = sign_token(&spec(), &creds, now()).unwrap();
        assert_eq!(param(t.token.expose(), "X-Amz-Expires"), "120");
        assert_eq!(param(t.token.expose(), "X-Amz-Date"), "20240826T220000Z");
        assert_eq!(
            t.expires_at,
            UNIX_EPOCH + Duration::from_secs(NOW_SECS + 120)
        );
        assert!(t.expires_at <= creds.expiry().unwrap());
        assert_eq!(t.token.expires_at().unwrap(), t.expires_at);
        // An hour left: the full 900 s.
        let t = sign_token(&spec(), &expiring_in(3_600_000), now()).unwrap();
        assert_eq!(param(t.token.expose(), "X-Amz-Expires"), "900");
        assert_eq!(
            t.expires_at,
            UNIX_EPOCH + Duration::from_secs(NOW_SECS + 900)
        );
        // Exactly 900 s left and one second left.
        let t = sign_token(&spec(), &expiring_in(900_000), now()).unwrap();
        assert_eq!(param(t.token.expose(), "X-Amz-Expires"), "900");
        let t = sign_token(&spec(), &expiring_in(1_000), now()).unwrap();
        assert_eq!(param(t.token.expose(), "X-Amz-Expires"), "1");
    }

    #[test]
    fn expired_credentials_never_sign() {
        for millis in [999, 0, -1, -3_600_000] {
            let e = sign_token(&spec(), &expiring_in(millis), now()).unwrap_err();
            assert!(matches!(e, SignError::Expired { .. }), "{millis}: {e}");
        }
        let e = sign_token(&spec(), &expiring_in(-3_600_000), now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the credentials from EcsContainer have expired (their expiry is \
             2024-08-26T21:00:00Z); expired credentials are never used to sign"
        );
    }

    #[test]
    fn oversized_credentials_are_refused_by_name() {
        let long = "A".repeat(70_000);
        let cases = [
            (
                Credentials::new(&long, "s", None, None, "Environment"),
                "access key ID",
            ),
            (
                Credentials::new("AKID", "s", Some(long.clone()), None, "Environment"),
                "session token",
            ),
            (
                Credentials::new("A".repeat(129), "s", None, None, "Environment"),
                "access key ID",
            ),
            (
                Credentials::new(
                    "AKID",
                    "s",
                    Some("A".repeat(16 * 1024 + 1)),
                    None,
                    "Environment",
                ),
                "session token",
            ),
        ];
        for (creds, what) in cases {
            let e = sign_token(&spec(), &creds, now()).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, SignError::TooLong { what: w, .. } if w == what),
                "{msg}"
            );
            assert!(
                msg.contains(what) && msg.contains("from Environment"),
                "{msg}"
            );
            assert!(!msg.contains("AAAA"), "the value is never shown: {msg}");
        }
    }

    #[test]
    fn the_longest_inputs_sign_without_panicking() {
        // Every byte of the session token percent-encoded (three bytes each),
        // the longest host and user: still under the token limit.
        let spec = TokenSpec {
            host: format!(
                "{}.{}.{}.{}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ),
            port: 65535,
            user: "@".repeat(rds_iam_common::MAX_USER_LEN),
            region: "ap-southeast-2".into(),
        };
        assert_eq!(spec.host.len(), rds_iam_common::MAX_HOST_LEN);
        let creds = Credentials::new(
            "A".repeat(MAX_ACCESS_KEY_ID_LEN),
            "s",
            Some("/".repeat(MAX_SESSION_TOKEN_LEN)),
            None,
            "test",
        );
        let t = sign_token(&spec, &creds, now()).unwrap();
        let len = t.token.expose().len();
        assert!(
            len > 3 * MAX_SESSION_TOKEN_LEN && len < MAX_TOKEN_LEN,
            "{len}"
        );
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(uri_encode("a b/c+d=e@f%"), "a%20b%2Fc%2Bd%3De%40f%25");
        assert_eq!(uri_encode("é"), "%C3%A9");
    }
}
