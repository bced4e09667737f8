//! Decides what to inject into an opted-in pod, without writing any patch:
//! which containers get the token, which UID the agent runs as, which
//! databases (with their regions) it serves, which env each target gets, and
//! what the pod's owner should be warned about. [`crate::render`] turns the
//! [`Plan`] into a JSON Patch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, VolumeMount};
use rds_iam_common::endpoint::PROXY_PG_PORT;
use rds_iam_common::region::{self, RegionError};
use rds_iam_common::{
    Endpoint, Engine, Mode, SslMode, MYSQL_CNF_FILE, PGPASS_FILE, PG_SERVICE_FILE,
};

use crate::annotations::{self, CaBundle, DbRequest, Denial, InjectionRequest};
use crate::config::{AgentConfig, SidecarMode};
use crate::expand::{self, expand};
use crate::pod::{Container, PodSpec};

/// Where the agent's files are, in the agent and in the app containers.
pub const DIR: &str = rds_iam_common::DEFAULT_DIR;
/// The in-memory volume the agent writes its files into.
pub const VOLUME: &str = "rds-iam";
/// The ConfigMap volume of the RDS CA bundle, and where it is mounted.
pub const CA_VOLUME: &str = "rds-iam-ca";
pub const CA_DIR: &str = "/etc/rds-iam/ca";
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
/// The most containers a pod may give the token to. Each gets its own env
/// and mounts in the patch, so this bounds the patch (and the memory to
/// build it); no real pod comes near.
pub const MAX_TARGETS: usize = 256;
/// The AWS variables that name a token file in one of [`AWS_VOLUMES`].
const TOKEN_FILE_ENV: [&str; 2] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];
/// Volumes the EKS pod identity webhook mounts; copied into the agent,
/// once each.
pub const AWS_VOLUMES: [&str; 2] = ["aws-iam-token", "eks-pod-identity-token"];

/// A pod spec's container list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Init,
    App,
}

impl Section {
    pub fn field(self) -> &'static str {
        match self {
            Self::Init => "initContainers",
            Self::App => "containers",
        }
    }
}

/// A container that gets the token.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetPlan {
    pub section: Section,
    pub index: usize,
    pub name: String,
    /// The variables to add: those the container does not set already.
    pub env: Vec<EnvVar>,
    /// Whether the container has `env` / `volumeMounts` arrays to append to.
    pub has_env: bool,
    pub has_mounts: bool,
}

/// Everything [`crate::render`] needs; nothing else is read from the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub mode: SidecarMode,
    pub agent_uid: i64,
    pub databases: Vec<Endpoint>,
    pub interval: Option<Duration>,
    pub targets: Vec<TargetPlan>,
    /// The pod's AWS identity for the agent: env (as the app sees it) and the
    /// token volumes' mounts (read-only).
    pub aws_env: Vec<EnvVar>,
    pub aws_mounts: Vec<VolumeMount>,
    /// Admission warnings for the client.
    pub warnings: Vec<String>,
    /// The RDS CA bundle, mounted at [`CA_DIR`] in the agent and the targets.
    pub ca: Option<CaBundle>,
    /// Proxy mode in a native sidecar: the app has exited at SIGTERM, so the
    /// agent stops at once (the agent's default is 25 s, for a classic one).
    pub max_sigterm_delay: Option<Duration>,
    pub image: String,
    pub resources: crate::config::AgentResources,
    /// Which of the pod's arrays and maps exist already.
    pub pod_has_volumes: bool,
    pub pod_has_init_containers: bool,
    pub pod_has_annotations: bool,
}

struct Target<'a> {
    section: Section,
    index: usize,
    container: &'a Container,
}

