//! The install manifests: every object rendered by `kubectl kustomize` from manifests/ and its
//! overlays passes `kubernetes-validate --strict` for Kubernetes 1.30 and 1.33 (cert-manager
//! objects are checked by hand), plus the project's policy checks. All of it lives in
//! `testenv/validate-manifests.sh`; these tests run that script and also prove that it fails on
//! broken input, so a green run means something.
//!
//! Needs `testenv/setup.sh` to have run (kubectl, .venv with kubernetes-validate, cel-python,
//! cryptography). A missing tool makes the script exit 2, which fails these tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rds-iam-manifests-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos()
        ));
        fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run_validator(dirs: &[&Path]) -> (Output, String) {
    let root = repo_root();
    let out = Command::new("bash")
        .arg(root.join("testenv/validate-manifests.sh"))
        .args(dirs)
        .current_dir(&root)
        .output()
        .expect("run bash testenv/validate-manifests.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn describe(out: &Output, stdout: &str) -> String {
    format!(
        "exit status: {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The result line of one object: "<ok|FAIL> <bundle> <Kind ns/name> <details>".
fn line_for<'a>(stdout: &'a str, bundle: &str, ident: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            let _status = words.next();
            words.next() == Some(bundle) && l.contains(&format!(" {ident} "))
        })
        .unwrap_or_else(|| panic!("no result line for {bundle} {ident} in:\n{stdout}"))
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or_default()
}

#[test]
fn shipped_manifests_validate_strictly_for_1_30_and_1_33() {
    let (out, stdout) = run_validator(&[]);
    let ctx = describe(&out, &stdout);
    assert!(out.status.success(), "validator failed:\n{ctx}");

    let schema = "kubernetes-validate --strict 1.30 1.33";
    let by_hand = "cert-manager.io/v1";
    let expected: &[(&str, &str, &[&str])] = &[
        (
            "manifests",
            schema,
            &[
                "Namespace rds-iam-system",
                "ServiceAccount rds-iam-system/rds-iam-webhook",
                "Deployment rds-iam-system/rds-iam-webhook",
                "PodDisruptionBudget rds-iam-system/rds-iam-webhook",
                "Service rds-iam-system/rds-iam-webhook",
                "MutatingWebhookConfiguration rds-iam-webhook",
            ],
        ),
        (
            "manifests/cert-manager",
            schema,
            &[
                "Deployment rds-iam-system/rds-iam-webhook",
                "MutatingWebhookConfiguration rds-iam-webhook",
            ],
        ),
        (
            "manifests/cert-manager",
            by_hand,
            &[
                "Issuer rds-iam-system/rds-iam-webhook-selfsigned",
                "Issuer rds-iam-system/rds-iam-webhook-ca",
                "Certificate rds-iam-system/rds-iam-webhook-ca",
                "Certificate rds-iam-system/rds-iam-webhook-serving",
            ],
        ),
        (
            "manifests/examples",
            schema,
            &[
                "Namespace rds-iam-demo",
                "ServiceAccount rds-iam-demo/demo-app",
                "Deployment rds-iam-demo/demo-app",
                "CronJob rds-iam-demo/demo-report",
            ],
        ),
        (
            "overlay:components+images",
            schema,
            &[
                "ResourceQuota rds-iam-system/rds-iam-critical-pods",
                "Deployment rds-iam-system/rds-iam-webhook",
            ],
        ),
    ];
    let mut count = 0;
    for (bundle, how, idents) in expected {
        for ident in *idents {
            count += 1;
            let line = line_for(&stdout, bundle, ident);
            assert!(
                line.starts_with("ok "),
                "{bundle} {ident} did not pass: {line}\n{ctx}"
            );
            assert!(
                line.contains(how),
                "{bundle} {ident} not checked by {how}: {line}"
            );
        }
    }
    for check in [
        "images: retargets the webhook image",
        "images: retargets RDS_IAM_WEBHOOK_AGENT_IMAGE",
        "priority-class component sets system-cluster-critical",
        "failure-policy-ignore component sets Ignore",
        "base failurePolicy is Fail",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.ends_with(check)),
            "missing passed check {check:?}\n{ctx}"
        );
    }
    let last = last_line(&stdout);
    let passed: usize = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected summary {last:?}\n{ctx}"));
    assert!(passed >= count, "only {passed} objects validated\n{ctx}");
}

const BROKEN: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: fine, namespace: demo}
data: {a: b}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: typo, namespace: demo}
dataa: {a: b}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: no-secret, namespace: demo}
spec:
  dnsNames: [rds-iam-webhook.rds-iam-system.svc]
  issuerRef: {name: ca}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: unknown-kind, namespace: demo}
spec: {}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: misplaced
  namespace: demo
  annotations: {rds-iam/enabled: "true", rds-iam/host: db.example.com, rds-iam/user: app}
