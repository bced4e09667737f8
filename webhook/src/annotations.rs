//! Reads the `rds-iam/*` pod annotations into a typed, validated request.
//!
//! This module only looks at the annotations; whatever depends on the rest of
//! the pod (containers, UIDs, region from env) is decided in `mutate`.

use std::collections::BTreeMap;
use std::fmt;

use rds_iam_common::{is_region_name, parse_interval, parse_port, validate_host, validate_user};

use crate::config::SidecarMode;

pub const ENABLED: &str = "rds-iam/enabled";
pub const HOST: &str = "rds-iam/host";
pub const PORT: &str = "rds-iam/port";
pub const USER: &str = "rds-iam/user";
pub const DATABASE: &str = "rds-iam/database";
pub const REGION: &str = "rds-iam/region";
pub const CONTAINERS: &str = "rds-iam/containers";
pub const SSLMODE: &str = "rds-iam/sslmode";
pub const REFRESH_INTERVAL: &str = "rds-iam/refresh-interval";
pub const RUN_AS_USER: &str = "rds-iam/run-as-user";
pub const SIDECAR: &str = "rds-iam/sidecar";
/// Set by the webhook on every pod it patched.
pub const STATUS: &str = "rds-iam/status";
pub const STATUS_INJECTED: &str = "injected";

const PREFIX: &str = "rds-iam/";
const KNOWN: &[&str] = &[
    ENABLED,
    HOST,
    PORT,
    USER,
    DATABASE,
    REGION,
    CONTAINERS,
    SSLMODE,
    REFRESH_INTERVAL,
    RUN_AS_USER,
    SIDECAR,
    STATUS,
];

/// A refusal to admit the pod: names the annotation and says what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub annotation: &'static str,
    pub message: String,
}

impl Denial {
    pub fn new(annotation: &'static str, message: impl Into<String>) -> Self {
        Self {
            annotation,
            message: message.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "annotation {}: {}", self.annotation, self.message)
    }
}

impl std::error::Error for Denial {}

/// `sslmode` values strong enough for IAM authentication (which needs TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The validated annotations of an opted-in pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionRequest {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: Option<String>,
    pub region: Option<String>,
    /// Names from `rds-iam/containers`, in the order written, without blanks.
    pub containers: Option<Vec<String>>,
    pub sslmode: SslMode,
    /// Passed to the agent as written (already checked to lie in 1m..14m).
    pub refresh_interval: Option<String>,
    pub run_as_user: Option<i64>,
    pub sidecar: Option<SidecarMode>,
}

/// True only for `rds-iam/enabled: "true"`, exactly.
pub fn opted_in(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(ENABLED).map(String::as_str) == Some("true")
}

/// True when the webhook already marked the pod.
pub fn marked_injected(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(STATUS).map(String::as_str) == Some(STATUS_INJECTED)
}

