//! The agent's PostgreSQL proxy mode, end to end: the real agent binary
//! with `mode=proxy`, the RDS-like PostgreSQL (TLS only, IAM tokens checked
//! by an independent SigV4 verifier) and real clients with only the
//! environment the webhook injects, no password anywhere.
//!
//! - every client through the socket (pgJDBC through the TCP port), one token
//!   for every connection of a refresh interval;
//! - session state, startup parameters, protocol 3.2 and the encryption
//!   requests pass through; BackendKeyData unchanged, one upstream session
//!   per client;
//! - cancel within a second (psycopg `cancel()`, pgx context);
//! - failures: wrong user, upstream down or stuck, TLS refused, SCRAM asked,
//!   the token refused; each an ErrorResponse within the connect timeout,
//!   the agent goes on, the metrics count each cause;
//! - sslmode verify-ca / verify-full against a CA, direct TLS with ALPN;
//! - another UID is refused at the socket;
//! - the startup probe, and SIGTERM for native and classic sidecars.
//!
//! The connection limit is in `proxy_pg_limit.rs`, the run across token
//! refreshes in `proxy_pg_expiry.rs` (their own binaries, run in parallel).

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rds_iam_e2e::agentproc::{agent_command, run as run_cmd};
use rds_iam_e2e::localdb::{TcpAuth, TrustPg};
use rds_iam_e2e::pgrds::{free_port, run_client, run_client_to, Client, PgRds, Target};
use rds_iam_e2e::pgwire::{self, Addr, Conn, PgError, GSSENC_REQUEST, SSL_REQUEST, V3_0, V3_2};
use rds_iam_e2e::probes::{run_cancel, Canceller};
use rds_iam_e2e::proxyagent::{proxy_spec, psql, run, token_fingerprint, ProxyAgent, DEFAULT_DB};
use rds_iam_e2e::rt::rt;
use rds_iam_e2e::stubs::IssuedCreds;

const USER: &str = "app_user";
const OTHER: &str = "other_user";

fn lab() -> &'static PgRds {
    static PG: OnceLock<PgRds> = OnceLock::new();
    PG.get_or_init(|| PgRds::start(&[USER, OTHER]).expect("start the RDS-like PostgreSQL"))
}

/// Credentials of one test, registered with the lab: the lab's log tells
/// each test's logins apart by their access key.
fn fresh_creds() -> IssuedCreds {
    let c = IssuedCreds::random(600);
    lab()
        .add_key(&c.akid, &c.secret, Some(&c.session_token))
        .expect("register the test's key");
    c
}

/// The default database on the lab, in proxy mode.
fn lab_spec(extra: &str) -> String {
    proxy_spec(DEFAULT_DB, USER, "localhost", lab().port(), USER, extra)
}

fn lab_agent(c: &IssuedCreds) -> ProxyAgent {
    ProxyAgent::builder()
        .db(lab_spec(""))
        .creds(c)
        .start()
        .expect("start the agent")
}

/// An agent for the lab that also listens on a free loopback TCP port.
fn lab_agent_with_tcp_port(c: &IssuedCreds) -> Result<(ProxyAgent, u16)> {
    let port = free_port()?;
    let agent = ProxyAgent::builder()
        .db(lab_spec(&format!("&proxy-port={port}")))
        .creds(c)
        .start()?;
    Ok((agent, port))
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
}

