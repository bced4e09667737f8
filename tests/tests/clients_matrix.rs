//! Self-test of the client probes the proxy tests run.
//!
//! - Every PostgreSQL client logs in to the RDS-like PostgreSQL over TLS with
//!   a botocore token (from PGPASSFILE, or PGPASSWORD for tokio-postgres), and
//!   to a trust-auth PostgreSQL through a Unix socket directory and over plain
//!   TCP with PGSSLMODE=disable; the server log shows which transport.
//! - The cancel probes stop `pg_sleep(30)` within a second; pgx's probe fails
//!   when its CancelRequest never reaches the server.
//! - Every MySQL client logs in to a plain MariaDB over TCP and through the
//!   socket (accounts bound to `127.0.0.1` or `localhost` show which), passes
//!   MYSQL_PWD, and the KILL QUERY probe interrupts `sleep(30)` within a
//!   second.
//! - Every probe reports a refused login as a failure with the server's error.
//!
//! One server of each kind is shared by the tests of this binary; each test
//! uses its own users, so they run in parallel.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use rds_iam_e2e::localdb::{PlainMariadb, TrustPg};
use rds_iam_e2e::mysqlclients::{
    mysql_env, mysql_option_file, run_kill_query, run_mysql_client, MysqlAddr, MysqlClient,
};
use rds_iam_e2e::pgrds::{pgpass_line, run_client, write_pgpass, Client, PgRds, HOST};
use rds_iam_e2e::probes::{run_cancel, Cancelled, Canceller};

/// PostgreSQL users of the trust server, one per test.
const SOCK_USER: &str = "sock_user";
const TCP_USER: &str = "tcp_user";
const CANCEL_USER: &str = "cancel_user";
const LOST_CANCEL_USER: &str = "lost_cancel_user";
/// The RDS-like server's users.
const LAB_USER: &str = "lab_user";
const BACKSLASH_USER: &str = r"back\slash";
const COLON_USER: &str = "co:lon";
/// The MariaDB database (and its first user).
const MDB: &str = "mdb_owner";
const NOBODY: &str = "nobody_here";
/// Cancel after this long; the query must be stopped within a second.
const CANCEL_AFTER: Duration = Duration::from_millis(200);
const CANCEL_WITHIN: Duration = Duration::from_secs(1);

fn lab() -> &'static PgRds {
    static PG: OnceLock<PgRds> = OnceLock::new();
    PG.get_or_init(|| {
        PgRds::start(&[LAB_USER, BACKSLASH_USER, COLON_USER]).unwrap_or_else(|e| panic!("{e:#}"))
    })
}

fn trust() -> &'static TrustPg {
    static PG: OnceLock<TrustPg> = OnceLock::new();
    PG.get_or_init(|| {
        TrustPg::start(&[SOCK_USER, TCP_USER, CANCEL_USER, LOST_CANCEL_USER])
            .unwrap_or_else(|e| panic!("{e:#}"))
    })
}

fn mariadb() -> &'static PlainMariadb {
    static DB: OnceLock<PlainMariadb> = OnceLock::new();
    DB.get_or_init(|| {
        let db = PlainMariadb::start(&[MDB]).unwrap_or_else(|e| panic!("{e:#}"));
        // Accounts that only match one transport (--skip-name-resolve: a
        // socket login comes from `localhost`, a TCP login from 127.0.0.1),
        // and one with a password.
        db.sql(&format!(
            "CREATE USER 'via_socket'@'localhost'; CREATE USER 'via_tcp'@'127.0.0.1'; \
             CREATE USER 'with_pwd'@'%' IDENTIFIED BY 'pw-for:probes'; \
             GRANT SELECT ON `{MDB}`.* TO 'via_socket'@'localhost', 'via_tcp'@'127.0.0.1', \
             'with_pwd'@'%';"
        ))
        .unwrap_or_else(|e| panic!("{e:#}"));
        db
    })
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
}

/// For each connection of `user` in the trust server's log (by backend pid):
/// the `host=` it was received from.
fn connection_hosts(pg: &TrustPg, user: &str) -> Vec<String> {
    let log = pg.server_log().expect("server log");
    let pid = |line: &str| line.split('[').nth(1)?.split(']').next().map(str::to_owned);
    let mut received: BTreeMap<String, String> = BTreeMap::new();
    let mut hosts = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("connection received: host=").nth(1) {
            let host = rest.split_whitespace().next().unwrap_or_default();
            if let Some(p) = pid(line) {
                received.insert(p, host.to_owned());
            }
        } else if line.contains(&format!("connection authorized: user={user} ")) {
            let p = pid(line).expect("a pid in the log line prefix");
            hosts.push(received.get(&p).cloned().unwrap_or_default());
        }
    }
    hosts
}