/// Plans the injection for an opted-in, not yet injected pod.
pub fn plan(
    spec: &PodSpec,
    has_annotations: bool,
    req: &InjectionRequest,
    cfg: &AgentConfig,
) -> Result<Plan, Denial> {
    let targets = resolve_targets(spec, req)?;
    check_volume_free(spec, VOLUME)?;
    check_mount_path_free(&targets, DIR)?;
    if req.ca.is_some() {
        check_volume_free(spec, CA_VOLUME)?;
        check_mount_path_free(&targets, CA_DIR)?;
    }
    let mut warnings = Vec::new();
    let agent_uid = resolve_uid(spec, &targets, req, cfg, &mut warnings)?;
    let envs = resolve_envs(&targets, &mut warnings);
    let databases = resolve_databases(&envs, req, cfg, &mut warnings)?;
    let mode = req.sidecar.unwrap_or(cfg.sidecar_mode);
    check_proxies(spec, &targets, req, &databases, mode)?;
    let (aws_env, aws_mounts) = aws_identity(spec, &targets, &envs, &mut warnings);
    let ca_file = req.ca.as_ref().map(|c| format!("{CA_DIR}/{}", c.key));
    let env = target_env(&databases, ca_file.as_deref());
    let proxied = databases.iter().any(|d| d.access.mode == Mode::Proxy);
    let targets = targets
        .iter()
        .map(|t| {
            let existing: BTreeSet<&str> = t
                .container
                .env
                .iter()
                .flatten()
                .map(|e| e.name.as_str())
                .collect();
            TargetPlan {
                section: t.section,
                index: t.index,
                name: t.container.name.clone(),
                env: env
                    .iter()
                    .filter(|e| !existing.contains(e.name.as_str()))
                    .cloned()
                    .collect(),
                has_env: t.container.env.is_some(),
                has_mounts: t.container.volume_mounts.is_some(),
            }
        })
        .collect();
    Ok(Plan {
        mode,
        agent_uid,
        databases,
        interval: req.refresh_interval,
        targets,
        aws_env,
        aws_mounts,
        warnings,
        ca: req.ca.clone(),
        max_sigterm_delay: (proxied && mode == SidecarMode::Native).then_some(Duration::ZERO),
        image: cfg.image.clone(),
        resources: cfg.resources.clone(),
        pod_has_volumes: spec.volumes.is_some(),
        pod_has_init_containers: spec.init_containers.is_some(),
        pod_has_annotations: has_annotations,
    })
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
    let targets: Vec<Target> = match &req.containers {
        None => {
            let targets: Vec<Target> = all().filter(|t| t.section == Section::App).collect();
            if targets.is_empty() {
                return Err(Denial::new(
                    annotations::CONTAINERS,
                    "the pod has no app containers to give the token to; add containers, or name init containers in rds-iam/containers",
                ));
            }
            targets
        }
        Some(names) => {
            let present: BTreeSet<&str> =
                inits.iter().chain(apps).map(|c| c.name.as_str()).collect();
            if let Some(unknown) = names.iter().find(|n| !present.contains(n.as_str())) {
                let mut have = format!("containers: {}", list(apps));
                if !inits.is_empty() {
                    have.push_str(&format!("; init containers: {}", list(inits)));
                }
                return Err(Denial::new(
                    annotations::CONTAINERS,
                    format!(
                        "no container or init container is named {} (the pod has {have}); write a comma-separated list of those names",
                        rds_iam_common::field::quote(unknown)
                    ),
                ));
            }
            let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            all()
                .filter(|t| wanted.contains(t.container.name.as_str()))
                .collect()
        }
    };
    if targets.len() > MAX_TARGETS {
        return Err(Denial::new(
            annotations::CONTAINERS,
            format!(
                "the pod has {} target containers (every app container, unless rds-iam/containers names them), and the webhook serves at most {MAX_TARGETS}; name only the containers that connect to a database in rds-iam/containers",
                targets.len()
            ),
        ));
    }
    Ok(targets)
}

/// The names of `cs`, the first 16 of them if there are more.
fn list(cs: &[Container]) -> String {
    const SHOWN: usize = 16;
    let mut names: Vec<&str> = cs.iter().take(SHOWN).map(|c| c.name.as_str()).collect();
    let more = format!("... ({} in all)", cs.len());
    if cs.len() > SHOWN {
        names.push(&more);
    }
    names.join(", ")
}

