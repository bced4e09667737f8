//! Self-test of the RDS-like MariaDB harness (`rds_iam_e2e::mariadbrds`).
//!
//! Tokens come from botocore (the reference), never from project code. The
//! good cases prove both real clients (the `mariadb` CLI and PyMySQL) get in
//! as the right user over TLS; the bad cases prove the server really checks
//! the token (each asserts the client's error and the verifier's logged
//! reason).
//!
//! One server is shared by the tests of this binary (started once); every
//! test registers its own access key, so they run in parallel.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rds_iam_e2e::mariadbrds::{
    botocore_token, run_client, run_mariadb_args, write_option_file, Client, Connect, Login,
    MariaDbRds, Session, Tls, TokenRequest, HOST, SCRIPT,
};
use rds_iam_e2e::rdslab::{
    assert_rejection_logged, free_port, long_session_token, repo_root, tamper_signature, test_key,
    unix_now,
};

const APP: &str = "app_user";
const OTHER: &str = "other_user";
/// Bound to the second endpoint: its tokens must be signed for 127.0.0.1.
const IP_USER: &str = "ip_user";
const IP_HOST: &str = "127.0.0.1";

fn server() -> &'static MariaDbRds {
    static DB: OnceLock<MariaDbRds> = OnceLock::new();
    DB.get_or_init(
        || match MariaDbRds::start_with(&[APP, OTHER], &[(IP_USER, IP_HOST)]) {
            Ok(db) => db,
            Err(e) => panic!("starting the RDS-like MariaDB: {e:#}"),
        },
    )
}

/// A fresh access key registered with the server (without session token).
fn key(db: &MariaDbRds, name: &str) -> (String, String) {
    let (akid, secret) = test_key(name);
    db.add_key(&akid, &secret, None).expect("add key");
    (akid, secret)
}

/// A token for `user` signed for `host` (not necessarily the user's endpoint).
fn token_for_host(db: &MariaDbRds, host: &str, user: &str, akid: &str, secret: &str) -> String {
    botocore_token(&TokenRequest {
        host,
        ..db.token_request(user, akid, secret)
    })
    .expect("token")
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

    /// `login` as an option file (mode 0600).
    fn option_file(&self, name: &str, login: &Login) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.cnf"));
        write_option_file(&path, &login.option_file().expect("option file")).expect("write");
        path
    }
}

fn assert_tls_session(session: &Session, user: &str, what: &str) {
    assert_eq!(session.current_user, format!("{user}@%"), "{what}");
    let tls = session.tls_version.as_deref().unwrap_or("none");
    assert!(
        tls == "TLSv1.3" || tls == "TLSv1.2",
        "{what}: expected a TLS 1.2+ session, got {tls}"
    );
}

