//! `rds-iam-webhook certs`: the generated certificate serves TLS for the
//! Service name, and the kustomization renders the Secret and the caBundle.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tls_client::*;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

const BASE_KUSTOMIZATION: &str = "resources: [webhook.yaml]\n";
const BASE_WEBHOOK: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: rds-iam-webhook
webhooks:
  - name: inject.rds-iam-injector.io
    admissionReviewVersions: ["v1"]
    sideEffects: None
    clientConfig:
      service:
        name: rds-iam-webhook
        namespace: rds-iam-system
        path: /mutate
        port: 443
"#;

fn run_certs(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rds-iam-webhook"))
        .args(["certs", "--out", out.to_str().unwrap(), "--base", "../base"])
        .args(extra)
        .output()
        .unwrap()
}

fn kubectl() -> &'static str {
    let ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "kubectl is missing: install it (Debian package kubectl, or see testenv/setup.sh)"
    );
    "kubectl"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_certificate_serves_the_service_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let res = run_certs(&out, &[]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("kubectl apply -k"), "{stdout}");

    for f in [
        "ca.crt",
        "tls.crt",
        "tls.key",
        "secret.yaml",
        "cabundle-patch.yaml",
        "kustomization.yaml",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    for secret in ["tls.key", "secret.yaml"] {
        let mode = std::fs::metadata(out.join(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret} is private");
    }

    // The leaf: SANs, validity, usage.
    let pem = std::fs::read(out.join("tls.crt")).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        sans,
        [
            "DNSName(rds-iam-webhook)",
            "DNSName(rds-iam-webhook.rds-iam-system)",
            "DNSName(rds-iam-webhook.rds-iam-system.svc)",
            "DNSName(rds-iam-webhook.rds-iam-system.svc.cluster.local)",
        ]
    );
    let lifetime =
        cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (89 * 86400..=90 * 86400 + 60).contains(&lifetime),
        "about 90 days: {lifetime}s"
    );
    assert!(!cert.is_ca());
    let ca_pem = std::fs::read(out.join("ca.crt")).unwrap();
    let ca_der = CertificateDer::from_pem_slice(&ca_pem).unwrap();
    assert!(x509_parser::parse_x509_certificate(&ca_der)
        .unwrap()
        .1
        .is_ca());

    // Serve with it; a client that trusts only ca.crt connects by the Service name.
    let dir = tempfile::tempdir().unwrap();
    let secret = SecretDir::new(
        dir.path(),
        &std::fs::read_to_string(out.join("tls.crt")).unwrap(),
        &std::fs::read_to_string(out.join("tls.key")).unwrap(),
    );
    let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = https.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rds_iam_webhook::server::run(
        https,
        metrics,
        rds_iam_webhook::server::ServeOptions {
            tls_cert: secret.cert(),
            tls_key: secret.key(),
            agent: config(),
            drain_timeout: Duration::from_secs(5),
            reload_debounce: Duration::from_millis(200),
            limits: rds_iam_webhook::limits::Limits::default(),
        },
        async move {
            let _ = rx.await;
        },
    ));
    let cfg = client_config(&ca_der, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let mut conn = connect(addr, cfg).await.unwrap();
    let (status, _) = conn.request("GET", "/healthz", vec![]).await.unwrap();
    assert_eq!(status, 200);
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();

    // Re-running rotates: a new CA and a new key.
    let res = run_certs(&out, &[]);
    assert!(res.status.success());
    assert_ne!(std::fs::read(out.join("ca.crt")).unwrap(), ca_pem);
    assert_ne!(std::fs::read(out.join("tls.crt")).unwrap(), pem);
}

#[test]
fn kustomization_renders_secret_and_ca_bundle() {
    let kubectl = kubectl();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(base.join("kustomization.yaml"), BASE_KUSTOMIZATION).unwrap();
    std::fs::write(base.join("webhook.yaml"), BASE_WEBHOOK).unwrap();
    let out = tmp.path().join("out");
    let res = run_certs(&out, &["--days", "30"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );

    let rendered = Command::new(kubectl)
        .arg("kustomize")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{text}");

    let ca_pem = std::fs::read(out.join("ca.crt")).unwrap();
    let webhook = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let bundle = webhook["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap();
    assert_eq!(base64_decode(bundle), ca_pem, "caBundle is ca.crt");
    assert_eq!(
        webhook["webhooks"][0]["clientConfig"]["service"]["name"],
        "rds-iam-webhook"
    );

    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret["metadata"]["name"], "rds-iam-webhook-tls");
    assert_eq!(secret["metadata"]["namespace"], "rds-iam-system");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(
        base64_decode(secret["data"]["tls.crt"].as_str().unwrap()),
        std::fs::read(out.join("tls.crt")).unwrap()
    );
    assert_eq!(
        base64_decode(secret["data"]["tls.key"].as_str().unwrap()),
        std::fs::read(out.join("tls.key")).unwrap()
    );

    // Both objects are valid Kubernetes objects.
    let rendered_file = tmp.path().join("rendered.yaml");
    std::fs::write(&rendered_file, &text).unwrap();
    validate_strict(&[rendered_file]);
}

#[test]
fn bad_flags_fail_with_the_flag_named() {
    let tmp = tempfile::tempdir().unwrap();
    let res = run_certs(&tmp.path().join("out"), &["--days", "400"]);
    assert_eq!(res.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("--days"), "{stderr}");
    assert!(!tmp.path().join("out").exists(), "nothing written");
}
