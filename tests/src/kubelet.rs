//! A small "kubelet" for the end-to-end tests and the demo: it runs a
//! patched Pod as local processes, exactly as its spec says.
//!
//! - Volumes become directories (an emptyDir is mode 0777, like kubelet's);
//!   projected volumes get the files the caller provides (e.g. the IRSA token).
//! - Each container runs its `command` + `args` with exactly its `env`
//!   (`value` only), under its UID/GID (container `securityContext` first,
//!   then the pod's), with `PATH` and `HOME` as an image would set them.
//!   Paths under a container's mountPaths are mapped to the volume's
//!   directory, in env values, args and probe commands.
//! - The agent image maps to the workspace's built binaries (first on PATH);
//!   other images use this machine's programs (psql, sh).
//! - Init containers run in order: a native sidecar (`restartPolicy: Always`)
//!   is started and its exec startupProbe must pass before the next one;
//!   others must exit 0. Then the app containers start.
//!
//! - A container image has its own `/etc/passwd`; here nss_wrapper
//!   (`libnss-wrapper`) gives a container whose UID this machine does not
//!   know a passwd entry, because psql refuses to start without one.
//!
//! With [`Kubelet::runc`] set, the agent containers run from the agent's OCI
//! image with runc ([`crate::runc`]), under the pod's securityContext; memory
//! emptyDirs are then tmpfs mounts, and a `readOnly` volumeMount of a
//! container that stays a local process is a read-only bind of the volume.
//! Without it, nothing is isolated: it checks that the spec is coherent and
//! runnable.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// nss_wrapper from Debian's libnss-wrapper.
pub const NSS_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";

/// How the "node" maps images and what it adds to containers.
#[derive(Debug, Clone)]
pub struct Kubelet {
    /// The agent image (`--agent-image` of the webhook).
    pub agent_image: String,
    /// Directory holding the built `rds-iam-tokenagent`.
    pub bin_dir: PathBuf,
    /// Files of projected volumes, by volume name: (path in volume, content).
    pub projected: HashMap<String, Vec<(String, String)>>,
    /// Env added to agent containers only: where "AWS" is on this machine
    /// (e.g. `AWS_ENDPOINT_URL_STS` of the local STS), as a cluster's network
    /// would route to the real one. Never added to app containers.
    pub agent_network_env: Vec<(String, String)>,
    /// Run agent containers from this image with runc instead of as local processes.
    pub runc: Option<std::sync::Arc<crate::runc::Image>>,
}

/// A running pod.
pub struct PodRun {
    root: tempfile::TempDir,
    spec: PodSpec,
    volumes: HashMap<String, PathBuf>,
    running: Vec<(String, Child)>,
    kubelet: Kubelet,
    /// runc mode: containers run by runc, by name.
    runc: HashMap<String, crate::runc::RuncContainer>,
    /// runc mode: read-only views of volumes, by volume name.
    read_only: HashMap<String, PathBuf>,
    /// runc mode: mount points to unmount on drop, in mount order.
    mounted: Vec<PathBuf>,
}

fn uid_gid(spec: &PodSpec, c: &Container) -> (Option<i64>, Option<i64>) {
    let pod = spec.security_context.as_ref();
    let ctr = c.security_context.as_ref();
    let uid = ctr
        .and_then(|s| s.run_as_user)
        .or(pod.and_then(|s| s.run_as_user));
    let gid = ctr
        .and_then(|s| s.run_as_group)
        .or(pod.and_then(|s| s.run_as_group));
    (uid, gid)
}

