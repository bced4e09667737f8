//! The contract shared by the webhook and the token agent, defined once.
//!
//! - [`field`] validates single values (host, port, user, ...). Errors
//!   state the problem only; the caller names the annotation or flag.
//! - [`region`] is the one region resolver both binaries call.
//! - [`endpoint`] describes a database ([`endpoint::Endpoint`]) and its one-line spec,
//!   which the webhook writes and the agent reads.
//! - [`agent_args`] names the agent's flags and env, and builds the env the
//!   webhook gives the agent container.
//! - [`files`] replaces files atomically (the agent's files, `certs`' output).
//! - [`pct`] percent-encodes URL parts.
//! - [`process`] sets up logging and signals the same way in both binaries.

use std::time::Duration;

pub mod agent_args;
pub mod endpoint;
pub mod field;
pub mod files;
pub mod pct;
pub mod process;
pub mod region;

pub use endpoint::{Access, DbName, Endpoint, Engine, Mode, SslMode};
pub use field::{
    check_interval, describe, parse_duration, parse_interval, parse_port, parse_region, parse_uid,
    validate_database, validate_host, validate_user, FieldError,
};
pub use region::{is_region_name, region_from_hostname, RegionSource};

/// Where the agent writes its files, in the agent and in the app containers.
pub const DEFAULT_DIR: &str = "/var/run/rds-iam";
/// The default database's raw token file; a named database's is `NAME.token`.
pub const TOKEN_FILE: &str = "token";
/// The libpq passfile's name inside the directory.
pub const PGPASS_FILE: &str = "pgpass";
/// The libpq connection service file's name inside the directory.
pub const PG_SERVICE_FILE: &str = "pg_service.conf";
/// The MySQL/MariaDB option file's name inside the directory.
pub const MYSQL_CNF_FILE: &str = "my.cnf";
/// The agent's binary name (its image's entrypoint, and on `PATH`).
pub const AGENT_BINARY: &str = "rds-iam-tokenagent";
/// The default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;
/// The default MySQL and MariaDB port.
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
/// The shortest refresh interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The longest refresh interval accepted: tokens live 15 minutes, so a
/// refresh must happen before the previous token expires.
pub const MAX_INTERVAL: Duration = Duration::from_secs(14 * 60);
/// How long an RDS IAM token is valid, in seconds (the service's maximum).
pub const TOKEN_LIFETIME_SECS: u64 = 900;
/// PostgreSQL truncates identifiers (and so role names) at 63 bytes.
pub const MAX_USER_LEN: usize = 63;
/// The longest DNS name.
pub const MAX_HOST_LEN: usize = 253;

/// Test support: a property test's case count, multiplied by the env var
/// `RDS_IAM_FUZZ_SCALE` (default 1) for the long fuzz runs in BENCHMARKS.md.
#[doc(hidden)]
pub fn fuzz_cases(base: u32) -> u32 {
    std::env::var("RDS_IAM_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
        .saturating_mul(base)
}
