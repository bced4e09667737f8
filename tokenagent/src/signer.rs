//! Presigning `rds-db:connect` tokens with aws-sigv4.
//!
//! The token is the presigned URL
//! `https://host:port/?Action=connect&DBUser=user` (SigV4, service `rds-db`,
//! query-string signature, `X-Amz-Expires=900`) without its `https://`
//! prefix, exactly like botocore's `generate_db_auth_token` and the Rust
//! SDK's `AuthTokenGenerator`.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use rds_iam_common::TOKEN_LIFETIME_SECS;

use crate::token::Token;

/// The SigV4 service name of RDS IAM authentication.
pub const SERVICE: &str = "rds-db";

/// What a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub region: String,
}

/// Signing failed (this only happens on invalid inputs).
#[derive(Debug, thiserror::Error)]
#[error("could not sign the token: {0}")]
pub struct SignError(String);

impl SignError {
    pub fn from_msg(msg: String) -> Self {
        Self(msg)
    }
}

/// Percent-encodes a query value the SigV4 way: everything but
/// `A-Z a-z 0-9 - _ . ~` becomes `%XX`.
pub fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Presigns a token for `spec` with `creds`, as of `now`.
pub fn sign_token(
    spec: &TokenSpec,
    creds: &Credentials,
    now: SystemTime,
) -> Result<Token, SignError> {
    let identity: Identity = creds.clone().into();
    let mut settings = SigningSettings::default();
    settings.expires_in = Some(Duration::from_secs(TOKEN_LIFETIME_SECS));
    settings.signature_location = SignatureLocation::QueryParams;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&spec.region)
        .name(SERVICE)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| SignError(e.to_string()))?;
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
        .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params.into())
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    let mut token = base;
    for (name, value) in instructions.params() {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.push_str(&uri_encode(value));
    }
    Ok(Token::new(token))
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
            t.expose(),
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request\
             &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
        );
        assert_eq!(
            t.expires_at().unwrap(),
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
        let v = t.expose();
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

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(uri_encode("a b/c+d=e@f%"), "a%20b%2Fc%2Bd%3De%40f%25");
        assert_eq!(uri_encode("é"), "%C3%A9");
    }
}
