//! The end-to-end chain shared by `make demo` and the e2e tests:
//! RDS-like PostgreSQL, a local STS for IRSA, `rds-iam-webhook serve` over
//! TLS with certificates from its `certs` command, the example Deployment's
//! pod as the API server would send it, the patch applied, and the pod run
//! by [`crate::kubelet`].

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::agentproc::{bin_dir, workspace_bin};
use crate::kubelet::Kubelet;
use crate::pgrds::{free_port, repo_root, PgRds, REGION};
use crate::stubs::Stub;

/// The agent image the demo webhook injects (mapped to the built binary).
pub const AGENT_IMAGE: &str = "rds-iam-injector/tokenagent:0.1.0";
/// The webhook's service DNS name, as the API server calls it.
pub const SERVICE_DNS: &str = "rds-iam-webhook.rds-iam-system.svc";
/// The example's DB user and database.
pub const USER: &str = "app_user";
pub const DATABASE: &str = "appdb";
/// The example's named database, and the host name it is reached by here.
pub const REPORTS: &str = "reports";
pub const REPORTS_HOST: &str = "127.0.0.1";
/// The IRSA role of the example's ServiceAccount.
const IRSA_TOKEN_PATH: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";

/// Everything running for one end-to-end run; dropping it stops it all.
pub struct Chain {
    pub pg: PgRds,
    pub sts: Stub,
    pub rt: tokio::runtime::Runtime,
    pub webhook: WebhookProc,
    pub work: tempfile::TempDir,
}

/// `rds-iam-webhook serve` as a child process.
pub struct WebhookProc {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub ca: PathBuf,
    pub log: PathBuf,
}

impl Drop for WebhookProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn need(prog: &str) -> Result<()> {
    let ok = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    if !ok {
        bail!("{prog} is not installed; run testenv/setup.sh");
    }
    Ok(())
}

