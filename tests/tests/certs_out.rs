//! The real `rds-iam-webhook certs` output installs: `certs/out` renders with
//! `kubectl kustomize` on top of `manifests/`, every object passes
//! `kubernetes-validate --strict` (1.30, 1.33), the Secret's key matches its
//! certificate, the certificate covers the service name and is signed by the
//! caBundle (all checked by testenv/validate-manifests.sh).

use std::process::Command;

use anyhow::{bail, Result};
use rds_iam_e2e::agentproc::workspace_bin;
use rds_iam_e2e::pgrds::repo_root;

#[test]
fn certs_output_renders_and_validates() -> Result<()> {
    // kustomize only accepts a relative --base, so work inside the repository.
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-certs-")
        .tempdir_in(repo_root().join("certs"))?;
    let out = tmp.path().join("out");
    let st = Command::new(workspace_bin("rds-iam-webhook")?)
        .args(["certs", "--base", "../../../manifests", "--out"])
        .arg(&out)
        .status()?;
    if !st.success() {
        bail!("rds-iam-webhook certs failed: {st}");
    }
    let run = Command::new("bash")
        .arg(repo_root().join("testenv/validate-manifests.sh"))
        .arg(&out)
        .current_dir(repo_root())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{text}");
    for want in ["Secret", "MutatingWebhookConfiguration", "Deployment"] {
        assert!(text.contains(want), "no line for {want}:\n{text}");
    }
    assert!(text.contains(" 0 failed"), "{text}");
    Ok(())
}
