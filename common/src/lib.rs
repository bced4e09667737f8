//! Validation and names shared by the webhook and the token agent.
//!
//! Both binaries accept the same values (the webhook from pod annotations, the
//! agent from flags and env), so both parse them here. Every error says what is
//! wrong with the value but not which field it came from: the caller prefixes
//! the flag or annotation name, e.g. `--host: contains ':'`.

use std::time::Duration;

/// Where the agent writes its files, in the agent and in the app containers.
pub const DEFAULT_DIR: &str = "/var/run/rds-iam";
/// The raw token file's name inside the directory.
pub const TOKEN_FILE: &str = "token";
/// The libpq passfile's name inside the directory.
pub const PGPASS_FILE: &str = "pgpass";
/// The agent's binary name (its image's entrypoint, and on `PATH`).
pub const AGENT_BINARY: &str = "rds-iam-tokenagent";
/// The default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;
/// The default refresh interval of the agent.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
/// The shortest refresh interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The longest refresh interval accepted: tokens live 15 minutes, so a
/// refresh must happen before the previous token expires.
pub const MAX_INTERVAL: Duration = Duration::from_secs(14 * 60);
/// How long an RDS IAM token is valid, in seconds (the service's maximum).
pub const TOKEN_LIFETIME_SECS: u64 = 900;
/// PostgreSQL truncates identifiers (and so role names) at 63 bytes.
pub const MAX_USER_LEN: usize = 63;
/// The longest DNS name.
pub const MAX_HOST_LEN: usize = 253;

/// Why a value was rejected. The message never names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("is empty")]
    Empty,
    #[error("contains ':' at byte {0}; it must be a plain name without a port or scheme")]
    Colon(usize),
    #[error("contains whitespace at byte {0}")]
    Whitespace(usize),
    #[error("contains a control character (such as a newline) at byte {0}")]
    Control(usize),
    #[error("is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("is not a valid DNS name: {0}")]
    BadHostname(&'static str),
    #[error("{0:?} is not a port number; write a number from 1 to 65535")]
    PortNotNumber(String),
    #[error("{0} is outside 1..65535")]
    PortRange(u64),
    #[error("{value:?} is not a duration ({reason}); write e.g. 10m, 5m30s or 600s")]
    BadDuration { value: String, reason: String },
    #[error("{0:?} is outside 1m..14m (tokens live 15 minutes, so refresh at least a minute before they expire)")]
    IntervalRange(String),
}

/// Rejects characters that can never be part of a host or user and could break
/// a pgpass line or a log line: `:`, whitespace and control characters.
fn reject_separators(value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::Empty);
    }
    for (i, c) in value.char_indices() {
        if c == ':' {
            return Err(FieldError::Colon(i));
        }
        if c.is_control() {
            return Err(FieldError::Control(i));
        }
        if c.is_whitespace() {
            return Err(FieldError::Whitespace(i));
        }
    }
    Ok(())
}

