//! The agent's `my.cnf` for MySQL and MariaDB clients (files mode):
//!
//! - the file reads back exactly, 2 KB tokens of every token character
//!   included, in MySQL's parser (`my_print_defaults`), the `mariadb` and
//!   `mariadb-admin` clients and PyMySQL's parser; a named group repeats
//!   every key of `[client]`; a password line longer than MySQL's parsers
//!   read whole is left out instead of being cut;
//! - the real agent's file logs the `mariadb` CLI, `mariadb-admin` and
//!   PyMySQL in to the RDS-like MariaDB over TLS with the env the webhook
//!   injects, for the default and a named database;
//! - against a server of our own that offers no TLS, the clients that the
//!   file makes insist on TLS never send the token; the MariaDB CLI in
//!   `require` mode does (the documented limit).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rds_iam_common::{Access, DbName, Endpoint, Engine, SslMode};
use rds_iam_e2e::mariadbrds::MariaDbRds;
use rds_iam_e2e::mysqlagent::{
    mysql_spec, read_back, run_with_cnf, token_alphabet_string, Agent, CnfClient, Parser,
};
use rds_iam_e2e::mysqlfake::{contains, FakeMysql, FakeTls};
use rds_iam_e2e::stubs::IssuedCreds;
use rds_iam_tokenagent::outputs::{DbState, MyCnf, Output};
use rds_iam_tokenagent::source::Current;
use rds_iam_tokenagent::token::Token;

const APP: &str = "app_user";
const OTHER: &str = "other_user";
/// `ssl-cipher`, written out: the TLS 1.2 suites rustls offers.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
const TLS_SQL: &str = "SELECT CURRENT_USER(), DATABASE(), (SELECT VARIABLE_VALUE \
     FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version')";

fn lab() -> &'static MariaDbRds {
    static DB: OnceLock<MariaDbRds> = OnceLock::new();
    DB.get_or_init(|| MariaDbRds::start(&[APP, OTHER]).unwrap_or_else(|e| panic!("{e:#}")))
}

fn endpoint(name: &str, user: &str, database: Option<&str>, sslmode: SslMode) -> Endpoint {
    Endpoint {
        name: DbName::parse(name).expect("name"),
        engine: Engine::Mysql,
        host: "db.example.com".into(),
        port: 3306,
        user: user.into(),
        database: database.map(str::to_owned),
        region: "us-east-1".into(),
        sslmode,
        access: Access::default(),
    }
}

fn current(token: &str) -> Option<Arc<Current>> {
    Some(Arc::new(Current {
        token: Token::new(token.to_owned()),
        expires_at: SystemTime::now() + Duration::from_secs(600),
    }))
}

