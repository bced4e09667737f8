//! Turns a [`Plan`] into the JSON Patch the API server applies. Decides
//! nothing: every choice was made by [`crate::plan`].

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, ExecAction, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rds_iam_common::agent_args;
use rds_iam_common::AGENT_BINARY;
use serde_json::Value;

use crate::annotations;
use crate::config::{AgentResources, SidecarMode};
use crate::plan::{var, Plan, CA_DIR, CA_VOLUME, DIR, VOLUME};

/// The long-running agent (native or classic sidecar, and the init-only container).
pub const AGENT_CONTAINER: &str = "rds-iam-tokenagent";
/// The `--once` init container of classic mode.
pub const AGENT_INIT_CONTAINER: &str = "rds-iam-tokenagent-init";
pub const VOLUME_SIZE_LIMIT: &str = "1Mi";
/// The probe the agent answers: every database's files present, mode 0600,
/// token good for 2 minutes.
pub const PROBE_COMMAND: [&str; 6] = [AGENT_BINARY, "probe", "--dir", DIR, "--min-life", "2m"];

/// The patch for `plan`.
pub fn render(plan: &Plan) -> Patch {
    let mut ops = PatchBuilder::default();

    // 1. Target containers, at their original indices (before anything is
    //    inserted into initContainers).
    for t in &plan.targets {
        let base = ["spec", t.section.field(), &t.index.to_string()];
        ops.extend(
            &base,
            "env",
            t.has_env,
            t.env.iter().map(to_value).collect(),
        );
        let mount = VolumeMount {
            name: VOLUME.into(),
            mount_path: DIR.into(),
            read_only: Some(true),
            ..Default::default()
        };
        let mut mounts = vec![to_value(&mount)];
        if plan.ca.is_some() {
            mounts.push(to_value(&ca_mount()));
        }
        ops.extend(&base, "volumeMounts", t.has_mounts, mounts);
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
    let mut volumes = vec![to_value(&volume)];
    if let Some(ca) = &plan.ca {
        volumes.push(to_value(&Volume {
            name: CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ca.configmap.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    ops.extend(&["spec"], "volumes", plan.pod_has_volumes, volumes);

    // 3. The agent.
    let init = match plan.mode {
        SidecarMode::Native => agent(plan, AGENT_CONTAINER, Run::NativeSidecar),
        SidecarMode::Classic => agent(plan, AGENT_INIT_CONTAINER, Run::Once),
        SidecarMode::InitOnly => agent(plan, AGENT_CONTAINER, Run::Once),
    };
    if plan.pod_has_init_containers {
        ops.add(&["spec", "initContainers", "0"], to_value(&init));
    } else {
        ops.add(
            &["spec", "initContainers"],
            Value::Array(vec![to_value(&init)]),
        );
    }
    if plan.mode == SidecarMode::Classic {
        let sidecar = agent(plan, AGENT_CONTAINER, Run::ClassicSidecar);
        ops.add(&["spec", "containers", "-"], to_value(&sidecar));
    }

    // 4. The mark.
    if plan.pod_has_annotations {
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
    Patch(ops.ops)
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

/// The agent container. Its env is built from the shared contract
/// ([`agent_args::agent_env`]), which the agent parses back.
fn agent(plan: &Plan, name: &str, run: Run) -> Container {
    let ca_file = plan.ca.as_ref().map(|c| format!("{CA_DIR}/{}", c.key));
    let mut env: Vec<_> = agent_args::AgentEnv {
        databases: &plan.databases,
        dir: DIR,
        interval: plan.interval,
        ca_file: ca_file.as_deref(),
        max_sigterm_delay: plan.max_sigterm_delay,
    }
    .render()
    .into_iter()
    .map(|(k, v)| var(k, &v))
    .collect();
    env.extend(plan.aws_env.iter().cloned());

    let mut mounts = vec![VolumeMount {
        name: VOLUME.into(),
        mount_path: DIR.into(),
        ..Default::default()
    }];
    if plan.ca.is_some() {
        mounts.push(ca_mount());
    }
    mounts.extend(plan.aws_mounts.iter().cloned());

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
        Run::Once => (
            vec![format!("--{}", agent_args::ONCE.long)],
            None,
            None,
            None,
        ),
    };

    Container {
        name: name.into(),
        image: Some(plan.image.clone()),
        command: Some(vec![AGENT_BINARY.into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: Some(resources(&plan.resources)),
        restart_policy,
        startup_probe: startup,
        liveness_probe: liveness,
        security_context: Some(SecurityContext {
            run_as_user: Some(plan.agent_uid),
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

/// The RDS CA bundle, read-only.
fn ca_mount() -> VolumeMount {
    VolumeMount {
        name: CA_VOLUME.into(),
        mount_path: CA_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

fn resources(r: &AgentResources) -> ResourceRequirements {
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