spec:
  selector: {matchLabels: {app: misplaced}}
  template:
    metadata: {labels: {app: misplaced}}
    spec:
      securityContext: {runAsUser: 0, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: postgres:16-alpine
          resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {drop: [ALL]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: rds-iam-webhook}
webhooks:
  - name: inject.rds-iam-injector.io
    admissionReviewVersions: [v1]
    sideEffects: None
    timeoutSeconds: 5
    reinvocationPolicy: IfNeeded
    failurePolicy: Fail
    clientConfig: {service: {name: rds-iam-webhook, namespace: rds-iam-system, path: /mutate, port: 443}}
    rules:
      - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods], scope: Namespaced}
    namespaceSelector:
      matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-node-lease, rds-iam-system]}
    matchConditions:
      - {name: everything, expression: "true"}
"#;

#[test]
fn validator_fails_on_broken_objects_and_never_skips_unknown_kinds() {
    let dir = TempDir::new("broken");
    fs::write(dir.0.join("objects.yaml"), BROKEN).expect("write objects.yaml");
    fs::write(
        dir.0.join("kustomization.yaml"),
        "resources: [objects.yaml]\n",
    )
    .expect("write kustomization.yaml");

    let (out, stdout) = run_validator(&[&dir.0]);
    let ctx = describe(&out, &stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure exit 1:\n{ctx}"
    );
    let label = dir.0.to_str().expect("utf-8 temp path");

    let fine = line_for(&stdout, label, "ConfigMap demo/fine");
    assert!(fine.starts_with("ok "), "valid ConfigMap failed: {fine}");
    let cases = [
        ("ConfigMap demo/typo", "'dataa' was unexpected"),
        ("Certificate demo/no-secret", "spec.secretName: required"),
        (
            "Widget demo/unknown-kind",
            "Couldn't find schema for kind Widget",
        ),
        (
            "Deployment demo/misplaced",
            "where the webhook never sees them",
        ),
        (
            "Deployment demo/misplaced",
            "app: runAsUser: 0 must be a non-zero UID",
        ),
        (
            "MutatingWebhookConfiguration rds-iam-webhook",
            "admits only rds-iam/enabled=true",
        ),
        (
            "MutatingWebhookConfiguration rds-iam-webhook",
            "Service in bundle: clientConfig names a Service the bundle does not have",
        ),
    ];
    for (ident, reason) in cases {
        let line = line_for(&stdout, label, ident);
        assert!(line.starts_with("FAIL "), "{ident} should fail: {line}");
        assert!(
            line.contains(reason),
            "{ident}: expected {reason:?} in: {line}"
        );
    }
    assert_eq!(last_line(&stdout), "1 passed, 5 failed", "{ctx}");
}

fn make_certs_out(dir: &Path, extra: &[&str]) {
    let root = repo_root();
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("testenv/make_certs_out_fixture.py"))
        .arg(dir)
        .args(extra)
        .output()
        .expect("run .venv/bin/python testenv/make_certs_out_fixture.py (run testenv/setup.sh)");
    assert!(
        out.status.success(),
        "fixture generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn certs_out_layout_composes_with_the_base_and_wrong_certificates_fail() {
    let good = TempDir::new("certs-good");
    let foreign = TempDir::new("certs-foreign-ca");
    let wrong_name = TempDir::new("certs-wrong-san");
    make_certs_out(&good.0, &[]);
    make_certs_out(&foreign.0, &["--foreign-ca"]);
    make_certs_out(&wrong_name.0, &["--dns", "rds-iam-webhook.default.svc"]);

    let (out, stdout) = run_validator(&[&good.0, &foreign.0, &wrong_name.0]);
    let ctx = describe(&out, &stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure exit 1:\n{ctx}"
    );

    let label = |d: &TempDir| d.0.to_str().expect("utf-8 temp path").to_owned();
    let secret = "Secret rds-iam-system/rds-iam-webhook-tls";
    let mwc = "MutatingWebhookConfiguration rds-iam-webhook";
    let deployment = "Deployment rds-iam-system/rds-iam-webhook";

    for ident in [secret, mwc, deployment] {
        let line = line_for(&stdout, &label(&good), ident);
        assert!(
            line.starts_with("ok "),
            "good certs/out: {ident} failed: {line}\n{ctx}"
        );
    }
    let line = line_for(&stdout, &label(&foreign), secret);
    assert!(
        line.starts_with("FAIL ") && line.contains("tls.crt signed by the caBundle"),
        "foreign CA not caught: {line}"
    );
    let line = line_for(&stdout, &label(&wrong_name), secret);
    assert!(
        line.starts_with("FAIL ")
            && line.contains("tls.crt SAN rds-iam-webhook.rds-iam-system.svc"),
        "wrong SAN not caught: {line}"
    );
    assert!(last_line(&stdout).ends_with(" passed, 2 failed"), "{ctx}");
}