/// Users whose pgpass fields need escaping (`\` -> `\\`, `:` -> `\:`) and whose
/// names the probes must print back unchanged.
#[test]
fn every_postgres_client_logs_in_as_a_user_whose_pgpass_fields_need_escaping() {
    let pg = lab();
    let (akid, secret) = ("AKIATESTESCAPES", "escapes/secret");
    pg.add_key(akid, secret, None).expect("add key");
    let scratch = tempfile::tempdir().expect("temp dir");
    for user in [BACKSLASH_USER, COLON_USER] {
        let token = pg.botocore_token(user, akid, secret, None).expect("token");
        let pgpass = scratch.path().join("pgpass");
        write_pgpass(&pgpass, &[pgpass_line(HOST, pg.port(), "*", user, &token)]).expect("pgpass");
        for kind in Client::FROM_ENV {
            let mut env = pg.libpq_env(user, &pgpass);
            if !kind.reads_pgpass() {
                set(&mut env, "PGPASSWORD", &token);
            }
            let who = pg
                .run_client(kind, &env)
                .unwrap_or_else(|e| panic!("{kind:?} as {user:?}: {e:#}"));
            assert_eq!(who, user, "{kind:?}");
        }
    }
}

#[test]
fn every_postgres_client_logs_in_to_the_rds_lab_with_a_botocore_token() {
    let pg = lab();
    let (akid, secret) = ("AKIATESTMATRIX", "matrix/secret+x=");
    pg.add_key(akid, secret, None).expect("add key");
    let token = pg
        .botocore_token(LAB_USER, akid, secret, None)
        .expect("token");
    let scratch = tempfile::tempdir().expect("temp dir");
    let pgpass = scratch.path().join("pgpass");
    write_pgpass(
        &pgpass,
        &[pgpass_line(HOST, pg.port(), "*", LAB_USER, &token)],
    )
    .expect("pgpass");
    let accepted = || {
        let log = pg.auth_log().expect("auth log");
        assert!(
            !log.contains(&token),
            "the auth log must never contain a token"
        );
        log.lines()
            .filter(|l| l.contains(&format!("akid={akid} ACCEPT")))
            .count()
    };
    for kind in Client::FROM_ENV {
        let mut env = pg.libpq_env(LAB_USER, &pgpass);
        if !kind.reads_pgpass() {
            set(&mut env, "PGPASSWORD", &token);
        }
        let before = accepted();
        let who = pg
            .run_client(kind, &env)
            .unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(who, LAB_USER, "{kind:?}");
        // pgbench logs in twice: a first connection, then its client's.
        let expected = if kind == Client::Pgbench { 2 } else { 1 };
        assert_eq!(
            accepted() - before,
            expected,
            "{kind:?}: logins with the token"
        );
    }
}

/// tokio-postgres reads no pgpass: without PGPASSWORD the lab refuses it, so
/// the login above did use the token from PGPASSWORD.
#[test]
fn tokio_postgres_without_pgpassword_is_refused_by_the_lab() {
    let pg = lab();
    let scratch = tempfile::tempdir().expect("temp dir");
    let pgpass = scratch.path().join("pgpass");
    write_pgpass(
        &pgpass,
        &[pgpass_line(HOST, pg.port(), "*", LAB_USER, "unused")],
    )
    .expect("pgpass");
    let err = pg
        .run_client(Client::TokioPostgres, &pg.libpq_env(LAB_USER, &pgpass))
        .expect_err("tokio-postgres must not log in without a password");
    assert!(
        format!("{err:#}").contains("password missing"),
        "unexpected error: {err:#}"
    );
}

#[test]
fn every_postgres_client_connects_through_a_socket_directory() {
    let pg = trust();
    let mut ran = 0;
    for kind in Client::FROM_ENV
        .into_iter()
        .filter(|k| k.supports_unix_socket())
    {
        let who = run_client(kind, &pg.socket_env(SOCK_USER))
            .unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(who, SOCK_USER, "{kind:?}");
        ran += 1;
    }
    let hosts = connection_hosts(pg, SOCK_USER);
    assert!(hosts.len() >= ran, "{ran} clients, connections: {hosts:?}");
    assert!(
        hosts.iter().all(|h| h == "[local]"),
        "every connection should come through the socket: {hosts:?}"
    );
}

