//! What the RDS-like database harnesses ([`crate::pgrds`],
//! [`crate::mariadbrds`]) share: finding the test dependencies, the lab
//! script's instance directory (start with a retry on a taken port, `sql`,
//! the keystore, the verifier's log, stop on drop), running client probes
//! with a timeout, and botocore's reference token.
//!
//! Both labs load the same verifier, `testenv/pgrds/pam_rds_iam.py`, and their
//! scripts share `testenv/rds_lab.py`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

/// Host name clients use and tokens are signed for by default.
pub const HOST: &str = "localhost";
/// Region the servers expect in the token's credential scope.
pub const REGION: &str = "us-east-1";
/// How long a client probe may run before it is killed.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const SETUP_HINT: &str =
    "run testenv/setup.sh (as root) to install the test dependencies";

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

pub(crate) fn require_file(path: &Path, what: &str) -> Result<PathBuf> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        bail!("{what} not found at {}; {SETUP_HINT}", path.display())
    }
}

pub(crate) fn require_cmd(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("`{name}` not found on PATH; {SETUP_HINT}"))
}

/// The project's Python venv interpreter (`.venv/bin/python`).
pub fn venv_python() -> Result<PathBuf> {
    require_file(
        &repo_root().join(".venv/bin/python"),
        "Python venv (.venv with botocore, psycopg, PyMySQL)",
    )
}

/// A free port on 127.0.0.1 (for any loopback server of the tests).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A started lab instance: its directory and the script that manages it.
/// Dropping it runs `SCRIPT stop --dir DIR`, then removes DIR.
pub(crate) struct LabDir {
    /// Removed after `Drop for LabDir` has run `stop`.
    dir: tempfile::TempDir,
    script: PathBuf,
    keys_lock: Mutex<()>,
}

impl LabDir {
    /// `SCRIPT start --dir DIR --port PORT ... --owner-pid <this process>`
    /// in a fresh `/tmp/<prefix>XXXXXX` on a free port; `args(port)` gives
    /// the rest. A port picked from 127.0.0.1:0 can be taken by someone else
    /// before the server binds it: the script then says "could not bind"
    /// and this retries with another port.
    pub(crate) fn start(
        script: &str,
        prefix: &str,
        args: impl Fn(u16) -> Vec<String>,
    ) -> Result<(LabDir, u16)> {
        let script = require_file(&repo_root().join(script), script)?;
        let mut last_err = None;
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .with_context(|| format!("creating a {prefix} temp dir under /tmp"))?;
            let port = free_port()?;
            let out = Command::new(&script)
                .arg("start")
                .arg("--dir")
                .arg(dir.path())
                .args(["--port", &port.to_string()])
                .arg("--keys")
                .arg(dir.path().join("keys.json"))
                .args(["--owner-pid", &std::process::id().to_string()])
                .args(args(port))
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running {}", script.display()))?;
            if out.status.success() {
                let lab = LabDir {
                    dir,
                    script,
                    keys_lock: Mutex::new(()),
                };
                return Ok((lab, port));
            }
            let err = anyhow!(
                "{} start failed ({}): {}\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
            if !format!("{err:#}").contains("could not bind") {
                return Err(err);
            }
            last_err = Some(err);
        }
        Err(last_err.unwrap_or_else(|| anyhow!("{} start failed", script.display())))
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `SCRIPT sql --dir DIR [extra]` with `sql` on stdin; its stdout.
    pub(crate) fn sql(&self, extra: &[String], sql: &str) -> Result<String> {
        let mut child = Command::new(&self.script)
            .arg("sql")
            .arg("--dir")
            .arg(self.path())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.script.display()))?;
        child
            .stdin
            .take()
            .context("sql stdin")?
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{} sql failed: {}",
                self.script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The JSON keystore the verifier reads at every login.
    pub(crate) fn keys_path(&self) -> PathBuf {
        self.path().join("keys.json")
    }

