//! Reads the `rds-iam/*` pod annotations into a typed, validated request.
//!
//! Unnamed keys (`rds-iam/host`, ...) describe the *default* database; a
//! *named* database uses the same keys under its name
//! (`rds-iam/orders.host`, ...). `containers`, `refresh-interval`,
//! `run-as-user` and `sidecar` are pod-wide. Each key is read by a small
//! parser from a table ([`POD_KEYS`], [`DB_KEYS`]); a denial always names
//! the exact key.
//!
//! This module only looks at the annotations; whatever depends on the rest of
//! the pod (containers, UIDs, region from env) is decided in `mutate`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use rds_iam_common::endpoint::MAX_DATABASES;
use rds_iam_common::{
    describe, parse_interval, parse_port, parse_region, parse_uid, validate_database,
    validate_host, validate_user, Access, DbName, Engine, FieldError, Mode, SslMode,
};

use crate::config::SidecarMode;

pub const PREFIX: &str = "rds-iam/";
pub const ENABLED: &str = "rds-iam/enabled";
/// Set by the webhook on every pod it patched.
pub const STATUS: &str = "rds-iam/status";
pub const STATUS_INJECTED: &str = "injected";
pub const CONTAINERS: &str = "rds-iam/containers";
pub const REFRESH_INTERVAL: &str = "rds-iam/refresh-interval";
pub const RUN_AS_USER: &str = "rds-iam/run-as-user";
pub const SIDECAR: &str = "rds-iam/sidecar";
/// The default database's keys (a named one puts its name before the field).
pub const HOST: &str = "rds-iam/host";
pub const PORT: &str = "rds-iam/port";
pub const USER: &str = "rds-iam/user";
pub const DATABASE: &str = "rds-iam/database";
pub const REGION: &str = "rds-iam/region";
pub const SSLMODE: &str = "rds-iam/sslmode";
pub const ENGINE: &str = "rds-iam/engine";
pub const MODE: &str = "rds-iam/mode";
pub const PROXY_PORT: &str = "rds-iam/proxy-port";
pub const SSLNEGOTIATION: &str = "rds-iam/sslnegotiation";
/// Pod-wide: the ConfigMap holding the RDS CA bundle, and its key.
pub const CA_CONFIGMAP: &str = "rds-iam/ca-configmap";
pub const CA_KEY: &str = "rds-iam/ca-key";
/// The ConfigMap key of the CA bundle when `rds-iam/ca-key` is not set.
pub const DEFAULT_CA_KEY: &str = "ca.crt";

/// The annotation key of `field` for database `name`:
/// `rds-iam/host` for the default database, `rds-iam/orders.host` for `orders`.
pub fn db_key(name: &DbName, field: &str) -> String {
    if name.is_default() {
        format!("{PREFIX}{field}")
    } else {
        format!("{PREFIX}{name}.{field}")
    }
}

/// A refusal to admit the pod: names the annotation and says what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub annotation: String,
    pub message: String,
}

impl Denial {
    pub fn new(annotation: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            annotation: annotation.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = rds_iam_common::field::clip(&self.annotation);
        write!(f, "annotation {key}: {}", self.message)
    }
}

impl std::error::Error for Denial {}

/// One database as the annotations describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRequest {
    pub name: DbName,
    pub host: String,
    /// `None`: the engine's default.
    pub port: Option<u16>,
    pub user: String,
    pub database: Option<String>,
    /// `None`: derived from the host name or the containers' env.
    pub region: Option<String>,
    pub sslmode: SslMode,
    pub engine: Engine,
    pub access: Access,
}

impl DbRequest {
    /// The annotation key of `field` for this database.
    pub fn key(&self, field: &str) -> String {
        db_key(&self.name, field)
    }
}

