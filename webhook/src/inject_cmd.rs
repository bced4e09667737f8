//! `rds-iam-webhook inject`: injects the agent into the pod templates of
//! multi-document YAML, with the same [`mutate`] as `POST /mutate`.

use crate::pod::Pod;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::{Mapping, Value as Yaml};

use crate::annotations;
use crate::config::AgentConfig;
use crate::mutate::{mutate, Mutation, Unchanged};

/// What `inject` produced.
#[derive(Debug, Default)]
pub struct InjectReport {
    /// The documents, injected where asked, as multi-document YAML.
    pub output: String,
    /// One line per refused workload; when not empty the output must not be used.
    pub denials: Vec<String>,
    /// Warnings and hints for stderr.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {doc}: not valid YAML: {source}")]
    Yaml {
        doc: usize,
        source: serde_yaml::Error,
    },
    #[error(
        "document {doc} ({what}): the pod template cannot be read as a Kubernetes pod: {reason}"
    )]
    BadPod {
        doc: usize,
        what: String,
        reason: String,
    },
    #[error("document {doc} ({what}): internal error applying the patch: {reason}")]
    Patch {
        doc: usize,
        what: String,
        reason: String,
    },
}

/// Where the pod template of a kind lives.
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects every document of `input`.
pub fn inject_yaml(input: &str, cfg: &AgentConfig) -> Result<InjectReport, InjectError> {
    let mut report = InjectReport::default();
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let doc = i + 1;
        let mut value =
            Yaml::deserialize(de).map_err(|source| InjectError::Yaml { doc, source })?;
        if value.is_null() {
            continue;
        }
        process(&mut value, doc, cfg, &mut report)?;
        docs.push(value);
    }
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let text = serde_yaml::to_string(doc)
            .map_err(|source| InjectError::Yaml { doc: i + 1, source })?;
        out.push_str(&text);
    }
    report.output = out;
    Ok(report)
}

fn str_at<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn process(
    value: &mut Yaml,
    doc: usize,
    cfg: &AgentConfig,
    report: &mut InjectReport,
) -> Result<(), InjectError> {
    let api_version = str_at(value, &["apiVersion"]).unwrap_or("").to_owned();
    let kind = str_at(value, &["kind"]).unwrap_or("").to_owned();
    let name = str_at(value, &["metadata", "name"])
        .or_else(|| str_at(value, &["metadata", "generateName"]))
        .unwrap_or("(unnamed)")
        .to_owned();
    let what = format!("{kind}/{name}");

    if api_version == "v1" && kind == "List" {
        if let Some(Yaml::Sequence(items)) = value.get_mut("items") {
            for item in items {
                process(item, doc, cfg, report)?;
            }
        }
        return Ok(());
    }
    let Some(path) = template_path(&api_version, &kind) else {
        return Ok(());
    };
    let workload_opted_in = path.is_empty()
        || value
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(annotations::ENABLED))
            .is_some();
    let Some(template) = path.iter().try_fold(&mut *value, |v, k| v.get_mut(*k)) else {
        return Ok(());
    };

    // The template as a Pod, in JSON, which json-patch works on.
    let template_json: Json =
        serde_json::to_value(&*template).map_err(|e| InjectError::BadPod {
            doc,
            what: what.clone(),
            reason: e.to_string(),
        })?;
    let mut pod_json = if path.is_empty() {
        template_json
    } else {
        let mut m = serde_json::Map::new();
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Pod".into());
        for key in ["metadata", "spec"] {
            if let Some(v) = template_json.get(key) {
                m.insert(key.into(), v.clone());
            }
        }
        Json::Object(m)
    };
    let pod: Pod = serde_json::from_value(pod_json.clone()).map_err(|e| InjectError::BadPod {
        doc,
        what: what.clone(),
        reason: e.to_string(),
    })?;

    match mutate(&pod, cfg) {
        Ok(Mutation::Unchanged(Unchanged::NotOptedIn)) => {
            if !path.is_empty() && workload_opted_in {
                report.notes.push(format!(
                    "{what}: rds-iam annotations are on the {kind}'s metadata, which is ignored; move them to {}.metadata.annotations",
                    path.join(".")
                ));
            }
        }
        Ok(Mutation::Unchanged(Unchanged::AlreadyInjected)) => {
            report
                .notes
                .push(format!("{what}: already injected, left unchanged"));
        }
        Ok(Mutation::Inject(injection)) => {
            json_patch::patch(&mut pod_json, &injection.patch.0).map_err(|e| {
                InjectError::Patch {
                    doc,
                    what: what.clone(),
                    reason: e.to_string(),
                }
            })?;
            for w in injection.warnings() {
                report.notes.push(format!("{what}: warning: {w}"));
            }
            let patched: Yaml =
                serde_yaml::to_value(&pod_json).map_err(|e| InjectError::Patch {
                    doc,
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
            if path.is_empty() {
                *template = reorder(template, patched);
            } else if let (Yaml::Mapping(t), Yaml::Mapping(mut p)) = (&mut *template, patched) {
                for key in ["metadata", "spec"] {
                    let k = Yaml::String(key.into());
                    if let Some(new) = p.remove(&k) {
                        let merged = match t.get(&k) {
                            Some(old) => reorder(old, new),
                            None => new,
                        };
                        t.insert(k, merged);
                    }
                }
            }
        }
        Err(denial) => report.denials.push(format!("{what}: {denial}")),
    }
    Ok(())
}

/// Returns `new` with its mapping keys in the order of `original` (so the
/// output diffs cleanly against the input); new keys come after, and new
/// objects follow [`PREFERRED_ORDER`]. Sequence items are matched by `name`.
fn reorder(original: &Yaml, new: Yaml) -> Yaml {
    match (original, new) {
        (Yaml::Mapping(o), Yaml::Mapping(mut n)) => {
            let mut out = Mapping::new();
            for (k, ov) in o {
                if let Some(nv) = n.remove(k) {
                    out.insert(k.clone(), reorder(ov, nv));
                }
            }
            for (k, v) in n {
                out.insert(k, fresh(v));
            }
            Yaml::Mapping(out)
        }
        (Yaml::Sequence(o), Yaml::Sequence(n)) => Yaml::Sequence(
            n.into_iter()
                .map(|item| {
                    let name = item.get("name").cloned();
                    match o
                        .iter()
                        .find(|old| name.is_some() && old.get("name") == name.as_ref())
                    {
                        Some(old) => reorder(old, item),
                        None => fresh(item),
                    }
                })
                .collect(),
        ),
        (_, n) => fresh(n),
    }
}

/// Keys of new objects (the agent container) in the order people write them.
const PREFERRED_ORDER: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "env",
    "volumeMounts",
    "resources",
    "restartPolicy",
    "securityContext",
    "startupProbe",
    "livenessProbe",
];