#[test]
fn pgjdbc_cannot_use_a_socket_directory() {
    assert!(!Client::Jdbc.supports_unix_socket());
    let pg = trust();
    let err = run_client(Client::Jdbc, &pg.socket_env(SOCK_USER))
        .expect_err("pgJDBC has no Unix socket support");
    // ConnectJdbc.java puts PGHOST into the URL's host part.
    assert!(
        format!("{err:#}").contains("Unable to parse URL"),
        "{err:#}"
    );
}

#[test]
fn every_postgres_client_connects_over_plain_tcp() {
    let pg = trust();
    for kind in Client::FROM_ENV {
        let who =
            run_client(kind, &pg.tcp_env(TCP_USER)).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(who, TCP_USER, "{kind:?}");
    }
    let hosts = connection_hosts(pg, TCP_USER);
    assert!(hosts.len() >= Client::FROM_ENV.len(), "{hosts:?}");
    assert!(
        hosts.iter().all(|h| h == "127.0.0.1"),
        "every connection should come over TCP: {hosts:?}"
    );
}

#[test]
fn every_postgres_client_reports_a_refused_login() {
    let pg = trust();
    for kind in Client::FROM_ENV {
        let err =
            run_client(kind, &pg.tcp_env(NOBODY)).expect_err("an unknown role must be refused");
        assert!(
            format!("{err:#}").contains(&format!("role \"{NOBODY}\" does not exist")),
            "{kind:?}: {err:#}"
        );
    }
}

fn assert_cancelled_in_time(kind: impl std::fmt::Debug, c: &Cancelled) {
    assert!(
        c.elapsed >= CANCEL_AFTER && c.elapsed < CANCEL_WITHIN,
        "{kind:?}: stopped after {:?}, expected between {CANCEL_AFTER:?} and {CANCEL_WITHIN:?}: {c:?}",
        c.elapsed
    );
}

#[test]
fn cancel_probes_stop_pg_sleep_within_a_second() {
    let pg = trust();
    for env in [pg.socket_env(CANCEL_USER), pg.tcp_env(CANCEL_USER)] {
        for kind in Canceller::ALL {
            let c = run_cancel(kind, CANCEL_AFTER, &env)
                .unwrap_or_else(|e| panic!("{kind:?} via {}: {e:#}", env[0].1));
            assert_cancelled_in_time(kind, &c);
            match kind {
                Canceller::PgxContext => {
                    assert_eq!(c.code, None, "{c:?}");
                    assert!(c.error.contains("context deadline exceeded"), "{c:?}");
                }
                _ => {
                    assert_eq!(c.code.as_deref(), Some("57014"), "{kind:?}: {c:?}");
                    assert!(
                        c.error.contains("canceling statement due to user request"),
                        "{c:?}"
                    );
                }
            }
        }
    }
}

