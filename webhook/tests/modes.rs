//! Proxy mode and MySQL through the in-process Router over real
//! AdmissionReview fixtures: the agent's spec and settings, what the app
//! containers get, the CA bundle's volume, and the denials. Expected values
//! are written out literally.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;

async fn patched(review: &Value) -> Pod {
    let resp = post(&config(), review).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    let pod = as_pod(&apply(review, &resp));
    assert_valid_structure(&pod);
    pod
}

fn env_pairs(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mounts(c: &Container) -> Vec<(String, String, Option<bool>)> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
        .collect()
}

#[tokio::test]
async fn proxy_mode_points_the_app_at_the_socket() {
    let pod = patched(&fixture("proxy-pod.json")).await;
    let agent = container(&pod, AGENT);
    assert_eq!(
        env_pairs(agent),
        pairs(&[
            ("RDS_IAM_DATABASES", "default=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=verify-full&mode=proxy&proxy-port=5432"),
            ("RDS_IAM_DIR", "/var/run/rds-iam"),
            ("RDS_IAM_CA_FILE", "/etc/rds-iam/ca/global-bundle.pem"),
            // A native sidecar: the app has exited by SIGTERM.
            ("RDS_IAM_MAX_SIGTERM_DELAY", "0s"),
        ])
    );
    assert_eq!(
        mounts(agent),
        [
            ("rds-iam".into(), "/var/run/rds-iam".into(), None),
            ("rds-iam-ca".into(), "/etc/rds-iam/ca".into(), Some(true)),
        ]
    );
    let api = container(&pod, "api");
    assert_eq!(
        env_pairs(api),
        pairs(&[
            ("LOG_LEVEL", "info"),
            ("PGHOST", "/var/run/rds-iam"),
            ("PGPORT", "5432"),
            ("PGUSER", "orders_app"),
            ("PGDATABASE", "orders"),
            ("PGSSLMODE", "disable"),
            ("PGPASSFILE", "/var/run/rds-iam/pgpass"),
            ("RDS_IAM_TOKEN_FILE", "/var/run/rds-iam/token"),
            ("PGSERVICEFILE", "/var/run/rds-iam/pg_service.conf"),
        ])
    );
    assert!(mounts(api).contains(&("rds-iam-ca".into(), "/etc/rds-iam/ca".into(), Some(true))));
    let ca = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "rds-iam-ca")
        .unwrap();
    assert_eq!(ca.config_map.as_ref().unwrap().name, "rds-ca");
}

#[tokio::test]
async fn a_classic_sidecar_keeps_the_default_drain() {
    let mut review = fixture("proxy-pod.json");
    annotate(&mut review, "rds-iam/sidecar", "classic");
    let pod = patched(&review).await;
    for name in [AGENT, AGENT_INIT] {
        let names = env_names(container(&pod, name));
        assert!(
            !names.contains(&"RDS_IAM_MAX_SIGTERM_DELAY".to_owned()),
            "{name}: {names:?}"
        );
    }
}

#[tokio::test]
async fn one_postgres_and_one_mysql_database() {
    let pod = patched(&fixture("pg-mysql-pod.json")).await;
    assert_eq!(
        env_of(container(&pod, AGENT), "RDS_IAM_DATABASES").as_deref(),
        Some("default=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=require\nbilling=mysql://billing_app@billing.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:3306/billing?region=eu-west-1&sslmode=require&mode=proxy")
    );
    let api = container(&pod, "api");
    assert_eq!(
        env_pairs(api)[1..],
        pairs(&[
            (
                "PGHOST",
                "orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com"
            ),
            ("PGPORT", "5432"),
            ("PGUSER", "orders_app"),
            ("PGDATABASE", "orders"),
            ("PGSSLMODE", "require"),
            ("PGPASSFILE", "/var/run/rds-iam/pgpass"),
            ("RDS_IAM_TOKEN_FILE", "/var/run/rds-iam/token"),
            ("PGSERVICEFILE", "/var/run/rds-iam/pg_service.conf"),
            ("RDS_IAM_MYSQL_CNF", "/var/run/rds-iam/my.cnf"),
            (
                "RDS_IAM_BILLING_TOKEN_FILE",
                "/var/run/rds-iam/billing.token"
            ),
            (
                "RDS_IAM_BILLING_MYSQL_UNIX_PORT",
                "/var/run/rds-iam/billing/mysqld.sock"
            ),
        ])[..]
    );
}

