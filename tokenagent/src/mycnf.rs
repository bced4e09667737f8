//! MySQL option files (`my.cnf`), written so that MySQL's and MariaDB's
//! clients (mysys `my_default.c`) and PyMySQL (Python's configparser) read
//! the same values, and every one of them uses TLS.
//!
//! One group per database: `[client]` for the default database,
//! `[client_NAME]` for a named one, read with `--defaults-group-suffix=_NAME`
//! or PyMySQL's `read_default_group="client_NAME"`. A suffixed read also
//! reads `[client]`, so every group writes every key (an empty database
//! included) and never inherits the default database's.
//!
//! Where the two client families differ, the key carries `loose-`: a client
//! that does not know it warns on stderr and goes on.
//! - `loose-ssl-mode`: MySQL's `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`
//!   (MariaDB 10.11 stops at `ssl-mode`);
//! - `loose-ssl-verify-server-cert`: MariaDB's only way to insist on TLS
//!   (removed from MySQL 8.0); it also checks the host name, so MariaDB's
//!   clients check it in `verify-ca` too. Off for `require`, where MariaDB
//!   10.11 uses TLS when the server offers it (RDS always does) and MariaDB
//!   11.4+ would otherwise check the certificate against the system's CAs;
//! - `loose-database`: `mariadb-admin` and `mysqladmin` stop at `database`.
//!   PyMySQL reads only `database`, so it gets none from the file.
//!
//! `ssl-cipher` lists the TLS 1.2 suites the proxy offers too (ECDHE with
//! AES-GCM or ChaCha20-Poly1305; TLS 1.3 is not affected): PyMySQL reads
//! only `ssl-*` keys, and any of them makes it insist on TLS (1.2+) or turn
//! it on at all (before 1.2). `ssl-ca` is written for the verify modes, and
//! for every group when `[client]` has it, since a suffixed read would
//! inherit it and an empty `ssl-ca` is an error.
//!
//! Values are quoted by MySQL's rules ([`quote`]). MySQL's parsers read a
//! line into a 4096-byte buffer: a longer line is cut and its rest read as
//! another option, so a password line longer than [`MAX_LINE`] is left out
//! with a comment saying why.

use rds_iam_common::{DbName, SslMode};

/// The longest line MySQL's and MariaDB's option-file parsers read whole
/// (`fgets` into 4095 bytes, newline excluded; measured with
/// `my_print_defaults`).
pub const MAX_LINE: usize = 4094;

/// The TLS 1.2 cipher suites of `ssl-cipher`: those rustls offers.
pub const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// The group of a database: `client` or `client_NAME`.
pub fn group_name(name: &DbName) -> String {
    if name.is_default() {
        "client".to_owned()
    } else {
        format!("client_{name}")
    }
}

/// MySQL's `ssl-mode` for an sslmode.
pub fn ssl_mode(sslmode: SslMode) -> &'static str {
    match sslmode {
        SslMode::Require => "REQUIRED",
        SslMode::VerifyCa => "VERIFY_CA",
        SslMode::VerifyFull => "VERIFY_IDENTITY",
    }
}

/// `value` as MySQL's option-file parser reads it back exactly: in double
/// quotes (single quotes if it holds a `"` and no `'`), with `\` written
/// `\\`, the quote character `\"`, and newline, carriage return, tab and
/// backspace as `\n`, `\r`, `\t`, `\b`. A `#` inside quotes is not a
/// comment. PyMySQL strips the quotes but undoes no escape, so it reads the
/// same value unless the value holds a `\`, both quote characters or one of
/// those control characters (never in a token, a host, or a valid user).
pub fn quote(value: &str) -> String {
    let q = if value.contains('"') && !value.contains('\'') {
        '\''
    } else {
        '"'
    };
    let mut out = String::with_capacity(value.len() + 2);
    out.push(q);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// One database's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<'a> {
    pub name: &'a DbName,
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    /// The current token (`None`: none yet).
    pub password: Option<&'a str>,
    pub database: Option<&'a str>,
    pub sslmode: SslMode,
    /// The CA bundle as the app sees it: required by the verify modes, and
    /// written whenever given.
    pub ca: Option<&'a str>,
}