impl Kubelet {
    /// Creates the volumes, runs the init containers and starts the app
    /// containers. `say` gets one line per step.
    pub fn run_pod(&self, pod: &Pod, say: &dyn Fn(&str)) -> Result<PodRun> {
        let spec = pod.spec.clone().context("pod has no spec")?;
        let root = tempfile::Builder::new()
            .prefix("kubelet-pod-")
            .tempdir_in("/tmp")?;
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755))?;
        fs::create_dir(root.path().join("logs"))?;
        let mut volumes = HashMap::new();
        let mut mounted = Vec::new();
        for v in spec.volumes.iter().flatten() {
            let dir = root.path().join("volumes").join(&v.name);
            fs::create_dir_all(&dir)?;
            if v.empty_dir.is_some() {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
            } else {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
            }
            for (file, content) in self.projected.get(&v.name).into_iter().flatten() {
                let p = dir.join(file);
                fs::write(&p, content)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
            }
            let memory = v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) == Some("Memory");
            if self.runc.is_some() && memory {
                let size = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref());
                crate::runc::mounts::tmpfs(&dir, size.map(|q| q.0.as_str()))?;
                mounted.push(dir.clone());
            }
            volumes.insert(v.name.clone(), dir);
        }
        let mut read_only = HashMap::new();
        if self.runc.is_some() {
            let ro_mounts = spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
                .flat_map(|c| c.volume_mounts.iter().flatten())
                .filter(|m| m.read_only == Some(true));
            for m in ro_mounts {
                if read_only.contains_key(&m.name) {
                    continue;
                }
                let Some(src) = volumes.get(&m.name) else {
                    continue;
                };
                let ro = root.path().join("volumes-ro").join(&m.name);
                crate::runc::mounts::read_only_bind(src, &ro)?;
                mounted.push(ro.clone());
                read_only.insert(m.name.clone(), ro);
            }
        }
        let mut run = PodRun {
            root,
            spec: spec.clone(),
            volumes,
            running: Vec::new(),
            kubelet: self.clone(),
            runc: HashMap::new(),
            read_only,
            mounted,
        };
        for c in spec.init_containers.iter().flatten() {
            if c.restart_policy.as_deref() == Some("Always") {
                say(&format!(
                    "starting native sidecar {:?} and waiting for its startupProbe",
                    c.name
                ));
                let child = run.spawn(c)?;
                run.running.push((c.name.clone(), child));
                run.wait_startup(c)?;
                say(&format!(
                    "sidecar {:?} is started (startupProbe passed)",
                    c.name
                ));
            } else {
                say(&format!(
                    "running init container {:?} to completion",
                    c.name
                ));
                let mut child = run.spawn(c)?;
                let status = child.wait()?;
                if !status.success() {
                    bail!(
                        "init container {:?} failed ({status}):\n{}",
                        c.name,
                        run.logs(&c.name)
                    );
                }
            }
        }
        for c in &spec.containers {
            say(&format!("starting container {:?}", c.name));
            let child = run.spawn(c)?;
            run.running.push((c.name.clone(), child));
        }
        Ok(run)
    }
}

impl PodRun {
    fn container(&self, name: &str) -> Result<&Container> {
        self.spec
            .init_containers
            .iter()
            .flatten()
            .chain(self.spec.containers.iter())
            .find(|c| c.name == name)
            .with_context(|| format!("no container {name:?}"))
    }

    /// mountPath -> host dir, longest first.
    fn mounts(&self, c: &Container) -> Result<Vec<(String, PathBuf)>> {
        let mut m = Vec::new();
        for vm in c.volume_mounts.iter().flatten() {
            if vm.sub_path.is_some() || vm.sub_path_expr.is_some() {
                bail!(
                    "container {:?} mounts {:?} with subPath: file replacements would not reach it",
                    c.name,
                    vm.name
                );
            }
            let dir = self.volumes.get(&vm.name).with_context(|| {
                format!("container {:?} mounts unknown volume {:?}", c.name, vm.name)
            })?;
            // runc mode: a read-only mount of a local process is a read-only bind.
            let dir = match self.read_only.get(&vm.name) {
                Some(ro) if vm.read_only == Some(true) => ro,
                _ => dir,
            };
            m.push((vm.mount_path.trim_end_matches('/').to_owned(), dir.clone()));
        }
        m.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(m)
    }

    fn map_path(mounts: &[(String, PathBuf)], s: &str) -> String {
        for (mp, dir) in mounts {
            if s == mp {
                return dir.display().to_string();
            }
            if let Some(rest) = s.strip_prefix(&format!("{mp}/")) {
                return dir.join(rest).display().to_string();
            }
        }
        s.to_owned()
    }