/// The validated annotations of an opted-in pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionRequest {
    /// The default database first (if any), then the named ones by name.
    pub databases: Vec<DbRequest>,
    /// Names from `rds-iam/containers`, in the order written, without blanks.
    pub containers: Option<Vec<String>>,
    pub sidecar: Option<SidecarMode>,
    /// Checked to lie in 1m..14m.
    pub refresh_interval: Option<Duration>,
    pub run_as_user: Option<i64>,
    /// The ConfigMap with the RDS CA bundle, and its key.
    pub ca: Option<CaBundle>,
}

/// Where the RDS CA bundle is: a ConfigMap of the pod's namespace and a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub configmap: String,
    pub key: String,
}

/// True only for `rds-iam/enabled: "true"`, exactly.
pub fn opted_in(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(ENABLED).map(String::as_str) == Some("true")
}

/// True when the webhook already marked the pod.
pub fn marked_injected(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(STATUS).map(String::as_str) == Some(STATUS_INJECTED)
}

/// A database while its keys are being read.
#[derive(Debug, Default)]
struct DbDraft {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    database: Option<String>,
    region: Option<String>,
    sslmode: Option<SslMode>,
    engine: Option<Engine>,
    mode: Option<Mode>,
    proxy_port: Option<u16>,
    direct_tls: Option<bool>,
    /// The keys seen, for denials and hints.
    keys: Vec<String>,
}

/// Parses one value into the draft; the error states the problem only.
type Parse<T> = fn(&str, &mut T) -> Result<(), FieldError>;

/// A key's parser and the advice added to its errors. In the advice,
/// `{db}` stands for the database's key prefix (`rds-iam/` or `rds-iam/NAME.`).
struct Key<T> {
    field: &'static str,
    parse: Parse<T>,
    advice: &'static str,
}

/// The per-database keys.
const DB_KEYS: &[Key<DbDraft>] = &[
    Key {
        field: "host",
        parse: |v, d| {
            validate_host(v)?;
            d.host = Some(v.to_owned());
            Ok(())
        },
        advice: "write only the endpoint's DNS name, e.g. \"mydb.abc123xyz.eu-west-1.rds.amazonaws.com\", and put the port in {db}port",
    },
    Key {
        field: "port",
        parse: |v, d| {
            d.port = Some(parse_port(v)?);
            Ok(())
        },
        advice: "write a port from 1 to 65535, e.g. \"5432\", or remove it for 5432",
    },
    Key {
        field: "user",
        parse: |v, d| {
            validate_user(v)?;
            d.user = Some(v.to_owned());
            Ok(())
        },
        advice: "write the plain database user name that was granted rds_iam, e.g. \"app_user\"",
    },
    Key {
        field: "database",
        parse: |v, d| {
            validate_database(v)?;
            d.database = Some(v.to_owned());
            Ok(())
        },
        advice: "write the database name, e.g. \"orders\", or remove the annotation",
    },
    Key {
        field: "region",
        parse: |v, d| {
            d.region = Some(parse_region(v)?);
            Ok(())
        },
        advice: "write e.g. \"eu-west-1\", or remove it to derive the region from the host",
    },
    Key {
        field: "sslmode",
        parse: |v, d| {
            d.sslmode = Some(SslMode::parse(v)?);
            Ok(())
        },
        advice: "write \"require\", \"verify-ca\" or \"verify-full\"",
    },
    Key {
        field: "engine",
        parse: |v, d| {
            d.engine = Some(Engine::parse(v)?);
            Ok(())
        },
        advice: "write \"postgres\" (PostgreSQL, Aurora PostgreSQL) or \"mysql\" (MySQL, MariaDB, Aurora MySQL), or remove it for postgres",
    },
    Key {
        field: "mode",
        parse: |v, d| {
            d.mode = Some(Mode::parse(v)?);
            Ok(())
        },
        advice: "write \"files\" (the app connects with the agent's files) or \"proxy\" (the app connects to the agent's local socket), or remove it for files",
    },
    Key {
        field: "proxy-port",
        parse: |v, d| {
            d.proxy_port = Some(parse_port(v)?);
            Ok(())
        },
        advice: "write a port from 1 to 65535 for the proxy to also listen on 127.0.0.1, e.g. \"5432\", or remove it for the Unix socket only",
    },
    Key {
        field: "sslnegotiation",
        parse: |v, d| {
            d.direct_tls = Some(match v {
                "direct" => true,
                "postgres" => false,
                _ => return Err(FieldError::NotOneOf("postgres, direct")),
            });
            Ok(())
        },
        advice: "write \"direct\" (TLS at once, PostgreSQL 17+) or \"postgres\" (an SSLRequest first), or remove it for postgres",
    },
];