/// A group cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MyCnfError {
    #[error("sslmode {0} needs the CA bundle in my.cnf; set --ca-file (RDS_IAM_CA_FILE)")]
    NoCa(SslMode),
}

/// Renders `[group]` and its keys, each on a line.
pub fn render_group(g: &Group<'_>) -> Result<String, MyCnfError> {
    let Group {
        name,
        host,
        port,
        user,
        password,
        database,
        sslmode,
        ca,
    } = g;
    let verify = *sslmode != SslMode::Require;
    if verify && ca.is_none() {
        return Err(MyCnfError::NoCa(*sslmode));
    }
    // An empty password still overrides [client]'s in a suffixed read.
    let (password, why_empty) = match password.map(|p| (p, quote(p))) {
        Some((_, q)) if "password=".len() + q.len() <= MAX_LINE => (q, None),
        Some((p, _)) => (
            quote(""),
            Some(format!(
                "# No password: the token is {} bytes, too long for one line of an option \
                 file ({MAX_LINE} bytes); connect through the agent's proxy, or give the token \
                 file's content as the password.",
                p.len()
            )),
        ),
        None => (
            quote(""),
            Some(
                "# No password: the agent has no token for this database yet; its log says why."
                    .to_owned(),
            ),
        ),
    };
    let mut out = format!("[{}]\n", group_name(name));
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("host={host}"));
    line(format!("port={port}"));
    line("protocol=TCP".to_owned());
    line(format!("user={}", quote(user)));
    if let Some(why) = why_empty {
        line(why);
    }
    line(format!("password={password}"));
    line(format!("loose-database={}", quote(database.unwrap_or(""))));
    line(format!("ssl-cipher={TLS12_CIPHERS}"));
    if let Some(ca) = ca {
        line(format!("ssl-ca={}", quote(ca)));
    }
    line(format!("loose-ssl-mode={}", ssl_mode(*sslmode)));
    line(format!(
        "loose-ssl-verify-server-cert={}",
        if verify { "ON" } else { "OFF" }
    ));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// MySQL's option-file reading of a value (mysys `my_default.c`): the
    /// comment cut outside quotes, trimming, one pair of quotes removed,
    /// escapes undone. Written from MySQL's documented rules, to check
    /// [`quote`] over many values; the e2e tests check it against the real
    /// parsers.
    fn mysql_reads(raw: &str) -> String {
        let mut quote = None;
        let mut escape = false;
        let mut end = raw.len();
        for (i, c) in raw.char_indices() {
            if (c == '\'' || c == '"') && !escape {
                match quote {
                    None => quote = Some(c),
                    Some(q) if q == c => quote = None,
                    _ => {}
                }
            }
            if quote.is_none() && c == '#' {
                end = i;
                break;
            }
            escape = !escape && c == '\\';
        }
        let v = raw[..end].trim();
        let v = if v.len() >= 2
            && (v.starts_with('"') || v.starts_with('\''))
            && v.chars().next() == v.chars().last()
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        let mut out = String::new();
        let mut chars = v.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' || chars.peek().is_none() {
                out.push(c);
                continue;
            }
            match chars.next().unwrap() {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                's' => out.push(' '),
                c @ ('"' | '\'' | '\\') => out.push(c),
                c => {
                    out.push('\\');
                    out.push(c);
                }
            }
        }
        out
    }

    /// PyMySQL's reading: configparser strips the value, PyMySQL removes one
    /// pair of matching quotes.
    fn pymysql_reads(raw: &str) -> String {
        let v = raw.trim();
        for q in ['\'', '"'] {
            if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
                return v[1..v.len() - 1].to_owned();
            }
        }
        v.to_owned()
    }

    #[test]
    fn quoting_follows_mysql_rules() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("it's"), "\"it's\"");
        assert_eq!(quote("say \"hi\""), "'say \"hi\"'");
        assert_eq!(quote("both ' and \""), "\"both ' and \\\"\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(quote("a\nb\tc"), "\"a\\nb\\tc\"");
        assert_eq!(quote("a#b;c"), "\"a#b;c\"");
        for v in [
            "plain",
            "",
            " lead and trail ",
            "it's",
            "say \"hi\"",
            "both ' and \"",
            "back\\slash\\",
            "\\n is not a newline",
            "a#b;c # comment?",
            "tab\there",
            "x:5432/?Action=connect&DBUser=u&X-Amz-Signature=ab%2F%3D~._-",
        ] {
            assert_eq!(mysql_reads(&quote(v)), v, "{v:?}");
        }
        for v in ["plain", "it's", "say \"hi\"", "a#b;c", " s "] {
            assert_eq!(pymysql_reads(&quote(v)), v, "PyMySQL: {v:?}");
        }
    }

    fn group<'a>(name: &'a DbName, sslmode: SslMode, ca: Option<&'a str>) -> Group<'a> {
        Group {
            name,
            host: "db.example.com",
            port: 3306,
            user: "app",
            password: Some("db.example.com:3306/?Action=connect&DBUser=app&X-Amz-Signature=ab"),
            database: Some("shop"),
            sslmode,
            ca,
        }
    }

    #[test]
    fn a_group_has_every_key() {
        let name = DbName::default_db();
        assert_eq!(
            render_group(&group(&name, SslMode::Require, None)).unwrap(),
            format!(
                "[client]\nhost=db.example.com\nport=3306\nprotocol=TCP\nuser=\"app\"\n\
                 password=\"db.example.com:3306/?Action=connect&DBUser=app&X-Amz-Signature=ab\"\n\
                 loose-database=\"shop\"\nssl-cipher={TLS12_CIPHERS}\nloose-ssl-mode=REQUIRED\n\
                 loose-ssl-verify-server-cert=OFF\n"
            )
        );
        let orders = DbName::named("orders").unwrap();
        let mut g = group(&orders, SslMode::VerifyCa, Some("/etc/rds/ca.pem"));
        g.database = None;
        let text = render_group(&g).unwrap();
        assert!(text.starts_with("[client_orders]\n"), "{text}");
        assert!(
            text.ends_with(
                "loose-database=\"\"\nssl-cipher=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
                 ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
                 ECDHE-RSA-CHACHA20-POLY1305\nssl-ca=\"/etc/rds/ca.pem\"\nloose-ssl-mode=VERIFY_CA\n\
                 loose-ssl-verify-server-cert=ON\n"
            ),
            "{text}"
        );
        let text = render_group(&group(&orders, SslMode::VerifyFull, Some("/ca"))).unwrap();
        assert!(
            text.contains("\nloose-ssl-mode=VERIFY_IDENTITY\n"),
            "{text}"
        );
        // A CA given to a require group is written (inherited otherwise).
        let text = render_group(&group(&orders, SslMode::Require, Some("/ca"))).unwrap();
        assert!(
            text.contains(
                "\nssl-ca=\"/ca\"\nloose-ssl-mode=REQUIRED\nloose-ssl-verify-server-cert=OFF\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn verify_modes_need_the_ca() {
        let name = DbName::default_db();
        assert_eq!(
            render_group(&group(&name, SslMode::VerifyFull, None))
                .unwrap_err()
                .to_string(),
            "sslmode verify-full needs the CA bundle in my.cnf; set --ca-file (RDS_IAM_CA_FILE)"
        );
    }

    #[test]
    fn a_password_line_too_long_for_mysql_or_no_token_is_empty() {
        let name = DbName::default_db();
        let fits = "t".repeat(MAX_LINE - "password=\"\"".len());
        let mut g = group(&name, SslMode::Require, None);
        g.password = Some(&fits);
        let text = render_group(&g).unwrap();
        let line = text.lines().find(|l| l.starts_with("password=")).unwrap();
        assert_eq!(line.len(), MAX_LINE);
        let long = format!("{fits}t");
        g.password = Some(&long);
        let text = render_group(&g).unwrap();
        assert!(text.contains("\npassword=\"\"\n"), "{text}");
        assert!(
            text.contains(&format!(
                "\n# No password: the token is {} bytes, too long for one line of an option file (4094 bytes);",
                long.len()
            )),
            "{text}"
        );
        assert!(text.lines().all(|l| l.len() <= MAX_LINE));
        g.password = None;
        let text = render_group(&g).unwrap();
        assert!(
            text.contains("\n# No password: the agent has no token for this database yet; its log says why.\npassword=\"\"\n"),
            "{text}"
        );
    }
}