/// A TCP forwarder to `upstream` that passes every connection except
/// CancelRequests, which it closes unread: like a proxy that loses them.
fn forwarder_losing_cancel_requests(upstream: u16) -> u16 {
    const CANCEL_REQUEST_CODE: [u8; 4] = 80877102u32.to_be_bytes();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut client = client;
                let mut head = [0u8; 8];
                if client.read_exact(&mut head).is_err() || head[4..] == CANCEL_REQUEST_CODE {
                    return;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                if server.write_all(&head).is_err() {
                    return;
                }
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
                let _ = std::io::copy(&mut client, &mut server);
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn pgx_cancel_probe_fails_when_the_cancel_request_is_lost() {
    let pg = trust();
    let port = forwarder_losing_cancel_requests(pg.port());
    let mut env = pg.tcp_env(LOST_CANCEL_USER);
    set(&mut env, "PGPORT", &port.to_string());
    // The forwarder itself works for ordinary connections.
    let who = run_client(Client::Pgx, &env).expect("pgx through the forwarder");
    assert_eq!(who, LOST_CANCEL_USER);
    let err = run_cancel(Canceller::PgxContext, CANCEL_AFTER, &env)
        .expect_err("the backend keeps sleeping when the CancelRequest is lost");
    assert!(
        format!("{err:#}").contains("the CancelRequest did not reach the server"),
        "{err:#}"
    );
}

fn mdb_tcp(db: &PlainMariadb) -> MysqlAddr<'_> {
    MysqlAddr::Tcp {
        host: "127.0.0.1",
        port: db.port(),
    }
}

/// The env for `kind`: the probes' contract, or for the option-file variant
/// only MYSQL_OPTION_FILE and MYSQL_OPTION_GROUP naming a file with the same
/// settings.
fn mysql_env_for(
    kind: MysqlClient,
    addr: MysqlAddr<'_>,
    user: &str,
    password: Option<&str>,
    scratch: &tempfile::TempDir,
) -> Vec<(String, String)> {
    if kind == MysqlClient::PyMysqlOptionFile {
        let path = scratch.path().join(format!("{user}.cnf"));
        std::fs::write(
            &path,
            mysql_option_file("probe", addr, user, Some(MDB), password),
        )
        .expect("option file");
        return vec![
            ("MYSQL_OPTION_FILE".into(), path.display().to_string()),
            ("MYSQL_OPTION_GROUP".into(), "probe".into()),
        ];
    }
    let mut env = mysql_env(addr, user, Some(MDB));
    if let Some(pw) = password {
        env.push(("MYSQL_PWD".into(), pw.into()));
    }
    env
}

#[test]
fn every_mysql_client_logs_in_over_tcp() {
    let db = mariadb();
    let scratch = tempfile::tempdir().expect("temp dir");
    for kind in MysqlClient::ALL {
        let env = mysql_env_for(kind, mdb_tcp(db), "via_tcp", None, &scratch);
        let who = run_mysql_client(kind, &env).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(who, "via_tcp@127.0.0.1", "{kind:?}");
    }
}

#[test]
fn every_socket_capable_mysql_client_logs_in_through_the_socket() {
    let db = mariadb();
    let scratch = tempfile::tempdir().expect("temp dir");
    let socket = db.socket();
    for kind in MysqlClient::ALL
        .into_iter()
        .filter(|k| k.supports_unix_socket())
    {
        let env = mysql_env_for(
            kind,
            MysqlAddr::Socket(&socket),
            "via_socket",
            None,
            &scratch,
        );
        let who = run_mysql_client(kind, &env).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(who, "via_socket@localhost", "{kind:?}");
    }
    let err = run_mysql_client(
        MysqlClient::ConnectorJ,
        &mysql_env(MysqlAddr::Socket(&socket), "via_socket", None),
    )
    .expect_err("the Connector/J probe is TCP only");
    assert!(
        format!("{err:#}").contains("connects over TCP only"),
        "{err:#}"
    );
}

#[test]
fn every_mysql_client_passes_mysql_pwd() {
    let db = mariadb();
    let scratch = tempfile::tempdir().expect("temp dir");
    for kind in MysqlClient::ALL {
        let env = mysql_env_for(
            kind,
            mdb_tcp(db),
            "with_pwd",
            Some("pw-for:probes"),
            &scratch,
        );
        let who = run_mysql_client(kind, &env).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(who, "with_pwd@%", "{kind:?}");
        let env = mysql_env_for(kind, mdb_tcp(db), "with_pwd", None, &scratch);
        let err = run_mysql_client(kind, &env).expect_err("no password, no login");
        assert!(
            format!("{err:#}").contains("Access denied for user 'with_pwd'"),
            "{kind:?}: {err:#}"
        );
    }
}

#[test]
fn every_mysql_client_reports_a_refused_login() {
    let db = mariadb();
    let scratch = tempfile::tempdir().expect("temp dir");
    for kind in MysqlClient::ALL {
        let env = mysql_env_for(kind, mdb_tcp(db), NOBODY, None, &scratch);
        let err = run_mysql_client(kind, &env).expect_err("an unknown user must be refused");
        assert!(
            format!("{err:#}").contains(&format!("Access denied for user '{NOBODY}'")),
            "{kind:?}: {err:#}"
        );
    }
}

#[test]
fn kill_query_probe_interrupts_sleep_within_a_second() {
    let db = mariadb();
    let socket = db.socket();
    for (addr, user) in [
        (MysqlAddr::Socket(&socket), "via_socket"),
        (mdb_tcp(db), "via_tcp"),
    ] {
        let c = run_kill_query(CANCEL_AFTER, &mysql_env(addr, user, Some(MDB)))
            .unwrap_or_else(|e| panic!("{addr:?}: {e:#}"));
        assert_cancelled_in_time(addr, &c);
        assert_eq!(c.code.as_deref(), Some("1317"), "{c:?}");
        assert!(c.error.contains("Query execution was interrupted"), "{c:?}");
    }
}
