//! `rds-iam-tokenagent probe`: an exec probe for kubelet. It passes only if,
//! for every database the agent serves (the same `--db` / `RDS_IAM_DATABASES`
//! as the agent's, so the probe sees the same list), its token file and its
//! pgpass line exist in regular files with mode 0600 and hold a token with at
//! least `--min-life` left, judged from its `X-Amz-Date` and `X-Amz-Expires`
//! and signed no later than [`MAX_CLOCK_SKEW`] from now; and, in proxy mode,
//! its socket accepts a connection (PostgreSQL) or exists (MySQL, see
//! [`check_socket`]). Every failure names the database.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rds_iam_common::{Endpoint, Engine, Mode, PGPASS_FILE, TOKEN_FILE};

use crate::pgpass;
use crate::token::{self, TokenError};

/// How far in the future a token's `X-Amz-Date` may lie. The agent signs with
/// the node's clock, which the probe shares, so only rounding to the second
/// and a clock step between signing and probing can show here.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0} does not exist yet (the agent has not written a token)")]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} has mode {mode:04o}; it must be 0600 or libpq ignores it")]
    Mode { path: PathBuf, mode: u32 },
    #[error("{path} does not hold a valid token: {source}")]
    BadToken {
        path: PathBuf,
        #[source]
        source: TokenError,
    },
    #[error("{path} is not a host:port:db:user:token passfile")]
    BadPgpass { path: PathBuf },
    #[error("{path} has no line for {user}@{host}:{port}")]
    NoPgpassLine {
        path: PathBuf,
        host: String,
        port: u16,
        user: String,
    },
    #[error("the proxy socket {path} does not answer: {reason}")]
    Socket { path: String, reason: String },
    #[error("database {db}: {source}")]
    Db {
        db: String,
        #[source]
        source: Box<ProbeError>,
    },
    #[error("the token in {path} has {left}s left, less than the required {min}s")]
    TooShort { path: PathBuf, left: u64, min: u64 },
    #[error(
        "the token in {path} is signed {ahead}s in the future (X-Amz-Date), beyond the \
         {max}s allowed for clock skew; RDS refuses it. Check the node's clock, or delete \
         the file so the agent rewrites it"
    )]
    FromTheFuture { path: PathBuf, ahead: u64, max: u64 },
}

