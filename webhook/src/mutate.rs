//! What to do with a pod on CREATE: leave it, deny it, or inject the agent.
//!
//! Pure: a `Pod` and the agent settings in, a patch (or a reason to leave the
//! pod alone, or a denial) out. [`decide`] reads the annotations
//! ([`crate::annotations`]) and plans ([`crate::plan`]); [`mutate`] also
//! renders the patch ([`crate::render`]). The admission handler and `inject`
//! both call [`mutate`], so they always agree.

use std::collections::BTreeMap;

use crate::pod::{Pod, PodSpec};
use json_patch::Patch;
use rds_iam_common::AGENT_BINARY;

use crate::annotations::{self, Denial};
use crate::config::{AgentConfig, SidecarMode};
use crate::plan::{self, Plan};
use crate::render::{self, AGENT_CONTAINER, AGENT_INIT_CONTAINER};

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

/// What to do with a pod, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Unchanged(Unchanged),
    Inject(Box<Plan>),
}

/// A successful injection.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub patch: Patch,
    pub plan: Plan,
}

impl Injection {
    /// One line for logs: mode, targets, UID and each database's region.
    pub fn summary(&self) -> String {
        let p = &self.plan;
        let targets: Vec<&str> = p.targets.iter().map(|t| t.name.as_str()).collect();
        let dbs: Vec<String> = p
            .databases
            .iter()
            .map(|d| format!("{}@{}", d.name, d.region))
            .collect();
        format!(
            "mode {}, targets {}, uid {}, databases {}",
            p.mode,
            targets.join(","),
            p.agent_uid,
            dbs.join(",")
        )
    }

    pub fn mode(&self) -> SidecarMode {
        self.plan.mode
    }

    pub fn warnings(&self) -> &[String] {
        &self.plan.warnings
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    Unchanged(Unchanged),
    Inject(Box<Injection>),
}

/// True when the pod already runs the agent under any of its names.
pub fn has_agent(spec: &PodSpec) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| is_agent(&c.name, c.command.as_deref()))
}

/// True for a container named as the agent or running its binary.
pub fn is_agent(name: &str, command: Option<&[String]>) -> bool {
    name == AGENT_CONTAINER
        || name == AGENT_INIT_CONTAINER
        || command.and_then(|c| c.first()).map(String::as_str) == Some(AGENT_BINARY)
}

/// Decides what to do with a pod on CREATE.
pub fn decide(pod: &Pod, cfg: &AgentConfig) -> Result<Decision, Denial> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if !annotations::opted_in(annotations) {
        return Ok(Decision::Unchanged(Unchanged::NotOptedIn));
    }
    if annotations::marked_injected(annotations) || pod.spec.as_ref().is_some_and(has_agent) {
        return Ok(Decision::Unchanged(Unchanged::AlreadyInjected));
    }
    let req = annotations::parse(annotations)?;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(Denial::new(
            annotations::ENABLED,
            "the pod has no spec, so there is nothing to inject into; remove the annotation or add containers",
        ));
    };
    let plan = plan::plan(spec, pod.metadata.annotations.is_some(), &req, cfg)?;
    Ok(Decision::Inject(Box::new(plan)))
}

/// Decides and renders.
pub fn mutate(pod: &Pod, cfg: &AgentConfig) -> Result<Mutation, Denial> {
    Ok(match decide(pod, cfg)? {
        Decision::Unchanged(why) => Mutation::Unchanged(why),
        Decision::Inject(plan) => Mutation::Inject(Box::new(Injection {
            patch: render::render(&plan),
            plan: *plan,
        })),
    })
}