impl Chain {
    /// Starts the database, the STS and the webhook. `say` narrates.
    pub fn start(say: &dyn Fn(&str)) -> Result<Chain> {
        need("curl")?;
        let work = tempfile::Builder::new()
            .prefix("rds-iam-e2e-")
            .tempdir_in("/tmp")?;
        say("starting an RDS-like PostgreSQL: hostssl only, PAM verifies SigV4 rds-db:connect tokens, user granted rds_iam");
        // The example's second database, "reports", is reached as another endpoint of
        // the same server (127.0.0.1 instead of localhost): its logins need tokens
        // signed for that host name.
        let pg = PgRds::start_with(&[USER], &[(REPORTS, REPORTS_HOST)])?;
        pg.sql(&format!("CREATE DATABASE {DATABASE} OWNER {USER};"))?;
        say(&format!(
            "  PostgreSQL on 127.0.0.1:{} (database {DATABASE} as localhost, database {REPORTS} as {REPORTS_HOST}, user {USER})",
            pg.port()
        ));

        say("starting a local STS (AssumeRoleWithWebIdentity) for IRSA");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let sts = rt.block_on(Stub::sts())?;
        let c = sts.creds();
        pg.add_key(&c.akid, &c.secret, Some(&c.session_token))?;
        say(&format!(
            "  STS on {}; the database trusts the keys it hands out",
            sts.url()
        ));

        say("generating the webhook's CA and serving certificate (rds-iam-webhook certs)");
        let certs = work.path().join("certs");
        let webhook_bin = workspace_bin("rds-iam-webhook")?;
        let out = Command::new(&webhook_bin)
            .args(["certs", "--out"])
            .arg(&certs)
            .output()?;
        if !out.status.success() {
            bail!(
                "rds-iam-webhook certs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        say("starting rds-iam-webhook serve (HTTPS, rustls)");
        let port = free_port()?;
        let metrics_port = free_port()?;
        let log = work.path().join("webhook.log");
        let child = Command::new(&webhook_bin)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .args(["--agent-image", AGENT_IMAGE, "--log-format", "text"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(work.path().join("webhook.err"))?)
            .spawn()?;
        let webhook = WebhookProc {
            child,
            port,
            metrics_port,
            ca: certs.join("ca.crt"),
            log,
        };
        let t = Instant::now();
        loop {
            if let Ok((200, _)) = curl(&webhook, "GET", "/healthz", None) {
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!(
                    "the webhook did not become healthy:\n{}{}",
                    fs::read_to_string(&webhook.log).unwrap_or_default(),
                    fs::read_to_string(work.path().join("webhook.err")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        say(&format!(
            "  webhook on https://{SERVICE_DNS}:{port} (127.0.0.1), trusted through its CA"
        ));
        Ok(Chain {
            pg,
            sts,
            rt,
            webhook,
            work,
        })
    }

    /// The kubelet for this chain.
    pub fn kubelet(&self) -> Result<Kubelet> {
        let mut projected = HashMap::new();
        projected.insert(
            "aws-iam-token".to_owned(),
            vec![(
                "token".to_owned(),
                "eyJhbGciOiJSUzI1NiJ9.e2e-projected-sa-token.sig".to_owned(),
            )],
        );
        Ok(Kubelet {
            agent_image: AGENT_IMAGE.to_owned(),
            bin_dir: bin_dir()?,
            projected,
            agent_network_env: vec![("AWS_ENDPOINT_URL_STS".into(), self.sts.url())],
            runc: None,
        })
    }

    /// Sends a review to /mutate over HTTPS and returns the response body.
    pub fn review(&self, review: &Value) -> Result<Value> {
        let (code, body) = curl(&self.webhook, "POST", "/mutate", Some(&review.to_string()))?;
        if code != 200 {
            bail!("/mutate answered {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }
}

/// curl over real TLS, resolving the service name to 127.0.0.1 and trusting
/// only the webhook's CA.
pub fn curl(
    w: &WebhookProc,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(&w.ca)
    .args(["--resolve", &format!("{SERVICE_DNS}:{}:127.0.0.1", w.port)]);
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
        cmd.stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    cmd.arg(format!("https://{SERVICE_DNS}:{}{path}", w.port));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(b) = body {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(b.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("no status")?;
    Ok((code.trim().parse()?, body.to_owned()))
}

/// The example Deployment's pod template (from `kubectl kustomize
/// manifests/examples`) as the API server hands it to a webhook: a Pod with
/// `generateName`, after the EKS pod identity webhook added IRSA. `adjust`
/// may change the pod JSON first (e.g. point it at the local database).
pub fn example_pod(adjust: impl FnOnce(&mut Value)) -> Result<Value> {
    let kubectl = [
        "kubectl",
        &format!("{}/.venv/bin/kubectl", repo_root().display()),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file() || which(p))
    .context("kubectl not found; run testenv/setup.sh")?;
    let out = Command::new(kubectl)
        .args(["kustomize"])
        .arg(repo_root().join("manifests/examples"))
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize manifests/examples: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let mut deployment = None;
    let mut role_arn = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value =
            serde_yaml::with::singleton_map_recursive::deserialize(doc).unwrap_or(Value::Null);
        match v["kind"].as_str() {
            Some("Deployment") => deployment = Some(v),
            Some("ServiceAccount") => {
                role_arn = v["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
                    .as_str()
                    .map(str::to_owned)
            }
            _ => {}
        }
    }
    let d = deployment.context("no Deployment in manifests/examples")?;
    let role_arn = role_arn
        .context("no ServiceAccount with eks.amazonaws.com/role-arn in manifests/examples")?;
    let name = d["metadata"]["name"].as_str().context("deployment name")?;
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let t = &d["spec"]["template"];
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-7c9d8f6b5d-"),
            "namespace": ns,
            "labels": t["metadata"]["labels"],
            "annotations": t["metadata"]["annotations"],
        },
        "spec": t["spec"],
    });
    // What the EKS pod identity webhook adds for IRSA.
    let irsa_env = json!([
        {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
        {"name": "AWS_DEFAULT_REGION", "value": REGION},
        {"name": "AWS_REGION", "value": REGION},
        {"name": "AWS_ROLE_ARN", "value": role_arn},
        {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": IRSA_TOKEN_PATH},
    ]);
    for c in pod["spec"]["containers"]
        .as_array_mut()
        .context("containers")?
    {
        let env = c["env"].as_array().cloned().unwrap_or_default();
        c["env"] = Value::Array(
            env.into_iter()
                .chain(irsa_env.as_array().cloned().unwrap_or_default())
                .collect(),
        );
        let mut mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
        mounts.push(json!({"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true}));
        c["volumeMounts"] = Value::Array(mounts);
    }
    let mut vols = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    vols.push(json!({"name": "aws-iam-token", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}));
    pod["spec"]["volumes"] = Value::Array(vols);
    adjust(&mut pod);
    Ok(pod)
}

/// Points the example's databases at the lab: the default one at
/// `localhost:port`, "reports" at `127.0.0.1:port` (the example names RDS hosts).
pub fn point_at_lab(pod: &mut Value, port: u16) {
    let a = &mut pod["metadata"]["annotations"];
    a["rds-iam/host"] = json!("localhost");
    a["rds-iam/port"] = json!(port.to_string());
    a[format!("rds-iam/{REPORTS}.host")] = json!(REPORTS_HOST);
    a[format!("rds-iam/{REPORTS}.port")] = json!(port.to_string());
}

fn which(p: &Path) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        .unwrap_or(false)
}

/// A Pod CREATE AdmissionReview request, shaped like kube-apiserver's.
pub fn admission_review(pod: &Value) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("{:08x}-0000-4000-8000-{:012x}", rand::random::<u32>(), rand::random::<u64>() & 0xffff_ffff_ffff),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                          "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        }
    })
}

/// Applies an AdmissionReview response's JSONPatch to `pod`.
pub fn apply_response(pod: &Value, response: &Value) -> Result<(Value, Pod)> {
    let r = &response["response"];
    if r["allowed"] != json!(true) {
        bail!("denied: {}", r["status"]["message"]);
    }
    let mut patched = pod.clone();
    if let Some(p) = r["patch"].as_str() {
        if r["patchType"] != json!("JSONPatch") {
            bail!("unexpected patchType {}", r["patchType"]);
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(p)?;
        let patch: json_patch::Patch = serde_json::from_slice(&bytes)?;
        json_patch::patch(&mut patched, &patch)?;
    }
    let typed: Pod =
        serde_json::from_value(patched.clone()).context("the patched pod is not a valid Pod")?;
    Ok((patched, typed))
}