fn log_lines(db: &MariaDbRds, needle: &str) -> usize {
    let log = db.auth_log().expect("auth log");
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Assert the login was refused (1045, Access denied) and the verifier logged
/// `reason` for `akid`.
fn assert_refused(
    db: &MariaDbRds,
    result: anyhow::Result<Session>,
    user: &str,
    akid: &str,
    reason: &str,
) {
    let err = match result {
        Ok(s) => panic!("login succeeded as {s:?}, expected a refusal ({reason})"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("1045") && err.contains(&format!("Access denied for user '{user}'")),
        "expected error 1045 Access denied for {user}, got: {err}"
    );
    assert_rejection_logged(&db.auth_log().expect("auth log"), akid, reason);
}

#[test]
fn server_is_set_up_like_rds_iam() {
    let db = server();
    let out = db
        .sql(
            "SELECT user, host, plugin, authentication_string, ssl_type FROM mysql.user \
             WHERE plugin = 'pam' ORDER BY user;\n\
             SELECT @@pam_use_cleartext_plugin, @@have_ssl, @@bind_address, @@tls_version;\n\
             SHOW DATABASES LIKE '%user';",
        )
        .expect("sql as root");
    let services = db.pam_service_files().expect("pam services");
    let [main, second] = services.as_slice() else {
        panic!("expected two PAM services, got {services:?}");
    };
    let name = |p: &Path| {
        p.file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned()
    };
    let (main, second) = (name(main), name(second));
    let want = [
        format!("{APP}\t%\tpam\t{main}\tANY"),
        format!("{IP_USER}\t%\tpam\t{second}\tANY"),
        format!("{OTHER}\t%\tpam\t{main}\tANY"),
        "1\tYES\t127.0.0.1\tTLSv1.2,TLSv1.3".to_owned(),
        APP.to_owned(),
        IP_USER.to_owned(),
        OTHER.to_owned(),
    ];
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, want, "server state:\n{out}");
    let grants = db
        .sql(&format!("SHOW CREATE USER {APP};"))
        .expect("show create user");
    assert!(
        grants.contains(&format!("IDENTIFIED VIA pam USING '{main}' REQUIRE SSL")),
        "{grants}"
    );

    // The server runs as mysql, not root.
    let pid = std::fs::read_to_string(db.dir().join("run/mariadbd.pid")).expect("pid file");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("server status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    let mysql_uid = Command::new("id")
        .args(["-u", "mysql"])
        .output()
        .expect("id -u mysql");
    let mysql_uid = String::from_utf8_lossy(&mysql_uid.stdout).trim().to_owned();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|id| id == mysql_uid),
        "mariadbd should run as mysql ({mysql_uid}): {uid_line}"
    );
}

#[test]
fn mariadb_cli_logs_in_with_flags_and_with_an_option_file() {
    let db = server();
    let (akid, secret) = key(db, "cli");
    let token = db.botocore_token(APP, &akid, &secret, None).expect("token");
    let scratch = Scratch::new();

    // As RDS's docs say for the mysql client: --ssl --enable-cleartext-plugin
    // (MariaDB's client accepts the latter as obsolete: it always may send
    // cleartext).
    let mut login = db.login(APP, &token);
    login.tls = Tls::Unverified;
    let mut args = login.mariadb_args();
    args.push("--enable-cleartext-plugin".to_owned());
    let s = run_mariadb_args(&args).expect("mariadb --ssl --enable-cleartext-plugin");
    assert_tls_session(&s, APP, "--ssl --enable-cleartext-plugin");
    assert_eq!(
        s.other_output,
        ["WARNING: option '--enable-cleartext-plugin' is obsolete."]
    );

    // The certificate checked against the lab's CA, by flags and by option file.
    let login = db.login(APP, &token);
    let s = run_client(Client::Mariadb, Connect::Flags(&login)).expect("flags, verify CA");
    assert_tls_session(&s, APP, "flags with --ssl-ca --ssl-verify-server-cert");
    let cnf = scratch.option_file("cli", &login);
    let s = run_client(Client::Mariadb, Connect::OptionFile(&cnf)).expect("option file");
    assert_tls_session(&s, APP, "option file with ssl-ca, ssl-verify-server-cert");

    // The password reached PAM through the conversation (PAM_AUTHTOK is unset).
    assert_eq!(
        log_lines(db, &format!("via=conversation akid={akid} ACCEPT")),
        3,
        "{}",
        db.auth_log().expect("log")
    );
    assert!(
        !db.auth_log().expect("log").contains(&token),
        "the auth log must never contain a token"
    );
}

