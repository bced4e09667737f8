//! The two images `make images` writes (target/images/*.tar): readable by skopeo, FROM
//! scratch with only the binary and a few files (no shell), a non-root numeric user, CA
//! certificates for the agent, and static binaries that run in them under runc.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use rds_iam_e2e::pgrds::repo_root;
use rds_iam_e2e::runc::{ContainerSpec, Image, RuncContainer};
use serde_json::Value;

fn archive(name: &str) -> PathBuf {
    repo_root()
        .join("target/images")
        .join(format!("{name}.tar"))
}

fn inspect(archive: &Path, raw_config: bool) -> Result<Value> {
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect");
    if raw_config {
        cmd.arg("--config");
    }
    let out = cmd
        .arg(format!("oci-archive:{}", archive.display()))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "skopeo inspect {}: {} (run `make images`)",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn files(root: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root)?.display().to_string());
            }
        }
    }
    Ok(out)
}

/// Runs the image's entrypoint with `args`, hardened like the injected agent, and returns
/// its output.
fn run_image(image: &Image, name: &str, args: &[&str]) -> Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let spec = ContainerSpec {
        command: None,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        uid: None,
        gid: None,
        run_as_non_root: true,
        read_only_root: true,
        no_new_privileges: true,
        drop_caps: vec!["ALL".into()],
        add_caps: vec![],
        binds: vec![],
    };
    let c = RuncContainer::create(dir.path(), name, image, &spec)?;
    let log = dir.path().join("log");
    let status = c.run(&log)?.wait()?;
    c.delete();
    Ok((status.success(), std::fs::read_to_string(log)?))
}

/// True when the ELF64 file has a PT_INTERP program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            elf.get(o..o + 2).context("short ELF")?.try_into()?,
        ))
    };
    let phoff = u64::from_le_bytes(elf.get(0x20..0x28).context("short ELF")?.try_into()?) as usize;
    let (size, count) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    const PT_INTERP: u32 = 3;
    for i in 0..count {
        let at = phoff + i * size;
        let kind = u32::from_le_bytes(elf.get(at..at + 4).context("short ELF")?.try_into()?);
        if kind == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

fn check_image(name: &str, binary: &str) -> Result<()> {
    let path = archive(name);
    let meta = inspect(&path, false)?;
    let config = inspect(&path, true)?;
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(meta["Os"], "linux");
    assert_eq!(meta["Architecture"], "amd64");
    assert_eq!(meta["Layers"].as_array().map(Vec::len), Some(1), "{meta}");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .context("Env")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"PATH=/usr/local/bin"), "{env:?}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!([format!("/usr/local/bin/{binary}")])
    );

    let image = Image::unpack(&path)?;
    let got = files(image.rootfs())?;
    let want: BTreeSet<String> = [
        "etc/group",
        "etc/nsswitch.conf",
        "etc/passwd",
        "etc/ssl/certs/ca-certificates.crt",
        &format!("usr/local/bin/{binary}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        got, want,
        "{name}: FROM scratch with exactly these files (no shell)"
    );
    let ca = std::fs::read_to_string(image.rootfs().join("etc/ssl/certs/ca-certificates.crt"))?;
    assert!(ca.matches("BEGIN CERTIFICATE").count() > 100, "a CA bundle");
    let passwd = std::fs::read_to_string(image.rootfs().join("etc/passwd"))?;
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    // A static binary has no program interpreter (no PT_INTERP program header).
    let bin = std::fs::read(image.rootfs().join("usr/local/bin").join(binary))?;
    assert_eq!(&bin[..5], b"\x7fELF\x02", "a 64-bit ELF");
    assert!(
        !has_interpreter(&bin)?,
        "{binary} has a PT_INTERP: not static"
    );

    // It runs in its image, as 65532 with a read-only root and no capabilities.
    let (ok, out) = run_image(&image, name, &["--version"])?;
    assert!(ok, "{name} --version in its image: {out}");
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    Ok(())
}

#[test]
fn webhook_image() -> Result<()> {
    // The static check tells a dynamic binary apart.
    assert!(has_interpreter(&std::fs::read("/bin/true")?)?);
    check_image("rds-iam-webhook", "rds-iam-webhook")
}

#[test]
fn agent_image() -> Result<()> {
    check_image("rds-iam-tokenagent", "rds-iam-tokenagent")?;
    // The probe the webhook writes runs in the image and reports a missing token.
    let image = Image::unpack(&archive("rds-iam-tokenagent"))?;
    let (ok, out) = run_image(
        &image,
        "probe",
        &["probe", "--dir", "/var/run/rds-iam", "--min-life", "2m"],
    )?;
    assert!(!ok, "probe passed without a token: {out}");
    assert!(out.contains("/var/run/rds-iam/token"), "{out}");
    Ok(())
}