fn check_volume_free(spec: &PodSpec, volume: &str) -> Result<(), Denial> {
    if spec.volumes.iter().flatten().any(|v| v.name == volume) {
        return Err(Denial::new(
            annotations::ENABLED,
            format!("the pod already has a volume named {volume:?}, which the token agent needs; rename that volume"),
        ));
    }
    Ok(())
}

fn check_mount_path_free(targets: &[Target], path: &str) -> Result<(), Denial> {
    for t in targets {
        if let Some(m) = t
            .container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path.trim_end_matches('/') == path)
        {
            return Err(Denial::new(
                annotations::CONTAINERS,
                format!(
                    "container {:?} already mounts volume {:?} at {path}, where the agent's files go; move that mount, or leave the container out of rds-iam/containers",
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
                    "rds-iam: containers {} set no runAsUser; they must run as UID {u} to read {DIR}/{PGPASS_FILE}",
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

/// A target container's env as the kubelet resolves it at start.
struct ContainerEnv<'a> {
    container: &'a str,
    /// The values defined with `value`, expanded in order. Names defined by
    /// `valueFrom`, or whose expansion overran the budget, are absent
    /// (unknowable).
    known: BTreeMap<String, String>,
    /// The AWS variables as the agent must get them, in the order of their
    /// first definition (a later definition wins, as in the container), each
    /// with the warning it needs, if any.
    aws: Vec<(EnvVar, Option<String>)>,
}

/// Resolves each target's env once, with one expansion budget for the
/// whole review; warns once if it is overrun.
fn resolve_envs<'a>(targets: &[Target<'a>], warnings: &mut Vec<String>) -> Vec<ContainerEnv<'a>> {
    let mut budget = expand::Budget::new(expand::REVIEW_BUDGET);
    targets
        .iter()
        .map(|t| resolve_env(t.container, &mut budget, warnings))
        .collect()
}

fn resolve_env<'a>(
    c: &'a Container,
    budget: &mut expand::Budget,
    warnings: &mut Vec<String>,
) -> ContainerEnv<'a> {
    let mut known = BTreeMap::new();
    // At most one entry per name in AWS_ENV, in first-definition order.
    let mut aws: Vec<(&str, (EnvVar, Option<String>))> = Vec::new();
    for e in c.env.iter().flatten() {
        let name = e.name.as_str();
        // Only the AWS variables are copied (and warned about).
        let is_aws = AWS_ENV.contains(&name);
        let copy = match (&e.value, &e.value_from) {
            // The agent resolves `valueFrom` the same way.
            (_, Some(_)) => {
                known.remove(name);
                is_aws.then(|| (EnvVar::from(e), None))
            }
            (v, None) => {
                let raw = v.as_deref().unwrap_or("");
                let first_overrun = !budget.overrun();
                match expand(raw, &known, budget) {
                    Ok(x) => {
                        let copy = is_aws.then(|| {
                            let note = (!x.unresolved.is_empty()).then(|| format!(
                                "rds-iam: {name} in container {:?} refers to $({}), which the webhook cannot resolve (valueFrom, envFrom, undefined, or too large to expand); the token agent gets it unexpanded",
                                c.name,
                                x.unresolved.join("), $(")
                            ));
                            (var(name, &x.value), note)
                        });
                        known.insert(name.to_owned(), x.value);
                        copy
                    }
                    Err(over) => {
                        known.remove(name);
                        if first_overrun {
                            warnings.push(format!(
                                "rds-iam: {name} in container {:?}: {over}; the webhook treats it, and every later variable that refers to another, as unknown (a region set that way is not seen; AWS variables reach the token agent unexpanded). Define them without nested $(VAR) references",
                                c.name
                            ));
                        }
                        is_aws.then(|| {
                            let note = format!(
                                "rds-iam: {name} in container {:?} is not expanded ({over}); the token agent gets it as written",
                                c.name
                            );
                            (var(name, raw), Some(note))
                        })
                    }
                }
            }
        };
        if let Some(copy) = copy {
            // A later definition wins, as in the container.
            match aws.iter_mut().find(|(n, _)| *n == name) {
                Some((_, slot)) => *slot = copy,
                None => aws.push((name, copy)),
            }
        }
    }
    ContainerEnv {
        container: c.name.as_str(),
        known,
        aws: aws.into_iter().map(|(_, copy)| copy).collect(),
    }
}