/// The pod-wide keys, without their prefix.
const POD_KEYS: &[Key<InjectionRequest>] = &[
    Key {
        field: "containers",
        parse: |v, r| {
            // Each name once, in order: a repeated name adds nothing.
            let mut seen = BTreeSet::new();
            let names: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty() && seen.insert(*n))
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return Err(FieldError::NothingListed);
            }
            r.containers = Some(names);
            Ok(())
        },
        advice: "write comma-separated container names, e.g. \"api,migrate\", or remove it for all app containers",
    },
    Key {
        field: "refresh-interval",
        parse: |v, r| {
            r.refresh_interval = Some(parse_interval(v)?);
            Ok(())
        },
        advice: "write a duration from 1m to 14m, e.g. \"10m\", or remove it for the agent's default",
    },
    Key {
        field: "run-as-user",
        parse: |v, r| {
            r.run_as_user = Some(parse_uid(v)?);
            Ok(())
        },
        advice: "write the non-root UID your app containers run as, e.g. \"1000\"; the agent never runs as root",
    },
    Key {
        field: "sidecar",
        parse: |v, r| {
            r.sidecar = Some(SidecarMode::parse(v).ok_or(FieldError::NotOneOf(
                "native, classic, init-only",
            ))?);
            Ok(())
        },
        advice: "write \"native\", \"classic\" or \"init-only\"",
    },
    Key {
        field: "ca-configmap",
        parse: |v, r| {
            validate_object_name(v)?;
            let key = r.ca.take().map(|c| c.key).unwrap_or_else(|| DEFAULT_CA_KEY.to_owned());
            r.ca = Some(CaBundle {
                configmap: v.to_owned(),
                key,
            });
            Ok(())
        },
        advice: "write the name of the ConfigMap in the pod's namespace that holds the RDS CA bundle, e.g. \"rds-ca\"",
    },
    Key {
        field: "ca-key",
        parse: |v, r| {
            validate_configmap_key(v)?;
            match &mut r.ca {
                Some(c) => c.key = v.to_owned(),
                None => {
                    r.ca = Some(CaBundle {
                        configmap: String::new(),
                        key: v.to_owned(),
                    })
                }
            }
            Ok(())
        },
        advice: "write the key of the CA bundle in the ConfigMap, e.g. \"global-bundle.pem\", or remove it for ca.crt",
    },
];

