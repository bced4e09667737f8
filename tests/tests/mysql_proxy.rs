//! The agent's MySQL proxy (mode=proxy) with the real agent binary, the
//! RDS-like MariaDB and real clients:
//!
//! - the `mariadb` CLI, PyMySQL, mysql2 and go-sql-driver/mysql log in
//!   through the Unix socket, MariaDB Connector/J through the TCP port, with
//!   no password and no code for IAM; the token reaches the server whole;
//! - `KILL QUERY` of a running `select sleep(30)` takes effect within 1 s;
//! - with credentials that live 3 minutes and `--interval 1m`, a session
//!   stays open past its token's expiry and runs queries throughout, and a
//!   new connection after every refresh logs in;
//! - the token never goes to a server that offers no TLS, or whose TLS
//!   handshake fails (a fake server records every byte);
//! - wrong user, upstream down, a user that is no IAM user (native password,
//!   ed25519), a token the server refuses, and the connection limit each get
//!   a MySQL error packet naming the cause, and the agent serves on.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use rds_iam_e2e::mariadbrds::{run_mariadb_args, MariaDbRds};
use rds_iam_e2e::mysqlagent::{mysql_spec, wait_for_change, Agent, Held};
use rds_iam_e2e::mysqlclients::{
    mysql_env, run_kill_query, run_mysql_client, MysqlAddr, MysqlClient,
};
use rds_iam_e2e::mysqlfake::{contains, FakeMysql, FakeTls};
use rds_iam_e2e::rdslab::free_port;
use rds_iam_e2e::rt::rt;
use rds_iam_e2e::stubs::{IssuedCreds, Stub};

const APP: &str = "app_user";
const OTHER: &str = "other_user";
/// A user with a password of its own (mysql_native_password).
const NATIVE: &str = "native_user";
/// A user of the ed25519 plugin.
const ED: &str = "ed_user";

fn lab() -> &'static MariaDbRds {
    static DB: OnceLock<MariaDbRds> = OnceLock::new();
    DB.get_or_init(|| {
        let db = MariaDbRds::start(&[APP, OTHER]).unwrap_or_else(|e| panic!("{e:#}"));
        db.sql(&format!(
            "INSTALL SONAME 'auth_ed25519';\n\
             CREATE USER '{NATIVE}'@'%' IDENTIFIED BY 'not-a-token' REQUIRE SSL;\n\
             CREATE USER '{ED}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('not-a-token') REQUIRE SSL;"
        ))
        .unwrap_or_else(|e| panic!("{e:#}"));
        db
    })
}

/// Fresh static credentials the lab trusts (a long session token, as STS's).
fn creds() -> IssuedCreds {
    let c = IssuedCreds::random(1200);
    lab()
        .add_key(&c.akid, &c.secret, Some(&c.session_token))
        .expect("add key");
    c
}

/// A proxied lab database: `NAME=mysql://USER@localhost:PORT[/DB]?...&mode=proxy`.
fn proxied(name: &str, user: &str, database: Option<&str>, params: &str) -> String {
    let db = lab();
    mysql_spec(
        name,
        user,
        db.host(),
        db.port(),
        database,
        &format!("&mode=proxy{params}"),
    )
}

/// The probes' env for `user` through `name`'s socket.
fn via_socket(agent: &Agent, name: &str, user: &str) -> Vec<(String, String)> {
    mysql_env(MysqlAddr::Socket(&agent.socket(name)), user, None)
}