/// The lab's logins with `akid`: (fingerprint, ACCEPT or REJECT).
fn lab_logins(akid: &str) -> Vec<(String, String)> {
    let log = lab().auth_log().expect("the lab's auth log");
    log.lines()
        .filter(|l| l.contains(&format!(" akid={akid} ")))
        .map(|l| {
            let fp = l
                .split(" fp=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
            let verdict = if l.contains(" ACCEPT: ") {
                "ACCEPT"
            } else {
                "REJECT"
            };
            (fp, verdict.to_owned())
        })
        .collect()
}

fn login_ok(addr: &Addr, user: &str, db: &str) -> pgwire::Session {
    pgwire::login(addr, user, db)
        .expect("connect")
        .unwrap_or_else(|e| panic!("login as {user} refused: {e}"))
}

/// Runs a statement that returns no rows; fails on an error.
fn exec(s: &mut pgwire::Session, sql: &str) -> Result<()> {
    s.query(sql)?
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{sql}: {e}"))
}

fn login_refused(addr: &Addr, user: &str, db: &str) -> PgError {
    match pgwire::login(addr, user, db).expect("connect") {
        Ok(_) => panic!("login as {user} to {db} through {addr:?} should be refused"),
        Err(e) => e,
    }
}

#[test]
fn every_client_logs_in_through_the_proxy_with_only_the_injected_env() -> Result<()> {
    let c = fresh_creds();
    let (agent, tcp_port) = lab_agent_with_tcp_port(&c)?;
    let env = agent.env(DEFAULT_DB, USER, USER);
    assert!(
        env.iter().all(|(k, _)| k != "PGPASSWORD"),
        "no password in the env"
    );
    let mut ran = Vec::new();
    for kind in Client::FROM_ENV
        .into_iter()
        .filter(|k| k.supports_unix_socket())
    {
        let who = run_client(kind, &env).with_context(|| format!("{kind:?} through the socket"))?;
        assert_eq!(who, USER, "{kind:?}");
        ran.push(format!("{kind:?}"));
    }
    // asyncpg from the env alone: it reads PGPASSFILE, finds no line for the
    // socket and sends no password, which the proxy never asks for.
    let who = run_client(Client::Asyncpg, &env).context("asyncpg from the env")?;
    assert_eq!(who, USER, "asyncpg from the env");
    ran.push("Asyncpg".into());
    // And from a URL (a named database's proxy URL) with a password from a
    // token file: an empty one, since the proxy asks for none.
    let empty = agent.home().join("empty-token");
    std::fs::write(&empty, "")?;
    let mut url_env = env.clone();
    url_env.push((
        "DATABASE_URL".into(),
        format!(
            "postgresql:///{USER}?host={}&port=5432&user={USER}&sslmode=disable",
            agent.dir().display()
        ),
    ));
    url_env.push(("EMPTY_TOKEN_FILE".into(), empty.display().to_string()));
    let who = run_client_to(
        Client::Asyncpg,
        Target::Url {
            url_env: "DATABASE_URL",
            token_env: "EMPTY_TOKEN_FILE",
        },
        &url_env,
    )?;
    assert_eq!(who, USER, "asyncpg");
    // pgJDBC has no Unix sockets: it takes the TCP port, with its default
    // sslmode=prefer (an SSLRequest, answered N) and with disable.
    let mut tcp_env = env.clone();
    set(&mut tcp_env, "PGHOST", "127.0.0.1");
    set(&mut tcp_env, "PGPORT", &tcp_port.to_string());
    assert_eq!(run_client(Client::Jdbc, &tcp_env)?, USER, "pgJDBC, disable");
    set(&mut tcp_env, "PGSSLMODE", "prefer");
    assert_eq!(run_client(Client::Jdbc, &tcp_env)?, USER, "pgJDBC, prefer");
    assert_eq!(run_client(Client::Psql, &tcp_env)?, USER, "psql, prefer");

    // Every login reached the lab with the agent's current token.
    let logins = lab_logins(&c.akid);
    let fp = token_fingerprint(&agent.token(DEFAULT_DB)?)?;
    assert!(
        logins.len() >= ran.len() + 4,
        "{} logins for {} clients",
        logins.len(),
        ran.len() + 4
    );
    assert!(
        logins.iter().all(|(f, v)| *f == fp && v == "ACCEPT"),
        "every login with the token file's token ({fp}): {logins:?}"
    );
    assert_eq!(
        agent.metric("rds_iam_proxy_connections_accepted_total{db=\"default\"}")?,
        logins.len() as u64,
        "one accepted connection per login the lab saw"
    );
    assert_eq!(
        agent.metric("rds_iam_proxy_connections_active{db=\"default\"}")?,
        0
    );
    Ok(())
}

#[test]
fn connections_within_one_refresh_interval_share_one_token() -> Result<()> {
    let c = fresh_creds();
    let agent = lab_agent(&c);
    let addr = agent.socket(DEFAULT_DB);
    let sessions: Vec<pgwire::Session> = (0..20).map(|_| login_ok(&addr, USER, USER)).collect();
    let pids: BTreeSet<u32> = sessions.iter().map(|s| s.pid).collect();
    assert_eq!(pids.len(), 20, "one upstream session per client: {pids:?}");
    assert_eq!(
        agent.metric("rds_iam_proxy_connections_active{db=\"default\"}")?,
        20
    );
    let logins = lab_logins(&c.akid);
    let fps: BTreeSet<&str> = logins.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(logins.len(), 20, "{logins:?}");
    assert_eq!(
        fps,
        BTreeSet::from([token_fingerprint(&agent.token(DEFAULT_DB)?)?.as_str()]),
        "20 logins, one token"
    );
    for s in sessions {
        s.terminate();
    }
    Ok(())
}

#[test]
fn session_state_and_startup_parameters_pass_through() -> Result<()> {
    let c = fresh_creds();
    let agent = lab_agent(&c);
    // libpq's application_name, options and another database go up unchanged.
    let mut env = agent.env(DEFAULT_DB, USER, "postgres");
    env.push(("PGAPPNAME".into(), "proxied-app".into()));
    env.push(("PGOPTIONS".into(), "-c statement_timeout=4321".into()));
    let out = psql(
        &env,
        "select current_database(), current_setting('application_name'), current_setting('statement_timeout')",
    )?;
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "postgres|proxied-app|4321ms");

    let addr = agent.socket(DEFAULT_DB);
    let mut a = login_ok(&addr, USER, USER);
    let mut b = login_ok(&addr, USER, USER);
    // BackendKeyData is the backend's own; each client has its own backend.
    assert_eq!(a.value("select pg_backend_pid()")?, a.pid.to_string());
    assert_eq!(b.value("select pg_backend_pid()")?, b.pid.to_string());
    assert_ne!(a.pid, b.pid);
    assert_eq!(a.secret.len(), 4, "protocol 3.0: a 4-byte cancel key");
    // Session state stays with the session.
    for sql in [
        "prepare twice(int) as select $1 * 2",
        "set work_mem = '7MB'",
        "create temp table t (x int)",
        "insert into t values (1), (2)",
        "listen proxied",
    ] {
        exec(&mut a, sql)?;
    }
    assert_eq!(a.value("execute twice(21)")?, "42");
    assert_eq!(a.value("show work_mem")?, "7MB");
    assert_eq!(a.value("select sum(x) from t")?, "3");
    exec(&mut b, "notify proxied, 'from b'")?;
    assert_eq!(a.value("select 1")?, "1");
    assert_eq!(
        a.notifications,
        vec![("proxied".to_owned(), "from b".to_owned())]
    );
    // None of it leaks into the other session.
    assert_eq!(b.value("show work_mem")?, "4MB");
    let e = b.query("execute twice(1)")?.expect_err("not prepared in b");
    assert_eq!(e.code, "26000", "{e}");
    let e = b.query("select * from t")?.expect_err("no temp table in b");
    assert_eq!(e.code, "42P01", "{e}");
    a.terminate();
    b.terminate();
    Ok(())
}

