//! Builds the JSON Patch that injects the token agent into an opted-in pod.
//!
//! Pure: a `Pod` and the agent settings in, a patch (or a reason to leave the
//! pod alone, or a denial) out. The admission handler and `inject` both call
//! [`mutate`], so they always agree.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, ExecAction, Pod, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rds_iam_common::{region_from_hostname, AGENT_BINARY, DEFAULT_DIR, PGPASS_FILE, TOKEN_FILE};
use serde_json::Value;

use crate::annotations::{self, Denial, InjectionRequest};
use crate::config::{AgentConfig, SidecarMode};

/// The long-running agent (native or classic sidecar, and the init-only container).
pub const AGENT_CONTAINER: &str = "rds-iam-tokenagent";
/// The `--once` init container of classic mode.
pub const AGENT_INIT_CONTAINER: &str = "rds-iam-tokenagent-init";
/// The in-memory volume the agent writes `token` and `pgpass` into.
pub const VOLUME: &str = "rds-iam";
pub const VOLUME_SIZE_LIMIT: &str = "1Mi";
/// Environment the EKS pod identity webhook sets; copied into the agent.
pub const AWS_ENV: [&str; 7] = [
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
];
/// Volumes the EKS pod identity webhook mounts; copied into the agent.
pub const AWS_VOLUMES: [&str; 2] = ["aws-iam-token", "eks-pod-identity-token"];
/// The probe the agent answers: files present, mode 0600, token good for 2m.
pub const PROBE_COMMAND: [&str; 6] = [
    AGENT_BINARY,
    "probe",
    "--dir",
    DEFAULT_DIR,
    "--min-life",
    "2m",
];

/// Why a pod is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    /// No `rds-iam/enabled: "true"`.
    NotOptedIn,
    /// Marked `rds-iam/status: injected`, or it already has the agent.
    AlreadyInjected,
}

impl Unchanged {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOptedIn => "not opted in",
            Self::AlreadyInjected => "already injected",
        }
    }
}

/// Where the region came from (logged, and shown by `inject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    Annotation,
    Hostname,
    ContainerEnv,
    DefaultRegion,
}

/// A successful injection.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub patch: Patch,
    /// Admission warnings for the client (e.g. the agent's UID was guessed).
    pub warnings: Vec<String>,
    pub mode: SidecarMode,
    /// Names of the containers that get the token, in pod order.
    pub targets: Vec<String>,
    pub agent_uid: i64,
    pub region: String,
    pub region_source: RegionSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    Unchanged(Unchanged),
    Inject(Box<Injection>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Init,
    App,
}

impl Section {
    fn field(self) -> &'static str {
        match self {
            Self::Init => "initContainers",
            Self::App => "containers",
        }
    }
}

struct Target<'a> {
    section: Section,
    index: usize,
    container: &'a Container,
}

/// True when the pod already runs the agent under any of its names.
pub fn has_agent(spec: &PodSpec) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| {
            c.name == AGENT_CONTAINER
                || c.name == AGENT_INIT_CONTAINER
                || c.command
                    .as_ref()
                    .and_then(|cmd| cmd.first())
                    .map(String::as_str)
                    == Some(AGENT_BINARY)
        })
}