/// Parses and validates the annotations of an opted-in pod.
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<InjectionRequest, Denial> {
    if let Some(unknown) = annotations
        .keys()
        .find(|k| k.starts_with(PREFIX) && !KNOWN.contains(&k.as_str()))
    {
        return Err(Denial {
            // Leak-free: the key is reported in the message; the field names
            // the closest thing we know, the opt-in annotation.
            annotation: ENABLED,
            message: format!(
                "unknown annotation {unknown:?} on an opted-in pod (a typo?); use only: {}",
                KNOWN[..KNOWN.len() - 1].join(", ")
            ),
        });
    }
    let get = |key: &str| annotations.get(key).map(String::as_str);

    let host = match get(HOST) {
        None => {
            return Err(Denial::new(
                HOST,
                "is missing; add the DB endpoint, e.g. rds-iam/host: \"mydb.abc123xyz.eu-west-1.rds.amazonaws.com\"",
            ))
        }
        Some(h) => {
            validate_host(h).map_err(|e| {
                Denial::new(
                    HOST,
                    format!(
                        "{h:?} {e}; write only the endpoint's DNS name, e.g. \"mydb.abc123xyz.eu-west-1.rds.amazonaws.com\", and put the port in rds-iam/port"
                    ),
                )
            })?;
            h.to_owned()
        }
    };

    let port = match get(PORT) {
        None => rds_iam_common::DEFAULT_PORT,
        Some(p) => parse_port(p).map_err(|e| {
            Denial::new(
                PORT,
                format!("{p:?} is not a port from 1 to 65535 ({e}); write e.g. \"5432\", or remove it for 5432"),
            )
        })?,
    };

    let user = match get(USER) {
        None => {
            return Err(Denial::new(
                USER,
                "is missing; add the database user that was granted rds_iam, e.g. rds-iam/user: \"app_user\"",
            ))
        }
        Some(u) => {
            validate_user(u).map_err(|e| {
                Denial::new(
                    USER,
                    format!("{u:?} {e}; write the plain database user name, e.g. \"app_user\""),
                )
            })?;
            u.to_owned()
        }
    };

    let database = match get(DATABASE) {
        None => None,
        Some(d) if d.is_empty() || d.chars().any(char::is_control) => {
            return Err(Denial::new(
                DATABASE,
                format!("{d:?} is empty or has control characters; write the database name, e.g. \"orders\", or remove the annotation"),
            ))
        }
        Some(d) => Some(d.to_owned()),
    };

    let region = match get(REGION) {
        None => None,
        Some(r) if is_region_name(r) => Some(r.to_owned()),
        Some(r) => {
            return Err(Denial::new(
                REGION,
                format!("{r:?} is not an AWS region name; write e.g. \"eu-west-1\", or remove it to derive the region from the host"),
            ))
        }
    };

    let containers = match get(CONTAINERS) {
        None => None,
        Some(list) => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return Err(Denial::new(
                    CONTAINERS,
                    format!("{list:?} names no container; write comma-separated container names, e.g. \"api,migrate\", or remove it for all app containers"),
                ));
            }
            Some(names)
        }
    };

    let sslmode = match get(SSLMODE) {
        None | Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(weak @ ("disable" | "allow" | "prefer")) => {
            return Err(Denial::new(
                SSLMODE,
                format!("{weak:?} is too weak: IAM authentication needs TLS; write \"require\", \"verify-ca\" or \"verify-full\""),
            ))
        }
        Some(other) => {
            return Err(Denial::new(
                SSLMODE,
                format!("{other:?} is not an sslmode; write \"require\", \"verify-ca\" or \"verify-full\""),
            ))
        }
    };

    let refresh_interval = match get(REFRESH_INTERVAL) {
        None => None,
        Some(i) => {
            parse_interval(i).map_err(|e| {
                Denial::new(
                    REFRESH_INTERVAL,
                    format!("{e}; write a duration from 1m to 14m, e.g. \"10m\", or remove it for the agent's default"),
                )
            })?;
            Some(i.trim().to_owned())
        }
    };

    let run_as_user = match get(RUN_AS_USER) {
        None => None,
        Some(u) => match u.trim().parse::<i64>() {
            Ok(0) => {
                return Err(Denial::new(
                    RUN_AS_USER,
                    "\"0\" is root and the agent never runs as root; write the non-root UID your app containers run as, e.g. \"1000\"",
                ))
            }
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Some(n),
            _ => {
                return Err(Denial::new(
                    RUN_AS_USER,
                    format!("{u:?} is not a UID; write the number your app containers run as, from 1 to {}", i32::MAX),
                ))
            }
        },
    };

    let sidecar = match get(SIDECAR) {
        None => None,
        Some(s) => Some(SidecarMode::parse(s).ok_or_else(|| {
            Denial::new(
                SIDECAR,
                format!(
                    "{s:?} is not a sidecar mode; write \"native\", \"classic\" or \"init-only\""
                ),
            )
        })?),
    };

    Ok(InjectionRequest {
        host,
        port,
        user,
        database,
        region,
        containers,
        sslmode,
        refresh_interval,
        run_as_user,
        sidecar,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            (ENABLED, "true"),
            (HOST, "db.abc.eu-west-1.rds.amazonaws.com"),
            (USER, "app"),
        ]
    }

    #[test]
    fn opt_in_is_exactly_true() {
        assert!(opted_in(&map(&[(ENABLED, "true")])));
        for v in ["True", "yes", "1", "", " true"] {
            assert!(!opted_in(&map(&[(ENABLED, v)])), "{v:?}");
        }
        assert!(!opted_in(&map(&[])));
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let r = parse(&map(&base())).unwrap();
        assert_eq!(r.port, 5432);
        assert_eq!(r.sslmode, SslMode::Require);
        assert_eq!(r.database, None);
        assert_eq!(r.containers, None);
        assert_eq!(r.sidecar, None);
    }

    #[test]
    fn all_annotations_are_read() {
        let mut a = base();
        a.extend([
            (PORT, "6432"),
            (DATABASE, "orders"),
            (REGION, "us-east-2"),
            (CONTAINERS, " api , migrate,"),
            (SSLMODE, "verify-full"),
            (REFRESH_INTERVAL, "5m"),
            (RUN_AS_USER, "1000"),
            (SIDECAR, "init-only"),
            (STATUS, "whatever"),
        ]);
        let r = parse(&map(&a)).unwrap();
        assert_eq!(
            r,
            InjectionRequest {
                host: "db.abc.eu-west-1.rds.amazonaws.com".into(),
                port: 6432,
                user: "app".into(),
                database: Some("orders".into()),
                region: Some("us-east-2".into()),
                containers: Some(vec!["api".into(), "migrate".into()]),
                sslmode: SslMode::VerifyFull,
                refresh_interval: Some("5m".into()),
                run_as_user: Some(1000),
                sidecar: Some(SidecarMode::InitOnly),
            }
        );
    }

    #[test]
    fn typo_is_denied() {
        let mut a = base();
        a.push(("rds-iam/databse", "x"));
        let d = parse(&map(&a)).unwrap_err();
        assert!(d.message.contains("rds-iam/databse"), "{d}");
    }
}