#[test]
fn encryption_requests_are_refused_and_protocol_3_2_passes_through() -> Result<()> {
    let c = fresh_creds();
    let (agent, tcp_port) = lab_agent_with_tcp_port(&c)?;
    for addr in [agent.socket(DEFAULT_DB), Addr::Tcp(tcp_port)] {
        let mut conn = Conn::open(&addr)?;
        assert_eq!(pgwire::encryption_request(&mut conn, GSSENC_REQUEST)?, b'N');
        assert_eq!(pgwire::encryption_request(&mut conn, SSL_REQUEST)?, b'N');
        let mut s = pgwire::startup(
            conn,
            V3_2,
            &[
                ("user", USER),
                ("database", USER),
                ("application_name", "raw 3.2"),
                ("_pq_.test_extension", "on"),
            ],
        )?
        .map_err(|e| anyhow::anyhow!("{addr:?}: {e}"))?;
        // PostgreSQL 15 speaks 3.0: its NegotiateProtocolVersion reaches the
        // client, naming the option it does not know.
        assert_eq!(
            s.negotiated,
            Some((V3_0, vec!["_pq_.test_extension".to_owned()])),
            "{addr:?}"
        );
        assert_eq!(
            s.params.get("application_name").map(String::as_str),
            Some("raw 3.2")
        );
        assert_eq!(s.value("select pg_backend_pid()")?, s.pid.to_string());
        s.terminate();
    }
    Ok(())
}