/// Decides what to do with a pod on CREATE.
pub fn mutate(pod: &Pod, cfg: &AgentConfig) -> Result<Mutation, Denial> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if !annotations::opted_in(annotations) {
        return Ok(Mutation::Unchanged(Unchanged::NotOptedIn));
    }
    if annotations::marked_injected(annotations) || pod.spec.as_ref().is_some_and(has_agent) {
        return Ok(Mutation::Unchanged(Unchanged::AlreadyInjected));
    }
    let req = annotations::parse(annotations)?;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(Denial::new(
            annotations::ENABLED,
            "the pod has no spec, so there is nothing to inject into; remove the annotation or add containers",
        ));
    };

    let targets = resolve_targets(spec, &req)?;
    check_volume_free(spec)?;
    check_mount_path_free(&targets)?;
    let mut warnings = Vec::new();
    let agent_uid = resolve_uid(spec, &targets, &req, cfg, &mut warnings)?;
    let (region, region_source) = resolve_region(&targets, &req, cfg)?;
    let mode = req.sidecar.unwrap_or(cfg.sidecar_mode);

    let mut ops = PatchBuilder::default();

    // 1. Target containers, at their original indices (before anything is
    //    inserted into initContainers).
    let target_env = target_env(&req);
    for t in &targets {
        let base = ["spec", t.section.field(), &t.index.to_string()];
        let existing: BTreeSet<&str> = t
            .container
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        let missing: Vec<Value> = target_env
            .iter()
            .filter(|e| !existing.contains(e.name.as_str()))
            .map(to_value)
            .collect();
        ops.extend(&base, "env", t.container.env.is_some(), missing);
        let mount = VolumeMount {
            name: VOLUME.into(),
            mount_path: DEFAULT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        };
        ops.extend(
            &base,
            "volumeMounts",
            t.container.volume_mounts.is_some(),
            vec![to_value(&mount)],
        );
    }

    // 2. The volume.
    let volume = Volume {
        name: VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(VOLUME_SIZE_LIMIT.into())),
        }),
        ..Default::default()
    };
    ops.extend(
        &["spec"],
        "volumes",
        spec.volumes.is_some(),
        vec![to_value(&volume)],
    );

    // 3. The agent.
    let (aws_env, aws_mounts) = aws_identity(spec, &targets);
    let agent = AgentParts {
        cfg,
        req: &req,
        region: &region,
        uid: agent_uid,
        aws_env,
        aws_mounts,
    };
    let init = match mode {
        SidecarMode::Native => agent.container(AGENT_CONTAINER, Run::NativeSidecar),
        SidecarMode::Classic => agent.container(AGENT_INIT_CONTAINER, Run::Once),
        SidecarMode::InitOnly => agent.container(AGENT_CONTAINER, Run::Once),
    };
    if spec.init_containers.is_some() {
        ops.add(&["spec", "initContainers", "0"], to_value(&init));
    } else {
        ops.add(
            &["spec", "initContainers"],
            Value::Array(vec![to_value(&init)]),
        );
    }
    if mode == SidecarMode::Classic {
        let sidecar = agent.container(AGENT_CONTAINER, Run::ClassicSidecar);
        ops.add(&["spec", "containers", "-"], to_value(&sidecar));
    }

    // 4. The mark.
    if pod.metadata.annotations.is_some() {
        ops.add(
            &["metadata", "annotations", annotations::STATUS],
            Value::String(annotations::STATUS_INJECTED.into()),
        );
    } else {
        ops.add(
            &["metadata", "annotations"],
            serde_json::json!({ annotations::STATUS: annotations::STATUS_INJECTED }),
        );
    }

    Ok(Mutation::Inject(Box::new(Injection {
        patch: Patch(ops.ops),
        warnings,
        mode,
        targets: targets.iter().map(|t| t.container.name.clone()).collect(),
        agent_uid,
        region,
        region_source,
    })))
}

