//! Every denial names the annotation to fix and says what to write instead.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

type Edit = fn(&mut Value);

fn set(review: &mut Value, key: &str, value: &str) {
    annotate(review, key, value);
}

fn object(review: &mut Value) -> &mut Value {
    &mut review["request"]["object"]
}

struct Case {
    what: &'static str,
    fixture: &'static str,
    edit: Edit,
    annotation: &'static str,
    /// Words the message must contain (what is wrong, what to write).
    hints: &'static [&'static str],
}

const DEPLOY: &str = "deployment-pod.json";
const IRSA: &str = "irsa-pod.json";
const MULTI: &str = "multi-db-pod.json";
const NAMED: &str = "named-only-pod.json";

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "host missing",
            fixture: DEPLOY,
            edit: |r| remove_annotation(r, "rds-iam/host"),
            annotation: "rds-iam/host",
            hints: &["missing", "rds.amazonaws.com"],
        },
        Case {
            what: "host with port",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/host", "db.example.com:5432"),
            annotation: "rds-iam/host",
            hints: &["':'", "rds-iam/port"],
        },
        Case {
            what: "host with space",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/host", "db example.com"),
            annotation: "rds-iam/host",
            hints: &["whitespace", "write only"],
        },
        Case {
            what: "host with newline",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/host", "db\nexample.com"),
            annotation: "rds-iam/host",
            hints: &["control character"],
        },
        Case {
            what: "host with scheme",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/host", "https//db.example.com"),
            annotation: "rds-iam/host",
            hints: &["DNS name"],
        },
        Case {
            what: "empty host",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/host", ""),
            annotation: "rds-iam/host",
            hints: &["empty"],
        },
        Case {
            what: "port 0",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/port", "0"),
            annotation: "rds-iam/port",
            hints: &["1 to 65535", "5432"],
        },
        Case {
            what: "port too big",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/port", "65536"),
            annotation: "rds-iam/port",
            hints: &["1 to 65535"],
        },
        Case {
            what: "port not a number",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/port", "postgres"),
            annotation: "rds-iam/port",
            hints: &["\"postgres\"", "5432"],
        },
        Case {
            what: "user missing",
            fixture: DEPLOY,
            edit: |r| remove_annotation(r, "rds-iam/user"),
            annotation: "rds-iam/user",
            hints: &["missing", "rds_iam"],
        },
        Case {
            what: "user with colon",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/user", "app:admin"),
            annotation: "rds-iam/user",
            hints: &["':'", "plain database user"],
        },
        Case {
            what: "user with space",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/user", "app user"),
            annotation: "rds-iam/user",
            hints: &["whitespace"],
        },
        Case {
            what: "user with tab",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/user", "app\tuser"),
            annotation: "rds-iam/user",
            hints: &["control character"],
        },
        Case {
            what: "unknown container",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/containers", "api,worker"),
            annotation: "rds-iam/containers",
            hints: &["\"worker\"", "api"],
        },
        Case {
            what: "unknown container in a pod with init containers",
            fixture: IRSA,
            edit: |r| set(r, "rds-iam/containers", "migrations"),
            annotation: "rds-iam/containers",
            hints: &["\"migrations\"", "init containers: migrate"],
        },
        Case {
            what: "empty container list",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/containers", " , "),
            annotation: "rds-iam/containers",
            hints: &["lists nothing", "api,migrate"],
        },
        Case {
            what: "sslmode disable",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/sslmode", "disable"),
            annotation: "rds-iam/sslmode",
            hints: &["too weak", "verify-full"],
        },
        Case {
            what: "sslmode prefer",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/sslmode", "prefer"),
            annotation: "rds-iam/sslmode",
            hints: &["too weak", "require"],
        },
        Case {
            what: "sslmode allow",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/sslmode", "allow"),
            annotation: "rds-iam/sslmode",
            hints: &["too weak"],
        },
        Case {
            what: "sslmode unknown",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/sslmode", "strict"),
            annotation: "rds-iam/sslmode",
            hints: &[
                "is not one of require, verify-ca, verify-full",
                "write \"require\"",
            ],
        },
        Case {
            what: "region unknowable",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/host", "pg.internal.example.com"),
            annotation: "rds-iam/region",
            hints: &[
                "pg.internal.example.com",
                "AWS_REGION",
                "--default-region",
                "eu-west-1",
            ],
        },
        Case {
            what: "region not a region",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/region", "Ireland"),
            annotation: "rds-iam/region",
            hints: &["\"Ireland\"", "eu-west-1"],
        },
        Case {
            what: "conflicting UIDs",
            fixture: IRSA,
            edit: |r| {
                object(r)["spec"]["initContainers"][0]["securityContext"] =
                    json!({"runAsUser": 1000})
            },
            annotation: "rds-iam/containers",
            hints: &[
                "different UIDs",
                "migrate run as 1000",
                "api run as 2000",
                "runAsUser",
            ],
        },
        Case {
            what: "run-as-user root",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/run-as-user", "0"),
            annotation: "rds-iam/run-as-user",
            hints: &["root", "1000"],
        },
        Case {
            what: "run-as-user not a number",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/run-as-user", "app"),
            annotation: "rds-iam/run-as-user",
            hints: &["is not a number", "non-root UID"],
        },
        Case {
            what: "run-as-user differs from the targets",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/run-as-user", "1234"),
            annotation: "rds-iam/run-as-user",
            hints: &["10001", "write \"10001\""],
        },
        Case {
            what: "refresh too long",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/refresh-interval", "15m"),
            annotation: "rds-iam/refresh-interval",
            hints: &["1m..14m", "10m"],
        },
        Case {
            what: "refresh not a duration",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/refresh-interval", "often"),
            annotation: "rds-iam/refresh-interval",
            hints: &["\"often\"", "10m"],
        },
        Case {
            what: "sidecar mode unknown",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/sidecar", "sidecar"),
            annotation: "rds-iam/sidecar",
            hints: &["native", "classic", "init-only"],
        },
        Case {
            what: "typo in an annotation",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/databse", "orders"),
            annotation: "rds-iam/databse",
            hints: &["did you mean rds-iam/database?"],
        },
        Case {
            what: "empty database",
            fixture: DEPLOY,
            edit: |r| set(r, "rds-iam/database", ""),
            annotation: "rds-iam/database",
            hints: &["empty"],
        },
        Case {
            what: "volume name taken",
            fixture: DEPLOY,
            edit: |r| {
                object(r)["spec"]["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "rds-iam", "emptyDir": {}}))
            },
            annotation: "rds-iam/enabled",
            hints: &["volume named \"rds-iam\"", "rename"],
        },
        Case {
            what: "mount path taken",
            fixture: DEPLOY,
            edit: |r| {
                object(r)["spec"]["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "scratch", "emptyDir": {}}));
                object(r)["spec"]["containers"][0]["volumeMounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "scratch", "mountPath": "/var/run/rds-iam/"}));
            },
            annotation: "rds-iam/containers",
            hints: &["\"scratch\"", "/var/run/rds-iam"],
        },
        Case {
            what: "two databases with one host, port and user in two regions",
            fixture: "region-conflict-pod.json",
            edit: |_| {},
            annotation: "rds-iam/audit.region",
            hints: &[
                "same host, port and user",
                "one pgpass line",
                "eu-west-1",
                "eu-central-1",
            ],
        },
        Case {
            what: "named database port out of range",
            fixture: MULTI,
            edit: |r| set(r, "rds-iam/billing.port", "70000"),
            annotation: "rds-iam/billing.port",
            hints: &["\"70000\" is outside 1..65535", "5432"],
        },
        Case {
            what: "named database host with a port",
            fixture: MULTI,
            edit: |r| set(r, "rds-iam/reports.host", "db.example.com:5432"),
            annotation: "rds-iam/reports.host",
            hints: &["':'", "rds-iam/reports.port"],
        },
        Case {
            what: "named database without a user",
            fixture: MULTI,
            edit: |r| remove_annotation(r, "rds-iam/reports.user"),
            annotation: "rds-iam/reports.user",
            hints: &["is missing", "database \"reports\""],
        },
        Case {
            what: "a typo in a database name",
            fixture: MULTI,
            edit: |r| set(r, "rds-iam/report.sslmode", "verify-full"),
            annotation: "rds-iam/report.sslmode",
            hints: &["did you mean rds-iam/reports.sslmode?"],
        },
        Case {
            what: "a typo in a named database's field",
            fixture: NAMED,
            edit: |r| set(r, "rds-iam/audit.databse", "audit"),
            annotation: "rds-iam/audit.databse",
            hints: &["did you mean rds-iam/audit.database?"],
        },
        Case {
            what: "default is reserved",
            fixture: MULTI,
            edit: |r| set(r, "rds-iam/default.host", "db.example.com"),
            annotation: "rds-iam/default.host",
            hints: &["reserved"],
        },
        Case {
            what: "an invalid database name",
            fixture: MULTI,
            edit: |r| set(r, "rds-iam/Billing.host", "db.example.com"),
            annotation: "rds-iam/Billing.host",
            hints: &["\"Billing\"", "a-z, 0-9 and '-'"],
        },
        Case {
            what: "a pod-wide key under a database name",
            fixture: MULTI,
            edit: |r| set(r, "rds-iam/reports.refresh-interval", "5m"),
            annotation: "rds-iam/reports.refresh-interval",
            hints: &["pod-wide", "write rds-iam/refresh-interval"],
        },
        Case {
            what: "nine databases",
            fixture: MULTI,
            edit: |r| {
                for name in ["d1", "d2", "d3", "d4", "d5", "d6"] {
                    set(r, &format!("rds-iam/{name}.host"), "db.example.com");
                    set(r, &format!("rds-iam/{name}.user"), "u");
                }
            },
            annotation: "rds-iam/reports.host",
            hints: &["9 databases", "at most 8"],
        },
        Case {
            what: "no database at all",
            fixture: NAMED,
            edit: |r| {
                for key in [
                    "rds-iam/orders.host",
                    "rds-iam/orders.user",
                    "rds-iam/orders.database",
                    "rds-iam/audit.host",
                    "rds-iam/audit.user",
                    "rds-iam/audit.sslmode",
                ] {
                    remove_annotation(r, key);
                }
            },
            annotation: "rds-iam/host",
            hints: &["is missing"],
        },
        Case {
            what: "an invalid AWS_REGION in the target's env",
            fixture: IRSA,
            edit: |r| {
                set(r, "rds-iam/host", "pg.internal.example.com");
                for c in object(r)["spec"]["initContainers"].as_array_mut().unwrap() {
                    for e in c["env"].as_array_mut().unwrap() {
                        if e["name"] == "AWS_REGION" {
                            e["value"] = json!("Ireland");
                        }
                    }
                }
            },
            annotation: "rds-iam/region",
            hints: &[
                "container \"migrate\"",
                "AWS_REGION is \"Ireland\"",
                "eu-west-1",
            ],
        },
        Case {
            what: "no app containers",
            fixture: DEPLOY,
            edit: |r| object(r)["spec"]["containers"] = json!([]),
            annotation: "rds-iam/containers",
            hints: &["no app containers"],
        },
        Case {
            what: "more target containers than the webhook serves",
            fixture: DEPLOY,
            edit: |r| {
                let c = object(r)["spec"]["containers"][0].clone();
                object(r)["spec"]["containers"] = (0..257)
                    .map(|i| {
                        let mut c = c.clone();
                        c["name"] = json!(format!("c{i}"));
                        c
                    })
                    .collect();
            },
            annotation: "rds-iam/containers",
            hints: &[
                "has 257 target containers",
                "at most 256",
                "name only the containers",
            ],
        },
        Case {
            what: "unknown container among many: the list is cut",
            fixture: DEPLOY,
            edit: |r| {
                object(r)["spec"]["containers"] = (0..1000)
                    .map(|i| json!({"name": format!("c{i}")}))
                    .collect();
                set(r, "rds-iam/containers", "nope");
            },
            annotation: "rds-iam/containers",
            hints: &[
                "named \"nope\" (the pod has containers: c0, c1,",
                "c15, ... (1000 in all))",
            ],
        },
        Case {
            what: "a long unknown key is cut in the message",
            fixture: DEPLOY,
            edit: |r| set(r, &format!("rds-iam/{}", "x".repeat(100_000)), "v"),
            // The key's first 100 bytes, then its length.
            annotation: Box::leak(
                format!("rds-iam/{}... (100008 bytes)", "x".repeat(92)).into_boxed_str(),
            ),
            hints: &["is not an rds-iam annotation"],
        },
    ]
}

#[tokio::test]
async fn denial_table() {
    let cases = cases();
    for case in &cases {
        let mut review = fixture(case.fixture);
        (case.edit)(&mut review);
        let resp = post(&config(), &review).await;
        let r = &resp["response"];
        assert_eq!(
            r["allowed"], false,
            "{}: expected a denial, got {resp}",
            case.what
        );
        assert!(
            r.get("patch").is_none(),
            "{}: a denial carries no patch",
            case.what
        );
        assert_eq!(r["status"]["code"], 403, "{}", case.what);
        assert_eq!(r["status"]["status"], "Failure", "{}", case.what);
        let msg = r["status"]["message"].as_str().unwrap();
        let prefix = format!("annotation {}: ", case.annotation);
        assert!(
            msg.starts_with(&prefix),
            "{}: message must start with {prefix:?}: {msg}",
            case.what
        );
        for hint in case.hints {
            assert!(
                msg.contains(hint),
                "{}: message lacks {hint:?}: {msg}",
                case.what
            );
        }
        assert!(!msg.contains('\n'), "{}: one line: {msg:?}", case.what);

        // The same pod through `inject` is refused with the same message.
        let mut pod = review["request"]["object"].clone();
        pod["metadata"]["name"] = json!("p");
        let yaml = serde_yaml::to_string(&pod).unwrap();
        let report = rds_iam_webhook::inject_cmd::inject_yaml(&yaml, &config()).unwrap();
        assert_eq!(report.denials.len(), 1, "{}", case.what);
        assert!(
            report.denials[0].ends_with(msg),
            "{}: {:?} vs {msg}",
            case.what,
            report.denials[0]
        );
    }
    assert!(cases.len() >= 30);
}