#[test]
fn queries_are_cancelled_within_a_second_through_the_proxy() -> Result<()> {
    const AFTER: Duration = Duration::from_millis(200);
    let c = fresh_creds();
    let agent = lab_agent(&c);
    let env = agent.env(DEFAULT_DB, USER, USER);
    for kind in Canceller::ALL {
        let r = run_cancel(kind, AFTER, &env).with_context(|| format!("{kind:?}"))?;
        assert!(
            r.elapsed >= AFTER && r.elapsed < Duration::from_secs(1),
            "{kind:?}: stopped after {:?}: {r:?}",
            r.elapsed
        );
        match kind {
            // pgx returns at the deadline; its probe waits until the
            // backend no longer runs the query.
            Canceller::PgxContext => {
                assert!(r.error.contains("context deadline exceeded"), "{r:?}")
            }
            _ => assert_eq!(r.code.as_deref(), Some("57014"), "{kind:?}: {r:?}"),
        }
    }
    let forwarded = agent.log().matches("cancel request forwarded").count();
    assert!(
        forwarded >= Canceller::ALL.len(),
        "{forwarded} cancel requests forwarded:\n{}",
        agent.log()
    );
    Ok(())
}

#[test]
fn a_wrong_user_is_refused_naming_both_users_and_the_agent_goes_on() -> Result<()> {
    let c = fresh_creds();
    let agent = lab_agent(&c);
    let env = agent.env(DEFAULT_DB, OTHER, USER);
    let out = psql(&env, "select 1")?;
    assert!(!out.success());
    assert!(
        out.stderr.contains(
            "this rds-iam proxy serves user \"app_user\" of database \"default\", not user \"other_user\""
        ),
        "{}",
        out.stderr
    );
    let e = login_refused(&agent.socket(DEFAULT_DB), OTHER, USER);
    assert_eq!(e.code, "28000", "{e}");
    assert_eq!(e.hint.as_deref(), Some("connect as \"app_user\" (PGUSER)"));
    assert!(lab_logins(&c.akid).is_empty(), "nothing reached the lab");
    assert_eq!(agent.failures(DEFAULT_DB, "wrong_user")?, 2);
    let who = run_client(Client::Psql, &agent.env(DEFAULT_DB, USER, USER))?;
    assert_eq!(who, USER, "the agent goes on");
    Ok(())
}

/// A TCP port that completes the handshake and never answers (its
/// listener never accepts).
fn stuck_port() -> Result<(std::net::TcpListener, u16)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

fn plain_pg() -> &'static TrustPg {
    static PG: OnceLock<TrustPg> = OnceLock::new();
    PG.get_or_init(|| TrustPg::start_with(&[USER], TcpAuth::Plain, 20).expect("start TrustPg"))
}