fn accepted(akid: &str) -> Vec<String> {
    lab()
        .auth_log()
        .expect("auth log")
        .lines()
        .filter(|l| l.contains(&format!("akid={akid} ACCEPT")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_client_logs_in_through_the_proxy_with_no_password() {
    let db = lab();
    let c = creds();
    let port = free_port().expect("port");
    let agent = Agent::builder()
        .db(proxied(
            "default",
            APP,
            Some(APP),
            &format!("&sslmode=verify-full&proxy-port={port}"),
        ))
        .arg("--ca-file", db.ca_cert())
        .creds(&c)
        .start()
        .expect("agent");
    let socket = mysql_env(MysqlAddr::Socket(&agent.socket("default")), APP, Some(APP));
    let tcp = mysql_env(
        MysqlAddr::Tcp {
            host: "127.0.0.1",
            port,
        },
        APP,
        Some(APP),
    );
    let mut runs = 0;
    for kind in MysqlClient::ALL {
        if kind == MysqlClient::PyMysqlOptionFile {
            continue;
        }
        let env = if kind.supports_unix_socket() {
            &socket
        } else {
            &tcp
        };
        assert!(!env.iter().any(|(k, _)| k == "MYSQL_PWD"));
        let who = run_mysql_client(kind, env).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(who, format!("{APP}@%"), "{kind:?}");
        runs += 1;
    }
    let who = run_mysql_client(MysqlClient::PyMysql, &tcp).expect("PyMySQL over TCP");
    assert_eq!(who, format!("{APP}@%"));
    runs += 1;
    assert_eq!(runs, 6);
    // One login upstream per client, each with the whole token, over TLS
    // (the lab's users REQUIRE SSL).
    let token = agent.token("default").expect("token");
    let lines = accepted(&c.akid);
    assert_eq!(lines.len(), runs, "{lines:#?}");
    let whole = format!("(password {} bytes)", token.len());
    assert!(lines.iter().all(|l| l.ends_with(&whole)), "{lines:#?}");
    assert!(!agent.log().contains(&token), "the token is in the log");
    assert_eq!(
        agent
            .metric("rds_iam_proxy_connections_accepted_total{db=\"default\"}")
            .expect("metric"),
        runs as u64
    );
}

#[test]
fn kill_query_through_the_proxy_takes_effect_within_a_second() {
    let c = creds();
    let agent = Agent::builder()
        .db(proxied("default", APP, Some(APP), ""))
        .creds(&c)
        .start()
        .expect("agent");
    let after = Duration::from_millis(500);
    let env = mysql_env(MysqlAddr::Socket(&agent.socket("default")), APP, Some(APP));
    let k = run_kill_query(after, &env).expect("KILL QUERY probe");
    assert_eq!(k.code.as_deref(), Some("1317"), "{k:?}");
    assert!(
        k.elapsed < after + Duration::from_secs(1),
        "the query stopped {:?} after it started, {after:?} after the kill was due",
        k.elapsed
    );
    // The query's connection and the KILL's: two logins.
    assert_eq!(accepted(&c.akid).len(), 2);
}

/// `X-Amz-Date` + `X-Amz-Expires` of a token.
fn expiry(token: &str) -> SystemTime {
    let param = |name: &str| {
        token
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in the token"))
    };
    let d = param("X-Amz-Date");
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    let signed = humantime::parse_rfc3339(&rfc).expect("X-Amz-Date");
    signed + Duration::from_secs(param("X-Amz-Expires").parse().expect("X-Amz-Expires"))
}

#[test]
fn a_session_outlives_its_token_and_new_logins_follow_every_refresh() {
    let db = lab();
    let sts = rt().block_on(Stub::sts()).expect("STS stub");
    sts.set_lifetime(Duration::from_secs(180));
    let c = sts.creds();
    db.add_key(&c.akid, &c.secret, Some(&c.session_token))
        .expect("add key");
    let home = tempfile::tempdir().expect("temp");
    let jwt = home.path().join("jwt");
    std::fs::write(&jwt, "eyJhbGciOiJSUzI1NiJ9.irsa.sig").expect("jwt");
    let agent = Agent::builder()
        .db(proxied("default", APP, Some(APP), "&sslmode=verify-full"))
        .arg("--ca-file", db.ca_cert())
        .arg("--interval", "1m")
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/app")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &jwt)
        .env("AWS_ENDPOINT_URL_STS", sts.url())
        .start()
        .expect("agent");
    let env = via_socket(&agent, "default", APP);
    let first = agent.token("default").expect("token");
    let first_expiry = expiry(&first);
    assert!(
        first_expiry < SystemTime::now() + Duration::from_secs(181),
        "the token lives as long as the credentials"
    );
    let held = Held::start(&env, 210).expect("hold a session");
    let start = Instant::now();
    let token_path = agent.dir().join("token");
    let mut last = first.clone();
    let mut refreshes = 0;
    while start.elapsed() < Duration::from_secs(200) {
        let left = Duration::from_secs(200).saturating_sub(start.elapsed());
        let Ok(now) = wait_for_change(&token_path, &last, left) else {
            break;
        };
        last = now;
        refreshes += 1;
        let who = run_mysql_client(MysqlClient::Cli, &env)
            .unwrap_or_else(|e| panic!("login after refresh {refreshes}: {e:#}"));
        assert_eq!(who, format!("{APP}@%"));
    }
    let line = held.wait().expect("the held session");
    let queries: u32 = line
        .strip_prefix("queries=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(queries >= 150, "{line}");
    assert!(
        SystemTime::now() > first_expiry,
        "the session must outlive its token"
    );
    assert!(refreshes >= 3, "{refreshes} refreshes:\n{}", agent.log());
    // The first token is refused by now: the logins above used fresh ones.
    let err = run_mariadb_args(&db.login(APP, &first).mariadb_args()).expect_err("expired");
    assert!(format!("{err:#}").contains("1045"), "{err:#}");
    assert!(
        db.auth_log().expect("log").contains("token expired"),
        "{}",
        db.auth_log().expect("log")
    );
}

#[test]
fn the_token_never_goes_to_a_server_without_tls() {
    let notls = FakeMysql::start(FakeTls::NotOffered).expect("fake");
    let broken = FakeMysql::start(FakeTls::Broken).expect("fake");
    let c = IssuedCreds::random(100);
    let fake =
        |name: &str, port: u16| mysql_spec(name, APP, "127.0.0.1", port, None, "&mode=proxy");
    let agent = Agent::builder()
        .db(fake("notls", notls.port()))
        .db(fake("broken", broken.port()))
        .creds(&c)
        .start()
        .expect("agent");
    let cases = [
        (
            "notls",
            &notls,
            format!(
                "upstream 127.0.0.1:{p} (127.0.0.1:{p}) does not offer TLS, and the token is never sent without it",
                p = notls.port()
            ),
        ),
        (
            "broken",
            &broken,
            format!(
                "upstream 127.0.0.1:{p} (127.0.0.1:{p}): TLS handshake failed",
                p = broken.port()
            ),
        ),
    ];
    for (name, server, want) in &cases {
        let env = via_socket(&agent, name, APP);
        for kind in [MysqlClient::Cli, MysqlClient::PyMysql] {
            let err = run_mysql_client(kind, &env).expect_err("must be refused");
            let err = format!("{err:#}");
            assert!(
                err.contains("1043") && err.contains(want),
                "{kind:?} {name}: {err}"
            );
            assert!(
                *name != "broken"
                    || err.contains(
                        "likely cause: the server and the agent share no TLS version or cipher"
                    ),
                "{kind:?} {name}: {err}"
            );
        }
        let sent = server
            .wait_for(2, Duration::from_secs(10))
            .expect("connections");
        let token = agent.token(name).expect("token");
        for s in &sent {
            assert!(!contains(s, token.as_bytes()), "{name}: the token was sent");
            if *name == "notls" {
                assert_eq!(
                    s, b"",
                    "{name}: the proxy sent something after the greeting"
                );
            } else {
                // The SSLRequest (32 bytes, CLIENT_SSL set), then TLS
                // records of the handshake and an alert, never application
                // data.
                assert_eq!(s[..4], [32, 0, 0, 1], "{name}: {s:?}");
                assert_ne!(s[5] & 0x08, 0, "CLIENT_SSL");
                let mut rest = &s[36..];
                let mut types = Vec::new();
                while rest.len() >= 5 {
                    types.push(rest[0]);
                    let len = usize::from(rest[3]) << 8 | usize::from(rest[4]);
                    rest = &rest[(5 + len).min(rest.len())..];
                }
                assert_eq!(types.first(), Some(&0x16), "{name}: a ClientHello first");
                assert!(
                    types.iter().all(|t| *t == 0x16 || *t == 0x15),
                    "{name}: TLS records {types:?}"
                );
            }
        }
        assert_eq!(
            agent
                .metric(&format!(
                    "rds_iam_proxy_connections_failed_total{{db=\"{name}\",cause=\"upstream_tls\"}}"
                ))
                .expect("metric"),
            2
        );
    }
}

#[test]
fn errors_are_mysql_error_packets_naming_the_cause_and_the_agent_serves_on() {
    let db = lab();
    let c = creds();
    let down = free_port().expect("port");
    let p = db.port();
    let mut agent = Agent::builder()
        .db(proxied("default", APP, Some(APP), ""))
        .db(proxied("native", NATIVE, None, ""))
        .db(proxied("ed", ED, None, ""))
        .db(mysql_spec(
            "down",
            APP,
            "127.0.0.1",
            down,
            None,
            "&mode=proxy",
        ))
        // other_user's tokens must be signed for localhost, not 127.0.0.1.
        .db(mysql_spec(
            "wronghost",
            OTHER,
            "127.0.0.1",
            p,
            None,
            "&mode=proxy",
        ))
        .creds(&c)
        .start()
        .expect("agent");
    let good = || {
        let who = run_mysql_client(MysqlClient::Cli, &via_socket(&agent, "default", APP))
            .expect("a good login");
        assert_eq!(who, format!("{APP}@%"));
    };
    good();
    // After the greeting the CLI prints `ERROR code (state): message`; an
    // error instead of the greeting (the upstream is down, so there is no
    // greeting to pass on) as `code - message`, like a real server's.
    let cases = [
        (
            "default",
            "bob",
            "ERROR 1045 (28000): this rds-iam proxy serves user 'app_user' of database \"default\", not user 'bob'; connect as 'app_user'",
            "wrong_user",
        ),
        (
            "native",
            NATIVE,
            &*format!("ERROR 1045 (28000): upstream localhost:{p} did not ask for the token (mysql_clear_password): it refused the login at once: Access denied for user 'native_user'"),
            "upstream_auth_method",
        ),
        (
            "ed",
            ED,
            &*format!("ERROR 1045 (28000): upstream localhost:{p} did not ask for the token (mysql_clear_password): it asked for client_ed25519; 'ed_user' is not an IAM user"),
            "upstream_auth_method",
        ),
        (
            "down",
            APP,
            &*format!("1105 - cannot reach upstream 127.0.0.1:{down}: 127.0.0.1:{down}: Connection refused"),
            "upstream_unreachable",
        ),
        (
            "wronghost",
            OTHER,
            &*format!("ERROR 1045 (28000): upstream 127.0.0.1:{p} refused the token: Access denied for user 'other_user'"),
            "upstream_auth",
        ),
    ];
    for (name, user, want, cause) in cases {
        let err = run_mysql_client(MysqlClient::Cli, &via_socket(&agent, name, user))
            .expect_err("must be refused");
        assert!(format!("{err:#}").contains(want), "{name}: {err:#}");
        let series =
            format!("rds_iam_proxy_connections_failed_total{{db=\"{name}\",cause=\"{cause}\"}}");
        assert_eq!(agent.metric(&series).expect("metric"), 1, "{series}");
        good();
    }
    assert!(
        db.auth_log().expect("log").contains(&format!(
            "REJECT: token is for endpoint 127.0.0.1:{p}, this server is localhost:{p}"
        )),
        "the wrong host's token reached the verifier"
    );
    assert!(agent.alive(), "the agent exited:\n{}", agent.log());
    let log = agent.log();
    for name in ["default", "native", "down", "wronghost"] {
        assert!(!log.contains(&agent.token(name).expect("token")));
    }
}

#[test]
fn a_client_beyond_the_connection_limit_gets_an_error_packet() {
    let c = creds();
    let agent = Agent::builder()
        .db(proxied("default", APP, Some(APP), ""))
        .arg("--max-connections", "1")
        .creds(&c)
        .start()
        .expect("agent");
    let env = via_socket(&agent, "default", APP);
    let held = Held::start(&env, 6).expect("hold");
    let start = Instant::now();
    while agent
        .metric("rds_iam_proxy_connections_active{db=\"default\"}")
        .expect("metric")
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the held session never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = run_mysql_client(MysqlClient::Cli, &env).expect_err("over the limit");
    assert!(
        format!("{err:#}").contains("1040 - too many connections to the rds-iam proxy: the agent's --max-connections (RDS_IAM_MAX_CONNECTIONS) is reached"),
        "{err:#}"
    );
    held.wait().expect("the held session");
    assert_eq!(
        run_mysql_client(MysqlClient::Cli, &env).expect("after"),
        format!("{APP}@%")
    );
}