fn resolve_databases(
    envs: &[ContainerEnv],
    req: &InjectionRequest,
    cfg: &AgentConfig,
    warnings: &mut Vec<String>,
) -> Result<Vec<Endpoint>, Denial> {
    // The first target that sets a region variable decides, as the app sees it.
    let (env_owner, region_env) = envs
        .iter()
        .find(|e| {
            region::REGION_ENV
                .iter()
                .any(|n| e.known.get(*n).is_some_and(|v| !v.trim().is_empty()))
        })
        .map(|e| (e.container, Some(&e.known)))
        .unwrap_or(("", None));
    let env = |name: &'static str| region_env.and_then(|k| k.get(name)).cloned();
    let mut out: Vec<Endpoint> = Vec::with_capacity(req.databases.len());
    for db in &req.databases {
        let DbRequest {
            name,
            host,
            port,
            user,
            database,
            region: explicit,
            sslmode,
            engine,
            access,
        } = db;
        let engine = *engine;
        let resolved = region::resolve(
            explicit.as_deref(),
            host,
            env,
            cfg.default_region.as_deref(),
        )
        .map_err(|e| region_denial(db, &e, env_owner))?;
        if let Some(host_region) = &resolved.contradicts_host {
            warnings.push(format!(
                "rds-iam: {} is {:?} but host {host:?} is in {host_region}; tokens are signed for {}, so if the database is in {host_region} every login fails: remove {} or fix it",
                db.key("region"),
                resolved.region,
                resolved.region,
                db.key("region"),
            ));
        }
        let endpoint = Endpoint {
            name: name.clone(),
            engine,
            host: host.clone(),
            port: port.unwrap_or(engine.default_port()),
            user: user.clone(),
            database: database.clone(),
            region: resolved.region,
            sslmode: *sslmode,
            access: *access,
        };
        if let Some(first) = out
            .iter()
            .find(|o| o.token_key() == endpoint.token_key() && o.region != endpoint.region)
        {
            let shared = if first.engine == Engine::Postgres && endpoint.engine == Engine::Postgres
            {
                "one pgpass line (libpq takes the first line that matches host, port and user)"
            } else {
                "one token (the agent signs one per host, port and user)"
            };
            return Err(Denial::new(
                db.key("region"),
                format!(
                    "database \"{}\" is signed for region {} but database \"{}\", with the same host, port and user, for {}; they share {shared}, so both must use one region: set the same region for both",
                    endpoint.name, endpoint.region, first.name, first.region
                ),
            ));
        }
        out.push(endpoint);
    }
    Ok(out)
}

fn region_denial(db: &DbRequest, e: &RegionError, env_owner: &str) -> Denial {
    let key = db.key("region");
    let message = match e {
        RegionError::BadExplicit(_) => format!("{e}; write e.g. \"eu-west-1\""),
        RegionError::BadEnv { .. } => format!(
            "container {env_owner:?}: {e}; fix the variable, or set {key}: e.g. \"eu-west-1\""
        ),
        RegionError::Unknown(host) => format!(
            "cannot tell the AWS region: host {host:?} is not an RDS endpoint name, no target container sets AWS_REGION or AWS_DEFAULT_REGION, and the webhook has no --default-region; add e.g. {key}: \"eu-west-1\""
        ),
    };
    Denial::new(key, message)
}

