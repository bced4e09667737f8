//! Several databases per pod, and `$(VAR)` in annotation values, through the
//! in-process Router over real AdmissionReview fixtures. Expected values are
//! written out literally.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Pod;

const MAIN: &str = "orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com";

async fn patched(name: &str) -> (serde_json::Value, Pod) {
    let review = fixture(name);
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true, "{name}: {resp}");
    let pod = as_pod(&apply(&review, &resp));
    assert_valid_structure(&pod);
    (resp, pod)
}

fn databases_env(pod: &Pod) -> Vec<String> {
    env_of(container(pod, AGENT), "RDS_IAM_DATABASES")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn three_databases_one_agent() {
    let (resp, pod) = patched("multi-db-pod.json").await;
    assert!(resp["response"].get("warnings").is_none(), "{resp}");
    assert_eq!(count_agents(&pod), 1, "one agent serves every database");
    assert_eq!(
        databases_env(&pod),
        [
            "default=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=require",
            "billing=postgres://orders_app@billing-db.c9akciq32xyz.eu-west-1.rds.amazonaws.com:5433/billing?region=eu-west-1&sslmode=require",
            "reports=postgres://reports_ro@orders.cluster-ro-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=require",
        ]
    );
    let api = container(&pod, "api");
    assert_target(api);
    assert_eq!(
        env_names(api),
        [
            "LOG_LEVEL",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSSLMODE",
            "PGPASSFILE",
            "RDS_IAM_TOKEN_FILE",
            "PGSERVICEFILE",
            "RDS_IAM_BILLING_TOKEN_FILE",
            "RDS_IAM_BILLING_URL",
            "RDS_IAM_REPORTS_TOKEN_FILE",
            "RDS_IAM_REPORTS_URL",
        ]
    );
    // The default database keeps exactly today's env.
    assert_eq!(env_of(api, "PGHOST").as_deref(), Some(MAIN));
    assert_eq!(env_of(api, "PGUSER").as_deref(), Some("orders_app"));
    assert_eq!(env_of(api, "PGDATABASE").as_deref(), Some("orders"));
    assert_eq!(
        env_of(api, "RDS_IAM_TOKEN_FILE").as_deref(),
        Some("/var/run/rds-iam/token")
    );
    assert_eq!(
        env_of(api, "RDS_IAM_BILLING_TOKEN_FILE").as_deref(),
        Some("/var/run/rds-iam/billing.token")
    );
    assert_eq!(
        env_of(api, "RDS_IAM_BILLING_URL").as_deref(),
        Some("postgresql://orders_app@billing-db.c9akciq32xyz.eu-west-1.rds.amazonaws.com:5433/billing?sslmode=require")
    );
    assert_eq!(
        env_of(api, "RDS_IAM_REPORTS_URL").as_deref(),
        Some("postgresql://reports_ro@orders.cluster-ro-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?sslmode=require")
    );
}

#[tokio::test]
async fn named_databases_only() {
    let (_, pod) = patched("named-only-pod.json").await;
    assert_eq!(
        databases_env(&pod),
        [
            "audit=postgres://auditor@audit-db.c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432?region=eu-west-1&sslmode=verify-full",
            "orders=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=require",
        ]
    );
    for target in ["migrate", "api"] {
        let c = container(&pod, target);
        assert_target(c);
        // No default database: no PG* connection env, no RDS_IAM_TOKEN_FILE.
        for absent in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSSLMODE",
            "RDS_IAM_TOKEN_FILE",
        ] {
            assert_eq!(env_of(c, absent), None, "{target}: {absent}");
        }
        assert_eq!(
            env_of(c, "RDS_IAM_ORDERS_URL").as_deref(),
            Some("postgresql://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?sslmode=require")
        );
        assert_eq!(
            env_of(c, "RDS_IAM_AUDIT_TOKEN_FILE").as_deref(),
            Some("/var/run/rds-iam/audit.token")
        );
    }
    assert_not_target(container(&pod, "log-shipper"));
}

