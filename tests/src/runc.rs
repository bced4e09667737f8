//! Runs a pod's container from its OCI image with runc, as a node's container
//! runtime would: the image archive built by `make images` is unpacked once
//! (`skopeo copy` to an OCI layout, `umoci unpack` to a bundle), and each
//! container gets a `config.json` made from the image's (its PATH, user,
//! entrypoint) and the pod's spec:
//!
//! - `command` + `args` (or the image's entrypoint), resolved through the
//!   image's PATH by runc;
//! - the container's `env` on top of the image's;
//! - UID/GID from the container's, else the pod's securityContext, else the
//!   image's `USER`; `runAsNonRoot` refuses UID 0 like the kubelet;
//! - `readOnlyRootFilesystem`, `allowPrivilegeEscalation: false` (no_new_privs),
//!   capabilities (the runtime's default set, minus `drop`, plus `add`);
//! - each volumeMount as a bind mount of the volume's host directory, read-only
//!   where the mount says so, plus the kubelet's `/etc/hosts` and
//!   `/etc/resolv.conf`.
//!
//! The container shares the host's network namespace: the test "pod network"
//! is this machine's loopback, where the local STS and PostgreSQL listen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

use crate::pgrds::repo_root;

/// Where `make images` writes the agent image.
pub fn agent_image_archive() -> PathBuf {
    repo_root().join("target/images/rds-iam-tokenagent.tar")
}

/// The runc binary (Debian's package puts it in /usr/sbin).
pub fn runc_bin() -> Result<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("runc is not installed; run testenv/setup.sh")
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// An unpacked image: a root filesystem shared read-only by its containers,
/// and the runtime config umoci derived from the image's config.
#[derive(Debug)]
pub struct Image {
    /// The archive it came from (for messages).
    pub archive: PathBuf,
    rootfs: PathBuf,
    config: Value,
    _dir: tempfile::TempDir,
}

impl Image {
    /// Unpacks an OCI archive (`oci-archive:` of skopeo). The error says how
    /// to build it when it is missing.
    pub fn unpack(archive: &Path) -> Result<Image> {
        if !archive.is_file() {
            bail!(
                "{} is missing: run `make images` (scripts/images.sh) first",
                archive.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("runc-image-")
            .tempdir_in("/tmp")?;
        let layout = dir.path().join("layout");
        let bundle = dir.path().join("bundle");
        run_tool(
            Command::new("skopeo")
                .args(["copy", "--quiet"])
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("oci:{}:image", layout.display())),
            "skopeo copy",
        )?;
        run_tool(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:image", layout.display()))
                .arg(&bundle),
            "umoci unpack",
        )?;
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json"))?)?;
        // The containers' bundles live elsewhere; the directory must be traversable by them.
        std::fs::set_permissions(&bundle, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Image {
            archive: archive.to_owned(),
            rootfs: bundle.join("rootfs"),
            config,
            _dir: dir,
        })
    }

    /// The image's root filesystem (read-only for every container).
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }
}

/// A bind mount of a host directory into the container.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Everything runc needs for one container, decided from the pod.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The image's entrypoint is used when `args` is empty of a command.
    pub command: Option<Vec<String>>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub run_as_non_root: bool,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub drop_caps: Vec<String>,
    pub add_caps: Vec<String>,
    pub binds: Vec<Bind>,
}