    /// A file of the instance directory, as text.
    pub(crate) fn read(&self, name: &str) -> Result<String> {
        let p = self.path().join(name);
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The `/etc/pam.d` files of this instance, one per endpoint (removed
    /// on drop).
    pub(crate) fn pam_service_files(&self) -> Result<Vec<PathBuf>> {
        Ok(self
            .read("pam-service")?
            .split_whitespace()
            .map(|name| Path::new("/etc/pam.d").join(name))
            .collect())
    }

    /// Register (or replace) an access key in the keystore, atomically,
    /// owned like the instance directory (the server's user for PostgreSQL,
    /// root for MariaDB, whose PAM helper runs as root).
    pub(crate) fn add_key(
        &self,
        akid: &str,
        secret: &str,
        session_token: Option<&str>,
    ) -> Result<()> {
        let _guard = self.keys_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.keys_path();
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut keys: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        keys.insert(
            akid.to_string(),
            serde_json::json!({ "secret_access_key": secret, "session_token": session_token }),
        );
        let tmp = self.path().join(".keys.json.tmp");
        write_private(&tmp, serde_json::to_string_pretty(&keys)?.as_bytes())?;
        let meta = fs::metadata(self.path())?;
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
            .with_context(|| format!("chown {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }
}

impl Drop for LabDir {
    fn drop(&mut self) {
        match Command::new(&self.script)
            .arg("stop")
            .arg("--dir")
            .arg(self.path())
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "{} stop failed ({}): {}",
                self.script.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("cannot run {} stop: {e}", self.script.display()),
        }
        // The TempDir field removes the directory after this.
    }
}

/// Write `contents` to `path`, mode 0600 even if it existed (pgpass and
/// option files are ignored or warned about when others can read them).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Run `cmd` with exactly `env` (plus PATH; everything else is cleared) and
/// no stdin, killed after [`CLIENT_TIMEOUT`]. Returns the status, stdout and
/// stderr.
pub(crate) fn run_probe(
    cmd: &mut Command,
    env: &[(OsString, OsString)],
) -> Result<(ExitStatus, String, String)> {
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, CLIENT_TIMEOUT)
}

fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(ExitStatus, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut err = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t
        .join()
        .map_err(|_| anyhow!("stdout reader panicked"))?;
    let stderr = err_t
        .join()
        .map_err(|_| anyhow!("stderr reader panicked"))?;
    Ok((status, stdout, stderr))
}

/// Inputs for [`botocore_token`].
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub region: &'a str,
    pub akid: &'a str,
    pub secret: &'a str,
    pub session_token: Option<&'a str>,
    /// Signing time in unix seconds; `None` for now.
    pub time: Option<u64>,
}

/// botocore's `generate_db_auth_token` for these inputs (via
/// testenv/botocore_token.py in `.venv`): the reference token.
pub fn botocore_token(req: &TokenRequest<'_>) -> Result<String> {
    let script = require_file(
        &repo_root().join("testenv/botocore_token.py"),
        "testenv/botocore_token.py",
    )?;
    let mut cmd = Command::new(venv_python()?);
    cmd.arg(script)
        .args(["--host", req.host])
        .args(["--port", &req.port.to_string()])
        .args(["--user", req.user])
        .args(["--region", req.region])
        .args(["--akid", req.akid])
        .args(["--secret", req.secret]);
    if let Some(t) = req.session_token {
        cmd.args(["--session-token", t]);
    }
    if let Some(t) = req.time {
        cmd.args(["--time", &t.to_string()]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("running botocore_token.py")?;
    if !out.status.success() {
        bail!(
            "botocore_token.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let token = String::from_utf8(out.stdout)
        .context("botocore token is not UTF-8")?
        .trim()
        .to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("botocore_token.py printed an unexpected token: {token:?}");
    }
    Ok(token)
}

/// Seconds since the epoch (e.g. to sign a token that is already expired).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A test access key pair named after `name`: `AKIATEST<NAME>` and a secret
/// with characters that need encoding. Register it with the server's
/// `add_key`.
pub fn test_key(name: &str) -> (String, String) {
    (
        format!("AKIATEST{}", name.to_uppercase()),
        format!("secret/{name}+with=odd/chars"),
    )
}

/// A fake STS session token of `len` base64 characters plus `==` (`+`, `/`
/// and `=` included, each percent-encoded in a token): ~1.5 KB makes the
/// 2 KB tokens of real sessions.
pub fn long_session_token(len: usize) -> String {
    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|i| char::from(b64[(i * 7 + i / 3) % 64]))
        .chain("==".chars())
        .collect()
}

/// `token` with the last hex digit of its signature changed.
pub fn tamper_signature(token: &str) -> String {
    let mut t = token.to_owned();
    let flipped = if t.pop() == Some('0') { '1' } else { '0' };
    t.push(flipped);
    t
}

/// Panic unless the verifier's `log` has a line `akid=AKID REJECT: reason...`
/// (test assertion shared by the harness self-tests).
pub fn assert_rejection_logged(log: &str, akid: &str, reason: &str) {
    let needle = format!("akid={akid} REJECT: {reason}");
    assert!(
        log.lines().any(|l| l.contains(&needle)),
        "auth log has no '{needle}' line:\n{log}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dependency_says_to_run_setup() {
        let err = require_file(Path::new("/nonexistent/pg.jar"), "pgJDBC jar")
            .expect_err("missing file must be an error");
        let msg = format!("{err:#}");
        assert!(msg.contains("/nonexistent/pg.jar"), "{msg}");
        assert!(msg.contains("testenv/setup.sh"), "{msg}");
        let err = require_cmd("no-such-client-binary").expect_err("missing command");
        assert!(format!("{err:#}").contains("testenv/setup.sh"));
    }

    #[test]
    fn tamper_changes_the_last_digit_and_session_tokens_end_in_padding() {
        assert_eq!(
            tamper_signature("a/?X-Amz-Signature=ab0"),
            "a/?X-Amz-Signature=ab1"
        );
        assert_eq!(
            tamper_signature("a/?X-Amz-Signature=ab9"),
            "a/?X-Amz-Signature=ab0"
        );
        let s = long_session_token(10);
        assert_eq!(s.len(), 12);
        assert!(s.ends_with("=="));
    }
}
