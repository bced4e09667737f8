//! Which AWS region a token is signed for, decided the same way by the
//! webhook (from annotations and the target containers' env) and by the agent
//! (from its flags and its own env).

use std::fmt;

/// The env variables that name a region, in the order they are consulted.
pub const REGION_ENV: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

/// Where the region came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    /// The annotation or the flag.
    Explicit,
    /// Derived from an RDS host name.
    Hostname,
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`.
    Env(&'static str),
    /// The webhook's `--default-region`.
    Default,
}

impl fmt::Display for RegionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit => f.write_str("set explicitly"),
            Self::Hostname => f.write_str("derived from the RDS host name"),
            Self::Env(name) => write!(f, "from {name}"),
            Self::Default => f.write_str("the webhook's --default-region"),
        }
    }
}

/// The region could not be decided. The caller adds which annotation or flag
/// to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("{0:?} is not an AWS region name")]
    BadExplicit(String),
    #[error("{name} is {value:?}, which is not an AWS region name")]
    BadEnv { name: &'static str, value: String },
    #[error("host {0:?} is not an RDS endpoint name (*.REGION.rds.amazonaws.com), and neither AWS_REGION nor AWS_DEFAULT_REGION is set")]
    Unknown(String),
}

/// A decided region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub region: String,
    pub source: RegionSource,
    /// The host name's own region when an explicit region contradicts it.
    pub contradicts_host: Option<String>,
}

/// Resolves the region: `explicit`, else the RDS host name, else
/// `AWS_REGION`, else `AWS_DEFAULT_REGION` (read through `env`), else
/// `default`. An empty explicit value or env value counts as unset; an
/// invalid one is an error, never skipped.
pub fn resolve(
    explicit: Option<&str>,
    host: &str,
    env: impl Fn(&'static str) -> Option<String>,
    default: Option<&str>,
) -> Result<Resolved, RegionError> {
    let from_host = region_from_hostname(host);
    if let Some(r) = explicit.map(str::trim).filter(|r| !r.is_empty()) {
        if !is_region_name(r) {
            return Err(RegionError::BadExplicit(r.to_owned()));
        }
        return Ok(Resolved {
            region: r.to_owned(),
            source: RegionSource::Explicit,
            contradicts_host: from_host.filter(|h| h != r),
        });
    }
    if let Some(region) = from_host {
        return Ok(Resolved {
            region,
            source: RegionSource::Hostname,
            contradicts_host: None,
        });
    }
    for name in REGION_ENV {
        if let Some(v) = env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
        {
            if !is_region_name(&v) {
                return Err(RegionError::BadEnv { name, value: v });
            }
            return Ok(Resolved {
                region: v,
                source: RegionSource::Env(name),
                contradicts_host: None,
            });
        }
    }
    match default {
        Some(d) => Ok(Resolved {
            region: d.to_owned(),
            source: RegionSource::Default,
            contradicts_host: None,
        }),
        None => Err(RegionError::Unknown(host.to_owned())),
    }
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
    let Some((last, rest)) = parts.split_last() else {
        return false;
    };
    !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && rest
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[0].len() == 2
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
            Option<&'static str>,
            Result<(&'static str, RegionSource), ()>,
        );
        let cases: &[Case] = &[
            (
                Some("us-east-2"),
                rds,
                both,
                None,
                Ok(("us-east-2", RegionSource::Explicit)),
            ),
            (
                None,
                rds,
                both,
                None,
                Ok(("eu-west-1", RegionSource::Hostname)),
            ),
            (
                None,
                "localhost",
                both,
                Some("sa-east-1"),
                Ok(("us-west-2", RegionSource::Env("AWS_REGION"))),
            ),
            (
                None,
                "localhost",
                dflt,
                None,
                Ok(("ap-south-1", RegionSource::Env("AWS_DEFAULT_REGION"))),
            ),
            (
                Some(""),
                "localhost",
                dflt,
                None,
                Ok(("ap-south-1", RegionSource::Env("AWS_DEFAULT_REGION"))),
            ),
            (
                None,
                "localhost",
                &[],
                Some("sa-east-1"),
                Ok(("sa-east-1", RegionSource::Default)),
            ),
            (None, "localhost", &[], None, Err(())),
            (Some("useast1"), rds, &[], None, Err(())),
            // An invalid env value is an error in both binaries, not skipped.
            (
                None,
                "localhost",
                &[("AWS_REGION", "moon")],
                Some("sa-east-1"),
                Err(()),
            ),
        ];
        for (explicit, host, env, default, want) in cases {
            let got = resolve(*explicit, host, env_of(env), *default);
            match want {
                Ok((r, src)) => {
                    let got = got.unwrap();
                    assert_eq!(
                        (got.region.as_str(), got.source),
                        (*r, *src),
                        "{explicit:?} {host}"
                    )
                }
                Err(()) => assert!(got.is_err(), "{explicit:?} {host}: {got:?}"),
            }
        }
    }

    #[test]
    fn explicit_region_that_contradicts_the_host_is_reported() {
        let r = resolve(
            Some("us-east-1"),
            "db.abc.eu-west-1.rds.amazonaws.com",
            |_| None,
            None,
        )
        .unwrap();
        assert_eq!(r.region, "us-east-1");
        assert_eq!(r.contradicts_host.as_deref(), Some("eu-west-1"));
        let same = resolve(
            Some("eu-west-1"),
            "db.abc.eu-west-1.rds.amazonaws.com",
            |_| None,
            None,
        )
        .unwrap();
        assert_eq!(same.contradicts_host, None);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            resolve(None, "localhost", env_of(&[("AWS_REGION", "moon")]), None)
                .unwrap_err()
                .to_string(),
            "AWS_REGION is \"moon\", which is not an AWS region name"
        );
        let e = resolve(None, "db.internal", |_| None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("db.internal") && e.contains("AWS_REGION"), "{e}");
    }
}