impl ContainerSpec {
    /// From the pod and container spec; `volumes` maps volume names to host
    /// directories, `extra_env` is added after the container's env.
    pub fn from_pod(
        pod: &PodSpec,
        c: &Container,
        volumes: &HashMap<String, PathBuf>,
        extra_env: &[(String, String)],
    ) -> Result<ContainerSpec> {
        let psc = pod.security_context.as_ref();
        let sc = c.security_context.as_ref();
        let id = |v: Option<i64>, what: &str| -> Result<Option<u32>> {
            v.map(|x| u32::try_from(x).with_context(|| format!("{what} {x}")))
                .transpose()
        };
        let uid = id(
            sc.and_then(|s| s.run_as_user)
                .or(psc.and_then(|s| s.run_as_user)),
            "runAsUser",
        )?;
        let gid = id(
            sc.and_then(|s| s.run_as_group)
                .or(psc.and_then(|s| s.run_as_group)),
            "runAsGroup",
        )?;
        let mut env = Vec::new();
        for e in c.env.iter().flatten() {
            if e.value_from.is_some() {
                bail!(
                    "container {:?}: env {:?} uses valueFrom, which the test kubelet does not support",
                    c.name,
                    e.name
                );
            }
            env.push((e.name.clone(), e.value.clone().unwrap_or_default()));
        }
        env.extend(extra_env.iter().cloned());
        let mut binds = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            if m.sub_path.is_some() || m.sub_path_expr.is_some() {
                bail!(
                    "container {:?} mounts {:?} with subPath: file replacements would not reach it",
                    c.name,
                    m.name
                );
            }
            let source = volumes.get(&m.name).with_context(|| {
                format!("container {:?} mounts unknown volume {:?}", c.name, m.name)
            })?;
            binds.push(Bind {
                source: source.clone(),
                destination: m.mount_path.clone(),
                read_only: m.read_only == Some(true),
            });
        }
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        Ok(ContainerSpec {
            command: c.command.clone(),
            args: c.args.clone().unwrap_or_default(),
            env,
            uid,
            gid,
            run_as_non_root: sc
                .and_then(|s| s.run_as_non_root)
                .or(psc.and_then(|s| s.run_as_non_root))
                == Some(true),
            read_only_root: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
            // Kubernetes sets no_new_privs unless allowPrivilegeEscalation is true (or unset
            // with privileges); the injected agent sets it false explicitly.
            no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
            drop_caps: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            add_caps: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            binds,
        })
    }
}

/// The OCI runtime config for `spec` on `image`: the image's config with the
/// pod's settings applied.
pub fn runtime_config(image: &Image, spec: &ContainerSpec) -> Result<Value> {
    let mut cfg = image.config.clone();
    let p = &mut cfg["process"];
    p["terminal"] = json!(false);
    // Entrypoint + cmd of the image, unless the container sets `command`.
    let image_args: Vec<String> = serde_json::from_value(p["args"].clone()).unwrap_or_default();
    let args = match &spec.command {
        Some(cmd) => cmd.iter().chain(spec.args.iter()).cloned().collect(),
        None if spec.args.is_empty() => image_args,
        None => image_args
            .into_iter()
            .take(1)
            .chain(spec.args.iter().cloned())
            .collect(),
    };
    if args.is_empty() {
        bail!("the container has no command and the image no entrypoint");
    }
    p["args"] = json!(args);
    let mut env: Vec<(String, String)> = p["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
        })
        .filter(|(k, _): &(String, String)| k != "TERM")
        .collect();
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    p["env"] = json!(env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>());
    let image_uid = p["user"]["uid"].as_u64().unwrap_or(0) as u32;
    let uid = spec.uid.unwrap_or(image_uid);
    let gid = spec
        .gid
        .or(spec.uid)
        .unwrap_or(p["user"]["gid"].as_u64().unwrap_or(0) as u32);
    if spec.run_as_non_root && uid == 0 {
        bail!("container has runAsNonRoot and would run as root: the kubelet refuses it");
    }
    p["user"] = json!({ "uid": uid, "gid": gid });
    p["noNewPrivileges"] = json!(spec.no_new_privileges);
    let default_caps: Vec<String> =
        serde_json::from_value(p["capabilities"]["bounding"].clone()).unwrap_or_default();
    let drop_all = spec.drop_caps.iter().any(|c| c == "ALL");
    let norm = |c: &str| format!("CAP_{}", c.trim_start_matches("CAP_"));
    let caps: Vec<String> = default_caps
        .into_iter()
        .filter(|c| !drop_all && !spec.drop_caps.iter().any(|d| norm(d) == *c))
        .chain(spec.add_caps.iter().map(|c| norm(c)))
        .collect();
    p["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []
    });
    cfg["root"] = json!({ "path": image.rootfs, "readonly": spec.read_only_root });
    cfg["hostname"] = json!("pod");
    let mounts = cfg["mounts"].as_array_mut().context("mounts")?;
    let mut binds = spec.binds.clone();
    // What the kubelet mounts into every container.
    for f in ["/etc/hosts", "/etc/resolv.conf"] {
        binds.push(Bind {
            source: PathBuf::from(f),
            destination: f.into(),
            read_only: true,
        });
    }
    for b in &binds {
        mounts.push(json!({
            "destination": b.destination,
            "type": "bind",
            "source": b.source,
            "options": ["rbind", if b.read_only { "ro" } else { "rw" }, "nosuid", "nodev"],
        }));
    }
    // Host network: the pod's network is this machine's loopback.
    if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network" && n["type"] != "user");
    }
    Ok(cfg)
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A container created from a bundle; `runc run` in the foreground is its
/// process (signals sent to it are forwarded to the container).
#[derive(Debug)]
pub struct RuncContainer {
    pub id: String,
    bundle: PathBuf,
}

