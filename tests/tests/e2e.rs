//! The whole chain: the example Deployment's pod -> `rds-iam-webhook serve`
//! over TLS -> the patched pod run by the test kubelet, the agent from its OCI
//! image with runc -> stock psql (and psycopg, node-postgres, pgJDBC) log in to
//! the RDS-like PostgreSQL with the agent's tokens, across refresh cycles.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rds_iam_e2e::flow::{
    admission_review, apply_response, example_pod, point_at_lab, Chain, REPORTS, USER,
};
use rds_iam_e2e::kubelet::{Kubelet, PodRun};
use rds_iam_e2e::mariadbrds::{self, MariaDbRds};
use rds_iam_e2e::pgrds::{Client, Target};
use rds_iam_e2e::runc::{agent_image_archive, Image};
use serde_json::json;

/// Asserts that the patched pod's `app` container has each of `want` in
/// its env.
fn assert_app_env(pod: &k8s_openapi::api::core::v1::Pod, want: &[(&str, &str)]) -> Result<()> {
    let app = pod
        .spec
        .as_ref()
        .context("spec")?
        .containers
        .iter()
        .find(|c| c.name == "app")
        .context("app")?;
    let env: Vec<(&str, &str)> = app
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
        .collect();
    for kv in want {
        assert!(env.contains(kv), "{}={} missing in {env:?}", kv.0, kv.1);
    }
    Ok(())
}

fn say(s: &str) {
    eprintln!("{s}");
}

#[test]
fn example_pod_logs_in_across_refresh_cycles() -> Result<()> {
    let chain = Chain::start(&say)?;
    let port = chain.pg.port();
    let pod = example_pod(|p| {
        point_at_lab(p, port);
        p["metadata"]["annotations"]["rds-iam/refresh-interval"] = json!("1m");
    })?;
    let response = chain.review(&admission_review(&pod))?;
    let (patched, typed) = apply_response(&pod, &response)?;
    let spec = typed.spec.as_ref().context("spec")?;
    // The agent is the first init container, a native sidecar, as the app's UID.
    let agent = &spec.init_containers.as_ref().context("initContainers")?[0];
    assert_eq!(agent.restart_policy.as_deref(), Some("Always"));
    // 70 is the example pod's runAsUser (manifests/examples/deployment.yaml).
    assert_eq!(
        agent.security_context.as_ref().and_then(|s| s.run_as_user),
        Some(70)
    );
    assert_app_env(
        &typed,
        &[
            ("PGPASSFILE", "/var/run/rds-iam/pgpass"),
            ("PGHOST", "localhost"),
            ("PGUSER", USER),
            ("PGSSLMODE", "require"),
        ],
    )?;
    assert_eq!(
        patched["metadata"]["annotations"]["rds-iam/status"],
        json!("injected")
    );

    // The agent runs from the image `make images` built, with runc, under the pod's
    // securityContext; the app stays a local process with a read-only view of the volume.
    let kubelet = Kubelet {
        runc: Some(Arc::new(Image::unpack(&agent_image_archive())?)),
        ..chain.kubelet()?
    };
    let run = kubelet.run_pod(&typed, &say)?;
    run.wait_log("app", Duration::from_secs(60), |l| {
        l.lines().any(|x| x.trim() == USER)
    })?;
    let vol = run
        .volume_dir("rds-iam")
        .context("rds-iam volume")?
        .to_owned();
    check_agent_isolation(&run, &vol)?;

    // Three refresh cycles: after each new token, a new login works.
    let mut last = fs::read_to_string(vol.join("token"))?;
    for cycle in 1..=3 {
        let t = Instant::now();
        loop {
            let now = fs::read_to_string(vol.join("token"))?;
            if now != last {
                last = now;
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(90),
                "no refresh in cycle {cycle}:\n{}",
                run.logs("rds-iam-tokenagent")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = run.exec(
            "app",
            &["psql", "-X", "-A", "-t", "-c", "select current_user"],
        )?;
        assert!(
            out.status.success(),
            "cycle {cycle}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            USER,
            "cycle {cycle}"
        );
        // The named database, through pg_service.conf and its own pgpass line.
        let out = run.exec(
            "app",
            &[
                "psql",
                "-X",
                "-A",
                "-t",
                &format!("service={REPORTS}"),
                "-c",
                "select current_database()",
            ],
        )?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            REPORTS,
            "cycle {cycle}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        say(&format!(
            "refresh cycle {cycle}: psql logged in to both databases with the new tokens"
        ));
    }
    // The same injected env and files work for the other clients.
    let extra = vec![(
        "NODE_EXTRA_CA_CERTS".to_owned(),
        chain.pg.ca_cert().display().to_string(),
    )];
    let url_env = format!("RDS_IAM_{}_URL", REPORTS.to_uppercase());
    let token_env = format!("RDS_IAM_{}_TOKEN_FILE", REPORTS.to_uppercase());
    let named = [
        (Client::Psycopg, Target::Service(REPORTS)),
        (Client::Jdbc, Target::Service(REPORTS)),
        (
            Client::Node,
            Target::Url {
                url_env: &url_env,
                token_env: &token_env,
            },
        ),
        (
            Client::Asyncpg,
            Target::Url {
                url_env: &url_env,
                token_env: &token_env,
            },
        ),
    ];
    for (kind, target) in named {
        let argv = kind.argv_to(target)?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = run.exec_as_root("app", &argv, &extra)?;
        assert!(
            out.status.success(),
            "{kind:?} to {REPORTS}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            USER,
            "{kind:?} to {REPORTS}"
        );
    }
    for kind in [Client::Psycopg, Client::Node, Client::Jdbc] {
        let argv = kind.argv()?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = run.exec_as_root("app", &argv, &extra)?;
        assert!(
            out.status.success(),
            "{kind:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            USER,
            "{kind:?}"
        );
    }
    let agent_log = run.logs("rds-iam-tokenagent");
    assert!(!agent_log.contains(&last), "the token must not be logged");
    let stopped = run.stop()?;
    for (name, st) in &stopped {
        assert!(st.success() || st.code().is_none(), "{name} exited {st}");
    }
    Ok(())
}