#[tokio::test]
async fn same_host_port_and_user_are_allowed() {
    let (_, pod) = patched("shared-line-pod.json").await;
    assert_eq!(
        databases_env(&pod),
        [
            "default=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders?region=eu-west-1&sslmode=require",
            "audit=postgres://orders_app@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/audit?region=eu-west-1&sslmode=require",
        ]
    );
}

#[tokio::test]
async fn same_host_port_and_user_in_two_regions_are_denied() {
    let resp = post(&config(), &fixture("region-conflict-pod.json")).await;
    assert_eq!(resp["response"]["allowed"], false);
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert_eq!(
        msg,
        "annotation rds-iam/audit.region: database \"audit\" is signed for region eu-central-1 but database \"default\", with the same host, port and user, for eu-west-1; they share one pgpass line (libpq takes the first line that matches host, port and user), so both must use one region: set the same region for both"
    );
}

#[tokio::test]
async fn region_that_contradicts_the_host_gets_a_warning() {
    let mut review = fixture("two-db-pod.json");
    annotate(&mut review, "rds-iam/orders-ro.region", "us-east-1");
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(
        resp["response"]["warnings"],
        serde_json::json!([
            "rds-iam: rds-iam/orders-ro.region is \"us-east-1\" but host \"orders.cluster-ro-c9akciq32xyz.eu-west-1.rds.amazonaws.com\" is in eu-west-1; tokens are signed for us-east-1, so if the database is in eu-west-1 every login fails: remove rds-iam/orders-ro.region or fix it"
        ])
    );
}

/// `$(VAR)` in an annotation reaches the containers as written: the kubelet
/// sees `$$`, which it turns back into `$`. The AWS env the agent gets is
/// the value the app sees after expansion.
#[tokio::test]
async fn dollar_references_are_never_expanded() {
    let (resp, pod) = patched("dollar-pod.json").await;
    assert!(resp["response"].get("warnings").is_none(), "{resp}");
    let api = container(&pod, "api");
    assert_eq!(env_of(api, "PGUSER").as_deref(), Some("$$(AWS_ROLE_ARN)"));
    assert_eq!(env_of(api, "PGDATABASE").as_deref(), Some("orders$$(HOME)"));
    let agent = container(&pod, AGENT);
    // In the agent's spec the user is percent-encoded: no '$' at all.
    assert_eq!(
        databases_env(&pod),
        ["default=postgres://%24%28AWS_ROLE_ARN%29@orders.cluster-c9akciq32xyz.eu-west-1.rds.amazonaws.com:5432/orders%24%28HOME%29?region=eu-west-1&sslmode=require"]
    );
    assert_eq!(
        env_of(agent, "AWS_ROLE_ARN").as_deref(),
        Some("arn:aws:iam::111122223333:role/orders-db-access"),
        "expanded as in the app, so nothing is left to expand"
    );
    assert_eq!(
        env_of(agent, "AWS_STS_REGIONAL_ENDPOINTS").as_deref(),
        Some("$$(not-expanded)"),
        "the app sees $(not-expanded), and so does the agent"
    );
    assert_eq!(
        env_of(agent, "ROLE_NAME"),
        None,
        "only AWS_* variables are copied"
    );
}