fn resolve_targets<'a>(
    spec: &'a PodSpec,
    req: &InjectionRequest,
) -> Result<Vec<Target<'a>>, Denial> {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let apps = spec.containers.as_slice();
    let all = || {
        inits
            .iter()
            .enumerate()
            .map(|(index, container)| Target {
                section: Section::Init,
                index,
                container,
            })
            .chain(apps.iter().enumerate().map(|(index, container)| Target {
                section: Section::App,
                index,
                container,
            }))
    };
    match &req.containers {
        None => {
            let targets: Vec<Target> = all().filter(|t| t.section == Section::App).collect();
            if targets.is_empty() {
                return Err(Denial::new(
                    annotations::CONTAINERS,
                    "the pod has no app containers to give the token to; add containers, or name init containers in rds-iam/containers",
                ));
            }
            Ok(targets)
        }
        Some(names) => {
            if let Some(unknown) = names
                .iter()
                .find(|n| !inits.iter().chain(apps).any(|c| &c.name == *n))
            {
                let list = |cs: &[Container]| {
                    cs.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut have = format!("containers: {}", list(apps));
                if !inits.is_empty() {
                    have.push_str(&format!("; init containers: {}", list(inits)));
                }
                return Err(Denial::new(
                    annotations::CONTAINERS,
                    format!(
                        "no container or init container is named {unknown:?} (the pod has {have}); write a comma-separated list of those names"
                    ),
                ));
            }
            Ok(all()
                .filter(|t| names.contains(&t.container.name))
                .collect())
        }
    }
}

fn check_volume_free(spec: &PodSpec) -> Result<(), Denial> {
    if spec.volumes.iter().flatten().any(|v| v.name == VOLUME) {
        return Err(Denial::new(
            annotations::ENABLED,
            format!("the pod already has a volume named {VOLUME:?}, which the token agent needs; rename that volume"),
        ));
    }
    Ok(())
}

fn check_mount_path_free(targets: &[Target]) -> Result<(), Denial> {
    for t in targets {
        if let Some(m) = t
            .container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path.trim_end_matches('/') == DEFAULT_DIR)
        {
            return Err(Denial::new(
                annotations::CONTAINERS,
                format!(
                    "container {:?} already mounts volume {:?} at {DEFAULT_DIR}, where the token goes; move that mount, or leave the container out of rds-iam/containers",
                    t.container.name, m.name
                ),
            ));
        }
    }
    Ok(())
}

fn resolve_uid(
    spec: &PodSpec,
    targets: &[Target],
    req: &InjectionRequest,
    cfg: &AgentConfig,
    warnings: &mut Vec<String>,
) -> Result<i64, Denial> {
    let pod_uid = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut known: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    let mut unknown: Vec<&str> = Vec::new();
    for t in targets {
        let uid = t
            .container
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_uid);
        match uid {
            Some(u) => known.entry(u).or_default().push(&t.container.name),
            None => unknown.push(&t.container.name),
        }
    }
    if known.len() > 1 {
        let detail = known
            .iter()
            .map(|(uid, names)| format!("{} run as {uid}", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Denial::new(
            annotations::CONTAINERS,
            format!(
                "the target containers run as different UIDs ({detail}), but the pgpass file (mode 0600) is readable by one UID only; list only containers with the same runAsUser in rds-iam/containers, or give them the same runAsUser"
            ),
        ));
    }
    let target_uid = known.keys().next().copied();
    if let Some(u) = req.run_as_user {
        if let Some(t) = target_uid.filter(|t| *t > 0 && *t != u) {
            return Err(Denial::new(
                annotations::RUN_AS_USER,
                format!(
                    "\"{u}\" differs from the UID {t} the target containers run as, so they could not read the pgpass file; write \"{t}\" or remove the annotation"
                ),
            ));
        }
        return Ok(u);
    }
    match target_uid {
        Some(u) if u > 0 => {
            if !unknown.is_empty() {
                warnings.push(format!(
                    "rds-iam: containers {} set no runAsUser; they must run as UID {u} to read /var/run/rds-iam/pgpass",
                    unknown.join(", ")
                ));
            }
            Ok(u)
        }
        // Root can read any file: the agent keeps its default, non-root UID.
        Some(_) => Ok(cfg.default_agent_uid),
        None => {
            warnings.push(format!(
                "rds-iam: no runAsUser known for {}; the token agent runs as UID {}. Set securityContext.runAsUser or annotation rds-iam/run-as-user to your app's UID",
                unknown.join(", "),
                cfg.default_agent_uid
            ));
            Ok(cfg.default_agent_uid)
        }
    }
}