/// A Kubernetes object name (DNS-1123 subdomain).
fn validate_object_name(v: &str) -> Result<(), FieldError> {
    if v.is_empty() {
        return Err(FieldError::Empty);
    }
    if v.len() > 253 {
        return Err(FieldError::TooLong {
            len: v.len(),
            max: 253,
        });
    }
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(FieldError::BadName(
            "a ConfigMap name is lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        ))
    }
}

/// A ConfigMap key: letters, digits, `-`, `_` and `.`.
fn validate_configmap_key(v: &str) -> Result<(), FieldError> {
    if v.is_empty() {
        return Err(FieldError::Empty);
    }
    if v.len() > 253 {
        return Err(FieldError::TooLong {
            len: v.len(),
            max: 253,
        });
    }
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v != "."
        && v != ".."
    {
        Ok(())
    } else {
        Err(FieldError::BadName(
            "a ConfigMap key is letters, digits, '-', '_' and '.'",
        ))
    }
}

/// Keys that carry no setting of the pod.
const MARKS: [&str; 2] = [ENABLED, STATUS];

fn find<T>(table: &'static [Key<T>], field: &str) -> Option<&'static Key<T>> {
    table.iter().find(|k| k.field == field)
}

/// Parses and validates the annotations of an opted-in pod.
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<InjectionRequest, Denial> {
    let mut request = InjectionRequest {
        databases: Vec::new(),
        containers: None,
        sidecar: None,
        refresh_interval: None,
        run_as_user: None,
        ca: None,
    };
    let mut drafts: BTreeMap<DbName, DbDraft> = BTreeMap::new();
    let mut values: Vec<(&str, &str, Parse<DbDraft>, &str, DbName)> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    // Names past one over the limit are only counted: no draft is kept, so
    // thousands of names cost little before the denial.
    let mut extra: BTreeSet<DbName> = BTreeSet::new();

    // 1. Which key is which. Key errors come before value errors.
    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if MARKS.contains(&key.as_str()) {
            continue;
        }
        if let Some(k) = find(POD_KEYS, rest) {
            (k.parse)(value, &mut request)
                .map_err(|e| Denial::new(key, describe(value, &e, k.advice)))?;
            continue;
        }
        let (name, field) = match rest.split_once('.') {
            Some((name, field)) => {
                let name = DbName::named(name).map_err(|e| {
                    Denial::new(
                        key,
                        format!(
                            "names database {}; name databases with 1 to 20 characters of a-z, 0-9 and '-', starting with a letter (\"default\" is reserved for the unnamed keys)",
                            describe(name, &e, "")
                        ),
                    )
                })?;
                if find(POD_KEYS, field).is_some() {
                    return Err(Denial::new(
                        key,
                        format!(
                            "{PREFIX}{field} is pod-wide, not per database; write {PREFIX}{field}"
                        ),
                    ));
                }
                (name, field)
            }
            None => (DbName::default_db(), rest),
        };
        match find(DB_KEYS, field) {
            Some(_) if drafts.len() > MAX_DATABASES && !drafts.contains_key(&name) => {
                extra.insert(name);
            }
            Some(k) => {
                let draft = drafts.entry(name.clone()).or_default();
                draft.keys.push(key.clone());
                values.push((key, value, k.parse, k.advice, name));
            }
            None => unknown.push(key),
        }
    }
    if let Some(key) = unknown.first() {
        return Err(unknown_key(key, drafts.keys()));
    }

    // 2. The values.
    for (key, value, parse, advice, name) in values {
        let draft = drafts.entry(name.clone()).or_default();
        parse(value, draft).map_err(|e| {
            let prefix = db_key(&name, "");
            Denial::new(key, describe(value, &e, &advice.replace("{db}", &prefix)))
        })?;
    }

    // 3. Complete databases only.
    if drafts.is_empty() {
        return Err(Denial::new(
            HOST,
            "is missing; add the DB endpoint, e.g. rds-iam/host: \"mydb.abc123xyz.eu-west-1.rds.amazonaws.com\"",
        ));
    }
    if drafts.len() > MAX_DATABASES {
        let (name, _) = drafts.iter().nth(MAX_DATABASES).expect("more than the max");
        let described = drafts.len() + extra.len();
        return Err(Denial::new(
            db_key(name, "host"),
            format!(
                "the pod describes {described} databases and at most {MAX_DATABASES} are allowed; remove the keys of {} of them",
                described - MAX_DATABASES
            ),
        ));
    }
    let names: Vec<DbName> = drafts.keys().cloned().collect();
    // The default database first, then by name.
    let mut ordered: Vec<(DbName, DbDraft)> = drafts.into_iter().collect();
    ordered.sort_by_key(|(n, _)| (!n.is_default(), n.clone()));
    for (name, draft) in ordered {
        request.databases.push(complete(name, draft, &names)?);
    }
    if request.ca.as_ref().is_some_and(|c| c.configmap.is_empty()) {
        return Err(Denial::new(
            CA_KEY,
            format!("names a key but no ConfigMap; add {CA_CONFIGMAP}: the ConfigMap that holds the RDS CA bundle, or remove {CA_KEY}"),
        ));
    }
    let mut ports: Vec<(u16, &DbRequest)> = Vec::new();
    for db in &request.databases {
        if let Some(p) = db.access.proxy_port {
            if let Some((_, other)) = ports.iter().find(|(q, _)| *q == p) {
                return Err(Denial::new(
                    db.key("proxy-port"),
                    format!(
                        "\"{p}\" is also {}; each database's proxy needs its own port",
                        other.key("proxy-port")
                    ),
                ));
            }
            ports.push((p, db));
        }
    }
    Ok(request)
}

/// Turns a draft into a database, or denies the first missing key. A
/// named database that only has keys close to another name's is a typo of
/// that name.
fn complete(name: DbName, draft: DbDraft, names: &[DbName]) -> Result<DbRequest, Denial> {
    let DbDraft {
        host,
        port,
        user,
        database,
        region,
        sslmode,
        engine,
        mode,
        proxy_port,
        direct_tls,
        keys,
    } = draft;
    let (Some(host), Some(user)) = (host.clone(), user.clone()) else {
        if !name.is_default() {
            if let Some(other) = names
                .iter()
                .filter(|n| *n != &name && !n.is_default())
                .min_by_key(|n| distance(n.as_str(), name.as_str()))
                .filter(|n| distance(n.as_str(), name.as_str()) <= 2)
            {
                let key = &keys[0];
                let field = key.rsplit_once('.').map_or("", |(_, f)| f);
                return Err(Denial::new(
                    key.clone(),
                    format!(
                        "no other key names database \"{name}\", which therefore has no {}; did you mean {}?",
                        if host.is_none() { "host" } else { "user" },
                        db_key(other, field)
                    ),
                ));
            }
        }
        let whose = if name.is_default() {
            String::new()
        } else {
            format!("database \"{name}\" needs one: ")
        };
        return Err(if host.is_none() {
            Denial::new(
                db_key(&name, "host"),
                format!("is missing; {whose}add the DB endpoint, e.g. {}: \"mydb.abc123xyz.eu-west-1.rds.amazonaws.com\"", db_key(&name, "host")),
            )
        } else {
            Denial::new(
                db_key(&name, "user"),
                format!("is missing; {whose}add the database user that was granted rds_iam, e.g. {}: \"app_user\"", db_key(&name, "user")),
            )
        });
    };
    let engine = engine.unwrap_or(Engine::Postgres);
    let mode = mode.unwrap_or_default();
    let key = |field: &str| db_key(&name, field);
    if mode == Mode::Files {
        for (set, field, what) in [
            (proxy_port.is_some(), "proxy-port", "a proxy port"),
            (direct_tls.is_some(), "sslnegotiation", "an sslnegotiation"),
        ] {
            if set {
                return Err(Denial::new(
                    key(field),
                    format!(
                        "sets {what}, which only the proxy uses, but {} is not \"proxy\"; set {}: \"proxy\", or remove {}",
                        key("mode"),
                        key("mode"),
                        key(field)
                    ),
                ));
            }
        }
    }
    if engine == Engine::Mysql && direct_tls.is_some() {
        return Err(Denial::new(
            key("sslnegotiation"),
            "is a PostgreSQL setting and the engine is mysql; remove it",
        ));
    }
    Ok(DbRequest {
        name,
        host,
        port,
        user,
        database,
        region,
        sslmode: sslmode.unwrap_or(SslMode::Require),
        engine,
        access: Access {
            mode,
            proxy_port,
            direct_tls: direct_tls.unwrap_or(false),
        },
    })
}

/// Denies a key that is not an annotation of ours, with the closest valid key.
fn unknown_key<'a>(key: &str, names: impl Iterator<Item = &'a DbName>) -> Denial {
    let limit = (key.len() - PREFIX.len()).div_ceil(2).max(2);
    let best = hint_candidates(key.chars().count(), limit, names)
        .into_iter()
        .map(|v| (distance(&v, key), v))
        .min()
        .filter(|(d, _)| *d <= limit);
    let fields: Vec<&str> = DB_KEYS.iter().map(|k| k.field).collect();
    let pod: Vec<String> = POD_KEYS
        .iter()
        .map(|k| format!("{PREFIX}{}", k.field))
        .collect();
    let hint = match best {
        Some((_, v)) => format!("did you mean {v}? "),
        None => String::new(),
    };
    Denial::new(
        key,
        format!(
            "is not an rds-iam annotation (a typo?); {hint}Per database: {PREFIX}FIELD for the default database or {PREFIX}NAME.FIELD for a named one, with FIELD one of {}; pod-wide: {}",
            fields.join(", "),
            pod.join(", ")
        ),
    )
}