impl RuncContainer {
    /// Writes the bundle (config.json) under `dir` for container `name`.
    pub fn create(dir: &Path, name: &str, image: &Image, spec: &ContainerSpec) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("rds-iam-e2e-{}-{n}-{name}", std::process::id());
        let bundle = dir.join(&id);
        std::fs::create_dir_all(&bundle)?;
        let cfg = runtime_config(image, spec)?;
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
        Ok(Self { id, bundle })
    }

    /// `runc run` in the foreground, output to `log`.
    pub fn run(&self, log: &Path) -> Result<Child> {
        let f = std::fs::File::create(log)?;
        Command::new(runc_bin()?)
            .args(["run", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("runc run {}", self.id))
    }

    /// `runc exec`: `argv` in the running container, as its user, with its env.
    pub fn exec(&self, argv: &[String]) -> Result<Output> {
        Ok(Command::new(runc_bin()?)
            .arg("exec")
            .arg(&self.id)
            .args(argv)
            .stdin(Stdio::null())
            .output()?)
    }

    /// The host PID of the container's process (`runc state`).
    pub fn pid(&self) -> Result<u32> {
        let out = Command::new(runc_bin()?)
            .args(["state", &self.id])
            .output()?;
        if !out.status.success() {
            bail!(
                "runc state {}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let state: Value = serde_json::from_slice(&out.stdout)?;
        let pid = state["pid"].as_u64().context("runc state has no pid")?;
        Ok(u32::try_from(pid)?)
    }

    /// Kills and deletes the container if it still exists.
    pub fn delete(&self) {
        if let Ok(runc) = runc_bin() {
            let _ = Command::new(runc)
                .args(["delete", "--force", &self.id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Linux mounts the test kubelet makes for volumes (it runs as root).
pub mod mounts {
    use super::*;

    /// `mount -t tmpfs` on `dir` (an emptyDir with `medium: Memory`).
    pub fn tmpfs(dir: &Path, size: Option<&str>) -> Result<()> {
        let mut opts = "mode=0777,nosuid,nodev".to_owned();
        if let Some(s) = size {
            // Kubernetes quantities (1Mi) to mount's sizes (1m).
            let s = s.replace("Ki", "k").replace("Mi", "m").replace("Gi", "g");
            opts.push_str(&format!(",size={s}"));
        }
        run_tool(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
                .arg(dir),
            "mount -t tmpfs",
        )
    }

    /// A read-only view of `source` at `target` (bind, then remount read-only).
    pub fn read_only_bind(source: &Path, target: &Path) -> Result<()> {
        std::fs::create_dir_all(target)?;
        run_tool(
            Command::new("mount").arg("--bind").arg(source).arg(target),
            "mount --bind",
        )?;
        run_tool(
            Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(target),
            "mount -o remount,bind,ro",
        )
    }

    /// Lazy unmount; errors are ignored (used on cleanup).
    pub fn unmount(dir: &Path) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir)
            .stderr(Stdio::null())
            .status();
    }
}