fn read_private(path: &Path) -> Result<String, ProbeError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProbeError::Missing(path.to_owned()),
        _ => ProbeError::Unreadable {
            path: path.to_owned(),
            source: e,
        },
    })?;
    if !meta.is_file() {
        return Err(ProbeError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 {
        return Err(ProbeError::Mode {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(|e| ProbeError::Unreadable {
        path: path.to_owned(),
        source: e,
    })
}

fn life_left(
    path: &Path,
    token: &str,
    now: SystemTime,
    min: Duration,
) -> Result<Duration, ProbeError> {
    let (signed, exp) = token::validity(token).map_err(|source| ProbeError::BadToken {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(ahead) = signed.duration_since(now) {
        if ahead > MAX_CLOCK_SKEW {
            return Err(ProbeError::FromTheFuture {
                path: path.to_owned(),
                ahead: ahead.as_secs(),
                max: MAX_CLOCK_SKEW.as_secs(),
            });
        }
    }
    let left = exp.duration_since(now).unwrap_or_default();
    if left < min {
        return Err(ProbeError::TooShort {
            path: path.to_owned(),
            left: left.as_secs(),
            min: min.as_secs(),
        });
    }
    Ok(left)
}

/// Checks every database of `dbs` (see the module docs); returns the least
/// life left. With no database given, checks `token` and `pgpass`.
pub fn probe(
    dir: &Path,
    dbs: &[Endpoint],
    min_life: Duration,
    now: SystemTime,
) -> Result<Duration, ProbeError> {
    if dbs.is_empty() {
        let token_path = dir.join(TOKEN_FILE);
        let token = read_private(&token_path)?;
        let a = life_left(&token_path, token.trim_end(), now, min_life)?;
        let pgpass_path = dir.join(PGPASS_FILE);
        let lines = pgpass_lines(&pgpass_path)?;
        let mut least = a;
        for f in &lines {
            least = least.min(life_left(&pgpass_path, &f[4], now, min_life)?);
        }
        return Ok(least);
    }
    let mut least = Duration::MAX;
    let mut pgpass: Option<Vec<[String; 5]>> = None;
    for e in dbs {
        let in_db = |source: ProbeError| ProbeError::Db {
            db: e.name.to_string(),
            source: Box::new(source),
        };
        let token_path = dir.join(e.name.token_file());
        let token = read_private(&token_path).map_err(in_db)?;
        least = least.min(life_left(&token_path, token.trim_end(), now, min_life).map_err(in_db)?);
        if e.engine == Engine::Postgres {
            let path = dir.join(PGPASS_FILE);
            if pgpass.is_none() {
                pgpass = Some(pgpass_lines(&path).map_err(in_db)?);
            }
            let line = pgpass
                .iter()
                .flatten()
                .find(|f| f[0] == e.host && f[1] == e.port.to_string() && f[3] == e.user)
                .ok_or_else(|| {
                    in_db(ProbeError::NoPgpassLine {
                        path: path.clone(),
                        host: e.host.clone(),
                        port: e.port,
                        user: e.user.clone(),
                    })
                })?;
            least = least.min(life_left(&path, &line[4], now, min_life).map_err(in_db)?);
        }
        if e.access.mode == Mode::Proxy {
            check_socket(e, &dir.display().to_string()).map_err(in_db)?;
        }
    }
    Ok(least)
}

fn pgpass_lines(path: &Path) -> Result<Vec<[String; 5]>, ProbeError> {
    let text = read_private(path)?;
    let lines: Option<Vec<[String; 5]>> = text.lines().map(pgpass::parse_line).collect();
    match lines {
        Some(l) if !l.is_empty() => Ok(l),
        _ => Err(ProbeError::BadPgpass {
            path: path.to_owned(),
        }),
    }
}

/// How long the socket check may take.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy's socket accepts; a PostgreSQL proxy also answers an
/// SSLRequest with `N`, as it does for every client. A MySQL proxy's socket
/// must only exist: a MySQL server speaks first, so every connection makes
/// the proxy connect upstream, and a server counts a connection closed
/// before the login as a connect error (`max_connect_errors` then blocks
/// the pod's address).
fn check_socket(e: &Endpoint, dir: &str) -> Result<(), ProbeError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileTypeExt;
    let path = e.socket_path(dir);
    let fail = |reason: String| ProbeError::Socket {
        path: path.clone(),
        reason,
    };
    if e.engine == Engine::Mysql {
        let meta = fs::symlink_metadata(&path).map_err(|err| fail(err.to_string()))?;
        if !meta.file_type().is_socket() {
            return Err(fail("it is not a socket".to_owned()));
        }
        return Ok(());
    }
    let mut s =
        std::os::unix::net::UnixStream::connect(&path).map_err(|err| fail(err.to_string()))?;
    s.set_read_timeout(Some(SOCKET_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(SOCKET_TIMEOUT)))
        .and_then(|()| s.write_all(&crate::proxy::pg_wire::ssl_request()))
        .map_err(|err| fail(err.to_string()))?;
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer)
        .map_err(|err| fail(err.to_string()))?;
    if answer[0] != b'N' {
        return Err(fail(format!(
            "it answered {:?} to an SSLRequest",
            answer[0] as char
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::write_atomic;
    use std::time::UNIX_EPOCH;

    // 2024-08-26T22:00:00Z = 1724709600; expires 900 s later.
    const TOKEN: &str = "db:5432/?Action=connect&DBUser=u&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-Signature=ab";
    const SIGNED: u64 = 1_724_709_600;

    fn setup() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        write_atomic(d.path(), "token", TOKEN.as_bytes(), 0o600).unwrap();
        let line = pgpass::line("db", 5432, "u", TOKEN).unwrap();
        write_atomic(d.path(), "pgpass", line.as_bytes(), 0o600).unwrap();
        d
    }

    fn at(secs_after_signing: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(SIGNED + secs_after_signing)
    }

    #[test]
    fn passes_with_enough_life() {
        let d = setup();
        let left = probe(d.path(), &[], Duration::from_secs(120), at(60)).unwrap();
        assert_eq!(left, Duration::from_secs(840));
        // Exactly the minimum still passes.
        assert!(probe(d.path(), &[], Duration::from_secs(120), at(780)).is_ok());
    }

    #[test]
    fn fails_when_too_short_or_expired() {
        let d = setup();
        let e = probe(d.path(), &[], Duration::from_secs(120), at(781)).unwrap_err();
        assert!(
            matches!(
                e,
                ProbeError::TooShort {
                    left: 119,
                    min: 120,
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            probe(d.path(), &[], Duration::ZERO, at(2000)),
            Ok(d) if d == Duration::ZERO
        ));
        assert!(probe(d.path(), &[], Duration::from_secs(1), at(2000)).is_err());
    }

    #[test]
    fn refuses_a_token_signed_in_the_future() {
        let d = setup();
        // A minute early is clock skew; the token still has its 900 s and more.
        let left = probe(
            d.path(),
            &[],
            Duration::from_secs(120),
            at(0) - Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(left, Duration::from_secs(960));
        for ahead in [61, 3600, 10 * 365 * 86_400] {
            let now = at(0) - Duration::from_secs(ahead);
            let e = probe(d.path(), &[], Duration::from_secs(120), now).unwrap_err();
            assert!(
                matches!(e, ProbeError::FromTheFuture { ahead: a, max: 60, .. } if a == ahead),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains(&format!("signed {ahead}s in the future")),
                "{e}"
            );
        }
    }

    #[test]
    fn fails_on_missing_files_or_bad_mode() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            probe(d.path(), &[], Duration::ZERO, at(0)),
            Err(ProbeError::Missing(_))
        ));
        let d = setup();
        fs::set_permissions(d.path().join("pgpass"), fs::Permissions::from_mode(0o640)).unwrap();
        let e = probe(d.path(), &[], Duration::ZERO, at(0)).unwrap_err();
        assert!(e.to_string().contains("mode 0640"), "{e}");
        let d = setup();
        fs::remove_file(d.path().join("pgpass")).unwrap();
        assert!(matches!(
            probe(d.path(), &[], Duration::ZERO, at(0)),
            Err(ProbeError::Missing(_))
        ));
    }

    #[test]
    fn fails_on_garbage() {
        let d = setup();
        write_atomic(d.path(), "token", b"not a token", 0o600).unwrap();
        assert!(matches!(
            probe(d.path(), &[], Duration::ZERO, at(0)),
            Err(ProbeError::BadToken { .. })
        ));
        let d = setup();
        write_atomic(d.path(), "pgpass", b"a:b:c\n", 0o600).unwrap();
        assert!(matches!(
            probe(d.path(), &[], Duration::ZERO, at(0)),
            Err(ProbeError::BadPgpass { .. })
        ));
    }

    /// A MySQL proxy's socket is checked without connecting: a connection
    /// would make the proxy connect upstream and the server count a connect
    /// error.
    #[test]
    fn a_mysql_socket_is_checked_without_a_connection() {
        let d = setup();
        let (e, _) = Endpoint::parse_spec(
            "default=mysql://u@db:5432?region=us-east-1&mode=proxy",
            |_| None,
        )
        .unwrap();
        let sock = e.socket_path(&d.path().display().to_string());
        let e = [e];
        let err = probe(d.path(), &e, Duration::ZERO, at(0)).unwrap_err();
        assert!(
            err.to_string().contains("mysqld.sock does not answer"),
            "{err}"
        );
        fs::write(&sock, "").unwrap();
        let err = probe(d.path(), &e, Duration::ZERO, at(0)).unwrap_err();
        assert!(err.to_string().contains("it is not a socket"), "{err}");
        fs::remove_file(&sock).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        probe(d.path(), &e, Duration::ZERO, at(0)).unwrap();
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the probe must not connect"
        );
    }
}