/// What the patch asks for holds in the running pod: the agent process runs as the app's
/// UID with no capabilities and no_new_privs, on a read-only root filesystem, and writes
/// into a tmpfs that the app container can read but not write.
fn check_agent_isolation(run: &PodRun, vol: &Path) -> Result<()> {
    let agent = run
        .runc_container("rds-iam-tokenagent")
        .context("the agent is not a runc container")?;
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid()?))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), "70 70 70 70", "{status}");
    assert_eq!(field("Gid"), "70 70 70 70", "{status}");
    assert_eq!(field("CapEff"), "0000000000000000", "{status}");
    assert_eq!(field("CapBnd"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs"), "1", "{status}");

    // The volume is a tmpfs on the node.
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let vol_s = vol.display().to_string();
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(vol_s.as_str()) && l.starts_with("tmpfs ")),
        "{vol_s} is not a tmpfs:\n{mounts}"
    );

    // The image's root filesystem is read-only for the agent: a write there fails.
    let out = run.exec(
        "rds-iam-tokenagent",
        &[
            "rds-iam-tokenagent",
            "--once",
            "--log-format",
            "text",
            "--dir",
            "/usr/local/bin",
        ],
    )?;
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "wrote into the image: {err}");
    assert!(err.contains("Read-only file system"), "{err}");

    // The app container's mount is read-only: it can read the token but not write there.
    let out = run.exec("app", &["touch", "/var/run/rds-iam/app-was-here"])?;
    assert!(
        !out.status.success(),
        "the app wrote into the rds-iam volume"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!vol.join("app-was-here").exists());
    let out = run.exec("app", &["cat", "/var/run/rds-iam/token"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn second_app_container_with_another_uid_is_denied() -> Result<()> {
    let chain = Chain::start(&say)?;
    let port = chain.pg.port();
    let pod = example_pod(|p| {
        point_at_lab(p, port);
        let mut second = p["spec"]["containers"][0].clone();
        second["name"] = json!("worker");
        second["securityContext"]["runAsUser"] = json!(1001);
        p["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(second);
    })?;
    let response = chain.review(&admission_review(&pod))?;
    let r = &response["response"];
    assert_eq!(r["allowed"], json!(false), "{response}");
    let msg = r["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("rds-iam/"),
        "the message names an annotation: {msg}"
    );
    assert!(
        msg.contains("1001") && msg.contains("70"),
        "the message names both UIDs: {msg}"
    );
    Ok(())
}

/// Proxy mode end to end: the example pod with `rds-iam/mode: proxy`; its app
/// is asyncpg, which fails with the agent's pgpass (it keeps the backslash
/// escapes) and works through the agent's socket, with no password, through
/// the app's read-only view of the volume.
#[test]
fn proxy_mode_pod_serves_a_client_that_fails_with_the_passfile() -> Result<()> {
    let chain = Chain::start(&say)?;
    let port = chain.pg.port();
    let files_pod = example_pod(|p| point_at_lab(p, port))?;
    let mut proxy_pod = files_pod.clone();
    proxy_pod["metadata"]["annotations"]["rds-iam/mode"] = json!("proxy");

    // Files mode first: asyncpg, given only the libpq environment, fails.
    let response = chain.review(&admission_review(&files_pod))?;
    let (_, typed) = apply_response(&files_pod, &response)?;
    let kubelet = Kubelet {
        runc: Some(Arc::new(Image::unpack(&agent_image_archive())?)),
        ..chain.kubelet()?
    };
    let run = kubelet.run_pod(&typed, &say)?;
    let asyncpg = Client::Asyncpg.argv()?;
    let asyncpg: Vec<&str> = asyncpg.iter().map(String::as_str).collect();
    let out = run.exec_as_root("app", &asyncpg, &[])?;
    assert!(
        !out.status.success(),
        "asyncpg logged in with the pgpass: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    run.stop()?;

    // Proxy mode: the same client, the same (injected) environment.
    let response = chain.review(&admission_review(&proxy_pod))?;
    let (_, typed) = apply_response(&proxy_pod, &response)?;
    assert_app_env(
        &typed,
        &[
            ("PGHOST", "/var/run/rds-iam"),
            ("PGPORT", "5432"),
            ("PGSSLMODE", "disable"),
        ],
    )?;
    let run = kubelet.run_pod(&typed, &say)?;
    // The socket, in the volume, private to the app's UID.
    let vol = run.volume_dir("rds-iam").context("volume")?.to_owned();
    let meta = fs::metadata(vol.join(".s.PGSQL.5432"))?;
    use std::os::unix::fs::MetadataExt;
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 70);
    // asyncpg lives in a venv the app's UID cannot reach here: run it as root with
    // the app's env; psql, below, connects as the app's UID.
    let out = run.exec_as_root("app", &asyncpg, &[])?;
    assert!(
        out.status.success(),
        "asyncpg through the proxy: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        run.logs("rds-iam-tokenagent")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), USER);
    // psql as the app's UID, through the read-only mount of the socket.
    let out = run.exec(
        "app",
        &["psql", "-X", "-A", "-t", "-c", "select current_user"],
    )?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        USER,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = run.stop()?;
    for (name, st) in &stopped {
        assert!(st.success() || st.code().is_none(), "{name} exited {st}");
    }
    Ok(())
}

/// One pod, two engines: the example's PostgreSQL database (files mode) and
/// a named MySQL database `shop` in proxy mode, against the RDS-like
/// MariaDB. Stock `psql` and the stock `mariadb` CLI, as the app's UID, log
/// in with only the injected env: through the agent's MySQL socket and
/// through its `my.cnf` (the direct TLS connection).
#[test]
fn pod_with_a_postgres_and_a_mysql_database_logs_in_to_both() -> Result<()> {
    const SHOP_USER: &str = "shop_app";
    let chain = Chain::start(&say)?;
    say("starting an RDS-like MariaDB: TLS, PAM verifies the same SigV4 tokens, users REQUIRE SSL");
    let maria = MariaDbRds::start(&[SHOP_USER])?;
    let c = chain.sts.creds();
    maria.add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let pod = example_pod(|p| {
        point_at_lab(p, chain.pg.port());
        let a = &mut p["metadata"]["annotations"];
        for (field, value) in [
            ("engine", "mysql".to_owned()),
            ("mode", "proxy".to_owned()),
            ("host", maria.host().to_owned()),
            ("port", maria.port().to_string()),
            ("user", SHOP_USER.to_owned()),
            ("database", SHOP_USER.to_owned()),
            ("region", maria.region().to_owned()),
        ] {
            a[format!("rds-iam/shop.{field}")] = json!(value);
        }
    })?;
    let response = chain.review(&admission_review(&pod))?;
    assert_eq!(response["response"]["allowed"], json!(true), "{response:#}");
    let (_, typed) = apply_response(&pod, &response)?;
    let kubelet = Kubelet {
        runc: Some(Arc::new(Image::unpack(&agent_image_archive())?)),
        ..chain.kubelet()?
    };
    let run = kubelet.run_pod(&typed, &say)?;
    let logs = || run.logs("rds-iam-tokenagent");

    // PostgreSQL, as before: psql with the PG* env and the pgpass.
    let out = run.exec(
        "app",
        &["psql", "-X", "-A", "-t", "-c", "select current_user"],
    )?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        USER,
        "psql: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );

    // MySQL through the agent's socket: no password, no TLS options.
    let vol = run.volume_dir("rds-iam").context("volume")?.to_owned();
    let meta = fs::metadata(vol.join("shop/mysqld.sock"))?;
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let proxied = format!(
        "exec mariadb --no-defaults -S \"$RDS_IAM_SHOP_MYSQL_UNIX_PORT\" -u {SHOP_USER} -D {SHOP_USER} -N -B -e 'select current_user(), database()'"
    );
    let out = run.exec("app", &["sh", "-c", &proxied])?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{SHOP_USER}@%\t{SHOP_USER}"),
        "mariadb through the proxy: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );

    // MySQL through my.cnf: the direct TLS connection, the group of `shop`.
    let direct = format!(
        "exec mariadb --defaults-extra-file=\"$RDS_IAM_MYSQL_CNF\" --defaults-group-suffix=_shop -N -B -e '{}'",
        mariadbrds::PROBE_SQL.replace('\'', "\"")
    );
    let out = run.exec("app", &["sh", "-c", &direct])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.trim().split('\t').collect();
    assert_eq!(
        fields.first().copied(),
        Some(format!("{SHOP_USER}@%").as_str()),
        "mariadb with my.cnf: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    assert!(
        fields.get(1).is_some_and(|v| v.starts_with("TLSv1.")),
        "my.cnf login without TLS: {stdout}"
    );
    let stopped = run.stop()?;
    for (name, st) in &stopped {
        assert!(st.success() || st.code().is_none(), "{name} exited {st}");
    }
    Ok(())
}
