//! The compiled client probes and the query-cancelling probes.
//!
//! The Go probes (pgx, lib/pq, go-sql-driver/mysql) and the Rust probes
//! (tokio-postgres, sqlx) are built by `testenv/clients/build.sh` into
//! `target/clients/`: by `testenv/setup.sh`, and again once per test process
//! by [`compiled`], which is a no-op (about a second) when nothing changed and
//! rebuilds a probe whose source did. A build failure is an error naming
//! `testenv/setup.sh`.
//!
//! A cancel probe runs a 30 s sleep, cancels it after a delay and prints one
//! line, `elapsed_ms=<N> code=<C> error=<message>`, parsed into [`Cancelled`].

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::pgrds::{repo_root, require_file, run_probe_line, venv_python, SETUP_HINT};

/// Where build.sh puts the compiled probes.
fn out_dir() -> PathBuf {
    repo_root().join("target/clients")
}

/// Run testenv/clients/build.sh once per process; the outcome is kept.
fn build_once() -> Result<()> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build() -> Result<()> {
    let script = require_file(
        &repo_root().join("testenv/clients/build.sh"),
        "testenv/clients/build.sh",
    )?;
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "building the client probes failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A compiled probe, `rel` under `target/clients` (e.g. `bin/connect_pgx`),
/// built first if needed.
pub fn compiled(rel: &str) -> Result<PathBuf> {
    build_once()?;
    let path = out_dir().join(rel);
    if !path.is_file() {
        bail!(
            "client probe {} missing after a successful build; {SETUP_HINT}",
            path.display()
        );
    }
    Ok(path)
}

/// What a cancel probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// From sending the query until it was known stopped: the driver's error
    /// (psycopg, PyMySQL), or for pgx the backend no longer running it.
    pub elapsed: Duration,
    /// The server's error code: a SQLSTATE (57014 for a cancelled
    /// PostgreSQL query) or a MySQL error number (1317 for KILL QUERY).
    /// `None` when the driver returned without reading the server's error
    /// (pgx closes the connection on a context cancel).
    pub code: Option<String>,
    /// The driver's error message, on one line.
    pub error: String,
}

impl Cancelled {
    /// Parse `elapsed_ms=<N> code=<C|-> error=<message>`.
    pub fn parse(line: &str) -> Result<Cancelled> {
        let bad = || anyhow!("expected `elapsed_ms=N code=C error=MESSAGE`, got {line:?}");
        let mut parts = line.trim().splitn(3, ' ');
        let mut field = |name: &str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .and_then(|p| p.strip_prefix('='))
                .ok_or_else(bad)
        };
        let elapsed_ms: u64 = field("elapsed_ms")?.parse().map_err(|_| bad())?;
        let code = match field("code")? {
            "" => return Err(bad()),
            "-" => None,
            c => Some(c.to_owned()),
        };
        let error = field("error")?.to_owned();
        Ok(Cancelled {
            elapsed: Duration::from_millis(elapsed_ms),
            code,
            error,
        })
    }
}

/// The probes that start `select pg_sleep(30)` and cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canceller {
    /// psycopg's `conn.cancel()` from another thread (libpq PQcancel: a
    /// plain CancelRequest on a new connection).
    PsycopgCancel,
    /// psycopg's `conn.cancel_safe()` (libpq >= 17 PQcancelCreate: the cancel
    /// connection is encrypted like the session's).
    PsycopgCancelSafe,
    /// pgx v4's context timeout: pgx returns at once and sends the
    /// CancelRequest asynchronously; the probe confirms from a second
    /// connection that the backend stopped.
    PgxContext,
}

impl Canceller {
    pub const ALL: [Canceller; 3] = [
        Canceller::PsycopgCancel,
        Canceller::PsycopgCancelSafe,
        Canceller::PgxContext,
    ];

    /// The probe's program and arguments, cancelling after `after`.
    pub fn argv(self, after: Duration) -> Result<Vec<String>> {
        Ok(argv_of(&self.command(after)?))
    }

    fn command(self, after: Duration) -> Result<Command> {
        let ms = after.as_millis().max(1).to_string();
        let mut c = match self {
            Canceller::PsycopgCancel | Canceller::PsycopgCancelSafe => {
                let mut c = Command::new(venv_python()?);
                c.arg(require_file(
                    &repo_root().join("testenv/clients/connect_psycopg.py"),
                    "connect_psycopg.py",
                )?);
                if self == Canceller::PsycopgCancelSafe {
                    c.arg("--cancel-safe");
                }
                c.arg("--cancel-after-ms");
                c
            }
            Canceller::PgxContext => {
                let mut c = Command::new(compiled("bin/connect_pgx")?);
                c.arg("-cancel-after-ms");
                c
            }
        };
        c.arg(ms);
        Ok(c)
    }
}

/// Run a cancel probe with exactly `env` (the libpq environment, as for
/// [`crate::pgrds::run_client`]): it runs `select pg_sleep(30)` and cancels
/// it after `after`.
pub fn run_cancel<K, V>(kind: Canceller, after: Duration, env: &[(K, V)]) -> Result<Cancelled>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    Cancelled::parse(&run_probe_line(
        &format!("{kind:?}"),
        kind.command(after)?,
        env,
    )?)
}

/// A command's program and arguments as strings.
pub(crate) fn argv_of(c: &Command) -> Vec<String> {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cancel_report() {
        let c = Cancelled::parse(
            "elapsed_ms=213 code=57014 error=canceling statement due to user request\n",
        )
        .expect("parse");
        assert_eq!(c.elapsed, Duration::from_millis(213));
        assert_eq!(c.code.as_deref(), Some("57014"));
        assert_eq!(c.error, "canceling statement due to user request");
        let c = Cancelled::parse("elapsed_ms=5 code=- error=timeout: context deadline exceeded")
            .expect("parse");
        assert_eq!(c.code, None);
        assert_eq!(c.error, "timeout: context deadline exceeded");
    }

    #[test]
    fn rejects_a_malformed_cancel_report() {
        for bad in [
            "probe",
            "elapsed_ms=x code=1 error=e",
            "code=1 elapsed_ms=2 error=e",
            "elapsed_ms=1 code= error=e",
            "elapsed_ms=1 code=1",
        ] {
            let err = Cancelled::parse(bad).expect_err(bad);
            assert!(
                format!("{err}").contains("expected `elapsed_ms=N"),
                "{bad}: {err}"
            );
        }
    }
}
