//! Faults of the agent binary: SIGKILL at random points of a write, a full
//! disk and a read-only volume. The files are always absent (before the first
//! write) or complete and valid, and an old valid token is kept.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rds_iam_e2e::agentproc::{agent_command, run};
use rds_iam_tokenagent::{pgpass, token};

const KILLS: usize = 1000;

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
        .env("AWS_SESSION_TOKEN", "FwoGZXIvYXdzE".repeat(80))
        .arg("--once")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(cmd)
}

/// Each file is absent or complete; returns how many are present.
fn check_files(dir: &Path) -> Result<usize> {
    let mut present = 0;
    match fs::read_to_string(dir.join("token")) {
        Ok(t) => {
            present += 1;
            token::expires_at(&t)?;
            if !t.contains("&X-Amz-Signature=") || !t.ends_with(&"FwoGZXIvYXdzE".repeat(80)) {
                bail!("partial token file: {t:?}");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    match fs::read_to_string(dir.join("pgpass")) {
        Ok(l) => {
            present += 1;
            let f =
                pgpass::parse_line(&l).ok_or_else(|| anyhow::anyhow!("partial pgpass: {l:?}"))?;
            if !l.ends_with('\n') || !f[4].ends_with(&"FwoGZXIvYXdzE".repeat(80)) {
                bail!("partial pgpass: {l:?}");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    match fs::read_to_string(dir.join("pg_service.conf")) {
        Ok(s) => {
            present += 1;
            if !s.ends_with("sslmode=require\n") || !s.contains("[default]\nhost=db.abc.") {
                bail!("partial pg_service.conf: {s:?}");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(present)
}

#[test]
fn sigkill_at_random_points_never_leaves_a_partial_file() -> Result<()> {
    let home = tempfile::tempdir()?;
    // How long a full --once takes here, to spread the kills over it.
    let probe_dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        assert!(agent(home.path(), probe_dir.path())?.status()?.success());
        runs.push(t0.elapsed());
    }
    runs.sort();
    let full = runs[3].max(Duration::from_millis(2));

    let dir = tempfile::tempdir()?;
    let (mut none, mut some, mut all) = (0, 0, 0);
    let (mut while_running, mut changed) = (0, 0);
    for i in 0..KILLS {
        // Every 100 kills start over with an empty directory, so kills also
        // land before and during the very first write.
        if i % 100 == 0 {
            for e in fs::read_dir(dir.path())? {
                fs::remove_file(e?.path())?;
            }
        }
        let before = fs::read(dir.path().join("token")).ok();
        let mut child = agent(home.path(), dir.path())?.spawn()?;
        // The writes come last: aim most kills at the end of the run.
        let us = full.as_micros() as u64;
        let delay = if i % 10 == 0 {
            rand::random_range(0..=us)
        } else {
            rand::random_range(us * 7 / 10..=us * 11 / 10)
        };
        std::thread::sleep(Duration::from_micros(delay));
        if child.try_wait()?.is_none() {
            while_running += 1;
        }
        let _ = child.kill(); // SIGKILL
        child.wait()?;
        if fs::read(dir.path().join("token")).ok() != before {
            changed += 1;
        }
        match check_files(dir.path()) {
            Ok(0) => none += 1,
            Ok(3) => all += 1,
            Ok(_) => some += 1,
            Err(e) => bail!("after kill {i} (at {delay} µs of ~{full:?}): {e}"),
        }
    }
    eprintln!(
        "{KILLS} kills ({while_running} while running, {changed} after a new token was written): \
         no file {none}, some {some}, all three {all}; a full run takes {full:?}"
    );
    // The kills must have landed across the whole run to mean anything.
    assert!(none > 0 && all > 0, "none={none} all={all}");
    // The files are replaced together: never some of them.
    assert_eq!(some, 0, "the files were written one by one");
    assert!(
        while_running >= KILLS / 10,
        "too few kills hit a running agent: {while_running}"
    );
    assert!(changed > 0 && changed < KILLS, "{changed}");
    // A later start removes the temporary files of killed runs.
    assert!(agent(home.path(), dir.path())?.status()?.success());
    let names: Vec<String> = fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let mut names = names;
    names.sort();
    assert_eq!(names, ["pg_service.conf", "pgpass", "token"]);
    Ok(())
}

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_and_read_only_volume_keep_the_old_token() -> Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    // A tiny tmpfs, like the pod's memory-backed emptyDir with a sizeLimit.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12k,mode=0700", "tmpfs"])
        .arg(dir.path())
        .status()?;
    if !st.success() {
        bail!("mounting a tmpfs failed: this test needs root (CAP_SYS_ADMIN)");
    }
    let _m = Mount(dir.path().to_owned());
    let r = run(agent(home.path(), dir.path())?.stderr(Stdio::piped()))?;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let old = fs::read_to_string(dir.path().join("token"))?;
    // Fill the rest of the disk.
    let _ = fs::write(dir.path().join("filler"), vec![0u8; 64 * 1024]);
    std::thread::sleep(Duration::from_millis(1100)); // a new token differs (X-Amz-Date)
    let r = run(agent(home.path(), dir.path())?.stderr(Stdio::piped()))?;
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("No space left on device")
            && r.stderr.contains("previous files are kept"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_to_string(dir.path().join("token"))?, old);
    assert_eq!(check_files(dir.path())?, 3);
    // Read-only volume.
    fs::remove_file(dir.path().join("filler"))?;
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(dir.path())
        .status()?;
    assert!(st.success(), "remount ro");
    let r = run(agent(home.path(), dir.path())?.stderr(Stdio::piped()))?;
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert_eq!(fs::read_to_string(dir.path().join("token"))?, old);
    assert_eq!(check_files(dir.path())?, 3);
    Ok(())
}
