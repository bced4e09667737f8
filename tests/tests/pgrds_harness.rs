//! Self-test of the RDS-like PostgreSQL harness (`rds_iam_e2e::pgrds`).
//!
//! Tokens come from botocore (the reference), never from project code. The
//! good cases prove every client gets in as the right user; the bad cases
//! prove the server really checks the token (each asserts both the client's
//! error and the PAM module's logged reason).
//!
//! One server is shared by all tests of this binary (started once, ~1 s);
//! every test registers its own access key, so they run in parallel.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rds_iam_e2e::pgrds::{
    botocore_token, pgpass_line, run_client, write_pgpass, Client, PgRds, TokenRequest, HOST,
    REGION,
};
use rds_iam_e2e::rdslab::{
    assert_rejection_logged, long_session_token, tamper_signature, test_key, unix_now,
};

const APP: &str = "app_user";
const OTHER: &str = "other_user";
/// Users whose pgpass fields need escaping (`\` -> `\\`, `:` -> `\:`).
const BACKSLASH: &str = r"back\slash";
const COLON: &str = "co:lon";
const TRAILING_BACKSLASH: &str = r"trail\";

fn server() -> &'static PgRds {
    static PG: OnceLock<PgRds> = OnceLock::new();
    PG.get_or_init(
        || match PgRds::start(&[APP, OTHER, BACKSLASH, COLON, TRAILING_BACKSLASH]) {
            Ok(pg) => pg,
            Err(e) => panic!("starting the RDS-like PostgreSQL: {e:#}"),
        },
    )
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A pgpass with `token` for `user` on the server, mode 0600.
    fn pgpass(&self, pg: &PgRds, user: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("pgpass-{user}"));
        let line = pgpass_line(HOST, pg.port(), "*", user, token);
        write_pgpass(&path, &[line]).expect("write pgpass");
        path
    }
}

/// A fresh access key registered with the server (without session token).
fn key(pg: &PgRds, name: &str) -> (String, String) {
    let (akid, secret) = test_key(name);
    pg.add_key(&akid, &secret, None).expect("add key");
    (akid, secret)
}

fn connect(pg: &PgRds, kind: Client, user: &str, pgpass: &Path) -> anyhow::Result<String> {
    pg.run_client(kind, &pg.libpq_env(user, pgpass))
}

/// Assert the login was refused by PAM and the module logged `reason` for `akid`.
fn assert_rejected(pg: &PgRds, result: anyhow::Result<String>, akid: &str, reason: &str) {
    let err = match result {
        Ok(user) => panic!("connection succeeded as {user:?}, expected a rejection ({reason})"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("PAM authentication failed"),
        "expected a PAM authentication failure, got: {err}"
    );
    assert_rejection_logged(&pg.auth_log().expect("auth log"), akid, reason);
}

#[test]
fn all_four_clients_connect_with_a_botocore_token() {
    let pg = server();
    let (akid, secret) = key(pg, "allclients");
    let token = pg.botocore_token(APP, &akid, &secret, None).expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    for kind in Client::ALL {
        let user = connect(pg, kind, APP, &pgpass).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(user, APP, "{kind:?} connected as the wrong user");
    }
    let log = pg.auth_log().expect("auth log");
    let accepted = log
        .lines()
        .filter(|l| l.contains(&format!("akid={akid} ACCEPT")))
        .count();
    assert_eq!(accepted, 4, "expected 4 accepted logins in:\n{log}");
    assert!(
        !log.contains(&token),
        "the auth log must never contain a token"
    );
}

#[test]
fn second_user_connects_as_itself() {
    let pg = server();
    let (akid, secret) = key(pg, "second");
    let token = pg
        .botocore_token(OTHER, &akid, &secret, None)
        .expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, OTHER, &token);
    let user = connect(pg, Client::Psql, OTHER, &pgpass).expect("psql as other_user");
    assert_eq!(user, OTHER);
}