#[tokio::test]
async fn mysql_in_files_mode() {
    let pod = patched(&fixture("mysql-pod.json")).await;
    assert_eq!(
        env_of(container(&pod, AGENT), "RDS_IAM_DATABASES").as_deref(),
        Some("default=mysql://shop_app@shop-mysql.c9akciq32xyz.eu-west-1.rds.amazonaws.com:3306/shop?region=eu-west-1&sslmode=verify-full")
    );
    assert_eq!(
        env_of(container(&pod, AGENT), "RDS_IAM_CA_FILE").as_deref(),
        Some("/etc/rds-iam/ca/ca.crt")
    );
    let api = container(&pod, "api");
    assert_eq!(
        env_pairs(api)[1..],
        pairs(&[
            (
                "MYSQL_HOST",
                "shop-mysql.c9akciq32xyz.eu-west-1.rds.amazonaws.com"
            ),
            ("MYSQL_TCP_PORT", "3306"),
            ("RDS_IAM_TOKEN_FILE", "/var/run/rds-iam/token"),
            ("RDS_IAM_MYSQL_CNF", "/var/run/rds-iam/my.cnf"),
            ("LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN", "Y"),
        ])[..]
    );
    // Proxy mode: the socket, and no cleartext switch (the local hop needs none).
    let mut review = fixture("mysql-pod.json");
    annotate(&mut review, "rds-iam/mode", "proxy");
    let pod = patched(&review).await;
    assert_eq!(
        env_pairs(container(&pod, "api"))[1..],
        pairs(&[
            ("MYSQL_UNIX_PORT", "/var/run/rds-iam/mysqld.sock"),
            ("RDS_IAM_TOKEN_FILE", "/var/run/rds-iam/token"),
            ("RDS_IAM_MYSQL_CNF", "/var/run/rds-iam/my.cnf"),
        ])[..]
    );
}

#[tokio::test]
async fn postgres_verify_full_in_files_mode_gets_the_root_certificate() {
    let mut review = fixture("deployment-pod.json");
    annotate(&mut review, "rds-iam/sslmode", "verify-full");
    annotate(&mut review, "rds-iam/ca-configmap", "rds-ca");
    let pod = patched(&review).await;
    assert_eq!(
        env_of(container(&pod, "api"), "PGSSLROOTCERT").as_deref(),
        Some("/etc/rds-iam/ca/ca.crt")
    );
}

struct Denied {
    what: &'static str,
    fixture: &'static str,
    set: &'static [(&'static str, &'static str)],
    annotation: &'static str,
    words: &'static [&'static str],
}