#[test]
fn pymysql_logs_in_with_arguments_and_with_an_option_file() {
    let db = server();
    let (akid, secret) = key(db, "pymysql");
    let token = db
        .botocore_token(OTHER, &akid, &secret, None)
        .expect("token");
    let scratch = Scratch::new();
    let login = db.login(OTHER, &token);
    let s = run_client(Client::PyMysql, Connect::Flags(&login)).expect("ssl={'ca': ...}");
    assert_tls_session(&s, OTHER, "PyMySQL ssl={'ca': ...}");
    let mut unverified = login.clone();
    unverified.tls = Tls::Unverified;
    let s = run_client(Client::PyMysql, Connect::Flags(&unverified)).expect("unverified");
    assert_tls_session(&s, OTHER, "PyMySQL TLS without verification");
    let cnf = scratch.option_file("pymysql", &login);
    let s = run_client(Client::PyMysql, Connect::OptionFile(&cnf)).expect("read_default_file");
    assert_tls_session(&s, OTHER, "PyMySQL read_default_file");
    assert_eq!(
        log_lines(
            db,
            &format!("user='{OTHER}' via=conversation akid={akid} ACCEPT")
        ),
        3
    );
}

#[test]
fn a_2kb_token_reaches_the_verifier_whole() {
    let db = server();
    // ~1.7 KB, like a real STS session token: the token is over 2 KB.
    let session = long_session_token(1700);
    let akid = "ASIATESTLONGSESSION";
    let secret = "long/session+secret";
    db.add_key(akid, secret, Some(&session)).expect("add key");
    let token = db
        .botocore_token(APP, akid, secret, Some(&session))
        .expect("token");
    assert!(
        token.len() >= 2048,
        "token is only {} bytes; the point is a 2 KB one",
        token.len()
    );
    let scratch = Scratch::new();
    let login = db.login(APP, &token);
    let cnf = scratch.option_file("long", &login);
    for kind in Client::ALL {
        for connect in [Connect::Flags(&login), Connect::OptionFile(&cnf)] {
            let s =
                run_client(kind, connect).unwrap_or_else(|e| panic!("{kind:?} {connect:?}: {e:#}"));
            assert_tls_session(&s, APP, &format!("{kind:?}"));
        }
    }
    let whole = format!("(password {} bytes)", token.len());
    let n = db
        .auth_log()
        .expect("log")
        .lines()
        .filter(|l| l.contains(&format!("akid={akid} ACCEPT")) && l.ends_with(&whole))
        .count();
    assert_eq!(
        n,
        4,
        "the verifier must see all {} bytes each time",
        token.len()
    );
}

#[test]
fn tampered_token_is_refused() {
    let db = server();
    let (akid, secret) = key(db, "tampered");
    let token = db.botocore_token(APP, &akid, &secret, None).expect("token");
    let bad = tamper_signature(&token);
    let r = run_client(Client::Mariadb, Connect::Flags(&db.login(APP, &bad)));
    assert_refused(db, r, APP, &akid, "signature mismatch");

    // A changed signed parameter breaks it too.
    let shorter = token.replace("X-Amz-Expires=900", "X-Amz-Expires=899");
    assert_ne!(shorter, token);
    let r = run_client(Client::PyMysql, Connect::Flags(&db.login(APP, &shorter)));
    assert_refused(db, r, APP, &akid, "signature mismatch");
}

#[test]
fn expired_token_is_refused() {
    let db = server();
    let (akid, secret) = key(db, "expired");
    let token = botocore_token(&TokenRequest {
        time: Some(unix_now() - 901),
        ..db.token_request(APP, &akid, &secret)
    })
    .expect("token");
    let r = run_client(Client::Mariadb, Connect::Flags(&db.login(APP, &token)));
    assert_refused(db, r, APP, &akid, "token expired");
}

#[test]
fn another_users_token_is_refused() {
    let db = server();
    let (akid, secret) = key(db, "otheruser");
    // A valid token for other_user, presented by app_user.
    let token = db
        .botocore_token(OTHER, &akid, &secret, None)
        .expect("token");
    let r = run_client(Client::Mariadb, Connect::Flags(&db.login(APP, &token)));
    assert_refused(
        db,
        r,
        APP,
        &akid,
        "DBUser 'other_user' does not match login user 'app_user'",
    );
}

