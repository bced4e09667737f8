//! The agent binary as a process: signals during `--once` and the loop,
//! what its log lines look like, flags with negative numbers, a probe of a
//! token from the future, and a pgpass that cannot be written.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use rds_iam_e2e::agentproc::{agent_command, run, wait_for_file};
use rds_iam_e2e::rt::rt;
use rds_iam_e2e::stubs::{Mode, Stub};
use rds_iam_tokenagent::{pgpass, token};

const SESSION_TOKEN_PART: &str = "FwoGZXIvYXdzE";

/// The agent with static environment credentials, writing into `dir`.
fn agent(home: &Path, dir: &Path) -> Result<Command> {
    let mut cmd = agent_command(home)?;
    cmd.env("RDS_IAM_HOST", "db.abc.us-east-1.rds.amazonaws.com")
        .env("RDS_IAM_USER", "app")
        .env("RDS_IAM_DIR", dir)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN_PART.repeat(80));
    Ok(cmd)
}

fn signal(child: &Child, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()?;
    if !st.success() {
        bail!("kill -{sig} failed");
    }
    Ok(())
}

fn wait_exit(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            bail!("the agent did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: &mut Child) -> Result<String> {
    let mut log = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut log)?;
    Ok(log)
}

fn temp_files(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(".rds-iam-tmp-") {
            v.push(name);
        }
    }
    Ok(v)
}

/// Each file is absent or complete.
fn check_files(dir: &Path) -> Result<()> {
    if let Ok(t) = fs::read_to_string(dir.join("token")) {
        token::expires_at(&t)?;
        if !t.ends_with(&SESSION_TOKEN_PART.repeat(80)) {
            bail!("partial token file: {t:?}");
        }
    }
    if let Ok(l) = fs::read_to_string(dir.join("pgpass")) {
        let f = pgpass::parse_line(&l).with_context(|| format!("partial pgpass: {l:?}"))?;
        if !l.ends_with('\n') || !f[4].ends_with(&SESSION_TOKEN_PART.repeat(80)) {
            bail!("partial pgpass: {l:?}");
        }
    }
    Ok(())
}

#[test]
fn sigterm_during_once_never_leaves_temporary_files() -> Result<()> {
    const KILLS: usize = 300;
    let home = tempfile::tempdir()?;
    // How long a full --once takes, to spread the signals over it.
    let probe_dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        let st = agent(home.path(), probe_dir.path())?
            .arg("--once")
            .stderr(Stdio::null())
            .status()?;
        assert!(st.success());
        runs.push(t0.elapsed());
    }
    runs.sort();
    let full = runs[3].max(Duration::from_millis(2));
    let dir = tempfile::tempdir()?;
    let (mut before_handler, mut finished, mut cancelled, mut while_running) = (0, 0, 0, 0);
    for i in 0..KILLS {
        if i % 50 == 0 {
            for e in fs::read_dir(dir.path())? {
                fs::remove_file(e?.path())?;
            }
        }
        let mut child = agent(home.path(), dir.path())?
            .arg("--once")
            .stderr(Stdio::null())
            .spawn()?;
        let us = full.as_micros() as u64;
        std::thread::sleep(Duration::from_micros(rand::random_range(0..=us)));
        // A process reaped by try_wait can no longer be signalled.
        if child.try_wait()?.is_none() {
            while_running += 1;
            signal(&child, "TERM")?;
        }
        let status = wait_exit(&mut child, Duration::from_secs(10))?;
        match status.code() {
            None => before_handler += 1,
            Some(0) => finished += 1,
            Some(1) => cancelled += 1,
            Some(c) => bail!("kill {i}: exit code {c}"),
        }
        let temps = temp_files(dir.path())?;
        if !temps.is_empty() {
            bail!("kill {i} left temporary files: {temps:?} ({status})");
        }
        check_files(dir.path()).with_context(|| format!("after kill {i}"))?;
    }
    eprintln!(
        "{KILLS} SIGTERMs ({while_running} while running; a full run takes {full:?}): \
         {before_handler} before the handler was installed, {finished} finished their \
         write, {cancelled} cancelled while waiting for credentials"
    );
    assert!(
        while_running >= KILLS / 10,
        "too few signals hit a running agent: {while_running}"
    );
    assert!(finished + cancelled > 0, "the handler never caught one");
    Ok(())
}

#[test]
fn once_waiting_for_credentials_stops_cleanly_on_sigterm_and_sighup() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    ep.set_mode(Mode::Hang);
    for sig in ["TERM", "HUP", "INT"] {
        let home = tempfile::tempdir()?;
        let dir = tempfile::tempdir()?;
        let auth = home.path().join("eks-pod-identity-token");
        fs::write(&auth, "jwt")?;
        let mut child = agent_command(home.path())?
            .env("RDS_IAM_HOST", "db.abc.us-east-1.rds.amazonaws.com")
            .env("RDS_IAM_USER", "app")
            .env("RDS_IAM_DIR", dir.path())
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v1/credentials", ep.url()),
            )
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &auth)
            .arg("--once")
            .stderr(Stdio::piped())
            .spawn()?;
        // Wait until it is asking the endpoint.
        let before = ep.seen().len();
        let t = Instant::now();
        while ep.seen().len() == before {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the agent never asked for credentials");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let sent = Instant::now();
        signal(&child, sig)?;
        let status = wait_exit(&mut child, Duration::from_secs(5))?;
        let took = sent.elapsed();
        let log = stderr_of(&mut child)?;
        assert_eq!(status.code(), Some(1), "SIG{sig}: {status}\n{log}");
        assert!(took < Duration::from_secs(1), "SIG{sig} took {took:?}");
        assert!(
            log.contains(&format!("SIG{sig} received"))
                && log.contains("shut down before the refresh finished"),
            "SIG{sig}: {log}"
        );
        assert_eq!(fs::read_dir(dir.path())?.count(), 0);
    }
    Ok(())
}