/// Nested references would expand to 10 MB here (64 bytes * 20^4), and to
/// gigabytes with one level more: past the review's 1 MiB budget the webhook
/// stops expanding, warns once, and passes the variable on unexpanded.
#[tokio::test]
async fn nested_references_stop_at_the_expansion_budget() {
    let mut review = fixture("irsa-pod.json");
    let last = nest_env(&mut review, "migrate", 64, 20, 4);
    assert_eq!(last, "V4");
    for c in review["request"]["object"]["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
    {
        for e in c["env"].as_array_mut().unwrap() {
            if e["name"] == "AWS_ROLE_ARN" {
                e["value"] = serde_json::json!("arn:aws:iam::111122223333:role/$(V2)");
            }
            if e["name"] == "AWS_STS_REGIONAL_ENDPOINTS" {
                e["value"] = serde_json::json!("$(V4)");
            }
        }
    }
    let resp = post(&config(), &review).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    // V1 is 1,280 bytes, V2 25,600, V3 512,000: V4 (10,240,000) overruns,
    // and spends the rest: V2 is no longer expanded either.
    assert_eq!(
        resp["response"]["warnings"],
        serde_json::json!([
            "rds-iam: V4 in container \"migrate\": $(VAR) references expand past 1048576 bytes in this pod; the webhook treats it, and every later variable that refers to another, as unknown (a region set that way is not seen; AWS variables reach the token agent unexpanded). Define them without nested $(VAR) references",
            "rds-iam: AWS_STS_REGIONAL_ENDPOINTS in container \"migrate\" refers to $(V4), which the webhook cannot resolve (valueFrom, envFrom, undefined, or too large to expand); the token agent gets it unexpanded",
            "rds-iam: AWS_ROLE_ARN in container \"migrate\" is not expanded ($(VAR) references expand past 1048576 bytes in this pod); the token agent gets it as written"
        ])
    );
    let pod = as_pod(&apply(&review, &resp));
    let agent = container(&pod, AGENT);
    assert_eq!(
        env_of(agent, "AWS_ROLE_ARN").as_deref(),
        Some("arn:aws:iam::111122223333:role/$$(V2)")
    );
    assert_eq!(
        env_of(agent, "AWS_STS_REGIONAL_ENDPOINTS").as_deref(),
        Some("$$(V4)")
    );
}

/// A token volume mounted many times is mounted once in the agent: where the
/// token file the env names is (here the last of 1,001 mounts), else first.
#[tokio::test]
async fn a_token_volume_is_mounted_once_where_the_token_file_is() {
    let mut review = fixture("irsa-pod.json");
    let migrate = &mut review["request"]["object"]["spec"]["initContainers"][0];
    assert_eq!(migrate["name"], "migrate");
    let mounts = migrate["volumeMounts"].as_array_mut().unwrap();
    for i in 0..1000 {
        mounts.insert(
            0,
            serde_json::json!({"name": "aws-iam-token", "mountPath": format!("/elsewhere/{i}")}),
        );
    }
    async fn agent_mounts(review: &serde_json::Value) -> Vec<String> {
        let pod = as_pod(&apply(review, &post(&config(), review).await));
        container(&pod, AGENT)
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == "aws-iam-token")
            .map(|m| m.mount_path.clone())
            .collect()
    }
    assert_eq!(
        agent_mounts(&review).await,
        ["/var/run/secrets/eks.amazonaws.com/serviceaccount"]
    );
    // Without the env naming a file, the first mount.
    for c in review["request"]["object"]["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
    {
        c["env"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["name"] != "AWS_WEB_IDENTITY_TOKEN_FILE");
    }
    assert_eq!(agent_mounts(&review).await, ["/elsewhere/999"]);
}

#[tokio::test]
async fn aws_reference_the_webhook_cannot_see_is_warned_about() {
    let mut review = fixture("irsa-pod.json");
    for c in review["request"]["object"]["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
    {
        for e in c["env"].as_array_mut().unwrap() {
            if e["name"] == "AWS_ROLE_ARN" {
                e["value"] = serde_json::json!("$(FROM_SECRET)");
            }
        }
    }
    let resp = post(&config(), &review).await;
    assert_eq!(
        resp["response"]["warnings"],
        serde_json::json!([
            "rds-iam: AWS_ROLE_ARN in container \"migrate\" refers to $(FROM_SECRET), which the webhook cannot resolve (valueFrom, envFrom, undefined, or too large to expand); the token agent gets it unexpanded"
        ])
    );
}