/// The env every target gets (before leaving out what a container sets).
/// The default database keeps the variables its clients read by
/// themselves: `PG*` for PostgreSQL, `MYSQL_*` for MySQL; named ones get
/// `RDS_IAM_<NAME>_*`.
fn target_env(databases: &[Endpoint], ca_file: Option<&str>) -> Vec<EnvVar> {
    let mut env = Vec::new();
    let file = |name: &str| format!("{DIR}/{name}");
    let default = databases.iter().find(|d| d.name.is_default());
    if let Some(d) = default.filter(|d| d.engine == Engine::Postgres) {
        match d.access.mode {
            Mode::Files => {
                env.push(var("PGHOST", &d.host));
                env.push(var("PGPORT", &d.port.to_string()));
            }
            Mode::Proxy => {
                env.push(var("PGHOST", &d.socket_dir(DIR)));
                env.push(var("PGPORT", &PROXY_PG_PORT.to_string()));
            }
        }
        env.push(var("PGUSER", &d.user));
        if let Some(db) = &d.database {
            env.push(var("PGDATABASE", db));
        }
        match d.access.mode {
            // The local hop is a socket: libpq ignores sslmode there, and
            // node-postgres fails on a socket with require or prefer.
            Mode::Proxy => env.push(var("PGSSLMODE", "disable")),
            Mode::Files => {
                env.push(var("PGSSLMODE", d.sslmode.as_str()));
                if let (Some(ca), SslMode::VerifyCa | SslMode::VerifyFull) = (ca_file, d.sslmode) {
                    env.push(var("PGSSLROOTCERT", ca));
                }
            }
        }
    }
    if let Some(d) = default.filter(|d| d.engine == Engine::Mysql) {
        match d.access.mode {
            Mode::Files => {
                env.push(var("MYSQL_HOST", &d.host));
                env.push(var("MYSQL_TCP_PORT", &d.port.to_string()));
            }
            Mode::Proxy => env.push(var("MYSQL_UNIX_PORT", &d.socket_path(DIR))),
        }
    }
    let any = |engine: Engine| databases.iter().any(|d| d.engine == engine);
    if any(Engine::Postgres) {
        env.push(var("PGPASSFILE", &file(PGPASS_FILE)));
    }
    if let Some(d) = default {
        env.push(var("RDS_IAM_TOKEN_FILE", &file(&d.name.token_file())));
    }
    if any(Engine::Postgres) {
        env.push(var("PGSERVICEFILE", &file(PG_SERVICE_FILE)));
    }
    if any(Engine::Mysql) {
        env.push(var("RDS_IAM_MYSQL_CNF", &file(MYSQL_CNF_FILE)));
    }
    // libmysqlclient sends the token only with the cleartext plugin; this
    // turns it on for every server the container talks to.
    if databases
        .iter()
        .any(|d| d.engine == Engine::Mysql && d.access.mode == Mode::Files)
    {
        env.push(var("LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN", "Y"));
    }
    for d in databases.iter().filter(|d| !d.name.is_default()) {
        let key = d.name.env_key();
        env.push(var(
            &format!("RDS_IAM_{key}_TOKEN_FILE"),
            &file(&d.name.token_file()),
        ));
        match (d.engine, d.access.mode) {
            (Engine::Postgres, _) => env.push(var(
                &format!("RDS_IAM_{key}_URL"),
                &d.client_url(DIR, ca_file),
            )),
            (Engine::Mysql, Mode::Proxy) => env.push(var(
                &format!("RDS_IAM_{key}_MYSQL_UNIX_PORT"),
                &d.socket_path(DIR),
            )),
            (Engine::Mysql, Mode::Files) => {}
        }
    }
    env
}