#[test]
fn sighup_ends_the_loop_cleanly_with_a_log_line() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let mut child = agent(home.path(), dir.path())?
        .stderr(Stdio::piped())
        .spawn()?;
    wait_for_file(&dir.path().join("pgpass"), Duration::from_secs(10))?;
    signal(&child, "HUP")?;
    let status = wait_exit(&mut child, Duration::from_secs(2))?;
    let log = stderr_of(&mut child)?;
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("SIGHUP received") && log.contains("shutting down"),
        "{log}"
    );
    check_files(dir.path())?;
    assert!(temp_files(dir.path())?.is_empty());
    Ok(())
}

#[test]
fn log_lines_have_no_colour_codes_and_an_rfc3339_expiry() -> Result<()> {
    let ep = rt().block_on(Stub::pod_identity())?;
    for format in ["text", "json"] {
        let home = tempfile::tempdir()?;
        let dir = tempfile::tempdir()?;
        let auth = home.path().join("eks-pod-identity-token");
        fs::write(&auth, "jwt")?;
        let r = run(agent_command(home.path())?
            .env("RDS_IAM_HOST", "db.abc.us-east-1.rds.amazonaws.com")
            .env("RDS_IAM_USER", "app")
            .env("RDS_IAM_DIR", dir.path())
            .env("RDS_IAM_LOG_FORMAT", format)
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/v1/credentials", ep.url()),
            )
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &auth)
            .arg("--once"))?;
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(
            !r.stderr.contains('\x1b'),
            "{format}: colour codes on a pipe: {:?}",
            r.stderr
        );
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("fetched AWS credentials"))
            .context("no fetched line")?;
        let expires = if format == "json" {
            let v: serde_json::Value = serde_json::from_str(line)?;
            v["expires"]
                .as_str()
                .context("expires is a string")?
                .to_owned()
        } else {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("expires="))
                .context("no expires field")?
                .to_owned()
        };
        let at = humantime::parse_rfc3339(&expires)
            .with_context(|| format!("{format}: expires={expires:?} is not RFC 3339"))?;
        let left = at.duration_since(SystemTime::now())?;
        assert!(left > Duration::from_secs(3500), "{expires}");
    }
    Ok(())
}

#[test]
fn a_negative_port_is_named_by_its_flag() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let r = run(agent(home.path(), dir.path())?.args(["--once", "--port", "-1"]))?;
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        "rds-iam-tokenagent: --port (RDS_IAM_PORT): \"-1\" is not a number; \
         write a port from 1 to 65535, e.g. 5432"
    );
    Ok(())
}

fn amz_date(t: SystemTime) -> String {
    // 2024-08-26T22:00:00Z -> 20240826T220000Z
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

#[test]
fn probe_refuses_a_token_signed_in_the_future() -> Result<()> {
    let home = tempfile::tempdir()?;
    for ahead in [3600u64, 10 * 365 * 86_400] {
        let dir = tempfile::tempdir()?;
        let signed = amz_date(SystemTime::now() + Duration::from_secs(ahead));
        let t = format!(
            "db:5432/?Action=connect&DBUser=app&X-Amz-Date={signed}&X-Amz-Expires=900&X-Amz-Signature=ab"
        );
        rds_iam_tokenagent::files::write_atomic(dir.path(), "token", t.as_bytes(), 0o600)?;
        let line = pgpass::line("db", 5432, "app", &t)?;
        rds_iam_tokenagent::files::write_atomic(dir.path(), "pgpass", line.as_bytes(), 0o600)?;
        let r = run(agent_command(home.path())?
            .args(["probe", "--dir"])
            .arg(dir.path()))?;
        assert_eq!(r.code, Some(1), "+{ahead}s: {}", r.stdout);
        assert!(
            r.stderr.contains("s in the future (X-Amz-Date)")
                && r.stderr.contains("60s allowed for clock skew"),
            "{}",
            r.stderr
        );
    }
    Ok(())
}

#[test]
fn a_pgpass_that_cannot_be_written_leaves_both_files_as_they_were() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let r = run(agent(home.path(), dir.path())?.arg("--once"))?;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let old = fs::read_to_string(dir.path().join("token"))?;
    // A directory where pgpass should be: its rename fails after token's.
    fs::remove_file(dir.path().join("pgpass"))?;
    fs::create_dir(dir.path().join("pgpass"))?;
    fs::write(dir.path().join("pgpass").join("x"), "")?;
    std::thread::sleep(Duration::from_millis(1100)); // a new token differs (X-Amz-Date)
    let r = run(agent(home.path(), dir.path())?.arg("--once"))?;
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "cannot write {}: ",
            dir.path().join("pgpass").display()
        )) && r.stderr.contains("; the previous files are kept"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("token"))?,
        old,
        "the token file holds the previous token, like the (unwritable) pgpass"
    );
    assert!(temp_files(dir.path())?.is_empty());
    Ok(())
}