fn scram_pg() -> &'static TrustPg {
    static PG: OnceLock<TrustPg> = OnceLock::new();
    PG.get_or_init(|| TrustPg::start_with(&[USER], TcpAuth::TlsScram, 20).expect("start TrustPg"))
}

fn tls_pg() -> &'static TrustPg {
    static PG: OnceLock<TrustPg> = OnceLock::new();
    PG.get_or_init(|| TrustPg::start_with(&[USER], TcpAuth::TlsTrust, 20).expect("start TrustPg"))
}

#[test]
fn upstream_failures_are_errors_within_the_connect_timeout() -> Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let c = fresh_creds();
    let down = free_port()?;
    let (_stuck_listener, stuck) = stuck_port()?;
    let notls = plain_pg().port();
    let scram = scram_pg().port();
    let lab_port = lab().port();
    let agent = ProxyAgent::builder()
        .db(lab_spec(""))
        .db(proxy_spec("down", USER, "localhost", down, USER, ""))
        .db(proxy_spec("stuck", USER, "localhost", stuck, USER, ""))
        .db(proxy_spec("notls", USER, "localhost", notls, USER, ""))
        .db(proxy_spec("scram", USER, "localhost", scram, USER, ""))
        // A token for another region: the lab refuses it.
        .db(
            proxy_spec("refused", OTHER, "localhost", lab_port, USER, "")
                .replace("us-east-1", "eu-west-1"),
        )
        .creds(&c)
        .arg("--connect-timeout", "2s")
        .start()?;
    // (database, user, SQLSTATE, message, hint, failure cause)
    let cases: [(&str, &str, &str, String, &str, &str); 5] = [
        (
            "down",
            USER,
            "08001",
            format!("cannot reach upstream localhost:{down}: "),
            "check rds-iam/host and rds-iam/port",
            "upstream_unreachable",
        ),
        (
            "stuck",
            USER,
            "08001",
            format!("upstream localhost:{stuck} did not complete the login within 2s"),
            "",
            "upstream_unreachable",
        ),
        (
            "notls",
            USER,
            "08006",
            format!("upstream localhost:{notls} (127.0.0.1:{notls}): refused TLS (answered 'N' to the SSLRequest); the token is never sent without TLS"),
            "IAM authentication needs TLS: enable SSL on the server",
            "upstream_tls",
        ),
        (
            "scram",
            USER,
            "28P01",
            format!("upstream localhost:{scram} asked for SASL authentication (SCRAM-SHA-256-PLUS, SCRAM-SHA-256), not for a password: IAM authentication cannot answer it"),
            "the user \"app_user\" is probably not granted rds_iam (GRANT rds_iam TO \"app_user\"), or IAM authentication is off on the server",
            "upstream_auth_method",
        ),
        (
            "refused",
            OTHER,
            "28P01",
            format!("upstream localhost:{lab_port} refused the login: PAM authentication failed for user \"other_user\" (SQLSTATE 28000)"),
            "check that \"other_user\" is granted rds_iam",
            "upstream_auth",
        ),
    ];
    for (db, user, code, message, hint, cause) in &cases {
        let started = Instant::now();
        let e = login_refused(&agent.socket(db), user, USER);
        let took = started.elapsed();
        assert!(
            took < TIMEOUT + Duration::from_millis(500),
            "{db}: answered after {took:?}"
        );
        if *db == "stuck" {
            assert!(took >= TIMEOUT, "{db}: answered after {took:?}");
        }
        assert_eq!(e.severity, "FATAL", "{db}: {e}");
        assert_eq!(e.code, *code, "{db}: {e}");
        assert!(e.message.starts_with(message.as_str()), "{db}: {e}");
        assert!(
            e.hint.as_deref().unwrap_or_default().starts_with(hint),
            "{db}: {e}"
        );
        if *db == "down" {
            assert!(e.message.contains("Connection refused"), "{e}");
        }
        // A real client shows the same message.
        let out = psql(&agent.env(db, user, USER), "select 1")?;
        assert!(!out.success(), "{db}");
        assert!(
            out.stderr.contains(message.as_str()),
            "{db}: {}",
            out.stderr
        );
        assert_eq!(agent.failures(db, cause)?, 2, "{db}: {cause}");
    }
    for db in ["scram", "refused"] {
        assert_eq!(
            agent.metric(&format!(
                "rds_iam_proxy_upstream_auth_failures_total{{db=\"{db}\"}}"
            ))?,
            2,
            "{db}"
        );
    }
    for db in ["down", "stuck", "notls"] {
        assert_eq!(
            agent.metric(&format!(
                "rds_iam_proxy_upstream_auth_failures_total{{db=\"{db}\"}}"
            ))?,
            0,
            "{db}"
        );
    }
    let rejected = lab_logins(&c.akid);
    assert!(
        rejected.len() == 2 && rejected.iter().all(|(_, v)| v == "REJECT"),
        "the lab refused the other region's token twice: {rejected:?}"
    );
    // The agent goes on: the working database still logs in.
    let who = run_client(Client::Psql, &agent.env(DEFAULT_DB, USER, USER))?;
    assert_eq!(who, USER);
    // No token in the agent's log.
    let log = agent.log();
    for db in [DEFAULT_DB, "refused"] {
        assert!(!log.contains(&agent.token(db)?), "a token in the log");
    }
    assert!(!log.contains(&c.secret) && !log.contains(&c.session_token));
    Ok(())
}