/// The valid keys a "did you mean" hint for a key of `key_chars` characters
/// may name, at most `limit` edits away: the pod-wide keys, the marks, and
/// the keys of the default database and of the first `MAX_DATABASES` names
/// (a pod with more is refused anyway), sorted. A key whose length differs
/// by more than `limit` is left out, as it is at least that many edits away.
/// So a pod cannot make the hint cost more than about a hundred short
/// distances, however many names and however long a key it sends.
fn hint_candidates<'a>(
    key_chars: usize,
    limit: usize,
    names: impl Iterator<Item = &'a DbName>,
) -> Vec<String> {
    let mut valid: Vec<String> = POD_KEYS
        .iter()
        .map(|k| format!("{PREFIX}{}", k.field))
        .chain(MARKS.iter().map(|m| m.to_string()))
        .collect();
    let keys_of = |name: &DbName| {
        DB_KEYS
            .iter()
            .map(|k| db_key(name, k.field))
            .collect::<Vec<_>>()
    };
    valid.extend(keys_of(&DbName::default_db()));
    valid.extend(names.take(MAX_DATABASES).flat_map(keys_of));
    valid.retain(|v| v.chars().count().abs_diff(key_chars) <= limit);
    valid.sort();
    valid.dedup();
    valid
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            (ENABLED, "true"),
            (HOST, "db.abc.eu-west-1.rds.amazonaws.com"),
            (USER, "app"),
        ]
    }

    #[test]
    fn opt_in_is_exactly_true() {
        assert!(opted_in(&map(&[(ENABLED, "true")])));
        for v in ["True", "yes", "1", "", " true"] {
            assert!(!opted_in(&map(&[(ENABLED, v)])), "{v:?}");
        }
        assert!(!opted_in(&map(&[])));
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let r = parse(&map(&base())).unwrap();
        assert_eq!(r.databases.len(), 1);
        let db = &r.databases[0];
        assert!(db.name.is_default());
        assert_eq!(db.port, None);
        assert_eq!(db.sslmode, SslMode::Require);
        assert_eq!(db.database, None);
        assert_eq!(r.containers, None);
        assert_eq!(r.sidecar, None);
    }

    #[test]
    fn all_annotations_are_read() {
        let mut a = base();
        a.extend([
            (PORT, "6432"),
            (DATABASE, "orders"),
            (REGION, "us-east-2"),
            (CONTAINERS, " api , migrate,api, migrate"),
            (SSLMODE, "verify-full"),
            (REFRESH_INTERVAL, "5m"),
            (RUN_AS_USER, "1000"),
            (SIDECAR, "init-only"),
            (STATUS, "whatever"),
            ("rds-iam/reports.host", "r.example.com"),
            ("rds-iam/reports.user", "ro"),
            ("rds-iam/reports.sslmode", "verify-ca"),
            ("rds-iam/reports.engine", "mysql"),
            ("rds-iam/reports.mode", "proxy"),
            ("rds-iam/reports.proxy-port", "3307"),
            (CA_CONFIGMAP, "rds-ca"),
            (CA_KEY, "global-bundle.pem"),
        ]);
        let r = parse(&map(&a)).unwrap();
        assert_eq!(
            r,
            InjectionRequest {
                databases: vec![
                    DbRequest {
                        name: DbName::default_db(),
                        host: "db.abc.eu-west-1.rds.amazonaws.com".into(),
                        port: Some(6432),
                        user: "app".into(),
                        database: Some("orders".into()),
                        region: Some("us-east-2".into()),
                        sslmode: SslMode::VerifyFull,
                        engine: Engine::Postgres,
                        access: Access::default(),
                    },
                    DbRequest {
                        name: DbName::named("reports").unwrap(),
                        host: "r.example.com".into(),
                        port: None,
                        user: "ro".into(),
                        database: None,
                        region: None,
                        sslmode: SslMode::VerifyCa,
                        engine: Engine::Mysql,
                        access: Access {
                            mode: Mode::Proxy,
                            proxy_port: Some(3307),
                            direct_tls: false,
                        },
                    },
                ],
                containers: Some(vec!["api".into(), "migrate".into()]),
                sidecar: Some(SidecarMode::InitOnly),
                refresh_interval: Some(Duration::from_secs(300)),
                run_as_user: Some(1000),
                ca: Some(CaBundle {
                    configmap: "rds-ca".into(),
                    key: "global-bundle.pem".into(),
                }),
            }
        );
    }

    #[test]
    fn named_databases_only() {
        let r = parse(&map(&[
            (ENABLED, "true"),
            ("rds-iam/b.host", "b.example.com"),
            ("rds-iam/b.user", "u"),
            ("rds-iam/a.host", "a.example.com"),
            ("rds-iam/a.user", "u"),
        ]))
        .unwrap();
        let names: Vec<&str> = r.databases.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    /// Each denial: (annotations added to the base, the key it names, words).
    #[test]
    fn denials_name_the_exact_key() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[("rds-iam/databse", "x")],
                "rds-iam/databse",
                &["did you mean rds-iam/database?"],
            ),
            (
                &[("rds-iam/hostname", "x")],
                "rds-iam/hostname",
                &["did you mean rds-iam/host?"],
            ),
            (
                &[
                    ("rds-iam/orders.host", "o"),
                    ("rds-iam/orders.user", "u"),
                    ("rds-iam/orders.prot", "1"),
                ],
                "rds-iam/orders.prot",
                &["did you mean rds-iam/orders.port?"],
            ),
            (
                &[
                    ("rds-iam/orders.host", "o"),
                    ("rds-iam/orders.user", "u"),
                    ("rds-iam/order.host", "o"),
                ],
                "rds-iam/order.host",
                &["did you mean rds-iam/orders.host?"],
            ),
            (
                &[
                    ("rds-iam/orders.port", "70000"),
                    ("rds-iam/orders.host", "o"),
                    ("rds-iam/orders.user", "u"),
                ],
                "rds-iam/orders.port",
                &["\"70000\" is outside 1..65535; write a port"],
            ),
            (
                &[("rds-iam/orders.port", "5433")],
                "rds-iam/orders.host",
                &["is missing", "database \"orders\" needs one"],
            ),
            (
                &[("rds-iam/orders.host", "o")],
                "rds-iam/orders.user",
                &["is missing"],
            ),
            (
                &[("rds-iam/Orders.host", "o")],
                "rds-iam/Orders.host",
                &["\"Orders\"", "a-z"],
            ),
            (
                &[("rds-iam/default.host", "o")],
                "rds-iam/default.host",
                &["reserved"],
            ),
            (
                &[("rds-iam/this-name-is-far-too-long.host", "o")],
                "rds-iam/this-name-is-far-too-long.host",
                &["longer than 20"],
            ),
            (
                &[("rds-iam/orders.containers", "api")],
                "rds-iam/orders.containers",
                &["pod-wide", "write rds-iam/containers"],
            ),
            (
                &[("rds-iam/run-as-user", "0")],
                "rds-iam/run-as-user",
                &["0 is root"],
            ),
            (
                &[("rds-iam/sidecar", "sidecar")],
                "rds-iam/sidecar",
                &["is not one of native, classic, init-only"],
            ),
        ];
        for (extra, key, words) in cases {
            let mut a = base();
            a.extend(extra.iter().copied());
            let d = parse(&map(&a)).unwrap_err();
            assert_eq!(d.annotation, *key, "{extra:?}: {d}");
            for w in *words {
                assert!(d.message.contains(w), "{extra:?}: {d} lacks {w:?}");
            }
        }
    }

    #[test]
    fn advice_is_said_once() {
        let mut a = base();
        a.push((PORT, "abc"));
        let d = parse(&map(&a)).unwrap_err();
        assert_eq!(
            d.to_string(),
            "annotation rds-iam/port: \"abc\" is not a number; write a port from 1 to 65535, e.g. \"5432\", or remove it for 5432"
        );
    }

    #[test]
    fn at_most_eight_databases() {
        let mut owned: Vec<(String, String)> = Vec::new();
        for i in 0..9 {
            owned.push((format!("rds-iam/db{i}.host"), "h.example.com".into()));
            owned.push((format!("rds-iam/db{i}.user"), "u".into()));
        }
        let mut m: BTreeMap<String, String> = owned.into_iter().collect();
        m.insert(ENABLED.into(), "true".into());
        let d = parse(&m).unwrap_err();
        assert_eq!(d.annotation, "rds-iam/db8.host");
        assert!(
            d.message.contains("9 databases") && d.message.contains("at most 8"),
            "{d}"
        );
        m.remove("rds-iam/db8.host");
        m.remove("rds-iam/db8.user");
        assert_eq!(parse(&m).unwrap().databases.len(), 8);
        // Names past the limit are counted, not kept.
        for i in 100..10_100 {
            m.insert(format!("rds-iam/db{i}.host"), "h.example.com".into());
        }
        let d = parse(&m).unwrap_err();
        // The ninth name in order: db0, db1, db100, db1000, db10000..db10004.
        assert_eq!(d.annotation, "rds-iam/db10004.host");
        assert_eq!(
            d.message,
            "the pod describes 10008 databases and at most 8 are allowed; remove the keys of 10000 of them"
        );
    }

    /// Found through the annotations fuzz target (its slowest inputs): the
    /// hint for an unknown key measured its distance to every key of every
    /// name, so 1,000 names and a 10,000-character key (40 KB of
    /// annotations) kept the webhook busy for minutes.
    #[test]
    fn hints_choose_among_few_short_keys() {
        let names: Vec<DbName> = (0..1000)
            .map(|i| DbName::named(&format!("a{i:04}")).unwrap())
            .collect();
        let most = POD_KEYS.len() + MARKS.len() + (MAX_DATABASES + 1) * DB_KEYS.len();
        let near = hint_candidates(16, 8, names.iter());
        assert!(!near.is_empty() && near.len() <= most, "{}", near.len());
        assert!(near.contains(&"rds-iam/a0000.host".to_owned()), "{near:?}");
        assert!(!near.contains(&"rds-iam/a0999.host".to_owned()), "{near:?}");
        assert_eq!(
            hint_candidates(10_000, 5_000, names.iter()),
            Vec::<String>::new()
        );
        // The hint itself is unchanged.
        let long = format!("{PREFIX}{}", "q".repeat(10_000));
        let d = unknown_key(&long, names.iter());
        assert!(!d.message.contains("did you mean"), "{}", d.message);
        let d = unknown_key("rds-iam/a0001.hots", names.iter());
        assert!(
            d.message.contains("did you mean rds-iam/a0001.host?"),
            "{}",
            d.message
        );
    }

    #[test]
    fn distances() {
        assert_eq!(distance("order", "orders"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
