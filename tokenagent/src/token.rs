//! An RDS IAM auth token and what can be read back from it.
//!
//! The token is a presigned URL without its scheme:
//! `host:port/?Action=connect&DBUser=u&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&...`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rds_iam_common::TOKEN_LIFETIME_SECS;

/// A token. Its `Debug` and `Display` never show the value, so it cannot end
/// up in a log by accident; use [`Token::expose`] to write it to its files.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// When the token stops being accepted.
    pub fn expires_at(&self) -> Result<SystemTime, TokenError> {
        expires_at(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token's expiry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has no {0} parameter")]
    Missing(&'static str),
    #[error("the token's X-Amz-Date is not of the form YYYYMMDDTHHMMSSZ")]
    BadDate,
    #[error("the token's X-Amz-Expires is not a number of seconds from 1 to 900")]
    BadExpires,
}

fn query_param<'a>(token: &'a str, name: &str) -> Option<&'a str> {
    let query = token.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// When a token was signed (`X-Amz-Date`) and when it expires
/// (`X-Amz-Date + X-Amz-Expires`). RDS accepts `X-Amz-Expires` from 1 to 900.
pub fn validity(token: &str) -> Result<(SystemTime, SystemTime), TokenError> {
    let date = query_param(token, "X-Amz-Date").ok_or(TokenError::Missing("X-Amz-Date"))?;
    let expires =
        query_param(token, "X-Amz-Expires").ok_or(TokenError::Missing("X-Amz-Expires"))?;
    let signed = parse_amz_date(date).ok_or(TokenError::BadDate)?;
    let secs: u64 = expires
        .parse()
        .ok()
        .filter(|s| (1..=TOKEN_LIFETIME_SECS).contains(s))
        .ok_or(TokenError::BadExpires)?;
    Ok((signed, signed + Duration::from_secs(secs)))
}

/// Reads `X-Amz-Date + X-Amz-Expires` from a token.
pub fn expires_at(token: &str) -> Result<SystemTime, TokenError> {
    validity(token).map(|(_, exp)| exp)
}

/// Parses `YYYYMMDDTHHMMSSZ` (UTC).
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the Unix epoch, saturating at 0.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_expiry() {
        // 2024-08-26T22:00:00Z is 1724709600 (independently: `date -ud @1724709600`).
        let t = "h:3306/?Action=connect&DBUser=peccy&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-Signature=x";
        assert_eq!(
            expires_at(t).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_724_709_600 + 900)
        );
    }

    #[test]
    fn known_dates() {
        let cases = [
            ("19700101T000000Z", 0u64),
            ("20000229T120000Z", 951_825_600),
            ("20261122T023105Z", 1_795_314_665),
            ("21000301T000000Z", 4_107_542_400),
        ];
        for (s, want) in cases {
            assert_eq!(unix_secs(parse_amz_date(s).unwrap()), want, "{s}");
        }
        for bad in [
            "2024082T220000Z",
            "20241326T220000Z",
            "20240826 220000Z",
            "20240826T2200000",
            "2024O826T220000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        assert_eq!(
            expires_at("h:1/?X-Amz-Expires=900"),
            Err(TokenError::Missing("X-Amz-Date"))
        );
        assert_eq!(
            expires_at("h:1/?X-Amz-Date=20240826T220000Z"),
            Err(TokenError::Missing("X-Amz-Expires"))
        );
        for bad in ["9x", "0", "901", "99999999999999999999", "-1"] {
            assert_eq!(
                expires_at(&format!(
                    "h:1/?X-Amz-Date=20240826T220000Z&X-Amz-Expires={bad}"
                )),
                Err(TokenError::BadExpires),
                "{bad}"
            );
        }
        assert_eq!(
            validity("h:1/?X-Amz-Date=20240826T220000Z&X-Amz-Expires=1"),
            Ok((
                UNIX_EPOCH + Duration::from_secs(1_724_709_600),
                UNIX_EPOCH + Duration::from_secs(1_724_709_601)
            ))
        );
    }

    #[test]
    fn debug_is_redacted() {
        let t = Token::new("secret-token-value".into());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
