//! `rds-iam-webhook certs`: a CA and a serving certificate for the webhook's
//! Service, plus a kustomization that installs them:
//! `rds-iam-webhook certs && kubectl apply -k certs/out`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

pub const SECRET_NAME: &str = "rds-iam-webhook-tls";
pub const WEBHOOK_CONFIGURATION: &str = "rds-iam-webhook";
pub const MAX_DAYS: u32 = 365;

#[derive(Debug, Clone)]
pub struct CertsOptions {
    pub out: PathBuf,
    pub service: String,
    pub namespace: String,
    pub days: u32,
    pub base: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error("cannot generate the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot render {what}: {reason}")]
    Render { what: &'static str, reason: String },
}

/// What was written.
#[derive(Debug)]
pub struct Generated {
    pub files: Vec<PathBuf>,
    pub dns_names: Vec<String>,
    pub not_after: OffsetDateTime,
}

fn check_label(flag: &'static str, value: &str) -> Result<(), CertsError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CertsError::Flag {
            flag,
            message: format!("{value:?} is not a Kubernetes name; write lowercase letters, digits and '-', up to 63 characters"),
        })
    }
}

/// The names the API server may use to reach the Service.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates the files into `opts.out`.
pub fn generate(opts: &CertsOptions, now: OffsetDateTime) -> Result<Generated, CertsError> {
    let CertsOptions {
        out,
        service,
        namespace,
        days,
        base,
    } = opts;
    check_label("--service", service)?;
    check_label("--namespace", namespace)?;
    if !(1..=MAX_DAYS).contains(days) {
        return Err(CertsError::Flag {
            flag: "--days",
            message: format!("{days} is outside 1..{MAX_DAYS}; keep certificates short-lived and re-run to rotate, e.g. --days 90"),
        });
    }
    if base.trim().is_empty() {
        return Err(CertsError::Flag {
            flag: "--base",
            message: "is empty; write the path of the manifests/ directory relative to --out, e.g. ../../manifests".into(),
        });
    }
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(i64::from(*days));

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{service} webhook CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let names = dns_names(service, namespace);
    let mut params = CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let ca_pem = ca_cert.pem();
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();

    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "rds-iam-webhook".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".to_owned(), ByteString(ca_pem.clone().into_bytes())),
            (
                "tls.crt".to_owned(),
                ByteString(cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(key_pem.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    };
    let secret_yaml = serde_yaml::to_string(&secret).map_err(|e| CertsError::Render {
        what: "secret.yaml",
        reason: e.to_string(),
    })?;
    let ca_bundle = serde_json::to_value(ByteString(ca_pem.clone().into_bytes())).map_err(|e| {
        CertsError::Render {
            what: "cabundle-patch.yaml",
            reason: e.to_string(),
        }
    })?;
    let patch = serde_json::json!([{
        "op": "add",
        "path": "/webhooks/0/clientConfig/caBundle",
        "value": ca_bundle,
    }]);
    let patch_yaml = serde_yaml::to_string(&patch).map_err(|e| CertsError::Render {
        what: "cabundle-patch.yaml",
        reason: e.to_string(),
    })?;
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base, "secret.yaml"],
        "patches": [{
            "path": "cabundle-patch.yaml",
            "target": {
                "group": "admissionregistration.k8s.io",
                "version": "v1",
                "kind": "MutatingWebhookConfiguration",
                "name": WEBHOOK_CONFIGURATION,
            },
        }],
    });
    let kustomization_yaml =
        serde_yaml::to_string(&kustomization).map_err(|e| CertsError::Render {
            what: "kustomization.yaml",
            reason: e.to_string(),
        })?;

    std::fs::create_dir_all(out).map_err(|source| CertsError::Write {
        path: out.clone(),
        source,
    })?;
    let header = "# Generated by `rds-iam-webhook certs`; re-run it to rotate. Do not commit.\n";
    let files: [(&str, String, u32); 6] = [
        ("ca.crt", ca_pem, 0o644),
        ("tls.crt", cert_pem, 0o644),
        ("tls.key", key_pem, 0o600),
        ("secret.yaml", format!("{header}{secret_yaml}"), 0o600),
        (
            "cabundle-patch.yaml",
            format!("{header}{patch_yaml}"),
            0o644,
        ),
        (
            "kustomization.yaml",
            format!("{header}{kustomization_yaml}"),
            0o644,
        ),
    ];
    let mut written = Vec::new();
    for (name, content, mode) in files {
        let path = out.join(name);
        write_file(&path, content.as_bytes(), mode)?;
        written.push(path);
    }
    Ok(Generated {
        files: written,
        dns_names: names,
        not_after,
    })
}

/// Replaces `path` atomically (a temporary file of its own, flushed, renamed,
/// the directory flushed), with `mode` from the start.
fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_owned(),
        source,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(err(std::io::Error::other("not a file path")));
    };
    rds_iam_common::files::write_atomic(dir, name, content, mode).map_err(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> CertsOptions {
        CertsOptions {
            out: dir.to_owned(),
            service: "rds-iam-webhook".into(),
            namespace: "rds-iam-system".into(),
            days: 90,
            base: "../../manifests".into(),
        }
    }

    #[test]
    fn bad_flags_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        for (flag, change) in [
            (
                "--days",
                Box::new(|o: &mut CertsOptions| o.days = 0) as Box<dyn Fn(&mut CertsOptions)>,
            ),
            ("--days", Box::new(|o: &mut CertsOptions| o.days = 1000)),
            (
                "--service",
                Box::new(|o: &mut CertsOptions| o.service = "Bad_Name".into()),
            ),
            (
                "--namespace",
                Box::new(|o: &mut CertsOptions| o.namespace = String::new()),
            ),
            (
                "--base",
                Box::new(|o: &mut CertsOptions| o.base = " ".into()),
            ),
        ] {
            let mut o = opts(dir.path());
            change(&mut o);
            let err = generate(&o, now).unwrap_err().to_string();
            assert!(err.starts_with(flag), "{flag}: {err}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written on error"
        );
    }
}