    /// The process for container `c` (or an exec of `argv` in it).
    fn command(&self, c: &Container, argv: Option<&[String]>, as_root: bool) -> Result<Command> {
        let mounts = self.mounts(c)?;
        let argv: Vec<String> = match argv {
            Some(a) => a.to_vec(),
            None => {
                let mut v = c.command.clone().unwrap_or_default();
                v.extend(c.args.clone().unwrap_or_default());
                v
            }
        };
        let Some((prog, args)) = argv.split_first() else {
            bail!(
                "container {:?} has no command (the sim cannot read image entrypoints)",
                c.name
            );
        };
        let is_agent = c.image.as_deref() == Some(self.kubelet.agent_image.as_str());
        let path = if is_agent {
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                self.kubelet.bin_dir.display()
            )
        } else {
            "/usr/local/bin:/usr/bin:/bin".to_owned()
        };
        // Resolve the program on the container's PATH, as a runtime would.
        let program = if prog.contains('/') {
            PathBuf::from(prog)
        } else {
            path.split(':')
                .map(|d| Path::new(d).join(prog))
                .find(|p| p.is_file())
                .with_context(|| format!("container {:?}: {prog:?} not found on {path}", c.name))?
        };
        let mut cmd = Command::new(program);
        cmd.args(args.iter().map(|a| Self::map_path(&mounts, a)));
        cmd.env_clear().env("PATH", &path).env("HOME", "/tmp");
        for e in c.env.iter().flatten() {
            if e.value_from.is_some() {
                bail!(
                    "container {:?}: env {:?} uses valueFrom, which the sim does not support",
                    c.name,
                    e.name
                );
            }
            cmd.env(
                &e.name,
                Self::map_path(&mounts, e.value.as_deref().unwrap_or("")),
            );
        }
        if is_agent {
            for (k, v) in &self.kubelet.agent_network_env {
                cmd.env(k, v);
            }
        }
        cmd.current_dir("/").stdin(Stdio::null());
        if as_root {
            return Ok(cmd);
        }
        let (uid, gid) = uid_gid(&self.spec, c);
        if let Some(u) = uid {
            cmd.uid(u32::try_from(u).context("runAsUser")?);
            self.image_passwd(&mut cmd, u, gid.unwrap_or(u))?;
        }
        if let Some(g) = gid.or(uid) {
            cmd.gid(u32::try_from(g).context("runAsGroup")?);
        }
        Ok(cmd)
    }

    /// Gives the process a passwd/group entry for `uid`, as its image would.
    fn image_passwd(&self, cmd: &mut Command, uid: i64, gid: i64) -> Result<()> {
        let passwd = fs::read_to_string("/etc/passwd")?;
        let known = passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(uid.to_string().as_str()));
        if known {
            return Ok(());
        }
        let lib = Path::new(NSS_WRAPPER);
        if !lib.is_file() {
            bail!("{NSS_WRAPPER} is missing (Debian package libnss-wrapper); run testenv/setup.sh");
        }
        let etc = self.root.path().join("etc");
        fs::create_dir_all(&etc)?;
        let pw = etc.join(format!("passwd-{uid}"));
        fs::write(
            &pw,
            format!("{passwd}app{uid}:x:{uid}:{gid}:container user:/tmp:/bin/sh\n"),
        )?;
        let group = fs::read_to_string("/etc/group")?;
        let gr = etc.join(format!("group-{gid}"));
        fs::write(&gr, format!("{group}app{gid}:x:{gid}:\n"))?;
        for p in [&pw, &gr] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o644))?;
        }
        fs::set_permissions(&etc, fs::Permissions::from_mode(0o755))?;
        cmd.env("LD_PRELOAD", lib)
            .env("NSS_WRAPPER_PASSWD", pw)
            .env("NSS_WRAPPER_GROUP", gr);
        Ok(())
    }

    fn runs_in_runc(&self, c: &Container) -> Option<&std::sync::Arc<crate::runc::Image>> {
        let is_agent = c.image.as_deref() == Some(self.kubelet.agent_image.as_str());
        self.kubelet.runc.as_ref().filter(|_| is_agent)
    }

    /// Runs `argv` in container `c` (a probe or an exec): `runc exec` for a
    /// runc container, else a local process with the container's env and UID.
    fn exec_in(&self, c: &Container, argv: &[String]) -> Result<Output> {
        match self.runc.get(&c.name) {
            Some(rc) => rc.exec(argv),
            None => Ok(self.command(c, Some(argv), false)?.output()?),
        }
    }

    fn spawn(&mut self, c: &Container) -> Result<Child> {
        let log = self
            .root
            .path()
            .join("logs")
            .join(format!("{}.log", c.name));
        if let Some(image) = self.runs_in_runc(c) {
            let spec = crate::runc::ContainerSpec::from_pod(
                &self.spec,
                c,
                &self.volumes,
                &self.kubelet.agent_network_env,
            )?;
            let bundles = self.root.path().join("bundles");
            let rc = crate::runc::RuncContainer::create(&bundles, &c.name, image, &spec)?;
            let child = rc.run(&log)?;
            self.runc.insert(c.name.clone(), rc);
            return Ok(child);
        }
        let f = fs::File::create(&log)?;
        let mut cmd = self.command(c, None, false)?;
        cmd.stdout(f.try_clone()?).stderr(f);
        cmd.spawn()
            .with_context(|| format!("starting container {:?}", c.name))
    }

    fn wait_startup(&self, c: &Container) -> Result<()> {
        let Some(probe) = c.startup_probe.as_ref() else {
            return Ok(());
        };
        let argv = probe
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .context("the sim supports exec startup probes only")?;
        let period = probe.period_seconds.unwrap_or(10).max(1) as u64;
        let tries = probe.failure_threshold.unwrap_or(3).max(1) as u64;
        // Probe 10x faster than kubelet would, within the same total budget.
        let deadline = Instant::now()
            + Duration::from_secs(period * tries + probe.initial_delay_seconds.unwrap_or(0) as u64);
        loop {
            let out = self.exec_in(c, &argv)?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "startupProbe of {:?} never passed: {}\n{}",
                    c.name,
                    String::from_utf8_lossy(&out.stderr),
                    self.logs(&c.name)
                );
            }
            std::thread::sleep(Duration::from_millis(period * 100));
        }
    }

    /// Runs `argv` in container `name` like `kubectl exec`.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Result<Output> {
        let c = self.container(name)?;
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.exec_in(c, &argv)
    }

    /// Runs `argv` with container `name`'s env and mounts but as root and
    /// with `extra` env added: for client programs this machine installs
    /// where the container's UID cannot reach (e.g. a venv under /root).
    /// libpq-style clients check the passfile's mode, not its owner.
    pub fn exec_as_root(
        &self,
        name: &str,
        argv: &[&str],
        extra: &[(String, String)],
    ) -> Result<Output> {
        let c = self.container(name)?;
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let mut cmd = self.command(c, Some(&argv), true)?;
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Ok(cmd.output()?)
    }

    /// The runc container running container `name`, in runc mode.
    pub fn runc_container(&self, name: &str) -> Option<&crate::runc::RuncContainer> {
        self.runc.get(name)
    }

    /// The container's log so far.
    pub fn logs(&self, name: &str) -> String {
        fs::read_to_string(self.root.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// A volume's directory.
    pub fn volume_dir(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(PathBuf::as_path)
    }

    /// Waits until `pred(log)` holds for container `name`.
    pub fn wait_log(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let t = Instant::now();
        loop {
            let l = self.logs(name);
            if pred(&l) {
                return Ok(l);
            }
            if t.elapsed() > timeout {
                bail!("container {name:?} log after {timeout:?}:\n{l}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to every running container, then wait (SIGKILL after 10 s).
    pub fn stop(mut self) -> Result<Vec<(String, std::process::ExitStatus)>> {
        for (_, child) in &self.running {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let mut out = Vec::new();
        for (name, mut child) in self.running.drain(..) {
            let t = Instant::now();
            let status = loop {
                if let Some(s) = child.try_wait()? {
                    break s;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    break child.wait()?;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            out.push((name, status));
        }
        Ok(out)
    }
}

impl Drop for PodRun {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
        for rc in self.runc.values() {
            rc.delete();
        }
        for m in self.mounted.iter().rev() {
            crate::runc::mounts::unmount(m);
        }
    }
}
