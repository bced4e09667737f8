//! Limits of the two listeners: timeouts, connection caps, the budget of
//! request bytes held in memory, and the open-file limit they must fit in.

use std::time::Duration;

/// Largest request head (request line and headers) on HTTP/1.1, and largest
/// header list on HTTP/2. The API server sends a few hundred bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections the plain-HTTP metrics listener serves at once (Prometheus
/// uses one per scrape).
pub const METRICS_MAX_CONNECTIONS: usize = 64;
/// Descriptors kept for everything but connections: standard streams, the
/// runtime's epoll and wakers, the listeners, the certificate watch.
pub const FD_RESERVE: u64 = 32;
/// Smallest `--max-buffered-bytes`: three quarters of it (what large bodies
/// may use) must hold one review of the API server's 3 MiB limit.
pub const MIN_BUFFERED_BYTES: usize = 4 * 1024 * 1024;

/// What `serve` allows each client, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the first byte of a request (or the TLS handshake) to its last header.
    pub header_timeout: Duration,
    /// From the request head to the last byte of its body.
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// HTTPS connections served at once.
    pub max_connections: usize,
    /// Request body bytes held in memory across all connections.
    pub max_buffered_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1000,
            max_buffered_bytes: 32 * 1024 * 1024,
            h2_max_concurrent_streams: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("--{flag}: 0s would close every connection at once; write a positive duration such as {example}")]
    ZeroTimeout {
        flag: &'static str,
        example: &'static str,
    },
    #[error("--{flag}: 0 would refuse every client; write at least 1")]
    Zero { flag: &'static str },
    #[error("--max-buffered-bytes: {0} bytes cannot hold a 3 MiB review (the API server's limit) next to the quarter kept for small reviews; write at least 4Mi")]
    BudgetTooSmall(usize),
}

impl Limits {
    pub fn validate(&self) -> Result<(), LimitError> {
        let Self {
            header_timeout,
            body_timeout,
            idle_timeout,
            max_connections,
            max_buffered_bytes,
            h2_max_concurrent_streams,
        } = *self;
        for (flag, value, example) in [
            ("header-timeout", header_timeout, "10s"),
            ("body-timeout", body_timeout, "30s"),
            ("idle-timeout", idle_timeout, "60s"),
        ] {
            if value.is_zero() {
                return Err(LimitError::ZeroTimeout { flag, example });
            }
        }
        if max_connections == 0 {
            return Err(LimitError::Zero {
                flag: "max-connections",
            });
        }
        if h2_max_concurrent_streams == 0 {
            return Err(LimitError::Zero {
                flag: "h2-max-concurrent-streams",
            });
        }
        if max_buffered_bytes < MIN_BUFFERED_BYTES {
            return Err(LimitError::BudgetTooSmall(max_buffered_bytes));
        }
        Ok(())
    }
}

/// Parses a byte count: `33554432`, `32768Ki`, `32Mi` or `1Gi`.
pub fn parse_bytes(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => {
            return Err(format!(
                "{value:?} is not a byte count; write e.g. 33554432 or 32Mi (units Ki, Mi, Gi)"
            ))
        }
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a byte count; write e.g. 33554432 or 32Mi"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{value:?} is too large; write at most a few Gi"))
}

/// Connection caps of the HTTPS and metrics listeners that fit in an
/// open-file limit of `nofile` (each connection holds one descriptor).
/// The metrics listener gives way first.
pub fn fit_to_fd_limit(https: usize, metrics: usize, nofile: u64) -> (usize, usize) {
    let room = usize::try_from(nofile.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    let metrics = metrics.min(room / 8).max(1);
    let https = https.min(room.saturating_sub(metrics)).max(1);
    (https, metrics)
}

pub use rds_iam_common::process::{fd_limit, raise_fd_limit};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("33554432"), Ok(33_554_432));
        assert_eq!(parse_bytes("32Mi"), Ok(33_554_432));
        assert_eq!(parse_bytes("64Ki"), Ok(65_536));
        assert_eq!(parse_bytes(" 1Gi "), Ok(1_073_741_824));
        for bad in ["", "32MB", "Mi", "-1", "3.5Mi", "32 Mi"] {
            let err = parse_bytes(bad).unwrap_err();
            assert!(err.contains("32Mi"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn defaults_are_valid_and_each_bad_value_names_its_flag() {
        Limits::default().validate().unwrap();
        let d = Limits::default();
        let cases = [
            (
                Limits {
                    header_timeout: Duration::ZERO,
                    ..d
                },
                "--header-timeout",
            ),
            (
                Limits {
                    body_timeout: Duration::ZERO,
                    ..d
                },
                "--body-timeout",
            ),
            (
                Limits {
                    idle_timeout: Duration::ZERO,
                    ..d
                },
                "--idle-timeout",
            ),
            (
                Limits {
                    max_connections: 0,
                    ..d
                },
                "--max-connections",
            ),
            (
                Limits {
                    h2_max_concurrent_streams: 0,
                    ..d
                },
                "--h2-max-concurrent-streams",
            ),
            (
                Limits {
                    max_buffered_bytes: 4 * 1024 * 1024 - 1,
                    ..d
                },
                "--max-buffered-bytes",
            ),
        ];
        for (limits, flag) in cases {
            let err = limits.validate().unwrap_err().to_string();
            assert!(err.starts_with(flag), "{err}");
            assert!(err.contains("write"), "{err}");
        }
        Limits {
            max_buffered_bytes: 4 * 1024 * 1024,
            ..d
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn caps_fit_in_the_open_file_limit() {
        // Plenty of descriptors: the caps are kept.
        assert_eq!(fit_to_fd_limit(1000, 64, 1_048_576), (1000, 64));
        assert_eq!(fit_to_fd_limit(1000, 64, u64::MAX), (1000, 64));
        // 256 descriptors: 224 left for connections, metrics gets 28.
        assert_eq!(fit_to_fd_limit(1000, 64, 256), (196, 28));
        // Absurdly low limits still leave one of each.
        assert_eq!(fit_to_fd_limit(1000, 64, 10), (1, 1));
    }
}
