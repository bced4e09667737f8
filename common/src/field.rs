//! Per-value validation shared by the webhook (annotations) and the agent
//! (flags and env).
//!
//! A [`FieldError`] states only the problem with a value. It never names the
//! field, never repeats the value and never gives advice: the caller knows
//! which annotation or flag it came from and what to write instead, and adds
//! both once with [`describe`].

use std::time::Duration;

use crate::{MAX_HOST_LEN, MAX_INTERVAL, MAX_USER_LEN, MIN_INTERVAL};

/// Why a value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("is empty")]
    Empty,
    #[error("lists nothing")]
    NothingListed,
    #[error("contains ':' at byte {0}")]
    Colon(usize),
    #[error("contains whitespace at byte {0}")]
    Whitespace(usize),
    #[error("contains a control character (such as a newline) at byte {0}")]
    Control(usize),
    #[error("starts or ends with whitespace")]
    OuterWhitespace,
    #[error("is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("is not a valid DNS name: {0}")]
    BadHostname(&'static str),
    #[error("is not a number")]
    NotNumber,
    #[error("is outside {0}")]
    OutOfRange(&'static str),
    #[error("is not a duration ({0})")]
    BadDuration(String),
    #[error("is not an AWS region name")]
    BadRegion,
    #[error("is not a database name: {0}")]
    BadName(&'static str),
    #[error("is not one of {0}")]
    NotOneOf(&'static str),
    #[error("is too weak: IAM authentication needs TLS")]
    WeakSslMode,
}

/// The one way both binaries word a rejected value:
/// `"70000" is outside 1..65535; write a port from 1 to 65535, e.g. "5432"`.
/// A value longer than [`QUOTED_MAX`] is quoted by its start and length.
pub fn describe(value: &str, err: &FieldError, advice: &str) -> String {
    let quoted = quote(value);
    if advice.is_empty() {
        format!("{quoted} {err}")
    } else {
        format!("{quoted} {err}; {advice}")
    }
}

/// The most bytes of a value a message quotes.
pub const QUOTED_MAX: usize = 100;

/// `value` quoted, or its first [`QUOTED_MAX`] bytes (on a character
/// boundary) and its length: a message never grows with its input.
pub fn quote(value: &str) -> String {
    match head(value) {
        None => format!("{value:?}"),
        Some(h) => format!("{h:?}... ({} bytes)", value.len()),
    }
}

/// Like [`quote`], for a name shown as it is (an annotation key).
pub fn clip(name: &str) -> std::borrow::Cow<'_, str> {
    match head(name) {
        None => name.into(),
        Some(h) => format!("{h}... ({} bytes)", name.len()).into(),
    }
}

/// The first [`QUOTED_MAX`] bytes of a longer `value`, on a character boundary.
fn head(value: &str) -> Option<&str> {
    if value.len() <= QUOTED_MAX {
        return None;
    }
    let mut end = QUOTED_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Some(&value[..end])
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

/// Checks a database (schema) name: PostgreSQL allows almost anything in a
/// quoted identifier, but a name must fit on one line of `pg_service.conf`,
/// which trims whitespace at both ends.
pub fn validate_database(db: &str) -> Result<(), FieldError> {
    if db.is_empty() {
        return Err(FieldError::Empty);
    }
    if let Some((i, _)) = db.char_indices().find(|(_, c)| c.is_control()) {
        return Err(FieldError::Control(i));
    }
    if db.trim() != db {
        return Err(FieldError::OuterWhitespace);
    }
    if db.len() > MAX_USER_LEN {
        return Err(FieldError::TooLong {
            len: db.len(),
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
    if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::NotNumber);
    }
    match trimmed.parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(FieldError::OutOfRange("1..65535")),
    }
}

/// Parses a refresh interval such as `10m`, `5m30s` or `600s`, within 1m..=14m.
pub fn parse_interval(value: &str) -> Result<Duration, FieldError> {
    check_interval(parse_duration(value)?)
}

/// Checks that an interval lies within 1m..=14m.
pub fn check_interval(d: Duration) -> Result<Duration, FieldError> {
    if (MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
        Ok(d)
    } else {
        Err(FieldError::OutOfRange("1m..14m"))
    }
}

/// Parses a duration without range limits (e.g. `--min-life 2m`).
pub fn parse_duration(value: &str) -> Result<Duration, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::Empty);
    }
    humantime::parse_duration(trimmed).map_err(|e| FieldError::BadDuration(e.to_string()))
}

/// Parses an AWS region name such as `eu-west-1`.
pub fn parse_region(value: &str) -> Result<String, FieldError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(FieldError::Empty);
    }
    if crate::region::is_region_name(v) {
        Ok(v.to_owned())
    } else {
        Err(FieldError::BadRegion)
    }
}