fn resolve_region(
    targets: &[Target],
    req: &InjectionRequest,
    cfg: &AgentConfig,
) -> Result<(String, RegionSource), Denial> {
    if let Some(r) = &req.region {
        return Ok((r.clone(), RegionSource::Annotation));
    }
    if let Some(r) = region_from_hostname(&req.host) {
        return Ok((r, RegionSource::Hostname));
    }
    for t in targets {
        for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            let value = t
                .container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .and_then(|e| e.value.as_deref());
            if let Some(v) = value.filter(|v| rds_iam_common::is_region_name(v)) {
                return Ok((v.to_owned(), RegionSource::ContainerEnv));
            }
        }
    }
    if let Some(r) = &cfg.default_region {
        return Ok((r.clone(), RegionSource::DefaultRegion));
    }
    Err(Denial::new(
        annotations::REGION,
        format!(
            "cannot tell the AWS region: host {:?} is not an RDS endpoint name, no target container sets AWS_REGION or AWS_DEFAULT_REGION, and the webhook has no --default-region; add e.g. rds-iam/region: \"eu-west-1\"",
            req.host
        ),
    ))
}

fn target_env(req: &InjectionRequest) -> Vec<EnvVar> {
    let mut env = vec![
        env("PGHOST", &req.host),
        env("PGPORT", &req.port.to_string()),
        env("PGUSER", &req.user),
    ];
    if let Some(db) = &req.database {
        env.push(self::env("PGDATABASE", db));
    }
    env.push(self::env("PGSSLMODE", req.sslmode.as_str()));
    env.push(self::env(
        "PGPASSFILE",
        &format!("{DEFAULT_DIR}/{PGPASS_FILE}"),
    ));
    env.push(self::env(
        "RDS_IAM_TOKEN_FILE",
        &format!("{DEFAULT_DIR}/{TOKEN_FILE}"),
    ));
    env
}

/// The AWS env and token mounts of the first target container that has any.
fn aws_identity(spec: &PodSpec, targets: &[Target]) -> (Vec<EnvVar>, Vec<VolumeMount>) {
    let volumes: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for t in targets {
        let mut seen = BTreeSet::new();
        let env: Vec<EnvVar> = t
            .container
            .env
            .iter()
            .flatten()
            .filter(|e| AWS_ENV.contains(&e.name.as_str()) && seen.insert(e.name.as_str()))
            .cloned()
            .collect();
        let mut seen_paths = BTreeSet::new();
        let mounts: Vec<VolumeMount> = t
            .container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| {
                AWS_VOLUMES.contains(&m.name.as_str())
                    && volumes.contains(m.name.as_str())
                    && m.mount_path.trim_end_matches('/') != DEFAULT_DIR
                    && seen_paths.insert(m.mount_path.as_str())
            })
            .map(|m| VolumeMount {
                read_only: Some(true),
                ..m.clone()
            })
            .collect();
        if !env.is_empty() || !mounts.is_empty() {
            return (env, mounts);
        }
    }
    (Vec::new(), Vec::new())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Native sidecar: init container with `restartPolicy: Always` and probes.
    NativeSidecar,
    /// Classic regular sidecar container, with a liveness probe.
    ClassicSidecar,
    /// `--once` init container.
    Once,
}

struct AgentParts<'a> {
    cfg: &'a AgentConfig,
    req: &'a InjectionRequest,
    region: &'a str,
    uid: i64,
    aws_env: Vec<EnvVar>,
    aws_mounts: Vec<VolumeMount>,
}