/// Checks a database endpoint host name: a DNS name or IPv4 address, no port.
pub fn validate_host(host: &str) -> Result<(), FieldError> {
    reject_separators(host)?;
    if host.len() > MAX_HOST_LEN {
        return Err(FieldError::TooLong {
            len: host.len(),
            max: MAX_HOST_LEN,
        });
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(FieldError::BadHostname(
                "it has an empty label (two dots in a row, or a leading dot)",
            ));
        }
        if label.len() > 63 {
            return Err(FieldError::BadHostname(
                "a label is longer than 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(FieldError::BadHostname(
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(FieldError::BadHostname("a label starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Checks a database user name.
pub fn validate_user(user: &str) -> Result<(), FieldError> {
    reject_separators(user)?;
    if user.len() > MAX_USER_LEN {
        return Err(FieldError::TooLong {
            len: user.len(),
            max: MAX_USER_LEN,
        });
    }
    Ok(())
}

/// Parses a TCP port, 1..=65535.
pub fn parse_port(value: &str) -> Result<u16, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::Empty);
    }
    let n: u64 = trimmed
        .parse()
        .map_err(|_| FieldError::PortNotNumber(value.to_owned()))?;
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(FieldError::PortRange(n)),
    }
}

/// Parses a refresh interval such as `10m`, `5m30s` or `600s`, within 1m..=14m.
pub fn parse_interval(value: &str) -> Result<Duration, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::Empty);
    }
    let d = humantime::parse_duration(trimmed).map_err(|e| FieldError::BadDuration {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    check_interval(d).map_err(|_| FieldError::IntervalRange(value.to_owned()))
}

/// Checks that an interval lies within 1m..=14m.
pub fn check_interval(d: Duration) -> Result<Duration, FieldError> {
    if (MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
        Ok(d)
    } else {
        Err(FieldError::IntervalRange(
            humantime::format_duration(d).to_string(),
        ))
    }
}

/// Parses a duration without range limits (e.g. `--min-life 2m`).
pub fn parse_duration(value: &str) -> Result<Duration, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::Empty);
    }
    humantime::parse_duration(trimmed).map_err(|e| FieldError::BadDuration {
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// Derives the AWS region from an RDS endpoint host name.
///
/// Recognises instance endpoints (`db.abc.us-east-1.rds.amazonaws.com`),
/// cluster, reader and custom endpoints (`c.cluster-ro-abc.REGION...`), RDS
/// Proxy endpoints (`p.proxy-abc.REGION...`) and the China partition
/// (`...REGION.rds.amazonaws.com.cn`). Anything else gives `None`.
pub fn region_from_hostname(host: &str) -> Option<String> {
    let lower = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let suffix_len = if lower.ends_with(".rds.amazonaws.com") {
        3
    } else if lower.ends_with(".rds.amazonaws.com.cn") {
        4
    } else {
        return None;
    };
    // name, id, region, then the suffix.
    if labels.len() < suffix_len + 3 {
        return None;
    }
    let region = labels[labels.len() - suffix_len - 1];
    if labels[..labels.len() - suffix_len - 1]
        .iter()
        .any(|l| l.is_empty())
    {
        return None;
    }
    is_region_name(region).then(|| region.to_owned())
}

/// `us-east-1`, `eu-central-2`, `cn-northwest-1`, `us-gov-west-1`, `ap-southeast-5`...
pub fn is_region_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() < 3 {
        return false;
    }
    let (last, rest) = match parts.split_last() {
        Some(x) => x,
        None => return false,
    };
    !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && rest
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[0].len() == 2
}

/// Test support: a property test's case count, multiplied by the env var
/// `RDS_IAM_FUZZ_SCALE` (default 1) for the long fuzz runs in BENCHMARKS.md.
#[doc(hidden)]
pub fn fuzz_cases(base: u32) -> u32 {
    std::env::var("RDS_IAM_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
        .saturating_mul(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "mydb.c9akciq32.us-east-1.rds.amazonaws.com",
                Some("us-east-1"),
            ),
            (
                "MyDB.C9AKCIQ32.EU-West-3.RDS.AMAZONAWS.COM",
                Some("eu-west-3"),
            ),
            (
                "mydb.c9akciq32.us-east-1.rds.amazonaws.com.",
                Some("us-east-1"),
            ),
            (
                "aurora.cluster-c9akciq32.eu-central-1.rds.amazonaws.com",
                Some("eu-central-1"),
            ),
            (
                "aurora.cluster-ro-c9akciq32.ap-southeast-2.rds.amazonaws.com",
                Some("ap-southeast-2"),
            ),
            (
                "reports.cluster-custom-c9akciq32.us-west-2.rds.amazonaws.com",
                Some("us-west-2"),
            ),
            (
                "myproxy.proxy-c9akciq32.us-east-2.rds.amazonaws.com",
                Some("us-east-2"),
            ),
            (
                "myproxy-ro.endpoint.proxy-c9akciq32.us-east-2.rds.amazonaws.com",
                Some("us-east-2"),
            ),
            (
                "mydb.c9akciq32.cn-north-1.rds.amazonaws.com.cn",
                Some("cn-north-1"),
            ),
            (
                "mydb.c9akciq32.cn-northwest-1.rds.amazonaws.com.cn",
                Some("cn-northwest-1"),
            ),
            (
                "mydb.c9akciq32.us-gov-west-1.rds.amazonaws.com",
                Some("us-gov-west-1"),
            ),
            ("db.internal.example.com", None),
            ("localhost", None),
            ("127.0.0.1", None),
            ("us-east-1.rds.amazonaws.com", None),
            ("x.us-east-1.rds.amazonaws.com", None),
            ("mydb.abc.not-a-region.rds.amazonaws.com", None),
            ("mydb.abc.useast1.rds.amazonaws.com", None),
            ("mydb.abc.us-east-1.rds.amazonaws.com.evil.example", None),
            ("mydb.abc.us-east-1.rds.amazonaws.co", None),
            ("mydb..us-east-1.rds.amazonaws.com", None),
        ];
        for (host, want) in cases {
            assert_eq!(
                region_from_hostname(host).as_deref(),
                *want,
                "region_from_hostname({host:?})"
            );
        }
    }

    #[test]
    fn host_validation() {
        assert!(validate_host("mydb.c9akciq32.us-east-1.rds.amazonaws.com").is_ok());
        assert!(validate_host("localhost").is_ok());
        assert!(validate_host("127.0.0.1").is_ok());
        assert!(validate_host("db.example.com.").is_ok());
        assert_eq!(validate_host(""), Err(FieldError::Empty));
        assert_eq!(validate_host("db:5432"), Err(FieldError::Colon(2)));
        assert_eq!(validate_host("db host"), Err(FieldError::Whitespace(2)));
        assert_eq!(validate_host("db\nhost"), Err(FieldError::Control(2)));
        assert_eq!(validate_host("db\thost"), Err(FieldError::Control(2)));
        assert!(matches!(
            validate_host("a..b"),
            Err(FieldError::BadHostname(_))
        ));
        assert!(matches!(
            validate_host("-a.b"),
            Err(FieldError::BadHostname(_))
        ));
        assert!(matches!(
            validate_host("a/b"),
            Err(FieldError::BadHostname(_))
        ));
        assert!(matches!(
            validate_host("a\\b"),
            Err(FieldError::BadHostname(_))
        ));
        assert!(matches!(
            validate_host(&"a".repeat(64)),
            Err(FieldError::BadHostname(_))
        ));
        let long = vec!["abc"; 70].join(".");
        assert!(matches!(
            validate_host(&long),
            Err(FieldError::TooLong { .. })
        ));
    }

    #[test]
    fn user_validation() {
        assert!(validate_user("app_user").is_ok());
        assert!(validate_user("app.user@corp-1").is_ok());
        assert!(validate_user("back\\slash").is_ok());
        assert_eq!(validate_user(""), Err(FieldError::Empty));
        assert_eq!(validate_user("a:b"), Err(FieldError::Colon(1)));
        assert_eq!(validate_user("a\nb"), Err(FieldError::Control(1)));
        assert_eq!(validate_user("a\rb"), Err(FieldError::Control(1)));
        assert_eq!(validate_user("a b"), Err(FieldError::Whitespace(1)));
        assert_eq!(validate_user("a\u{2028}b"), Err(FieldError::Whitespace(1)));
        assert_eq!(
            validate_user(&"u".repeat(64)),
            Err(FieldError::TooLong { len: 64, max: 63 })
        );
    }

    #[test]
    fn port_bounds() {
        assert_eq!(parse_port("5432"), Ok(5432));
        assert_eq!(parse_port("1"), Ok(1));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("0"), Err(FieldError::PortRange(0)));
        assert_eq!(parse_port("65536"), Err(FieldError::PortRange(65536)));
        assert!(matches!(
            parse_port("-1"),
            Err(FieldError::PortNotNumber(_))
        ));
        assert!(matches!(
            parse_port("54a"),
            Err(FieldError::PortNotNumber(_))
        ));
        assert!(matches!(
            parse_port("99999999999999999999999"),
            Err(FieldError::PortNotNumber(_))
        ));
        assert_eq!(parse_port(""), Err(FieldError::Empty));
    }

    #[test]
    fn interval_bounds() {
        assert_eq!(parse_interval("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("14m"), Ok(Duration::from_secs(840)));
        assert_eq!(parse_interval("5m 30s"), Ok(Duration::from_secs(330)));
        assert_eq!(parse_interval("600s"), Ok(Duration::from_secs(600)));
        assert!(matches!(
            parse_interval("59s"),
            Err(FieldError::IntervalRange(_))
        ));
        assert!(matches!(
            parse_interval("14m1s"),
            Err(FieldError::IntervalRange(_))
        ));
        assert!(matches!(
            parse_interval("15m"),
            Err(FieldError::IntervalRange(_))
        ));
        assert!(matches!(
            parse_interval("0s"),
            Err(FieldError::IntervalRange(_))
        ));
        assert!(matches!(
            parse_interval("ten"),
            Err(FieldError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_interval("600"),
            Err(FieldError::BadDuration { .. })
        ));
        assert_eq!(parse_interval(""), Err(FieldError::Empty));
    }

    #[test]
    fn messages_are_actionable() {
        let m = parse_interval("15m").unwrap_err().to_string();
        assert!(m.contains("1m..14m"), "{m}");
        let m = parse_port("70000").unwrap_err().to_string();
        assert!(m.contains("1..65535"), "{m}");
        let m = validate_host("db:5432").unwrap_err().to_string();
        assert!(m.contains("':'"), "{m}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(fuzz_cases(2000)))]
        #[test]
        fn accepted_values_never_carry_separators(s in "\\PC*|[\\x00-\\x7f]{0,80}") {
            if validate_user(&s).is_ok() {
                proptest::prop_assert!(!s.contains(['\n', '\r', ':']) && !s.is_empty());
            }
            if validate_host(&s).is_ok() {
                proptest::prop_assert!(!s.contains(['\n', '\r', ':', '\\', ' ']) && !s.is_empty());
            }
            let _ = parse_port(&s);
            let _ = parse_interval(&s);
            let _ = region_from_hostname(&s);
        }
    }
}