/// Parses a non-root UID (1..=2^31-1), as Kubernetes' `runAsUser` takes it.
pub fn parse_uid(value: &str) -> Result<i64, FieldError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(FieldError::Empty);
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::NotNumber);
    }
    match v.parse::<i64>() {
        Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(n),
        _ => Err(FieldError::OutOfRange("1..2147483647 (0 is root)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in ["a..b", "-a.b", "a/b", "a\\b", "db$(X)", "a$b"] {
            assert!(
                matches!(validate_host(bad), Err(FieldError::BadHostname(_))),
                "{bad}"
            );
        }
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
        assert!(
            validate_user("$(AWS_ROLE_ARN)").is_ok(),
            "escaped, not refused"
        );
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
    fn database_validation() {
        assert!(validate_database("orders").is_ok());
        assert!(validate_database("my db").is_ok());
        assert_eq!(validate_database(""), Err(FieldError::Empty));
        assert_eq!(validate_database("a\nb"), Err(FieldError::Control(1)));
        assert_eq!(validate_database(" a"), Err(FieldError::OuterWhitespace));
        assert_eq!(validate_database("a "), Err(FieldError::OuterWhitespace));
    }

    #[test]
    fn port_bounds() {
        assert_eq!(parse_port("5432"), Ok(5432));
        assert_eq!(parse_port("1"), Ok(1));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("0"), Err(FieldError::OutOfRange("1..65535")));
        assert_eq!(parse_port("65536"), Err(FieldError::OutOfRange("1..65535")));
        assert_eq!(
            parse_port("99999999999999999999999"),
            Err(FieldError::OutOfRange("1..65535"))
        );
        assert_eq!(parse_port("-1"), Err(FieldError::NotNumber));
        assert_eq!(parse_port("+1"), Err(FieldError::NotNumber));
        assert_eq!(parse_port("54a"), Err(FieldError::NotNumber));
        assert_eq!(parse_port(""), Err(FieldError::Empty));
    }

    #[test]
    fn interval_bounds() {
        assert_eq!(parse_interval("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("14m"), Ok(Duration::from_secs(840)));
        assert_eq!(parse_interval("5m 30s"), Ok(Duration::from_secs(330)));
        assert_eq!(parse_interval("600s"), Ok(Duration::from_secs(600)));
        for out in ["59s", "14m1s", "15m", "0s"] {
            assert_eq!(
                parse_interval(out),
                Err(FieldError::OutOfRange("1m..14m")),
                "{out}"
            );
        }
        assert!(matches!(
            parse_interval("ten"),
            Err(FieldError::BadDuration(_))
        ));
        assert!(matches!(
            parse_interval("600"),
            Err(FieldError::BadDuration(_))
        ));
        assert_eq!(parse_interval(""), Err(FieldError::Empty));
    }

    #[test]
    fn uid_bounds() {
        assert_eq!(parse_uid("1000"), Ok(1000));
        assert_eq!(parse_uid("2147483647"), Ok(2147483647));
        assert!(matches!(parse_uid("0"), Err(FieldError::OutOfRange(_))));
        assert!(matches!(
            parse_uid("2147483648"),
            Err(FieldError::OutOfRange(_))
        ));
        assert_eq!(parse_uid("-5"), Err(FieldError::NotNumber));
        assert_eq!(parse_uid("root"), Err(FieldError::NotNumber));
    }

    /// The problem once, then the advice once; the value quoted.
    #[test]
    fn described_messages_say_each_thing_once() {
        let m = describe(
            "abc",
            &parse_port("abc").unwrap_err(),
            "write a port from 1 to 65535, e.g. \"5432\"",
        );
        assert_eq!(
            m,
            "\"abc\" is not a number; write a port from 1 to 65535, e.g. \"5432\""
        );
        let m = describe("15m", &parse_interval("15m").unwrap_err(), "");
        assert_eq!(m, "\"15m\" is outside 1m..14m");
    }

    #[test]
    fn long_values_are_quoted_by_their_start() {
        let long = format!("{}é{}", "a".repeat(99), "b".repeat(1_000_000));
        let m = describe(&long, &validate_host(&long).unwrap_err(), "write a host");
        assert_eq!(
            m,
            format!(
                "\"{}\"... (1000101 bytes) is 1000101 bytes long; the limit is 253; write a host",
                "a".repeat(99)
            ),
            "cut before the two-byte é that straddles byte 100"
        );
        assert_eq!(quote(&"x".repeat(100)), format!("\"{}\"", "x".repeat(100)));
        assert_eq!(clip(&"k".repeat(100)), "k".repeat(100));
        assert_eq!(
            clip(&"k".repeat(101)),
            format!("{}... (101 bytes)", "k".repeat(100))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::fuzz_cases(2000)))]
        #[test]
        fn accepted_values_never_carry_separators(s in "\\PC*|[\\x00-\\x7f]{0,80}") {
            if validate_user(&s).is_ok() {
                proptest::prop_assert!(!s.contains(['\n', '\r', ':']) && !s.is_empty());
            }
            if validate_host(&s).is_ok() {
                proptest::prop_assert!(!s.contains(['\n', '\r', ':', '\\', ' ', '$']) && !s.is_empty());
            }
            if validate_database(&s).is_ok() {
                proptest::prop_assert!(!s.contains(['\n', '\r']) && !s.is_empty());
            }
            let _ = parse_port(&s);
            let _ = parse_interval(&s);
            let _ = parse_uid(&s);
        }
    }
}