#[test]
fn long_session_token_is_passed_whole_by_every_client() {
    let pg = server();
    // ~1.5 KB, like a real STS session token.
    let session = long_session_token(1500);
    let akid = "ASIATESTLONGSESSION";
    let secret = "long/session+secret";
    pg.add_key(akid, secret, Some(&session)).expect("add key");
    let token = pg
        .botocore_token(APP, akid, secret, Some(&session))
        .expect("token");
    assert!(
        token.len() > 1500,
        "token is only {} bytes; the point is a long one",
        token.len()
    );
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    for kind in Client::ALL {
        let user = connect(pg, kind, APP, &pgpass).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(user, APP, "{kind:?}");
    }
    let log = pg.auth_log().expect("auth log");
    let full = format!("(password {} bytes)", token.len());
    let whole = log
        .lines()
        .filter(|l| l.contains(&format!("akid={akid} ACCEPT")) && l.ends_with(&full))
        .count();
    assert_eq!(
        whole,
        4,
        "PAM must see all {} bytes for each client:\n{log}",
        token.len()
    );
}

#[test]
fn tampered_token_is_rejected() {
    let pg = server();
    let (akid, secret) = key(pg, "tampered");
    let token = pg.botocore_token(APP, &akid, &secret, None).expect("token");
    let bad = tamper_signature(&token);
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &bad);
    let r = connect(pg, Client::Psql, APP, &pgpass);
    assert_rejected(pg, r, &akid, "signature mismatch");

    // A changed signed parameter (DBUser stays, Expires shrinks) also breaks it.
    let shorter = token.replace("X-Amz-Expires=900", "X-Amz-Expires=899");
    assert_ne!(shorter, token);
    let pgpass = scratch.pgpass(pg, APP, &shorter);
    let r = connect(pg, Client::Psycopg, APP, &pgpass);
    assert_rejected(pg, r, &akid, "signature mismatch");
}

#[test]
fn expired_token_is_rejected() {
    let pg = server();
    let (akid, secret) = key(pg, "expired");
    let token = botocore_token(&TokenRequest {
        host: HOST,
        port: pg.port(),
        user: APP,
        region: REGION,
        akid: &akid,
        secret: &secret,
        session_token: None,
        time: Some(unix_now() - 901),
    })
    .expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    let r = connect(pg, Client::Psql, APP, &pgpass);
    assert_rejected(pg, r, &akid, "token expired");
}

#[test]
fn another_users_token_is_rejected() {
    let pg = server();
    let (akid, secret) = key(pg, "otheruser");
    // A valid token for other_user, presented by app_user.
    let token = pg
        .botocore_token(OTHER, &akid, &secret, None)
        .expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    let r = connect(pg, Client::Psql, APP, &pgpass);
    assert_rejected(
        pg,
        r,
        &akid,
        "DBUser 'other_user' does not match login user",
    );
}

#[test]
fn token_for_another_endpoint_is_rejected() {
    let pg = server();
    let (akid, secret) = key(pg, "endpoint");
    let other_port = if pg.port() == 65535 { 1 } else { pg.port() + 1 };
    let token = botocore_token(&TokenRequest {
        host: HOST,
        port: other_port,
        user: APP,
        region: REGION,
        akid: &akid,
        secret: &secret,
        session_token: None,
        time: None,
    })
    .expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    let r = connect(pg, Client::Psql, APP, &pgpass);
    assert_rejected(pg, r, &akid, "token is for endpoint");
}

#[test]
fn token_for_another_region_is_rejected() {
    let pg = server();
    let (akid, secret) = key(pg, "region");
    let token = botocore_token(&TokenRequest {
        host: HOST,
        port: pg.port(),
        user: APP,
        region: "eu-west-1",
        akid: &akid,
        secret: &secret,
        session_token: None,
        time: None,
    })
    .expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    let r = connect(pg, Client::Psql, APP, &pgpass);
    assert_rejected(pg, r, &akid, "credential scope region 'eu-west-1'");
}

#[test]
fn unknown_access_key_is_rejected() {
    let pg = server();
    // Signed correctly, but the key was never registered.
    let token = pg
        .botocore_token(APP, "AKIATESTUNKNOWN", "whatever", None)
        .expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    let r = connect(pg, Client::Psql, APP, &pgpass);
    assert_rejected(pg, r, "AKIATESTUNKNOWN", "unknown access key id");
}