/// The agent's `my.cnf` for these databases, written to a temp file.
fn render(dbs: &[(Endpoint, Option<&str>)], ca: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let states: Vec<DbState> = dbs
        .iter()
        .map(|(e, t)| DbState {
            endpoint: e,
            current: t.and_then(current),
        })
        .collect();
    let files = MyCnf {
        ca: Some(ca.to_owned()),
    }
    .render(&states)
    .expect("renders");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("my.cnf");
    fs::write(&path, &files[0].contents).expect("write");
    (dir, path)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn my_cnf_reads_back_exactly_in_every_parser() {
    let token = token_alphabet_string(2048);
    let named_token = token_alphabet_string(2200);
    for c in ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain("-_.~%:/?&=".chars())
    {
        assert!(token.contains(c), "the token lacks {c:?}");
    }
    // Values that need MySQL's quoting: a quote, a '#' (a comment outside
    // quotes), ';', spaces, and a space in the CA's path.
    let user = "o'brien#1";
    let database = "shop; \"east\"";
    let named_user = "report\"er";
    let ca = "/etc/rds iam/global-bundle.pem";
    let (_dir, file) = render(
        &[
            (
                endpoint("default", user, Some(database), SslMode::VerifyFull),
                Some(&token),
            ),
            (
                endpoint("reports", named_user, None, SslMode::Require),
                Some(&named_token),
            ),
        ],
        ca,
    );
    let default = pairs(&[
        ("host", "db.example.com"),
        ("port", "3306"),
        ("protocol", "TCP"),
        ("user", user),
        ("password", &token),
        ("loose-database", database),
        ("ssl-cipher", CIPHERS),
        ("ssl-ca", ca),
        ("loose-ssl-mode", "VERIFY_IDENTITY"),
        ("loose-ssl-verify-server-cert", "ON"),
    ]);
    let reports = pairs(&[
        ("host", "db.example.com"),
        ("port", "3306"),
        ("protocol", "TCP"),
        ("user", named_user),
        ("password", &named_token),
        ("loose-database", ""),
        ("ssl-cipher", CIPHERS),
        // [client] has ssl-ca, which a suffixed read would inherit.
        ("ssl-ca", ca),
        ("loose-ssl-mode", "REQUIRED"),
        ("loose-ssl-verify-server-cert", "OFF"),
    ]);
    // A suffixed read collects [client], then [client_reports], whose keys
    // all override: nothing of [client] is left.
    let keys = |l: &[(String, String)]| l.iter().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>();
    assert_eq!(keys(&default), keys(&reports));
    for parser in Parser::ALL {
        let got = read_back(parser, &file, "default").unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(got, default, "{parser:?} [client]");
        let got = read_back(parser, &file, "reports").unwrap_or_else(|e| panic!("{e:#}"));
        let want = if parser == Parser::PyMysql {
            reports.clone()
        } else {
            [default.clone(), reports.clone()].concat()
        };
        assert_eq!(got, want, "{parser:?} [client_reports]");
    }
}

/// MySQL's parsers read a line into 4095 bytes: the longest password line
/// the agent writes reads back whole; one byte more, and the agent leaves
/// the password out (such a line would be cut and its rest read as an
/// option, as the hand-written line shows).
#[test]
fn a_password_too_long_for_one_line_is_left_out_not_cut() {
    let fits = token_alphabet_string(4094 - "password=\"\"".len());
    let with_token = |token: &str| {
        render(
            &[(
                endpoint("default", APP, None, SslMode::Require),
                Some(token),
            )],
            "/ca.pem",
        )
    };
    let (_d, file) = with_token(&fits);
    let text = fs::read_to_string(&file).expect("read");
    assert!(text.lines().any(|l| l.len() == 4094), "{text}");
    let got = read_back(Parser::MyPrintDefaults, &file, "default").expect("read back");
    assert!(
        got.contains(&("password".to_owned(), fits.clone())),
        "{got:?}"
    );

    let long = format!("{fits}x");
    let (_d, file) = with_token(&long);
    let text = fs::read_to_string(&file).expect("read");
    assert!(
        text.contains(&format!(
            "\n# No password: the token is {} bytes",
            long.len()
        )),
        "{text}"
    );
    let got = read_back(Parser::MyPrintDefaults, &file, "default").expect("read back");
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "host",
            "port",
            "protocol",
            "user",
            "password",
            "loose-database",
            "ssl-cipher",
            "loose-ssl-mode",
            "loose-ssl-verify-server-cert"
        ]
    );
    assert!(
        got.contains(&("password".to_owned(), String::new())),
        "{got:?}"
    );

    // What the agent avoids: the same line written anyway is cut.
    let cut = tempfile::NamedTempFile::new().expect("temp");
    fs::write(cut.path(), format!("[client]\npassword=\"{long}\"\n")).expect("write");
    let got = read_back(Parser::MyPrintDefaults, cut.path(), "default").expect("read back");
    assert_eq!(
        got.len(),
        2,
        "{:?}",
        got.iter()
            .map(|(k, _)| &k[..10.min(k.len())])
            .collect::<Vec<_>>()
    );
    assert_ne!(got[0].1, long);
}

