//! Proxy counters by database: connections accepted (logged in upstream),
//! active, failed by cause, and upstream authentication failures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use rds_iam_common::DbName;

/// Why a proxied connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client broke the protocol or was too slow.
    Client,
    /// The StartupMessage named another user.
    WrongUser,
    /// No valid token (yet).
    NoToken,
    /// The upstream could not be reached.
    Upstream,
    /// The upstream refused TLS or the handshake failed.
    Tls,
    /// The upstream refused the token.
    Auth,
    /// The upstream asked for something other than a password.
    AuthMethod,
    /// The agent's connection limit was reached.
    Limit,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Self::Client,
        Self::WrongUser,
        Self::NoToken,
        Self::Upstream,
        Self::Tls,
        Self::Auth,
        Self::AuthMethod,
        Self::Limit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::WrongUser => "wrong_user",
            Self::NoToken => "no_token",
            Self::Upstream => "upstream_unreachable",
            Self::Tls => "upstream_tls",
            Self::Auth => "upstream_auth",
            Self::AuthMethod => "upstream_auth_method",
            Self::Limit => "connection_limit",
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    active: AtomicU64,
    auth_failures: AtomicU64,
    failed: [AtomicU64; Failure::ALL.len()],
}

/// Counters for a fixed set of databases.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    dbs: BTreeMap<DbName, Counters>,
}

/// Decrements the active gauge when the session ends.
pub struct ActiveGuard<'a>(Option<&'a AtomicU64>);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0 {
            a.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ProxyMetrics {
    pub fn new<'a>(dbs: impl IntoIterator<Item = &'a DbName>) -> Self {
        Self {
            dbs: dbs
                .into_iter()
                .map(|d| (d.clone(), Counters::default()))
                .collect(),
        }
    }

    pub fn accepted(&self, db: &DbName) {
        if let Some(c) = self.dbs.get(db) {
            c.accepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn active(&self, db: &DbName) -> ActiveGuard<'_> {
        let a = self.dbs.get(db).map(|c| &c.active);
        if let Some(a) = a {
            a.fetch_add(1, Ordering::Relaxed);
        }
        ActiveGuard(a)
    }

    pub fn failed(&self, db: &DbName, why: Failure) {
        if let Some(c) = self.dbs.get(db) {
            c.failed[why as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn auth_failed(&self, db: &DbName) {
        if let Some(c) = self.dbs.get(db) {
            c.auth_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Active sessions of all databases.
    pub fn active_total(&self) -> u64 {
        self.dbs
            .values()
            .map(|c| c.active.load(Ordering::Relaxed))
            .sum()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
        let per_db = |f: &dyn Fn(&Counters) -> u64| {
            self.dbs
                .iter()
                .map(|(db, c)| (format!("db=\"{db}\""), f(c)))
                .collect::<Vec<_>>()
        };
        family(
            "rds_iam_proxy_connections_accepted_total",
            "counter",
            "Proxied connections logged in upstream.",
            per_db(&|c| c.accepted.load(Ordering::Relaxed)),
        );
        family(
            "rds_iam_proxy_connections_active",
            "gauge",
            "Proxied connections open now.",
            per_db(&|c| c.active.load(Ordering::Relaxed)),
        );
        family(
            "rds_iam_proxy_upstream_auth_failures_total",
            "counter",
            "Logins the database refused, or answered with another method than a password.",
            per_db(&|c| c.auth_failures.load(Ordering::Relaxed)),
        );
        let mut rows = Vec::new();
        for (db, c) in &self.dbs {
            for f in Failure::ALL {
                rows.push((
                    format!("db=\"{db}\",cause=\"{}\"", f.as_str()),
                    c.failed[f as usize].load(Ordering::Relaxed),
                ));
            }
        }
        family(
            "rds_iam_proxy_connections_failed_total",
            "counter",
            "Proxied connections that failed, by cause.",
            rows,
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_db_and_cause() {
        let a = DbName::default_db();
        let b = DbName::named("orders").unwrap();
        let m = ProxyMetrics::new([&a, &b]);
        m.accepted(&b);
        m.failed(&a, Failure::WrongUser);
        m.auth_failed(&b);
        {
            let _g = m.active(&b);
            assert_eq!(m.active_total(), 1);
        }
        assert_eq!(m.active_total(), 0);
        let t = m.render();
        for want in [
            "rds_iam_proxy_connections_accepted_total{db=\"orders\"} 1\n",
            "rds_iam_proxy_connections_accepted_total{db=\"default\"} 0\n",
            "rds_iam_proxy_connections_active{db=\"orders\"} 0\n",
            "rds_iam_proxy_connections_failed_total{db=\"default\",cause=\"wrong_user\"} 1\n",
            "rds_iam_proxy_upstream_auth_failures_total{db=\"orders\"} 1\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