#[tokio::test]
async fn mode_denials_name_the_key_and_the_fix() {
    let cases = [
        Denied {
            what: "proxy with an init-only agent",
            fixture: "proxy-pod.json",
            set: &[("rds-iam/sidecar", "init-only")],
            annotation: "rds-iam/mode",
            words: &[
                "rds-iam/sidecar is \"init-only\"",
                "nothing would serve",
                "\"native\"",
            ],
        },
        Denied {
            what: "proxy with verify-full and no CA bundle",
            fixture: "deployment-pod.json",
            set: &[
                ("rds-iam/mode", "proxy"),
                ("rds-iam/sslmode", "verify-full"),
            ],
            annotation: "rds-iam/ca-configmap",
            words: &[
                "is missing",
                "verify-full",
                "the agent's proxy",
                "ConfigMap",
            ],
        },
        Denied {
            what: "mysql with verify-ca and no CA bundle",
            fixture: "mysql-pod.json",
            set: &[
                ("rds-iam/sslmode", "verify-ca"),
                ("rds-iam/ca-configmap", ""),
            ],
            annotation: "rds-iam/ca-configmap",
            words: &["\"\" is empty"],
        },
        Denied {
            what: "proxy for an init container with a classic sidecar",
            fixture: "irsa-pod.json",
            set: &[("rds-iam/mode", "proxy"), ("rds-iam/sidecar", "classic")],
            annotation: "rds-iam/mode",
            words: &[
                "init container \"migrate\" is a target",
                "nothing would serve its socket",
                "rds-iam/sidecar: \"native\"",
            ],
        },
        Denied {
            what: "two mysql databases on one host, port and user in two regions",
            fixture: "mysql-pod.json",
            set: &[
                ("rds-iam/region", "eu-west-1"),
                ("rds-iam/replica.engine", "mysql"),
                (
                    "rds-iam/replica.host",
                    "shop-mysql.c9akciq32xyz.eu-west-1.rds.amazonaws.com",
                ),
                ("rds-iam/replica.user", "shop_app"),
                ("rds-iam/replica.region", "eu-central-1"),
            ],
            annotation: "rds-iam/replica.region",
            words: &[
                "they share one token (the agent signs one per host, port and user)",
                "set the same region for both",
            ],
        },
        Denied {
            what: "a proxy port that a container uses",
            fixture: "proxy-pod.json",
            set: &[("rds-iam/proxy-port", "8080")],
            annotation: "rds-iam/proxy-port",
            words: &["containerPort of container \"api\"", "free port"],
        },
        Denied {
            what: "a proxy port in files mode",
            fixture: "deployment-pod.json",
            set: &[("rds-iam/proxy-port", "6432")],
            annotation: "rds-iam/proxy-port",
            words: &["only the proxy uses", "rds-iam/mode: \"proxy\""],
        },
        Denied {
            what: "two databases on one proxy port",
            fixture: "two-db-pod.json",
            set: &[
                ("rds-iam/mode", "proxy"),
                ("rds-iam/proxy-port", "6432"),
                ("rds-iam/orders-ro.mode", "proxy"),
                ("rds-iam/orders-ro.proxy-port", "6432"),
            ],
            annotation: "rds-iam/orders-ro.proxy-port",
            words: &["is also rds-iam/proxy-port"],
        },
        Denied {
            what: "sslnegotiation for mysql",
            fixture: "mysql-pod.json",
            set: &[
                ("rds-iam/mode", "proxy"),
                ("rds-iam/sslnegotiation", "direct"),
            ],
            annotation: "rds-iam/sslnegotiation",
            words: &["PostgreSQL setting"],
        },
        Denied {
            what: "an unknown engine",
            fixture: "deployment-pod.json",
            set: &[("rds-iam/engine", "oracle")],
            annotation: "rds-iam/engine",
            words: &["is not one of postgres, mysql", "\"mysql\""],
        },
        Denied {
            what: "an unknown mode",
            fixture: "deployment-pod.json",
            set: &[("rds-iam/mode", "sidecar")],
            annotation: "rds-iam/mode",
            words: &["is not one of files, proxy"],
        },
        Denied {
            what: "a CA key without a ConfigMap",
            fixture: "deployment-pod.json",
            set: &[("rds-iam/ca-key", "bundle.pem")],
            annotation: "rds-iam/ca-key",
            words: &["no ConfigMap", "rds-iam/ca-configmap"],
        },
        Denied {
            what: "an invalid ConfigMap name",
            fixture: "proxy-pod.json",
            set: &[("rds-iam/ca-configmap", "RDS_CA")],
            annotation: "rds-iam/ca-configmap",
            words: &["\"RDS_CA\"", "lower-case"],
        },
    ];
    for case in &cases {
        let mut review = fixture(case.fixture);
        for (k, v) in case.set {
            annotate(&mut review, k, v);
        }
        let resp = post(&config(), &review).await;
        assert_eq!(resp["response"]["allowed"], false, "{}: {resp}", case.what);
        let msg = resp["response"]["status"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("annotation {}: ", case.annotation)),
            "{}: {msg}",
            case.what
        );
        for w in case.words {
            assert!(msg.contains(w), "{}: {msg} lacks {w:?}", case.what);
        }
    }
    // The webhook's own init-only default is named as the cause.
    let mut cfg = config();
    cfg.sidecar_mode = rds_iam_webhook::config::SidecarMode::InitOnly;
    let resp = post(&cfg, &fixture("proxy-pod.json")).await;
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("the webhook's --sidecar-mode is init-only"),
        "{msg}"
    );
}

/// With a native sidecar, an init container after the agent can use the
/// proxy; with a classic one only app containers can.
#[tokio::test]
async fn proxy_for_init_containers_needs_a_native_sidecar() {
    let mut review = fixture("irsa-pod.json");
    annotate(&mut review, "rds-iam/mode", "proxy");
    let pod = patched(&review).await;
    let migrate = pod
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "migrate")
        .unwrap();
    assert!(env_pairs(migrate).contains(&("PGHOST".into(), "/var/run/rds-iam".into())));
    annotate(&mut review, "rds-iam/containers", "api");
    annotate(&mut review, "rds-iam/sidecar", "classic");
    patched(&review).await;
}