#[test]
fn wrong_secret_and_wrong_session_token_are_rejected() {
    let pg = server();
    let akid = "ASIATESTSESSION";
    pg.add_key(akid, "right-secret", Some("the-session"))
        .expect("add key");
    let scratch = Scratch::new();

    let token = pg
        .botocore_token(APP, akid, "wrong-secret", Some("the-session"))
        .expect("token");
    let r = connect(pg, Client::Psql, APP, &scratch.pgpass(pg, APP, &token));
    assert_rejected(pg, r, akid, "signature mismatch");

    let token = pg
        .botocore_token(APP, akid, "right-secret", Some("another-session"))
        .expect("token");
    let r = connect(pg, Client::Psql, APP, &scratch.pgpass(pg, APP, &token));
    assert_rejected(pg, r, akid, "X-Amz-Security-Token does not match");

    let token = pg
        .botocore_token(APP, akid, "right-secret", None)
        .expect("token");
    let r = connect(pg, Client::Psql, APP, &scratch.pgpass(pg, APP, &token));
    assert_rejected(pg, r, akid, "X-Amz-Security-Token missing");
}

#[test]
fn non_tls_connection_is_rejected() {
    let pg = server();
    let (akid, secret) = key(pg, "nontls");
    let token = pg.botocore_token(APP, &akid, &secret, None).expect("token");
    let scratch = Scratch::new();
    let pgpass = scratch.pgpass(pg, APP, &token);
    let mut env = pg.libpq_env(APP, &pgpass);
    for (k, v) in env.iter_mut() {
        if k == "PGSSLMODE" {
            *v = "disable".into();
        }
    }
    for kind in [Client::Psql, Client::Psycopg] {
        let err = match pg.run_client(kind, &env) {
            Ok(u) => panic!("{kind:?} connected without TLS as {u:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("no encryption"),
            "{kind:?}: expected pg_hba's 'no encryption' rejection, got: {err}"
        );
    }
    // The same token over TLS works, so it was TLS that made the difference.
    let user = connect(pg, Client::Psql, APP, &pgpass).expect("psql over TLS");
    assert_eq!(user, APP);
}

#[test]
fn dropping_the_server_stops_it_and_removes_its_pam_service() {
    let pg = PgRds::start(&["drop_user"]).expect("start a second server");
    let pam_file = pg.pam_service_file().expect("pam service name");
    let dir = pg.dir().to_path_buf();
    let port = pg.port();
    assert!(pam_file.is_file(), "{} should exist", pam_file.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "server should listen on {port}"
    );
    drop(pg);
    assert!(
        !pam_file.exists(),
        "{} should be removed",
        pam_file.display()
    );
    assert!(!dir.exists(), "{} should be removed", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server on {port} should be stopped"
    );
}

#[test]
fn client_without_a_pgpass_entry_fails_instead_of_prompting() {
    let pg = server();
    let scratch = Scratch::new();
    // A pgpass for another host only: no password is found.
    let path = scratch.dir.path().join("pgpass-nomatch");
    write_pgpass(
        &path,
        &[pgpass_line("db.example", pg.port(), "*", APP, "nope")],
    )
    .expect("write");
    let err = run_client(Client::Psql, &pg.libpq_env(APP, &path))
        .expect_err("psql must fail without a password");
    assert!(
        format!("{err:#}").contains("no password supplied"),
        "unexpected error: {err:#}"
    );
}

#[test]
fn pgpass_escapes_round_trip_in_every_client() {
    let pg = server();
    let (akid, secret) = key(pg, "escapes");
    let scratch = Scratch::new();
    for (user, escaped) in [(BACKSLASH, r"back\\slash"), (COLON, r"co\:lon")] {
        let token = pg
            .botocore_token(user, &akid, &secret, None)
            .expect("token");
        let pgpass = scratch.pgpass(pg, user, &token);
        let text = std::fs::read_to_string(&pgpass).expect("read pgpass");
        assert!(
            text.contains(&format!(":*:{escaped}:")),
            "the user field should be escaped as {escaped}: {text}"
        );
        for kind in Client::ALL {
            let got = connect(pg, kind, user, &pgpass)
                .unwrap_or_else(|e| panic!("{kind:?} as {user:?}: {e:#}"));
            assert_eq!(got, user, "{kind:?}");
        }
    }
}

/// Known node-postgres limitation (npm `pgpass` 1.0.5): a field ending in a
/// backslash is written `trail\\:` and pgpass takes `\:` for an escaped
/// colon, so the line is misparsed and no password is found. libpq, psycopg
/// and pgJDBC read it fine. If this test starts failing, upstream fixed it:
/// update the client table in the README.
#[test]
fn node_pgpass_misreads_a_field_ending_in_backslash() {
    let pg = server();
    let (akid, secret) = key(pg, "trailing");
    let scratch = Scratch::new();
    let token = pg
        .botocore_token(TRAILING_BACKSLASH, &akid, &secret, None)
        .expect("token");
    let pgpass = scratch.pgpass(pg, TRAILING_BACKSLASH, &token);
    for kind in [Client::Psql, Client::Psycopg, Client::Jdbc] {
        let got = connect(pg, kind, TRAILING_BACKSLASH, &pgpass)
            .unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(got, TRAILING_BACKSLASH, "{kind:?}");
    }
    let err = connect(pg, Client::Node, TRAILING_BACKSLASH, &pgpass)
        .expect_err("node-postgres was expected to misparse this pgpass line");
    assert!(
        format!("{err:#}").contains("empty password"),
        "unexpected node error: {err:#}"
    );
}

/// A database of the same server reached as another endpoint (`127.0.0.1`
/// instead of `localhost`) accepts only tokens signed for that host name,
/// with the host name libpq picks its pgpass line by.
#[test]
fn second_endpoint_checks_its_own_host_name() {
    let pg = PgRds::start_with(&["two_hosts"], &[("reports", "127.0.0.1")]).expect("server");
    let (akid, secret) = key(&pg, "twohosts");
    let token = |host: &str| {
        botocore_token(&TokenRequest {
            host,
            port: pg.port(),
            user: "two_hosts",
            region: REGION,
            akid: &akid,
            secret: &secret,
            session_token: None,
            time: None,
        })
        .expect("token")
    };
    let (by_name, by_ip) = (token(HOST), token("127.0.0.1"));
    let scratch = Scratch::new();
    let pgpass = scratch.dir.path().join("pgpass");
    let lines = |ip_token: &str| {
        vec![
            pgpass_line(HOST, pg.port(), "*", "two_hosts", &by_name),
            pgpass_line("127.0.0.1", pg.port(), "*", "two_hosts", ip_token),
        ]
    };
    write_pgpass(&pgpass, &lines(&by_ip)).expect("pgpass");
    let mut env = pg.libpq_env("two_hosts", &pgpass);
    assert_eq!(
        pg.run_client(Client::Psql, &env).expect("default database"),
        "two_hosts"
    );
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| {
        env.retain(|(n, _)| n != k);
        env.push((k.to_owned(), v.to_owned()));
    };
    set(&mut env, "PGHOST", "127.0.0.1");
    set(&mut env, "PGDATABASE", "reports");
    for kind in Client::ALL {
        let who = pg
            .run_client(kind, &env)
            .unwrap_or_else(|e| panic!("{kind:?} to reports: {e:#}"));
        assert_eq!(who, "two_hosts", "{kind:?}");
    }
    // The localhost token on the 127.0.0.1 line: refused by the endpoint check.
    write_pgpass(&pgpass, &lines(&by_name)).expect("pgpass");
    let r = pg.run_client(Client::Psql, &env);
    assert_rejected(
        &pg,
        r,
        &akid,
        &format!(
            "token is for endpoint localhost:{}, this server is 127.0.0.1:{}",
            pg.port(),
            pg.port()
        ),
    );
}