/// The real agent (`--once`) writes my.cnf for a default database
/// (verify-full against the lab's CA) and a named one (require); with the
/// env the webhook injects, each client logs in over TLS as the right user,
/// and the named group does not inherit the default's database.
#[test]
fn clients_log_in_with_the_injected_env_and_the_file() {
    let db = lab();
    let c = IssuedCreds::random(1700);
    db.add_key(&c.akid, &c.secret, Some(&c.session_token))
        .expect("add key");
    let (ran, dir) = Agent::builder()
        .db(mysql_spec(
            "default",
            APP,
            db.host(),
            db.port(),
            Some(APP),
            "&sslmode=verify-full",
        ))
        .db(mysql_spec("reports", OTHER, db.host(), db.port(), None, ""))
        .arg("--ca-file", db.ca_cert())
        .creds(&c)
        .once()
        .expect("agent");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let token = fs::read_to_string(dir.path().join("token")).expect("token");
    let cnf = fs::metadata(dir.path().join("my.cnf")).expect("my.cnf");
    assert_eq!(cnf.permissions().mode() & 0o7777, 0o600, "my.cnf's mode");
    assert!(
        token.len() >= 2048,
        "a long session token: {} bytes",
        token.len()
    );
    let env = rds_iam_e2e::mysqlagent::files_env(dir.path(), db.host(), db.port());

    let tls_row =
        |out: &rds_iam_e2e::mysqlagent::Output, user: &str, database: &str, what: &str| {
            let rows = out.rows();
            assert_eq!(rows.len(), 1, "{what}: {out:?}");
            assert_eq!(
                rows[0][..2],
                [format!("{user}@%"), database.to_owned()],
                "{what}"
            );
            assert!(rows[0][2].starts_with("TLSv1."), "{what}: {:?}", rows[0]);
        };
    let out = run_with_cnf(CnfClient::Mariadb, &env, "default", TLS_SQL).expect("mariadb");
    tls_row(&out, APP, APP, "mariadb [client]");
    let out = run_with_cnf(CnfClient::Mariadb, &env, "reports", TLS_SQL).expect("mariadb reports");
    tls_row(&out, OTHER, "NULL", "mariadb [client_reports]");
    // PyMySQL reads `database` only without loose-: it gets none.
    let out = run_with_cnf(CnfClient::PyMysql, &env, "default", TLS_SQL).expect("PyMySQL");
    tls_row(&out, APP, "NULL", "PyMySQL [client]");
    let out = run_with_cnf(CnfClient::PyMysql, &env, "reports", TLS_SQL).expect("PyMySQL reports");
    tls_row(&out, OTHER, "NULL", "PyMySQL [client_reports]");
    for name in ["default", "reports"] {
        let out =
            run_with_cnf(CnfClient::MariadbAdmin, &env, name, "status").expect("mariadb-admin");
        assert!(out.stdout.contains("Uptime:"), "{name}: {out:?}");
        // Only the loose- keys it does not know, as warnings.
        for line in out.stderr.lines() {
            assert!(
                line.starts_with("Warning: ")
                    && line.contains("mariadb-admin: unknown variable 'loose-"),
                "{name}: {line}"
            );
        }
    }
    let log = db.auth_log().expect("auth log");
    let accepted = log
        .lines()
        .filter(|l| l.contains(&format!("akid={} ACCEPT", c.akid)))
        .count();
    assert_eq!(accepted, 6, "one login per client run:\n{log}");
    assert!(!log.contains(&token));
}

/// A server that offers no TLS: PyMySQL (through `ssl-cipher` and
/// `ssl-ca`) and the MariaDB CLI in verify-full (through
/// `ssl-verify-server-cert`) refuse before sending anything secret; the
/// MariaDB CLI in require mode sends the token in cleartext, which is why
/// the docs send it to verify-full or the proxy.
#[test]
fn only_clients_that_insist_on_tls_keep_the_token_from_a_server_without_it() {
    let fake = FakeMysql::start(FakeTls::NotOffered).expect("fake server");
    let ca = tempfile::NamedTempFile::new().expect("temp");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    fs::write(ca.path(), cert.cert.pem()).expect("write CA");
    let (ran, dir) = Agent::builder()
        .db(mysql_spec(
            "default",
            APP,
            "127.0.0.1",
            fake.port(),
            None,
            "&sslmode=verify-full",
        ))
        .db(mysql_spec("req", APP, "127.0.0.1", fake.port(), None, ""))
        .arg("--ca-file", ca.path())
        .creds(&IssuedCreds::random(100))
        .once()
        .expect("agent");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let env = rds_iam_e2e::mysqlagent::files_env(dir.path(), "127.0.0.1", fake.port());
    let token = |name: &str| {
        let f = if name == "default" {
            "token".to_owned()
        } else {
            format!("{name}.token")
        };
        fs::read_to_string(dir.path().join(f)).expect("token")
    };
    let cases = [
        (
            CnfClient::PyMysql,
            "default",
            "SSL is required but the server doesn't support it",
        ),
        (
            CnfClient::PyMysql,
            "req",
            "SSL is required but the server doesn't support it",
        ),
        (
            CnfClient::Mariadb,
            "default",
            "SSL is required, but the server does not support it",
        ),
    ];
    for (i, (client, name, want)) in cases.into_iter().enumerate() {
        let err = run_with_cnf(client, &env, name, "select 1").expect_err("must fail");
        assert!(
            format!("{err:#}").contains(want),
            "{client:?} {name}: {err:#}"
        );
        let sent = fake
            .wait_for(i + 1, Duration::from_secs(10))
            .expect("connection");
        // Nothing at all: not even the handshake response.
        assert_eq!(sent[i], b"", "{client:?} {name} sent something");
    }
    // The documented limit: MariaDB 10.11's CLI cannot be made to insist on
    // TLS without checking the certificate.
    let err = run_with_cnf(CnfClient::Mariadb, &env, "req", "select 1").expect_err("no server");
    assert!(format!("{err:#}").contains("Lost connection"), "{err:#}");
    let sent = fake
        .wait_for(4, Duration::from_secs(10))
        .expect("connection");
    assert!(contains(&sent[3], APP.as_bytes()), "{:?}", sent[3]);
    assert!(
        contains(&sent[3], token("req").as_bytes()),
        "the MariaDB CLI in require mode sent no token"
    );
}