#[test]
fn verify_full_and_verify_ca_check_the_server_certificate() -> Result<()> {
    let pg = tls_pg();
    let ca = pg.ca_cert();
    let c = fresh_creds();
    let spec = |name: &str, host: &str, mode: &str| {
        proxy_spec(
            name,
            USER,
            host,
            pg.port(),
            USER,
            &format!("&sslmode={mode}"),
        )
    };
    let agent = ProxyAgent::builder()
        .db(spec("full", "localhost", "verify-full"))
        .db(spec("fullip", "127.0.0.1", "verify-full"))
        .db(spec("caip", "127.0.0.1", "verify-ca"))
        .creds(&c)
        .arg("--ca-file", &ca.display().to_string())
        .start()?;
    for db in ["full", "caip"] {
        let mut s = login_ok(&agent.socket(db), USER, USER);
        assert_eq!(
            s.value("select ssl::text from pg_stat_ssl where pid = pg_backend_pid()")?,
            "true",
            "{db}"
        );
        s.terminate();
    }
    // The certificate names localhost only.
    let e = login_refused(&agent.socket("fullip"), USER, USER);
    assert!(
        e.message.contains("TLS handshake failed") && e.message.contains("not valid for name"),
        "{e}"
    );
    assert!(
        e.hint
            .as_deref()
            .is_some_and(|h| h.contains("or is not for the host name")),
        "{e:?}"
    );
    // Another CA: the lab's self-signed certificate.
    let other = ProxyAgent::builder()
        .db(spec("ca", "localhost", "verify-ca"))
        .creds(&c)
        .arg("--ca-file", &lab().ca_cert().display().to_string())
        .start()?;
    let e = login_refused(&other.socket("ca"), USER, USER);
    assert!(
        e.message.contains("TLS handshake failed") && e.message.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(
        e.hint.as_deref().is_some_and(|h| h.starts_with(
            "the server's certificate is not signed by the CA bundle of rds-iam/ca-configmap"
        )),
        "{e:?}"
    );
    assert_eq!(other.failures("ca", "upstream_tls")?, 1);
    Ok(())
}

/// The ALPN protocol each connection to a direct-TLS front negotiated, in
/// order (`None`: its handshake failed).
type Negotiated = Arc<Mutex<Vec<Option<Vec<u8>>>>>;

/// A direct-TLS front like PostgreSQL 17's: TLS from the first byte, and a
/// connection without ALPN `postgresql` is closed; after the handshake the
/// bytes go to `backend` (a PostgreSQL without TLS). Records what each
/// connection negotiated.
fn direct_tls_front(backend: u16) -> Result<(u16, Negotiated)> {
    use rcgen::generate_simple_self_signed;
    let cert = generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
    )?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let seen2 = seen.clone();
    rt().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    seen.lock().expect("lock").push(None);
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                seen.lock().expect("lock").push(alpn.clone());
                if alpn.as_deref() != Some(b"postgresql") {
                    return;
                }
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    Ok((port, seen))
}

