//! The real helm (v4, installed by testenv/setup.sh into testenv/helm/bin) and
//! kubectl's kustomize, for tests that read the chart's and the kustomize
//! install's renderings.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::pgrds::repo_root;

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/rds-iam-injector")
}

/// helm from testenv/helm/bin; an error says how to install it.
pub fn helm_bin() -> Result<PathBuf> {
    let p = repo_root().join("testenv/helm/bin/helm");
    if !p.is_file() {
        bail!("{} is missing; run testenv/setup.sh", p.display());
    }
    Ok(p)
}

/// kubectl with kustomize v4+: the one next to helm, else the one testenv/setup.sh put in .venv.
pub fn kubectl_bin() -> Result<PathBuf> {
    [
        repo_root().join("testenv/helm/bin/kubectl"),
        repo_root().join(".venv/bin/kubectl"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .context("no kubectl in testenv/helm/bin or .venv/bin; run testenv/setup.sh")
}

/// `helm template rds-iam-injector charts/rds-iam-injector -n NAMESPACE ARGS...`.
pub fn helm_template(namespace: &str, args: &[&str]) -> Result<String> {
    let home = tempfile::tempdir()?;
    let out = Command::new(helm_bin()?)
        .args(["template", "rds-iam-injector"])
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm template {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `kubectl kustomize DIR` (DIR relative to the repository root).
pub fn kustomize(dir: &str) -> Result<String> {
    let out = Command::new(kubectl_bin()?)
        .arg("kustomize")
        .arg(repo_root().join(dir))
        .output()
        .context("running kubectl kustomize")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The objects of a multi-document YAML rendering, as JSON values.
pub fn objects(yaml: &str) -> Result<Vec<Value>> {
    let mut v = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde_yaml::with::singleton_map_recursive::deserialize(doc)?;
        if !value.is_null() {
            v.push(value);
        }
    }
    Ok(v)
}

/// The one object of `kind` in a rendering.
pub fn find<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value> {
    let mut it = objects.iter().filter(|o| o["kind"] == kind);
    let first = it.next().with_context(|| format!("no {kind} rendered"))?;
    if it.next().is_some() {
        bail!("more than one {kind} rendered");
    }
    Ok(first)
}
