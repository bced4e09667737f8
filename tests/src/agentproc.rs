//! Running the real `rds-iam-tokenagent` binary with a controlled
//! environment: nothing from the test process leaks in except `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Where cargo put the workspace's binaries: a test executable lives in
/// `target/<profile>/deps/`, the binaries one level up.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live in `deps/`; binaries (like the demo) beside the others.
    if dir.file_name().is_some_and(|n| n == "deps") {
        Ok(dir.parent().map(Path::to_path_buf).unwrap_or(dir))
    } else {
        Ok(dir)
    }
}

/// The path of a workspace binary; an error tells how to build it.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if !p.is_file() {
        bail!(
            "{} is not built; run `cargo build --workspace --bins` first (the README's test command does)",
            p.display()
        );
    }
    Ok(p)
}

/// `rds-iam-tokenagent`.
pub fn agent_bin() -> Result<PathBuf> {
    workspace_bin("rds-iam-tokenagent")
}

/// A command for the agent with a clean environment: `PATH`, `HOME` (an
/// empty directory, so no `~/.aws` is found), text logs, and IMDS disabled
/// (no test may send traffic off this machine). Add the env under test.
pub fn agent_command(home: &Path) -> Result<Command> {
    let mut cmd = Command::new(agent_bin()?);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("RDS_IAM_LOG_FORMAT", "text")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    Ok(cmd)
}

/// Output of a finished command as text.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs to completion.
pub fn run(cmd: &mut Command) -> Result<Ran> {
    let out = cmd.output()?;
    Ok(Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Waits until the agent's first write made `path` appear.
pub fn wait_for_file(path: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The library agent serving one PostgreSQL database (the default), with
/// every output, on `source`.
pub fn library_agent(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    dir: &Path,
    source: rds_iam_tokenagent::creds::CredentialSource,
) -> rds_iam_tokenagent::agent::Agent {
    use rds_iam_common::{Access, DbName, Endpoint, Engine, SslMode};
    use rds_iam_tokenagent::agent::{Agent, CredGroup};
    let endpoint = Endpoint {
        name: DbName::default_db(),
        engine: Engine::Postgres,
        host: host.into(),
        port,
        user: user.into(),
        database: None,
        region: region.into(),
        sslmode: SslMode::Require,
        access: Access::default(),
    };
    Agent::new(
        vec![endpoint],
        dir.to_owned(),
        vec![CredGroup {
            source,
            members: vec![0],
        }],
        rds_iam_tokenagent::outputs::all(&dir.display().to_string(), None),
    )
}