impl AgentParts<'_> {
    fn container(&self, name: &str, run: Run) -> Container {
        let req = self.req;
        let mut env = vec![
            env("RDS_IAM_HOST", &req.host),
            env("RDS_IAM_PORT", &req.port.to_string()),
            env("RDS_IAM_USER", &req.user),
            env("RDS_IAM_REGION", self.region),
            env("RDS_IAM_DIR", DEFAULT_DIR),
        ];
        if let Some(i) = &req.refresh_interval {
            env.push(self::env("RDS_IAM_REFRESH_INTERVAL", i));
        }
        env.extend(self.aws_env.iter().cloned());

        let mut mounts = vec![VolumeMount {
            name: VOLUME.into(),
            mount_path: DEFAULT_DIR.into(),
            ..Default::default()
        }];
        mounts.extend(self.aws_mounts.iter().cloned());

        let probe = |period: i32, failures: i32| Probe {
            exec: Some(ExecAction {
                command: Some(PROBE_COMMAND.iter().map(|s| s.to_string()).collect()),
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            timeout_seconds: Some(5),
            ..Default::default()
        };
        let (args, restart_policy, startup, liveness) = match run {
            // Up to 2 minutes for the first token, then checked every 30 s.
            Run::NativeSidecar => (
                vec![],
                Some("Always".to_owned()),
                Some(probe(1, 120)),
                Some(probe(30, 3)),
            ),
            Run::ClassicSidecar => (vec![], None, None, Some(probe(30, 3))),
            Run::Once => (vec!["--once".to_owned()], None, None, None),
        };

        Container {
            name: name.into(),
            image: Some(self.cfg.image.clone()),
            command: Some(vec![AGENT_BINARY.into()]),
            args: Some(args),
            env: Some(env),
            volume_mounts: Some(mounts),
            resources: Some(resources(self.cfg)),
            restart_policy,
            startup_probe: startup,
            liveness_probe: liveness,
            security_context: Some(SecurityContext {
                run_as_user: Some(self.uid),
                run_as_non_root: Some(true),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn resources(cfg: &AgentConfig) -> ResourceRequirements {
    let r = &cfg.resources;
    let map = |cpu: &Option<String>, mem: &Option<String>| {
        let m: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", mem)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    ResourceRequirements {
        requests: map(&r.cpu_request, &r.memory_request),
        limits: map(&r.cpu_limit, &r.memory_limit),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // k8s-openapi types serialize infallibly: string keys, no floats.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[derive(Default)]
struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    fn add(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    }

    /// Appends `items` to the array `base/field`, creating it when missing.
    fn extend(&mut self, base: &[&str], field: &str, exists: bool, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        let mut path: Vec<&str> = base.to_vec();
        path.push(field);
        if exists {
            path.push("-");
            for item in items {
                self.add(&path, item);
            }
        } else {
            self.add(&path, Value::Array(items));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_are_escaped() {
        let mut b = PatchBuilder::default();
        b.add(&["metadata", "annotations", "rds-iam/status"], Value::Null);
        let PatchOperation::Add(op) = &b.ops[0] else {
            panic!("not an add")
        };
        assert_eq!(op.path.as_str(), "/metadata/annotations/rds-iam~1status");
        b.add(&["a~b"], Value::Null);
        let PatchOperation::Add(op) = &b.ops[1] else {
            panic!("not an add")
        };
        assert_eq!(op.path.as_str(), "/a~0b");
    }

    #[test]
    fn missing_arrays_are_created_whole() {
        let mut b = PatchBuilder::default();
        b.extend(
            &["spec"],
            "volumes",
            false,
            vec![Value::from(1), Value::from(2)],
        );
        b.extend(&["spec"], "volumes", true, vec![Value::from(3)]);
        b.extend(&["spec"], "volumes", true, vec![]);
        let paths: Vec<String> = b
            .ops
            .iter()
            .map(|o| match o {
                PatchOperation::Add(a) => format!("{}={}", a.path, a.value),
                _ => String::new(),
            })
            .collect();
        assert_eq!(paths, ["/spec/volumes=[1,2]", "/spec/volumes/-=3"]);
    }
}
