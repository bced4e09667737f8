//! Which AWS region to sign for, and how it was decided.

use std::fmt;

use rds_iam_common::{is_region_name, region_from_hostname};

/// Where the region came from, for logs and `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    Flag,
    Hostname,
    Env(&'static str),
}

impl fmt::Display for RegionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionSource::Flag => f.write_str("--region / RDS_IAM_REGION"),
            RegionSource::Hostname => f.write_str("derived from the RDS host name"),
            RegionSource::Env(name) => write!(f, "{name}"),
        }
    }
}

/// The region could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("--region (RDS_IAM_REGION): {0:?} is not an AWS region name; write e.g. us-east-1")]
    BadFlag(String),
    #[error("{name}: {value:?} is not an AWS region name; write e.g. us-east-1")]
    BadEnv { name: &'static str, value: String },
    #[error(
        "the AWS region cannot be determined: {host:?} is not an RDS endpoint name \
         (*.REGION.rds.amazonaws.com), and neither --region (RDS_IAM_REGION) nor \
         AWS_REGION / AWS_DEFAULT_REGION is set; set --region to the database's region"
    )]
    Unknown { host: String },
}

/// Resolves the region: the flag, else the RDS host name, else
/// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub fn resolve(
    flag: Option<&str>,
    host: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, RegionSource), RegionError> {
    if let Some(r) = flag.map(str::trim).filter(|r| !r.is_empty()) {
        return if is_region_name(r) {
            Ok((r.to_owned(), RegionSource::Flag))
        } else {
            Err(RegionError::BadFlag(r.to_owned()))
        };
    }
    if let Some(r) = region_from_hostname(host) {
        return Ok((r, RegionSource::Hostname));
    }
    for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Some(v) = env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
        {
            return if is_region_name(&v) {
                Ok((v, RegionSource::Env(name)))
            } else {
                Err(RegionError::BadEnv { name, value: v })
            };
        }
    }
    Err(RegionError::Unknown {
        host: host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn precedence_table() {
        let rds = "db.abc.eu-west-1.rds.amazonaws.com";
        let both: &[(&str, &str)] = &[
            ("AWS_REGION", "us-west-2"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
        ];
        let dflt: &[(&str, &str)] = &[("AWS_DEFAULT_REGION", "ap-south-1")];
        type Case = (
            Option<&'static str>,
            &'static str,
            &'static [(&'static str, &'static str)],
            Result<(&'static str, RegionSource), ()>,
        );
        let cases: &[Case] = &[
            (
                Some("us-east-2"),
                rds,
                both,
                Ok(("us-east-2", RegionSource::Flag)),
            ),
            (None, rds, both, Ok(("eu-west-1", RegionSource::Hostname))),
            (
                None,
                "localhost",
                both,
                Ok(("us-west-2", RegionSource::Env("AWS_REGION"))),
            ),
            (
                None,
                "localhost",
                dflt,
                Ok(("ap-south-1", RegionSource::Env("AWS_DEFAULT_REGION"))),
            ),
            (
                Some(""),
                "localhost",
                dflt,
                Ok(("ap-south-1", RegionSource::Env("AWS_DEFAULT_REGION"))),
            ),
            (None, "localhost", &[], Err(())),
            (Some("useast1"), rds, &[], Err(())),
            (None, "localhost", &[("AWS_REGION", "moon")], Err(())),
        ];
        for (flag, host, env, want) in cases {
            let got = resolve(*flag, host, env_of(env));
            match want {
                Ok((r, src)) => assert_eq!(got, Ok((r.to_string(), *src)), "{flag:?} {host}"),
                Err(()) => assert!(got.is_err(), "{flag:?} {host}: {got:?}"),
            }
        }
    }

    #[test]
    fn unknown_region_message_says_what_to_set() {
        let e = resolve(None, "db.internal", |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--region") && e.contains("AWS_REGION") && e.contains("db.internal"),
            "{e}"
        );
    }
}