/// A value the input did not have: keys in [`PREFERRED_ORDER`], then the rest.
fn fresh(v: Yaml) -> Yaml {
    match v {
        Yaml::Mapping(m) => {
            let rank = |k: &Yaml| {
                k.as_str()
                    .and_then(|k| PREFERRED_ORDER.iter().position(|p| *p == k))
                    .unwrap_or(PREFERRED_ORDER.len())
            };
            let mut entries: Vec<(Yaml, Yaml)> =
                m.into_iter().map(|(k, v)| (k, fresh(v))).collect();
            // Stable: keys of equal rank keep their order.
            entries.sort_by_key(|(k, _)| rank(k));
            Yaml::Mapping(entries.into_iter().collect())
        }
        Yaml::Sequence(s) => Yaml::Sequence(s.into_iter().map(fresh).collect()),
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn template_paths() {
        assert_eq!(template_path("v1", "Pod"), Some(&[][..]));
        assert_eq!(
            template_path("apps/v1", "Deployment"),
            Some(&["spec", "template"][..])
        );
        assert_eq!(
            template_path("batch/v1", "CronJob"),
            Some(&["spec", "jobTemplate", "spec", "template"][..])
        );
        assert_eq!(template_path("v1", "ConfigMap"), None);
        assert_eq!(template_path("example.com/v1", "Deployment"), None);
    }

    #[test]
    fn reorder_keeps_input_order_and_puts_name_first() {
        let old: Yaml = serde_yaml::from_str("b: 1\na: 2\nlist: [{name: x, z: 1, y: 2}]").unwrap();
        let new: Yaml = serde_yaml::from_str(
            "a: 2\nb: 1\nc: {z: 0, name: n}\nlist: [{name: new, a: 1}, {y: 2, z: 1, name: x}]",
        )
        .unwrap();
        let got = serde_yaml::to_string(&reorder(&old, new)).unwrap();
        assert_eq!(
            got,
            "b: 1\na: 2\nlist:\n- name: new\n  a: 1\n- name: x\n  z: 1\n  y: 2\nc:\n  name: n\n  z: 0\n"
        );
    }
}