/// The second endpoint: ip_user's tokens must be signed for 127.0.0.1, the
/// other users' for localhost. The host a client dials does not matter (the
/// server cannot see it): the endpoint is bound to the user.
#[test]
fn each_endpoint_accepts_only_tokens_signed_for_its_host() {
    let db = server();
    let (akid, secret) = key(db, "hosts");
    let port = db.port();
    assert_eq!(db.endpoint_host(IP_USER), IP_HOST);

    let good = db
        .botocore_token(IP_USER, &akid, &secret, None)
        .expect("token");
    let login = db.login(IP_USER, &good);
    assert_eq!(login.host, IP_HOST);
    for kind in Client::ALL {
        let s =
            run_client(kind, Connect::Flags(&login)).unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_tls_session(&s, IP_USER, &format!("{kind:?} as {IP_USER}"));
    }
    let mut via_localhost = login.clone();
    via_localhost.host = HOST.to_owned();
    let s = run_client(Client::Mariadb, Connect::Flags(&via_localhost)).expect("dialled localhost");
    assert_tls_session(&s, IP_USER, "ip_user dialling localhost");

    // Signed for localhost, presented by the 127.0.0.1 endpoint's user.
    let wrong = token_for_host(db, HOST, IP_USER, &akid, &secret);
    let r = run_client(Client::Mariadb, Connect::Flags(&db.login(IP_USER, &wrong)));
    assert_refused(
        db,
        r,
        IP_USER,
        &akid,
        &format!("token is for endpoint localhost:{port}, this server is 127.0.0.1:{port}"),
    );
    // Signed for 127.0.0.1, presented by a localhost endpoint's user.
    let wrong = token_for_host(db, IP_HOST, APP, &akid, &secret);
    let r = run_client(Client::PyMysql, Connect::Flags(&db.login(APP, &wrong)));
    assert_refused(
        db,
        r,
        APP,
        &akid,
        &format!("token is for endpoint 127.0.0.1:{port}, this server is localhost:{port}"),
    );
}