/// Proxy mode needs an agent that keeps running, a CA bundle for the
/// verify modes, and ports the pod does not use already.
fn check_proxies(
    spec: &PodSpec,
    targets: &[Target<'_>],
    req: &InjectionRequest,
    databases: &[Endpoint],
    mode: SidecarMode,
) -> Result<(), Denial> {
    let key = |e: &Endpoint, field: &str| annotations::db_key(&e.name, field);
    for e in databases {
        let proxy = e.access.mode == Mode::Proxy;
        if proxy && mode == SidecarMode::InitOnly {
            let from = if req.sidecar.is_some() {
                "rds-iam/sidecar is \"init-only\""
            } else {
                "the webhook's --sidecar-mode is init-only"
            };
            return Err(Denial::new(
                key(e, "mode"),
                format!("is \"proxy\" but {from}: the agent would exit after writing the files and nothing would serve the proxy's socket; set rds-iam/sidecar: \"native\" (or \"classic\"), or use mode \"files\""),
            ));
        }
        let init_target = targets.iter().find(|t| t.section == Section::Init);
        if let (true, SidecarMode::Classic, Some(t)) = (proxy, mode, init_target) {
            return Err(Denial::new(
                key(e, "mode"),
                format!("is \"proxy\" but init container {:?} is a target, and a classic sidecar only starts after every init container, so nothing would serve its socket; set rds-iam/sidecar: \"native\", or leave {:?} out of rds-iam/containers", t.container.name, t.container.name),
            ));
        }
        let verify = e.sslmode != SslMode::Require;
        if verify && req.ca.is_none() && (proxy || e.engine == Engine::Mysql) {
            let who = if proxy {
                "the agent's proxy"
            } else {
                "the MySQL client"
            };
            return Err(Denial::new(
                annotations::CA_CONFIGMAP,
                format!(
                    "is missing: database \"{}\" uses sslmode {}, so {who} checks the server certificate against the RDS CA bundle; add {}: the name of a ConfigMap in this namespace holding the bundle (key {} or set rds-iam/ca-key), or use sslmode \"require\"",
                    e.name,
                    e.sslmode,
                    annotations::CA_CONFIGMAP,
                    annotations::DEFAULT_CA_KEY
                ),
            ));
        }
        if let Some(port) = e.access.proxy_port {
            let taken = spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .find(|c| {
                    c.ports
                        .iter()
                        .flatten()
                        .any(|p| p.container_port == i32::from(port))
                });
            if let Some(c) = taken {
                return Err(Denial::new(
                    key(e, "proxy-port"),
                    format!("\"{port}\" is a containerPort of container {:?}, and the pod's containers share one network; pick a free port", c.name),
                ));
            }
        }
    }
    Ok(())
}

/// An env variable whose value the kubelet passes through unexpanded.
pub fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(expand::escape(value)),
        value_from: None,
    }
}

/// The AWS env and token mounts of the first target container that has any.
/// Values are copied as the app sees them after expansion (then escaped), so
/// the agent gets the same identity; `valueFrom` entries are copied as they
/// are, since the agent resolves them the same way.
fn aws_identity(
    spec: &PodSpec,
    targets: &[Target],
    envs: &[ContainerEnv],
    warnings: &mut Vec<String>,
) -> (Vec<EnvVar>, Vec<VolumeMount>) {
    let volumes: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for (t, resolved) in targets.iter().zip(envs) {
        let env: Vec<EnvVar> = resolved.aws.iter().map(|(e, _)| e.clone()).collect();
        // One mount per token volume: the one holding a token file the env
        // names, else the first.
        let token_files: Vec<&str> = TOKEN_FILE_ENV
            .iter()
            .filter_map(|n| resolved.known.get(*n).map(String::as_str))
            .collect();
        let holds_token = |m: &VolumeMount| {
            let dir = m.mount_path.trim_end_matches('/');
            token_files
                .iter()
                .any(|f| f.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
        };
        let candidates: Vec<&VolumeMount> = t
            .container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| {
                AWS_VOLUMES.contains(&m.name.as_str())
                    && volumes.contains(m.name.as_str())
                    && m.mount_path.trim_end_matches('/') != DIR
            })
            .collect();
        let mut seen = BTreeSet::new();
        let mounts: Vec<VolumeMount> = candidates
            .iter()
            .filter(|m| seen.insert(m.name.as_str()))
            .map(|first| {
                let m = candidates
                    .iter()
                    .find(|m| m.name == first.name && holds_token(m))
                    .unwrap_or(first);
                VolumeMount {
                    read_only: Some(true),
                    ..(*m).clone()
                }
            })
            .collect();
        if !env.is_empty() || !mounts.is_empty() {
            warnings.extend(resolved.aws.iter().filter_map(|(_, note)| note.clone()));
            return (env, mounts);
        }
    }
    (Vec::new(), Vec::new())
}