#[test]
fn direct_tls_starts_with_the_handshake_and_offers_alpn_postgresql() -> Result<()> {
    let (front, seen) = direct_tls_front(plain_pg().port())?;
    let c = fresh_creds();
    let agent = ProxyAgent::builder()
        .db(proxy_spec(
            "direct",
            USER,
            "localhost",
            front,
            USER,
            "&sslnegotiation=direct",
        ))
        .db(proxy_spec("classic", USER, "localhost", front, USER, ""))
        .creds(&c)
        .start()?;
    let mut s = login_ok(&agent.socket("direct"), USER, USER);
    assert_eq!(s.value("select current_user")?, USER);
    s.terminate();
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![Some(b"postgresql".to_vec())]
    );
    // The SSLRequest handshake is plain text: the front's TLS fails on it.
    let e = login_refused(&agent.socket("classic"), USER, USER);
    assert!(
        e.message.contains(&format!("upstream localhost:{front}")),
        "{e}"
    );
    assert_eq!(agent.failures("classic", "upstream_tls")?, 1, "{e}");
    Ok(())
}

#[test]
fn a_client_under_another_uid_is_refused_at_the_socket() -> Result<()> {
    let c = fresh_creds();
    let agent = ProxyAgent::builder()
        .db(lab_spec(""))
        .db(proxy_spec(
            "named",
            USER,
            "localhost",
            lab().port(),
            USER,
            "",
        ))
        .creds(&c)
        .start()?;
    // Open the directory to everyone: only the socket's own mode protects it.
    std::fs::set_permissions(agent.dir(), std::fs::Permissions::from_mode(0o755))?;
    for name in [DEFAULT_DB, "named"] {
        let socket = agent.socket_path(name);
        let meta = std::fs::metadata(&socket)?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert_eq!(
            meta.uid(),
            rustix::process::getuid().as_raw(),
            "{name}: owned by the agent's UID"
        );
        // nobody reaches the directory ...
        let ls = run(
            std::process::Command::new("runuser")
                .args(["-u", "nobody", "--", "ls"])
                .arg(agent.socket_dir(name)),
            &[] as &[(&str, &str)],
        )?;
        assert!(ls.success(), "{name}: {}", ls.stderr);
        // ... but connect(2) on the socket fails with EACCES.
        let py = run(
            std::process::Command::new("runuser")
                .args(["-u", "nobody", "--", "python3", "-c"])
                .arg("import errno, socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n    print('connected')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])")
                .arg(&socket),
            &[] as &[(&str, &str)],
        )?;
        assert_eq!(py.stdout.trim(), "EACCES", "{name}: {}", py.stderr);
        let mut env = agent.env(name, USER, USER);
        env.push(("HOME".into(), "/".into()));
        let out = run(
            std::process::Command::new("runuser")
                .args(["-u", "nobody", "--", "psql", "-X", "-w", "-c", "select 1"]),
            &env,
        )?;
        assert!(!out.success());
        assert!(
            out.stderr.contains("Permission denied"),
            "{name}: {}",
            out.stderr
        );
        // The agent's UID is served.
        assert_eq!(
            run_client(Client::Psql, &agent.env(name, USER, USER))?,
            USER
        );
    }
    Ok(())
}