/// REQUIRE SSL refuses a login without TLS, but only after authentication:
/// the client has already sent the token in cleartext, the verifier has
/// accepted it, and the error is the same 1045 as for a bad token (with
/// "using password: NO", as for every PAM login). Neither the MariaDB CLI
/// nor PyMySQL refuses to send a cleartext password without TLS.
#[test]
fn login_without_tls_is_refused_after_the_token_was_accepted() {
    let db = server();
    let (akid, secret) = key(db, "nontls");
    let token = db.botocore_token(APP, &akid, &secret, None).expect("token");
    let scratch = Scratch::new();
    let mut login = db.login(APP, &token);
    login.tls = Tls::Disabled;

    let mut ssl0 = db.login(APP, &token);
    ssl0.tls = Tls::Unverified;
    let mut ssl0 = ssl0.mariadb_args();
    ssl0.retain(|a| a != "--ssl");
    ssl0.push("--ssl=0".to_owned());
    let cnf = scratch.option_file("nontls", &login);
    let attempts = [
        (
            "mariadb --skip-ssl",
            run_client(Client::Mariadb, Connect::Flags(&login)),
        ),
        ("mariadb --ssl=0", run_mariadb_args(&ssl0)),
        (
            "mariadb skip-ssl in the option file",
            run_client(Client::Mariadb, Connect::OptionFile(&cnf)),
        ),
        (
            "PyMySQL ssl_disabled=True",
            run_client(Client::PyMysql, Connect::Flags(&login)),
        ),
    ];
    let n = attempts.len();
    for (what, r) in attempts {
        let err = match r {
            Ok(s) => panic!("{what}: logged in without TLS: {s:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("Access denied for user 'app_user'@'127.0.0.1' (using password: NO)"),
            "{what}: {err}"
        );
    }
    assert_eq!(
        log_lines(db, &format!("akid={akid} ACCEPT")),
        n,
        "the verifier should have accepted the token each time before REQUIRE SSL refused:\n{}",
        db.auth_log().expect("log")
    );
    assert!(db
        .server_log()
        .expect("server log")
        .contains("Access denied for user 'app_user'@'127.0.0.1' (using password: NO)"));

    // PyMySQL does not read skip-ssl from an option file: it uses TLS anyway.
    let s = run_client(Client::PyMysql, Connect::OptionFile(&cnf)).expect("PyMySQL, skip-ssl file");
    assert_tls_session(&s, APP, "PyMySQL ignoring skip-ssl");
    // And the same token over TLS works: TLS made the difference.
    let s = run_client(Client::Mariadb, Connect::Flags(&db.login(APP, &token))).expect("over TLS");
    assert_tls_session(&s, APP, "the same token over TLS");
}

/// The certificate is checked when the client asks (the MariaDB 10.11 CLI
/// does not by default), and the server refuses TLS below 1.2; either way
/// no password is sent.
#[test]
fn tls_is_checked_when_asked_and_at_least_1_2() {
    let db = server();
    let (akid, secret) = key(db, "verify");
    let token = db.botocore_token(APP, &akid, &secret, None).expect("token");
    let login = db.login(APP, &token);

    // --ssl-verify-server-cert without the lab's CA: the certificate,
    // signed by that CA, is refused.
    let mut args = login.mariadb_args();
    args.retain(|a| !a.starts_with("--ssl-ca="));
    let err = run_mariadb_args(&args).expect_err("unknown CA must fail");
    assert!(
        format!("{err:#}").contains("unable to get local issuer certificate"),
        "{err:#}"
    );

    // TLS 1.1: the server answers with a protocol_version alert.
    let mut args = login.mariadb_args();
    args.push("--tls-version=TLSv1.1".to_owned());
    let err = run_mariadb_args(&args).expect_err("TLS 1.1 must fail");
    assert!(
        format!("{err:#}").contains("alert protocol version"),
        "{err:#}"
    );
    assert_eq!(
        log_lines(db, &format!("akid={akid} ")),
        0,
        "no password may reach PAM"
    );
}

#[test]
fn dropping_the_server_stops_it_and_removes_its_pam_services() {
    let db = MariaDbRds::start(&["drop_user"]).expect("start a second server");
    let pam_files = db.pam_service_files().expect("pam service names");
    let dir = db.dir().to_path_buf();
    let port = db.port();
    assert!(pam_files.iter().all(|p| p.is_file()), "{pam_files:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "server should listen on {port}"
    );
    drop(db);
    assert!(
        pam_files.iter().all(|p| !p.exists()),
        "{pam_files:?} should be removed"
    );
    assert!(!dir.exists(), "{} should be removed", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server on {port} should be stopped"
    );
}

/// A server whose owner process exits is cleaned up by the watcher (this is
/// what happens to the shared server of each test binary).
#[test]
fn the_watcher_cleans_up_when_the_owner_exits() {
    let mut owner = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let dir = tempfile::Builder::new()
        .prefix("mariadbrds-")
        .tempdir_in("/tmp")
        .expect("temp dir")
        .keep();
    let port = free_port().expect("port");
    let out = Command::new(repo_root().join(SCRIPT))
        .arg("start")
        .arg("--dir")
        .arg(&dir)
        .args(["--port", &port.to_string()])
        .args(["--endpoint", &format!("{HOST}:{port}")])
        .arg("--keys")
        .arg(dir.join("keys.json"))
        .args(["--users", "watched_user"])
        .args(["--owner-pid", &owner.id().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run mariadb-rds");
    assert!(
        out.status.success(),
        "start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services = std::fs::read_to_string(dir.join("pam-service")).expect("pam-service");
    let pam_file = Path::new("/etc/pam.d").join(services.trim());
    assert!(pam_file.is_file());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    owner.kill().expect("kill owner");
    owner.wait().expect("reap owner");
    let deadline = Instant::now() + Duration::from_secs(60);
    while (dir.exists() || pam_file.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!dir.exists(), "{} should be removed", dir.display());
    assert!(
        !pam_file.exists(),
        "{} should be removed",
        pam_file.display()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server on {port} should be stopped"
    );
}
