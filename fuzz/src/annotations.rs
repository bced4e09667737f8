//! The annotation parser, `rds_iam_webhook::annotations::parse`.
//!
//! Input: one annotation per line, `KEY=VALUE`. A key without a `/` gets
//! the `rds-iam/` prefix (`orders.host=db` is `rds-iam/orders.host`), so
//! most inputs reach the per-database code; a key with a `/` is taken as
//! written. In a value, `\n`, `\r`, `\t`, `\0` and `\\` stand for a line
//! feed, a carriage return, a tab, a NUL and a backslash.
//!
//! Invariants: nothing panics. An accepted request has 1 to 8 databases
//! with distinct names (the default one first, the others sorted); each
//! host and user is exactly the value of its own annotation, non-empty and
//! free of `:`, whitespace and control characters (a line break in one
//! would add a pgpass line), within 253 and 63 bytes; ports are 1 or more;
//! a region is a region name; a database name has no control character;
//! only a proxied database has a proxy port or direct TLS, never a MySQL
//! one direct TLS, and no two share a proxy port; a CA bundle names its
//! ConfigMap; the pod-wide values lie in their ranges. A denial names an `rds-iam/`
//! key, either one that is present or the missing host or user of a
//! database, and its message is one line.

use std::collections::BTreeMap;

use rds_iam_common::{is_region_name, DbName, Engine, Mode, MAX_HOST_LEN, MAX_USER_LEN};
use rds_iam_webhook::annotations::{db_key, parse, PREFIX};

/// The annotations an input describes.
pub fn annotations(data: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(data);
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            let key = if key.contains('/') {
                key.to_owned()
            } else {
                format!("{PREFIX}{key}")
            };
            (key, unescape(value))
        })
        .collect()
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn clean(what: &str, value: &str) {
    assert!(!value.is_empty(), "empty {what} accepted");
    assert!(
        !value.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control()),
        "{what} {value:?} accepted"
    );
}

pub fn check(data: &[u8]) {
    let map = annotations(data);
    let request = match parse(&map) {
        Ok(r) => r,
        Err(denial) => {
            assert!(denial.annotation.starts_with(PREFIX), "{denial:?}");
            assert!(
                map.contains_key(&denial.annotation)
                    || denial.annotation.ends_with("host")
                    || denial.annotation.ends_with("user"),
                "the denial names a key that is neither given nor required: {denial:?}"
            );
            assert!(!denial.message.is_empty(), "{denial:?}");
            assert!(
                !denial.message.contains(['\n', '\r']),
                "a denial is one line: {denial:?}"
            );
            return;
        }
    };
    let dbs = &request.databases;
    assert!(
        (1..=8).contains(&dbs.len()),
        "{} databases accepted",
        dbs.len()
    );
    let names: Vec<&DbName> = dbs.iter().map(|d| &d.name).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| (!n.is_default(), (*n).clone()));
    sorted.dedup();
    assert_eq!(names, sorted, "distinct names, the default first");
    for db in dbs {
        assert_eq!(map.get(&db_key(&db.name, "host")), Some(&db.host));
        assert_eq!(map.get(&db_key(&db.name, "user")), Some(&db.user));
        clean("host", &db.host);
        clean("user", &db.user);
        assert!(db.host.len() <= MAX_HOST_LEN, "{:?}", db.host);
        assert!(db.user.len() <= MAX_USER_LEN, "{:?}", db.user);
        assert!(db.port.is_none_or(|p| p >= 1), "port {:?}", db.port);
        if let Some(r) = &db.region {
            assert!(is_region_name(r), "region {r:?} accepted");
        }
        if let Some(name) = &db.database {
            assert!(
                !name.is_empty() && !name.contains(char::is_control),
                "{name:?}"
            );
        }
        if db.access.mode == Mode::Files {
            assert_eq!(db.access.proxy_port, None, "a proxy port without the proxy");
            assert!(!db.access.direct_tls, "direct TLS without the proxy");
        }
        if db.engine == Engine::Mysql {
            assert!(!db.access.direct_tls, "PostgreSQL's direct TLS for MySQL");
        }
    }
    let mut ports: Vec<u16> = dbs.iter().filter_map(|d| d.access.proxy_port).collect();
    let given = ports.len();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), given, "two databases share a proxy port");
    if let Some(ca) = &request.ca {
        assert!(!ca.configmap.is_empty() && !ca.key.is_empty(), "{ca:?}");
    }
    if let Some(containers) = &request.containers {
        assert!(!containers.is_empty());
        for c in containers {
            assert!(!c.is_empty() && !c.contains(',') && c.trim() == c, "{c:?}");
        }
    }
    if let Some(uid) = request.run_as_user {
        assert!(uid > 0, "the agent never runs as root: {uid}");
    }
    if let Some(every) = request.refresh_interval {
        assert!((60..=14 * 60).contains(&every.as_secs()), "{every:?}");
    }
}