/// `rds-iam-tokenagent probe` with the agent's databases and dir.
fn probe(dir: &Path, home: &Path, dbs: &str) -> Result<(Option<i32>, String)> {
    let r = run_cmd(
        agent_command(home)?
            .env("RDS_IAM_DATABASES", dbs)
            .args(["probe", "--dir"])
            .arg(dir),
    )?;
    Ok((r.code, format!("{}{}", r.stdout, r.stderr)))
}

#[test]
fn the_startup_probe_needs_the_token_and_a_socket_that_accepts() -> Result<()> {
    let spec = lab_spec("");
    // No credentials: the socket accepts, but there is no token.
    let mut without = ProxyAgent::builder().db(&spec).no_token().start()?;
    let (code, out) = probe(without.dir(), without.home(), &spec)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not exist yet"), "{out}");
    let e = login_refused(&without.socket(DEFAULT_DB), USER, USER);
    assert!(e.message.contains("has no valid token"), "{e}");
    assert_eq!(without.failures(DEFAULT_DB, "no_token")?, 1);
    without.sigterm()?;
    assert!(without.wait(Duration::from_secs(5))?.is_some());

    let c = fresh_creds();
    let mut agent = lab_agent(&c);
    let (code, out) = probe(agent.dir(), agent.home(), &spec)?;
    assert_eq!(code, Some(0), "{out}");
    // The token stays, the socket goes with the agent.
    agent.sigterm()?;
    assert!(agent.wait(Duration::from_secs(5))?.is_some());
    assert!(agent.token_path(DEFAULT_DB).exists());
    let (code, out) = probe(agent.dir(), agent.home(), &spec)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the proxy socket") && out.contains("does not answer"),
        "{out}"
    );
    Ok(())
}

#[test]
fn sigterm_with_no_open_session_exits_at_once() -> Result<()> {
    let c = fresh_creds();
    let mut agent = lab_agent(&c);
    // A session that came and went.
    login_ok(&agent.socket(DEFAULT_DB), USER, USER).terminate();
    let sent = Instant::now();
    agent.sigterm()?;
    let status = agent
        .wait(Duration::from_secs(5))?
        .context("the agent did not exit within 5 s")?;
    let took = sent.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    assert!(!agent.socket_path(DEFAULT_DB).exists(), "socket removed");
    Ok(())
}

#[test]
fn sigterm_keeps_open_sessions_until_they_close() -> Result<()> {
    let c = fresh_creds();
    let mut agent = lab_agent(&c);
    let mut s = login_ok(&agent.socket(DEFAULT_DB), USER, USER);
    agent.sigterm()?;
    // New clients find no socket; the open session goes on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.socket_path(DEFAULT_DB).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = Conn::open(&agent.socket(DEFAULT_DB))
        .err()
        .context("the socket must be gone")?;
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.running()?, "the agent waits for the open session");
    assert_eq!(s.value("select 40 + 2")?, "42");
    let closed = Instant::now();
    s.terminate();
    let status = agent
        .wait(Duration::from_secs(5))?
        .context("the agent did not exit after the session closed")?;
    assert!(status.success(), "{status}");
    let took = closed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "exit {took:?} after the last session closed"
    );
    Ok(())
}

#[test]
fn sigterm_cuts_sessions_after_max_sigterm_delay() -> Result<()> {
    let c = fresh_creds();
    let mut agent = ProxyAgent::builder()
        .db(lab_spec(""))
        .creds(&c)
        .arg("--max-sigterm-delay", "2s")
        .start()?;
    let mut s = login_ok(&agent.socket(DEFAULT_DB), USER, USER);
    let sent = Instant::now();
    agent.sigterm()?;
    let status = agent
        .wait(Duration::from_secs(10))?
        .context("the agent did not exit")?;
    let took = sent.elapsed();
    assert!(status.success(), "exit 0 after the delay: {status}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "exit after {took:?}"
    );
    assert!(s.query("select 1").is_err(), "the session was cut");
    Ok(())
}
